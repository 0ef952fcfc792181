//! Refusing a webhook request: one error type that becomes the right status and a short JSON
//! body, and tells the daemon's metrics why (through a response extension), so every
//! connector reports rejections the same way. Also [`FormParams`], for the form-encoded
//! bodies and query strings providers send.

use axum::Json;
use axum::http::{StatusCode, Uri};
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
    /// A long-lived connection sent frames faster than allowed and was closed (429).
    Flood,
    /// A long-lived connection was silent too long and was closed (408).
    IdleTimeout,
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
            RejectReason::Flood => "flood",
            RejectReason::IdleTimeout => "idle_timeout",
        }
    }

    /// The HTTP status the channel gets.
    pub fn status(self) -> StatusCode {
        match self {
            RejectReason::BadSignature | RejectReason::StaleTimestamp => StatusCode::FORBIDDEN,
            RejectReason::Malformed => StatusCode::BAD_REQUEST,
            RejectReason::Oversize => StatusCode::PAYLOAD_TOO_LARGE,
            RejectReason::RateLimited | RejectReason::Flood => StatusCode::TOO_MANY_REQUESTS,
            RejectReason::IdleTimeout => StatusCode::REQUEST_TIMEOUT,
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

/// The parameters of a form-encoded webhook body or a query string, in the order they came.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormParams(pub Vec<(String, String)>);

impl FormParams {
    /// Decodes an `application/x-www-form-urlencoded` body.
    pub fn parse(body: &[u8]) -> Self {
        Self(
            url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// Decodes the query string of `uri` (none is an empty set).
    pub fn from_query(uri: &Uri) -> Self {
        Self::parse(uri.query().unwrap_or_default().as_bytes())
    }

    /// The first value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of `name`, if present and not blank.
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.trim().is_empty())
    }

    /// The parameters as a JSON object (first value of each name), for `raw` capture.
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for (k, v) in &self.0 {
            map.entry(k.clone())
                .or_insert_with(|| serde_json::Value::String(v.clone()));
        }
        serde_json::Value::Object(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_params_decode_plus_and_percent() {
        let params = FormParams::parse(b"Body=Hello+world%21&From=%2B8613812345678&Empty=");
        assert_eq!(params.get("Body"), Some("Hello world!"));
        assert_eq!(params.get("From"), Some("+8613812345678"));
        assert_eq!(params.get("Empty"), Some(""));
        assert_eq!(params.non_empty("Empty"), None);
        assert_eq!(params.get("Missing"), None);
    }

    #[test]
    fn a_query_string_decodes_like_a_body() {
        let uri: Uri = "/status?reply_id=r%201&step=menu&step=again"
            .parse()
            .unwrap_or_default();
        let params = FormParams::from_query(&uri);
        assert_eq!(params.get("reply_id"), Some("r 1"));
        assert_eq!(params.get("step"), Some("menu"), "the first value wins");
        let bare: Uri = "/status".parse().unwrap_or_default();
        assert_eq!(FormParams::from_query(&bare), FormParams::default());
    }
}
