//! Tests through the connector's own seam: the router with a recording pipeline, and
//! deliveries to a fake app backend on 127.0.0.1:0.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use switchboard_sdk::signature::{check_timestamp, sign_timestamped, verify_timestamped};
use switchboard_sdk::testing::{ComplianceFixture, RecordingSink, check_connector};
use switchboard_sdk::time::OffsetDateTime;
use switchboard_sdk::webhook::RejectedBecause;
use switchboard_sdk::{
    ChannelRef, Connector, ConnectorContext, ConnectorFactory, ConnectorLimits, ConversationId,
    Delivered, DeliveryError, Inbound, Recipient, RejectReason, Reply, Secret,
};
use tower::ServiceExt;

use super::*;

const KEY: &str = "test-signing-key-0123456789";
const FIXED_NOW: i64 = 1_700_000_000;

fn fixed_clock() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(FIXED_NOW).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn config(webhook_url: &str, timeout_ms: u64, keep_raw: bool) -> AppConfig {
    AppConfig {
        id: "main".to_owned(),
        signing_key: Some(Secret::new(KEY)),
        signing_key_env: None,
        signing_key_file: None,
        replay_window_secs: 300,
        keep_raw,
        webhook: WebhookConfig {
            url: webhook_url.to_owned(),
            timeout_ms,
        },
        push: None,
        limits: ConnectorLimits::default(),
    }
}

fn connector_with(config: &AppConfig, clock: fn() -> OffsetDateTime) -> AppConnector {
    let settings = config.validate().unwrap();
    AppConnector::new(settings, &ConnectorContext::in_memory(), clock)
        .unwrap_or_else(|e| panic!("{:?}", e.0))
}

fn router_with(connector: &AppConnector) -> (axum::Router, Arc<RecordingSink>) {
    let sink = Arc::new(RecordingSink::default());
    let channel = ChannelRef {
        kind: KIND.to_owned(),
        connector_id: connector.id().to_owned(),
    };
    (connector.routes(Inbound::new(sink.clone(), channel)), sink)
}

fn text_body(user_id: &str) -> String {
    json!({"message_id": "m-1", "user_id": user_id,
        "content": {"type": "text", "text": "where is my parcel"}})
    .to_string()
}

/// A request to `/messages`; `None` leaves a header out.
fn request(timestamp: Option<&str>, signature: Option<&str>, body: &str) -> Request<Body> {
    let mut builder = Request::builder()
        .method("POST")
        .uri("/messages")
        .header("content-type", "application/json");
    if let Some(timestamp) = timestamp {
        builder = builder.header(TIMESTAMP_HEADER, timestamp);
    }
    if let Some(signature) = signature {
        builder = builder.header(SIGNATURE_HEADER, signature);
    }
    builder.body(Body::from(body.to_owned())).unwrap()
}

fn signed(key: &str, timestamp: i64, body: &str) -> Request<Body> {
    let ts = timestamp.to_string();
    let signature = sign_timestamped(key.as_bytes(), &ts, body.as_bytes());
    request(Some(&ts), Some(&signature), body)
}

