//! Key pairs and certificates: a node's own identity and the consortium CA helpers.
//!
//! A node's certificate is an ECDSA P-256 certificate whose only subject alternative name is the
//! organisation's name (a DNS-style label). In pinned mode peers compare certificates byte for
//! byte; in CA mode they check the chain to the consortium CA and that the certificate is valid
//! for the peer's configured name.

use std::path::Path;

use anyhow::{Context, bail};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// A freshly generated identity, PEM-encoded.
pub struct Identity {
    /// The certificate (public).
    pub cert_pem: String,
    /// The private key (PKCS#8). Secret: written with mode 0600, never logged.
    pub key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("key_pem", &"<secret>").finish_non_exhaustive()
    }
}

/// Checks that `name` can be a certificate's DNS name: 1–63 of `a-z`, `0-9`, `-`, not starting
/// or ending with `-`.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        bail!("organisation name {name:?} must be 1-63 characters of a-z, 0-9 and '-' (not at either end)");
    }
    Ok(())
}

fn node_params(name: &str) -> anyhow::Result<CertificateParams> {
    check_name(name)?;
    let mut params = CertificateParams::new(vec![name.to_string()]).context("certificate parameters")?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.distinguished_name.push(DnType::OrganizationName, name);
    Ok(params)
}

/// A self-signed identity for organisation `name` (pinned trust).
pub fn self_signed(name: &str) -> anyhow::Result<Identity> {
    let key = KeyPair::generate().context("generating the key pair")?;
    let cert = node_params(name)?.self_signed(&key).context("self-signing the certificate")?;
    Ok(Identity { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// A consortium certificate authority held in memory (tests and the `ca` tooling).
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ca(..)")
    }
}

impl Ca {
    /// A new CA named `name`.
    pub fn new(name: &str) -> anyhow::Result<Ca> {
        let mut params = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().context("generating the CA key")?;
        Ok(Ca { issuer: CertifiedIssuer::self_signed(params, key).context("self-signing the CA")? })
    }

    /// The CA certificate (what nodes trust), PEM.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A node identity for organisation `name`, signed by this CA.
    pub fn issue(&self, name: &str) -> anyhow::Result<Identity> {
        let key = KeyPair::generate().context("generating the key pair")?;
        let cert = node_params(name)?.signed_by(&key, &self.issuer).context("signing the certificate")?;
        Ok(Identity { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// Writes `contents` to a new file at `path`, refusing to overwrite; `secret` files get mode 0600.
pub fn write_new(path: &Path, contents: &str, secret: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).with_context(|| {
        format!("cannot create {} (it must not exist yet; remove it to start over)", path.display())
    })?;
    f.write_all(contents.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    f.sync_all().with_context(|| format!("syncing {}", path.display()))?;
    Ok(())
}
