//! The operator console on the admin listener: a JSON API under `/api/` (links, queues,
//! live tail, try-it, dead letters, statistics, spool; documented in docs/admin-api.md) and
//! the page at `/console/` that uses it. The CLI twins (`switchboard tap`, `dead`, `spool`)
//! talk to the same API through [`client`].

mod assets;
pub mod auth;
pub mod client;
mod dead;
mod links;
pub mod management;
mod queues;
mod tap;
mod try_it;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use switchboard_sdk::{Event, KvStore};

use crate::broker::{Broker, OutgoingMessage};
use crate::config::{Config, OverflowConfig, QueueConfig};
use crate::live::LiveSet;
use crate::metrics::Metrics;
use crate::observe::Observer;
use crate::observe::stats;
use crate::spool::LocalStore;
use management::{Management, ManagementError};

/// What of the config the console shows; replaced on reload.
#[derive(Debug, Clone)]
pub struct View {
    /// Agent queues.
    pub queues: Vec<QueueConfig>,
    /// Overflow rules.
    pub overflow: Vec<OverflowConfig>,
    /// The broker's management API, or why there is none.
    pub management: Arc<Result<Management, ManagementError>>,
}

impl View {
    /// The view of `config`.
    pub fn from_config(config: &Config) -> Self {
        Self {
            queues: config.queues.clone(),
            overflow: config.routing.overflow.clone(),
            management: Arc::new(Management::from_config(&config.broker)),
        }
    }
}

/// AMQP names the console reads and writes.
#[derive(Debug, Clone)]
pub struct Names {
    /// Inbound topic exchange (try-it binds to it).
    pub inbound: String,
    /// Outbound direct exchange (try-it replies go there).
    pub outbound: String,
    /// Events exchange (audit events).
    pub events: String,
    /// Dead-letter queue.
    pub dead: String,
}

/// What the console handlers look at.
#[derive(Clone)]
pub struct ConsoleState {
    /// The broker link.
    pub broker: Broker,
    /// The spool.
    pub spool: LocalStore,
    /// Metrics (reconnect counts).
    pub metrics: Arc<Metrics>,
    /// Tail, rates and statistics.
    pub observer: Arc<Observer>,
    /// The inbound pipeline (its policy's circuit breakers).
    pub pipeline: Arc<crate::pipeline::Pipeline>,
    /// The connectors in force.
    pub live: Arc<ArcSwap<LiveSet>>,
    /// Queues and overflow rules in force.
    pub view: Arc<ArcSwap<View>>,
    /// The shared store, and whether it is Redis.
    pub kv: Arc<dyn KvStore>,
    /// Whether `kv` is Redis.
    pub redis: bool,
    /// AMQP names.
    pub names: Names,
    /// Publisher confirm deadline.
    pub confirm_timeout: Duration,
}

/// The API and the page; the caller puts the API behind the token.
pub fn api_router(state: ConsoleState) -> Router {
    Router::new()
        .route("/api/links", get(links::links))
        .route("/api/queues", get(queues::queues))
        .route("/api/tap", get(tap::tap))
        .route("/api/try/{queue}", get(try_it::consume))
        .route("/api/reply", post(try_it::reply))
        .route("/api/dead", get(dead::list))
        .route("/api/dead/replay", post(dead::replay_matching))
        .route("/api/dead/{id}", get(dead::show).delete(dead::discard))
        .route("/api/dead/{id}/replay", post(dead::replay_one))
        .route("/api/stats", get(stats_json))
        .route("/api/stats.csv", get(stats_csv))
        .route("/api/spool", get(spool))
        .with_state(state)
}

/// The static console page (no data in it, so no token needed to load it).
pub fn page_router() -> Router {
    assets::router()
}

/// A JSON error body.
pub(crate) fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, axum::Json(json!({ "error": message.to_string() }))).into_response()
}

#[derive(Deserialize)]
struct DaysQuery {
    days: Option<u32>,
}

async fn stats_json(State(state): State<ConsoleState>, Query(q): Query<DaysQuery>) -> Response {
    let days = state
        .observer
        .stats
        .days(q.days.unwrap_or(7).clamp(1, 31))
        .await;
    axum::Json(json!({ "days": days })).into_response()
}

async fn stats_csv(State(state): State<ConsoleState>, Query(q): Query<DaysQuery>) -> Response {
    let days = state
        .observer
        .stats
        .days(q.days.unwrap_or(7).clamp(1, 31))
        .await;
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"switchboard-stats.csv\"",
            ),
        ],
        stats::csv(&days),
    )
        .into_response()
}

/// The spool as `switchboard spool status` shows it.
pub(crate) fn spool_json(state: &ConsoleState) -> serde_json::Value {
    let stats = state.spool.stats();
    let now = crate::durable::now_ms();
    json!({
        "depth": stats.depth,
        "bytes": stats.bytes,
        "max_bytes": state.spool.max_bytes(),
        "oldest_age_secs": stats.oldest_spooled_at_ms.map(|at| now.saturating_sub(at) / 1000),
        "broker_connected": state.broker.live().is_some(),
    })
}

async fn spool(State(state): State<ConsoleState>) -> Response {
    axum::Json(spool_json(&state)).into_response()
}

/// Publishes an audit event of an operator's action on the events exchange.
pub(crate) async fn audit(
    state: &ConsoleState,
    kind: &str,
    data: serde_json::Map<String, serde_json::Value>,
) -> Result<(), String> {
    let mut event = Event::new(kind);
    event.data = data;
    let body = serde_json::to_string(&event).map_err(|e| e.to_string())?;
    let message = OutgoingMessage {
        exchange: state.names.events.clone(),
        routing_key: kind.to_owned(),
        message_id: event.id.clone(),
        priority: None,
        headers: vec![(
            "x-schema".to_owned(),
            switchboard_sdk::event::EVENT_SCHEMA.to_owned(),
        )],
        body,
        mandatory: false,
    };
    publish(state, &message).await
}

/// Publishes with a confirm, straight to the broker (the console acts only while connected).
pub(crate) async fn publish(state: &ConsoleState, message: &OutgoingMessage) -> Result<(), String> {
    let live = state.broker.live().ok_or("broker not connected")?;
    let confirm = live.publish(message).await.map_err(|e| e.to_string())?;
    crate::broker::confirmed(confirm, state.confirm_timeout)
        .await
        .map_err(|e| e.to_string())
}
