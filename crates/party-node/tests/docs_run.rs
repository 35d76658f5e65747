//! The docs run as written. Executed by bash, with only the binary's path, directories, free
//! ports and example files substituted:
//! - crates/party-node/README.md: "Try it on one machine", "publish, then predict" and the
//!   scripted same-id path, against a fresh local consortium;
//! - docs/deploy.md: section 1 in both trust modes (init, pinned certificates or `ca init` /
//!   `cert request` / `ca sign` / installing, the `node.toml` blocks), "Start, check, first job"
//!   and section 3's publish, models and predict — three organisations on one machine;
//! - README.md: the across-organisations block, `local train` and `local analyze`.
//!
//! (Every command of every doc is also parsed by the CLI: tests/docs.rs.)

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_party-node");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The ```sh blocks of a Markdown text.
fn shell_blocks(text: &str) -> Vec<String> {
    blocks(text, "sh")
}

/// The fenced blocks of one language in a Markdown text (indented fences too).
fn blocks(text: &str, lang: &str) -> Vec<String> {
    let fence = format!("```{lang}\n");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(&fence) {
        rest = &rest[i + fence.len()..];
        let end = rest.find("```").expect("a closed block");
        out.push(rest[..end].to_string());
        rest = &rest[end + 3..];
    }
    out
}

