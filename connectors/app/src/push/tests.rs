//! Push delivery through the connector's own seams, against the local provider fakes: the
//! signed `/devices` route, `deliver` with presence, webhook copy, collapse window and quiet
//! hours, each provider's credentials and errors, dead-token removal.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Request, StatusCode, Version};
use axum::response::IntoResponse;
use axum::routing::post;
use serde_json::{Value, json};
use switchboard_sdk::services::MemoryKv;
use switchboard_sdk::signature::sign_timestamped;
use switchboard_sdk::testing::RecordingSink;
use switchboard_sdk::time::OffsetDateTime;
use switchboard_sdk::{
    ChannelRef, Connector, ConnectorContext, ConversationId, Delivered, DeliveryError, Inbound,
    KvStore, Recipient, Reply,
};
use tower::ServiceExt;

use super::fakes::{Canned, FakeApns, FakeFcm, FakeJpush, p256_key, service_account_json};
use super::payload::ELLIPSIS;
use crate::{AppConfig, AppConnector, KIND, SIGNATURE_HEADER, TIMESTAMP_HEADER};

const KEY: &str = "test-signing-key-0123456789";
const CLIENT_EMAIL: &str = "switchboard@demo-project.iam.gserviceaccount.com";
const TEAM_ID: &str = "TEAM123456";
const KEY_ID: &str = "KEY1234567";
const TOPIC: &str = "com.example.shop";
const JPUSH_APP_KEY: &str = "7d431e42dfa6a6d693ac2d04";
const JPUSH_SECRET: &str = "5e987ac6d2e04d95a9d8f0d1";
const APNS_TOKEN: &str = "7c4b1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c";

/// What the fake app backend received on its reply webhook.
#[derive(Default)]
struct Backend {
    bodies: Mutex<Vec<Value>>,
}

async fn backend_hook(State(backend): State<Arc<Backend>>, body: Bytes) -> impl IntoResponse {
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut bodies = backend.bodies.lock().unwrap_or_else(|p| p.into_inner());
    bodies.push(value);
    axum::Json(json!({"message_id": format!("wh-{}", bodies.len())}))
}

/// The push side's clock: frozen at the test's start and moved only by `advance`, so a
/// test's verdict never depends on how long a loaded machine took between two steps.
#[derive(Clone)]
struct TestClock {
    start: OffsetDateTime,
    offset: Arc<AtomicI64>,
}

impl Default for TestClock {
    fn default() -> Self {
        Self {
            start: OffsetDateTime::now_utc(),
            offset: Arc::default(),
        }
    }
}

impl TestClock {
    fn advance(&self, secs: i64) {
        self.offset.fetch_add(secs, Ordering::SeqCst);
    }

    fn clock(&self) -> super::Clock {
        let (start, offset) = (self.start, self.offset.clone());
        Arc::new(move || {
            start + switchboard_sdk::time::Duration::seconds(offset.load(Ordering::SeqCst))
        })
    }
}

/// One connector wired to fakes of the backend and all three providers.
struct Harness {
    connector: AppConnector,
    kv: Arc<MemoryKv>,
    clock: TestClock,
    fcm: FakeFcm,
    apns: FakeApns,
    jpush: FakeJpush,
    backend: Arc<Backend>,
    dir: PathBuf,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn temp_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sb-app-push-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("temp dir: {e}"));
    dir
}

impl Harness {
    /// `push_keys` go into `[connectors.app.push]`, `tables` after the provider tables.
    async fn start(push_keys: &str, tables: &str) -> Self {
        let backend = Arc::new(Backend::default());
        let router = axum::Router::new()
            .route("/replies", post(backend_hook))
            .with_state(backend.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend_url = format!("http://{}/replies", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });

        let fcm = FakeFcm::start(CLIENT_EMAIL).await;
        let (p8, p8_public) = p256_key();
        let apns = FakeApns::start(&p8_public, TEAM_ID, KEY_ID, TOPIC).await;
        let jpush = FakeJpush::start(JPUSH_APP_KEY, JPUSH_SECRET).await;

        let dir = temp_dir();
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let service_account = write(
            "fcm.json",
            &service_account_json("demo-project", CLIENT_EMAIL, &fcm.token_uri()),
        );
        let p8_file = write("AuthKey.p8", &p8);
        let ca_file = write("ca.pem", &apns.ca_pem);
        let secret_file = write("jpush.secret", &format!("{JPUSH_SECRET}\n"));

        let text = format!(
            r#"
            [[connectors.app]]
            id = "main"
            signing_key = "{KEY}"
            [connectors.app.webhook]
            url = "{backend_url}"
            [connectors.app.push]
            deep_link = "shop://support/{{conversation_id}}?reply={{reply_id}}"
            {push_keys}
            [connectors.app.push.fcm]
            service_account_file = "{service_account}"
            api_base = "{fcm_base}"
            [connectors.app.push.apns]
            team_id = "{TEAM_ID}"
            key_id = "{KEY_ID}"
            private_key_file = "{p8_file}"
            topic = "{TOPIC}"
            api_base = "{apns_base}"
            tls_ca_file = "{ca_file}"
            [connectors.app.push.jpush]
            app_key = "{JPUSH_APP_KEY}"
            master_secret_file = "{secret_file}"
            api_base = "{jpush_base}"
            {tables}
            "#,
            fcm_base = fcm.base,
            apns_base = apns.base,
            jpush_base = jpush.base,
        );
        let config = parse_app_table(&text);
        let settings = config
            .validate()
            .unwrap_or_else(|problems| panic!("config: {problems:?}"));
        let kv = Arc::new(MemoryKv::default());
        let mut context = ConnectorContext::in_memory();
        context.kv = kv.clone();
        let clock = TestClock::default();
        let connector = AppConnector::with_push_clock(
            settings,
            &context,
            OffsetDateTime::now_utc,
            clock.clock(),
        )
        .unwrap_or_else(|e| panic!("build: {:?}", e.0));
        Self {
            connector,
            kv,
            clock,
            fcm,
            apns,
            jpush,
            backend,
            dir,
        }
    }

    async fn post_devices(&self, body: &Value) -> (StatusCode, Value) {
        let body = body.to_string();
        let timestamp = OffsetDateTime::now_utc().unix_timestamp().to_string();
        let signature = sign_timestamped(KEY.as_bytes(), &timestamp, body.as_bytes());
        self.call(
            Request::builder()
                .method("POST")
                .uri("/devices")
                .header("content-type", "application/json")
                .header(TIMESTAMP_HEADER, timestamp)
                .header(SIGNATURE_HEADER, signature)
                .body(Body::from(body))
                .unwrap(),
        )
        .await
    }

