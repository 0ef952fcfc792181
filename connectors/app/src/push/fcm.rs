//! Firebase Cloud Messaging, HTTP v1: a service-account key signs an RS256 assertion, which
//! the OAuth2 token endpoint trades for an access token; `messages:send` takes one message
//! per device token.

use std::sync::Mutex;
use std::time::Instant;

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, Header};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use switchboard_sdk::connector::parse_retry_after;
use switchboard_sdk::reqwest::{self, header};
use switchboard_sdk::{DeliveryError, Secret};

use super::config::FcmSettings;
use super::devices::{Device, Platform, Provider};
use super::http::{excerpt, read_capped, short, transport_error};
use super::payload::{Notification, fit};
use super::{Clock, PushError, PushProvider, Sent};

/// The OAuth2 scope FCM needs.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// The assertion grant type (RFC 7523).
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// FCM's limit on a message's payload, in bytes.
pub const FCM_PAYLOAD_LIMIT: usize = 4096;
/// Lifetime asked for the assertion; Google accepts at most an hour.
const ASSERTION_LIFETIME_SECS: i64 = 3600;
/// An access token is replaced this long before it expires (or at half its life, if that
/// is sooner), so no send uses a token that expires in flight.
const REFRESH_EARLY_SECS: i64 = 300;

/// An access token and when to stop using it.
struct AccessToken {
    /// The bearer token.
    value: Secret,
    /// Unix seconds after which it is refreshed.
    refresh_at: i64,
}

/// Sends through FCM.
pub(crate) struct Fcm {
    /// Checked settings.
    settings: FcmSettings,
    /// The HTTP client.
    http: reqwest::Client,
    /// Assertion times and token expiry.
    clock: Clock,
    /// The cached access token.
    token: Mutex<Option<AccessToken>>,
    /// Held while one task fetches a token, so concurrent sends wait for it instead of each
    /// fetching its own.
    refreshing: tokio::sync::Mutex<()>,
    /// When the last fetch failed, and how: the sends that waited for it share its outcome
    /// instead of each trying again in turn (each would wait a full timeout).
    last_failure: Mutex<Option<(Instant, DeliveryError)>>,
}

/// What one `messages:send` attempt ended in.
enum Attempt {
    /// A final answer.
    Done(Result<Sent, PushError>),
    /// The access token was refused: fetch a new one and try once more.
    Unauthenticated(String),
}

impl Fcm {
    /// A provider with an empty token cache.
    pub fn new(settings: FcmSettings, http: reqwest::Client, clock: Clock) -> Self {
        Self {
            settings,
            http,
            clock,
            token: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            last_failure: Mutex::new(None),
        }
    }

    fn now(&self) -> i64 {
        (self.clock)().unix_timestamp()
    }

    fn cached(&self) -> Option<Secret> {
        let now = self.now();
        let guard = self.token.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()
            .filter(|token| now < token.refresh_at)
            .map(|token| token.value.clone())
    }

    /// A usable access token: the cached one, or one fetched by exactly one task.
    async fn access_token(&self) -> Result<Secret, DeliveryError> {
        if let Some(token) = self.cached() {
            return Ok(token);
        }
        let waiting_since = Instant::now();
        let _only_one = self.refreshing.lock().await;
        // Another task may have fetched one while this one waited, or failed to.
        if let Some(token) = self.cached() {
            return Ok(token);
        }
        if let Some((at, err)) = self
            .last_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            && at >= waiting_since
        {
            return Err(err);
        }
        let token = match self.fetch_token().await {
            Ok(token) => token,
            Err(err) => {
                *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((Instant::now(), err.clone()));
                return Err(err);
            }
        };
        let value = token.value.clone();
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some(token);
        Ok(value)
    }

    /// Drops the cached token if it is still `refused` (a newer one may already be there).
    fn forget(&self, refused: &str) {
        let mut guard = self.token.lock().unwrap_or_else(|p| p.into_inner());
        if guard
            .as_ref()
            .is_some_and(|token| token.value.expose() == refused)
        {
            *guard = None;
        }
    }

