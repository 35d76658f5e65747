//! Mutual TLS for the mesh: rustls with the ring provider, TLS 1.3 only, ALPN `membrane/1`.
//!
//! Both directions use [`PeerAuth`], which accepts exactly the configured peers: in pinned mode
//! a certificate byte-identical to one listed in the config, in CA mode a certificate chaining
//! to the consortium CA and valid for a configured party's name. Anything else is refused during
//! the handshake and logged with the certificate's SHA-256 fingerprint — at WARN once per
//! certificate per minute, with the count of refusals since ([`Refusals`]): a misconfigured peer
//! retrying is one line a minute, not one per attempt. A dialer additionally requires the
//! certificate of the peer it meant to reach.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use mpc_proto::PartyId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use serde::Serialize;

use crate::config::{Config, Trust};

/// The ALPN protocol of the mesh.
pub const ALPN: &[u8] = b"membrane/1";

/// The process's crypto provider: ring, passed explicitly (never a process default).
///
/// Cipher suites in order of preference: AES-128-GCM first (128-bit security, as TLS 1.3
/// mandates; four fewer AES rounds than AES-256, which shows on the mesh's bulk transfers:
/// QUIC encrypts every datagram in user space), then AES-256-GCM and ChaCha20-Poly1305.
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites = vec![TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256];
    Arc::new(p)
}

/// Short SHA-256 fingerprint of a certificate, for logs.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    hex::encode(&d.as_ref()[..12])
}

/// The DNS names (subjectAltName `dNSName` entries) a certificate is issued for: what errors
/// show when a certificate's name and the configured one differ. An unparsable certificate has
/// none.
pub fn cert_dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    crate::certs::CertInfo::parse(cert).map(|i| i.dns_names).unwrap_or_default()
}

/// Whether `cert` is issued for DNS name `name` (its subjectAltName), whoever signed it.
pub fn cert_is_for(cert: &CertificateDer<'_>, name: &str) -> bool {
    let (Ok(ee), Ok(sn)) = (webpki::EndEntityCert::try_from(cert), ServerName::try_from(name.to_string())) else {
        return false;
    };
    ee.verify_is_valid_for_subject_name(&sn).is_ok()
}

/// Checks that `cert` chains to `ca` and is valid for organisation `name` at time `at` (CA mode).
pub fn check_ca_issued(
    ca: &CertificateDer<'static>,
    cert: &CertificateDer<'_>,
    name: &str,
    at: UnixTime,
) -> anyhow::Result<()> {
    let algs = provider().signature_verification_algorithms;
    let anchor = webpki::anchor_from_trusted_cert(ca).map_err(|e| anyhow::anyhow!("unusable CA certificate: {e}"))?;
    let ee = webpki::EndEntityCert::try_from(cert).map_err(|e| anyhow::anyhow!("unparsable certificate: {e}"))?;
    ee.verify_for_usage(algs.all, &[anchor], &[], at, webpki::KeyUsage::server_auth(), None, None)
        .map_err(|e| anyhow::anyhow!("not issued by the consortium CA: {e}"))?;
    let sn = ServerName::try_from(name.to_string()).context("party name is not a DNS name")?;
    ee.verify_is_valid_for_subject_name(&sn).map_err(|e| anyhow::anyhow!("not valid for {name:?}: {e}"))?;
    Ok(())
}

/// How often a refused certificate is logged at WARN (refusals in between are counted).
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// At most this many refused certificates are remembered (the oldest is forgotten first).
const REFUSALS_MAX: usize = 256;

/// A certificate this node refused, as `status` and the API report it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct RefusedCert {
    /// Short SHA-256 fingerprint ([`fingerprint`]).
    pub fingerprint: String,
    /// The DNS names the certificate is issued for (who it claims to be).
    pub names: Vec<String>,
    /// Why it was refused.
    pub reason: String,
    /// Refusals since this node started.
    pub count: u64,
    /// The last refusal, Unix milliseconds.
    pub last_unix_ms: u64,
}

#[derive(Debug)]
struct RefusalEntry {
    info: RefusedCert,
    /// When this certificate was last logged at WARN.
    warned: Instant,
    /// Refusals since then (not logged one by one).
    since_warn: u64,
}

