//! The HTTP surface: the public listener mounting every connector under `/{kind}/{id}`, and
//! the admin listener (health, readiness, metrics, reload).

mod admin;
mod gate;
pub mod tls;

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use axum::response::Response;
use switchboard_sdk::{ChannelRef, Connector, Inbound, InboundSink};
use tower::ServiceExt;
use tracing::Instrument;

pub use admin::{AdminState, ReloadFn, admin_router};

use crate::live::LiveSet;
use crate::metrics::Metrics;
use crate::request_id::{self, RequestId};

/// Mounts each connector's routes under `/{kind}/{id}`, behind its gate (request counting,
/// connector rate limit, body limit, rejection accounting).
pub fn connector_router(
    connectors: &[Arc<dyn Connector>],
    sink: Arc<dyn InboundSink>,
    request_timeout: std::time::Duration,
    metrics: Arc<Metrics>,
    observer: Arc<crate::observe::Observer>,
) -> Router {
    let mut router = Router::new();
    for connector in connectors {
        let channel = ChannelRef {
            kind: connector.kind().to_owned(),
            connector_id: connector.id().to_owned(),
        };
        let limits = connector.limits().clone();
        let gate = gate::Gate::new(
            &channel,
            &limits,
            request_timeout,
            metrics.clone(),
            observer.clone(),
        );
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
    Router::new().fallback(move |mut request: Request<Body>| {
        trim_trailing_slash(&mut request);
        let router = live.load().router.clone();
        let id = RequestId::from_headers(request.headers());
        request.extensions_mut().insert(id.clone());
        let span = tracing::info_span!("request", request_id = %id);
        async move {
            let mut response: Response = id
                .clone()
                .scope(router.oneshot(request))
                .await
                .unwrap_or_else(|never| match never {});
            response
                .headers_mut()
                .insert(request_id::HEADER, id.header_value());
            response
        }
        .instrument(span)
    })
}

/// `/webchat/{id}/` and `/webchat/{id}` name the same page; routers nested under a
/// connector's prefix only know the form without the slash.
fn trim_trailing_slash(request: &mut Request<Body>) {
    let uri = request.uri();
    let path = uri.path();
    if path.len() <= 1 || !path.ends_with('/') {
        return;
    }
    let trimmed = path.trim_end_matches('/');
    let path_and_query = match uri.query() {
        Some(query) => format!("{trimmed}?{query}"),
        None => trimmed.to_owned(),
    };
    if let Ok(path_and_query) = path_and_query.parse() {
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = Some(path_and_query);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_slashes_are_trimmed_and_queries_kept() {
        let mut request = Request::builder()
            .uri("/webchat/site/?lang=zh")
            .body(Body::empty())
            .unwrap();
        trim_trailing_slash(&mut request);
        assert_eq!(request.uri(), "/webchat/site?lang=zh");
        let mut root = Request::builder().uri("/").body(Body::empty()).unwrap();
        trim_trailing_slash(&mut root);
        assert_eq!(root.uri(), "/");
    }
}
