//! Material for comparison-based operations, for every [`Method`]: what is drawn from the
//! seeds, what the dealer sends, and what each party keeps.
//!
//! One request type ([`GateRequest`]) and one material type ([`Gate`]) for all methods, so a
//! correlation source answers every method's request ([`Request::Gate`](super::Request::Gate))
//! the same way and the preprocessing pool records and replays them generically. The draws below are the
//! contract between the dealer and each party: P0's half of everything comes from the seed it
//! shares with the dealer, in the order listed; P1's likewise; the dealer draws both in the same
//! order and sends only what cannot come from a seed.
//!
//! | method | P0 draws (no traffic) | P1 draws | dealer → P0 | dealer → P1 |
//! |---|---|---|---|---|
//! | `fss1` | `r0` | `r1` | keys | keys |
//! | `fss` | `r0`, `ρ0`, (`ρr0`) | `r1` | keys, flip bits | keys, `ρ1`, (`ρr1`) |
//! | `helper` | `r0`, bit shares, `v0`, (`vr0`) | `r1` | — | bit-share corrections |
//!
//! (Parenthesised parts for ReLU only.) The helper's dealer also keeps `r` and P0's output
//! shares for its online step ([`HelperState`]).

use crate::compare::{Method, Window, compact, helper};
use crate::error::{Error, Result};
use crate::fss::{PackedKeys, Relu64Key, SignKey};
use crate::ids::PartyId;
use crate::prg::Seed;
use crate::ring::RingTensor;
use crate::transport::frame::bytes_to_u64;

use super::{Generator, P0, P1, gen_gate_keys_into, pack_keys};

/// What a comparison-based operation asks of the correlation source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GateRequest {
    /// The method the operation runs.
    pub method: Method,
    /// Masked elements.
    pub len: usize,
    /// Comparison window `k` (2..=64).
    pub bits: u32,
    /// Evaluation points per element (a spline's breakpoints; 1 otherwise).
    pub points: usize,
    /// Whether `ReLU(x)` is wanted (not only the bit): 64-bit opening, `v·r` material.
    pub relu: bool,
}

impl GateRequest {
    /// Checks the request's parameters.
    pub fn validate(&self) -> Result<()> {
        if !(2..=64).contains(&self.bits) || self.points == 0 {
            return Err(Error::InvalidInput(format!(
                "comparison material for a {}-bit window and {} points",
                self.bits, self.points
            )));
        }
        Ok(())
    }

    fn window(&self) -> Window {
        Window::new(self.bits)
    }

    /// Whether the one-round method uses ReLU keys (evaluated at every point) rather than sign keys.
    fn relu_keys(&self) -> bool {
        self.relu || self.points > 1
    }

    fn outputs(&self) -> usize {
        self.len * self.points
    }
}

/// One party's material for one [`GateRequest`]. `Debug` prints shapes only.
pub enum Gate {
    /// Nothing: the dealer (except the helper's online state) and every offline pass.
    Placeholder,
    /// One-round sign keys (`fss1`, bit only): shares of `[x < 0]`.
    Sign(GateMaterial<SignKey>),
    /// One-round ReLU keys (`fss1`).
    Relu64(GateMaterial<Relu64Key>),
    /// Compact keys and select material (`fss`).
    Compact(CompactMaterial),
    /// A computing party's helper material (`helper`).
    Helper(HelperMaterial),
    /// The dealer's state for its online helper step.
    HelperState(HelperState),
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Gate::Placeholder => f.write_str("Gate::Placeholder"),
            Gate::Sign(m) => write!(f, "Gate::Sign[{}](..)", m.keys.len()),
            Gate::Relu64(m) => write!(f, "Gate::Relu64[{}](..)", m.keys.len()),
            Gate::Compact(m) => write!(f, "Gate::Compact[{}](..)", m.r.len()),
            Gate::Helper(m) => write!(f, "Gate::Helper[{}](..)", m.r.len()),
            Gate::HelperState(s) => write!(f, "Gate::HelperState[{}](..)", s.r.len()),
        }
    }
}

/// One party's one-round FSS material for `len` elements: its share of the masks and its keys.
pub struct GateMaterial<K> {
    /// This party's share of the masks, shape `[len]`.
    pub r: RingTensor,
    /// This party's keys, one per element, as received (evaluated in place).
    pub keys: PackedKeys<K>,
}

impl<K: crate::fss::PackedGate> GateMaterial<K> {
    /// The serialised keys, as received (for tests that tamper with material).
    #[doc(hidden)]
    pub fn keys_bytes(&self) -> Vec<u8> {
        self.keys.bytes().to_vec()
    }
}

