//! `POST /messages`: a signed JSON message from the app backend, checked and handed to the
//! pipeline.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_sdk::reqwest::Url;
use switchboard_sdk::signature::{TimestampError, check_timestamp, verify_timestamped};
use switchboard_sdk::time::OffsetDateTime;
use switchboard_sdk::{Content, Inbound, InboundMessage, RejectReason, Rejection, Secret};

use crate::{SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// Longest `message_id`, `user_id` and `customer_id`, in characters.
pub const MAX_ID_CHARS: usize = 128;
/// Longest text message, in characters.
pub const MAX_TEXT_CHARS: usize = 4000;
/// Longest `display_name` and `phone`, in characters.
const MAX_NAME_CHARS: usize = 256;

/// Content types an app may send; voice, video and call have no app wire form yet.
const ACCEPTED_CONTENT_TYPES: [&str; 6] = ["text", "image", "location", "event", "link", "file"];

/// What the inbound handler needs, shared by every request.
pub(crate) struct InboundSettings {
    /// The connector id, for logs.
    pub connector_id: String,
    /// The shared HMAC key.
    pub signing_key: Secret,
    /// Allowed timestamp distance, seconds.
    pub replay_window_secs: i64,
    /// Keep the posted JSON as `raw`.
    pub keep_raw: bool,
    /// The time replay checks compare against.
    pub clock: fn() -> OffsetDateTime,
}

/// The body an app backend posts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppMessage {
    /// The backend's message id; the dedupe key.
    message_id: String,
    /// The app user's id.
    user_id: String,
    /// Name shown to agents.
    #[serde(default)]
    display_name: Option<String>,
    /// Phone number.
    #[serde(default)]
    phone: Option<String>,
    /// The backend's customer id.
    #[serde(default)]
    customer_id: Option<String>,
    // Kept as JSON until its `type` is known to be one an app may send, so an unsupported
    // type gets its own clear answer.
    content: Value,
}

