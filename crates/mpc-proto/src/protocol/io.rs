//! Getting secrets in and out: input sharing, opening, revealing.

use crate::error::{Error, Result};
use crate::party::{Party, PartyId};
use crate::ring::RingTensor;
use crate::share::AShare;
use crate::transport::FrameKind;

impl Party {
    /// Secret-shares an input owned by `owner` (P0 or P1) with zero communication.
    ///
    /// * Secret input: `value` (the owner passes `Some`, the others `None`); `shape` is public.
    /// * Revealed: nothing. P0 and P1 both draw `r` from their pairwise PRG; the owner keeps
    ///   `x − r`, the other party keeps `r`; the dealer holds a placeholder.
    /// * Rounds 0, bytes 0, correlations none, error none.
    pub fn share_input(&mut self, owner: PartyId, shape: &[usize], value: Option<&RingTensor>) -> Result<AShare> {
        if owner.is_dealer() || owner.index() > 2 {
            return Err(Error::InvalidInput(format!("inputs are owned by P0 or P1, not {owner}")));
        }
        if self.id == owner {
            let v = value.ok_or_else(|| Error::InvalidInput(format!("{owner} owns this input but passed no value")))?;
            if v.shape() != shape {
                return Err(Error::ShapeMismatch { op: "share_input", lhs: v.shape().to_vec(), rhs: shape.to_vec() });
            }
        } else if value.is_some() {
            return Err(Error::InvalidInput(format!("{} passed a value for an input owned by {owner}", self.id)));
        }
        if self.placeholder() {
            return Ok(AShare::dealer(shape));
        }
        let Some(pair) = self.pair.as_mut() else { return Ok(AShare::dealer(shape)) };
        Ok(AShare::from_share(match value {
            // x − r with r drawn a chunk at a time: one pass, no r tensor.
            Some(v) => {
                let mut out = Vec::with_capacity(v.len());
                let mut r = [0u64; 512];
                for chunk in v.as_slice().chunks(r.len()) {
                    let r = &mut r[..chunk.len()];
                    pair.fill(r);
                    out.extend(chunk.iter().zip(r.iter()).map(|(x, r)| x.wrapping_sub(*r)));
                }
                RingTensor::from_vec(shape, out)?
            }
            None => RingTensor::random(shape, pair),
        }))
    }

    /// Opens `x` to both computing parties.
    ///
    /// * Revealed: `x` to P0 and P1 (the dealer learns nothing and gets `None`).
    /// * Rounds 1; online bytes 8 per element per computing party; correlations none.
    pub async fn open(&mut self, x: &AShare) -> Result<Option<RingTensor>> {
        let top = self.begin("open")?;
        let r = self.open_inner(&[x]).await.map(|v| v.map(|mut v| v.pop().expect("one tensor opened")));
        self.finish(top, r).await
    }

    /// Opens several tensors in one round (one message each way).
    pub(crate) async fn open_inner(&mut self, xs: &[&AShare]) -> Result<Option<Vec<RingTensor>>> {
        if self.placeholder() {
            return Ok(None);
        }
        let mut mine = Vec::with_capacity(xs.iter().map(|x| x.len()).sum());
        for x in xs {
            mine.extend_from_slice(x.expose_share()?.as_slice());
        }
        let theirs = self.ch.exchange_u64(self.id.peer(), FrameKind::Open, &mine).await?;
        let mut out = Vec::with_capacity(xs.len());
        let mut off = 0;
        for x in xs {
            let n = x.len();
            let sum = mine[off..off + n].iter().zip(&theirs[off..off + n]).map(|(a, b)| a.wrapping_add(*b)).collect();
            out.push(RingTensor::from_vec(x.shape(), sum)?);
            off += n;
        }
        Ok(Some(out))
    }

    /// Reveals `x` to one computing party `to` only.
    ///
    /// * Revealed: `x` to `to` (returned as `Some` there, `None` elsewhere).
    /// * Rounds 1; online bytes 8 per element, sent by the other computing party only.
    pub async fn reveal_to(&mut self, to: PartyId, x: &AShare) -> Result<Option<RingTensor>> {
        let top = self.begin("reveal")?;
        let r = self.reveal_inner(to, x).await;
        self.finish(top, r).await
    }

    async fn reveal_inner(&mut self, to: PartyId, x: &AShare) -> Result<Option<RingTensor>> {
        if to.is_dealer() || to.index() > 2 {
            return Err(Error::InvalidInput(format!("outputs are revealed to P0 or P1, not {to}")));
        }
        if self.placeholder() {
            return Ok(None);
        }
        self.ch.stats.record_round();
        let mine = x.expose_share()?;
        if self.id == to {
            // The peer's words are read in place from its frame.
            let (raw, start) = self.ch.recv_frame(to.peer(), FrameKind::Reveal, Some(8 * mine.len())).await?;
            let theirs = raw[start..].as_chunks::<8>().0;
            let v = mine.as_slice().iter().zip(theirs).map(|(a, b)| a.wrapping_add(u64::from_le_bytes(*b))).collect();
            Ok(Some(RingTensor::from_vec(x.shape(), v)?))
        } else {
            self.ch.send_u64(to, FrameKind::Reveal, mine.as_slice()).await?;
            Ok(None)
        }
    }
}