impl<K> std::fmt::Debug for GateMaterial<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GateMaterial[{}](..)", self.r.len())
    }
}

/// One party's `fss` material (see [`compact`]).
pub struct CompactMaterial {
    /// Share of the masks, `[len]`.
    pub r: RingTensor,
    /// The keys (and P0's flip bits).
    pub keys: compact::CompactKeys,
    /// Shares of `ρ_q`, one per element-point.
    pub v: Vec<u64>,
    /// Shares of `ρ_q·r` (ReLU only).
    pub vr: Option<Vec<u64>>,
}

/// A computing party's `helper` material (see [`helper`]).
pub struct HelperMaterial {
    /// Share of the masks, `[len]`.
    pub r: RingTensor,
    /// Z_p shares of the bits of each `R_l`, `k − 1` per element (layout of
    /// [`helper::bit_index`]); [`HelperMaterial::resolve`] makes them ready.
    pub bits: HelperBits,
    /// P0: its shares of the outputs `v` (from its seed); P1: `None` (they come from P2).
    pub v: Option<Vec<u64>>,
    /// P0: its shares of `v·r` (ReLU only).
    pub vr: Option<Vec<u64>>,
}

/// Where a party's helper bit shares come from. Both sources are resolved only when the
/// online step needs them, so that P0's sampling and the dealer's delivery to P1 overlap the
/// opening of the masked values.
pub enum HelperBits {
    /// In memory.
    Ready(Vec<u8>),
    /// P0: `n` shares to sample from this one-time seed (drawn from the seed P0 shares with the
    /// dealer, which samples the same).
    Seeded(Seed, usize),
    /// P1: `n` bytes of corrections the dealer sends next.
    FromDealer(usize),
}

impl HelperMaterial {
    /// Makes the bit shares ready: samples P0's, receives P1's from the dealer (nothing else may
    /// be received from the dealer in between).
    pub async fn resolve(&mut self, ch: &mut crate::transport::Channel) -> Result<()> {
        match &self.bits {
            HelperBits::Ready(_) => {}
            HelperBits::Seeded(seed, n) => self.bits = HelperBits::Ready(sample_bits(seed, *n)),
            HelperBits::FromDealer(n) => {
                let n = *n;
                let len = helper::packed_len(n);
                let (frame, start) =
                    ch.recv_frame(PartyId::P2, crate::transport::FrameKind::Material, Some(len)).await?;
                self.bits = HelperBits::Ready(helper::unpack7(&frame[start..], n));
            }
        }
        Ok(())
    }

    /// The bit shares, once resolved.
    pub fn bits(&self) -> Result<&[u8]> {
        match &self.bits {
            HelperBits::Ready(b) => Ok(b),
            _ => Err(Error::InvalidInput("helper bit shares used before they were resolved".into())),
        }
    }
}

/// `n` uniform Z_p bit shares from a one-time seed.
fn sample_bits(seed: &Seed, n: usize) -> Vec<u8> {
    let mut bits = vec![0u8; n];
    helper::fill_zp(&mut crate::prg::Prg::new(seed, 0), &mut bits);
    bits
}

/// The dealer's state for the online step of a `helper` operation.
pub struct HelperState {
    /// The masks.
    pub r: Vec<u64>,
    /// P0's shares of the outputs.
    pub v0: Vec<u64>,
    /// P0's shares of `v·r` (ReLU only).
    pub vr0: Option<Vec<u64>>,
}

/// What the dealer's generator drew for P0 (everything the dealer also knows of P0's half).
struct P0Draws {
    r0: RingTensor,
    v0: Vec<u64>,
    vr0: Option<Vec<u64>>,
    /// The helper's one-time seed for P0's bit shares.
    bits_seed: Option<Seed>,
}

impl Generator {
    fn words(&mut self, half: usize, n: usize) -> Vec<u64> {
        self.draw(half, &[n]).into_vec()
    }

    /// P0's half of `req`'s seed material, in the contract's order (the dealer and P0 both run this).
    fn p0_draws(&mut self, req: &GateRequest) -> P0Draws {
        let r0 = self.draw(P0, &[req.len]);
        let mut d = P0Draws { r0, v0: vec![], vr0: None, bits_seed: None };
        match req.method {
            Method::Fss1 => {}
            Method::Fss => {
                d.v0 = self.words(P0, req.outputs());
                d.vr0 = req.relu.then(|| self.words(P0, req.outputs()));
            }
            Method::Helper => {
                d.bits_seed = Some(self.prg[P0].as_mut().expect("generator holds P0's PRG").next_seed());
                d.v0 = self.words(P0, req.outputs());
                d.vr0 = req.relu.then(|| self.words(P0, req.outputs()));
            }
        }
        d
    }
}