    async fn call(&self, request: Request<Body>) -> (StatusCode, Value) {
        let channel = ChannelRef {
            kind: KIND.to_owned(),
            connector_id: "main".to_owned(),
        };
        let router = self
            .connector
            .routes(Inbound::new(Arc::new(RecordingSink::default()), channel));
        let response = router.oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn register(&self, user: &str, provider: &str, platform: &str, token: &str) {
        let (status, body) = self
            .post_devices(
                &json!({"action": "register", "user_id": user, "provider": provider,
                "platform": platform, "token": token, "locale": "en_US", "app_version": "5.2.0"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "register: {body}");
    }

    async fn tokens_of(&self, user: &str) -> Vec<String> {
        let registry = self.connector.push.as_ref().map(|p| p.registry());
        let devices = registry.unwrap().devices(user).await.unwrap();
        devices.into_iter().map(|d| d.token).collect()
    }

    async fn deliver(&self, user: &str, reply: &Reply) -> Result<Delivered, DeliveryError> {
        let recipient = Recipient {
            conversation: ConversationId::new("app", "main", user),
        };
        self.connector.deliver(reply, &recipient).await
    }

    fn webhook_posts(&self) -> usize {
        self.backend
            .bodies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Provider requests so far: FCM sends, APNs sends, JPush sends.
    fn provider_requests(&self) -> (usize, usize, usize) {
        (
            self.fcm.state.sends.seen().len(),
            self.apns.state.sends.seen().len(),
            self.jpush.state.sends.seen().len(),
        )
    }
}

fn parse_app_table(text: &str) -> AppConfig {
    let mut doc: toml::Table = toml::from_str(text).unwrap_or_else(|e| panic!("toml: {e}"));
    let table = doc
        .remove("connectors")
        .and_then(|c| c.as_table().cloned())
        .and_then(|mut c| c.remove("app"))
        .and_then(|a| a.as_array().cloned())
        .and_then(|mut a| (!a.is_empty()).then(|| a.remove(0)))
        .unwrap_or_else(|| panic!("no [[connectors.app]]"));
    table
        .try_into()
        .unwrap_or_else(|e: toml::de::Error| panic!("config: {e}"))
}

fn reply(user: &str, id: &str, text: &str) -> Reply {
    Reply::from_slice(
        json!({"schema": "switchboard.reply.v1", "id": id,
            "conversation_id": format!("app:main:{user}"),
            "content": {"type": "text", "text": text},
            "agent": {"id": "a-7", "name": "Han Meimei"}})
        .to_string()
        .as_bytes(),
    )
    .unwrap()
}

fn urgent_reply(user: &str, id: &str, text: &str) -> Reply {
    Reply::from_slice(
        json!({"schema": "switchboard.reply.v1", "id": id,
            "conversation_id": format!("app:main:{user}"),
            "content": {"type": "text", "text": text, "extra": {"urgent": true}}})
        .to_string()
        .as_bytes(),
    )
    .unwrap()
}

fn fcm_token(n: u32) -> String {
    format!("fcm-token-{n}:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx")
}

// ---------------------------------------------------------------- registry

#[tokio::test]
async fn the_devices_route_checks_signature_and_fields() {
    let h = Harness::start("", "").await;
    let good = json!({"action": "register", "user_id": "u-1", "provider": "fcm",
        "platform": "android", "token": fcm_token(1)});
    let with = |key: &str, value: Value| {
        let mut body = good.clone();
        body[key] = value;
        body
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "apns on android",
            json!({"action": "register", "user_id": "u-1",
            "provider": "apns", "platform": "android", "token": APNS_TOKEN}),
            "platform",
        ),
        (
            "apns token not hex",
            json!({"action": "register", "user_id": "u-1",
            "provider": "apns", "platform": "ios", "token": "../../etc"}),
            "token",
        ),
        ("token with a space", with("token", json!("a b")), "token"),
        ("empty token", with("token", json!("")), "token"),
        (
            "unknown provider",
            with("provider", json!("huawei")),
            "unknown variant",
        ),
        ("bad locale", with("locale", json!("en US")), "locale"),
        (
            "user id with space",
            with("user_id", json!("u 1")),
            "user_id",
        ),
        ("unknown field", with("colour", json!("blue")), "colour"),
        (
            "unknown action",
            json!({"action": "hug", "user_id": "u-1"}),
            "unknown variant",
        ),
        ("not an object", json!([1, 2]), "object"),
    ];
    for (name, body, detail) in cases {
        let (status, answer) = h.post_devices(&body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {answer}");
        assert_eq!(answer["error"], "malformed", "{name}");
        let text = answer["detail"].as_str().unwrap_or_default();
        assert!(text.contains(detail), "{name}: {text:?} lacks {detail:?}");
    }
    assert!(h.tokens_of("u-1").await.is_empty());

    // Signed with another key: refused before anything is read.
    let body = good.to_string();
    let ts = OffsetDateTime::now_utc().unix_timestamp().to_string();
    let forged = sign_timestamped(b"someone-elses-key-0123", &ts, body.as_bytes());
    let (status, answer) = h
        .call(
            Request::builder()
                .method("POST")
                .uri("/devices")
                .header(TIMESTAMP_HEADER, ts)
                .header(SIGNATURE_HEADER, forged)
                .body(Body::from(body))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(answer["error"], "bad_signature");
    assert!(h.tokens_of("u-1").await.is_empty());
}

#[tokio::test]
async fn devices_are_registered_refreshed_and_removed() {
    let h = Harness::start("max_devices_per_user = 3", "").await;
    h.register("u-1", "fcm", "android", &fcm_token(1)).await;
    h.register("u-1", "apns", "ios", APNS_TOKEN).await;
    // The same token again refreshes it instead of adding one.
    h.register("u-1", "fcm", "android", &fcm_token(1)).await;
    assert_eq!(h.tokens_of("u-1").await.len(), 2);
    h.register("u-1", "jpush", "android", "1a0018970a5c6b3d")
        .await;
    h.register("u-1", "fcm", "ios", &fcm_token(2)).await;
    // Four registered, three kept: the oldest one went.
    let tokens = h.tokens_of("u-1").await;
    assert_eq!(tokens.len(), 3, "{tokens:?}");

    let (status, answer) = h
        .post_devices(&json!({"action": "remove", "user_id": "u-1", "token": fcm_token(2)}))
        .await;
    assert_eq!(
        (status, answer["removed"].as_u64()),
        (StatusCode::OK, Some(1))
    );
    let (_, answer) = h
        .post_devices(&json!({"action": "remove", "user_id": "u-1", "token": "never-registered"}))
        .await;
    assert_eq!(answer["removed"], 0);
    let (_, answer) = h
        .post_devices(&json!({"action": "remove_all", "user_id": "u-1"}))
        .await;
    assert_eq!(answer["removed"], 2);
    assert!(h.tokens_of("u-1").await.is_empty());
}

#[tokio::test]
async fn a_token_moves_to_the_user_who_registered_it_last() {
    let h = Harness::start("", "").await;
    h.register("alice", "fcm", "android", &fcm_token(7)).await;
    h.register("bob", "fcm", "android", &fcm_token(7)).await;
    assert!(
        h.tokens_of("alice").await.is_empty(),
        "alice's replies would reach bob's phone"
    );
    assert_eq!(h.tokens_of("bob").await, vec![fcm_token(7)]);
}

// ---------------------------------------------------------------- policy

#[tokio::test]
async fn a_user_in_the_app_gets_the_webhook_only() {
    let h = Harness::start("", "").await;
    h.register("u-1", "fcm", "android", &fcm_token(1)).await;
    h.kv.set(
        "presence:app:main:u-1",
        b"instance-a",
        Some(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    let delivered = h
        .deliver("u-1", &reply("u-1", "r-1", "hello"))
        .await
        .unwrap();
    assert_eq!(delivered.channel_message_id.as_deref(), Some("wh-1"));
    assert_eq!(h.webhook_posts(), 1);
    assert_eq!(h.provider_requests(), (0, 0, 0));

    // Gone from the app: the next reply is pushed, and the backend still gets its copy.
    h.kv.delete("presence:app:main:u-1").await.unwrap();
    let delivered = h
        .deliver("u-1", &reply("u-1", "r-2", "hello again"))
        .await
        .unwrap();
    assert_eq!(h.webhook_posts(), 2);
    assert_eq!(h.provider_requests(), (1, 0, 0));
    assert!(
        delivered
            .channel_message_id
            .is_some_and(|id| id.starts_with("projects/demo-project/messages/")),
        "the push message id is reported"
    );
}

#[tokio::test]
async fn without_devices_the_webhook_copy_is_the_delivery() {
    let h = Harness::start("", "").await;
    let delivered = h.deliver("u-9", &reply("u-9", "r-1", "hi")).await.unwrap();
    assert_eq!(delivered.channel_message_id.as_deref(), Some("wh-1"));

    let h = Harness::start("also_webhook = false", "").await;
    match h.deliver("u-9", &reply("u-9", "r-1", "hi")).await {
        Err(DeliveryError::Permanent { code, .. }) => assert_eq!(code, "no_device"),
        other => panic!("expected no_device, got {other:?}"),
    }
    assert_eq!(h.webhook_posts(), 0);
}

#[tokio::test]
async fn a_retry_repeats_only_the_steps_that_failed() {
    let h = Harness::start("", "").await;
    h.register("u-1", "fcm", "android", &fcm_token(1)).await;
    h.register("u-1", "apns", "ios", APNS_TOKEN).await;
    h.apns
        .state
        .sends
        .script([Canned::json(503, json!({"reason": "ServiceUnavailable"}))]);
    let first = h.deliver("u-1", &reply("u-1", "r-1", "hello")).await;
    assert!(
        matches!(&first, Err(DeliveryError::Retryable { code: Some(code), .. }) if code == "apns_serviceunavailable"),
        "{first:?}"
    );
    assert_eq!((h.webhook_posts(), h.provider_requests()), (1, (1, 1, 0)));
    let second = h.deliver("u-1", &reply("u-1", "r-1", "hello")).await;
    assert!(second.is_ok(), "{second:?}");
    // Webhook and FCM were done: only APNs is asked again.
    assert_eq!((h.webhook_posts(), h.provider_requests()), (1, (1, 2, 0)));
}

#[tokio::test]
async fn replies_in_a_window_update_one_notification() {
    let h = Harness::start("", "").await;
    h.register("u-1", "fcm", "android", &fcm_token(1)).await;
    h.register("u-1", "jpush", "android", "1a0018970a5c6b3d")
        .await;
    for (id, text) in [
        ("r-1", "It left Shenzhen."),
        ("r-2", "ETA tomorrow."),
        ("r-3", "Anything else?"),
    ] {
        h.deliver("u-1", &reply("u-1", id, text)).await.unwrap();
    }
    let fcm = h.fcm.state.sends.seen();
    let bodies: Vec<String> = fcm
        .iter()
        .map(|s| {
            s.json()["message"]["notification"]["body"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(
        bodies,
        [
            "It left Shenzhen.",
            "2 new messages from customer service",
            "3 new messages from customer service"
        ]
    );
    let tags: Vec<Value> = fcm
        .iter()
        .map(|s| s.json()["message"]["android"]["collapse_key"].clone())
        .collect();
    assert!(
        tags.iter().all(|t| *t == tags[0] && t.is_string()),
        "{tags:?}"
    );
    assert!(
        fcm.iter()
            .all(|s| s.json()["message"]["android"]["notification"]["tag"] == tags[0])
    );
    let counts: Vec<Value> = fcm
        .iter()
        .map(|s| s.json()["message"]["data"]["count"].clone())
        .collect();
    assert_eq!(counts, [json!("1"), json!("2"), json!("3")]);

    // JPush collapses by replacing the previous message id.
    let jpush = h.jpush.state.sends.seen();
    assert_eq!(jpush.len(), 3);
    assert!(jpush[0].json()["options"].get("override_msg_id").is_none());
    assert_eq!(
        jpush[1].json()["options"]["override_msg_id"],
        json!(54_043_195_529_u64)
    );
    assert_eq!(
        jpush[2].json()["options"]["override_msg_id"],
        json!(54_043_195_530_u64)
    );

    // The same reply retried counts once.
    let again = h
        .deliver("u-1", &reply("u-1", "r-3", "Anything else?"))
        .await;
    assert!(again.is_ok());
    assert_eq!(
        h.fcm.state.sends.seen().len(),
        3,
        "done steps are not repeated"
    );

    // A new window (the old one expired) starts again with the reply's own text under a
    // new collapse id.
    h.kv.delete("app:main:push:window:u-1").await.unwrap();
    h.deliver("u-1", &reply("u-1", "r-4", "New topic"))
        .await
        .unwrap();
    let last = h.fcm.state.sends.seen().pop().unwrap().json();
    assert_eq!(last["message"]["notification"]["body"], "New topic");
    assert_ne!(last["message"]["android"]["collapse_key"], tags[0]);
}

#[tokio::test]
async fn a_retried_reply_is_counted_once_in_its_window() {
    let h = Harness::start("also_webhook = false", "").await;
    h.register("u-1", "fcm", "android", &fcm_token(1)).await;
    h.deliver("u-1", &reply("u-1", "r-1", "one")).await.unwrap();
    h.fcm.state.sends.script([Canned::json(
        503,
        json!({"error": {"code": 503, "status": "UNAVAILABLE"}}),
    )]);
    assert!(h.deliver("u-1", &reply("u-1", "r-2", "two")).await.is_err());
    h.deliver("u-1", &reply("u-1", "r-2", "two")).await.unwrap();
    let counts: Vec<Value> = h
        .fcm
        .state
        .sends
        .seen()
        .iter()
        .map(|s| s.json()["message"]["data"]["count"].clone())
        .collect();
    assert_eq!(counts, [json!("1"), json!("2"), json!("2")]);
}

#[tokio::test]
async fn quiet_hours_make_pushes_silent_unless_urgent() {
    // Quiet all day long but one minute, whatever the time the test runs.
    let now = OffsetDateTime::now_utc();
    let end = now + Duration::from_secs(12 * 3600);
    let start = now - Duration::from_secs(11 * 3600 + 59 * 60);
    let table = format!(
        "[connectors.app.push.quiet_hours]\nutc_offset = \"Z\"\nstart = \"{:02}:{:02}\"\nend = \"{:02}:{:02}\"",
        start.hour(),
        start.minute(),
        end.hour(),
        end.minute()
    );
    let h = Harness::start("", &table).await;
    h.register("u-1", "fcm", "android", &fcm_token(1)).await;
    h.register("u-1", "apns", "ios", APNS_TOKEN).await;
    h.deliver("u-1", &reply("u-1", "r-1", "good night"))
        .await
        .unwrap();
    h.register("u-2", "fcm", "android", &fcm_token(2)).await;
    h.deliver("u-2", &urgent_reply("u-2", "r-3", "your card was blocked"))
        .await
        .unwrap();

    let fcm = h.fcm.state.sends.seen();
    let quiet = fcm[0].json()["message"]["android"].clone();
    assert_eq!(quiet["priority"], "normal");
    assert_eq!(
        quiet["notification"]["notification_priority"],
        "PRIORITY_LOW"
    );
    assert!(quiet["notification"].get("sound").is_none());
    let urgent = fcm[1].json()["message"]["android"].clone();
    assert_eq!(urgent["priority"], "high");
    assert_eq!(urgent["notification"]["sound"], "default");

    let apns = &h.apns.state.sends.seen()[0];
    assert_eq!(apns.header("apns-priority"), "5");
    assert_eq!(apns.json()["aps"]["interruption-level"], "passive");
    assert!(apns.json()["aps"].get("sound").is_none());
}

#[tokio::test]
async fn quiet_hours_in_hold_mode_wait_and_then_send_once() {
    let now = OffsetDateTime::now_utc();
    let end = now + Duration::from_secs(2 * 3600);
    let start = now - Duration::from_secs(3600);
    let table = format!(
        "[connectors.app.push.quiet_hours]\nutc_offset = \"Z\"\nstart = \"{:02}:{:02}\"\nend = \"{:02}:{:02}\"\nmode = \"hold\"",
        start.hour(),
        start.minute(),
        end.hour(),
        end.minute()
    );
    let h = Harness::start("", &table).await;
    h.register("u-1", "fcm", "android", &fcm_token(1)).await;
    match h.deliver("u-1", &reply("u-1", "r-1", "tomorrow")).await {
        Err(DeliveryError::Retryable {
            code: Some(code),
            retry_after: Some(wait),
            ..
        }) => {
            assert_eq!(code, "quiet_hours");
            let expected = 2 * 3600 - i64::from(now.second()) - 60;
            let got = i64::try_from(wait.as_secs()).unwrap();
            assert!(
                (expected..=expected + 120).contains(&got),
                "waits {got} s, expected about {expected}"
            );
        }
        other => panic!("expected a hold, got {other:?}"),
    }
    assert_eq!((h.webhook_posts(), h.provider_requests()), (1, (0, 0, 0)));
    // The daemon retries after the wait: the push goes out, the webhook is not posted again.
    h.clock.advance(2 * 3600 + 60);
    h.deliver("u-1", &reply("u-1", "r-1", "tomorrow"))
        .await
        .unwrap();
    assert_eq!((h.webhook_posts(), h.provider_requests()), (1, (1, 0, 0)));
}

#[tokio::test]
async fn long_text_is_cut_to_each_providers_limit_on_a_character_boundary() {
    let h = Harness::start("also_webhook = false", "").await;
    h.register("u-1", "fcm", "android", &fcm_token(1)).await;
    h.register("u-1", "apns", "ios", APNS_TOKEN).await;
    h.register("u-1", "jpush", "ios", "1a0018970a5c6b3d").await;
    let text = "您的包裹已从深圳发出，预计明天送达。📦".repeat(400);
    h.deliver("u-1", &reply("u-1", "r-1", &text)).await.unwrap();

    let fcm = h.fcm.state.sends.seen().remove(0);
    let message = &fcm.json()["message"];
    let token_len = message["token"].as_str().unwrap().len();
    assert!(
        fcm.body.len() <= super::FCM_PAYLOAD_LIMIT + token_len,
        "fcm {}",
        fcm.body.len()
    );
    let apns = h.apns.state.sends.seen().remove(0);
    assert!(
        apns.body.len() <= super::APNS_PAYLOAD_LIMIT,
        "apns {}",
        apns.body.len()
    );
    let jpush = h.jpush.state.sends.seen().remove(0);
    let notification = serde_json::to_vec(&jpush.json()["notification"]).unwrap();
    assert!(
        notification.len() <= super::JPUSH_PAYLOAD_LIMIT,
        "jpush {}",
        notification.len()
    );
    for body in [
        message["notification"]["body"].as_str(),
        apns.json()["aps"]["alert"]["body"].as_str(),
        jpush.json()["notification"]["ios"]["alert"]["body"].as_str(),
    ] {
        let body = body.unwrap_or_default();
        let kept = body
            .strip_suffix(ELLIPSIS)
            .unwrap_or_else(|| panic!("no ellipsis: {body}"));
        assert!(
            text.starts_with(kept) && kept.len() > 3000,
            "{} bytes kept",
            kept.len()
        );
    }
}

// ---------------------------------------------------------------- FCM

#[tokio::test]
async fn fcm_sends_with_a_verified_assertion_and_reuses_the_access_token() {
    let h = Harness::start("also_webhook = false", "").await;
    h.register("u-1", "fcm", "android", &fcm_token(1)).await;
    h.register("u-2", "fcm", "ios", &fcm_token(2)).await;
    for (user, id) in [("u-1", "r-1"), ("u-2", "r-2"), ("u-1", "r-3")] {
        h.deliver(user, &reply(user, id, "It left Shenzhen."))
            .await
            .unwrap();
    }
    // The fake refuses any assertion not signed by the service account's key.
    assert_eq!(h.fcm.tokens_issued(), 1, "one access token for every send");
    let request = &h.fcm.state.token_requests.seen()[0];
    assert_eq!(
        request.header("content-type"),
        "application/x-www-form-urlencoded"
    );

    let sends = h.fcm.state.sends.seen();
    assert_eq!(sends.len(), 3);
    assert!(
        sends
            .iter()
            .all(|s| s.header("authorization") == "Bearer ya29.fake-1")
    );
    assert!(
        sends
            .iter()
            .all(|s| s.path == "/v1/projects/demo-project/messages:send")
    );
    let android = sends[0].json();
    let message = &android["message"];
    assert_eq!(message["token"], json!(fcm_token(1)));
    assert_eq!(
        message["notification"],
        json!({"title": "Customer service", "body": "It left Shenzhen."})
    );
    assert_eq!(message["data"]["conversation_id"], "app:main:u-1");
    assert_eq!(message["data"]["reply_id"], "r-1");
    assert_eq!(
        message["data"]["deep_link"],
        "shop://support/app%3Amain%3Au-1?reply=r-1"
    );
    assert_eq!(message["android"]["ttl"], "86400s");
    assert!(message.get("apns").is_none());
    let ios = sends[1].json();
    assert_eq!(ios["message"]["apns"]["headers"]["apns-priority"], "10");
    assert!(
        ios["message"]["apns"]["headers"]["apns-collapse-id"]
            .as_str()
            .is_some_and(|id| id.len() <= 64)
    );
    assert!(ios["message"].get("android").is_none());
}

#[tokio::test]
async fn fcm_refreshes_an_expiring_token_once_for_many_concurrent_sends() {
    let h = Harness::start("also_webhook = false\ncollapse_window_secs = 0", "").await;
    for n in 0..12 {
        h.register(&format!("u-{n}"), "fcm", "android", &fcm_token(n))
            .await;
    }
    h.deliver("u-0", &reply("u-0", "r-0", "first"))
        .await
        .unwrap();
    assert_eq!(h.fcm.tokens_issued(), 1);
    // 3600 s tokens are replaced 300 s early.
    h.clock.advance(3299);
    h.deliver("u-0", &reply("u-0", "r-1", "still fresh"))
        .await
        .unwrap();
    assert_eq!(h.fcm.tokens_issued(), 1, "refreshed too early");
    h.clock.advance(2);
    let h = &h;
    let sends = (1..12).map(|n| {
        let user = format!("u-{n}");
        let reply = reply(&user, &format!("r-x{n}"), "after expiry");
        async move { h.deliver(&user, &reply).await }
    });
    let outcomes = futures_util::future::join_all(sends).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(
        h.fcm.tokens_issued(),
        2,
        "exactly one refresh for eleven sends"
    );
    let last = h.fcm.state.sends.seen().pop().unwrap();
    assert_eq!(last.header("authorization"), "Bearer ya29.fake-2");
}

#[tokio::test]
async fn fcm_renews_a_refused_token_once_and_sends_again() {
    let h = Harness::start("also_webhook = false", "").await;
    h.register("u-1", "fcm", "android", &fcm_token(1)).await;
    h.deliver("u-1", &reply("u-1", "r-1", "one")).await.unwrap();
    h.fcm.revoke_tokens();
    h.deliver("u-1", &reply("u-1", "r-2", "two")).await.unwrap();
    assert_eq!(h.fcm.tokens_issued(), 2);
    let auths: Vec<String> = h
        .fcm
        .state
        .sends
        .seen()
        .iter()
        .map(|s| s.header("authorization"))
        .collect();
    assert_eq!(
        auths,
        [
            "Bearer ya29.fake-1",
            "Bearer ya29.fake-1",
            "Bearer ya29.fake-2"
        ]
    );
}

#[tokio::test]
async fn concurrent_sends_share_one_failed_token_fetch() {
    let h = Harness::start("also_webhook = false\ncollapse_window_secs = 0", "").await;
    for n in 0..8 {
        h.register(&format!("u-{n}"), "fcm", "android", &fcm_token(n))
            .await;
    }
    // The token endpoint is down for as long as anyone asks.
    h.fcm.state.token_requests.script(vec![
        Canned::json(503, json!({"error": "backend_error"}));
        8
    ]);
    let h = &h;
    let sends = (0..8).map(|n| {
        let user = format!("u-{n}");
        let reply = reply(&user, &format!("r-{n}"), "hi");
        async move { h.deliver(&user, &reply).await }
    });
    let outcomes = futures_util::future::join_all(sends).await;
    // The eight wait for the first fetch and share its failure instead of each asking in
    // turn; at most one that came after the failure was known asks again.
    let asked = h.fcm.state.token_requests.seen().len();
    assert!(
        (1..=2).contains(&asked),
        "token endpoint asked {asked} times"
    );
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Err(e) if e.is_retryable())),
        "{outcomes:?}"
    );
    assert!(h.fcm.state.sends.seen().is_empty());
}

/// What a delivery outcome looks like in a table.
fn describe(outcome: &Result<Delivered, DeliveryError>) -> String {
    match outcome {
        Ok(_) => "ok".to_owned(),
        Err(DeliveryError::Permanent { code, .. }) => format!("permanent {code}"),
        Err(DeliveryError::RateLimited { retry_after }) => {
            format!("limited {}", retry_after.map_or(0, |d| d.as_secs()))
        }
        Err(DeliveryError::Retryable {
            code, retry_after, ..
        }) => format!(
            "retry {} {}",
            code.as_deref().unwrap_or("-"),
            retry_after.map_or(0, |d| d.as_secs())
        ),
    }
}

fn fcm_error(status: u16, rpc: &str, code: Option<&str>, message: &str) -> Canned {
    let details: Vec<Value> = code
        .map(|code| {
            json!({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code})
        })
        .into_iter()
        .collect();
    Canned::json(
        status,
        json!({"error": {"code": status, "message": message, "status": rpc, "details": details}}),
    )
}

#[tokio::test]
async fn fcm_error_classes_give_their_outcome_and_dead_tokens_go() {
    let h = Harness::start("also_webhook = false", "").await;
    let cases: Vec<(Canned, &str, bool)> = vec![
        (
            fcm_error(
                404,
                "NOT_FOUND",
                Some("UNREGISTERED"),
                "Requested entity was not found.",
            ),
            "permanent fcm_unregistered",
            true,
        ),
        (
            fcm_error(
                400,
                "INVALID_ARGUMENT",
                Some("INVALID_ARGUMENT"),
                "The registration token is not a valid FCM registration token",
            ),
            "permanent fcm_invalid_token",
            true,
        ),
        (
            Canned::json(
                400,
                json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
            "message": "Invalid value at 'message.data[0].value'",
            "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": "message.data[0].value"}]}]}}),
            ),
            "permanent fcm_invalid_argument",
            false,
        ),
        (
            fcm_error(
                403,
                "PERMISSION_DENIED",
                Some("SENDER_ID_MISMATCH"),
                "SenderId mismatch",
            ),
            "permanent fcm_sender_id_mismatch",
            true,
        ),
        (
            fcm_error(
                429,
                "RESOURCE_EXHAUSTED",
                Some("QUOTA_EXCEEDED"),
                "Quota exceeded",
            )
            .with_header("retry-after", "30"),
            "limited 30",
            false,
        ),
        (
            fcm_error(503, "UNAVAILABLE", Some("UNAVAILABLE"), "unavailable")
                .with_header("retry-after", "10"),
            "retry fcm_unavailable 10",
            false,
        ),
        (
            fcm_error(500, "INTERNAL", Some("INTERNAL"), "internal"),
            "retry fcm_internal 0",
            false,
        ),
        (
            fcm_error(
                401,
                "UNAUTHENTICATED",
                Some("THIRD_PARTY_AUTH_ERROR"),
                "APNs certificate invalid",
            ),
            "permanent fcm_third_party_auth_error",
            false,
        ),
    ];
    for (n, (canned, expected, removed)) in cases.into_iter().enumerate() {
        let user = format!("u-{n}");
        let token = fcm_token(u32::try_from(n).unwrap());
        h.register(&user, "fcm", "android", &token).await;
        h.fcm.state.sends.script([canned]);
        let outcome = h
            .deliver(&user, &reply(&user, &format!("r-{n}"), "hi"))
            .await;
        assert_eq!(describe(&outcome), expected, "case {n}");
        let left = h.tokens_of(&user).await;
        assert_eq!(
            left.is_empty(),
            removed,
            "case {n} ({expected}): token left {left:?}"
        );
    }

