//! Key pairs and certificates: a node's own identity and the consortium CA helpers.
//!
//! A node's certificate is an ECDSA P-256 certificate whose only subject alternative name is the
//! organisation's name (a DNS-style label). In pinned mode peers compare certificates byte for
//! byte; in CA mode they check the chain to the consortium CA and that the certificate is valid
//! for the peer's configured name.

use std::path::Path;

use anyhow::{Context, bail, ensure};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};

use crate::certs::CertInfo;

/// Days a consortium CA certificate is valid unless `ca init --days` says otherwise.
pub const CA_DAYS: u32 = 3650;
/// Days a node certificate issued by the CA is valid unless `ca sign --days` says otherwise.
pub const NODE_DAYS: u32 = 365;

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

/// Valid from an hour ago (a peer whose clock lags a little still accepts it) until `until`.
fn set_validity(params: &mut CertificateParams, until: i64) -> anyhow::Result<()> {
    let at = |t: i64| time::OffsetDateTime::from_unix_timestamp(t).context("certificate validity out of range");
    params.not_before = at(crate::certs::now() - 3600)?;
    params.not_after = at(until)?;
    Ok(())
}

fn check_days(days: u32) -> anyhow::Result<i64> {
    ensure!((1..=36_500).contains(&days), "--days {days}: give 1 to 36500 days");
    Ok(crate::certs::now() + i64::from(days) * 86_400)
}

/// A random positive 128-bit serial number (rcgen's default derives it from the public key, so a
/// renewal for the same key would repeat it).
fn random_serial() -> rcgen::SerialNumber {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).expect("OS randomness");
    b[0] = (b[0] & 0x7f) | 0x40;
    rcgen::SerialNumber::from(b.to_vec())
}

/// A node certificate as the consortium CA issues it: one DNS name, not a CA, TLS server and
/// client use (every node is both), valid until `until`.
fn leaf_params(name: &str, until: i64) -> anyhow::Result<CertificateParams> {
    let mut params = node_params(name)?;
    set_validity(&mut params, until)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    Ok(params)
}

/// A self-signed identity for organisation `name` (pinned trust).
pub fn self_signed(name: &str) -> anyhow::Result<Identity> {
    let key = KeyPair::generate().context("generating the key pair")?;
    let cert = node_params(name)?.self_signed(&key).context("self-signing the certificate")?;
    Ok(Identity { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// A certificate signing request (PEM) for organisation `name`, signed with the node's key
/// `key_pem`: subject `CN=name, O=name` and subjectAltName `DNS:name`, what `ca sign` requires.
pub fn request(name: &str, key_pem: &str) -> anyhow::Result<String> {
    // rcgen's error names the problem only, never the key's contents.
    let key = KeyPair::from_pem(key_pem).map_err(|e| anyhow::anyhow!("not a usable private key ({e})"))?;
    let csr = node_params(name)?.serialize_request(&key).context("making the certificate request")?;
    csr.pem().context("encoding the certificate request")
}

/// Whether the private key `key` (PKCS#8 DER) belongs to `cert`; `None` when the key type is one
/// this check cannot read (the TLS stack checks the pair again when the node starts).
pub fn key_matches(key: &rustls::pki_types::PrivateKeyDer<'_>, cert: &CertificateDer<'_>) -> Option<bool> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let key = KeyPair::try_from(key).ok()?;
    let (_, x) = X509Certificate::from_der(cert.as_ref()).ok()?;
    Some(x.public_key().raw == key.subject_public_key_info().as_slice())
}

/// A certificate the CA issued.
#[derive(Debug)]
pub struct Issued {
    /// The organisation name it is for.
    pub name: String,
    /// The certificate.
    pub cert: Certificate,
    /// Its validity was cut to the CA certificate's own end.
    pub capped: bool,
}

/// The consortium certificate authority: `party-node ca init` makes one in a directory
/// (`ca.key.pem`, mode 0600, and `ca.cert.pem`, what every node's `[trust] ca` names), `ca sign`
/// issues node certificates from the nodes' requests. Tests hold one in memory.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    info: CertInfo,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ca(..)")
    }
}

