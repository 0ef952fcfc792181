//! The generic profile inside the crate: signed JSON webhooks in, a local fake gateway out.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::{fixture, reply};
use serde_json::{Value, json};
use switchboard_connector_sms::{SmsConfig, SmsConnector};
use switchboard_sdk::signature::hmac_webhook::HmacSigner;
use switchboard_sdk::signature::verify_timestamped;
use switchboard_sdk::testing::{ComplianceFixture, Harness, check_connector, hmac_request, serve};
use switchboard_sdk::time::OffsetDateTime;
use switchboard_sdk::{
    AcceptError, Connector, ConnectorContext, Content, DeliveryError, RejectReason, Secret,
};

const KEY: &str = "generic-test-key";
const PUBLIC_URL: &str = "https://sb.example.com/sms/gw";

fn config(send_url: &str, split: bool) -> SmsConfig {
    let text = format!(
        r#"
        id = "gw"
        provider = "generic"
        public_url = "{PUBLIC_URL}"
        [generic]
        send_url = "{send_url}"
        signing_key = "{KEY}"
        from = "1069000012345"
        split = {split}
        default_country_code = "86"
        "#
    );
    toml::from_str(&text).unwrap_or_else(|err| panic!("config: {err}"))
}

fn connector(send_url: &str, split: bool) -> SmsConnector {
    SmsConnector::new(&config(send_url, split), &ConnectorContext::in_memory())
        .unwrap_or_else(|err| panic!("build: {:?}", err.0))
}

fn signed(path: &str, body: &str, key: &str, at: OffsetDateTime) -> Request<Body> {
    hmac_request(&HmacSigner::new(Secret::new(key)), path, body, at)
}

fn now_signed(path: &str, body: &str) -> Request<Body> {
    signed(path, body, KEY, OffsetDateTime::now_utc())
}

struct GenericFixture;

impl ComplianceFixture for GenericFixture {
    fn valid_request(&self) -> Request<Body> {
        now_signed("/inbound", &fixture("generic/inbound.json"))
    }
    fn forged_request(&self) -> Request<Body> {
        signed(
            "/inbound",
            &fixture("generic/inbound.json"),
            "wrong-key",
            OffsetDateTime::now_utc(),
        )
    }
    fn malformed_request(&self) -> Request<Body> {
        now_signed("/inbound", r#"{"from": "+8613812345678", "text": "no id"}"#)
    }
    fn stale_request(&self) -> Option<Request<Body>> {
        Some(signed(
            "/inbound",
            &fixture("generic/inbound.json"),
            KEY,
            OffsetDateTime::now_utc() - time::Duration::minutes(10),
        ))
    }
}

#[tokio::test]
async fn passes_the_compliance_harness() {
    check_connector(
        Arc::new(connector("https://gw.example.com/send", false)),
        &GenericFixture,
    )
    .await;
}

#[tokio::test]
async fn a_signed_message_with_a_national_number_is_normalized() {
    let h = Harness::new(&connector("https://gw.example.com/send", false));
    let answer = h
        .call(now_signed("/inbound", &fixture("generic/inbound.json")))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let accepted = h.sink.accepted();
    assert_eq!(accepted.len(), 1);
    let message = &accepted[0].1;
    assert_eq!(message.channel_user_id, "+8613812345678");
    assert_eq!(message.dedupe_key, "gw-20240501-0001");
    assert_eq!(
        message.content.searchable_text(),
        Some("我的快递到哪了? SF1234567890123")
    );
}

#[tokio::test]
async fn parts_are_stored_then_accepted_once_complete() {
    let h = Harness::new(&connector("https://gw.example.com/send", false));
    let part2 = fixture("generic/inbound-part2.json");
    let part1 = fixture("generic/inbound-part1.json");

    let answer = h.call(now_signed("/inbound", &part2)).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "a stored part is answered 200"
    );
    assert!(answer.body.contains("stored"), "{}", answer.body);
    assert!(
        h.sink.accepted().is_empty(),
        "nothing is accepted until complete"
    );

    // The pipeline cannot take the whole message: the last part is not acknowledged...
    h.sink
        .refuse_with(Some(AcceptError::Unavailable("spool full".into())));
    let answer = h.call(now_signed("/inbound", &part1)).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    // ...and the gateway's retry of it completes the message from the stored parts.
    h.sink.refuse_with(None);
    let answer = h.call(now_signed("/inbound", &part1)).await;
    assert_eq!(answer.status, StatusCode::OK);
    let accepted = h.sink.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(
        accepted[0].1.content.searchable_text(),
        Some("第一部分，第二部分。")
    );
    assert_eq!(accepted[0].1.dedupe_key, "gw-20240501-0101");

    // The parts were cleared: a late duplicate of part 2 starts a new, incomplete set.
    let answer = h.call(now_signed("/inbound", &part2)).await;
    assert!(answer.body.contains("stored"), "{}", answer.body);
    assert_eq!(h.sink.accepted().len(), 1);
}

