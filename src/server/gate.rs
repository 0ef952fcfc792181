//! What every connector route passes through: counting, the connector-wide rate limit, the
//! body limit, and one log line and metric per refused request (also counted for the
//! console's view of how close the connector runs to its limits).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use switchboard_sdk::webhook::RejectedBecause;
use switchboard_sdk::{ChannelRef, ConnectorLimits, RejectReason, Rejection};
use tracing::Instrument;

use crate::metrics::{ConnectorLabels, Metrics};
use crate::observe::Observer;
use crate::request_id::RequestId;

/// One connector's gate.
pub struct Gate {
    labels: ConnectorLabels,
    limiter: DefaultDirectRateLimiter,
    max_body_bytes: usize,
    request_timeout: Duration,
    metrics: Arc<Metrics>,
    observer: Arc<Observer>,
    /// `kind:id`, the observer's key.
    connector: String,
}

impl Gate {
    /// The gate for `channel` with its `limits`.
    pub fn new(
        channel: &ChannelRef,
        limits: &ConnectorLimits,
        request_timeout: Duration,
        metrics: Arc<Metrics>,
        observer: Arc<Observer>,
    ) -> Self {
        let per_second = NonZeroU32::new(limits.inbound_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(limits.inbound_burst).unwrap_or(NonZeroU32::MIN);
        Self {
            labels: ConnectorLabels {
                channel: channel.kind.clone(),
                connector: channel.connector_id.clone(),
            },
            limiter: RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)),
            max_body_bytes: limits.max_body_bytes,
            request_timeout,
            metrics,
            observer,
            connector: format!("{}:{}", channel.kind, channel.connector_id),
        }
    }

    fn refused(&self, reason: RejectReason, detail: &str) {
        Metrics::count_reason(
            &self.metrics.rejections,
            &self.labels.channel,
            &self.labels.connector,
            reason.as_str(),
        );
        self.observer
            .rates
            .refused(&self.connector, reason.as_str());
        tracing::info!(
            channel = %self.labels.channel,
            connector = %self.labels.connector,
            reason = reason.as_str(),
            detail,
            "request refused"
        );
    }
}

/// The middleware.
pub async fn gate(State(gate): State<Arc<Gate>>, request: Request<Body>, next: Next) -> Response {
    gate.metrics.requests.get_or_create(&gate.labels).inc();
    gate.observer.rates.request(&gate.connector);
    if gate.limiter.check().is_err() {
        let rejection = Rejection {
            retry_after_secs: Some(1),
            ..Rejection::new(RejectReason::RateLimited, "connector request rate exceeded")
        };
        gate.refused(rejection.reason, &rejection.detail);
        return strip(rejection.into_response());
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > gate.max_body_bytes) {
        let rejection = Rejection::new(
            RejectReason::Oversize,
            format!("body larger than {} bytes", gate.max_body_bytes),
        );
        gate.refused(rejection.reason, &rejection.detail);
        return strip(rejection.into_response());
    }
    // The handler runs on its own task: when it overruns, the channel hears "retry later"
    // while the handler still finishes and records its outcome, so the retry is answered
    // from the dedupe record instead of publishing twice.
    // The spawned task keeps the request's id and span.
    let id = request
        .extensions()
        .get::<RequestId>()
        .cloned()
        .unwrap_or_else(RequestId::generate);
    let handler = tokio::spawn(
        id.scope(next.run(request))
            .instrument(tracing::Span::current()),
    );
    let response = match tokio::time::timeout(gate.request_timeout, handler).await {
        Ok(Ok(response)) => response,
        Ok(Err(join)) => {
            tracing::error!(error = %join, "request handler failed");
            let rejection = Rejection::new(RejectReason::Unavailable, "internal error");
            gate.refused(rejection.reason, &rejection.detail);
            return strip(rejection.into_response());
        }
        Err(_) => {
            let rejection = Rejection {
                retry_after_secs: Some(1),
                ..Rejection::new(RejectReason::Unavailable, "request took too long, retry")
            };
            gate.refused(rejection.reason, &rejection.detail);
            return strip(rejection.into_response());
        }
    };
    if let Some(because) = response.extensions().get::<RejectedBecause>() {
        gate.refused(because.reason, &because.detail);
        return strip(response);
    }
    // Refusals that did not come through a connector's Rejection (axum's own extractors).
    let reason = match response.status() {
        StatusCode::PAYLOAD_TOO_LARGE => Some(RejectReason::Oversize),
        StatusCode::BAD_REQUEST
        | StatusCode::UNPROCESSABLE_ENTITY
        | StatusCode::UNSUPPORTED_MEDIA_TYPE => Some(RejectReason::Malformed),
        _ => None,
    };
    if let Some(reason) = reason {
        gate.refused(reason, "refused by the request parser");
    }
    response
}

/// The extension has done its job once counted.
fn strip(mut response: Response) -> Response {
    response.extensions_mut().remove::<RejectedBecause>();
    response
}
