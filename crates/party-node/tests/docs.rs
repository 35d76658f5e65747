//! The docs match the binary: every `party-node` command shown in README.md,
//! crates/party-node/README.md and docs/*.md — in shell blocks and in inline code — parses with
//! the CLI (`party-node check-args`, which runs nothing): no unknown subcommand or option
//! anywhere, and the commands of shell blocks (complete ones, meant to be copied) miss no
//! required option. Placeholder values (`N`, `ID`, `R`) may fail to parse as values.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_party-node");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn doc_files() -> Vec<PathBuf> {
    let mut v = vec![root().join("README.md"), root().join("crates/party-node/README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    v.extend(docs);
    v
}

/// A command shown in a doc: where, its arguments after `party-node`, and whether it is a
/// complete command (from a shell block) or a fragment of prose.
#[derive(Debug)]
struct Shown {
    at: String,
    args: Vec<String>,
    complete: bool,
}

/// The arguments of every `party-node …` (or `$B …`, the READMEs' alias) in `text`.
fn commands_in(text: &str, at: &str, complete: bool, out: &mut Vec<Shown>) {
    for start in ["party-node ", "$B "] {
        let mut rest = text;
        while let Some(i) = rest.find(start) {
            let before = &rest[..i];
            rest = &rest[i + start.len()..];
            // A path (`target/release/party-node`) or a crate name (`-p party-node`), except in
            // `cargo run -p party-node -- ARGS`.
            if before.ends_with('/') || (before.ends_with("-p ") && !rest.starts_with("-- ")) {
                continue;
            }
            let end = rest.find(['|', '&', ';', ')', '>', '#', '`']).unwrap_or(rest.len());
            let mut args: Vec<String> = words(&rest[..end])
                .into_iter()
                .map(|t| t.trim_matches(['[', ']']).to_string())
                .filter(|t| !t.is_empty() && t != "…" && t != "...")
                .collect();
            if args.first().is_some_and(|a| a == "--") {
                args.remove(0);
            }
            // Prose such as "party-node runs …": only commands that start with a subcommand.
            if args.first().is_none_or(|a| a.starts_with('-') || a.chars().any(|c| c.is_uppercase())) {
                continue;
            }
            out.push(Shown { at: at.to_string(), args, complete });
        }
    }
}

/// Shell words: split at white space, except inside single or double quotes (which go).
fn words(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut quote, mut any) = (Vec::new(), String::new(), None, false);
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            (None, c) => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn shown_commands(path: &Path) -> Vec<Shown> {
    let text = std::fs::read_to_string(path).unwrap();
    let name = path.strip_prefix(root()).unwrap_or(path).display().to_string();
    let mut out = Vec::new();
    let mut block: Option<String> = None;
    let mut prose = String::new();
    let mut prose_line = 1;
    let mut pending = String::new();
    for (i, line) in text.lines().enumerate() {
        let at = format!("{name}:{}", i + 1);
        if let Some(lang) = line.trim_start().strip_prefix("```") {
            block = match block {
                Some(_) => None,
                None => Some(lang.trim().to_string()),
            };
            prose_commands(&prose, &format!("{name}:{prose_line}"), &mut out);
            prose.clear();
            prose_line = i + 2;
            continue;
        }
        match &block {
            Some(lang) if ["sh", "bash", "console", ""].contains(&lang.as_str()) => {
                // Shell: continuation lines join; a comment ends the command.
                let code = match line.find(" #") {
                    Some(c) => &line[..c],
                    None => line,
                };
                if let Some(head) = code.trim_end().strip_suffix('\\') {
                    pending.push_str(head);
                    pending.push(' ');
                    continue;
                }
                pending.push_str(code);
                commands_in(&pending, &at, true, &mut out);
                pending.clear();
            }
            Some(_) => {}
            None if line.trim().is_empty() => {
                prose_commands(&prose, &format!("{name}:{prose_line}"), &mut out);
                prose.clear();
                prose_line = i + 2;
            }
            None => {
                // Inline code: only what is between backticks, joined over the paragraph's lines.
                prose.push_str(line);
                prose.push('\n');
            }
        }
    }
    prose_commands(&prose, &format!("{name}:{prose_line}"), &mut out);
    out
}

/// The commands in a paragraph's inline code (between backticks, over line breaks).
fn prose_commands(paragraph: &str, at: &str, out: &mut Vec<Shown>) {
    for span in paragraph.split('`').skip(1).step_by(2) {
        commands_in(span, at, false, out);
    }
}

#[test]
fn every_command_the_docs_show_parses_with_the_cli() {
    let mut checked = 0;
    let mut problems = Vec::new();
    for path in doc_files() {
        for s in shown_commands(&path) {
            let out = Command::new(BIN).arg("check-args").args(&s.args).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let reply = String::from_utf8_lossy(&out.stdout);
            let kind = reply.lines().next().unwrap_or("").to_string();
            let drift = match kind.as_str() {
                "ok" | "DisplayHelp" | "DisplayVersion" | "InvalidValue" | "ValueValidation" => false,
                "MissingRequiredArgument"
                | "MissingSubcommand"
                | "DisplayHelpOnMissingArgumentOrSubcommand"
                | "ArgumentConflict" => s.complete,
                _ => true,
            };
            if drift {
                problems.push(format!("{}: party-node {}\n{reply}", s.at, s.args.join(" ")));
            }
            checked += 1;
        }
    }
    eprintln!("checked {checked} commands");
    assert!(checked > 40, "only {checked} commands found: is the extraction broken?");
    assert!(
        problems.is_empty(),
        "{} command(s) in the docs do not match the CLI:\n\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn the_extraction_finds_block_and_inline_commands() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.md");
    std::fs::write(
        &p,
        "Run `party-node status --config\nnode.toml` or `party-node bogus`.\n\n```sh\nID=$($B predict --config c \\\n  --model m) # note\nparty-node run --config x   # start\n```\n",
    )
    .unwrap();
    let got: Vec<(Vec<String>, bool)> = shown_commands(&p).into_iter().map(|s| (s.args, s.complete)).collect();
    let v = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
    assert!(got.contains(&(v("status --config node.toml"), false)), "{got:?}");
    assert!(got.contains(&(v("bogus"), false)), "{got:?}");
    assert!(got.contains(&(v("predict --config c --model m"), true)), "{got:?}");
    assert!(got.contains(&(v("run --config x"), true)), "{got:?}");
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(
        words(r#"ca init --name "A B" --x 'c d'"#),
        v("ca init --name").into_iter().chain(["A B".into(), "--x".into(), "c d".into()]).collect::<Vec<_>>()
    );
}
