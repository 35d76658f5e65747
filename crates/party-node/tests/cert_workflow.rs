//! The certificate workflow through the binary, as docs/deploy.md walks it: `ca init`, each
//! organisation's `cert request`, `ca sign`, installing the certificate, three nodes in CA mode
//! running a job; requests the CA refuses; `cert show`; a node whose own certificate has expired
//! refuses to start, and one expiring soon is warned about.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use party_node::config::{Config, ConfigFile, PartySection, Role, TrustMode};
use party_node::testbed;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

mod common;
use common::{Node, wait_ready};

const BIN: &str = env!("CARGO_BIN_EXE_party-node");
const NAMES: [&str; 3] = ["alice", "bob", "dealer"];

/// `party-node ARGS…`, which must succeed; its stdout.
fn ok(args: &[&str]) -> String {
    let out = cli(args);
    assert!(out.status.success(), "party-node {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `party-node ARGS…`, which must fail; its stderr.
fn fails(args: &[&str]) -> String {
    let out = cli(args);
    assert!(!out.status.success(), "party-node {args:?} succeeded:\n{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr).unwrap()
}

fn cli(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn fingerprint_of(path: &Path) -> String {
    party_node::tls::fingerprint(&CertificateDer::from_pem_file(path).unwrap())
}

/// `party-node run --config path` must exit unsuccessfully (within a deadline); its stderr.
fn run_refused(path: &Path) -> String {
    let log = path.with_file_name("refused.log");
    let mut child = Command::new(BIN)
        .args(["run", "--config", s(path)])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the node did not refuse to start:\n{}", std::fs::read_to_string(&log).unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    std::fs::read_to_string(&log).unwrap()
}

/// Rewrites a config file.
fn edit(path: &Path, f: impl FnOnce(&mut ConfigFile)) {
    let mut file = ConfigFile::read(path).unwrap();
    f(&mut file);
    std::fs::write(path, toml::to_string(&file).unwrap()).unwrap();
}

fn load_err(path: &Path) -> String {
    format!("{:#}", Config::load(path).unwrap_err())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn ca_workflow_from_ca_init_to_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let addrs = testbed::free_addrs().unwrap();

    // The CA operator.
    let ca_dir = d.join("ca");
    let out = ok(&["ca", "init", "--dir", s(&ca_dir), "--name", "Test consortium CA"]);
    assert!(out.contains("ca.cert.pem") && out.contains("fingerprint"), "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(ca_dir.join("ca.key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the CA key is private to its owner");
    }
    let key_before = std::fs::read(ca_dir.join("ca.key.pem")).unwrap();
    let e = fails(&["ca", "init", "--dir", s(&ca_dir)]);
    assert!(e.contains("already holds a CA") && e.contains("ca.key.pem"), "{e}");
    assert_eq!(std::fs::read(ca_dir.join("ca.key.pem")).unwrap(), key_before, "the CA key is never overwritten");
    assert!(!out.contains("PRIVATE KEY") && !e.contains("PRIVATE KEY"));

    // Each organisation: init, then the CA-mode config of docs/deploy.md.
    let mut configs = Vec::new();
    for (i, role) in Role::ALL.into_iter().enumerate() {
        let node = d.join(role.as_str());
        ok(&[
            "init",
            "--role",
            role.as_str(),
            "--name",
            NAMES[i],
            "--out",
            s(&node),
            "--listen",
            &addrs.udp[i].to_string(),
            "--api",
            &addrs.api[i].to_string(),
        ]);
        configs.push(node.join("node.toml"));
    }
    let ca_mode = |path: &Path, with_cert_lines: bool| {
        edit(path, |f| {
            f.trust.mode = TrustMode::Ca;
            f.trust.ca = Some("ca.cert.pem".into());
            f.parties = Role::ALL
                .iter()
                .enumerate()
                .map(|(i, &r)| PartySection {
                    role: r,
                    name: NAMES[i].into(),
                    address: addrs.udp[i].into(),
                    cert: with_cert_lines.then(|| PathBuf::from("node.cert.pem")),
                })
                .collect();
        })
    };
    for c in &configs {
        std::fs::copy(ca_dir.join("ca.cert.pem"), c.with_file_name("ca.cert.pem")).unwrap();
        ca_mode(c, false);
    }

    // Half switched: CA mode, but the certificate is still init's self-signed one.
    let e = load_err(&configs[1]);
    assert!(
        e.contains("bob/node.cert.pem is self-signed")
            && e.contains("not issued by the consortium CA")
            && e.contains("party-node cert request --config"),
        "{e}"
    );
    // Pinned [[party]] cert lines left in CA mode.
    ca_mode(&configs[1], true);
    let e = load_err(&configs[1]);
    assert!(e.contains("[trust] mode = \"ca\"") && e.contains("Remove the `cert` line"), "{e}");
    ca_mode(&configs[1], false);

    // Requests, signatures, installation.
    for (i, c) in configs.iter().enumerate() {
        let out = ok(&["cert", "request", "--config", s(c)]);
        let csr = c.with_file_name("node.csr.pem");
        assert!(out.contains(s(&csr)) && out.contains(&format!("DNS:{}", NAMES[i])), "{out}");
        assert!(out.contains("ca sign") && out.contains(s(&c.with_file_name("node.cert.pem"))), "{out}");
        assert!(!out.contains("PRIVATE KEY"));
        let issued = d.join(format!("{}.cert.pem", NAMES[i]));
        let out = ok(&["ca", "sign", "--dir", s(&ca_dir), "--csr", s(&csr), "--out", s(&issued)]);
        let fp = fingerprint_of(&issued);
        assert!(out.contains(&format!("{:?}", NAMES[i])) && out.contains(&fp) && out.contains("expires"), "{out}");
        let e = fails(&["ca", "sign", "--dir", s(&ca_dir), "--csr", s(&csr), "--out", s(&issued)]);
        assert!(e.contains("must not exist yet"), "{e}");
        std::fs::copy(&issued, c.with_file_name("node.cert.pem")).unwrap();
    }

    // `cert show`: the file, and the node's config with the run-time checks.
    let bob_cert = configs[1].with_file_name("node.cert.pem");
    let out = ok(&["cert", "show", s(&bob_cert)]);
    assert!(out.contains("name:        bob\n") && out.contains(&fingerprint_of(&bob_cert)), "{out}");
    assert!(out.contains("issuer:      CN=Test consortium CA") && out.contains("days left"), "{out}");
    let out = ok(&["cert", "show", "--config", s(&configs[1])]);
    assert!(
        out.contains("[trust] ca") && out.contains("CA:          yes") && out.contains("config check: ok"),
        "{out}"
    );
    assert!(out.contains(&fingerprint_of(&bob_cert)) && out.contains(&fingerprint_of(&ca_dir.join("ca.cert.pem"))));

    // Three nodes in CA mode run a job.
    let rt = runtime();
    rt.block_on(async {
        let nodes: Vec<Node> = configs.iter().map(|c| Node::spawn_with(c, "node.log", &[])).collect();
        wait_ready(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(60)).await;
        common::run_matmul_job(&nodes.iter().collect::<Vec<_>>(), 3, 4, 2).await;
        let h = nodes[1].get("/v1/health").await;
        let certs = h["certificates"].as_array().unwrap();
        assert_eq!(certs.len(), 2, "own and CA: {h}");
        assert!(certs.iter().all(|c| c["days_left"].as_i64().unwrap() >= 360 && c["warning"].is_null()), "{h}");
        for n in &nodes {
            let log = n.log_text();
            assert!(!log.contains("certificate expires soon") && !log.contains("PRIVATE KEY"), "{log}");
        }
    });
}

/// A request made directly with rcgen, for what `cert request` would never make.
fn csr(key: &rcgen::KeyPair, names: &[&str], cn: &str) -> String {
    let mut p = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.serialize_request(key).unwrap().pem().unwrap()
}

/// PEM text of `der` (base64, 64 columns).
fn pem_encode(label: &str, der: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            b64.push(if i <= chunk.len() { B64[((n >> (18 - 6 * i)) & 63) as usize] as char } else { '=' });
        }
    }
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|l| std::str::from_utf8(l).unwrap()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

#[test]
fn the_ca_refuses_requests_without_exactly_one_valid_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = d.join("ca");
    ok(&["ca", "init", "--dir", s(&ca), "--days", "30"]);
    let key = rcgen::KeyPair::generate().unwrap();
    let sign = |name: &str, pem: &str| {
        let req = d.join(format!("{name}.csr.pem"));
        std::fs::write(&req, pem).unwrap();
        let out = d.join(format!("{name}.cert.pem"));
        let e = fails(&["ca", "sign", "--dir", s(&ca), "--csr", s(&req), "--out", s(&out)]);
        assert!(!out.exists(), "nothing issued for {name}");
        assert!(e.contains(&format!("refused the certificate request {}", req.display())), "{e}");
        e
    };

    let e = sign("no-san", &csr(&key, &[], "bob"));
    assert!(e.contains("no organisation name") && e.contains("subject is CN=bob") && e.contains("cert request"), "{e}");
    let e = sign("two", &csr(&key, &["bob", "alice"], "bob"));
    assert!(e.contains("2 names (DNS:bob, DNS:alice)") && e.contains("exactly one organisation name"), "{e}");
    let e = sign("bad-name", &csr(&key, &["Bob_Clinic"], "Bob_Clinic"));
    assert!(e.contains("\"Bob_Clinic\" must be 1-63 characters of a-z, 0-9 and '-'"), "{e}");
    let e = sign("ip", &csr(&key, &["192.0.2.1"], "x"));
    assert!(e.contains("not a DNS name"), "{e}");

    // Tampered: the requested name changed after signing.
    let good = csr(&key, &["bobby"], "bobby");
    let der = rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(good.as_bytes()).unwrap();
    let mut bytes = der.as_ref().to_vec();
    let at = bytes.windows(5).position(|w| w == b"bobby").unwrap();
    bytes[at..at + 5].copy_from_slice(b"alice");
    let e = sign("tampered", &pem_encode("CERTIFICATE REQUEST", &bytes));
    assert!(e.contains("signature does not verify"), "{e}");

    // A certificate where the request should be.
    let cert = std::fs::read_to_string(ca.join("ca.cert.pem")).unwrap();
    let e = sign("cert", &cert);
    assert!(e.contains("this is a certificate, not a certificate request"), "{e}");

    // And a good one passes, capped at the CA's 30 days.
    let req = d.join("good.csr.pem");
    std::fs::write(&req, good).unwrap();
    let out = ok(&["ca", "sign", "--dir", s(&ca), "--csr", s(&req), "--out", s(&d.join("good.cert.pem"))]);
    assert!(out.contains("\"bobby\"") && out.contains("cut to the CA certificate's own end"), "{out}");
}

#[test]
fn cert_show_names_the_certificate_and_never_prints_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("acme");
    ok(&["init", "--role", "alice", "--name", "acme-bank", "--out", s(&node)]);
    let cert = node.join("node.cert.pem");
    let out = ok(&["cert", "show", s(&cert)]);
    assert!(out.contains("name:        acme-bank\n"), "{out}");
    assert!(out.contains(&format!("fingerprint: {}\n", fingerprint_of(&cert))), "{out}");
    assert!(out.contains("(self-signed)") && out.contains("not after:"), "{out}");

    // A config that does not load yet (init lists only this node) still shows its certificate,
    // then says why it does not load.
    let o = cli(&["cert", "show", "--config", s(&node.join("node.toml"))]);
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(!o.status.success() && stdout.contains(&fingerprint_of(&cert)), "{stdout}");
    assert!(stderr.contains("no [[party]] entry for bob and dealer"), "{stderr}");

    // The wrong files say what they are, without their contents.
    let key = std::fs::read_to_string(node.join("node.key.pem")).unwrap();
    let e = fails(&["cert", "show", s(&node.join("node.key.pem"))]);
    assert!(e.contains("this is a private key, not a certificate"), "{e}");
    let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!e.contains(&body[..20]) && !e.contains("BEGIN PRIVATE KEY"), "{e}");
    ok(&["cert", "request", "--config", s(&node.join("node.toml"))]);
    let e = fails(&["cert", "show", s(&node.join("node.csr.pem"))]);
    assert!(e.contains("certificate request (CSR), not a certificate") && e.contains("ca sign"), "{e}");
}