/// What the fake gateway does with the request for one part.
#[derive(Clone, Debug)]
enum GatewayMode {
    Ok,
    FailPart(u64, u16, Value),
}

#[derive(Clone)]
struct FakeGateway {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    mode: Arc<Mutex<GatewayMode>>,
}

impl FakeGateway {
    async fn start() -> Self {
        let mut fake = Self {
            url: String::new(),
            bodies: Arc::default(),
            mode: Arc::new(Mutex::new(GatewayMode::Ok)),
        };
        let router = Router::new()
            .route("/send", post(gateway_send))
            .with_state(fake.clone());
        let addr = serve(router).await;
        fake.url = format!("http://{addr}/send");
        fake
    }

    fn set(&self, mode: GatewayMode) {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner()) = mode;
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

async fn gateway_send(
    State(fake): State<FakeGateway>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    if !verify_timestamped(
        KEY.as_bytes(),
        &header("x-timestamp"),
        &body,
        &header("x-signature"),
    ) {
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    let Ok(parsed) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not json").into_response();
    };
    fake.bodies
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(parsed.clone());
    let mode = fake.mode.lock().unwrap_or_else(|p| p.into_inner()).clone();
    match mode {
        GatewayMode::FailPart(part, status, answer) if parsed["part"] == part => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            axum::Json(answer),
        )
            .into_response(),
        _ => axum::Json(
            json!({"message_id": format!("gw-out-{}", parsed["id"].as_str().unwrap_or_default())}),
        )
        .into_response(),
    }
}

#[tokio::test]
async fn replies_are_signed_json_with_the_documented_fields() {
    let gateway = FakeGateway::start().await;
    let sms = connector(&gateway.url, false);
    let (r, recipient) = reply("gw", "+8613812345678", Content::text("您的快递已发出"));
    let delivered = sms.deliver(&r, &recipient).await;
    assert_eq!(
        delivered.map(|d| d.channel_message_id),
        Ok(Some(format!("gw-out-{}", r.id)))
    );
    let bodies = gateway.bodies();
    assert_eq!(bodies.len(), 1);
    let body = &bodies[0];
    assert_eq!(body["id"], r.id.as_str());
    assert_eq!(body["reply_id"], r.id.as_str());
    assert_eq!(body["to"], "+8613812345678");
    assert_eq!(body["from"], "1069000012345");
    assert_eq!(body["text"], "您的快递已发出");
    assert_eq!(body["part"], 1);
    assert_eq!(body["parts"], 1);
    assert_eq!(body["encoding"], "ucs2");
    assert_eq!(body["segments"], 1);
    assert_eq!(
        body["status_callback"],
        format!("{PUBLIC_URL}/status?reply_id={}", r.id).as_str()
    );
}

#[tokio::test]
async fn without_split_a_long_reply_is_one_request_with_its_segment_count() {
    let gateway = FakeGateway::start().await;
    let sms = connector(&gateway.url, false);
    let text = "快".repeat(140);
    let (r, recipient) = reply("gw", "+8613812345678", Content::text(text.clone()));
    assert!(sms.deliver(&r, &recipient).await.is_ok());
    let bodies = gateway.bodies();
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["text"], text.as_str());
    assert_eq!(bodies[0]["segments"], 3);
}

#[tokio::test]
async fn with_split_each_part_is_sent_and_a_retry_resumes_where_it_failed() {
    let gateway = FakeGateway::start().await;
    let sms = connector(&gateway.url, true);
    let text = format!("{}{}{}", "甲".repeat(67), "乙".repeat(67), "丙".repeat(10));
    let (r, recipient) = reply("gw", "+8613812345678", Content::text(text));
    gateway.set(GatewayMode::FailPart(
        2,
        503,
        json!({"error": {"code": "busy", "message": "try later", "retryable": true}}),
    ));
    let first = sms.deliver(&r, &recipient).await;
    assert!(
        matches!(&first, Err(DeliveryError::Retryable { code: Some(c), .. }) if c == "busy"),
        "{first:?}"
    );
    gateway.set(GatewayMode::Ok);
    let second = sms.deliver(&r, &recipient).await;
    assert_eq!(
        second.map(|d| d.channel_message_id),
        Ok(Some(format!("gw-out-{}:1", r.id)))
    );
    let sent: Vec<(String, String)> = gateway
        .bodies()
        .iter()
        .map(|b| {
            (
                b["id"].as_str().unwrap_or_default().to_owned(),
                b["text"]
                    .as_str()
                    .unwrap_or_default()
                    .chars()
                    .take(1)
                    .collect(),
            )
        })
        .collect();
    let id = |n: u8| format!("{}:{n}", r.id);
    assert_eq!(
        sent,
        [
            (id(1), "甲".to_owned()),
            (id(2), "乙".to_owned()),
            (id(2), "乙".to_owned()),
            (id(3), "丙".to_owned()),
        ],
        "part 1 is not sent twice"
    );
    assert!(gateway.bodies().iter().all(|b| b["parts"] == 3));
}