/// The helper's bit shares per party for `req`: `k − 1` per element.
fn bit_count(req: &GateRequest) -> usize {
    req.len * req.window().low_bits() as usize
}

/// Bytes the dealer sends `to` for `req`.
pub(super) fn frame_len(req: &GateRequest, to: PartyId) -> usize {
    let w = req.window();
    match (req.method, to) {
        (Method::Fss1, _) if req.relu_keys() => req.len * Relu64Key::byte_len_for(req.bits),
        (Method::Fss1, _) => req.len * SignKey::byte_len_for(req.bits),
        (Method::Fss, to) => compact::material_len(w, req.len, req.points, req.relu, to == PartyId::P1),
        (Method::Helper, PartyId::P1) => helper::packed_len(bit_count(req)),
        (Method::Helper, _) => 0,
    }
}

/// The dealer: draws both halves, writes P0's and P1's frames' payloads to `out0`, `out1`, and
/// returns what P0 drew (for the test dealer) and the dealer's own state (helper only).
fn dealer_generate(
    g: &mut Generator,
    req: &GateRequest,
    out0: &mut Vec<u8>,
    out1: &mut Vec<u8>,
) -> Result<(P0Draws, RingTensor, Option<HelperState>)> {
    req.validate()?;
    let w = req.window();
    let fss = |e: crate::fss::FssError| Error::InvalidInput(format!("comparison material: {e}"));
    if req.method == Method::Fss1 {
        let (r0, r1) = if req.relu_keys() {
            gen_gate_keys_into::<Relu64Key>(g, req.len, req.bits, out0, out1)?
        } else {
            gen_gate_keys_into::<SignKey>(g, req.len, req.bits, out0, out1)?
        };
        return Ok((P0Draws { r0, v0: vec![], vr0: None, bits_seed: None }, r1, None));
    }
    let d0 = g.p0_draws(req);
    let r1 = g.draw(P1, &[req.len]);
    let r: Vec<u64> = d0.r0.as_slice().iter().zip(r1.as_slice()).map(|(a, b)| a.wrapping_add(*b)).collect();
    let state = match req.method {
        Method::Fss => {
            let private = g.private.as_mut().expect("the dealer holds its private PRG");
            compact::keygen(w, &r, req.points, (&d0.v0, d0.vr0.as_deref()), private, [out0, out1]).map_err(fss)?;
            None
        }
        Method::Helper => {
            let bits0 = sample_bits(d0.bits_seed.as_ref().expect("drawn for the helper"), bit_count(req));
            let mut bits1 = Vec::with_capacity(bits0.len());
            helper::bit_corrections(w, &r, &bits0, &mut bits1);
            helper::pack7(&bits1, out1);
            Some(HelperState { r, v0: d0.v0.clone(), vr0: d0.vr0.clone() })
        }
        Method::Fss1 => unreachable!("handled above"),
    };
    Ok((d0, r1, state))
}

fn malformed(e: crate::fss::FssError) -> Error {
    Error::Desync { peer: PartyId::P2, detail: format!("malformed comparison material: {e}") }
}

/// P0's material from its draws and the dealer's frame (`frame[start..]`).
fn p0_gate(req: &GateRequest, d: P0Draws, frame: Vec<u8>, start: usize) -> Result<Gate> {
    Ok(match req.method {
        Method::Fss1 if req.relu_keys() => {
            Gate::Relu64(GateMaterial { r: d.r0, keys: pack_keys(frame, start, req.len, req.bits)? })
        }
        Method::Fss1 => Gate::Sign(GateMaterial { r: d.r0, keys: pack_keys(frame, start, req.len, req.bits)? }),
        Method::Fss => Gate::Compact(CompactMaterial {
            r: d.r0,
            keys: compact::CompactKeys::new(frame, start, req.len, req.points, req.window(), true)
                .map_err(malformed)?,
            v: d.v0,
            vr: d.vr0,
        }),
        Method::Helper => {
            let bits = HelperBits::Seeded(d.bits_seed.expect("drawn for the helper"), bit_count(req));
            Gate::Helper(HelperMaterial { r: d.r0, bits, v: Some(d.v0), vr: d.vr0 })
        }
    })
}

