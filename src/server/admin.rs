//! The admin listener: `/healthz`, `/readyz`, `/metrics`, `POST /reload`, and the operator
//! console (`/console/`, `/api/...`); all but `/healthz` and the static page behind the admin
//! token when one is set.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::broker::Broker;
use crate::metrics::Metrics;
use crate::spool::LocalStore;

/// Applies the config file anew; `Ok(hash)` or `Err(problems)`.
pub type ReloadFn =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync>;

/// What the admin handlers look at.
#[derive(Clone)]
pub struct AdminState {
    /// The broker link.
    pub broker: Broker,
    /// The spool.
    pub spool: LocalStore,
    /// Metrics to render.
    pub metrics: Arc<Metrics>,
    /// The reload action.
    pub reload: ReloadFn,
    /// The console API's state.
    pub console: crate::console::ConsoleState,
    /// The bearer token, when configured.
    pub token: crate::console::auth::AdminToken,
}

/// The admin router.
pub fn admin_router(state: AdminState) -> Router {
    let guarded = Router::new()
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/reload", post(reload))
        .with_state(state.clone())
        .merge(crate::console::api_router(state.console.clone()))
        .layer(axum::middleware::from_fn_with_state(
            state.token.clone(),
            crate::console::auth::require_token,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(crate::console::page_router())
        .merge(guarded)
}

/// Ready while accepted messages can be made safe: broker connected, or spool with room.
/// Redis failing does not make the instance unready (it degrades to local state), but shows.
async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    let stats = state.spool.stats();
    let broker_up = state.broker.live().is_some();
    let spool_room = state.spool.would_fit(64 * 1024);
    let body = json!({
        "broker": if broker_up { "connected" } else { "down" },
        "broker_error": state.broker.last_error(),
        "shared_state": if state.metrics.shared_state_degraded.get() == 1 { "degraded" } else { "ok" },
        "spool": { "depth": stats.depth, "bytes": stats.bytes, "max_bytes": state.spool.max_bytes(), "accepting": spool_room },
    });
    let status = if broker_up || spool_room {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    let stats = state.spool.stats();
    state.metrics.spool_depth.set(stats.depth as i64);
    state.metrics.spool_bytes.set(stats.bytes as i64);
    let now_ms = crate::durable::now_ms();
    state.metrics.spool_oldest_age_seconds.set(
        stats
            .oldest_spooled_at_ms
            .map_or(0, |at| (now_ms.saturating_sub(at) / 1000) as i64),
    );
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn reload(State(state): State<AdminState>) -> impl IntoResponse {
    match (state.reload)().await {
        Ok(hash) => (
            StatusCode::OK,
            Json(json!({"status": "applied", "hash": hash})),
        ),
        Err(problems) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"status": "refused", "problems": problems})),
        ),
    }
}
