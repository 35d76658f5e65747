//! The audit log: one JSON line per request this node decided on, and per job outcome.
//!
//! `DATA/audit.jsonl`, appended with one `write` per line and fsynced before the decision takes
//! effect: a crash (SIGKILL, power loss on a filesystem that honours fsync) loses at most the
//! line being written, never an earlier one. A line cut short by a crash is dropped when the
//! log is next opened, so the file holds only whole lines. Lines hold public facts only — who
//! asked, what kind of job, which model, how many rows, the decision and the rule behind it, the
//! outcome and the bytes moved — never a value, a share, a path or a token.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The log's file name in the data directory.
pub const FILE: &str = "audit.jsonl";

/// One line of the log.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Entry {
    /// Unix milliseconds.
    pub time_unix_ms: u64,
    /// What happened: `proposed` (this node asked its peers), `decided` (this node decided on
    /// a peer's proposal), `outcome` (a job ended).
    pub event: String,
    /// The job.
    pub job: String,
    /// The organisation that asked (`[[party]] name`), and its role.
    pub peer: String,
    /// Its role (`alice`, `bob`, `dealer`).
    pub role: String,
    /// `predict`, `train` or `analyze`.
    pub kind: String,
    /// The model, for predictions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Rows (predictions, statistics) or training samples.
    pub rows: u64,
    /// `accepted`, `refused`, `held`, `approved` (a held job let through by hand), or for
    /// `outcome` lines `done` / `failed`.
    pub decision: String,
    /// The rule or reason behind a refusal or a hold, or why a job failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `outcome` lines: bytes the job sent and received at this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// The node's audit log.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl AuditLog {
    /// Opens (creating it if needed) the log in `data_dir`, dropping a last line a crash cut
    /// short.
    pub fn open(data_dir: &Path) -> anyhow::Result<AuditLog> {
        let path = data_dir.join(FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .with_context(|| format!("opening the audit log {}", path.display()))?;
        let mut text = Vec::new();
        file.read_to_end(&mut text).with_context(|| format!("reading {}", path.display()))?;
        if !text.is_empty() && text.last() != Some(&b'\n') {
            let keep = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            tracing::warn!(log = %path.display(), dropped = text.len() - keep, "dropping a torn last line of the audit log");
            file.set_len(keep as u64).with_context(|| format!("repairing {}", path.display()))?;
            file.seek(SeekFrom::End(0))?;
            file.sync_all()?;
        }
        Ok(AuditLog { path, file: Mutex::new(file) })
    }

    /// Appends `entry` (one write, then fsync). A failure is returned: a decision that cannot be
    /// recorded is not taken.
    pub fn append(&self, entry: &Entry) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(entry)?;
        line.push(b'\n');
        let mut f = self.file.lock().expect("audit lock");
        f.write_all(&line).and_then(|()| f.sync_data()).with_context(|| format!("writing {}", self.path.display()))
    }

    /// Every entry, oldest first.
    pub fn read(data_dir: &Path) -> anyhow::Result<Vec<Entry>> {
        let path = data_dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut out = Vec::new();
        let complete = text.rfind('\n').map_or("", |i| &text[..i]);
        for (i, line) in complete.lines().enumerate() {
            if line.is_empty() {
                continue;
            }
            out.push(
                serde_json::from_str(line)
                    .with_context(|| format!("{} line {} is not an audit entry", path.display(), i + 1))?,
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_append_and_a_torn_tail_is_dropped_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        let e = Entry { event: "decided".into(), job: "j1".into(), decision: "accepted".into(), ..Default::default() };
        log.append(&e).unwrap();
        log.append(&Entry { job: "j2".into(), ..e.clone() }).unwrap();
        drop(log);
        // A crash in the middle of a line.
        let mut f = std::fs::OpenOptions::new().append(true).open(dir.path().join(FILE)).unwrap();
        f.write_all(b"{\"time_unix_ms\":1,\"ev").unwrap();
        drop(f);
        assert_eq!(AuditLog::read(dir.path()).unwrap().len(), 2, "the torn line is not read");
        let log = AuditLog::open(dir.path()).unwrap();
        log.append(&Entry { job: "j3".into(), ..e }).unwrap();
        let all = AuditLog::read(dir.path()).unwrap();
        assert_eq!(all.iter().map(|e| e.job.as_str()).collect::<Vec<_>>(), ["j1", "j2", "j3"]);
        assert!(std::fs::read_to_string(dir.path().join(FILE)).unwrap().ends_with("}\n"));
    }
}