/// Refused certificates, counted per fingerprint. The first refusal of a certificate is logged at
/// WARN; later ones only once per interval, with how many there were since: a stranger (or a
/// peer with a stale certificate) retrying makes one line a minute.
#[derive(Debug)]
pub struct Refusals {
    interval: Duration,
    seen: Mutex<HashMap<String, RefusalEntry>>,
    /// What this node refused when it last dialled each party (the dialler's log and status
    /// show it against that peer).
    dialled: Mutex<[Option<String>; 3]>,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals::new(REFUSAL_LOG_INTERVAL)
    }
}

impl Refusals {
    /// Logs a certificate at WARN at most once per `interval`.
    pub fn new(interval: Duration) -> Refusals {
        Refusals { interval, seen: Mutex::default(), dialled: Mutex::default() }
    }

    /// Records a refusal of `cert` for `reason`; logs it if due. Returns whether it was logged
    /// at WARN.
    pub fn record(&self, cert: &CertificateDer<'_>, reason: &str, dialled: Option<PartyId>) -> bool {
        let fp = fingerprint(cert);
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        if let Some(p) = dialled {
            self.dialled.lock().expect("refusals lock")[p.index()] =
                Some(format!("this node refused its certificate (fingerprint {fp}): {reason}"));
        }
        let mut seen = self.seen.lock().expect("refusals lock");
        if !seen.contains_key(&fp) && seen.len() >= REFUSALS_MAX {
            let oldest = seen.iter().min_by_key(|(_, e)| e.info.last_unix_ms).map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                seen.remove(&k);
            }
        }
        let names = cert_dns_names(cert);
        match seen.get_mut(&fp) {
            None => {
                tracing::warn!(
                    fingerprint = %fp,
                    names = ?names,
                    reason = %reason,
                    "refused a peer certificate (further refusals of it are counted and logged once every {:?})",
                    self.interval
                );
                let info = RefusedCert {
                    fingerprint: fp.clone(),
                    names,
                    reason: reason.into(),
                    count: 1,
                    last_unix_ms: now_ms,
                };
                seen.insert(fp, RefusalEntry { info, warned: Instant::now(), since_warn: 0 });
                true
            }
            Some(e) => {
                e.info.count += 1;
                e.info.last_unix_ms = now_ms;
                e.info.reason = reason.into();
                e.since_warn += 1;
                if e.warned.elapsed() >= self.interval {
                    tracing::warn!(
                        fingerprint = %fp,
                        names = ?e.info.names,
                        reason = %reason,
                        refused_since_last_warning = e.since_warn,
                        total = e.info.count,
                        "refused a peer certificate again"
                    );
                    e.warned = Instant::now();
                    e.since_warn = 0;
                    true
                } else {
                    tracing::debug!(fingerprint = %fp, reason = %reason, "refused a peer certificate (counted, not warned)");
                    false
                }
            }
        }
    }

    /// The refused certificates, most recent first.
    pub fn list(&self) -> Vec<RefusedCert> {
        let mut v: Vec<RefusedCert> =
            self.seen.lock().expect("refusals lock").values().map(|e| e.info.clone()).collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.last_unix_ms));
        v
    }

    /// What this node refused when it last dialled `p` (taken: each failed attempt reads its own).
    pub fn take_dialled(&self, p: PartyId) -> Option<String> {
        self.dialled.lock().expect("refusals lock")[p.index()].take()
    }
}

/// Who may connect, and how to tell which party a certificate belongs to.
#[derive(Debug)]
pub struct PeerAuth {
    me: PartyId,
    /// The peers (never this node), with their pinned certificate or name.
    peers: Vec<(PartyId, Option<CertificateDer<'static>>, String)>,
    ca: Option<CertificateDer<'static>>,
    algs: WebPkiSupportedAlgorithms,
    /// On a dialer: the only party this connection may reach.
    expect: Option<PartyId>,
    /// Refused certificates, shared by the acceptor and the dialers.
    refusals: Arc<Refusals>,
}

impl PeerAuth {
    /// The verifier for `cfg`'s consortium.
    pub fn new(cfg: &Config) -> PeerAuth {
        let peers =
            cfg.parties.iter().filter(|p| p.id != cfg.me).map(|p| (p.id, p.cert.clone(), p.name.clone())).collect();
        let ca = match &cfg.trust {
            Trust::Pinned => None,
            Trust::Ca(c) => Some(c.clone()),
        };
        PeerAuth {
            me: cfg.me,
            peers,
            ca,
            algs: provider().signature_verification_algorithms,
            expect: None,
            refusals: Arc::default(),
        }
    }