/// A certificate for `name` with `key_pem`'s key, valid over [from, until] (Unix seconds),
/// self-signed or issued by the CA in `ca_dir`.
fn cert_with_dates(name: &str, key_pem: &str, from: i64, until: i64, ca_dir: Option<&Path>) -> String {
    let key = rcgen::KeyPair::from_pem(key_pem).unwrap();
    let mut p = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    p.not_before = time::OffsetDateTime::from_unix_timestamp(from).unwrap();
    p.not_after = time::OffsetDateTime::from_unix_timestamp(until).unwrap();
    match ca_dir {
        None => p.self_signed(&key).unwrap().pem(),
        Some(dir) => {
            let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(dir.join("ca.key.pem")).unwrap()).unwrap();
            let ca_pem = std::fs::read_to_string(dir.join("ca.cert.pem")).unwrap();
            let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
            p.signed_by(&key, &issuer).unwrap().pem()
        }
    }
}

#[test]
fn an_expired_own_certificate_refuses_start_and_one_expiring_soon_is_warned_about() {
    let now = party_node::certs::now();
    let day = 86_400;
    for ca in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let authority = ca.then(|| party_node::identity::Ca::init(&ca_dir, "Expiry test CA", 3650).unwrap());
        let paths = testbed::write_consortium_with(
            &dir.path().join("c"),
            testbed::free_addrs().unwrap(),
            authority.as_ref(),
            testbed::NAMES,
        )
        .unwrap();
        let alice = &paths[0];
        let cert = alice.with_file_name("node.cert.pem");
        let key_pem = std::fs::read_to_string(alice.with_file_name("node.key.pem")).unwrap();
        let name = testbed::NAMES[0];
        let ca_dir = ca.then_some(ca_dir.as_path());

        std::fs::write(&cert, cert_with_dates(name, &key_pem, now - 400 * day, now - 3 * day, ca_dir)).unwrap();
        Config::load(alice).expect("the thin clients (status, jobs) still load the config");
        let e = run_refused(alice);
        assert!(e.contains(&format!("[node] cert {} expired on", cert.display())) && e.contains("3 days ago"), "{e}");
        let fix =
            if ca { "party-node cert request --config" } else { "send the certificate to the other organisations" };
        assert!(e.contains(fix), "{e}");
        let show = cli(&["cert", "show", "--config", s(alice)]);
        let stdout = String::from_utf8_lossy(&show.stdout);
        assert!(!show.status.success() && stdout.contains("expired on"), "{stdout}");

        // Ten days left: the node starts, warns in its log and in `status`.
        std::fs::write(&cert, cert_with_dates(name, &key_pem, now - day, now + 10 * day + 3600, ca_dir)).unwrap();
        let node = Node::spawn_with(alice, "soon.log", &[]);
        runtime().block_on(async {
            let t0 = Instant::now();
            let h = loop {
                if let Ok(h) = node.call("GET", "/v1/health", None).await {
                    break h;
                }
                assert!(t0.elapsed() < Duration::from_secs(30), "no API; log:\n{}", node.log_text());
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let own = &h["certificates"][0];
            assert_eq!((own["what"].as_str(), own["days_left"].as_i64()), (Some("[node] cert"), Some(10)), "{h}");
            assert!(own["warning"].as_str().unwrap().contains("10 days left"), "{h}");
        });
        let log = node.log_text();
        assert!(log.contains("WARN") && log.contains("certificate expires soon") && log.contains(s(&cert)), "{log}");
        let status = ok(&["status", "--config", s(alice)]);
        assert!(status.contains("warning: certificate [node] cert") && status.contains("10 days left"), "{status}");
    }
}

