//! The docs run as written: the shell blocks of crates/party-node/README.md that make up a
//! session on one machine — "Try it on one machine", "publish, then predict" and the scripted
//! same-id path — are executed by bash against a fresh local consortium, with only the
//! binary's path, the directory, a free port range and the example files substituted. (Every
//! command of every doc is also parsed by the CLI: tests/docs.rs.)

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_party-node");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The ```sh blocks of a Markdown text.
fn shell_blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("```sh\n") {
        rest = &rest[i + 6..];
        let end = rest.find("```").expect("a closed block");
        out.push(rest[..end].to_string());
        rest = &rest[end + 3..];
    }
    out
}

/// A base port `p` with UDP `p..p+3` and TCP `p+100..p+103` free now.
fn free_base() -> u16 {
    let seed = std::process::id() as u16;
    for k in 0..200u16 {
        let p = 20_000 + (seed.wrapping_mul(7).wrapping_add(k * 211)) % 30_000;
        let udp = (p..p + 3).all(|q| std::net::UdpSocket::bind(("127.0.0.1", q)).is_ok());
        let tcp = (p + 100..p + 103).all(|q| std::net::TcpListener::bind(("127.0.0.1", q)).is_ok());
        if udp && tcp {
            return p;
        }
    }
    panic!("no free port range");
}

#[test]
fn the_party_node_readme_runs_as_written() {
    let readme = std::fs::read_to_string(root().join("crates/party-node/README.md")).unwrap();
    let blocks = shell_blocks(&readme);
    let find =
        |needle: &str| blocks.iter().find(|b| b.contains(needle)).unwrap_or_else(|| panic!("no block with {needle}"));
    let (quick, service, by_hand) = (find("init-local"), find("--allow bob-clinic"), find("--by-hand"));
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("consortium");
    let fixtures = root().join("fixtures/onnx").canonicalize().unwrap();
    let labels = dir.path().join("labels.npy");
    let base = free_base();
    let substitute = |block: &str| {
        block
            .lines()
            .filter(|l| !l.starts_with("cargo build"))
            .map(|l| {
                let l = l
                    .replace("B=target/release/party-node", &format!("B={BIN}"))
                    .replace("/tmp/consortium", &c.display().to_string())
                    .replace("model.onnx", &fixtures.join("mnist_cnn.onnx").display().to_string())
                    .replace("images.npy", &fixtures.join("mnist_cnn.input.npy").display().to_string())
                    .replace("labels.npy", &labels.display().to_string());
                if l.contains("init-local --out") { format!("{l} --base-port {base}") } else { l }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    // Nodes started with `&` are stopped (by PID, bash's jobs) when the script ends either way.
    let script = format!(
        "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true; wait' EXIT\ncd {}\n{}\n{}\n{}\n",
        dir.path().display(),
        substitute(quick),
        substitute(service),
        substitute(by_hand)
    );
    let out = Command::new("bash").arg("-c").arg(&script).env("RUST_BACKTRACE", "0").output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the README's blocks failed:\n{script}\n---\n{text}");
    // The matmul smoke test printed Bob's 64×10 product; the model was offered and listed.
    assert!(text.contains("\"shape\":[64,10]"), "{text}");
    assert!(text.contains("offered to bob (\"bob-clinic\"): stored"), "{text}");
    assert!(text.contains("digits") && text.contains("you may request"), "{text}");
    // Bob's labels (the by-hand block wrote them last) are the plaintext model's argmax.
    let got = mpc_ml::npy::read(&labels).unwrap();
    let logits = mpc_ml::npy::read(&fixtures.join("mnist_cnn.logits.npy")).unwrap();
    let want: Vec<f64> = logits
        .outer_iter()
        .map(|r| r.iter().enumerate().fold((0, f64::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0 as f64)
        .collect();
    assert_eq!(got.iter().copied().collect::<Vec<_>>(), want);
}
