//! Refusing a webhook request: one error type that becomes the right status and a short JSON
//! body, and tells the daemon's metrics why (through a response extension), so every
//! connector reports rejections the same way.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::inbound::AcceptError;

/// Why a request was refused; the label of the `reason` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Signature missing or wrong (403).
    BadSignature,
    /// Timestamp outside the replay window (403).
    StaleTimestamp,
    /// Body not understood (400).
    Malformed,
    /// Body too large (413).
    Oversize,
    /// Too many requests (429).
    RateLimited,
    /// Could not be made safe right now (503); the channel should retry.
    Unavailable,
}

impl RejectReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::BadSignature => "bad_signature",
            RejectReason::StaleTimestamp => "stale_timestamp",
            RejectReason::Malformed => "malformed",
            RejectReason::Oversize => "oversize",
            RejectReason::RateLimited => "rate_limited",
            RejectReason::Unavailable => "unavailable",
        }
    }

    /// The HTTP status the channel gets.
    pub fn status(self) -> StatusCode {
        match self {
            RejectReason::BadSignature | RejectReason::StaleTimestamp => StatusCode::FORBIDDEN,
            RejectReason::Malformed => StatusCode::BAD_REQUEST,
            RejectReason::Oversize => StatusCode::PAYLOAD_TOO_LARGE,
            RejectReason::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            RejectReason::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// A refused request: the status from its reason and `{"error": reason, "detail": ...}`.
/// The detail names what is wrong (a field, a limit) and never contains secrets or the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Why.
    pub reason: RejectReason,
    /// A short human-readable explanation.
    pub detail: String,
    /// Seconds the client should wait, for 429 and 503.
    pub retry_after_secs: Option<u64>,
}

impl Rejection {
    /// A rejection for `reason` explained by `detail`.
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
            retry_after_secs: None,
        }
    }
}

impl From<AcceptError> for Rejection {
    fn from(err: AcceptError) -> Self {
        match err {
            AcceptError::RateLimited { retry_after } => Rejection {
                reason: RejectReason::RateLimited,
                detail: "too many messages from this sender".to_owned(),
                retry_after_secs: Some(retry_after.as_secs().max(1)),
            },
            AcceptError::Unavailable(detail) => Rejection {
                reason: RejectReason::Unavailable,
                detail,
                retry_after_secs: Some(5),
            },
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": self.reason.as_str(), "detail": self.detail}));
        let mut response = (self.reason.status(), body).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response.extensions_mut().insert(RejectedBecause {
            reason: self.reason,
            detail: self.detail,
        });
        response
    }
}

/// Attached to every refused response so the daemon can count and log it once.
#[derive(Debug, Clone)]
pub struct RejectedBecause {
    /// Why.
    pub reason: RejectReason,
    /// The explanation that was sent.
    pub detail: String,
}
