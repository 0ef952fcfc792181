//! JPush (Aurora) Push API v3: basic auth with AppKey and Master Secret, one push per
//! registration id, an Android or iOS notification block, errors as `{"error": {"code": n}}`.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use switchboard_sdk::DeliveryError;
use switchboard_sdk::connector::parse_retry_after;
use switchboard_sdk::reqwest::{self, header};

use super::config::JpushSettings;
use super::devices::{Device, Platform, Provider};
use super::http::{excerpt, read_capped, short, transport_error};
use super::payload::{Notification, fit};
use super::{PushError, PushProvider, Sent};

/// Our bound on the `notification` object, in bytes: JPush's documented limit for a
/// notification is 4000 bytes, a little below APNs' 4096 because JPush adds its own keys.
pub const JPUSH_PAYLOAD_LIMIT: usize = 4000;
/// JPush's reset header: seconds until the rate-limit window starts again.
const RATE_LIMIT_RESET: &str = "x-rate-limit-reset";

/// Sends through JPush.
pub(crate) struct Jpush {
    /// Checked settings.
    settings: JpushSettings,
    /// The HTTP client.
    http: reqwest::Client,
}

impl Jpush {
    /// A provider for one JPush application.
    pub fn new(settings: JpushSettings, http: reqwest::Client) -> Self {
        Self { settings, http }
    }

    /// The push object for one device, its alert shortened to the limit.
    fn body(&self, device: &Device, note: &Notification) -> Result<Vec<u8>, DeliveryError> {
        let extras: Map<String, Value> = note
            .data
            .iter()
            .map(|(key, value)| ((*key).to_owned(), json!(value)))
            .collect();
        let notification = |text: &str| -> Value {
            match device.platform {
                Platform::Android => {
                    let mut android = Map::new();
                    android.insert("alert".into(), json!(text));
                    android.insert("title".into(), json!(note.title));
                    android.insert("extras".into(), Value::Object(extras.clone()));
                    // alert_type 0: no sound, vibration or light; priority -1: low.
                    android.insert("alert_type".into(), json!(if note.silent { 0 } else { -1 }));
                    android.insert("priority".into(), json!(if note.silent { -1 } else { 1 }));
                    json!({ "android": android })
                }
                Platform::Ios => {
                    let mut ios = Map::new();
                    ios.insert("alert".into(), json!({"title": note.title, "body": text}));
                    ios.insert("thread-id".into(), json!(note.collapse_id));
                    if !note.silent {
                        ios.insert("sound".into(), json!("default"));
                    }
                    ios.insert("extras".into(), Value::Object(extras.clone()));
                    json!({ "ios": ios })
                }
            }
        };
        // Measure the notification object alone, then wrap it.
        let fitted = fit(&note.body, JPUSH_PAYLOAD_LIMIT, |text| {
            serde_json::to_vec(&notification(text)).unwrap_or_default()
        })?;
        let notification: Value = serde_json::from_slice(&fitted).unwrap_or(Value::Null);
        let mut options = Map::new();
        options.insert("time_to_live".into(), json!(note.ttl_secs));
        match device.platform {
            Platform::Android => {
                // Replaces the previous notification of this collapse window on the device.
                if let Some(previous) = note
                    .replaces
                    .as_deref()
                    .and_then(|id| id.parse::<u64>().ok())
                {
                    options.insert("override_msg_id".into(), json!(previous));
                }
            }
            Platform::Ios => {
                options.insert(
                    "apns_production".into(),
                    json!(self.settings.apns_production),
                );
                options.insert("apns_collapse_id".into(), json!(note.collapse_id));
            }
        }
        let body = json!({
            "platform": [device.platform.as_str()],
            "audience": {"registration_id": [device.token]},
            "notification": notification,
            "options": options,
        });
        Ok(serde_json::to_vec(&body).unwrap_or_default())
    }
}

#[async_trait]
impl PushProvider for Jpush {
    fn provider(&self) -> Provider {
        Provider::Jpush
    }

    async fn send(&self, device: &Device, note: &Notification) -> Result<Sent, PushError> {
        let body = self.body(device, note).map_err(PushError::Failed)?;
        let timeout = self.settings.timeout;
        let response = self
            .http
            .post(self.settings.push_url.clone())
            .timeout(timeout)
            .basic_auth(
                &self.settings.app_key,
                Some(self.settings.master_secret.expose()),
            )
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|err| PushError::Failed(transport_error("jpush", err, timeout)))?;
        let status = response.status().as_u16();
        let retry_after = parse_retry_after(response.headers().get(header::RETRY_AFTER))
            .or_else(|| parse_retry_after(response.headers().get(RATE_LIMIT_RESET)));
        let answer = read_capped(response)
            .await
            .map_err(|err| PushError::Failed(transport_error("jpush", err, timeout)))?;
        classify(status, &answer, retry_after)
    }
}

