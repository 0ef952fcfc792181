//! Apple Push Notification service, token-based: an ES256 provider token signed with the
//! team's `.p8` key, reused for most of its allowed hour, and one HTTP/2 POST per device to
//! `/3/device/{token}`.

use std::sync::Mutex;

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, Header};
use serde_json::{Map, Value, json};
use switchboard_sdk::connector::parse_retry_after;
use switchboard_sdk::reqwest::{self, Url, header};
use switchboard_sdk::{DeliveryError, Secret};

use super::config::ApnsSettings;
use super::devices::{Device, Provider};
use super::http::{excerpt, read_capped, short, transport_error};
use super::payload::{Notification, fit};
use super::{Clock, PushError, PushProvider, Sent};

/// APNs' limit on a notification payload, in bytes.
pub const APNS_PAYLOAD_LIMIT: usize = 4096;
/// A provider token is replaced after this long. APNs refuses tokens older than an hour and
/// answers `TooManyProviderTokenUpdates` to tokens renewed more often than every 20 minutes.
pub const PROVIDER_TOKEN_REUSE_SECS: i64 = 50 * 60;

/// A signed provider token.
struct ProviderToken {
    /// The JWT.
    value: Secret,
    /// Unix seconds it was signed at.
    issued_at: i64,
}

/// Sends through APNs.
pub(crate) struct Apns {
    /// Checked settings.
    settings: ApnsSettings,
    /// An HTTP/2-capable client.
    http: reqwest::Client,
    /// Token times and `apns-expiration`.
    clock: Clock,
    /// The provider token in use.
    token: Mutex<Option<ProviderToken>>,
}

/// What one POST ended in.
enum Attempt {
    /// A final answer.
    Done(Result<Sent, PushError>),
    /// The provider token was refused as expired or invalid: sign a new one, try once more.
    TokenRefused(String),
}

impl Apns {
    /// A provider that signs its first token on first use.
    pub fn new(settings: ApnsSettings, http: reqwest::Client, clock: Clock) -> Self {
        Self {
            settings,
            http,
            clock,
            token: Mutex::new(None),
        }
    }

    fn now(&self) -> i64 {
        (self.clock)().unix_timestamp()
    }

    /// The current provider token, signed anew when it is older than the reuse period.
    fn provider_token(&self) -> Result<Secret, DeliveryError> {
        let now = self.now();
        let mut guard = self.token.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(token) = guard.as_ref()
            && now - token.issued_at < PROVIDER_TOKEN_REUSE_SECS
            && now >= token.issued_at
        {
            return Ok(token.value.clone());
        }
        let mut jwt_header = Header::new(Algorithm::ES256);
        jwt_header.kid = Some(self.settings.key_id.clone());
        jwt_header.typ = None;
        let claims = json!({"iss": self.settings.team_id, "iat": now});
        let value =
            jsonwebtoken::encode(&jwt_header, &claims, &self.settings.key).map_err(|err| {
                DeliveryError::Permanent {
                    code: "apns_key".to_owned(),
                    text: format!("cannot sign the provider token: {err}"),
                }
            })?;
        let value = Secret::new(value);
        *guard = Some(ProviderToken {
            value: value.clone(),
            issued_at: now,
        });
        tracing::debug!(key_id = %self.settings.key_id, "apns provider token signed");
        Ok(value)
    }

    /// Drops the token if it is still `refused`.
    fn forget(&self, refused: &Secret) {
        let mut guard = self.token.lock().unwrap_or_else(|p| p.into_inner());
        if guard
            .as_ref()
            .is_some_and(|token| token.value.expose() == refused.expose())
        {
            *guard = None;
        }
    }

    fn url(&self, device: &Device) -> Result<Url, DeliveryError> {
        // The token was checked to be hex at registration, so it is a safe path segment.
        self.settings
            .api_base
            .join(&format!("3/device/{}", device.token))
            .map_err(|err| DeliveryError::Permanent {
                code: "apns_bad_token".to_owned(),
                text: format!("cannot build the device url: {err}"),
            })
    }

