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
    assert!(e.contains("not a loopback address"), "{e}");
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
