//! Base oblivious transfers: Masny–Rindal "endemic" OT (ePrint 2019/706) on ristretto255.
//!
//! One message each way, sent at the same time (one round): the sender draws `a` and sends
//! `A = a·G`; for each OT `i` with choice `c`, the receiver draws `b` and a uniform point `R`,
//! sets `r_c = b·G − H(i, R)`, `r_{1−c} = R`, and sends `(r_0, r_1)`. The sender's two keys are
//! `k_j = KDF(i, A, r_0, r_1, a·(r_j + H(i, r_{1−j})))`; the receiver's is `KDF(…, b·A)`, which
//! equals `k_c`. `(r_0, r_1)` is a pair of uniform points whichever `c` is (`H` maps onto the
//! group, `b·G` is uniform), so the sender learns nothing of `c`; `k_{1−c}` needs the discrete
//! log of `H(i, R)`-shifted points, so the receiver learns nothing of it (in the random-oracle
//! model, under CDH). This variant avoids the simulation gap of Chou–Orlandi's "simplest OT".
//!
//! Secret-dependent steps are constant-time: the choice picks `(r_0, r_1)` with
//! `subtle::ConditionallySelectable`, scalar multiplications are dalek's constant-time ones.
//! Points that do not decode, and the identity, are refused. Hashes are SHA-512 (onto the group) and SHA-256 (the
//! KDF), domain-separated and bound to the session id and the OT index.

use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::Identity;
use sha2::{Digest, Sha256, Sha512};
use subtle::{Choice, ConditionallySelectable};

use crate::error::{Error, Result};
use crate::ids::PartyId;
use crate::prg::Seed;
use crate::transport::{Channel, FrameKind};

fn random_scalar(rng: &mut impl rand_core::CryptoRng) -> Scalar {
    let mut w = [0u8; 64];
    rng.fill_bytes(&mut w);
    Scalar::from_bytes_mod_order_wide(&w)
}

fn random_point(rng: &mut impl rand_core::CryptoRng) -> RistrettoPoint {
    let mut w = [0u8; 64];
    rng.fill_bytes(&mut w);
    RistrettoPoint::from_uniform_bytes(&w)
}

/// `H(i, p)`: a point of unknown discrete log.
fn hash_to_group(sid: &[u8; 16], i: u32, p: &CompressedRistretto) -> RistrettoPoint {
    let h = Sha512::new()
        .chain_update(b"membrane/ot/mr19/hash-to-group")
        .chain_update(sid)
        .chain_update(i.to_le_bytes())
        .chain_update(p.as_bytes())
        .finalize();
    RistrettoPoint::from_uniform_bytes(&h.into())
}

fn kdf(sid: &[u8; 16], i: u32, a: &CompressedRistretto, r: &[CompressedRistretto; 2], key: &RistrettoPoint) -> Seed {
    let h = Sha256::new()
        .chain_update(b"membrane/ot/mr19/kdf")
        .chain_update(sid)
        .chain_update(i.to_le_bytes())
        .chain_update(a.as_bytes())
        .chain_update(r[0].as_bytes())
        .chain_update(r[1].as_bytes())
        .chain_update(key.compress().as_bytes())
        .finalize();
    Seed::from_bytes(h.into())
}

fn decode(bytes: &[u8], peer: PartyId, what: &str) -> Result<(CompressedRistretto, RistrettoPoint)> {
    let c = CompressedRistretto::from_slice(bytes)
        .map_err(|_| Error::Desync { peer, detail: format!("base OT: {what} is not 32 bytes") })?;
    let p = c.decompress().ok_or_else(|| Error::Desync { peer, detail: format!("base OT: {what} is not a point") })?;
    // The identity would make every key a constant: never a value an honest peer sends.
    if p == RistrettoPoint::identity() {
        return Err(Error::Desync { peer, detail: format!("base OT: {what} is the identity") });
    }
    Ok((c, p))
}

fn sid(ch: &Channel) -> [u8; 16] {
    ch.session().0.to_le_bytes()
}

/// The sender's side of `n` base OTs with `peer`: two keys per OT, of which the receiver
/// learns exactly the one it chose. One round; 32 bytes sent, `64·n` received.
pub(crate) async fn send(
    ch: &mut Channel,
    peer: PartyId,
    n: usize,
    rng: &mut impl rand_core::CryptoRng,
) -> Result<Vec<[Seed; 2]>> {
    let sid = sid(ch);
    let a = random_scalar(rng);
    let big_a = RistrettoPoint::mul_base(&a).compress();
    ch.send_bytes(peer, FrameKind::Material, big_a.as_bytes()).await?;
    let msg = ch.recv_bytes(peer, FrameKind::Material, Some(64 * n)).await?;
    let mut keys = Vec::with_capacity(n);
    for (i, pair) in msg.chunks_exact(64).enumerate() {
        let i = i as u32;
        let (c0, p0) = decode(&pair[..32], peer, "r0")?;
        let (c1, p1) = decode(&pair[32..], peer, "r1")?;
        let r = [c0, c1];
        let k0 = kdf(&sid, i, &big_a, &r, &(a * (p0 + hash_to_group(&sid, i, &c1))));
        let k1 = kdf(&sid, i, &big_a, &r, &(a * (p1 + hash_to_group(&sid, i, &c0))));
        keys.push([k0, k1]);
    }
    Ok(keys)
}

/// The receiver's side of base OTs with `peer`: the key of each OT's `choices[i]`. One round;
/// `64·n` bytes sent, 32 received.
pub(crate) async fn receive(
    ch: &mut Channel,
    peer: PartyId,
    choices: &[Choice],
    rng: &mut impl rand_core::CryptoRng,
) -> Result<Vec<Seed>> {
    let sid = sid(ch);
    let mut msg = Vec::with_capacity(64 * choices.len());
    let mut secrets = Vec::with_capacity(choices.len());
    for (i, &c) in choices.iter().enumerate() {
        let b = random_scalar(rng);
        let other = random_point(rng).compress();
        let chosen = (RistrettoPoint::mul_base(&b) - hash_to_group(&sid, i as u32, &other)).compress();
        // (r0, r1) = c ? (other, chosen) : (chosen, other), without a branch on c.
        let r0 = CompressedRistretto(<[u8; 32]>::conditional_select(&chosen.0, &other.0, c));
        let r1 = CompressedRistretto(<[u8; 32]>::conditional_select(&other.0, &chosen.0, c));
        msg.extend_from_slice(r0.as_bytes());
        msg.extend_from_slice(r1.as_bytes());
        secrets.push((b, [r0, r1]));
    }
    ch.send_bytes(peer, FrameKind::Material, &msg).await?;
    let a = ch.recv_bytes(peer, FrameKind::Material, Some(32)).await?;
    let (big_a, point_a) = decode(&a, peer, "A")?;
    Ok(secrets.iter().enumerate().map(|(i, (b, r))| kdf(&sid, i as u32, &big_a, r, &(b * point_a))).collect())
}
