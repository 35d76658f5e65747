//! The control API: HTTP/JSON on a loopback address, for the node's own organisation.
//!
//! Every route needs `Authorization: Bearer <token>` (the `[api] token` of the config).
//!
//! | route | |
//! |---|---|
//! | `GET /v1/health` | role, party, uptime, each peer's state and last failure, certificates in use and their expiry, certificates refused |
//! | `GET /v1/peers` | each peer: state (connected, connecting, down), last seen, RTT, last error (while not connected), when it last failed; certificates refused |
//! | `GET /v1/jobs`, `POST /v1/jobs` | list; submit ([`JobRequest`]; 503 at once, naming the peer, if a peer is down) |
//! | `GET /v1/jobs/{id}` | state, progress, per-operation rounds and bytes |
//! | `GET /v1/jobs/{id}/result` | Bob: the revealed result |
//! | `GET /v1/models`, `POST /v1/models` | models known here; Alice: publish an ONNX file ([`PublishRequest`]) |
//! | `POST /v1/plans` | Bob, dealer: register a plan Alice published ([`RegisterRequest`]) |
//! | `GET /v1/pool` | the warm pool: preprocessed jobs held, counters ([`crate::pool`]) |
//! | `GET /metrics` | Prometheus text format |
//!
//! Request bodies are limited to 16 KiB; errors are JSON `{"error": "…"}` naming the problem.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::config::Role;
use crate::jobs::{JobId, JobRequest, JobState, Jobs, SubmitError};
use crate::mesh::Mesh;
use crate::ml::{PublishRequest, RegisterRequest};

/// Largest request body.
pub const MAX_BODY: usize = 16 * 1024;

/// Largest plan registration: a plan is public and grows with the network (MobileNetV2's is
/// ~40 KiB of JSON, a 1,000-layer graph a few MiB).
pub const MAX_PLAN_BODY: usize = 16 * 1024 * 1024;

/// What the handlers share.
pub struct ApiState {
    /// This node's role.
    pub role: Role,
    /// The mesh.
    pub mesh: Arc<Mesh>,
    /// The jobs.
    pub jobs: Arc<Jobs>,
    /// The bearer token.
    pub token: String,
    /// When the node started.
    pub started: Instant,
    /// The configured network to the peers (`[link]`).
    pub link: crate::config::LinkSection,
    /// The certificates in use, as checked at start ([`crate::certs::check_at_start`]).
    pub certificates: Vec<crate::certs::InUse>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").field("role", &self.role).finish_non_exhaustive()
    }
}

/// An error response.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The router.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/peers", get(peers))
        .route("/v1/jobs", get(list_jobs).post(submit_job))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/result", get(job_result))
        .route("/v1/models", get(list_models).post(publish_model))
        .route("/v1/plans", axum::routing::post(register_plan).layer(DefaultBodyLimit::max(MAX_PLAN_BODY)))
        .route("/v1/pool", get(pool))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            ApiError(StatusCode::NOT_FOUND, "no such route; see /v1/health, /v1/peers, /v1/jobs, /metrics".into())
        })
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Constant-time comparison (the token is a secret).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(st): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match given.and_then(|v| v.strip_prefix("Bearer ")) {
        None => ApiError(
            StatusCode::UNAUTHORIZED,
            "missing bearer token: send `Authorization: Bearer <[api] token from the node's config>`".into(),
        )
        .into_response(),
        Some(t) if !same(t.trim().as_bytes(), st.token.as_bytes()) => {
            tracing::warn!("control API request with a wrong token");
            ApiError(StatusCode::UNAUTHORIZED, "wrong bearer token".into()).into_response()
        }
        Some(_) => next.run(req).await,
    }
}