/// Classifies a JPush answer by its business code first (it is more precise than the
/// status), then by the HTTP status.
fn classify(status: u16, answer: &[u8], retry_after: Option<Duration>) -> Result<Sent, PushError> {
    let body: Value = serde_json::from_slice(answer).unwrap_or(Value::Null);
    let error = &body["error"];
    if (200..300).contains(&status) && error.is_null() {
        let msg_id = match &body["msg_id"] {
            Value::String(id) => Some(id.clone()),
            Value::Number(id) => Some(id.to_string()),
            _ => None,
        };
        return Ok(Sent { message_id: msg_id });
    }
    let code = error["code"].as_i64();
    let message = short(error["message"].as_str().unwrap_or_default());
    let text = if message.is_empty() {
        format!("jpush answered {status}: {}", excerpt(answer))
    } else {
        format!("jpush answered {status}: {message}")
    };
    let code_name = code.map_or_else(|| format!("jpush_http_{status}"), |c| format!("jpush_{c}"));
    let failed = |error: DeliveryError| Err(PushError::Failed(error));
    match code {
        // No device matches the registration id: uninstalled, or inactive for 255 days.
        Some(1011) => Err(PushError::DeadToken {
            code: code_name,
            text,
        }),
        // API rate limit, or more messages than the plan allows.
        Some(2002 | 2005 | 2008) => failed(DeliveryError::RateLimited { retry_after }),
        // Internal error, internal timeout.
        Some(1000 | 1030) => failed(DeliveryError::Retryable {
            code: Some(code_name),
            text,
            retry_after,
        }),
        // Malformed request (1001-1003, 1005, 1009, 1020), bad credentials (1004, 1008),
        // app restricted or lacking permission (2003, 2004), and anything new.
        Some(_) => failed(DeliveryError::Permanent {
            code: code_name,
            text,
        }),
        None => match status {
            429 => failed(DeliveryError::RateLimited { retry_after }),
            408 | 500..=599 => failed(DeliveryError::Retryable {
                code: Some(code_name),
                text,
                retry_after,
            }),
            _ => failed(DeliveryError::Permanent {
                code: code_name,
                text,
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_to_its_outcome() {
        // Error bodies as JPush documents them for Push API v3: {"error": {"code", "message"}}.
        let cases: [(u16, &str, &str); 12] = [
            (
                400,
                r#"{"msg_id":"3125719446","error":{"code":1011,"message":"cannot find user by this audience"}}"#,
                "dead jpush_1011",
            ),
            (
                401,
                r#"{"error":{"code":1004,"message":"Authen failed"}}"#,
                "permanent jpush_1004",
            ),
            (
                400,
                r#"{"error":{"code":1003,"message":"Audience value must be JSON Array format!"}}"#,
                "permanent jpush_1003",
            ),
            (
                400,
                r#"{"error":{"code":1005,"message":"Msg content too long"}}"#,
                "permanent jpush_1005",
            ),
            (
                429,
                r#"{"error":{"code":2002,"message":"Rate limit exceeded"}}"#,
                "limited",
            ),
            (
                403,
                r#"{"error":{"code":2005,"message":"Over the message limit"}}"#,
                "limited",
            ),
            (
                500,
                r#"{"error":{"code":1000,"message":"Server error"}}"#,
                "retry jpush_1000",
            ),
            (
                503,
                r#"{"error":{"code":1030,"message":"Internal service timeout"}}"#,
                "retry jpush_1030",
            ),
            (
                403,
                r#"{"error":{"code":2003,"message":"app key restricted"}}"#,
                "permanent jpush_2003",
            ),
            (502, "Bad Gateway", "retry jpush_http_502"),
            (429, "", "limited"),
            (404, "", "permanent jpush_http_404"),
        ];
        for (status, body, expected) in cases {
            let got = match classify(status, body.as_bytes(), None) {
                Ok(_) => "ok".to_owned(),
                Err(PushError::DeadToken { code, .. }) => format!("dead {code}"),
                Err(PushError::Failed(DeliveryError::Permanent { code, .. })) => {
                    format!("permanent {code}")
                }
                Err(PushError::Failed(DeliveryError::RateLimited { .. })) => "limited".to_owned(),
                Err(PushError::Failed(DeliveryError::Retryable { code, .. })) => {
                    format!("retry {}", code.unwrap_or_default())
                }
            };
            assert_eq!(got, expected, "{status} {body}");
        }
    }

    #[test]
    fn success_carries_the_msg_id_as_text() {
        for body in [
            r#"{"sendno":"0","msg_id":"54043195528"}"#,
            r#"{"sendno":"0","msg_id":54043195528}"#,
        ] {
            let sent = classify(200, body.as_bytes(), None).ok();
            assert_eq!(
                sent.and_then(|s| s.message_id).as_deref(),
                Some("54043195528"),
                "{body}"
            );
        }
    }
}
