//! The control API: HTTP/JSON on a loopback address, for the node's own organisation.
//!
//! Every route needs `Authorization: Bearer <token>` (the `[api] token` of the config).
//!
//! | route | |
//! |---|---|
//! | `GET /v1/health` | role, party, uptime, each peer's state and last failure, certificates in use and their expiry, certificates refused ([`Health`]) |
//! | `GET /v1/peers` | each peer: state (connected, connecting, down), last seen, RTT, last error (while not connected), when it last failed; certificates refused ([`Peers`]) |
//! | `POST /v1/requests` | Bob: request a prediction, training or statistics ([`Request`]); proposed to the peers, who decide by their policies |
//! | `GET /v1/proposals` | proposals held here for this organisation's approval ([`Proposals`]) |
//! | `POST /v1/proposals/{id}/approve`, `…/refuse` | decide on a held proposal ([`Approve`], [`Refuse`]) |
//! | `GET /v1/jobs`, `POST /v1/jobs` | list; submit by hand, every organisation the same id ([`JobRequest`]; 503 at once, naming the peer, if a peer is down) |
//! | `GET /v1/jobs/{id}` | state, progress, per-operation rounds and bytes ([`JobRecord`]) |
//! | `GET /v1/jobs/{id}/result` | Bob: the revealed result |
//! | `GET /v1/models`, `POST /v1/models` | models known here, with terms and use ([`Models`]); Alice: publish an ONNX file with a policy ([`PublishRequest`] → [`Published`]) |
//! | `POST /v1/plans` | Bob, dealer: pin a plan Alice published, by hand ([`RegisterRequest`]) |
//! | `GET /v1/audit` | this node's audit log ([`Audit`]) |
//! | `GET /v1/pool` | the warm pool: preprocessed jobs held, counters ([`crate::pool`]) |
//! | `GET /v1/openapi.json` | this table as an OpenAPI 3.1 document, with every body's JSON Schema |
//! | `GET /metrics` | Prometheus text format |
//!
//! Request bodies are limited to 16 KiB (plans 16 MiB); errors are JSON `{"error": "…"}`
//! naming the problem.
//!
//! [`Request`]: crate::service::Request

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

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::audit::Entry;
use crate::config::Role;
use crate::jobs::{JobId, JobRecord, JobRequest, JobState, Jobs, SubmitError};
use crate::mesh::Mesh;
use crate::ml::{PublishRequest, RegisterRequest};
use crate::service::{Delivery, HeldProposal, ModelInfo, Service};

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
    /// The prediction service.
    pub service: Arc<Service>,
    /// The data directory (the audit log lives there).
    pub data_dir: std::path::PathBuf,
}

/// `GET /v1/health`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Health {
    /// Always `ok` when the node answers.
    pub status: String,
    /// This node's role.
    pub role: Role,
    /// Its party id.
    pub party: u8,
    /// Seconds since it started.
    pub uptime_s: u64,
    /// Peers connected now.
    pub peers_connected: usize,
    /// Whether both peers are connected.
    pub mesh_ready: bool,
    /// Each peer's state and last failure.
    pub peers: Vec<PeerHealth>,
    /// The certificates in use: file, names, fingerprint, validity, days left, warning.
    pub certificates: Vec<serde_json::Value>,
    /// Certificates refused in handshakes.
    pub refused_certificates: Vec<crate::tls::RefusedCert>,
}

/// One peer in [`Health`].
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct PeerHealth {
    /// Its role.
    pub role: Role,
    /// Its organisation.
    pub name: String,
    /// `connected`, `connecting` or `down`.
    pub state: String,
    /// Why it is not connected.
    pub last_error: Option<String>,
    /// When a connection to it last failed, Unix milliseconds.
    pub last_failed_unix_ms: Option<u64>,
}

/// `GET /v1/peers`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Peers {
    /// Each peer.
    pub peers: Vec<crate::mesh::PeerStatus>,
    /// Certificates refused in handshakes.
    pub refused_certificates: Vec<crate::tls::RefusedCert>,
}

/// `GET /v1/jobs`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct JobList {
    /// Oldest first.
    pub jobs: Vec<JobRecord>,
}