async fn health(State(st): State<Arc<ApiState>>) -> Json<serde_json::Value> {
    let peers = st.mesh.peers();
    Json(json!({
        "status": "ok",
        "role": st.role,
        "party": st.role.party().0,
        "uptime_s": st.started.elapsed().as_secs(),
        "peers_connected": peers.iter().filter(|p| p.connected).count(),
        "mesh_ready": peers.iter().all(|p| p.connected),
        "peers": peers.iter().map(|p| json!({
            "role": p.role,
            "name": p.name,
            "state": p.state,
            "last_error": p.last_error,
            "last_failed_unix_ms": p.last_failed_unix_ms,
        })).collect::<Vec<_>>(),
        "certificates": certificates(&st.certificates),
        "refused_certificates": st.mesh.refused_certificates(),
    }))
}

/// Each certificate in use with its days left now, and a warning for those expiring within
/// [`crate::certs::WARN_DAYS`].
fn certificates(certs: &[crate::certs::InUse]) -> serde_json::Value {
    let now = crate::certs::now();
    certs
        .iter()
        .map(|c| {
            let mut v = serde_json::to_value(c).unwrap_or_default();
            v["days_left"] = json!(c.info.days_left(now));
            v["warning"] = json!(c.warning(now));
            v
        })
        .collect()
}

async fn peers(State(st): State<Arc<ApiState>>) -> Json<serde_json::Value> {
    Json(json!({ "peers": st.mesh.peers(), "refused_certificates": st.mesh.refused_certificates() }))
}

async fn list_jobs(State(st): State<Arc<ApiState>>) -> Json<serde_json::Value> {
    Json(json!({ "jobs": st.jobs.list() }))
}

fn parse_id(s: &str) -> ApiResult<JobId> {
    s.parse().map_err(|e: anyhow::Error| ApiError(StatusCode::BAD_REQUEST, e.to_string()))
}

async fn get_job(State(st): State<Arc<ApiState>>, Path(id): Path<String>) -> ApiResult<Json<serde_json::Value>> {
    let id = parse_id(&id)?;
    let r = st.jobs.get(id).ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no job {id} on this node")))?;
    Ok(Json(serde_json::to_value(r).expect("records serialise")))
}

async fn job_result(State(st): State<Arc<ApiState>>, Path(id): Path<String>) -> ApiResult<Json<serde_json::Value>> {
    let id = parse_id(&id)?;
    let r = st.jobs.get(id).ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no job {id} on this node")))?;
    if st.role != Role::Bob {
        return Err(ApiError(StatusCode::FORBIDDEN, format!("only Bob's node learns results; this is {}", st.role)));
    }
    if r.state != JobState::Done {
        return Err(ApiError(StatusCode::CONFLICT, format!("job {id} is {:?}, not done", r.state)));
    }
    match st.jobs.result(id) {
        Ok(Some(v)) => Ok(Json(v)),
        Ok(None) => Err(ApiError(StatusCode::NOT_FOUND, format!("job {id} has no stored result"))),
        Err(e) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))),
    }
}