    // The token endpoint refusing the key is permanent and sends nothing.
    let before = h.fcm.state.sends.seen().len();
    h.fcm.revoke_tokens();
    h.fcm.state.token_requests.script([Canned::json(
        400,
        json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}),
    )]);
    h.register("u-grant", "fcm", "android", &fcm_token(99))
        .await;
    let outcome = h
        .deliver("u-grant", &reply("u-grant", "r-grant", "hi"))
        .await;
    // One send with the revoked token, refused; the new token is then refused.
    assert_eq!(describe(&outcome), "permanent fcm_oauth_invalid_grant");
    assert_eq!(h.fcm.state.sends.seen().len(), before + 1);
    assert_eq!(
        h.tokens_of("u-grant").await.len(),
        1,
        "a credentials problem keeps the token"
    );
}

// ---------------------------------------------------------------- APNs

#[tokio::test]
async fn apns_sends_over_http2_with_one_provider_token_for_its_lifetime() {
    let h = Harness::start("also_webhook = false", "").await;
    h.register("u-1", "apns", "ios", APNS_TOKEN).await;
    let started = OffsetDateTime::now_utc().unix_timestamp();
    for id in ["r-1", "r-2"] {
        let delivered = h
            .deliver("u-1", &reply("u-1", id, "It left Shenzhen."))
            .await
            .unwrap();
        assert!(
            delivered
                .channel_message_id
                .is_some_and(|id| id.starts_with("00000000-"))
        );
    }
    let sends = h.apns.state.sends.seen();
    assert_eq!(sends.len(), 2);
    for seen in &sends {
        assert_eq!(seen.version, Version::HTTP_2, "APNs speaks HTTP/2 only");
        assert_eq!(seen.path, format!("/3/device/{APNS_TOKEN}"));
        assert_eq!(seen.header("apns-topic"), TOPIC);
        assert_eq!(seen.header("apns-push-type"), "alert");
        assert_eq!(seen.header("apns-priority"), "10");
        let expiration: i64 = seen.header("apns-expiration").parse().unwrap();
        assert!(
            (started + 86_400..=started + 86_460).contains(&expiration),
            "{expiration}"
        );
    }
    assert_eq!(
        sends[0].header("apns-collapse-id"),
        sends[1].header("apns-collapse-id")
    );
    let payload = sends[0].json();
    assert_eq!(
        payload["aps"]["alert"],
        json!({"title": "Customer service", "body": "It left Shenzhen."})
    );
    assert_eq!(payload["aps"]["sound"], "default");
    assert_eq!(payload["reply_id"], "r-1");
    assert_eq!(
        h.apns.provider_tokens().len(),
        1,
        "the provider token is reused"
    );

    // Older than the reuse period: signed anew.
    h.clock.advance(super::PROVIDER_TOKEN_REUSE_SECS);
    h.deliver("u-1", &reply("u-1", "r-3", "later"))
        .await
        .unwrap();
    assert_eq!(h.apns.provider_tokens().len(), 2);
}