    /// The JSON payload, its body text shortened to APNs' limit.
    fn payload(note: &Notification) -> Result<Vec<u8>, DeliveryError> {
        let build = |text: &str| {
            let mut aps = Map::new();
            aps.insert("alert".into(), json!({"title": note.title, "body": text}));
            aps.insert("thread-id".into(), json!(note.collapse_id));
            if note.silent {
                aps.insert("interruption-level".into(), json!("passive"));
            } else {
                aps.insert("sound".into(), json!("default"));
                aps.insert("interruption-level".into(), json!("active"));
            }
            let mut root = Map::new();
            root.insert("aps".into(), Value::Object(aps));
            for (key, value) in &note.data {
                root.insert((*key).to_owned(), json!(value));
            }
            serde_json::to_vec(&Value::Object(root)).unwrap_or_default()
        };
        Ok(fit(&note.body, APNS_PAYLOAD_LIMIT, build)?)
    }

    async fn attempt(
        &self,
        url: Url,
        token: &Secret,
        note: &Notification,
        payload: Vec<u8>,
    ) -> Attempt {
        let timeout = self.settings.timeout;
        let expiration = if note.ttl_secs == 0 {
            0
        } else {
            self.now().saturating_add_unsigned(note.ttl_secs)
        };
        let sent = self
            .http
            .post(url)
            .timeout(timeout)
            .header(header::AUTHORIZATION, format!("bearer {}", token.expose()))
            .header("apns-topic", &self.settings.topic)
            .header("apns-push-type", "alert")
            .header("apns-priority", if note.silent { "5" } else { "10" })
            .header("apns-collapse-id", &note.collapse_id)
            .header("apns-expiration", expiration.to_string())
            .header(header::CONTENT_TYPE, "application/json")
            .body(payload)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(err) => {
                return Attempt::Done(Err(PushError::Failed(transport_error(
                    "apns", err, timeout,
                ))));
            }
        };
        let status = response.status().as_u16();
        let apns_id = response
            .headers()
            .get("apns-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let retry_after = parse_retry_after(response.headers().get(header::RETRY_AFTER));
        let answer = match read_capped(response).await {
            Ok(answer) => answer,
            Err(err) => {
                return Attempt::Done(Err(PushError::Failed(transport_error(
                    "apns", err, timeout,
                ))));
            }
        };
        classify(status, apns_id, &answer, retry_after)
    }
}

#[async_trait]
impl PushProvider for Apns {
    fn provider(&self) -> Provider {
        Provider::Apns
    }

    async fn send(&self, device: &Device, note: &Notification) -> Result<Sent, PushError> {
        let url = self.url(device).map_err(PushError::Failed)?;
        let payload = Self::payload(note).map_err(PushError::Failed)?;
        let token = self.provider_token().map_err(PushError::Failed)?;
        match self
            .attempt(url.clone(), &token, note, payload.clone())
            .await
        {
            Attempt::Done(outcome) => outcome,
            Attempt::TokenRefused(reason) => {
                self.forget(&token);
                let token = self.provider_token().map_err(PushError::Failed)?;
                match self.attempt(url, &token, note, payload).await {
                    Attempt::Done(outcome) => outcome,
                    Attempt::TokenRefused(again) => {
                        Err(PushError::Failed(DeliveryError::Permanent {
                            code: format!("apns_{}", again.to_ascii_lowercase()),
                            text: format!(
                                "apns refused a freshly signed provider token ({reason}, then {again}): check team_id, key_id and the key"
                            ),
                        }))
                    }
                }
            }
        }
    }
}