async fn json_body(response: Response) -> Value {
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

// ---------------------------------------------------------------- compliance

struct Fixture;

impl Fixture {
    fn now() -> i64 {
        OffsetDateTime::now_utc().unix_timestamp()
    }
}

impl ComplianceFixture for Fixture {
    fn valid_request(&self) -> Request<Body> {
        signed(KEY, Self::now(), &text_body("u-42"))
    }

    fn forged_request(&self) -> Request<Body> {
        signed(
            "someone-elses-key-0123456789",
            Self::now(),
            &text_body("u-42"),
        )
    }

    fn malformed_request(&self) -> Request<Body> {
        signed(KEY, Self::now(), r#"{"message_id": "m-1", "user_id": "#)
    }

    fn stale_request(&self) -> Option<Request<Body>> {
        Some(signed(KEY, Self::now() - 3600, &text_body("u-42")))
    }
}

#[tokio::test]
async fn passes_the_sdk_compliance_checks() {
    let connector = AppConnectorFactory::build(
        &config("http://127.0.0.1:9/replies", 5000, false),
        &ConnectorContext::in_memory(),
    )
    .unwrap_or_else(|e| panic!("{:?}", e.0));
    check_connector(connector, &Fixture).await;
}

// ---------------------------------------------------------------- inbound

#[tokio::test]
async fn refuses_each_bad_request_without_accepting_it() {
    let now = FIXED_NOW;
    let good = text_body("u-42");
    let good_sig = sign_timestamped(KEY.as_bytes(), &now.to_string(), good.as_bytes());
    let ts = now.to_string();
    let with_content = |content: Value| {
        json!({"message_id": "m-1", "user_id": "u-42", "content": content}).to_string()
    };

    let cases: Vec<(&str, Request<Body>, StatusCode, RejectReason, &str)> = vec![
        (
            "missing timestamp header",
            request(None, Some(&good_sig), &good),
            StatusCode::FORBIDDEN,
            RejectReason::BadSignature,
            TIMESTAMP_HEADER,
        ),
        (
            "missing signature header",
            request(Some(&ts), None, &good),
            StatusCode::FORBIDDEN,
            RejectReason::BadSignature,
            SIGNATURE_HEADER,
        ),
        (
            "signature is not hex",
            request(Some(&ts), Some("zz-not-hex"), &good),
            StatusCode::FORBIDDEN,
            RejectReason::BadSignature,
            "does not match",
        ),
        (
            "signature truncated",
            request(Some(&ts), Some(&good_sig[..32]), &good),
            StatusCode::FORBIDDEN,
            RejectReason::BadSignature,
            "does not match",
        ),
        (
            "signed with the wrong key",
            signed("wrong-signing-key-0123456789", now, &good),
            StatusCode::FORBIDDEN,
            RejectReason::BadSignature,
            "does not match",
        ),
        (
            "body changed after signing",
            request(Some(&ts), Some(&good_sig), &text_body("u-43")),
            StatusCode::FORBIDDEN,
            RejectReason::BadSignature,
            "does not match",
        ),
        (
            "timestamp changed after signing",
            request(Some(&(now + 1).to_string()), Some(&good_sig), &good),
            StatusCode::FORBIDDEN,
            RejectReason::BadSignature,
            "does not match",
        ),
        (
            "signed timestamp that is not a number",
            {
                let sig = sign_timestamped(KEY.as_bytes(), "yesterday", good.as_bytes());
                request(Some("yesterday"), Some(&sig), &good)
            },
            StatusCode::FORBIDDEN,
            RejectReason::BadSignature,
            "unix seconds",
        ),
        (
            "stale timestamp",
            signed(KEY, now - 301, &good),
            StatusCode::FORBIDDEN,
            RejectReason::StaleTimestamp,
            "301 s",
        ),
        (
            "future timestamp",
            signed(KEY, now + 301, &good),
            StatusCode::FORBIDDEN,
            RejectReason::StaleTimestamp,
            "-301 s",
        ),
        (
            "malformed json",
            signed(KEY, now, r#"{"message_id": "m-1", "#),
            StatusCode::BAD_REQUEST,
            RejectReason::Malformed,
            "not valid JSON",
        ),
        (
            "trailing garbage",
            signed(KEY, now, &format!("{good} {{}}")),
            StatusCode::BAD_REQUEST,
            RejectReason::Malformed,
            "not valid JSON",
        ),
        (
            "missing user_id",
            signed(
                KEY,
                now,
                r#"{"message_id":"m-1","content":{"type":"text","text":"hi"}}"#,
            ),
            StatusCode::BAD_REQUEST,
            RejectReason::Malformed,
            "missing field `user_id`",
        ),
        (
            "empty user_id",
            signed(KEY, now, &text_body("")),
            StatusCode::BAD_REQUEST,
            RejectReason::Malformed,
            "user_id: must not be empty",
        ),
        (
            "empty text",
            signed(KEY, now, &with_content(json!({"type": "text", "text": ""}))),
            StatusCode::BAD_REQUEST,
            RejectReason::Malformed,
            "content.text",
        ),
        (
            "unknown content type",
            signed(KEY, now, &with_content(json!({"type": "hologram"}))),
            StatusCode::BAD_REQUEST,
            RejectReason::Malformed,
            "content.type",
        ),
        (
            "content type an app may not send",
            signed(
                KEY,
                now,
                &with_content(json!({"type": "call", "event": "ringing"})),
            ),
            StatusCode::BAD_REQUEST,
            RejectReason::Malformed,
            "content.type",
        ),
        (
            "latitude out of range",
            signed(
                KEY,
                now,
                &with_content(json!({"type": "location", "latitude": 91.0, "longitude": 0.0})),
            ),
            StatusCode::BAD_REQUEST,
            RejectReason::Malformed,
            "content.latitude",
        ),
        (
            "unknown top-level field",
            signed(
                KEY,
                now,
                r#"{"message_id":"m-1","user_id":"u-42","priority":"high","content":{"type":"text","text":"hi"}}"#,
            ),
            StatusCode::BAD_REQUEST,
            RejectReason::Malformed,
            "unknown field `priority`",
        ),
    ];

    let connector = connector_with(&config("http://127.0.0.1:9/r", 5000, false), fixed_clock);
    for (name, req, status, reason, detail) in cases {
        let (router, sink) = router_with(&connector);
        let response = router.oneshot(req).await.unwrap();
        assert_eq!(response.status(), status, "{name}");
        let because = response
            .extensions()
            .get::<RejectedBecause>()
            .cloned()
            .unwrap_or_else(|| panic!("{name}: not refused through Rejection"));
        assert_eq!(because.reason, reason, "{name}");
        assert!(
            because.detail.contains(detail),
            "{name}: detail {:?} lacks {detail:?}",
            because.detail
        );
        let body = json_body(response).await;
        assert_eq!(body["error"], reason.as_str(), "{name}");
        assert!(sink.accepted().is_empty(), "{name}: was accepted");
    }
}

#[tokio::test]
async fn the_replay_window_is_inclusive_at_both_edges() {
    let connector = connector_with(&config("http://127.0.0.1:9/r", 5000, false), fixed_clock);
    for timestamp in [FIXED_NOW - 300, FIXED_NOW + 300] {
        let (router, sink) = router_with(&connector);
        let response = router
            .oneshot(signed(KEY, timestamp, &text_body("u-42")))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{timestamp}");
        assert_eq!(sink.accepted().len(), 1);
    }
}

#[tokio::test]
async fn accepts_a_full_message_and_answers_after_the_pipeline() {
    let body = json!({
        "message_id": "m-7",
        "user_id": "u-42",
        "display_name": "Li Lei",
        "phone": "+8613800138000",
        "customer_id": "c-9",
        "content": {"type": "location", "latitude": 22.54, "longitude": 114.05, "label": "Futian"}
    })
    .to_string();
    for keep_raw in [false, true] {
        let connector =
            connector_with(&config("http://127.0.0.1:9/r", 5000, keep_raw), fixed_clock);
        let (router, sink) = router_with(&connector);
        let response = router.oneshot(signed(KEY, FIXED_NOW, &body)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            json_body(response).await,
            json!({"status": "accepted", "envelope_id": "test-1", "duplicate": false})
        );
        let accepted = sink.accepted();
        assert_eq!(accepted.len(), 1);
        let (channel, message) = &accepted[0];
        assert_eq!(channel.kind, "app");
        assert_eq!(channel.connector_id, "main");
        assert_eq!(message.channel_user_id, "u-42");
        assert_eq!(message.dedupe_key, "m-7");
        assert_eq!(message.display_name.as_deref(), Some("Li Lei"));
        assert_eq!(message.phone.as_deref(), Some("+8613800138000"));
        assert_eq!(message.customer_id.as_deref(), Some("c-9"));
        assert_eq!(message.content.kind(), "location");
        let expected_raw = keep_raw.then(|| serde_json::from_str::<Value>(&body).unwrap());
        assert_eq!(message.raw, expected_raw, "keep_raw = {keep_raw}");
    }
}

#[tokio::test]
async fn a_message_the_pipeline_refuses_is_not_answered_with_success() {
    let connector = connector_with(&config("http://127.0.0.1:9/r", 5000, false), fixed_clock);
    let (router, sink) = router_with(&connector);
    sink.refuse_with(Some(switchboard_sdk::AcceptError::Unavailable(
        "spool full".into(),
    )));
    let response = router
        .clone()
        .oneshot(signed(KEY, FIXED_NOW, &text_body("u-42")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(json_body(response).await["error"], "unavailable");
}

/// A fixture file in the `.http` form: comment lines, request line, headers, blank line,
/// body (without the file's final newline).
pub(crate) struct HttpFixture {
    pub request_line: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpFixture {
    pub(crate) fn parse(text: &str) -> Self {
        let text = text.strip_suffix('\n').unwrap_or(text);
        let (head, body) = text.split_once("\n\n").unwrap();
        let mut lines = head.lines().filter(|l| !l.starts_with('#'));
        let request_line = lines.next().unwrap().to_owned();
        let headers = lines
            .map(|l| {
                let (name, value) = l.split_once(':').unwrap();
                (name.trim().to_owned(), value.trim().to_owned())
            })
            .collect();
        Self {
            request_line,
            headers,
            body: body.to_owned(),
        }
    }

    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .unwrap()
    }
}

#[tokio::test]
async fn the_example_signed_request_is_accepted() {
    let fixture = HttpFixture::parse(include_str!("../fixtures/inbound-text-message.http"));
    assert_eq!(fixture.request_line, "POST /app/main/messages HTTP/1.1");
    let example_key = "example-signing-key-0123456789";
    let mut config = config("http://127.0.0.1:9/r", 5000, false);
    config.signing_key = Some(Secret::new(example_key));
    let connector = connector_with(&config, fixed_clock);
    let (router, sink) = router_with(&connector);
    let mut builder = Request::builder().method("POST").uri("/messages");
    for (name, value) in &fixture.headers {
        builder = builder.header(name, value);
    }
    let response = router
        .oneshot(builder.body(Body::from(fixture.body.clone())).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let accepted = sink.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].1.channel_user_id, "u-42");
    assert_eq!(accepted[0].1.dedupe_key, "m-1");
}

// ---------------------------------------------------------------- outbound

/// What the fake backend saw of one delivery.
#[derive(Debug, Clone)]
struct Seen {
    case: String,
    signature_ok: bool,
    fresh: bool,
    content_type: String,
    timestamp: String,
    signature: String,
    body: String,
}

#[derive(Default)]
struct Backend {
    seen: Mutex<Vec<Seen>>,
}

impl Backend {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Verifies our signature the way the README tells an app backend to, then answers the way
/// the path asks.
async fn fake_backend(
    State(backend): State<Arc<Backend>>,
    Path(case): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let timestamp = get(TIMESTAMP_HEADER);
    let signature = get(SIGNATURE_HEADER);
    let signature_ok = verify_timestamped(KEY.as_bytes(), &timestamp, &body, &signature);
    let fresh = check_timestamp(&timestamp, OffsetDateTime::now_utc(), 300).is_ok();
    backend.seen.lock().unwrap().push(Seen {
        case: case.clone(),
        signature_ok,
        fresh,
        content_type: get("content-type"),
        timestamp,
        signature,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    if !signature_ok {
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    let json = |value: Value| axum::Json(value).into_response();
    match case.as_str() {
        "ok" => json(json!({"message_id": "app-msg-1"})),
        "ok-empty" => StatusCode::NO_CONTENT.into_response(),
        "error-retryable" => json(json!({"error": {"code": "device_offline",
            "message": "device is offline", "retryable": true}})),
        "error-permanent" => json(json!({"error": {"code": "user_blocked",
            "message": "user blocked support messages", "retryable": false}})),
        "limited" => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "7")],
            "slow down",
        )
            .into_response(),
        "unavailable" => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "2")],
            "maintenance",
        )
            .into_response(),
        "request-timeout" => StatusCode::REQUEST_TIMEOUT.into_response(),
        "bad-request" => (StatusCode::BAD_REQUEST, "无效".repeat(300)).into_response(),
        "hang" => std::future::pending().await,
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn start_backend() -> (String, Arc<Backend>) {
    let backend = Arc::new(Backend::default());
    let app = axum::Router::new()
        .route("/{case}", post(fake_backend))
        .with_state(backend.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), backend)
}

fn reply() -> Reply {
    Reply::from_slice(
        br#"{"schema":"switchboard.reply.v1","id":"r-1","conversation_id":"app:main:u-42",
            "content":{"type":"text","text":"It left Shenzhen this morning."},
            "agent":{"id":"a-7","name":"Han Meimei"}}"#,
    )
    .unwrap()
}

fn recipient() -> Recipient {
    Recipient {
        conversation: ConversationId::new("app", "main", "u-42"),
    }
}

type Check = fn(&Result<Delivered, DeliveryError>) -> bool;

#[tokio::test]
async fn classifies_every_answer_of_the_backend() {
    let (base, backend) = start_backend().await;
    let cases: Vec<(&str, Check)> = vec![
        ("ok", |r| {
            *r == Ok(Delivered {
                channel_message_id: Some("app-msg-1".to_owned()),
            })
        }),
        ("ok-empty", |r| *r == Ok(Delivered::default())),
        ("error-retryable", |r| {
            *r == Err(DeliveryError::Retryable {
                code: Some("device_offline".to_owned()),
                text: "device is offline".to_owned(),
                retry_after: None,
            })
        }),
        ("error-permanent", |r| {
            *r == Err(DeliveryError::Permanent {
                code: "user_blocked".to_owned(),
                text: "user blocked support messages".to_owned(),
            })
        }),
        ("limited", |r| {
            *r == Err(DeliveryError::RateLimited {
                retry_after: Some(Duration::from_secs(7)),
            })
        }),
        ("unavailable", |r| {
            *r == Err(DeliveryError::Retryable {
                code: Some("http_503".to_owned()),
                text: "maintenance".to_owned(),
                retry_after: Some(Duration::from_secs(2)),
            })
        }),
        (
            "request-timeout",
            |r| matches!(r, Err(DeliveryError::Retryable { code: Some(code), .. }) if code == "http_408"),
        ),
        ("bad-request", |r| {
            matches!(r, Err(DeliveryError::Permanent { code, text })
                if code == "http_400" && text.chars().count() == MAX_ERROR_TEXT_CHARS
                    && text.starts_with("无效无效"))
        }),
    ];
    for (case, check) in cases {
        let connector = connector_with(
            &config(&format!("{base}/{case}"), 5000, false),
            OffsetDateTime::now_utc,
        );
        let outcome = connector.deliver(&reply(), &recipient()).await;
        assert!(check(&outcome), "{case}: got {outcome:?}");
        let seen = backend.seen();
        let last = seen.last().unwrap();
        assert_eq!(last.case, case);
        assert!(last.signature_ok, "{case}: our signature did not verify");
        assert!(last.fresh, "{case}: our timestamp is not now");
        assert_eq!(last.content_type, "application/json");
        let body: Value = serde_json::from_str(&last.body).unwrap();
        assert_eq!(body["user_id"], "u-42");
        assert_eq!(body["reply"], serde_json::to_value(reply()).unwrap());
    }
    assert_eq!(
        backend.seen().len(),
        8,
        "one request per delivery, no retries of our own"
    );
}

#[tokio::test]
async fn a_hanging_backend_is_cut_off_by_the_timeout() {
    let (base, backend) = start_backend().await;
    let connector = connector_with(
        &config(&format!("{base}/hang"), 200, false),
        OffsetDateTime::now_utc,
    );
    let started = Instant::now();
    // The outer limit only keeps a broken timeout from hanging the test run.
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        connector.deliver(&reply(), &recipient()),
    )
    .await
    .unwrap_or_else(|_| panic!("the webhook timeout did not fire"));
    let elapsed = started.elapsed();
    match outcome {
        Err(DeliveryError::Retryable { text, .. }) => {
            assert!(text.contains("200 ms"), "{text}")
        }
        other => panic!("expected retryable, got {other:?}"),
    }
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(backend.seen().len(), 1);
}

#[tokio::test]
async fn an_unreachable_backend_is_retryable_and_hides_the_url() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let connector = connector_with(
        &config(
            &format!("http://127.0.0.1:{port}/replies?token=secret-token"),
            1000,
            false,
        ),
        OffsetDateTime::now_utc,
    );
    match connector.deliver(&reply(), &recipient()).await {
        Err(DeliveryError::Retryable { text, .. }) => {
            assert!(!text.contains("secret-token"), "{text}")
        }
        other => panic!("expected retryable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_reply_for_another_connector_is_refused_without_sending() {
    let (base, backend) = start_backend().await;
    let connector = connector_with(
        &config(&format!("{base}/ok"), 1000, false),
        OffsetDateTime::now_utc,
    );
    let elsewhere = Recipient {
        conversation: ConversationId::new("app", "other", "u-42"),
    };
    match connector.deliver(&reply(), &elsewhere).await {
        Err(DeliveryError::Permanent { code, .. }) => assert_eq!(code, "wrong_connector"),
        other => panic!("expected permanent, got {other:?}"),
    }
    assert!(backend.seen().is_empty());
}

#[tokio::test]
async fn the_webhook_request_matches_the_documented_example() {
    let fixture = HttpFixture::parse(include_str!("../fixtures/outbound-webhook.http"));
    let (base, backend) = start_backend().await;
    let mut config = config(&format!("{base}/ok"), 1000, false);
    config.signing_key = Some(Secret::new("example-signing-key-0123456789"));
    let connector = connector_with(&config, fixed_clock);
    let reply = Reply::from_slice(
        br#"{"schema":"switchboard.reply.v1","id":"r-1","conversation_id":"app:main:u-42",
            "content":{"type":"text","text":"It left Shenzhen this morning."},
            "in_reply_to":"01JC4Z5W8Q7N3V2M1K0H9G8F7E","agent":{"id":"a-7","name":"Han Meimei"}}"#,
    )
    .unwrap();
    // The fake backend holds the test key, so it answers 401 here; what matters is what
    // it received.
    let _ = connector.deliver(&reply, &recipient()).await;
    let seen = backend.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, fixture.body);
    assert_eq!(seen[0].timestamp, fixture.header(TIMESTAMP_HEADER));
    assert_eq!(seen[0].signature, fixture.header(SIGNATURE_HEADER));
    assert_eq!(seen[0].content_type, fixture.header("Content-Type"));
}