#[tokio::test]
async fn apns_re_signs_an_expired_provider_token_and_sends_again() {
    let h = Harness::start("also_webhook = false", "").await;
    h.register("u-1", "apns", "ios", APNS_TOKEN).await;
    h.deliver("u-1", &reply("u-1", "r-1", "one")).await.unwrap();
    h.apns.expire_provider_tokens();
    // Signed within the same second the old one was, a new token could be identical: move on.
    h.clock.advance(1);
    h.deliver("u-1", &reply("u-1", "r-2", "two")).await.unwrap();
    assert_eq!(h.apns.provider_tokens().len(), 2);
    assert_eq!(
        h.apns.state.sends.seen().len(),
        3,
        "one refused, one sent again"
    );
}

#[tokio::test]
async fn apns_error_classes_give_their_outcome_and_dead_tokens_go() {
    let h = Harness::start("also_webhook = false", "").await;
    let cases: Vec<(u16, &str, &str, bool)> = vec![
        (410, "Unregistered", "permanent apns_unregistered", true),
        (400, "BadDeviceToken", "permanent apns_baddevicetoken", true),
        (
            400,
            "DeviceTokenNotForTopic",
            "permanent apns_devicetokennotfortopic",
            true,
        ),
        (
            413,
            "PayloadTooLarge",
            "permanent apns_payloadtoolarge",
            false,
        ),
        (429, "TooManyRequests", "limited 0", false),
        (
            500,
            "InternalServerError",
            "retry apns_internalservererror 0",
            false,
        ),
        (
            503,
            "ServiceUnavailable",
            "retry apns_serviceunavailable 0",
            false,
        ),
        (
            403,
            "BadCertificate",
            "permanent apns_badcertificate",
            false,
        ),
    ];
    for (n, (status, reason, expected, removed)) in cases.into_iter().enumerate() {
        let user = format!("u-{n}");
        let token = format!("{n:02}{}", &APNS_TOKEN[2..]);
        h.register(&user, "apns", "ios", &token).await;
        h.apns
            .state
            .sends
            .script([Canned::json(status, json!({"reason": reason}))]);
        let outcome = h
            .deliver(&user, &reply(&user, &format!("r-{n}"), "hi"))
            .await;
        assert_eq!(describe(&outcome), expected, "{status} {reason}");
        assert_eq!(
            h.tokens_of(&user).await.is_empty(),
            removed,
            "{status} {reason}"
        );
    }
}