/// A job was created: `POST /v1/jobs`, `POST /v1/requests`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Created {
    /// The job id (32 hex digits).
    pub id: String,
}

/// `GET /v1/models`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Models {
    /// The models this node can run, with terms and use.
    pub models: Vec<ModelInfo>,
}

/// `POST /v1/models`: what Alice published.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Published {
    /// The model's name.
    pub name: String,
    /// Hex SHA-256 of its public plan.
    pub plan_hash: String,
    /// The public plan (batch 1).
    pub plan: serde_json::Value,
    /// With a policy: whether each peer's node stored the offer (a node that was down gets it
    /// when it reconnects).
    pub offered: Vec<Delivery>,
}

/// `POST /v1/plans`: the plan pinned.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Registered {
    /// The model's name.
    pub name: String,
    /// Hex SHA-256 of the pinned plan.
    pub plan_hash: String,
}

/// `GET /v1/proposals`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Proposals {
    /// Held for approval here, oldest first.
    pub proposals: Vec<HeldProposal>,
}

/// `POST /v1/proposals/{id}/approve`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Approve {
    /// Alice, statistics that include her rows: her CSV file.
    #[serde(default)]
    pub data: Option<String>,
}

/// `POST /v1/proposals/{id}/refuse`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Refuse {
    /// Told to the requester.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `GET /v1/audit`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Audit {
    /// Oldest first.
    pub entries: Vec<Entry>,
}

/// An error: `{"error": "…"}`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// What went wrong, and what to do.
    pub error: String,
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
        .route("/v1/requests", axum::routing::post(request))
        .route("/v1/proposals", get(proposals))
        .route("/v1/proposals/{id}/approve", axum::routing::post(approve))
        .route("/v1/proposals/{id}/refuse", axum::routing::post(refuse))
        .route("/v1/audit", get(audit))
        .route("/v1/openapi.json", get(openapi_doc))
        .route("/v1/jobs", get(list_jobs).post(submit_job))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/result", get(job_result))
        .route("/v1/models", get(list_models).post(publish_model))
        .route("/v1/plans", axum::routing::post(register_plan).layer(DefaultBodyLimit::max(MAX_PLAN_BODY)))
        .route("/v1/pool", get(pool))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such route; GET /v1/openapi.json lists them".into()) })
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

async fn health(State(st): State<Arc<ApiState>>) -> Json<Health> {
    let peers = st.mesh.peers();
    Json(Health {
        status: "ok".into(),
        role: st.role,
        party: st.role.party().0,
        uptime_s: st.started.elapsed().as_secs(),
        peers_connected: peers.iter().filter(|p| p.connected).count(),
        mesh_ready: peers.iter().all(|p| p.connected),
        peers: peers
            .iter()
            .map(|p| PeerHealth {
                role: p.role,
                name: p.name.clone(),
                state: p.state.to_string(),
                last_error: p.last_error.clone(),
                last_failed_unix_ms: p.last_failed_unix_ms,
            })
            .collect(),
        certificates: certificates(&st.certificates),
        refused_certificates: st.mesh.refused_certificates(),
    })
}