/// The CA's private key file in a CA directory.
pub const CA_KEY: &str = "ca.key.pem";
/// The CA's certificate file in a CA directory.
pub const CA_CERT: &str = "ca.cert.pem";

impl Ca {
    /// A new CA named `name`, valid for [`CA_DAYS`].
    pub fn new(name: &str) -> anyhow::Result<Ca> {
        Ok(Self::generate(name, CA_DAYS)?.0)
    }

    /// A new CA named `name`, valid for `days`; with its key (PEM, secret).
    fn generate(name: &str, days: u32) -> anyhow::Result<(Ca, String)> {
        ensure!(
            !name.trim().is_empty() && name.len() <= 64,
            "CA name {name:?}: give 1 to 64 characters (e.g. \"Membrane consortium CA\")"
        );
        let mut params = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
        params.distinguished_name.push(DnType::CommonName, name);
        // It signs node certificates only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        set_validity(&mut params, check_days(days)?)?;
        params.serial_number = Some(random_serial());
        let key = KeyPair::generate().context("generating the CA key")?;
        let cert = params.self_signed(&key).context("self-signing the CA")?;
        let key_pem = key.serialize_pem();
        let info = CertInfo::parse(cert.der())?;
        Ok((Ca { issuer: Issuer::new(params, key), cert_pem: cert.pem(), info }, key_pem))
    }

    /// `party-node ca init`: a new CA in `dir` ([`CA_KEY`] with mode 0600, [`CA_CERT`]); refuses
    /// to touch a directory that already holds either.
    pub fn init(dir: &Path, name: &str, days: u32) -> anyhow::Result<Ca> {
        for f in [CA_KEY, CA_CERT] {
            ensure!(
                !dir.join(f).exists(),
                "{} already exists: {} already holds a CA, and replacing it would make every certificate it issued \
                 untrusted. Use another --dir, or remove the files if you really mean to start over",
                dir.join(f).display(),
                dir.display()
            );
        }
        let (ca, key_pem) = Self::generate(name, days)?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        write_new(&dir.join(CA_KEY), &key_pem, true)?;
        write_new(&dir.join(CA_CERT), &ca.cert_pem(), false)?;
        Ok(ca)
    }