// ---------------------------------------------------------------- JPush

#[tokio::test]
async fn jpush_sends_with_basic_auth_and_the_platforms_block() {
    let h = Harness::start("also_webhook = false", "").await;
    h.register("u-1", "jpush", "android", "1a0018970a5c6b3d")
        .await;
    h.register("u-2", "jpush", "ios", "191e35f7e0a8a4b2d").await;
    let delivered = h
        .deliver("u-1", &reply("u-1", "r-1", "It left Shenzhen."))
        .await
        .unwrap();
    assert_eq!(delivered.channel_message_id.as_deref(), Some("54043195529"));
    h.deliver("u-2", &reply("u-2", "r-2", "It left Shenzhen."))
        .await
        .unwrap();

    let sends = h.jpush.state.sends.seen();
    assert_eq!(
        sends.len(),
        2,
        "the fake refuses requests without the right basic auth"
    );
    assert!(sends.iter().all(|s| s.version == Version::HTTP_11));
    let android = sends[0].json();
    assert_eq!(android["platform"], json!(["android"]));
    assert_eq!(
        android["audience"],
        json!({"registration_id": ["1a0018970a5c6b3d"]})
    );
    let block = &android["notification"]["android"];
    assert_eq!(block["alert"], "It left Shenzhen.");
    assert_eq!(block["title"], "Customer service");
    assert_eq!(block["extras"]["reply_id"], "r-1");
    assert!(android["notification"].get("ios").is_none());
    assert_eq!(android["options"]["time_to_live"], 86_400);

    let ios = sends[1].json();
    assert_eq!(ios["platform"], json!(["ios"]));
    assert_eq!(
        ios["notification"]["ios"]["alert"]["body"],
        "It left Shenzhen."
    );
    assert_eq!(ios["notification"]["ios"]["sound"], "default");
    assert_eq!(ios["options"]["apns_production"], true);
    assert!(ios["options"]["apns_collapse_id"].is_string());
}

