//! How a reply reaches the app backend: its signed webhook, behind [`ReplyTransport`]. Push
//! notifications to devices (FCM, APNs, JPush) are the `push` module's; it calls this
//! transport for the backend's copy and while the user is in the app.

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;
use switchboard_sdk::connector::{parse_retry_after, read_capped, transport_text};
use switchboard_sdk::reqwest::{self, Url, header};
use switchboard_sdk::signature::sign_timestamped;
use switchboard_sdk::text::truncate_chars;
use switchboard_sdk::time::OffsetDateTime;
use switchboard_sdk::{Delivered, DeliveryError, Reply, Secret};

use crate::{SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// Longest error text taken from a webhook answer, in characters.
pub const MAX_ERROR_TEXT_CHARS: usize = 200;
/// Most of a webhook answer we read; a backend's answer is a few bytes of JSON.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// One way of getting a reply to an app user.
#[async_trait]
pub(crate) trait ReplyTransport: Send + Sync + 'static {
    /// A short name for logs (`webhook`).
    fn name(&self) -> &'static str;

    /// Sends `reply` to the app user `user_id` and classifies the outcome.
    async fn send(&self, user_id: &str, reply: &Reply) -> Result<Delivered, DeliveryError>;
}

/// What the webhook receives.
#[derive(Debug, Serialize)]
pub(crate) struct WebhookBody<'a> {
    /// The recipient's `user_id`, as the app sent it inbound.
    pub user_id: &'a str,
    /// The reply exactly as the helpdesk published it.
    pub reply: &'a Reply,
}

/// Posts replies to the app backend, signed like the backend signs its messages to us.
pub(crate) struct WebhookTransport {
    /// The daemon's shared client.
    pub http: reqwest::Client,
    /// `webhook.url`.
    pub url: Url,
    /// `webhook.timeout_ms`, applied per request.
    pub timeout: Duration,
    /// The key both directions sign with.
    pub signing_key: Secret,
    /// The time put in `X-Switchboard-Timestamp`.
    pub clock: fn() -> OffsetDateTime,
}

#[async_trait]
impl ReplyTransport for WebhookTransport {
    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn send(&self, user_id: &str, reply: &Reply) -> Result<Delivered, DeliveryError> {
        let body = serde_json::to_vec(&WebhookBody { user_id, reply }).map_err(|err| {
            DeliveryError::Permanent {
                code: "unserializable_reply".to_owned(),
                text: err.to_string(),
            }
        })?;
        let timestamp = (self.clock)().unix_timestamp().to_string();
        let signature = sign_timestamped(self.signing_key.expose().as_bytes(), &timestamp, &body);
        let response = self
            .http
            .post(self.url.clone())
            .timeout(self.timeout)
            .header(header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp)
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
            .map_err(|err| self.transport_error(err))?;
        let status = response.status().as_u16();
        let retry_after = parse_retry_after(response.headers().get(header::RETRY_AFTER));
        let answer = read_capped(response, MAX_ANSWER_BYTES)
            .await
            .map_err(|err| self.transport_error(err))?;
        classify(status, &answer, retry_after)
    }
}

impl WebhookTransport {
    fn transport_error(&self, err: reqwest::Error) -> DeliveryError {
        // The url may carry a token in its query; transport_text leaves it out of logs and
        // events.
        let text = if err.is_timeout() {
            format!(
                "webhook did not answer within {} ms",
                self.timeout.as_millis()
            )
        } else {
            transport_text(err)
        };
        DeliveryError::Retryable {
            code: None,
            text,
            retry_after: None,
        }
    }
}

/// Classifies the webhook's answer. A 2xx whose JSON carries an `error` is a failure: the
/// backend took the request but could not hand the reply on.
pub(crate) fn classify(
    status: u16,
    answer: &[u8],
    retry_after: Option<Duration>,
) -> Result<Delivered, DeliveryError> {
    match status {
        200..=299 => classify_success_body(answer, retry_after),
        429 => Err(DeliveryError::RateLimited { retry_after }),
        408 | 500..=599 => Err(DeliveryError::Retryable {
            code: Some(format!("http_{status}")),
            text: excerpt(answer),
            retry_after,
        }),
        _ => Err(DeliveryError::Permanent {
            code: format!("http_{status}"),
            text: excerpt(answer),
        }),
    }
}

