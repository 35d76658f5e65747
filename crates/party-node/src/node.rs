//! `party-node run`: the daemon — store, jobs, mesh and control API until SIGINT/SIGTERM.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use crate::api::{self, ApiState};
use crate::config::Config;
use crate::jobs::Jobs;
use crate::mesh::Mesh;
use crate::store::Store;

/// Runs the node described by `cfg` until a shutdown signal.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let certificates = crate::certs::check_at_start(&cfg)?;
    let store = Arc::new(Store::open(&cfg.data_dir)?);
    let jobs =
        Arc::new(Jobs::load(cfg.me, store).context("loading job records")?.with_limits(cfg.limits).with_mode(cfg.mode));
    let listener = tokio::net::TcpListener::bind(cfg.api_listen)
        .await
        .with_context(|| format!("cannot listen on [api] listen = {} (in use?)", cfg.api_listen))?;
    let mesh = Arc::new(Mesh::bind(&cfg, cfg.limits.mesh_options())?);
    let names = cfg.parties.iter().map(|p| p.name.clone()).collect();
    let service = crate::service::Service::start(mesh.clone(), jobs.clone(), names, cfg.policy.clone(), &cfg.data_dir)
        .context("starting the prediction service")?;
    tracing::info!(role = %cfg.role(), api = %cfg.api_listen, config = %cfg.path.display(), "node running");
    let state = Arc::new(ApiState {
        role: cfg.role(),
        mesh: mesh.clone(),
        jobs,
        token: cfg.api_token.0.clone(),
        started: Instant::now(),
        link: cfg.link,
        certificates,
        service,
        data_dir: cfg.data_dir.clone(),
    });
    axum::serve(listener, api::router(state)).with_graceful_shutdown(shutdown_signal()).await.context("control API")?;
    tracing::info!("shutting down");
    if let Ok(mesh) = Arc::try_unwrap(mesh) {
        mesh.shutdown().await;
    }
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