#[tokio::test]
async fn jpush_error_codes_give_their_outcome_and_dead_tokens_go() {
    let h = Harness::start("also_webhook = false", "").await;
    let error = |status: u16, code: u32, message: &str| {
        Canned::json(status, json!({"error": {"code": code, "message": message}}))
    };
    let cases: Vec<(Canned, &str, bool)> = vec![
        (
            error(
                400,
                1011,
                "cannot find user by this audience or has been inactive for more than 255 days",
            ),
            "permanent jpush_1011",
            true,
        ),
        (
            error(429, 2002, "Rate limit exceeded").with_header("x-rate-limit-reset", "12"),
            "limited 12",
            false,
        ),
        (
            error(500, 1000, "Server error"),
            "retry jpush_1000 0",
            false,
        ),
        (
            error(503, 1030, "Internal service timeout"),
            "retry jpush_1030 0",
            false,
        ),
        (
            error(401, 1004, "Authen failed"),
            "permanent jpush_1004",
            false,
        ),
        (
            error(400, 1003, "Audience value must be JSON Array format!"),
            "permanent jpush_1003",
            false,
        ),
        (
            Canned::text(502, "Bad Gateway"),
            "retry jpush_http_502 0",
            false,
        ),
    ];
    for (n, (canned, expected, removed)) in cases.into_iter().enumerate() {
        let user = format!("u-{n}");
        h.register(&user, "jpush", "android", &format!("1a0018970a5c6b{n:02}"))
            .await;
        h.jpush.state.sends.script([canned]);
        let outcome = h
            .deliver(&user, &reply(&user, &format!("r-{n}"), "hi"))
            .await;
        assert_eq!(describe(&outcome), expected, "case {n}");
        assert_eq!(h.tokens_of(&user).await.is_empty(), removed, "case {n}");
    }
}