async fn submit_job(
    State(st): State<Arc<ApiState>>,
    body: Result<Json<JobRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let Json(req) = body.map_err(|e| {
        let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE { e.status() } else { StatusCode::BAD_REQUEST };
        ApiError(status, format!("job request: {}", e.body_text()))
    })?;
    match st.jobs.submit(st.mesh.clone(), req) {
        Ok(id) => Ok((StatusCode::CREATED, Json(json!({ "id": id.to_string() })))),
        Err(e @ SubmitError::Invalid(_)) => Err(ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())),
        Err(e @ SubmitError::Duplicate(_)) => Err(ApiError(StatusCode::CONFLICT, e.to_string())),
        Err(e @ (SubmitError::Busy(_) | SubmitError::PeerDown(_))) => {
            Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
        }
        Err(e @ SubmitError::Internal(_)) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

fn body_error(what: &str, e: JsonRejection) -> ApiError {
    let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE { e.status() } else { StatusCode::BAD_REQUEST };
    ApiError(status, format!("{what}: {}", e.body_text()))
}

async fn list_models(State(st): State<Arc<ApiState>>) -> ApiResult<Json<serde_json::Value>> {
    let plans =
        crate::ml::list(st.jobs.store()).map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
    let models: Vec<serde_json::Value> = plans
        .iter()
        .map(|(name, plan)| {
            json!({
                "name": name,
                "layers": plan.steps.iter().map(|s| s.kind.name()).collect::<Vec<_>>(),
                "input": &plan.input[1..],
                "output": plan.output,
            })
        })
        .collect();
    Ok(Json(json!({ "models": models })))
}

async fn publish_model(
    State(st): State<Arc<ApiState>>,
    body: Result<Json<PublishRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let Json(req) = body.map_err(|e| body_error("publish request", e))?;
    // The cost model's link: configured, else the mesh's RTT estimate (the slowest peer).
    let measured = st.mesh.peers().iter().filter_map(|p| p.rtt_ms).reduce(f64::max);
    let plan = crate::ml::publish(st.jobs.store(), st.role, &req, st.link.link(measured))
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}")))?;
    st.jobs.plan_changed(&req.name, &plan);
    Ok((StatusCode::CREATED, Json(json!({ "name": req.name, "plan": plan }))))
}

async fn register_plan(
    State(st): State<Arc<ApiState>>,
    body: Result<Json<RegisterRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let Json(req) = body.map_err(|e| body_error("plan registration", e))?;
    crate::ml::register(st.jobs.store(), st.role, &req)
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}")))?;
    st.jobs.plan_changed(&req.name, &req.plan);
    Ok((StatusCode::CREATED, Json(json!({ "name": req.name }))))
}

async fn pool(State(st): State<Arc<ApiState>>) -> Json<crate::pool::PoolStatus> {
    Json(st.jobs.pool().status())
}

async fn metrics(State(st): State<Arc<ApiState>>) -> impl IntoResponse {
    let mut out = String::new();
    let _ = writeln!(out, "# HELP membrane_up Whether the node is serving.\n# TYPE membrane_up gauge\nmembrane_up 1");
    let _ = writeln!(out, "# HELP membrane_peer_connected Whether the connection to a peer is up.");
    let _ = writeln!(out, "# TYPE membrane_peer_connected gauge");
    let peers = st.mesh.peers();
    for p in &peers {
        let _ = writeln!(out, "membrane_peer_connected{{peer=\"{}\"}} {}", p.role, u8::from(p.connected));
    }
    let _ = writeln!(out, "# HELP membrane_peer_rtt_seconds Smoothed RTT to a connected peer.");
    let _ = writeln!(out, "# TYPE membrane_peer_rtt_seconds gauge");
    for p in &peers {
        if let Some(rtt) = p.rtt_ms {
            let _ = writeln!(out, "membrane_peer_rtt_seconds{{peer=\"{}\"}} {}", p.role, rtt / 1e3);
        }
    }
    let jobs = st.jobs.list();
    let _ = writeln!(out, "# HELP membrane_jobs Jobs on this node by state.\n# TYPE membrane_jobs gauge");
    for s in [JobState::Joining, JobState::Running, JobState::Done, JobState::Failed, JobState::Interrupted] {
        let n = jobs.iter().filter(|j| j.state == s).count();
        let name = serde_json::to_value(s).expect("state serialises");
        let _ = writeln!(out, "membrane_jobs{{state={name}}} {n}");
    }
    let (sent, recv) = jobs.iter().fold((0, 0), |(s, r), j| (s + j.wire_sent, r + j.wire_recv));
    let _ = writeln!(out, "# HELP membrane_job_wire_bytes Bytes moved by jobs (framing included).");
    let _ = writeln!(out, "# TYPE membrane_job_wire_bytes counter");
    let _ = writeln!(out, "membrane_job_wire_bytes{{direction=\"sent\"}} {sent}");
    let _ = writeln!(out, "membrane_job_wire_bytes{{direction=\"recv\"}} {recv}");
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