#[test]
fn half_switched_and_mismatched_configs_name_the_files_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let ca = party_node::identity::Ca::init(&ca_dir, "Consortium", 365).unwrap();
    let other = party_node::identity::Ca::new("Another CA").unwrap();
    let paths = testbed::write_consortium_with(
        &dir.path().join("c"),
        testbed::free_addrs().unwrap(),
        Some(&ca),
        testbed::NAMES,
    )
    .unwrap();
    let bob = &paths[1];
    let bob_dir = bob.parent().unwrap();
    let original = std::fs::read(bob_dir.join("node.cert.pem")).unwrap();

    // Issued by another CA.
    let id = other.issue(testbed::NAMES[1]).unwrap();
    std::fs::write(bob_dir.join("node.cert.pem"), &id.cert_pem).unwrap();
    std::fs::write(bob_dir.join("node.key.pem"), &id.key_pem).unwrap();
    let e = load_err(bob);
    assert!(e.contains("is not issued by the consortium CA: its issuer is CN=Another CA"), "{e}");
    assert!(e.contains("CN=Consortium") && e.contains("ca.pem"), "{e}");

    // The CA's certificate, but someone else's key.
    std::fs::write(bob_dir.join("node.cert.pem"), &original).unwrap();
    let e = load_err(bob);
    assert!(e.contains("does not belong to [node] key") && e.contains("node.key.pem"), "{e}");

    // [trust] ca pointing at a node certificate.
    let alice = &paths[0];
    edit(alice, |f| f.trust.ca = Some("node.cert.pem".into()));
    let e = load_err(alice);
    assert!(e.contains("is not a CA certificate (it is acme-bank's") && e.contains("ca.cert.pem"), "{e}");

    // The CA issued bob's key a certificate for another name.
    let bob_key = std::fs::read_to_string(bob_dir.join("node.key.pem")).unwrap();
    let now = party_node::certs::now();
    let typo = cert_with_dates("bob-clinc", &bob_key, now - 60, now + 86_400, Some(&ca_dir));
    std::fs::write(bob_dir.join("node.cert.pem"), typo).unwrap();
    let e = load_err(bob);
    assert!(
        e.contains("bob/node.cert.pem is issued for [\"bob-clinc\"]")
            && e.contains("not for this node's name \"bob-clinic\""),
        "{e}"
    );

    // Pinned: the node's own certificate is for another name.
    let pinned = testbed::write_consortium(&dir.path().join("p"), testbed::free_addrs().unwrap(), false).unwrap();
    let dealer = &pinned[2];
    let key_pem = std::fs::read_to_string(dealer.with_file_name("node.key.pem")).unwrap();
    let typo = cert_with_dates("dealer-co-typo", &key_pem, now - 60, now + 86_400, None);
    std::fs::write(dealer.with_file_name("node.cert.pem"), typo).unwrap();
    let e = load_err(dealer);
    assert!(
        e.contains("[[party]] dealer is named \"dealer-co\", but its certificate")
            && e.contains("dealer/node.cert.pem is issued for [\"dealer-co-typo\"]"),
        "{e}"
    );
}