#[tokio::test]
async fn gateway_errors_are_classified_and_opted_out_is_remembered() {
    let gateway = FakeGateway::start().await;
    let sms = connector(&gateway.url, false);
    let cases = [
        (429, json!({}), "rate"),
        (200, json!({"error": {"code": "rate_limited"}}), "rate"),
        (
            400,
            json!({"error": {"code": "bad_number", "message": "no such number"}}),
            "permanent",
        ),
        (500, json!({"oops": true}), "retryable"),
    ];
    for (status, answer, want) in cases {
        gateway.set(GatewayMode::FailPart(1, status, answer.clone()));
        let (r, recipient) = reply("gw", "+8613812345678", Content::text("x"));
        let got = sms.deliver(&r, &recipient).await;
        let ok = match want {
            "rate" => matches!(got, Err(DeliveryError::RateLimited { .. })),
            "permanent" => matches!(got, Err(DeliveryError::Permanent { .. })),
            _ => matches!(got, Err(DeliveryError::Retryable { .. })),
        };
        assert!(ok, "{status} {answer} gave {got:?}");
    }
    gateway.set(GatewayMode::FailPart(
        1,
        200,
        json!({"error": {"code": "opted_out", "message": "user sent TD"}}),
    ));
    let (r, recipient) = reply("gw", "+8613812345678", Content::text("x"));
    assert!(sms.deliver(&r, &recipient).await.is_err());
    gateway.set(GatewayMode::Ok);
    let before = gateway.bodies().len();
    let (r, recipient) = reply("gw", "+8613812345678", Content::text("y"));
    assert!(matches!(
        sms.deliver(&r, &recipient).await,
        Err(DeliveryError::Permanent { code, .. }) if code == "opted_out"
    ));
    assert_eq!(gateway.bodies().len(), before);
}

#[tokio::test]
async fn td_opts_out_and_start_opts_back_in() {
    let gateway = FakeGateway::start().await;
    let sms = connector(&gateway.url, false);
    let h = Harness::new(&sms);
    let body = |id: &str, text: &str| {
        json!({"message_id": id, "from": "13812345678", "text": text}).to_string()
    };
    assert_eq!(
        h.call(now_signed("/inbound", &body("g1", "TD")))
            .await
            .status,
        StatusCode::OK
    );
    let (r, recipient) = reply("gw", "+8613812345678", Content::text("x"));
    assert!(matches!(
        sms.deliver(&r, &recipient).await,
        Err(DeliveryError::Permanent { code, .. }) if code == "opted_out"
    ));
    assert_eq!(
        h.call(now_signed("/inbound", &body("g2", "start")))
            .await
            .status,
        StatusCode::OK
    );
    assert!(sms.deliver(&r, &recipient).await.is_ok());
    assert_eq!(h.sink.accepted().len(), 2, "keywords are still messages");
}

#[tokio::test]
async fn status_callbacks_become_events_with_the_reply_id() {
    let h = Harness::new(&connector("https://gw.example.com/send", false));
    let answer = h
        .call(now_signed(
            "/status?reply_id=reply-42",
            &fixture("generic/status-failed.json"),
        ))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let reported = h.sink.reported();
    assert_eq!(reported.len(), 1);
    let event = &reported[0].1;
    assert_eq!(event.kind, "delivery.status");
    assert_eq!(event.reply_id.as_deref(), Some("reply-42"));
    assert_eq!(event.channel_message_id.as_deref(), Some("gw-out-77"));
    assert_eq!(event.data["status"], "failed");
    assert_eq!(event.data["error_code"], "MK:0001");
    assert_eq!(event.retryable, Some(false));

    let forged = signed(
        "/status",
        &fixture("generic/status-failed.json"),
        "wrong",
        OffsetDateTime::now_utc(),
    );
    let answer = h.call(forged).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(
        answer.rejected.map(|r| r.reason),
        Some(RejectReason::BadSignature)
    );
    assert_eq!(h.sink.reported().len(), 1);
}

#[tokio::test]
async fn an_unreachable_gateway_is_retryable() {
    // Bind and drop a listener to get a port nobody listens on.
    let addr = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        listener.local_addr().unwrap_or_else(|err| panic!("{err}"))
    };
    let sms = connector(&format!("http://{addr}/send"), false);
    let (r, recipient) = reply("gw", "+8613812345678", Content::text("x"));
    let got = tokio::time::timeout(Duration::from_secs(20), sms.deliver(&r, &recipient)).await;
    assert!(
        matches!(got, Ok(Err(DeliveryError::Retryable { .. }))),
        "{got:?}"
    );
}