/// A base port `p` with UDP `p..p+3` and TCP `p+100..p+103` free now (each call of the
/// process starts its search elsewhere, so tests running at once get different ranges).
fn free_base() -> u16 {
    static CALLS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let seed = (std::process::id() as u16).wrapping_add(call.wrapping_mul(4_111));
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
                if l.contains("init-local --out") {
                    // Before the line's comment, or the flag is commented out and the nodes take
                    // the default ports another run on this machine may hold.
                    let (cmd, comment) = l.split_once(" #").unwrap_or((&l, ""));
                    let comment = if comment.is_empty() { String::new() } else { format!(" #{comment}") };
                    format!("{} --base-port {base}{comment}", cmd.trim_end())
                } else {
                    l
                }
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
    assert!(
        script.lines().any(|l| l.split('#').next().unwrap_or("").contains("--base-port")),
        "the nodes must run on free ports:\n{script}"
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

const NAMES: [&str; 3] = ["alice", "bob", "dealer"];

/// Runs a bash script in `dir` with `party-node` meaning the binary under test; nodes it starts
/// with `&` are stopped (by PID, bash's jobs) when it ends either way. Its output, which must
/// succeed.
fn run_script(dir: &Path, body: &str) -> String {
    // `party-node` on the PATH (not a shell function), so that `party-node run … &` is the
    // node's own process, which the trap stops.
    let bin = dir.join(".bin");
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join("party-node");
    if !link.exists() {
        std::os::unix::fs::symlink(BIN, &link).unwrap();
    }
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let script = format!(
        "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true; wait' EXIT\ncd {}\n{body}\n",
        dir.display()
    );
    let out =
        Command::new("bash").arg("-c").arg(&script).env("RUST_BACKTRACE", "0").env("PATH", path).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the docs' blocks failed:\n{script}\n---\n{text}");
    text
}

/// A command line without its trailing `# comment`.
fn strip_comment(line: &str) -> &str {
    line.find(" #").map_or(line, |i| &line[..i]).trim_end()
}

/// The command lines of a block by the organisation that runs them: a comment line naming
/// `alice`, `bob` or `dealer` ("# on bob's machine", "# dealer") starts that one's lines.
fn by_party(block: &str) -> Vec<(&'static str, String)> {
    let mut who = None;
    let mut out = Vec::new();
    for line in block.lines() {
        let t = line.trim();
        if let Some(comment) = t.strip_prefix('#') {
            let named =
                NAMES.into_iter().find(|n| comment.split(|c: char| !c.is_ascii_alphanumeric()).any(|w| w == *n));
            who = named.or(who);
        } else if !t.is_empty() {
            out.push((who.expect("a command before any party's comment"), strip_comment(line).to_string()));
        }
    }
    out
}

/// The argmax of each row of a 2-D array.
fn argmax_rows(a: &ndarray::ArrayD<f64>) -> Vec<f64> {
    a.outer_iter()
        .map(|r| r.iter().enumerate().fold((0, f64::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0 as f64)
        .collect()
}

/// docs/deploy.md, section 1 in both trust modes, then "Start, check, first job" and section 3:
/// three organisations on one machine, each in its own directory standing for its
/// `/etc/membrane`, the walkthrough's addresses replaced by loopback ports. What the guide says
/// in prose (send a certificate, save a request) is done with `cp`; every command is the guide's.
#[test]
fn the_deploy_guide_runs_in_both_trust_modes() {
    let guide = std::fs::read_to_string(root().join("docs/deploy.md")).unwrap();
    let sh = shell_blocks(&guide);
    let tomls = blocks(&guide, "toml");
    let find = |set: &[String], needle: &str| -> String {
        set.iter()
            .find(|b| b.contains(needle))
            .unwrap_or_else(|| panic!("docs/deploy.md: no block with {needle}"))
            .clone()
    };
    let init_one_machine = find(&sh, "/tmp/m/alice");
    let cert_show = find(&sh, "cert show /etc/membrane/node.cert.pem");
    let (ca_init, cert_request, ca_sign) = (find(&sh, "ca init"), find(&sh, "cert request"), find(&sh, "ca sign"));
    let install = find(&sh, "cp alice.cert.pem");
    let start = find(&sh, "party-node run --config");
    let smoke = find(&sh, "submit --m 4");
    let publish = find(&sh, "party-node publish");
    let predict = find(&sh, "party-node models");
    let (pinned_toml, ca_toml) = (find(&tomls, "mode = \"pinned\""), find(&tomls, "mode = \"ca\""));

    let dir = tempfile::tempdir().unwrap();
    let fixtures = root().join("fixtures/onnx").canonicalize().unwrap();
    let want = argmax_rows(&mpc_ml::npy::read(&fixtures.join("mnist_cnn.logits.npy")).unwrap());
    for mode in ["pinned", "ca"] {
        let m = dir.path().join(mode);
        let op = dir.path().join("ca-operator");
        let base = free_base();
        let subst = |line: &str, party: &str| -> String {
            let mut l = line
                .replace("/etc/membrane", &m.join(party).display().to_string())
                .replace("/tmp/m/", &format!("{}/", m.display()))
                .replace("/secure/membrane-ca", &op.join("membrane-ca").display().to_string())
                .replace("model.onnx", &fixtures.join("mnist_cnn.onnx").display().to_string())
                .replace("x.npy", &fixtures.join("mnist_cnn.input.npy").display().to_string())
                .replace("y.npy", &dir.path().join(format!("{mode}-labels.npy")).display().to_string())
                .replace("--name NAME", "--name digits")
                .replace("--model NAME", "--model digits");
            for (i, host) in ["203.0.113.5", "203.0.113.7", "203.0.113.9"].into_iter().enumerate() {
                l = l.replace(&format!("{host}:7000"), &format!("127.0.0.1:{}", base + i as u16));
            }
            for i in 0..3u16 {
                l = l.replace(&format!("127.0.0.1:{}", 7000 + i), &format!("127.0.0.1:{}", base + i));
                l = l.replace(&format!("127.0.0.1:{}", 7100 + i), &format!("127.0.0.1:{}", base + 100 + i));
            }
            l
        };

        // Section 1: identities (the block for nodes sharing a machine), then the trust mode.
        let mut setup = init_one_machine.lines().map(|l| subst(l, "")).collect::<Vec<_>>();
        if mode == "pinned" {
            // Each organisation sends node.cert.pem to the other two, who check it.
            for a in NAMES {
                for b in NAMES.into_iter().filter(|b| *b != a) {
                    setup.push(format!("cp {0}/{b}/node.cert.pem {0}/{a}/{b}.cert.pem", m.display()));
                }
                setup.extend(cert_show.lines().map(|l| subst(strip_comment(l), a)));
            }
        } else {
            setup.push(format!("mkdir -p {0} && cd {0}", op.display()));
            setup.extend(ca_init.lines().map(|l| subst(l, "")));
            for p in NAMES {
                setup.extend(cert_request.lines().map(|l| subst(strip_comment(l), p)));
                setup.push(format!("cp {}/{p}/node.csr.pem {p}.csr.pem", m.display()));
            }
            setup.extend(ca_sign.lines().map(|l| subst(l, "")));
            setup.push("cp membrane-ca/ca.cert.pem ca.cert.pem".into());
            for p in NAMES {
                setup.extend(install.lines().map(|l| subst(l, p).replace("alice.cert.pem", &format!("{p}.cert.pem"))));
            }
            setup.push(format!("cd {}", dir.path().display()));
        }
        let out = run_script(dir.path(), &setup.join("\n"));
        if mode == "pinned" {
            assert_eq!(out.matches("fingerprint").count(), 3, "{out}");
        } else {
            for p in NAMES {
                assert!(out.contains(&format!("issued {p}.cert.pem for \"{p}\"")), "{out}");
            }
        }
        // node.toml: the template entries `init` wrote are replaced by the guide's block.
        for p in NAMES {
            let path = m.join(p).join("node.toml");
            let text = std::fs::read_to_string(&path).unwrap();
            let head = &text[..text.find("[trust]").expect("init writes [trust]")];
            let mut block = subst(if mode == "pinned" { &pinned_toml } else { &ca_toml }, p);
            if mode == "pinned" {
                // Everyone pins its own node.cert.pem and the files the other two sent.
                block = block
                    .replace("cert = \"node.cert.pem\"", "cert = \"alice.cert.pem\"")
                    .replace(&format!("cert = \"{p}.cert.pem\""), "cert = \"node.cert.pem\"");
            }
            std::fs::write(&path, format!("{head}{block}")).unwrap();
        }

        // Start, check, first job; then section 3.
        let mut session = Vec::new();
        let run_line = start.lines().find(|l| l.contains(" run ")).unwrap();
        let status_line = start.lines().find(|l| l.contains(" status ")).unwrap();
        for p in NAMES {
            session.push(format!("{} &", subst(strip_comment(run_line), p)));
        }
        for p in NAMES {
            session.push(format!("party-node cert show --config {}/{p}/node.toml", m.display()));
            // "the two peers connected" — within a deadline.
            let status = subst(strip_comment(status_line), p);
            session.push(format!(
                "for i in $(seq 300); do n=$({status} | grep -cE ' connected +' || true); [ \"$n\" -ge 2 ] && break; \
                 sleep 0.1; done; {status}; [ \"$n\" -ge 2 ]"
            ));
        }
        for (p, line) in by_party(&smoke) {
            let l = subst(&line, p)
                .replace("--id ID", "--id $ID")
                .replace(" wait ID", " wait $ID")
                .replace(" result ID", " result $ID");
            session.push(if l.ends_with("--seed 1") && p == "alice" { format!("ID=$({l})") } else { l });
        }
        session.extend(publish.lines().map(|l| subst(l, "alice")));
        session.extend(predict.lines().map(|l| subst(l, "bob")));
        let out = run_script(dir.path(), &session.join("\n"));
        assert_eq!(out.matches("config check: ok").count(), 3, "{mode}: {out}");
        assert!(out.contains("\"shape\":[4,2]"), "{mode}: bob's 4x2 product: {out}");
        assert!(out.contains("digits"), "{mode}: {out}");
        let got = mpc_ml::npy::read(&dir.path().join(format!("{mode}-labels.npy"))).unwrap();
        assert_eq!(got.iter().copied().collect::<Vec<_>>(), want, "{mode}: bob's labels are the plaintext model's");
    }
}

/// README.md: the across-organisations block (publish, models, predict) against a local
/// consortium — with the bundled breast-cancer model standing for `wine.onnx` — and the
/// `local train` and `local analyze` blocks, from the repository root.
#[test]
fn the_readme_runs_as_written() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let sh = shell_blocks(&readme);
    let find = |needle: &str| {
        sh.iter().find(|b| b.contains(needle)).unwrap_or_else(|| panic!("README.md: no block with {needle}"))
    };
    let (service, train, analyze) = (find("party-node publish"), find("local train"), find("local analyze"));
    let dir = tempfile::tempdir().unwrap();
    let fixtures = root().join("fixtures/onnx").canonicalize().unwrap();
    let y = dir.path().join("y.npy");
    let local = |b: &str| b.replace("cargo run --release -p party-node --", "party-node");
    let service = service
        .replace("wine.onnx", &fixtures.join("breast_cancer_logreg.onnx").display().to_string())
        .replace("x.npy", &fixtures.join("breast_cancer_logreg.input.npy").display().to_string())
        .replace("y.npy", &y.display().to_string());
    let script = format!(
        "party-node init-local --out consortium --base-port {}\ncd consortium\n\
         for r in alice bob dealer; do party-node run --config $r/node.toml & done\n{service}\ncd {}\n{}\n{}",
        free_base(),
        root().canonicalize().unwrap().display(),
        local(train),
        local(analyze)
    );
    let out = run_script(dir.path(), &script);
    assert!(out.contains("you may request"), "{out}");
    assert!(out.contains("served_test_accuracy") || out.contains("accuracy"), "{out}");
    let got = mpc_ml::npy::read(&y).unwrap();
    let want = mpc_ml::npy::read(&fixtures.join("breast_cancer_logreg.logits.npy")).unwrap();
    assert_eq!(got.shape(), want.shape());
    let worst = got.iter().zip(want.iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(worst < 1e-2, "bob's logits within 1e-2 of the plaintext model's: worst {worst}");
}