/// Each certificate in use with its days left now, and a warning for those expiring within
/// [`crate::certs::WARN_DAYS`].
fn certificates(certs: &[crate::certs::InUse]) -> Vec<serde_json::Value> {
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

async fn peers(State(st): State<Arc<ApiState>>) -> Json<Peers> {
    Json(Peers { peers: st.mesh.peers(), refused_certificates: st.mesh.refused_certificates() })
}

async fn list_jobs(State(st): State<Arc<ApiState>>) -> Json<JobList> {
    Json(JobList { jobs: st.jobs.list() })
}

fn parse_id(s: &str) -> ApiResult<JobId> {
    s.parse().map_err(|e: anyhow::Error| ApiError(StatusCode::BAD_REQUEST, e.to_string()))
}

async fn get_job(State(st): State<Arc<ApiState>>, Path(id): Path<String>) -> ApiResult<Json<JobRecord>> {
    let id = parse_id(&id)?;
    let r = st.jobs.get(id).ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no job {id} on this node")))?;
    Ok(Json(r))
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

fn submit_error(e: SubmitError) -> ApiError {
    let status = match e {
        SubmitError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        SubmitError::Duplicate(_) => StatusCode::CONFLICT,
        SubmitError::Busy(_) | SubmitError::PeerDown(_) => StatusCode::SERVICE_UNAVAILABLE,
        SubmitError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError(status, e.to_string())
}

async fn submit_job(
    State(st): State<Arc<ApiState>>,
    body: Result<Json<JobRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Created>)> {
    let Json(req) = body.map_err(|e| body_error("job request", e))?;
    let id = st.jobs.submit(st.mesh.clone(), req).map_err(submit_error)?;
    Ok((StatusCode::CREATED, Json(Created { id: id.to_string() })))
}

async fn request(
    State(st): State<Arc<ApiState>>,
    body: Result<Json<crate::service::Request>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Created>)> {
    let Json(req) = body.map_err(|e| body_error("request", e))?;
    let id = st.service.request(req).map_err(submit_error)?;
    Ok((StatusCode::CREATED, Json(Created { id: id.to_string() })))
}

async fn proposals(State(st): State<Arc<ApiState>>) -> Json<Proposals> {
    Json(Proposals { proposals: st.service.held() })
}

async fn approve(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
    body: Result<Json<Approve>, JsonRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = parse_id(&id)?;
    let Json(req) = body.map_err(|e| body_error("approval", e))?;
    st.service
        .decide_held(id, true, None, req.data)
        .await
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}")))?;
    Ok(Json(json!({ "id": id.to_string(), "decision": "approved" })))
}

async fn refuse(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
    body: Result<Json<Refuse>, JsonRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = parse_id(&id)?;
    let Json(req) = body.map_err(|e| body_error("refusal", e))?;
    st.service
        .decide_held(id, false, req.reason, None)
        .await
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}")))?;
    Ok(Json(json!({ "id": id.to_string(), "decision": "refused" })))
}

async fn audit(State(st): State<Arc<ApiState>>) -> ApiResult<Json<Audit>> {
    let entries = crate::audit::AuditLog::read(&st.data_dir)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
    Ok(Json(Audit { entries }))
}

async fn openapi_doc() -> Json<serde_json::Value> {
    Json(openapi())
}

fn body_error(what: &str, e: JsonRejection) -> ApiError {
    let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE { e.status() } else { StatusCode::BAD_REQUEST };
    ApiError(status, format!("{what}: {}", e.body_text()))
}

async fn list_models(State(st): State<Arc<ApiState>>) -> ApiResult<Json<Models>> {
    let models =
        st.service.models().await.map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
    Ok(Json(Models { models }))
}

async fn publish_model(
    State(st): State<Arc<ApiState>>,
    body: Result<Json<PublishRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Published>)> {
    let Json(req) = body.map_err(|e| body_error("publish request", e))?;
    if let Some(p) = &req.policy {
        p.check().map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}")))?;
    }
    // The cost model's link: configured, else the mesh's RTT estimate (the slowest peer).
    let measured = st.mesh.peers().iter().filter_map(|p| p.rtt_ms).reduce(f64::max);
    let plan = crate::ml::publish(st.jobs.store(), st.role, &req, st.link.link(measured))
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}")))?;
    st.jobs.plan_changed(&req.name, &plan);
    let offered = match &req.policy {
        Some(p) => st
            .service
            .offer(&req.name, p)
            .await
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?,
        None => vec![],
    };
    let plan_hash = hex::encode(plan.hash());
    Ok((
        StatusCode::CREATED,
        Json(Published {
            name: req.name,
            plan_hash,
            plan: serde_json::to_value(&plan)
                .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
            offered,
        }),
    ))
}

async fn register_plan(
    State(st): State<Arc<ApiState>>,
    body: Result<Json<RegisterRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Registered>)> {
    let Json(req) = body.map_err(|e| body_error("plan registration", e))?;
    crate::ml::register(st.jobs.store(), st.role, &req)
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}")))?;
    st.service.pin(&req.name, &req.plan).map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
    st.jobs.plan_changed(&req.name, &req.plan);
    let plan_hash = hex::encode(req.plan.hash());
    Ok((StatusCode::CREATED, Json(Registered { name: req.name, plan_hash })))
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

