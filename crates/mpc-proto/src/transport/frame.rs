//! The frame format.
//!
//! ```text
//! [u16 LE header length][header: postcard(Header)][payload: header.len bytes]
//! ```
//! The header names the session (128-bit id), the sender's per-peer sequence number, the kind of
//! message, the payload length and the length of the whole message the frame belongs to.
//! Payloads of ring elements are raw little-endian `u64`s — not a varint encoding, which would
//! grow random ring elements by ~19%.
//!
//! A message longer than [`FRAGMENT`] bytes travels as consecutive frames of at most that much
//! payload, each with its own sequence number, the message's kind and its total length
//! (`Channel` splits and reassembles them): no frame on the wire is larger than a few MiB,
//! whatever a job moves, and a receiver checks the total against the length it expects before
//! it allocates anything.

use serde::{Deserialize, Serialize};

use crate::ids::SessionId;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum FrameKind {
    /// Session setup: configuration and seeds.
    Hello,
    /// Masked values opened to the peer (Beaver openings, masked comparison inputs).
    Open,
    /// A share sent to the party that reconstructs a result.
    Reveal,
    /// Dealer material (corrections, keys): offline traffic.
    Material,
    /// The sender aborts the session.
    Abort,
    /// Online messages to and from the comparison helper (P2): blinded terms, output shares.
    Helper,
}

/// Frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The session this frame belongs to.
    pub session: SessionId,
    /// Sender's sequence number towards this receiver, from 0.
    pub seq: u64,
    /// Message kind.
    pub kind: FrameKind,
    /// Payload length of this frame in bytes.
    pub len: u64,
    /// Length of the whole message this frame carries part of (`len` when it is not split).
    pub total: u64,
}

/// The largest payload of one frame on the wire: longer messages are split ([module docs](self)).
pub const FRAGMENT: usize = 4 << 20;

/// Largest encoded header (postcard varints of the fields above).
const MAX_HEADER: usize = 64;

pub(crate) fn encode_header(h: &Header, payload_len: usize) -> Vec<u8> {
    let hb = postcard::to_allocvec(h).expect("header serialisation cannot fail");
    debug_assert!(hb.len() <= MAX_HEADER);
    let mut out = Vec::with_capacity(2 + hb.len() + payload_len);
    out.extend_from_slice(&(hb.len() as u16).to_le_bytes());
    out.extend_from_slice(&hb);
    out
}

/// Encodes a frame with a byte payload.
pub fn encode(h: &Header, payload: &[u8]) -> Vec<u8> {
    debug_assert_eq!(h.len as usize, payload.len());
    let mut out = encode_header(h, payload.len());
    out.extend_from_slice(payload);
    out
}

/// Encodes a frame with a payload of ring elements.
pub fn encode_u64(h: &Header, payload: &[u64]) -> Vec<u8> {
    debug_assert_eq!(h.len as usize, payload.len() * 8);
    let mut out = encode_header(h, payload.len() * 8);
    extend_u64(&mut out, payload);
    out
}

/// Appends `words` to `out` as little-endian bytes (the wire form of ring elements).
pub fn extend_u64(out: &mut Vec<u8>, words: &[u64]) {
    if cfg!(target_endian = "little") {
        out.extend_from_slice(bytemuck::cast_slice(words));
    } else {
        words.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    }
}

/// Decodes a frame, checking the announced length against the bytes present and `max_payload`.
pub fn decode(raw: &[u8], max_payload: usize) -> Result<(Header, &[u8]), String> {
    if raw.len() < 2 {
        return Err(format!("frame of {} bytes is shorter than its length prefix", raw.len()));
    }
    let hlen = u16::from_le_bytes([raw[0], raw[1]]) as usize;
    if hlen > MAX_HEADER || raw.len() < 2 + hlen {
        return Err(format!("bad header length {hlen} in a frame of {} bytes", raw.len()));
    }
    let (h, rest): (Header, &[u8]) =
        postcard::take_from_bytes(&raw[2..2 + hlen]).map_err(|e| format!("undecodable header: {e}"))?;
    if !rest.is_empty() {
        return Err("trailing bytes in header".into());
    }
    let payload = &raw[2 + hlen..];
    if h.len > max_payload as u64 {
        return Err(format!("payload of {} bytes exceeds the limit of {max_payload}", h.len));
    }
    if payload.len() as u64 != h.len {
        return Err(format!("header announces {} payload bytes, frame has {}", h.len, payload.len()));
    }
    Ok((h, payload))
}

/// Reads little-endian `u64`s (the caller checked that the length is a multiple of 8).
pub fn bytes_to_u64(b: &[u8]) -> Vec<u64> {
    b.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("chunks of 8"))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn roundtrip() {
        let h = Header { session: SessionId(u128::MAX - 5), seq: 42, kind: FrameKind::Open, len: 16, total: 16 };
        let f = encode_u64(&h, &[1, u64::MAX]);
        let (h2, p) = decode(&f, 1 << 20).unwrap();
        assert_eq!(h, h2);
        assert_eq!(bytes_to_u64(p), vec![1, u64::MAX]);
    }

    #[test]
    fn rejects_bad_lengths() {
        let h = Header { session: SessionId(1), seq: 0, kind: FrameKind::Open, len: 16, total: 16 };
        let f = encode_u64(&h, &[1, 2]);
        assert!(decode(&f[..f.len() - 1], 1 << 20).is_err());
        assert!(decode(&f, 8).is_err());
        assert!(decode(&[], 8).is_err());
        let big = Header { len: u64::MAX, ..h };
        let mut f2 = encode_header(&big, 0);
        f2.extend_from_slice(&[0; 8]);
        assert!(decode(&f2, 1 << 20).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode(&bytes, 1 << 20);
        }
    }
}