// ---------------------------------------------------------------- examples

#[tokio::test]
async fn the_example_device_registration_is_accepted() {
    let fixture =
        crate::tests::HttpFixture::parse(include_str!("../../fixtures/push/devices-register.http"));
    assert_eq!(fixture.request_line, "POST /app/main/devices HTTP/1.1");
    let config = parse_app_table(&format!(
        r#"
        [[connectors.app]]
        id = "main"
        signing_key = "example-signing-key-0123456789"
        [connectors.app.webhook]
        url = "http://127.0.0.1:9/replies"
        [connectors.app.push.apns]
        team_id = "{TEAM_ID}"
        key_id = "{KEY_ID}"
        private_key = '''{}'''
        topic = "{TOPIC}"
        "#,
        p256_key().0
    ));
    let settings = config.validate().unwrap_or_else(|p| panic!("{p:?}"));
    let fixed =
        || OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let connector = AppConnector::with_push_clock(
        settings,
        &ConnectorContext::in_memory(),
        fixed,
        Arc::new(fixed),
    )
    .unwrap_or_else(|e| panic!("{:?}", e.0));
    let mut request = Request::builder().method("POST").uri("/devices");
    for (name, value) in &fixture.headers {
        request = request.header(name, value);
    }
    let channel = ChannelRef {
        kind: KIND.to_owned(),
        connector_id: "main".to_owned(),
    };
    let response = connector
        .routes(Inbound::new(Arc::new(RecordingSink::default()), channel))
        .oneshot(request.body(Body::from(fixture.body.clone())).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let devices = connector
        .push
        .as_ref()
        .unwrap()
        .registry()
        .devices("u-42")
        .await
        .unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].locale.as_deref(), Some("zh-CN"));
    assert_eq!(devices[0].updated_at, 1_700_000_000);
}

#[tokio::test]
async fn provider_requests_match_the_documented_examples() {
    let h = Harness::start("also_webhook = false", "").await;
    h.register("u-42", "fcm", "android", &fcm_token(42)).await;
    h.register("u-42", "apns", "ios", APNS_TOKEN).await;
    h.register("u-42", "jpush", "android", "1a0018970a5c6b3d")
        .await;
    let reply = Reply::from_slice(
        br#"{"schema":"switchboard.reply.v1","id":"r-1","conversation_id":"app:main:u-42",
            "content":{"type":"text","text":"It left Shenzhen this morning."},
            "agent":{"id":"a-7","name":"Han Meimei"}}"#,
    )
    .unwrap();
    h.deliver("u-42", &reply).await.unwrap();
    let examples = [
        (
            h.fcm.state.sends.seen(),
            include_str!("../../fixtures/push/fcm-android-message.json"),
        ),
        (
            h.apns.state.sends.seen(),
            include_str!("../../fixtures/push/apns-payload.json"),
        ),
        (
            h.jpush.state.sends.seen(),
            include_str!("../../fixtures/push/jpush-android-push.json"),
        ),
    ];
    for (seen, example) in examples {
        assert_eq!(seen.len(), 1);
        let example: Value = serde_json::from_str(example).unwrap_or(Value::Null);
        assert_eq!(seen[0].json(), example, "{}", seen[0].json());
    }
}

// ---------------------------------------------------------------- config

