//! A minimal client of the control API (the CLI and the tests use it).

use std::net::SocketAddr;

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// A response: status and body parsed as JSON (or a string if it is not JSON).
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: serde_json::Value,
}

/// How long [`call`] retries a refused connection: a node that was just started.
pub const API_START_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Sends one request to the API at `addr`; `token` None sends no Authorization header.
pub async fn call(
    addr: SocketAddr,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<Reply> {
    // A node started a moment ago may not listen yet: a refused connection is retried for a
    // few seconds (a command run right after `party-node run … &` works), anything else fails.
    let t0 = std::time::Instant::now();
    let stream = loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused && t0.elapsed() < API_START_WAIT => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("cannot reach the node's control API at {addr} (is `party-node run` up?)")));
            }
        }
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = hyper::Request::builder().method(method).uri(path).header("host", addr.to_string());
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let payload = match body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            Bytes::from(serde_json::to_vec(&b)?)
        }
        None => Bytes::new(),
    };
    let resp = sender.send_request(req.body(Full::new(payload))?).await.context("control API request")?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.context("control API response")?.to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok(Reply { status, body })
}

impl Reply {
    /// The body if the status is 2xx, else an error with the server's message.
    pub fn ok(self) -> anyhow::Result<serde_json::Value> {
        if (200..300).contains(&self.status) {
            return Ok(self.body);
        }
        let msg = self.body.get("error").and_then(|e| e.as_str()).map(str::to_string).unwrap_or(self.body.to_string());
        bail!("the node answered {}: {msg}", self.status)
    }
}
