//! The HTTP surface: the public listener mounting every connector under `/{kind}/{id}`, and
//! the admin listener (health, readiness, metrics, reload).

mod admin;
mod gate;

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use axum::response::Response;
use switchboard_sdk::{ChannelRef, Connector, Inbound, InboundSink};
use tower::ServiceExt;

pub use admin::{AdminState, ReloadFn, admin_router};

use crate::live::LiveSet;
use crate::metrics::Metrics;

/// Mounts each connector's routes under `/{kind}/{id}`, behind its gate (request counting,
/// connector rate limit, body limit, rejection accounting).
pub fn connector_router(
    connectors: &[Arc<dyn Connector>],
    sink: Arc<dyn InboundSink>,
    request_timeout: std::time::Duration,
    metrics: Arc<Metrics>,
) -> Router {
    let mut router = Router::new();
    for connector in connectors {
        let channel = ChannelRef {
            kind: connector.kind().to_owned(),
            connector_id: connector.id().to_owned(),
        };
        let limits = connector.limits().clone();
        let gate = gate::Gate::new(&channel, &limits, request_timeout, metrics.clone());
        let routes = connector
            .routes(Inbound::new(sink.clone(), channel.clone()))
            .layer(DefaultBodyLimit::max(limits.max_body_bytes))
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(gate),
                gate::gate,
            ));
        router = router.nest(
            &format!("/{}/{}", channel.kind, channel.connector_id),
            routes,
        );
    }
    router
}

/// The public app: every request goes to the router of the connector set in force, so a
/// reload swaps connectors without closing the listener or live connections.
pub fn public_router(live: Arc<ArcSwap<LiveSet>>) -> Router {
    Router::new().fallback(move |request: Request<Body>| {
        let router = live.load().router.clone();
        async move {
            let response: Response = router
                .oneshot(request)
                .await
                .unwrap_or_else(|never| match never {});
            response
        }
    })
}