/// Why a request is refused; each maps onto one [`RejectReason`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InboundError {
    /// A header of the signature scheme is absent or not text.
    #[error("missing or unreadable {0} header")]
    MissingHeader(&'static str),
    /// The signature does not match the timestamp and body.
    #[error("signature does not match")]
    BadSignature,
    /// The timestamp is signed but is not unix seconds.
    #[error("{TIMESTAMP_HEADER} is not unix seconds")]
    BadTimestamp,
    /// The timestamp is outside the replay window.
    #[error("timestamp is {skew} s away from now, the window is {window} s")]
    Stale {
        /// Now minus the timestamp.
        skew: i64,
        /// The configured window.
        window: i64,
    },
    /// The body is not JSON or does not have the message shape.
    #[error("{0}")]
    Malformed(String),
    /// A field is present but its value is not acceptable.
    #[error("{field}: {problem}")]
    Invalid {
        /// The field's path in the body (`user_id`, `content.latitude`).
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

impl From<InboundError> for Rejection {
    fn from(err: InboundError) -> Self {
        let reason = match err {
            InboundError::MissingHeader(_)
            | InboundError::BadSignature
            | InboundError::BadTimestamp => RejectReason::BadSignature,
            InboundError::Stale { .. } => RejectReason::StaleTimestamp,
            InboundError::Malformed(_) | InboundError::Invalid { .. } => RejectReason::Malformed,
        };
        Rejection::new(reason, err.to_string())
    }
}

fn invalid(field: &'static str, problem: impl Into<String>) -> InboundError {
    InboundError::Invalid {
        field,
        problem: problem.into(),
    }
}

/// The `POST /messages` handler.
pub(crate) async fn post_message(
    State((settings, inbound)): State<(Arc<InboundSettings>, Inbound)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let message = match check_request(&settings, &headers, &body) {
        Ok(message) => message,
        Err(err) => return refuse(&settings.connector_id, Rejection::from(err)),
    };
    let message_id = message.dedupe_key.clone();
    let user_id = message.channel_user_id.clone();
    let phone = message.phone.as_deref().map(mask_phone);
    match inbound.accept(message).await {
        Ok(accepted) => {
            tracing::debug!(
                connector = %settings.connector_id,
                message_id = %message_id,
                user_id = %user_id,
                phone = phone.as_deref().unwrap_or("-"),
                envelope_id = %accepted.envelope_id,
                duplicate = accepted.duplicate,
                "app message accepted"
            );
            Json(json!({
                "status": "accepted",
                "envelope_id": accepted.envelope_id,
                "duplicate": accepted.duplicate,
            }))
            .into_response()
        }
        Err(err) => refuse(&settings.connector_id, Rejection::from(err)),
    }
}

fn refuse(connector_id: &str, rejection: Rejection) -> Response {
    // The detail is built from field names and our own words, never from body values, so it
    // is safe to log; the body itself is never logged.
    tracing::info!(
        connector = %connector_id,
        reason = rejection.reason.as_str(),
        detail = %rejection.detail,
        "app message refused"
    );
    rejection.into_response()
}

/// Authenticates the request, then parses and checks the body, in that order so nothing
/// unauthenticated is ever parsed.
pub(crate) fn check_request(
    settings: &InboundSettings,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<InboundMessage, InboundError> {
    authenticate(settings, headers, body)?;
    parse_message(body, settings.keep_raw)
}

/// Checks the signature headers against the body and the replay window: the same scheme
/// for every route of the connector.
pub(crate) fn authenticate(
    settings: &InboundSettings,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), InboundError> {
    let timestamp = header(headers, TIMESTAMP_HEADER)?;
    let signature = header(headers, SIGNATURE_HEADER)?;
    if !verify_timestamped(
        settings.signing_key.expose().as_bytes(),
        timestamp,
        body,
        signature,
    ) {
        return Err(InboundError::BadSignature);
    }
    match check_timestamp(timestamp, (settings.clock)(), settings.replay_window_secs) {
        Ok(_) => {}
        Err(TimestampError::Malformed) => return Err(InboundError::BadTimestamp),
        Err(TimestampError::OutsideWindow(skew)) => {
            return Err(InboundError::Stale {
                skew,
                window: settings.replay_window_secs,
            });
        }
    }
    Ok(())
}

fn header<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<&'h str, InboundError> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.trim().is_empty())
        .ok_or(InboundError::MissingHeader(name))
}

/// Parses an authenticated body into the message the pipeline takes.
pub(crate) fn parse_message(body: &[u8], keep_raw: bool) -> Result<InboundMessage, InboundError> {
    let value: Value = serde_json::from_slice(body).map_err(|err| {
        InboundError::Malformed(format!(
            "body is not valid JSON (line {}, column {})",
            err.line(),
            err.column()
        ))
    })?;
    // Checked here because serde would also take a struct written as an array.
    if !value.is_object() {
        return Err(InboundError::Malformed(
            "body must be a JSON object".to_owned(),
        ));
    }
    let raw = keep_raw.then(|| value.clone());
    let wire: AppMessage = serde_path_to_error::deserialize(value)
        .map_err(|err| InboundError::Malformed(describe_json_error(&err)))?;

    check_id("message_id", &wire.message_id)?;
    check_user_id(&wire.user_id)?;
    let display_name = optional_field("display_name", wire.display_name, MAX_NAME_CHARS)?;
    let phone = optional_field("phone", wire.phone, MAX_NAME_CHARS)?;
    let customer_id = optional_field("customer_id", wire.customer_id, MAX_ID_CHARS)?;
    let content = parse_content(wire.content)?;

    Ok(InboundMessage {
        channel_user_id: wire.user_id,
        display_name,
        phone,
        customer_id,
        tier: None,
        content,
        dedupe_key: wire.message_id,
        raw,
    })
}

/// A `user_id`: an id without whitespace, since it is part of conversation ids and keys.
pub(crate) fn check_user_id(user_id: &str) -> Result<(), InboundError> {
    check_id("user_id", user_id)?;
    if user_id.chars().any(char::is_whitespace) {
        return Err(invalid("user_id", "must not contain whitespace"));
    }
    Ok(())
}

fn check_id(field: &'static str, value: &str) -> Result<(), InboundError> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.chars().count() > MAX_ID_CHARS {
        return Err(invalid(
            field,
            format!("must be at most {MAX_ID_CHARS} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// An optional text field: empty counts as absent; otherwise bounded and printable.
fn optional_field(
    field: &'static str,
    value: Option<String>,
    max_chars: usize,
) -> Result<Option<String>, InboundError> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if value.chars().count() > max_chars {
        return Err(invalid(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(Some(value))
}

fn parse_content(value: Value) -> Result<Content, InboundError> {
    let kind = match value.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => return Err(invalid("content.type", "must be a string")),
        None if value.is_object() => return Err(invalid("content.type", "is missing")),
        None => return Err(invalid("content", "must be an object")),
    };
    if !ACCEPTED_CONTENT_TYPES.contains(&kind) {
        let shown: String = kind.chars().take(32).collect();
        return Err(invalid(
            "content.type",
            format!(
                "{shown:?} is not accepted from an app (one of: {})",
                ACCEPTED_CONTENT_TYPES.join(", ")
            ),
        ));
    }
    let content: Content = serde_path_to_error::deserialize(value).map_err(|err| {
        InboundError::Malformed(format!("content: {}", describe_json_error(&err)))
    })?;
    check_content(&content)?;
    Ok(content)
}

fn check_content(content: &Content) -> Result<(), InboundError> {
    match content {
        Content::Text { text, .. } => {
            if text.trim().is_empty() {
                return Err(invalid("content.text", "must not be empty"));
            }
            if text.chars().count() > MAX_TEXT_CHARS {
                return Err(invalid(
                    "content.text",
                    format!("must be at most {MAX_TEXT_CHARS} characters"),
                ));
            }
        }
        Content::Image { url, .. } => match url {
            Some(url) => check_url("content.url", url)?,
            None => return Err(invalid("content.url", "is required for an image")),
        },
        Content::Location {
            latitude,
            longitude,
            ..
        } => {
            if !(-90.0..=90.0).contains(latitude) {
                return Err(invalid("content.latitude", "must be between -90 and 90"));
            }
            if !(-180.0..=180.0).contains(longitude) {
                return Err(invalid("content.longitude", "must be between -180 and 180"));
            }
        }
        Content::Event { name, .. } => {
            if name.trim().is_empty() {
                return Err(invalid("content.name", "must not be empty"));
            }
        }
        // Agents open these in a browser: only web links, never javascript: or file: ones.
        Content::Link { url, .. } | Content::File { url, .. } => check_url("content.url", url)?,
        Content::Voice { .. } | Content::Video { .. } | Content::Call { .. } => {
            return Err(invalid("content.type", "is not accepted from an app"));
        }
    }
    Ok(())
}

fn check_url(field: &'static str, raw: &str) -> Result<(), InboundError> {
    let url = Url::parse(raw).map_err(|_| invalid(field, "is not an absolute url"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(field, "must be an http or https url"));
    }
    Ok(())
}

/// Describes a JSON error by the field's path and serde's words, without echoing values from
/// the body (serde quotes the unexpected value, which could be a phone number or a message).
fn describe_json_error(err: &serde_path_to_error::Error<serde_json::Error>) -> String {
    // Deserialized from a parsed value, so serde_json adds no position: the path is the
    // position.
    let message = err.inner().to_string();
    let message = without_quoted_value(&message);
    let path = err.path().to_string();
    if path == "." || path.is_empty() {
        message
    } else {
        format!("{path}: {message}")
    }
}

/// Turns "invalid type: string \"x\", expected f64" into "invalid type: string, expected f64".
pub(crate) fn without_quoted_value(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some(expected_at) = rest.rfind(", expected ")
        {
            let unexpected = &rest[..expected_at];
            let kind = unexpected
                .split(['`', '"'])
                .next()
                .unwrap_or(unexpected)
                .trim_end();
            return format!("{prefix}{kind}{}", &rest[expected_at..]);
        }
    }
    message.to_owned()
}

/// Masks a phone number for logs, keeping the last four characters.
pub(crate) fn mask_phone(phone: &str) -> String {
    let count = phone.chars().count();
    if count <= 4 {
        return "***".to_owned();
    }
    let tail: String = phone.chars().skip(count - 4).collect();
    format!("***{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_are_masked_to_their_last_four_digits() {
        assert_eq!(mask_phone("+8613800138000"), "***8000");
        assert_eq!(mask_phone("1234"), "***");
        assert_eq!(mask_phone(""), "***");
        assert_eq!(mask_phone("电话号码是一二三四五"), "***二三四五");
    }

    #[test]
    fn json_errors_name_the_field_and_hide_the_value() {
        let cases: [(&str, &str, &str); 6] = [
            (
                r#"{"message_id":"m","content":{"type":"text","text":"x"}}"#,
                "missing field `user_id`",
                "",
            ),
            (
                r#"{"message_id":"m","user_id":"u","phone":8613800138000,"content":{}}"#,
                "phone: invalid type: integer, expected a string",
                "8613800138000",
            ),
            (
                r#"{"message_id":"m","user_id":"u","content":{}, "extra_field":1}"#,
                "unknown field `extra_field`",
                "",
            ),
            (
                r#"{"message_id":"m","user_id":"u","content":{"type":"location","latitude":"north","longitude":1}}"#,
                // Content is internally tagged, so serde cannot say which field inside it.
                "content: invalid type: string, expected f64",
                "north",
            ),
            (r#"{"message_id":"#, "body is not valid JSON", ""),
            (
                r#"["m","u",null,null,null,{"type":"text","text":"x"}]"#,
                "JSON object",
                "",
            ),
        ];
        for (body, wanted, hidden) in cases {
            let err = parse_message(body.as_bytes(), false).unwrap_err();
            let detail = err.to_string();
            assert!(
                detail.contains(wanted),
                "{body}: {detail:?} lacks {wanted:?}"
            );
            if !hidden.is_empty() {
                assert!(
                    !detail.contains(hidden),
                    "{body}: {detail:?} shows the value"
                );
            }
        }
    }

    #[test]
    fn empty_optional_fields_count_as_absent() {
        let body = br#"{"message_id":"m","user_id":"u","display_name":"","phone":"",
            "content":{"type":"text","text":"hi"}}"#;
        let message = parse_message(body, false).unwrap();
        assert_eq!(message.display_name, None);
        assert_eq!(message.phone, None);
    }

    #[test]
    fn every_accepted_content_type_parses() {
        let contents = [
            json!({"type": "text", "text": "where is my parcel"}),
            json!({"type": "image", "url": "https://cdn.example.com/a.jpg", "caption": "box"}),
            json!({"type": "location", "latitude": -90.0, "longitude": 180.0}),
            json!({"type": "event", "name": "opened_order_page", "key": "o-1"}),
            json!({"type": "link", "url": "http://example.com/o/1", "title": "order"}),
            json!({"type": "file", "url": "https://cdn.example.com/r.pdf", "name": "r.pdf"}),
        ];
        for content in contents {
            let body = json!({"message_id": "m", "user_id": "u", "content": content.clone()});
            let message = parse_message(body.to_string().as_bytes(), false)
                .unwrap_or_else(|e| panic!("{content}: {e}"));
            assert_eq!(serde_json::to_value(&message.content).unwrap(), content);
        }
    }

    #[test]
    fn semantic_checks_name_their_field() {
        let long_text = "字".repeat(MAX_TEXT_CHARS + 1);
        let cases = [
            (json!({"type": "text", "text": "  "}), "content.text"),
            (json!({"type": "text", "text": long_text}), "content.text"),
            (json!({"type": "image"}), "content.url"),
            (
                json!({"type": "image", "url": "ftp://x/a.jpg"}),
                "content.url",
            ),
            (
                json!({"type": "image", "url": "/relative.jpg"}),
                "content.url",
            ),
            (
                json!({"type": "link", "url": "javascript:alert(1)"}),
                "content.url",
            ),
            (
                json!({"type": "file", "url": "file:///etc/passwd"}),
                "content.url",
            ),
            (
                json!({"type": "location", "latitude": 90.5, "longitude": 0}),
                "content.latitude",
            ),
            (
                json!({"type": "location", "latitude": 0, "longitude": -181}),
                "content.longitude",
            ),
            (json!({"type": "event", "name": ""}), "content.name"),
            (
                json!({"type": "voice", "url": "https://x/a.amr"}),
                "content.type",
            ),
            (json!({"type": "call", "event": "ringing"}), "content.type"),
            (json!({"text": "no type"}), "content.type"),
            (json!({"type": 5}), "content.type"),
            (json!("hello"), "content"),
        ];
        for (content, field) in cases {
            let body = json!({"message_id": "m", "user_id": "u", "content": content.clone()});
            match parse_message(body.to_string().as_bytes(), false) {
                Err(InboundError::Invalid { field: got, .. }) => {
                    assert_eq!(got, field, "{content}")
                }
                other => panic!("{content}: expected invalid {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn id_checks_name_their_field() {
        let long = "m".repeat(MAX_ID_CHARS + 1);
        let cases = [
            ("", "u", "message_id"),
            (long.as_str(), "u", "message_id"),
            ("m\n1", "u", "message_id"),
            ("m", "", "user_id"),
            ("m", "u 42", "user_id"),
            ("m", "u\u{7}", "user_id"),
        ];
        for (message_id, user_id, field) in cases {
            let body = json!({"message_id": message_id, "user_id": user_id,
                "content": {"type": "text", "text": "hi"}});
            match parse_message(body.to_string().as_bytes(), false) {
                Err(InboundError::Invalid { field: got, .. }) => {
                    assert_eq!(got, field, "{message_id:?}/{user_id:?}")
                }
                other => panic!("expected invalid {field}, got {other:?}"),
            }
        }
        let exactly_max = json!({"message_id": "m".repeat(MAX_ID_CHARS), "user_id": "u",
            "content": {"type": "text", "text": "hi"}});
        assert!(parse_message(exactly_max.to_string().as_bytes(), false).is_ok());
    }
}