    /// The CA in `dir` (what [`Ca::init`] wrote), checking that key and certificate belong
    /// together and that the certificate is a CA's, valid now.
    pub fn load(dir: &Path) -> anyhow::Result<Ca> {
        let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
        let cert_pem = std::fs::read_to_string(&cert_path).with_context(|| {
            format!("cannot read the CA certificate {} (`party-node ca init` writes it)", cert_path.display())
        })?;
        let cert =
            crate::certs::pem_certs(cert_pem.as_bytes()).with_context(|| cert_path.display().to_string())?.remove(0);
        let info = CertInfo::parse(&cert).with_context(|| cert_path.display().to_string())?;
        ensure!(
            info.is_ca,
            "{} is not a CA certificate ({}): --dir must be a directory made by `party-node ca init`",
            cert_path.display(),
            info.subject
        );
        let now = crate::certs::now();
        ensure!(
            !info.expired(now),
            "the CA certificate {} {}: certificates it issued are refused too; make a new CA (`party-node ca init` \
             in another directory) and issue every node's certificate again",
            cert_path.display(),
            info.validity_at(now)
        );
        let key_pem = std::fs::read_to_string(&key_path).with_context(|| {
            format!("cannot read the CA key {} (`party-node ca init` writes it)", key_path.display())
        })?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| anyhow::anyhow!("the CA key {} is not a usable private key ({e})", key_path.display()))?;
        let key_der = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| anyhow::anyhow!("the CA key {} is not a PEM private key ({e})", key_path.display()))?;
        ensure!(
            key_matches(&key_der, &cert) != Some(false),
            "the CA key {} does not belong to the CA certificate {}: both must come from the same `ca init`",
            key_path.display(),
            cert_path.display()
        );
        let issuer = Issuer::from_ca_cert_der(&cert, key).map_err(|e| {
            anyhow::anyhow!("the CA certificate {} cannot issue certificates ({e})", cert_path.display())
        })?;
        Ok(Ca { issuer, cert_pem, info })
    }

    /// The CA certificate (what nodes trust), PEM.
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// What the CA certificate says.
    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    /// A node identity for organisation `name` (a new key pair), signed by this CA.
    pub fn issue(&self, name: &str) -> anyhow::Result<Identity> {
        let key = KeyPair::generate().context("generating the key pair")?;
        let params = leaf_params(name, check_days(NODE_DAYS)?.min(self.info.not_after))?;
        let cert = params.signed_by(&key, &self.issuer).context("signing the certificate")?;
        Ok(Identity { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// `party-node ca sign`: a node certificate for the request `csr_pem`, valid for `days` (at
    /// most until the CA certificate ends). The request's signature must verify and it must ask
    /// for exactly one organisation name (subjectAltName DNS, see [`check_name`]). Only the name
    /// and the public key are taken from it: everything else (validity, usages, not a CA) is
    /// this CA's choice.
    pub fn sign_request(&self, csr_pem: &[u8], days: u32) -> anyhow::Result<Issued> {
        let der = CertificateSigningRequestDer::from_pem_slice(csr_pem).map_err(|_| {
            let text = String::from_utf8_lossy(csr_pem);
            if text.contains("-----BEGIN CERTIFICATE-----") {
                anyhow::anyhow!(
                    "this is a certificate, not a certificate request: the node makes its request with \
                                 `party-node cert request --config node.toml`"
                )
            } else {
                anyhow::anyhow!(
                    "no PEM certificate request in it (-----BEGIN CERTIFICATE REQUEST-----): the node \
                                 makes one with `party-node cert request --config node.toml`"
                )
            }
        })?;
        let req = CertificateSigningRequestParams::from_der(&der).map_err(|e| match e {
            rcgen::Error::InvalidCertificationRequestSignature => anyhow::anyhow!(
                "its signature does not verify: the request was altered after it was made, or not made with the key \
                 it names; ask for a new one (`party-node cert request`)"
            ),
            rcgen::Error::UnsupportedExtension => anyhow::anyhow!(
                "it asks for an extension this CA does not issue; make the request with `party-node cert request`"
            ),
            e => anyhow::anyhow!("not a readable certificate request ({e})"),
        })?;
        let asked: Vec<String> = req
            .params
            .subject_alt_names
            .iter()
            .map(|n| match n {
                SanType::DnsName(d) => format!("DNS:{}", d.as_str()),
                other => format!("{other:?}"),
            })
            .collect();
        let cn = req.params.distinguished_name.get(&DnType::CommonName).map(dn_text).unwrap_or_default();
        let name = match req.params.subject_alt_names.as_slice() {
            [SanType::DnsName(d)] => d.as_str().to_string(),
            [] => bail!(
                "it asks for no organisation name (no subjectAltName DNS entry{}): nodes accept a certificate only for \
                 the name in its subjectAltName; make the request with `party-node cert request --config node.toml`, \
                 which puts the node's name there",
                if cn.is_empty() { String::new() } else { format!("; its subject is CN={cn}") }
            ),
            _ => bail!(
                "it asks for {} ({}): a node certificate is for exactly one organisation name (subjectAltName \
                 DNS:<name>); make the request with `party-node cert request --config node.toml`",
                if asked.len() == 1 {
                    "a name that is not a DNS name".to_string()
                } else {
                    format!("{} names", asked.len())
                },
                asked.join(", ")
            ),
        };
        check_name(&name).context("the request's subjectAltName DNS name is not an organisation name")?;
        let until = check_days(days)?;
        let capped = until > self.info.not_after;
        let params = leaf_params(&name, until.min(self.info.not_after))?;
        let cert = params.signed_by(&req.public_key, &self.issuer).context("signing the certificate")?;
        Ok(Issued { name, cert, capped })
    }
}

fn dn_text(v: &rcgen::DnValue) -> String {
    match v {
        rcgen::DnValue::Utf8String(s) => s.clone(),
        rcgen::DnValue::PrintableString(s) => s.as_str().to_string(),
        rcgen::DnValue::Ia5String(s) => s.as_str().to_string(),
        other => format!("{other:?}"),
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
