//! Helpers shared by the integration tests: this crate's fixtures, replies, a fake Twilio
//! Messages API. The signed requests and the router harness come from
//! `switchboard_sdk::testing`.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use switchboard_sdk::reply::REPLY_SCHEMA;
use switchboard_sdk::testing::serve;
use switchboard_sdk::webhook::FormParams;
use switchboard_sdk::{Content, ConversationId, Recipient, Reply};

/// The payload of `fixtures/{name}`, its origin note dropped.
pub fn fixture(name: &str) -> String {
    switchboard_sdk::testing::fixture(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"), name)
}

/// Decoded form pairs.
pub fn pairs(body: &str) -> Vec<(String, String)> {
    FormParams::parse(body.as_bytes()).0
}

/// Encodes form pairs.
pub fn encode(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// A text reply to `number` on connector `id`.
pub fn reply(id: &str, number: &str, content: Content) -> (Reply, Recipient) {
    let conversation = ConversationId::new("sms", id, number);
    let reply = Reply {
        schema: REPLY_SCHEMA.to_owned(),
        id: format!("reply-{}", ulid_like()),
        conversation_id: conversation.to_string(),
        content,
        in_reply_to: None,
        agent: None,
    };
    (reply, Recipient { conversation })
}

fn ulid_like() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// What the fake Twilio answers next.
#[derive(Debug, Clone)]
pub enum TwilioMode {
    /// 201 with a Message resource.
    Created,
    /// An error body with this HTTP status, Twilio code and optional Retry-After.
    Error(u16, u32, Option<u64>),
    /// A body that is not JSON, with this status.
    Garbage(u16),
}

/// One request the fake Twilio received.
#[derive(Debug, Clone)]
pub struct TwilioCall {
    pub account: String,
    pub authorization: Option<String>,
    pub form: Vec<(String, String)>,
}

impl TwilioCall {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A local stand-in for the Messages API that checks basic auth like Twilio does.
#[derive(Clone)]
pub struct FakeTwilio {
    pub base: String,
    pub calls: Arc<Mutex<Vec<TwilioCall>>>,
    pub mode: Arc<Mutex<TwilioMode>>,
    account: String,
    token: String,
}

impl FakeTwilio {
    pub async fn start(account: &str, token: &str) -> Self {
        let mut fake = Self {
            base: String::new(),
            calls: Arc::default(),
            mode: Arc::new(Mutex::new(TwilioMode::Created)),
            account: account.to_owned(),
            token: token.to_owned(),
        };
        let router = Router::new()
            .route(
                "/2010-04-01/Accounts/{account}/Messages.json",
                post(fake_twilio_messages),
            )
            .with_state(fake.clone());
        let addr = serve(router).await;
        fake.base = format!("http://{addr}");
        fake
    }

    pub fn set(&self, mode: TwilioMode) {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner()) = mode;
    }

    pub fn calls(&self) -> Vec<TwilioCall> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

async fn fake_twilio_messages(
    State(fake): State<FakeTwilio>,
    UrlPath(account): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    use base64::Engine;
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let form = pairs(&String::from_utf8_lossy(&body));
    fake.calls
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(TwilioCall {
            account: account.clone(),
            authorization: authorization.clone(),
            form: form.clone(),
        });
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", fake.account, fake.token))
    );
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if authorization.as_deref() != Some(expected.as_str()) || account != fake.account {
        return twilio_error(401, 20003, "Authenticate", None);
    }
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return twilio_error(400, 21603, "Content type must be form", None);
    }
    let get = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let Some(to) = get("To") else {
        return twilio_error(400, 21604, "A 'To' phone number is required.", None);
    };
    if get("From").is_none() && get("MessagingServiceSid").is_none() {
        return twilio_error(400, 21603, "A 'From' phone number is required.", None);
    }
    if get("Body").is_none() && get("MediaUrl").is_none() {
        return twilio_error(400, 21602, "Message body is required.", None);
    }
    let mode = fake.mode.lock().unwrap_or_else(|p| p.into_inner()).clone();
    match mode {
        TwilioMode::Created => {
            let n = fake.calls.lock().unwrap_or_else(|p| p.into_inner()).len();
            let sid = format!("SM{n:032}");
            let body = fixture("twilio/message-created.json")
                .replace("SID_PLACEHOLDER", &sid)
                .replace("\"TO\"", &format!("{to:?}"))
                .replace(
                    "\"FROM\"",
                    &format!("{:?}", get("From").unwrap_or_default()),
                );
            (
                StatusCode::CREATED,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response()
        }
        TwilioMode::Error(status, code, retry_after) => {
            twilio_error(status, code, "Refused by the fake", retry_after)
        }
        TwilioMode::Garbage(status) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "<html>bad gateway</html>",
        )
            .into_response(),
    }
}

fn twilio_error(status: u16, code: u32, message: &str, retry_after: Option<u64>) -> Response {
    let body = fixture("twilio/error.json")
        .replace("CODE", &code.to_string())
        .replace("MESSAGE", message)
        .replace("STATUS", &status.to_string());
    let mut response = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, secs.into());
    }
    response
}
