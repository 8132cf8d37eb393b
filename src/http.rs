//! `/healthz`, `/readyz` and `/metrics`. It knows nothing of the daemon: readiness comes
//! through [`Readiness`].

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

/// What `/readyz` asks the process it serves: the problems that make it not ready
/// (none: ready).
pub trait Readiness: Send + Sync + 'static {
    /// One line per problem.
    fn problems(&self) -> impl std::future::Future<Output = Vec<String>> + Send;
}

/// Buckets of `retentiond_run_duration_seconds`.
const RUN_DURATION_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Installs the Prometheus recorder for this process, once: later calls return a clone of
/// the same handle (or the same error). Several daemons in one process (the in-process
/// daemon tests) so share one recorder, and each one's `/metrics` serves all its series.
pub fn install_metrics() -> Result<PrometheusHandle, String> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(
                        "retentiond_run_duration_seconds".into(),
                    ),
                    RUN_DURATION_BUCKETS,
                )
                .map_err(|e| e.to_string())?
                .install_recorder()
                .inspect(|_| crate::metrics::describe())
                .map_err(|e| format!("cannot install the metrics recorder: {e}"))
        })
        .clone()
}

struct AppState<R> {
    ready: Arc<R>,
    metrics: PrometheusHandle,
}

impl<R> Clone for AppState<R> {
    fn clone(&self) -> Self {
        Self {
            ready: self.ready.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// Serves until `shutdown`.
pub async fn serve<R: Readiness>(
    listener: tokio::net::TcpListener,
    ready: Arc<R>,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz::<R>))
        .route("/metrics", get(render_metrics::<R>))
        .with_state(AppState { ready, metrics });
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "http server failed");
    }
}

async fn render_metrics<R: Readiness>(State(s): State<AppState<R>>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

async fn readyz<R: Readiness>(State(s): State<AppState<R>>) -> impl IntoResponse {
    let problems = s.ready.problems().await;
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n{}\n", problems.join("\n")),
        )
    }
}