    /// Logs a refused certificate at WARN at most once per `interval` (default
    /// [`REFUSAL_LOG_INTERVAL`]).
    pub fn log_refusals_every(mut self, interval: Duration) -> PeerAuth {
        self.refusals = Arc::new(Refusals::new(interval));
        self
    }

    /// The certificates refused so far.
    pub fn refusals(&self) -> &Arc<Refusals> {
        &self.refusals
    }

    fn expecting(&self, p: PartyId) -> PeerAuth {
        PeerAuth {
            me: self.me,
            peers: self.peers.clone(),
            ca: self.ca.clone(),
            algs: self.algs,
            expect: Some(p),
            refusals: self.refusals.clone(),
        }
    }

    /// The configured peer `end_entity` belongs to, or why it is refused.
    pub fn identify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<PartyId, String> {
        let found = match &self.ca {
            None => self.peers.iter().find(|(_, c, _)| c.as_ref() == Some(end_entity)).map(|p| p.0),
            Some(ca) => {
                let anchor = webpki::anchor_from_trusted_cert(ca).map_err(|e| format!("unusable CA: {e}"))?;
                let ee = webpki::EndEntityCert::try_from(end_entity).map_err(|e| format!("unparsable: {e}"))?;
                // rcgen certificates carry no EKU; one that does must allow the TLS use either way.
                let chain_ok =
                    [webpki::KeyUsage::server_auth(), webpki::KeyUsage::client_auth()].into_iter().any(|u| {
                        ee.verify_for_usage(
                            self.algs.all,
                            std::slice::from_ref(&anchor),
                            intermediates,
                            now,
                            u,
                            None,
                            None,
                        )
                        .is_ok()
                    });
                if !chain_ok {
                    return Err("not issued by the consortium CA (or expired)".into());
                }
                self.peers
                    .iter()
                    .find(|(_, _, name)| {
                        ServerName::try_from(name.as_str())
                            .map(|sn| ee.verify_is_valid_for_subject_name(&sn).is_ok())
                            .unwrap_or(false)
                    })
                    .map(|p| p.0)
            }
        };
        let found = found.ok_or_else(|| "not the certificate of any configured peer".to_string())?;
        match self.expect {
            Some(want) if want != found => Err(format!("belongs to {found}, but {want} was dialled")),
            _ => Ok(found),
        }
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<PartyId, rustls::Error> {
        self.identify(end_entity, intermediates, now).map_err(|why| {
            self.refusals.record(end_entity, &why, self.expect);
            rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure)
        })
    }
}

impl ServerCertVerifier for PeerAuth {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The name is not used: identity is the pinned certificate or the CA-issued name, and
        // `expect` ties it to the party dialled.
        self.check(end_entity, intermediates, now).map(|_| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

impl ClientCertVerifier for PeerAuth {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, intermediates, now).map(|_| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// rustls server config: client certificates mandatory, verified by `auth`.
pub fn server_config(cfg: &Config, auth: Arc<PeerAuth>) -> anyhow::Result<rustls::ServerConfig> {
    let mut sc = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 with the ring provider")?
        .with_client_cert_verifier(auth)
        .with_single_cert(cfg.cert_chain.clone(), cfg.key.0.clone_key())
        .context("this node's certificate and key do not form a usable pair")?;
    sc.alpn_protocols = vec![ALPN.to_vec()];
    Ok(sc)
}

/// rustls client config for dialling `peer`: presents this node's certificate and accepts only
/// `peer`'s.
pub fn client_config(cfg: &Config, auth: &PeerAuth, peer: PartyId) -> anyhow::Result<rustls::ClientConfig> {
    let mut cc = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 with the ring provider")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(auth.expecting(peer)))
        .with_client_auth_cert(cfg.cert_chain.clone(), cfg.key.0.clone_key())
        .context("this node's certificate and key do not form a usable pair")?;
    cc.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cc)
}
