//! Certificates as operators see them: what a certificate is for, who issued it and until when
//! (`party-node cert show`), and the checks when a node starts (`party-node run`): its own
//! certificate must be valid now, and every certificate it uses (its own, the pinned peers', the
//! consortium CA's) that expires within [`WARN_DAYS`] days is warned about, in the log and in
//! `party-node status`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Serialize;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::config::{Config, Trust};

/// Certificates expiring within this many days are warned about when the node starts.
pub const WARN_DAYS: i64 = 30;

/// What a certificate says, for people: never anything secret (a certificate has nothing secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    /// The fingerprint the node's logs and errors show ([`crate::tls::fingerprint`]).
    pub fingerprint: String,
    /// Its subjectAltName DNS names: the organisation names it is valid for.
    pub dns_names: Vec<String>,
    /// Subject distinguished name (`CN=…, O=…`).
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Whether it is a CA certificate (basicConstraints CA:TRUE).
    pub is_ca: bool,
    /// Valid from (Unix seconds).
    pub not_before: i64,
    /// Valid until (Unix seconds).
    pub not_after: i64,
}

impl CertInfo {
    /// Parses a DER certificate.
    pub fn parse(cert: &CertificateDer<'_>) -> anyhow::Result<CertInfo> {
        let (_, x) =
            X509Certificate::from_der(cert.as_ref()).map_err(|e| anyhow::anyhow!("not an X.509 certificate: {e}"))?;
        Ok(CertInfo {
            fingerprint: crate::tls::fingerprint(cert),
            dns_names: dns_names(&x),
            subject: x.subject().to_string(),
            issuer: x.issuer().to_string(),
            is_ca: x.is_ca(),
            not_before: x.validity().not_before.timestamp(),
            not_after: x.validity().not_after.timestamp(),
        })
    }

    /// Whether subject and issuer are the same name (what `party-node init` makes).
    pub fn self_signed(&self) -> bool {
        self.subject == self.issuer
    }

    /// Whole days from `now` until it expires (negative once expired).
    pub fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(86_400)
    }

    /// Whether it has expired at `now`.
    pub fn expired(&self, now: i64) -> bool {
        now > self.not_after
    }

    /// Whether it is not valid yet at `now`.
    pub fn not_yet_valid(&self, now: i64) -> bool {
        now < self.not_before
    }

    /// "until DATE (N days left)", "expired on DATE (N days ago)" or "not valid before DATE".
    pub fn validity_at(&self, now: i64) -> String {
        if self.not_yet_valid(now) {
            format!("not valid before {} (check this machine's clock)", format_time(self.not_before))
        } else if self.expired(now) {
            let ago = (now - self.not_after).div_euclid(86_400);
            format!("expired on {} ({ago} day{} ago)", format_time(self.not_after), plural(ago))
        } else {
            let left = self.days_left(now);
            format!("valid until {} ({left} day{} left)", format_time(self.not_after), plural(left))
        }
    }

    /// The lines `party-node cert show` prints, indented by two spaces.
    pub fn describe(&self, now: i64) -> String {
        let names = if self.dns_names.is_empty() && self.is_ca {
            "(none: a CA certificate is for no organisation)".to_string()
        } else if self.dns_names.is_empty() {
            "(none: no subjectAltName DNS name, so no node accepts it for an organisation)".to_string()
        } else {
            self.dns_names.join(", ")
        };
        let issuer = if self.self_signed() { format!("{} (self-signed)", self.issuer) } else { self.issuer.clone() };
        let mut s = format!(
            "  name:        {names}\n  fingerprint: {}\n  subject:     {}\n  issuer:      {issuer}\n  \
             not before:  {}\n  not after:   {}\n  status:      {}\n",
            self.fingerprint,
            self.subject,
            format_time(self.not_before),
            format_time(self.not_after),
            self.validity_at(now)
        );
        if self.is_ca {
            s.push_str("  CA:          yes (it can issue node certificates)\n");
        }
        s
    }
}

fn plural(n: i64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn dns_names(x: &X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok(Some(san)) = x.subject_alternative_name() else { return vec![] };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

/// Now, in Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// `2026-03-01 12:00:00 UTC`.
pub fn format_time(t: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(t) {
        Ok(d) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            d.year(),
            d.month() as u8,
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        ),
        Err(_) => format!("{t} (Unix time)"),
    }
}

/// Every certificate in a PEM file: what `path` holds, or what it is instead (a certificate
/// request, a key — named by its label only, never echoing a block: it may be a key).
pub fn read_pem_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    pem_certs(&pem).with_context(|| path.display().to_string())
}