fn classify_success_body(
    answer: &[u8],
    retry_after: Option<Duration>,
) -> Result<Delivered, DeliveryError> {
    // An empty or non-JSON 2xx still means the backend took the reply; it just gave no id.
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(answer) else {
        return Ok(Delivered::default());
    };
    match body.get("error") {
        None | Some(Value::Null) => Ok(Delivered {
            channel_message_id: body.get("message_id").and_then(message_id),
        }),
        Some(Value::Object(error)) => {
            let code = error
                .get("code")
                .and_then(Value::as_str)
                .filter(|code| !code.is_empty())
                .unwrap_or("app_error");
            let code = truncate(code);
            let text = error
                .get("message")
                .and_then(Value::as_str)
                .map(truncate)
                .unwrap_or_default();
            if error.get("retryable").and_then(Value::as_bool) == Some(true) {
                Err(DeliveryError::Retryable {
                    code: Some(code),
                    text,
                    retry_after,
                })
            } else {
                Err(DeliveryError::Permanent { code, text })
            }
        }
        Some(other) => Err(DeliveryError::Permanent {
            code: "app_error".to_owned(),
            text: match other {
                Value::String(text) => truncate(text),
                other => truncate(&other.to_string()),
            },
        }),
    }
}

fn message_id(value: &Value) -> Option<String> {
    match value {
        Value::String(id) if !id.is_empty() => Some(id.clone()),
        Value::Number(id) => Some(id.to_string()),
        _ => None,
    }
}

/// The start of an answer body, as text, at most [`MAX_ERROR_TEXT_CHARS`] characters.
fn excerpt(answer: &[u8]) -> String {
    truncate(String::from_utf8_lossy(answer).trim())
}

fn truncate(text: &str) -> String {
    truncate_chars(text, MAX_ERROR_TEXT_CHARS).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_bodies_are_read_for_an_id_or_an_error() {
        assert_eq!(
            classify(200, br#"{"message_id":"x-1"}"#, None),
            Ok(Delivered {
                channel_message_id: Some("x-1".to_owned())
            })
        );
        assert_eq!(
            classify(201, br#"{"message_id":42}"#, None),
            Ok(Delivered {
                channel_message_id: Some("42".to_owned())
            })
        );
        assert_eq!(classify(204, b"", None), Ok(Delivered::default()));
        assert_eq!(classify(200, b"ok", None), Ok(Delivered::default()));
        assert_eq!(
            classify(200, br#"{"error":null,"message_id":"y"}"#, None),
            Ok(Delivered {
                channel_message_id: Some("y".to_owned())
            })
        );
        assert_eq!(
            classify(200, br#"{"error":{"retryable":true}}"#, None),
            Err(DeliveryError::Retryable {
                code: Some("app_error".to_owned()),
                text: String::new(),
                retry_after: None
            })
        );
        assert_eq!(
            classify(200, br#"{"error":"user deleted"}"#, None),
            Err(DeliveryError::Permanent {
                code: "app_error".to_owned(),
                text: "user deleted".to_owned()
            })
        );
    }

    #[test]
    fn excerpts_cut_on_character_boundaries() {
        let body = "错".repeat(MAX_ERROR_TEXT_CHARS + 50);
        let Err(DeliveryError::Permanent { code, text }) = classify(404, body.as_bytes(), None)
        else {
            panic!("404 must be permanent");
        };
        assert_eq!(code, "http_404");
        assert_eq!(text.chars().count(), MAX_ERROR_TEXT_CHARS);
        // Invalid UTF-8 cut anywhere still gives text, not a panic.
        let mut bytes = "é".repeat(10).into_bytes();
        bytes.truncate(5);
        assert!(classify(400, &bytes, None).is_err());
    }
}
