//! Config files that must be refused at load with an error that names the problem (and never
//! prints the API token).

use party_node::config::Config;
use party_node::testbed;

#[test]
fn a_pinned_peer_named_otherwise_than_its_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let paths = testbed::write_consortium(dir.path(), testbed::free_addrs().unwrap(), false).unwrap();
    Config::load(&paths[0]).unwrap();
    let bob = testbed::NAMES[1];
    let typo = format!("{bob}-typo");
    let text = std::fs::read_to_string(&paths[0]).unwrap();
    assert!(text.contains(&format!("\"{bob}\"")), "{text}");
    std::fs::write(&paths[0], text.replace(&format!("\"{bob}\""), &format!("\"{typo}\""))).unwrap();
    let e = format!("{:#}", Config::load(&paths[0]).unwrap_err());
    assert!(e.contains(&typo) && e.contains(&format!("[\"{bob}\"]")), "{e}");
}

#[test]
fn a_typo_near_the_token_never_prints_it() {
    let dir = tempfile::tempdir().unwrap();
    let paths = testbed::write_consortium(dir.path(), testbed::free_addrs().unwrap(), false).unwrap();
    let text = std::fs::read_to_string(&paths[1]).unwrap();
    let line = text.lines().find(|l| l.trim_start().starts_with("token")).expect("a token line").to_string();
    let token = line.split('"').nth(1).unwrap().to_string();
    for broken in [line.replacen('"', "", 1), format!("{line} x"), line.replace("token", "token token")] {
        std::fs::write(&paths[1], text.replace(&line, &broken)).unwrap();
        let e = format!("{:#}", Config::load(&paths[1]).unwrap_err());
        assert!(!e.contains(&token) && !e.contains(&token[..8]), "{broken}: {e}");
        assert!(e.contains("line"), "{e}");
    }
}