/// Every certificate in PEM text, or what the text holds instead.
pub fn pem_certs(pem: &[u8]) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pem).collect::<Result<_, _>>().context("not a valid PEM file")?;
    if certs.is_empty() {
        let text = String::from_utf8_lossy(pem);
        if text.contains("-----BEGIN CERTIFICATE REQUEST-----") {
            bail!(
                "this is a certificate request (CSR), not a certificate: the consortium CA operator turns it into \
                 one with `party-node ca sign`"
            );
        }
        if text.contains("PRIVATE KEY-----") {
            bail!("this is a private key, not a certificate (keep it secret; the certificate is the .cert.pem file)");
        }
        bail!("no PEM certificate in it (-----BEGIN CERTIFICATE-----)");
    }
    Ok(certs)
}

/// A certificate a node uses, and where it came from.
#[derive(Clone, Debug)]
pub struct CertFile {
    /// Which setting names it: `[node] cert`, `[[party]] bob cert`, `[trust] ca`.
    pub what: String,
    /// The file (resolved against the config's directory).
    pub path: PathBuf,
    /// The certificate.
    pub cert: CertificateDer<'static>,
}

/// One certificate in use, as `GET /v1/health` reports it.
#[derive(Clone, Debug, Serialize)]
pub struct InUse {
    /// Which setting names it.
    pub what: String,
    /// The file.
    pub file: String,
    /// What the certificate says.
    #[serde(flatten)]
    pub info: CertInfo,
}

impl InUse {
    /// The warning for a certificate expiring within [`WARN_DAYS`] (or already expired) at
    /// `now`; `None` if it has longer.
    pub fn warning(&self, now: i64) -> Option<String> {
        if self.info.days_left(now) >= WARN_DAYS {
            return None;
        }
        let fix = if self.what == "[trust] ca" {
            "the consortium CA operator must renew it (`party-node ca init` in a new directory, then every node's \
             certificate is issued again)"
        } else if self.what == "[node] cert" {
            "renew it: `party-node cert request --config …` and have the CA sign it, or make a new self-signed one \
             and send it to the other organisations"
        } else {
            "ask that organisation for its renewed certificate"
        };
        Some(format!(
            "{} {} ({}, fingerprint {}) {}: {fix}",
            self.what,
            self.file,
            self.info.dns_names.first().map_or(self.info.subject.as_str(), String::as_str),
            self.info.fingerprint,
            self.info.validity_at(now)
        ))
    }
}

/// The checks of `party-node run` before anything binds: refuses an own certificate outside its
/// validity period (naming the file and the fix), warns (tracing WARN) about every certificate
/// in use that expires within [`WARN_DAYS`] days, and returns them all for the health report.
pub fn check_at_start(cfg: &Config) -> anyhow::Result<Vec<InUse>> {
    let now = now();
    let own = cfg.certificates.first().context("the config lists no certificate")?;
    let info = CertInfo::parse(&own.cert).with_context(|| format!("[node] cert {}", own.path.display()))?;
    let name = &cfg.parties[cfg.me.index()].name;
    let config = cfg.path.display();
    if info.expired(now) || info.not_yet_valid(now) {
        let fix = match cfg.trust {
            Trust::Ca(_) => format!(
                "run `party-node cert request --config {config}`, send the request to the consortium CA operator \
                 and install the certificate they return as {}",
                own.path.display()
            ),
            Trust::Pinned => format!(
                "make a new identity (`party-node init --role {} --name {name} --out <new directory>`), use its \
                 node.cert.pem and node.key.pem as [node] cert and key ({}), and send the certificate to the other \
                 organisations to pin",
                cfg.role(),
                own.path.display()
            ),
        };
        if info.not_yet_valid(now) {
            bail!(
                "[node] cert {} is {}: is this machine's clock right? If it is, wait, or {fix}",
                own.path.display(),
                info.validity_at(now)
            );
        }
        bail!(
            "[node] cert {} {}: the peers would refuse it, so the node does not start; {fix}",
            own.path.display(),
            info.validity_at(now)
        );
    }
    if matches!(cfg.trust, Trust::Pinned) && !info.self_signed() {
        tracing::warn!(
            file = %own.path.display(),
            issuer = %info.issuer,
            "this node's certificate is issued by a CA, but [trust] mode = \"pinned\": the other organisations must \
             pin exactly this file, or every node switches to [trust] mode = \"ca\" (docs/deploy.md)"
        );
    }
    let mut out: Vec<InUse> = Vec::new();
    for f in &cfg.certificates {
        // The node's own certificate is usually also pinned in its own [[party]] entry.
        if out.iter().any(|u| u.info.fingerprint == crate::tls::fingerprint(&f.cert)) {
            continue;
        }
        let info = CertInfo::parse(&f.cert).with_context(|| format!("{} {}", f.what, f.path.display()))?;
        let u = InUse { what: f.what.clone(), file: f.path.display().to_string(), info };
        if let Some(w) = u.warning(now) {
            tracing::warn!("certificate expires soon: {w}");
        }
        out.push(u);
    }
    Ok(out)
}