/// The routes: method, path, summary, request body schema, response schema.
type Route = (&'static str, &'static str, &'static str, Option<schemars::Schema>, Option<schemars::Schema>);

fn routes(g: &mut schemars::SchemaGenerator) -> Vec<Route> {
    vec![
        (
            "get",
            "/v1/health",
            "The node's role, uptime, peers and certificates.",
            None,
            Some(g.subschema_for::<Health>()),
        ),
        ("get", "/v1/peers", "Each peer's connection state.", None, Some(g.subschema_for::<Peers>())),
        (
            "post",
            "/v1/requests",
            "Bob: request a prediction, training or statistics; proposed to the peers.",
            Some(g.subschema_for::<crate::service::Request>()),
            Some(g.subschema_for::<Created>()),
        ),
        ("get", "/v1/proposals", "Proposals held here for approval.", None, Some(g.subschema_for::<Proposals>())),
        ("post", "/v1/proposals/{id}/approve", "Approve a held proposal.", Some(g.subschema_for::<Approve>()), None),
        ("post", "/v1/proposals/{id}/refuse", "Refuse a held proposal.", Some(g.subschema_for::<Refuse>()), None),
        ("get", "/v1/jobs", "The node's jobs.", None, Some(g.subschema_for::<JobList>())),
        (
            "post",
            "/v1/jobs",
            "Submit a job by hand (every organisation, the same id).",
            Some(g.subschema_for::<JobRequest>()),
            Some(g.subschema_for::<Created>()),
        ),
        ("get", "/v1/jobs/{id}", "One job.", None, Some(g.subschema_for::<JobRecord>())),
        ("get", "/v1/jobs/{id}/result", "Bob: a finished job's revealed result.", None, None),
        ("get", "/v1/models", "Models this node can run, with terms and use.", None, Some(g.subschema_for::<Models>())),
        (
            "post",
            "/v1/models",
            "Alice: publish an ONNX model, with a policy offering it to the peers.",
            Some(g.subschema_for::<PublishRequest>()),
            Some(g.subschema_for::<Published>()),
        ),
        (
            "post",
            "/v1/plans",
            "Bob, dealer: pin a plan by hand.",
            Some(g.subschema_for::<RegisterRequest>()),
            Some(g.subschema_for::<Registered>()),
        ),
        ("get", "/v1/audit", "The audit log.", None, Some(g.subschema_for::<Audit>())),
        (
            "get",
            "/v1/pool",
            "The warm pool of preprocessed jobs.",
            None,
            Some(g.subschema_for::<crate::pool::PoolStatus>()),
        ),
        ("get", "/v1/openapi.json", "This document.", None, None),
        ("get", "/metrics", "Prometheus metrics (text).", None, None),
    ]
}

/// The control API as an OpenAPI 3.1 document: every route, its request body and its answer,
/// with JSON Schemas generated from the types the server and the CLI share.
pub fn openapi() -> serde_json::Value {
    let mut g = schemars::generate::SchemaSettings::openapi3().into_generator();
    let routes = routes(&mut g);
    let error = g.subschema_for::<ErrorBody>();
    let mut paths = serde_json::Map::new();
    for (method, path, summary, body, answer) in routes {
        let mut op = json!({
            "summary": summary,
            "security": [{ "bearer": [] }],
            "responses": {
                "default": { "description": "an error", "content": { "application/json": { "schema": error } } },
            },
        });
        let ok = if method == "post" && path != "/v1/proposals/{id}/approve" && path != "/v1/proposals/{id}/refuse" {
            "201"
        } else {
            "200"
        };
        op["responses"][ok] = match answer {
            Some(s) => json!({ "description": "success", "content": { "application/json": { "schema": s } } }),
            None => json!({ "description": "success" }),
        };
        if let Some(b) = body {
            op["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": b } } });
        }
        if path.contains("{id}") {
            op["parameters"] = json!([{ "name": "id", "in": "path", "required": true, "schema": { "type": "string", "pattern": "^[0-9a-f]{32}$" } }]);
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[method] = op;
    }
    let schemas: serde_json::Map<String, serde_json::Value> = g.take_definitions(true).into_iter().collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Membrane party-node control API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The control API of one organisation's node, on a loopback address. Every route needs `Authorization: Bearer <[api] token>`.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
        },
    })
}
