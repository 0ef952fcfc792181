//! End-to-end harness: starts the real `switchboard` binary on port 0 against the real
//! RabbitMQ, with a unique exchange/queue prefix per test so tests run in parallel, and
//! offers the helpdesk's side (AMQP) and the app backend's side (a local webhook server).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use sha2::Sha256;

/// The broker every test talks to; `SWITCHBOARD_TEST_AMQP_URL` points the suite at another
/// node (e.g. a private one for the fault tests, which stop and alarm their broker).
pub fn amqp_url() -> String {
    std::env::var("SWITCHBOARD_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// The Redis tests use; `SWITCHBOARD_TEST_REDIS_URL` overrides it.
pub fn redis_url() -> String {
    std::env::var("SWITCHBOARD_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned())
}

/// The RabbitMQ node `rabbitmqctl -n` addresses; `SWITCHBOARD_TEST_RABBITMQ_NODE` overrides
/// the default node (none: rabbitmqctl's own default).
pub fn rabbitmq_node() -> Option<String> {
    std::env::var("SWITCHBOARD_TEST_RABBITMQ_NODE").ok()
}

/// `rabbitmqctl` aimed at the test broker's node.
pub fn rabbitmqctl_command() -> Command {
    let mut command = Command::new("rabbitmqctl");
    if let Some(node) = rabbitmq_node() {
        command.args(["-n", &node]);
    }
    command
}

pub const APP_KEY: &str = "e2e-signing-key-0123456789";

/// A unique name for this test's AMQP objects.
pub fn unique_prefix(test: &str) -> String {
    format!(
        "sbtest-{test}-{}",
        ulid::Ulid::new().to_string().to_lowercase()
    )
}

/// A test's scratch directory, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(prefix);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Knobs of the generated config.
pub struct Setup {
    pub prefix: String,
    pub webhook_url: String,
    pub per_user_per_minute: u32,
    pub max_body_bytes: usize,
    pub extra: String,
}

impl Setup {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            webhook_url: "http://127.0.0.1:9/unused".to_owned(),
            per_user_per_minute: 100_000,
            max_body_bytes: 16 * 1024,
            extra: String::new(),
        }
    }

    /// The queue every envelope of skill `skill` lands in.
    pub fn queue(&self, skill: &str) -> String {
        format!("{}.agents.{skill}", self.prefix)
    }

    pub fn config(&self, spool: &Path) -> String {
        let p = &self.prefix;
        format!(
            r#"
[daemon]
instance_id = "{p}"
shutdown_grace_secs = 10

[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[broker]
url = "{amqp}"
prefix = "{p}"
confirm_timeout_ms = 1000
reconnect_min_ms = 100
reconnect_max_ms = 1000

[spool]
path = "{spool}"
max_bytes = 67108864
drain_batch = 100

[tiers]
names = ["standard", "vip"]
customers = {{ "app:shop:u-vip" = "vip" }}

[[queues]]
name = "{p}.agents.claims"
bindings = ["claims.*"]

[[queues]]
name = "{p}.agents.general"
bindings = ["general.*"]

[[routing.rules]]
name = "damaged"
keywords = ["damaged", "破损"]
skill = "claims"
priority = 6

[routing.default]
skill = "general"
priority = 1

[outbound]
prefetch = 16
max_attempts = 4
retry_min_ms = 20
retry_max_ms = 200

[[connectors.app]]
id = "shop"
signing_key = "{APP_KEY}"

[connectors.app.webhook]
url = "{webhook}"
timeout_ms = 2000

[connectors.app.limits]
max_body_bytes = {max_body}
per_user_per_minute = {per_user}
inbound_per_second = 100000
inbound_burst = 100000
outbound_per_second = 1000
outbound_burst = 1000
{extra}
"#,
            amqp = amqp_url(),
            spool = spool.join("spool.redb").display(),
            webhook = self.webhook_url,
            max_body = self.max_body_bytes,
            per_user = self.per_user_per_minute,
            extra = self.extra,
        )
    }
}

/// A running daemon.
pub struct Daemon {
    child: Child,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub log: PathBuf,
}

impl Daemon {
    /// Writes `config` next to the spool and starts the binary; returns once it listens.
    pub fn start(dir: &Path, config: &str) -> Self {
        let config_path = dir.join("switchboard.toml");
        std::fs::write(&config_path, config).expect("write config");
        let log = dir.join(format!("daemon-{}.log", ulid::Ulid::new()));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["run", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "info,switchboard=debug")
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("spawn switchboard");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "daemon did not start; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        let addr = |name: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|part| part.strip_prefix(&format!("{name}=")))
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no {name} address in {line:?}"))
        };
        Self {
            public: addr("public"),
            admin: addr("admin"),
            child,
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit within `deadline`.
    pub async fn terminate(&mut self, deadline: Duration) -> std::process::ExitStatus {
        signal(self.pid(), "TERM");
        let child = &mut self.child;
        wait_for("the daemon to exit", deadline, || {
            let status = child.try_wait().expect("wait");
            async move { status }
        })
        .await
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/readyz` says the broker is connected.
    pub async fn wait_broker(&self) {
        wait_for("broker connected", Duration::from_secs(30), || async {
            reqwest::get(self.admin_url("/readyz"))
                .await
                .ok()?
                .json::<serde_json::Value>()
                .await
                .ok()
                .filter(|v| v["broker"] == "connected")
        })
        .await;
    }

    /// A metric's value from `/metrics`, summed over series whose line contains `filter`.
    pub async fn metric(&self, name: &str, filter: &str) -> f64 {
        let text = reqwest::get(self.admin_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(filter))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal by name with the system's kill.
pub fn signal(pid: i32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// Polls `probe` until it yields a value or `deadline` passes (then panics naming `what`).
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    loop {
        poll.tick().await;
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
    }
}

/// `(timestamp, signature)` for an app request body.
pub fn sign(body: &[u8], timestamp: i64) -> (String, String) {
    let ts = timestamp.to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(APP_KEY.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    (ts, hex::encode(mac.finalize().into_bytes()))
}

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A text message body from `user`.
pub fn text_message(message_id: &str, user: &str, text: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "message_id": message_id,
        "user_id": user,
        "display_name": "Test User",
        "phone": "+8613800138000",
        "content": {"type": "text", "text": text},
    }))
    .unwrap()
}

/// Posts a signed app message; returns the status and the JSON answer.
pub async fn post_signed(
    client: &reqwest::Client,
    daemon: &Daemon,
    body: Vec<u8>,
) -> (StatusCode, serde_json::Value) {
    let (ts, sig) = sign(&body, now());
    let response = client
        .post(daemon.url("/app/shop/messages"))
        .header("X-Switchboard-Timestamp", ts)
        .header("X-Switchboard-Signature", sig)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .expect("post");
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    let json = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, json)
}

pub async fn amqp() -> Connection {
    Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("test AMQP connection")
}

/// A message taken off a queue.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: serde_json::Value,
    /// The body's bytes as published (what an envelope signature covers).
    pub raw: Vec<u8>,
    pub properties: BasicProperties,
    pub routing_key: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<String> {
        self.properties
            .headers()
            .as_ref()?
            .inner()
            .get(name)
            .and_then(|v| v.as_long_string().map(|s| s.to_string()))
    }
}

/// Consumes (and acks) until `count` messages arrived or `deadline` passed. Uses a channel of
/// its own and closes it, so messages prefetched beyond `count` go back to the queue.
pub async fn take(
    conn: &Connection,
    queue: &str,
    count: usize,
    deadline: Duration,
) -> Vec<Received> {
    let channel = conn.create_channel().await.expect("channel");
    let _ = channel.basic_qos(100, BasicQosOptions::default()).await;
    let tag = format!("test-{}", ulid::Ulid::new());
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut out = Vec::new();
    let start = Instant::now();
    while out.len() < count {
        let left = deadline.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, consumer.next()).await {
            Ok(Some(Ok(delivery))) => {
                delivery.ack(BasicAckOptions::default()).await.expect("ack");
                out.push(Received {
                    body: serde_json::from_slice(&delivery.data).unwrap_or(serde_json::Value::Null),
                    raw: delivery.data.clone(),
                    properties: delivery.properties.clone(),
                    routing_key: delivery.routing_key.to_string(),
                });
            }
            _ => break,
        }
    }
    let _ = channel.close(200, "taken".into()).await;
    out
}

/// Messages currently ready in `queue` (passive declare).
pub async fn depth(channel: &Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("passive declare")
        .message_count()
}

/// A queue of our own bound to the events exchange for `pattern`.
pub async fn events_queue(channel: &Channel, prefix: &str, pattern: &str) -> String {
    let queue = format!("{prefix}.test-events");
    channel
        .exchange_declare(
            format!("{prefix}.events").as_str().into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("events exchange");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("events queue");
    channel
        .queue_bind(
            queue.as_str().into(),
            format!("{prefix}.events").as_str().into(),
            pattern.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind events");
    queue
}

/// Publishes a reply the way a helpdesk does.
pub async fn publish_reply(channel: &Channel, prefix: &str, body: &serde_json::Value) {
    channel
        .basic_publish(
            format!("{prefix}.outbound").as_str().into(),
            "reply".into(),
            BasicPublishOptions::default(),
            &serde_json::to_vec(body).unwrap(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish reply");
}

/// Deletes every queue and exchange a test's prefix made.
pub async fn cleanup(prefix: &str, queues: &[String]) {
    let Ok(conn) = Connection::connect(&amqp_url(), ConnectionProperties::default()).await else {
        return;
    };
    let Ok(channel) = conn.create_channel().await else {
        return;
    };
    let mut all: Vec<String> = queues.to_vec();
    for suffix in ["unroutable", "outbound", "dead", "test-events"] {
        all.push(format!("{prefix}.{suffix}"));
    }
    for queue in all {
        let _ = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for suffix in ["inbound", "unroutable", "outbound", "events", "dead"] {
        let _ = channel
            .exchange_delete(
                format!("{prefix}.{suffix}").as_str().into(),
                Default::default(),
            )
            .await;
    }
    let _ = conn.close(200, "test done".into()).await;
}

/// What the fake app backend does with the next requests.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    Ok,
    Status(u16),
}

/// A local app backend receiving reply webhooks and checking our signature.
#[derive(Clone, Default)]
pub struct Backend {
    pub received: Arc<Mutex<Vec<serde_json::Value>>>,
    pub bad_signatures: Arc<Mutex<usize>>,
    /// Answers to give, in order; `Ok` once exhausted.
    pub script: Arc<Mutex<Vec<Answer>>>,
}

impl Backend {
    pub async fn start() -> (Self, String) {
        let backend = Backend::default();
        let app = axum::Router::new()
            .route("/replies", post(receive))
            .with_state(backend.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (backend, format!("http://{addr}/replies"))
    }

    pub fn received(&self) -> Vec<serde_json::Value> {
        self.received.lock().unwrap().clone()
    }
}

async fn receive(
    State(backend): State<Backend>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let ts = headers
        .get("x-switchboard-timestamp")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let sig = headers
        .get("x-switchboard-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut mac = Hmac::<Sha256>::new_from_slice(APP_KEY.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&body);
    let valid = hex::decode(sig).is_ok_and(|given| mac.verify_slice(&given).is_ok());
    if !valid {
        *backend.bad_signatures.lock().unwrap() += 1;
        return (StatusCode::FORBIDDEN, "bad signature".into());
    }
    let answer = {
        let mut script = backend.script.lock().unwrap();
        if script.is_empty() {
            Answer::Ok
        } else {
            script.remove(0)
        }
    };
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    match answer {
        Answer::Ok => {
            backend.received.lock().unwrap().push(json);
            (StatusCode::OK, r#"{"message_id":"backend-1"}"#.into())
        }
        Answer::Status(code) => (
            StatusCode::from_u16(code).unwrap(),
            r#"{"error":"scripted"}"#.into(),
        ),
    }
}
