//! `/healthz`, `/readyz` and `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::schedule::Daemon;

/// Buckets of `retentiond_run_duration_seconds`.
const RUN_DURATION_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Installs the Prometheus recorder for this process.
pub fn install_metrics() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("retentiond_run_duration_seconds".into()),
            RUN_DURATION_BUCKETS,
        )
        .map_err(|e| e.to_string())?
        .install_recorder()
        .inspect(|_| crate::metrics::describe())
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))
}

#[derive(Clone)]
struct AppState {
    daemon: Arc<Daemon>,
    metrics: PrometheusHandle,
}

/// Serves until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    daemon: Arc<Daemon>,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(AppState { daemon, metrics });
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "http server failed");
    }
}

async fn render_metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let mut problems = Vec::new();
    if let Some(e) = s.daemon.reload_error.read().await.clone() {
        problems.push(format!(
            "config reload failed (running on the previous config): {e}"
        ));
    }
    let loaded = s.daemon.loaded.read().await.clone();
    let engine = &loaded.engine;
    if !engine.audit.migrations_applied().await {
        problems.push("audit migrations are not applied".into());
    }
    for store in engine.stores.probe().await {
        if !store.up {
            problems.push(format!("store {} is not reachable", store.name));
        }
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n{}\n", problems.join("\n")),
        )
    }
}