#[tokio::test]
async fn the_commented_push_example_builds_once_uncommented() {
    let dir = temp_dir();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .unwrap_or_else(|e| panic!("{e}"));
    let text = include_str!("../../config.toml")
        .lines()
        // Keys are commented with a single '#'; prose with '# '.
        .map(|line| match line.strip_prefix('#') {
            Some(key) if !key.starts_with([' ', '#']) && !key.is_empty() => key,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
        .replace(
            "/etc/switchboard/fcm-service-account.json",
            &write(
                "fcm.json",
                &service_account_json(
                    "shop-app-prod",
                    CLIENT_EMAIL,
                    "https://oauth2.googleapis.com/token",
                ),
            ),
        )
        .replace(
            "/etc/switchboard/test-ca.pem",
            &write("ca.pem", &ca.cert.pem()),
        )
        .replace(
            "/etc/switchboard/AuthKey_KEY1234567.p8",
            &write("AuthKey.p8", &p256_key().0),
        )
        .replace(
            "master_secret_env = \"SWITCHBOARD_JPUSH_MASTER_SECRET\"",
            "master_secret = \"5e987ac6d2e04d95a9d8f0d1\"",
        );
    let config = parse_app_table(&text);
    let push = config
        .push
        .as_ref()
        .unwrap_or_else(|| panic!("the push example is missing"));
    assert!(push.fcm.is_some() && push.apns.is_some() && push.jpush.is_some());
    assert!(push.quiet_hours.is_some() && push.locales.contains_key("zh"));
    let settings = config.validate().unwrap_or_else(|p| panic!("{p:?}"));
    let connector = AppConnector::new(
        settings,
        &ConnectorContext::in_memory(),
        OffsetDateTime::now_utc,
    )
    .unwrap_or_else(|e| panic!("{:?}", e.0));
    let _ = std::fs::remove_dir_all(&dir);
    let channel = ChannelRef {
        kind: KIND.to_owned(),
        connector_id: connector.id().to_owned(),
    };
    // Mounted: an unsigned request is refused, not unknown.
    let response = connector
        .routes(Inbound::new(Arc::new(RecordingSink::default()), channel))
        .oneshot(
            Request::builder()
                .method("POST")
                .uri("/devices")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[test]
fn push_settings_are_checked_with_their_keys() {
    let base = r#"
        [[connectors.app]]
        id = "main"
        signing_key = "0123456789abcdef0123"
        [connectors.app.webhook]
        url = "https://backend.example.com/replies"
        [connectors.app.push]
        @PUSH@
        [connectors.app.push.jpush]
        app_key = "7d431e42dfa6a6d693ac2d04"
        master_secret = "5e987ac6d2e04d95a9d8f0d1"
        @JPUSH@
        @TABLES@
    "#;
    let config = |push: &str, jpush: &str, tables: &str| {
        parse_app_table(
            &base
                .replace("@PUSH@", push)
                .replace("@JPUSH@", jpush)
                .replace("@TABLES@", tables),
        )
    };
    assert!(config("", "", "").validate().is_ok());
    let missing = std::env::temp_dir().join("sb-app-push-surely-missing.pem");
    let cases: Vec<(&str, String, String, String, &str)> = vec![
        ("collapse text without count", "collapse_text = \"new messages\"".into(), "".into(), "".into(), "push.collapse_text"),
        ("empty title", "title = \" \"".into(), "".into(), "".into(), "push.title"),
        ("window too long", "collapse_window_secs = 3601".into(), "".into(), "".into(), "push.collapse_window_secs"),
        ("ttl too long", "ttl_secs = 864001".into(), "".into(), "".into(), "push.ttl_secs"),
        ("zero devices", "max_devices_per_user = 0".into(), "".into(), "".into(), "push.max_devices_per_user"),
        ("unknown placeholder", "deep_link = \"shop://c/{conversation}\"".into(), "".into(), "".into(), "push.deep_link"),
        ("bad locale", "".into(), "".into(), "[connectors.app.push.locales.\"zh CN\"]\ntitle = \"客服\"".into(), "push.locales.zh CN"),
        ("locale collapse text", "".into(), "".into(), "[connectors.app.push.locales.zh]\ncollapse_text = \"新消息\"".into(), "push.locales.zh.collapse_text"),
        ("quiet offset", "".into(), "".into(), "[connectors.app.push.quiet_hours]\nutc_offset = \"8\"\nstart = \"22:00\"\nend = \"08:00\"".into(), "push.quiet_hours.utc_offset"),
        ("quiet same times", "".into(), "".into(), "[connectors.app.push.quiet_hours]\nutc_offset = \"+08:00\"\nstart = \"22:00\"\nend = \"22:00\"".into(), "push.quiet_hours.end"),
        ("jpush bad base", "".into(), "api_base = \"ftp://api.jpush.cn\"".into(), "".into(), "push.jpush.api_base"),
        ("jpush timeout", "".into(), "timeout_ms = 5".into(), "".into(), "push.jpush.timeout_ms"),
        ("jpush missing ca", "".into(), format!("tls_ca_file = {:?}", missing.display().to_string()), "".into(), "push.jpush.tls_ca_file"),
        ("apns over http", "".into(), "".into(), "[connectors.app.push.apns]\nteam_id = \"TEAM123456\"\nkey_id = \"KEY1234567\"\nprivate_key = \"x\"\ntopic = \"com.example.shop\"\napi_base = \"http://api.push.apple.com\"".into(), "push.apns.api_base"),
        ("apns bad key", "".into(), "".into(), "[connectors.app.push.apns]\nteam_id = \"TEAM123456\"\nkey_id = \"KEY1234567\"\nprivate_key = \"not a key\"\ntopic = \"com.example.shop\"".into(), "push.apns.private_key"),
        ("apns short team", "".into(), "".into(), "[connectors.app.push.apns]\nteam_id = \"TEAM\"\nkey_id = \"KEY1234567\"\nprivate_key = \"x\"\ntopic = \"com.example.shop\"".into(), "push.apns.team_id"),
        ("fcm no key", "".into(), "".into(), "[connectors.app.push.fcm]\nproject_id = \"demo\"".into(), "push.fcm.service_account"),
        ("fcm not json", "".into(), "".into(), "[connectors.app.push.fcm]\nservice_account = \"{not json\"".into(), "push.fcm.service_account"),
        ("fcm not a service account", "".into(), "".into(), "[connectors.app.push.fcm]\nservice_account = '{\"type\":\"authorized_user\",\"private_key\":\"x\",\"client_email\":\"a@b\"}'".into(), "push.fcm.service_account"),
    ];
    for (name, push, jpush, tables, key) in cases {
        let problems = config(&push, &jpush, &tables)
            .validate()
            .err()
            .unwrap_or_default();
        assert!(
            problems.iter().any(|p| p.key == key),
            "{name}: expected a problem at {key}, got {problems:?}"
        );
        assert!(
            problems.iter().all(|p| !p.message.contains("5e987ac6")),
            "{name}: a message shows the secret"
        );
    }

    // No provider at all.
    let none = parse_app_table(
        &base
            .replace("@PUSH@", "")
            .replace("[connectors.app.push.jpush]", "")
            .replace("app_key = \"7d431e42dfa6a6d693ac2d04\"", "")
            .replace("master_secret = \"5e987ac6d2e04d95a9d8f0d1\"", "")
            .replace("@JPUSH@", "")
            .replace("@TABLES@", ""),
    );
    let problems = none.validate().err().unwrap_or_default();
    assert!(problems.iter().any(|p| p.key == "push"), "{problems:?}");
}

#[tokio::test]
async fn the_presence_key_is_the_one_the_web_chat_sets() {
    let h = Harness::start("", "").await;
    let push = h.connector.push.as_ref().unwrap();
    assert_eq!(push.presence_key("u-42"), "presence:app:main:u-42");
}