/// Classifies an APNs answer: the status, and `{"reason": "..."}` on failure.
fn classify(
    status: u16,
    apns_id: Option<String>,
    answer: &[u8],
    retry_after: Option<std::time::Duration>,
) -> Attempt {
    if status == 200 {
        return Attempt::Done(Ok(Sent {
            message_id: apns_id,
        }));
    }
    let body: Value = serde_json::from_slice(answer).unwrap_or(Value::Null);
    let reason = body["reason"]
        .as_str()
        .map(short)
        .unwrap_or_else(|| excerpt(answer));
    let code = if reason.is_empty() {
        format!("apns_http_{status}")
    } else {
        format!("apns_{}", reason.to_ascii_lowercase())
    };
    let text = format!("apns answered {status} {reason}");
    let failed = |error: DeliveryError| Attempt::Done(Err(PushError::Failed(error)));
    match (status, reason.as_str()) {
        // The token will not work again for this app (uninstalled, wrong app, bad token).
        (410, _) | (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => {
            Attempt::Done(Err(PushError::DeadToken { code, text }))
        }
        (403, "ExpiredProviderToken" | "InvalidProviderToken") => Attempt::TokenRefused(reason),
        (429, _) => failed(DeliveryError::RateLimited { retry_after }),
        (500..=599, _) => failed(DeliveryError::Retryable {
            code: Some(code),
            text,
            retry_after,
        }),
        _ => failed(DeliveryError::Permanent { code, text }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_and_reason_maps_to_its_outcome() {
        // Reasons as listed in Apple's "Handling notification responses from APNs".
        let cases: [(u16, &str, &str); 12] = [
            (410, "Unregistered", "dead apns_unregistered"),
            (410, "ExpiredToken", "dead apns_expiredtoken"),
            (400, "BadDeviceToken", "dead apns_baddevicetoken"),
            (
                400,
                "DeviceTokenNotForTopic",
                "dead apns_devicetokennotfortopic",
            ),
            (400, "BadCollapseId", "permanent apns_badcollapseid"),
            (413, "PayloadTooLarge", "permanent apns_payloadtoolarge"),
            (403, "ExpiredProviderToken", "refused ExpiredProviderToken"),
            (403, "InvalidProviderToken", "refused InvalidProviderToken"),
            (429, "TooManyRequests", "limited"),
            (500, "InternalServerError", "retry apns_internalservererror"),
            (503, "ServiceUnavailable", "retry apns_serviceunavailable"),
            (
                403,
                "BadCertificateEnvironment",
                "permanent apns_badcertificateenvironment",
            ),
        ];
        for (status, reason, expected) in cases {
            let body = json!({"reason": reason}).to_string();
            let got = match classify(status, None, body.as_bytes(), None) {
                Attempt::TokenRefused(reason) => format!("refused {reason}"),
                Attempt::Done(Ok(_)) => "ok".to_owned(),
                Attempt::Done(Err(PushError::DeadToken { code, .. })) => format!("dead {code}"),
                Attempt::Done(Err(PushError::Failed(DeliveryError::Permanent {
                    code, ..
                }))) => format!("permanent {code}"),
                Attempt::Done(Err(PushError::Failed(DeliveryError::RateLimited { .. }))) => {
                    "limited".to_owned()
                }
                Attempt::Done(Err(PushError::Failed(DeliveryError::Retryable {
                    code, ..
                }))) => format!("retry {}", code.unwrap_or_default()),
            };
            assert_eq!(got, expected, "{status} {reason}");
        }
    }

    #[test]
    fn success_carries_the_apns_id() {
        match classify(
            200,
            Some("EB2C6B42-0D3B-4F1E-9C2B-0A1B2C3D4E5F".into()),
            b"",
            None,
        ) {
            Attempt::Done(Ok(sent)) => {
                assert_eq!(
                    sent.message_id.as_deref(),
                    Some("EB2C6B42-0D3B-4F1E-9C2B-0A1B2C3D4E5F")
                )
            }
            _ => panic!("200 must be a success"),
        }
    }
}
