//! Config validation: every broken config is refused with a message naming the file and the fix.

use std::path::{Path, PathBuf};
use std::process::Command;

use party_node::config::{Config, ConfigFile, Role};
use party_node::testbed;

fn consortium(ca: bool) -> (tempfile::TempDir, [PathBuf; 3]) {
    let dir = tempfile::tempdir().unwrap();
    let paths = testbed::write_consortium(dir.path(), testbed::free_addrs().unwrap(), ca).unwrap();
    (dir, paths)
}

fn edit(path: &Path, f: impl FnOnce(&mut ConfigFile)) -> String {
    let mut file: ConfigFile = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    f(&mut file);
    std::fs::write(path, toml::to_string(&file).unwrap()).unwrap();
    format!("{:#}", Config::load(path).unwrap_err())
}

#[test]
fn valid_configs_load_in_both_trust_modes() {
    for ca in [false, true] {
        let (_d, paths) = consortium(ca);
        for (i, p) in paths.iter().enumerate() {
            let cfg = Config::load(p).unwrap();
            assert_eq!(cfg.me.index(), i);
            assert_eq!(cfg.role(), Role::ALL[i]);
            assert!(!format!("{cfg:?}").contains(&cfg.api_token.0), "Debug never prints the token");
        }
    }
}

#[test]
fn broken_configs_name_the_problem() {
    let (_d, paths) = consortium(false);
    let alice = &paths[0];
    let original = std::fs::read_to_string(alice).unwrap();
    let reset = || std::fs::write(alice, &original).unwrap();

    let e = edit(alice, |f| f.node.role = Role::Bob);
    assert!(e.contains("not the certificate pinned for bob") && e.contains("alice/node.toml"), "{e}");
    reset();
    let e = edit(alice, |f| f.parties[1].role = Role::Alice);
    assert!(e.contains("role alice is listed twice"), "{e}");
    reset();
    let e = edit(alice, |f| {
        f.parties.remove(2);
    });
    assert!(e.contains("no [[party]] entry for dealer"), "{e}");
    reset();
    let e = edit(alice, |f| f.parties[0].cert = Some("missing.pem".into()));
    assert!(e.contains("cannot read [[party]] alice cert") && e.contains("missing.pem"), "{e}");
    reset();
    let e = edit(alice, |f| f.parties[2].name = f.parties[1].name.clone());
    assert!(e.contains("share the name"), "{e}");
    reset();
    let e = edit(alice, |f| f.api.listen = "0.0.0.0:7100".parse().unwrap());
    assert!(
        e.contains("[api] listen = 0.0.0.0:7100 is not a loopback address") && e.contains("use 127.0.0.1:7100"),
        "{e}"
    );
    reset();
    let e = edit(alice, |f| f.parties[0].name = "Not A Dns Name".into());
    assert!(e.contains("must be 1-63 characters"), "{e}");
    reset();
    std::fs::write(alice.with_file_name("node.key.pem"), "garbage").unwrap();
    let e = format!("{:#}", Config::load(alice).unwrap_err());
    assert!(e.contains("[node] key") && e.contains("node.key.pem"), "{e}");
    let e = format!("{:#}", Config::load(Path::new("/nonexistent/node.toml")).unwrap_err());
    assert!(e.contains("/nonexistent/node.toml") && e.contains("party-node init"), "{e}");
}

#[test]
fn ca_mode_refuses_a_node_certificate_from_another_ca() {
    let (_d, paths) = consortium(true);
    let (_d2, other) = consortium(true);
    // Alice's config, but the certificate and key issued by a different consortium's CA.
    let dir = paths[0].parent().unwrap();
    for f in ["node.cert.pem", "node.key.pem"] {
        std::fs::copy(other[0].parent().unwrap().join(f), dir.join(f)).unwrap();
    }
    let e = format!("{:#}", Config::load(&paths[0]).unwrap_err());
    assert!(e.contains("not issued by the consortium CA"), "{e}");
}