/// P1's material from its mask share and the dealer's frame (`frame[start..]`).
fn p1_gate(req: &GateRequest, r1: RingTensor, frame: Vec<u8>, start: usize) -> Result<Gate> {
    Ok(match req.method {
        Method::Fss1 if req.relu_keys() => {
            Gate::Relu64(GateMaterial { r: r1, keys: pack_keys(frame, start, req.len, req.bits)? })
        }
        Method::Fss1 => Gate::Sign(GateMaterial { r: r1, keys: pack_keys(frame, start, req.len, req.bits)? }),
        Method::Fss => {
            let keys_end = start + req.len * crate::fss::bitdcf::key_len(req.window().low_bits());
            let words = bytes_to_u64(&frame[keys_end..]);
            let n = req.outputs();
            let (v, vr) = (words[..n].to_vec(), req.relu.then(|| words[n..2 * n].to_vec()));
            let keys =
                compact::CompactKeys::new(frame, start, req.len, req.points, req.window(), false).map_err(malformed)?;
            Gate::Compact(CompactMaterial { r: r1, keys, v, vr })
        }
        Method::Helper => {
            let bits = HelperBits::Ready(helper::unpack7(&frame[start..], bit_count(req)));
            Gate::Helper(HelperMaterial { r: r1, bits, v: None, vr: None })
        }
    })
}

/// The dealer-backed source's material for `req` (see the [module docs](self)).
pub(super) async fn dealer_gate(
    role: &mut super::Role,
    ch: &mut crate::transport::Channel,
    req: GateRequest,
) -> Result<Gate> {
    use crate::transport::FrameKind;
    req.validate()?;
    match role {
        super::Role::P0(g) => {
            let d = g.p0_draws_or_fss1(&req);
            let (frame, start) = if req.method == Method::Helper {
                (vec![], 0)
            } else {
                ch.recv_frame(PartyId::P2, FrameKind::Material, Some(frame_len(&req, PartyId::P0))).await?
            };
            p0_gate(&req, d, frame, start)
        }
        super::Role::P1(g) => {
            let r1 = g.draw(P1, &[req.len]);
            if req.method == Method::Helper {
                // Received when the online step needs it: the delivery overlaps the opening.
                let bits = HelperBits::FromDealer(bit_count(&req));
                return Ok(Gate::Helper(HelperMaterial { r: r1, bits, v: None, vr: None }));
            }
            let len = frame_len(&req, PartyId::P1);
            let (frame, start) = ch.recv_frame(PartyId::P2, FrameKind::Material, Some(len)).await?;
            p1_gate(&req, r1, frame, start)
        }
        super::Role::Dealer(g) => {
            // The helper's P0 draws everything from its seed: no frame (nor sequence number) for it.
            let to_p0 = req.method != Method::Helper;
            let mut f0 = to_p0.then(|| ch.begin_frame(PartyId::P0, FrameKind::Material, frame_len(&req, PartyId::P0)));
            let mut f1 = ch.begin_frame(PartyId::P1, FrameKind::Material, frame_len(&req, PartyId::P1));
            let mut none = Vec::new();
            let out0 = match f0.as_mut() {
                Some(f) => f.payload(),
                None => &mut none,
            };
            let (_, _, state) = dealer_generate(g, &req, out0, f1.payload())?;
            if let Some(f0) = f0 {
                ch.send_frame(f0).await?;
            }
            ch.send_frame(f1).await?;
            Ok(state.map_or(Gate::Placeholder, Gate::HelperState))
        }
    }
}

impl Generator {
    /// P0's draws for `req`, the one-round method included (only its mask).
    fn p0_draws_or_fss1(&mut self, req: &GateRequest) -> P0Draws {
        if req.method == Method::Fss1 {
            P0Draws { r0: self.draw(P0, &[req.len]), v0: vec![], vr0: None, bits_seed: None }
        } else {
            self.p0_draws(req)
        }
    }
}

/// The test dealer's material for party `me`: every party runs the whole generator (so all
/// three stay in step) and keeps its own part.
pub(super) fn test_gate(g: &mut Generator, me: PartyId, req: GateRequest) -> Result<Gate> {
    let (mut b0, mut b1) = (vec![], vec![]);
    let (d0, r1, state) = dealer_generate(g, &req, &mut b0, &mut b1)?;
    match me {
        PartyId::P0 => p0_gate(&req, d0, b0, 0),
        PartyId::P1 => p1_gate(&req, r1, b1, 0),
        _ => Ok(state.map_or(Gate::Placeholder, Gate::HelperState)),
    }
}