    async fn fetch_token(&self) -> Result<AccessToken, DeliveryError> {
        let now = self.now();
        let mut jwt_header = Header::new(Algorithm::RS256);
        jwt_header.kid = self.settings.key_id.clone();
        let claims = json!({
            "iss": self.settings.client_email,
            "scope": FCM_SCOPE,
            "aud": self.settings.token_uri.as_str(),
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let assertion =
            jsonwebtoken::encode(&jwt_header, &claims, &self.settings.key).map_err(|err| {
                DeliveryError::Permanent {
                    code: "fcm_key".to_owned(),
                    text: format!("cannot sign the oauth assertion: {err}"),
                }
            })?;
        let timeout = self.settings.timeout;
        let response = self
            .http
            .post(self.settings.token_uri.clone())
            .timeout(timeout)
            .form(&[("grant_type", JWT_BEARER_GRANT), ("assertion", &assertion)])
            .send()
            .await
            .map_err(|err| transport_error("fcm_oauth", err, timeout))?;
        let status = response.status().as_u16();
        let retry_after = parse_retry_after(response.headers().get(header::RETRY_AFTER));
        let answer = read_capped(response)
            .await
            .map_err(|err| transport_error("fcm_oauth", err, timeout))?;
        let token = classify_token_answer(status, &answer, retry_after)?;
        let lifetime = token.expires_in.clamp(1, 86_400);
        let early = REFRESH_EARLY_SECS.min(lifetime / 2);
        tracing::debug!(project = %self.settings.project_id, expires_in = lifetime, "fcm access token fetched");
        Ok(AccessToken {
            value: Secret::new(token.access_token),
            refresh_at: now + lifetime - early,
        })
    }

    /// The `messages:send` body for one device, its text shortened to FCM's limit.
    fn body(&self, device: &Device, note: &Notification) -> Result<Vec<u8>, DeliveryError> {
        let build = |text: &str| {
            let mut message = Map::new();
            message.insert("token".into(), json!(device.token));
            message.insert(
                "notification".into(),
                json!({"title": note.title, "body": text}),
            );
            let data: Map<String, Value> = note
                .data
                .iter()
                .map(|(key, value)| ((*key).to_owned(), json!(value)))
                .collect();
            message.insert("data".into(), Value::Object(data));
            match device.platform {
                Platform::Android => {
                    let mut notification = Map::new();
                    notification.insert("tag".into(), json!(note.collapse_id));
                    if note.silent {
                        notification.insert("notification_priority".into(), json!("PRIORITY_LOW"));
                    } else {
                        notification.insert("sound".into(), json!("default"));
                        notification.insert("notification_priority".into(), json!("PRIORITY_HIGH"));
                    }
                    message.insert(
                        "android".into(),
                        json!({
                            "collapse_key": note.collapse_id,
                            "priority": if note.silent { "normal" } else { "high" },
                            "ttl": format!("{}s", note.ttl_secs),
                            "notification": notification,
                        }),
                    );
                }
                Platform::Ios => {
                    let expiration = self.now().saturating_add_unsigned(note.ttl_secs);
                    let mut aps = Map::new();
                    aps.insert("thread-id".into(), json!(note.collapse_id));
                    if note.silent {
                        aps.insert("interruption-level".into(), json!("passive"));
                    } else {
                        aps.insert("sound".into(), json!("default"));
                    }
                    message.insert(
                        "apns".into(),
                        json!({
                            "headers": {
                                "apns-collapse-id": note.collapse_id,
                                "apns-priority": if note.silent { "5" } else { "10" },
                                "apns-expiration": expiration.to_string(),
                            },
                            "payload": {"aps": aps},
                        }),
                    );
                }
            }
            serde_json::to_vec(&json!({ "message": message })).unwrap_or_default()
        };
        // The token is addressing, not payload: it does not count against the limit.
        Ok(fit(
            &note.body,
            FCM_PAYLOAD_LIMIT + device.token.len(),
            build,
        )?)
    }

    async fn attempt(&self, token: &Secret, body: Vec<u8>) -> Attempt {
        let timeout = self.settings.timeout;
        let response = match self
            .http
            .post(self.settings.send_url.clone())
            .timeout(timeout)
            .bearer_auth(token.expose())
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
        {
            Ok(response) => response,
            Err(err) => {
                return Attempt::Done(Err(PushError::Failed(transport_error("fcm", err, timeout))));
            }
        };
        let status = response.status().as_u16();
        let retry_after = parse_retry_after(response.headers().get(header::RETRY_AFTER));
        let answer = match read_capped(response).await {
            Ok(answer) => answer,
            Err(err) => {
                return Attempt::Done(Err(PushError::Failed(transport_error("fcm", err, timeout))));
            }
        };
        classify_send_answer(status, &answer, retry_after)
    }
}

#[async_trait]
impl PushProvider for Fcm {
    fn provider(&self) -> Provider {
        Provider::Fcm
    }

    async fn send(&self, device: &Device, note: &Notification) -> Result<Sent, PushError> {
        let body = self.body(device, note).map_err(PushError::Failed)?;
        let token = self.access_token().await.map_err(PushError::Failed)?;
        match self.attempt(&token, body.clone()).await {
            Attempt::Done(outcome) => outcome,
            Attempt::Unauthenticated(first) => {
                // Revoked or expired early: one fresh token, one more try.
                self.forget(token.expose());
                let token = self.access_token().await.map_err(PushError::Failed)?;
                match self.attempt(&token, body).await {
                    Attempt::Done(outcome) => outcome,
                    Attempt::Unauthenticated(text) => {
                        Err(PushError::Failed(DeliveryError::Permanent {
                            code: "fcm_unauthenticated".to_owned(),
                            text: if text.is_empty() { first } else { text },
                        }))
                    }
                }
            }
        }
    }
}

/// The token endpoint's success answer.
#[derive(Deserialize)]
struct TokenAnswer {
    /// The bearer token.
    access_token: String,
    /// Seconds it lives.
    #[serde(default = "default_expires_in")]
    expires_in: i64,
}

fn default_expires_in() -> i64 {
    3600
}

/// Classifies the token endpoint's answer (RFC 6749 section 5).
fn classify_token_answer(
    status: u16,
    answer: &[u8],
    retry_after: Option<std::time::Duration>,
) -> Result<TokenAnswer, DeliveryError> {
    match status {
        200 => serde_json::from_slice::<TokenAnswer>(answer)
            .ok()
            .filter(|token| !token.access_token.is_empty())
            .ok_or_else(|| DeliveryError::Retryable {
                code: Some("fcm_oauth_answer".to_owned()),
                text: "token endpoint answered 200 without an access_token".to_owned(),
                retry_after,
            }),
        429 => Err(DeliveryError::RateLimited { retry_after }),
        408 | 500..=599 => Err(DeliveryError::Retryable {
            code: Some(format!("fcm_oauth_http_{status}")),
            text: excerpt(answer),
            retry_after,
        }),
        _ => {
            // invalid_grant (key revoked, clock far off), invalid_client, unauthorized_client:
            // retrying with the same key will not help.
            let body: Value = serde_json::from_slice(answer).unwrap_or(Value::Null);
            let error = body["error"].as_str().unwrap_or("http_error");
            let description = body["error_description"].as_str().unwrap_or_default();
            Err(DeliveryError::Permanent {
                code: format!("fcm_oauth_{}", short(error).to_ascii_lowercase()),
                text: format!("token endpoint answered {status}: {}", short(description)),
            })
        }
    }
}

/// Classifies a `messages:send` answer: a `google.rpc.Status` whose `details` may hold an
/// `FcmError` with the FCM error code and a `BadRequest` naming the offending field.
fn classify_send_answer(
    status: u16,
    answer: &[u8],
    retry_after: Option<std::time::Duration>,
) -> Attempt {
    let body: Value = serde_json::from_slice(answer).unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        let name = body["name"].as_str().map(str::to_owned);
        return Attempt::Done(Ok(Sent { message_id: name }));
    }
    let error = &body["error"];
    let details = error["details"].as_array().cloned().unwrap_or_default();
    let fcm_code = details
        .iter()
        .find(|d| {
            d["@type"]
                .as_str()
                .is_some_and(|t| t.ends_with("google.firebase.fcm.v1.FcmError"))
        })
        .and_then(|d| d["errorCode"].as_str())
        .map(str::to_owned);
    let rpc_status = error["status"].as_str().unwrap_or_default().to_owned();
    let message = short(error["message"].as_str().unwrap_or_default());
    let text = if message.is_empty() {
        excerpt(answer)
    } else {
        message.clone()
    };
    let code = fcm_code.clone().unwrap_or_else(|| rpc_status.clone());
    let about_token = details.iter().any(|d| {
        d["fieldViolations"]
            .as_array()
            .is_some_and(|v| v.iter().any(|f| f["field"] == "message.token"))
    }) || message.contains("registration token");

    let failed = |error: DeliveryError| Attempt::Done(Err(PushError::Failed(error)));
    let dead = |code: &str| {
        Attempt::Done(Err(PushError::DeadToken {
            code: code.to_owned(),
            text: text.clone(),
        }))
    };
    match (status, code.as_str()) {
        (_, "UNREGISTERED") => dead("fcm_unregistered"),
        (_, "SENDER_ID_MISMATCH") => dead("fcm_sender_id_mismatch"),
        (400, "INVALID_ARGUMENT") if about_token => dead("fcm_invalid_token"),
        (401, "THIRD_PARTY_AUTH_ERROR") => failed(DeliveryError::Permanent {
            code: "fcm_third_party_auth_error".to_owned(),
            text,
        }),
        (401, _) => Attempt::Unauthenticated(text),
        (429, _) => failed(DeliveryError::RateLimited { retry_after }),
        (500..=599, _) | (408, _) => failed(DeliveryError::Retryable {
            code: Some(fcm_error_code(&code, status)),
            text,
            retry_after,
        }),
        _ => failed(DeliveryError::Permanent {
            code: fcm_error_code(&code, status),
            text,
        }),
    }
}

/// `fcm_unavailable`, `fcm_invalid_argument`, or `fcm_http_418` when FCM gave no code.
fn fcm_error_code(code: &str, status: u16) -> String {
    if code.is_empty() {
        format!("fcm_http_{status}")
    } else {
        format!("fcm_{}", short(code).to_ascii_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn outcome(status: u16, body: &Value, retry_after: Option<u64>) -> Result<Sent, PushError> {
        match classify_send_answer(
            status,
            body.to_string().as_bytes(),
            retry_after.map(Duration::from_secs),
        ) {
            Attempt::Done(outcome) => outcome,
            Attempt::Unauthenticated(text) => Err(PushError::Failed(DeliveryError::Retryable {
                code: Some("test_unauthenticated".to_owned()),
                text,
                retry_after: None,
            })),
        }
    }

    fn rpc(code: u16, status: &str, fcm_code: Option<&str>, message: &str) -> Value {
        let mut details = vec![];
        if let Some(fcm_code) = fcm_code {
            details.push(json!({
                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": fcm_code
            }));
        }
        json!({"error": {"code": code, "message": message, "status": status, "details": details}})
    }

    #[test]
    fn every_error_class_maps_to_its_outcome() {
        // Error bodies in the shape of FCM's documented examples (firebase.google.com,
        // "FCM error codes", REST error codes for the HTTP v1 API).
        let bad_field = json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
            "message": "Invalid value at 'message.data[0].value' (TYPE_STRING), 12",
            "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": "message.data[0].value",
                    "description": "Invalid value"}]}]}});
        let cases: Vec<(u16, Value, Option<u64>, &str)> = vec![
            (
                404,
                rpc(
                    404,
                    "NOT_FOUND",
                    Some("UNREGISTERED"),
                    "Requested entity was not found.",
                ),
                None,
                "dead fcm_unregistered",
            ),
            (
                400,
                rpc(
                    400,
                    "INVALID_ARGUMENT",
                    Some("INVALID_ARGUMENT"),
                    "The registration token is not a valid FCM registration token",
                ),
                None,
                "dead fcm_invalid_token",
            ),
            (400, bad_field, None, "permanent fcm_invalid_argument"),
            (
                403,
                rpc(
                    403,
                    "PERMISSION_DENIED",
                    Some("SENDER_ID_MISMATCH"),
                    "SenderId mismatch",
                ),
                None,
                "dead fcm_sender_id_mismatch",
            ),
            (
                429,
                rpc(
                    429,
                    "RESOURCE_EXHAUSTED",
                    Some("QUOTA_EXCEEDED"),
                    "Quota exceeded",
                ),
                Some(30),
                "limited 30",
            ),
            (
                503,
                rpc(
                    503,
                    "UNAVAILABLE",
                    Some("UNAVAILABLE"),
                    "The service is unavailable",
                ),
                Some(10),
                "retry fcm_unavailable 10",
            ),
            (
                500,
                rpc(500, "INTERNAL", Some("INTERNAL"), "Internal error"),
                None,
                "retry fcm_internal -",
            ),
            (
                401,
                rpc(
                    401,
                    "UNAUTHENTICATED",
                    Some("THIRD_PARTY_AUTH_ERROR"),
                    "APNs auth failed",
                ),
                None,
                "permanent fcm_third_party_auth_error",
            ),
            (
                401,
                rpc(
                    401,
                    "UNAUTHENTICATED",
                    None,
                    "Request had invalid authentication credentials",
                ),
                None,
                "retry test_unauthenticated -",
            ),
            (
                403,
                rpc(403, "PERMISSION_DENIED", None, "Permission denied"),
                None,
                "permanent fcm_permission_denied",
            ),
            (502, json!("bad gateway"), None, "retry fcm_http_502 -"),
        ];
        for (status, body, retry_after, expected) in cases {
            let got = match outcome(status, &body, retry_after) {
                Ok(_) => "ok".to_owned(),
                Err(PushError::DeadToken { code, .. }) => format!("dead {code}"),
                Err(PushError::Failed(DeliveryError::Permanent { code, .. })) => {
                    format!("permanent {code}")
                }
                Err(PushError::Failed(DeliveryError::RateLimited { retry_after })) => {
                    format!("limited {}", retry_after.map_or(0, |d| d.as_secs()))
                }
                Err(PushError::Failed(DeliveryError::Retryable {
                    code, retry_after, ..
                })) => format!(
                    "retry {} {}",
                    code.unwrap_or_default(),
                    retry_after.map_or("-".to_owned(), |d| d.as_secs().to_string())
                ),
            };
            assert_eq!(got, expected, "{status} {body}");
        }
    }

    #[test]
    fn success_carries_the_message_name() {
        let sent = outcome(
            200,
            &json!({"name": "projects/demo/messages/0:1500415314455276%31bd1c9631bd1c96"}),
            None,
        );
        assert!(matches!(sent, Ok(Sent { message_id: Some(name) }) if name.ends_with("31bd1c96")));
    }

    #[test]
    fn token_endpoint_answers_are_classified() {
        let ok = classify_token_answer(
            200,
            br#"{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}"#,
            None,
        );
        assert!(matches!(ok, Ok(t) if t.access_token == "ya29.x" && t.expires_in == 3599));
        let grant = classify_token_answer(
            400,
            br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
            None,
        );
        assert!(
            matches!(grant, Err(DeliveryError::Permanent { code, .. }) if code == "fcm_oauth_invalid_grant")
        );
        assert!(classify_token_answer(503, b"", None).is_err_and(|e| e.is_retryable()));
        assert!(classify_token_answer(200, b"{}", None).is_err_and(|e| e.is_retryable()));
    }
}