#[test]
fn init_writes_a_config_that_asks_for_the_other_parties() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("acme");
    let st = Command::new(env!("CARGO_BIN_EXE_party-node"))
        .args(["init", "--role", "alice", "--name", "acme", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join("node.key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the key is private to its owner");
    }
    let e = format!("{:#}", Config::load(&out.join("node.toml")).unwrap_err());
    assert!(e.contains("no [[party]] entry for bob and dealer"), "{e}");
    // Running init again does not overwrite the key.
    let st = Command::new(env!("CARGO_BIN_EXE_party-node"))
        .args(["init", "--role", "alice", "--name", "acme", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!st.status.success());
    assert!(String::from_utf8_lossy(&st.stderr).contains("must not exist yet"));
}

#[test]
fn init_refuses_an_api_address_that_run_would_refuse_and_takes_a_loopback_one() {
    let dir = tempfile::tempdir().unwrap();
    let init = |out: &Path, api: &str| {
        Command::new(env!("CARGO_BIN_EXE_party-node"))
            .args(["init", "--role", "bob", "--name", "bob", "--listen", "127.0.0.1:7001", "--api", api, "--out"])
            .arg(out)
            .output()
            .unwrap()
    };
    let out = dir.path().join("public");
    let st = init(&out, "0.0.0.0:7101");
    assert!(!st.status.success());
    let e = String::from_utf8_lossy(&st.stderr);
    // run's message, naming the option, with the fix.
    assert!(
        e.contains("--api 0.0.0.0:7101 is not a loopback address: the control API serves only this machine"),
        "{e}"
    );
    assert!(e.contains("use 127.0.0.1:7101") && e.contains("over SSH"), "{e}");
    assert!(!out.exists(), "nothing is written");
    // A loopback port of its own (a second node on this machine): written, and what run reads.
    let out = dir.path().join("second");
    let st = init(&out, "127.0.0.1:7101");
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let file = ConfigFile::read(&out.join("node.toml")).unwrap();
    assert_eq!(file.api.listen, "127.0.0.1:7101".parse().unwrap());
}

#[test]
fn party_addresses_are_ip_or_host_and_port() {
    use party_node::config::PeerAddr;
    let ip: PeerAddr = "192.0.2.1:7000".parse().unwrap();
    assert!(matches!(ip, PeerAddr::Ip(_)));
    assert_eq!(ip.bind_addr().to_string(), "192.0.2.1:7000");
    let v6: PeerAddr = "[2001:db8::1]:7000".parse().unwrap();
    assert!(matches!(v6, PeerAddr::Ip(_)));
    for ok in ["alice:7000", "node-1.acme.example:7000", "bob.membrane.svc.cluster.local.:7000"] {
        let a: PeerAddr = ok.parse().unwrap_or_else(|e| panic!("{ok}: {e}"));
        assert!(matches!(a, PeerAddr::Host { .. }), "{ok}");
        assert_eq!(a.port(), 7000);
        assert_eq!(a.bind_addr().to_string(), "0.0.0.0:7000", "a host name binds every interface");
    }
    for bad in ["alice", "alice:", "alice:70000", ":7000", "-a:1", "a b:1", "1.2.3:7000", "1.2.3.4.5:1", "[::1:7000"] {
        let e = bad.parse::<PeerAddr>().unwrap_err().to_string();
        assert!(e.contains("expected ip:port or host:port"), "{bad}: {e}");
    }

    // In a config: the address round-trips, duplicates are still refused, a bad one is named.
    let (_d, paths) = consortium(false);
    let alice = &paths[0];
    let original = std::fs::read_to_string(alice).unwrap();
    let mut file: ConfigFile = toml::from_str(&original).unwrap();
    file.parties[0].address = "alice:7000".parse().unwrap();
    file.parties[1].address = "bob:7000".parse().unwrap();
    std::fs::write(alice, toml::to_string(&file).unwrap()).unwrap();
    let cfg = Config::load(alice).unwrap();
    assert_eq!(cfg.parties[1].address.to_string(), "bob:7000");
    assert_eq!(cfg.listen.to_string(), "0.0.0.0:7000");
    std::fs::write(alice, &original).unwrap();
    let e = edit(alice, |f| f.parties[2].address = f.parties[1].address.clone());
    assert!(e.contains("share the address"), "{e}");
    std::fs::write(alice, original.replacen("address = \"127.0.0.1:", "address = \"bad name:", 1)).unwrap();
    let e = format!("{:#}", Config::load(alice).unwrap_err());
    assert!(e.contains("\"bad name:") && e.contains("expected ip:port or host:port"), "{e}");
}

#[test]
fn compose_init_writes_three_self_contained_nodes_addressed_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let exchange = dir.path().join("exchange");
    std::fs::create_dir_all(exchange.join("old")).unwrap();
    std::fs::write(exchange.join("plan.json"), "{}").unwrap();
    let run = || {
        let st = Command::new(env!("CARGO_BIN_EXE_party-node"))
            .args(["compose", "init", "--out"])
            .arg(dir.path().join("c"))
            .arg("--clear-exchange")
            .arg(&exchange)
            .output()
            .unwrap();
        assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
        String::from_utf8_lossy(&st.stdout).into_owned()
    };
    run();
    assert_eq!(std::fs::read_dir(&exchange).unwrap().count(), 0, "the exchange is emptied");
    let mut tokens = Vec::new();
    for (i, role) in ["alice", "bob", "dealer"].iter().enumerate() {
        let node = dir.path().join("c").join(role);
        // Each directory stands alone (it is one container's volume): move it away and load it.
        let alone = dir.path().join(format!("alone-{role}"));
        copy_dir(&node, &alone);
        let cfg = Config::load(&alone.join("node.toml")).unwrap();
        assert_eq!(cfg.me.index(), i);
        let addrs: Vec<String> = cfg.parties.iter().map(|p| p.address.to_string()).collect();
        assert_eq!(addrs, ["alice:7000", "bob:7000", "dealer:7000"]);
        assert_eq!(cfg.listen.to_string(), "0.0.0.0:7000");
        assert_eq!(cfg.api_listen.to_string(), "127.0.0.1:7100");
        tokens.push(cfg.api_token.0.clone());
    }
    assert!(tokens[0] != tokens[1] && tokens[1] != tokens[2], "one token per node");
    // A second run keeps the consortium (compose runs init on every `up`).
    let key = std::fs::read(dir.path().join("c/bob/node.key.pem")).unwrap();
    assert!(run().contains("already initialised"));
    assert_eq!(std::fs::read(dir.path().join("c/bob/node.key.pem")).unwrap(), key);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn limits_are_optional_checked_and_named_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let paths =
        party_node::testbed::write_consortium(dir.path(), party_node::testbed::free_addrs().unwrap(), false).unwrap();
    let base = std::fs::read_to_string(&paths[0]).unwrap();
    assert_eq!(Config::load(&paths[0]).unwrap().limits, party_node::config::Limits::default());
    std::fs::write(&paths[0], format!("{base}\n[limits]\nmax_active_jobs = 2\nframe_timeout_s = 9\n")).unwrap();
    let cfg = Config::load(&paths[0]).unwrap();
    assert_eq!((cfg.limits.max_active_jobs, cfg.limits.frame_timeout_s, cfg.limits.join_timeout_s), (2, 9, 30));
    assert_eq!(cfg.limits.mesh_options().frame_deadline, std::time::Duration::from_secs(9));
    for (bad, says) in [
        ("max_active_jobs = 0", "max_active_jobs"),
        ("max_frame_mib = 5000", "max_frame_mib"),
        ("job_seconds = 3", "job_seconds"),
    ] {
        std::fs::write(&paths[0], format!("{base}\n[limits]\n{bad}\n")).unwrap();
        let e = format!("{:#}", Config::load(&paths[0]).unwrap_err());
        assert!(e.contains(says), "{bad}: {e}");
    }
}
