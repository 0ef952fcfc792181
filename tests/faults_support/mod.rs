//! The fault matrix's rig: one daemon with the app, WeChat (safe mode), SMS (Twilio),
//! telephony (Twilio IVR) and web chat connectors and Redis, a fake of every channel API it
//! replies through, a steady signed stream on each channel (web chat visitors on sockets),
//! a steady stream of replies the other way, and the final count: every accepted message on its agent queue (duplicates only with
//! the first envelope id), every reply delivered or reported `delivery.failed`.
//!
//! Each run appends a row to the results file (`SWITCHBOARD_RELIABILITY_RESULTS`, default
//! `target/reliability/results.tsv`) that scripts/reliability turns into the table of
//! docs/RELIABILITY.md.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::{SinkExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};
use switchboard_connector_sms::twilio_signature;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::*;
use crate::webchat_support::Ws;
use crate::wechat_support::{ACCOUNT, openid, safe_push, text_xml};

pub const PUBLIC_ORIGIN: &str = "https://sb.test";
pub const SMS_PUBLIC_URL: &str = "https://sb.test/sms/main";
pub const HOTLINE_PUBLIC_URL: &str = "https://sb.test/telephony/hotline";
pub const ACCOUNT_SID: &str = "AC00000000000000000000000000000001";
pub const SMS_AUTH_TOKEN: &str = "5f1e2d3c4b5a69788796a5b4c3d2e1f0";
pub const VOICE_AUTH_TOKEN: &str = "0f9e8d7c6b5a49382716a5b4c3d2e1f0";
pub const SMS_NUMBER: &str = "+14155550100";
pub const VOICE_NUMBER: &str = "+14155550199";

/// How long a whole run may take before it is declared stuck.
pub const DEADLINE: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------------------------------
// The channel APIs replies go out through.

/// What every fake channel API does with the next requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Ok = 0,
    /// HTTP 500.
    Fail = 1,
    /// Holds each request until the mode changes.
    Hang = 2,
}

/// One local server standing in for the app backend, WeChat's API and Twilio's Messages API.
#[derive(Clone)]
pub struct FakeApis {
    pub base: String,
    mode: Arc<AtomicU8>,
    changed: Arc<watch::Sender<u8>>,
    /// Reply ids seen in successful sends, with how often.
    delivered: Arc<Mutex<HashMap<String, usize>>>,
    pub token_calls: Arc<AtomicUsize>,
}

impl FakeApis {
    pub async fn start() -> Self {
        let (changed, _) = watch::channel(0);
        let fake = Self {
            base: String::new(),
            mode: Arc::default(),
            changed: Arc::new(changed),
            delivered: Arc::default(),
            token_calls: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/replies", post(app_reply))
            .route("/cgi-bin/stable_token", post(wechat_token))
            .route("/cgi-bin/token", get(wechat_token))
            .route("/cgi-bin/message/custom/send", post(wechat_send))
            .route("/cgi-bin/message/custom/typing", post(wechat_send))
            .route(
                "/2010-04-01/Accounts/{account}/Messages.json",
                post(twilio_send),
            )
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, ..fake }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
        self.changed.send_replace(mode as u8);
    }

    pub fn delivered(&self) -> HashMap<String, usize> {
        self.delivered.lock().unwrap().clone()
    }

    /// Ok to answer normally, after holding the request while hanging.
    async fn admit(&self) -> bool {
        let mut changed = self.changed.subscribe();
        loop {
            match self.mode.load(Ordering::SeqCst) {
                0 => return true,
                1 => return false,
                _ => {
                    if changed.changed().await.is_err() {
                        return false;
                    }
                }
            }
        }
    }

    fn record(&self, body: &[u8]) {
        let text = String::from_utf8_lossy(body);
        let mut delivered = self.delivered.lock().unwrap();
        for id in reply_ids(&text) {
            *delivered.entry(id).or_default() += 1;
        }
    }
}

/// Reply ids (`rp…x…`, letters and digits) mentioned in a request body, however encoded.
fn reply_ids(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("rpq") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(tail.len());
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

fn failed() -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, "injected failure").into_response()
}

async fn app_reply(State(fake): State<FakeApis>, body: Bytes) -> Response {
    if !fake.admit().await {
        return failed();
    }
    fake.record(&body);
    (StatusCode::OK, r#"{"message_id":"backend-1"}"#).into_response()
}

async fn wechat_token(State(fake): State<FakeApis>) -> Response {
    if !fake.admit().await {
        return failed();
    }
    fake.token_calls.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({"access_token": "FAKE_TOKEN_0123456789", "expires_in": 7200})).into_response()
}

async fn wechat_send(State(fake): State<FakeApis>, body: Bytes) -> Response {
    if !fake.admit().await {
        return failed();
    }
    fake.record(&body);
    axum::Json(json!({"errcode": 0, "errmsg": "ok"})).into_response()
}

async fn twilio_send(
    State(fake): State<FakeApis>,
    Path(account): Path<String>,
    body: Bytes,
) -> Response {
    if !fake.admit().await {
        return failed();
    }
    fake.record(&body);
    let sid = format!("SM{}", ulid::Ulid::new().to_string().to_lowercase());
    (
        StatusCode::CREATED,
        axum::Json(json!({
            "account_sid": account,
            "api_version": "2010-04-01",
            "direction": "outbound-api",
            "error_code": null,
            "error_message": null,
            "num_media": "0",
            "num_segments": "1",
            "sid": sid,
            "status": "queued",
            "uri": format!("/2010-04-01/Accounts/{account}/Messages/{sid}.json"),
        })),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------
// The daemon's config.

/// A free port below the ephemeral range, so a restarted daemon comes back on the same
/// address (see webchat_support::free_port).
pub fn free_port() -> u16 {
    crate::webchat_support::free_port()
}

/// The connectors, Redis and fixed listeners added to the common config.
pub fn channels_config(prefix: &str, apis: &str, redis_prefix: &str) -> String {
    format!(
        r#"
[[connectors.wechat]]
id = "{wx_id}"
app_id = "{wx_app}"
app_secret = "{wx_secret}"
token = "{wx_token}"
encoding_aes_key = "{wx_key}"
timestamp_window_secs = 300
api_base = "{apis}"

[connectors.wechat.limits]
per_user_per_minute = 100000
inbound_per_second = 100000
inbound_burst = 100000
outbound_per_second = 1000
outbound_burst = 1000

[[connectors.sms]]
id = "main"
provider = "twilio"
public_url = "{SMS_PUBLIC_URL}"

[connectors.sms.twilio]
account_sid = "{ACCOUNT_SID}"
auth_token = "{SMS_AUTH_TOKEN}"
from = "{SMS_NUMBER}"
api_base = "{apis}"

[connectors.sms.limits]
per_user_per_minute = 100000
inbound_per_second = 100000
inbound_burst = 100000
outbound_per_second = 1000
outbound_burst = 1000

[[connectors.telephony]]
id = "hotline"
provider = "twilio"
public_url = "{HOTLINE_PUBLIC_URL}"
languages = ["en"]

[connectors.telephony.twilio]
auth_token = "{VOICE_AUTH_TOKEN}"

[connectors.telephony.limits]
per_user_per_minute = 100000
inbound_per_second = 100000
inbound_burst = 100000
outbound_per_second = 1000
outbound_burst = 1000

[connectors.telephony.prompts.en]
greeting = "Welcome to Example Express."

[[connectors.telephony.menu]]
digit = "2"
skill = "claims"
prompt = {{ en = "For claims, press 2." }}
keywords = ["claim"]
handoff = {{ enqueue = "claims" }}

[redis]
url = "{redis}"
key_prefix = "{redis_prefix}"
"#,
        wx_id = ACCOUNT.id,
        wx_app = ACCOUNT.app_id,
        wx_secret = ACCOUNT.app_secret,
        wx_token = ACCOUNT.token,
        wx_key = ACCOUNT.encoding_aes_key,
        redis = redis_url(),
    )
    .replace("{prefix}", prefix)
}

/// The full config of one instance listening on `public` and `admin`.
pub fn instance_config(
    setup: &Setup,
    spool_dir: &std::path::Path,
    public: u16,
    admin: u16,
) -> String {
    setup.config(spool_dir).replace(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{public}\"\nadmin_listen = \"127.0.0.1:{admin}\""),
    )
}

// ---------------------------------------------------------------------------------------
// Traffic.

/// The channels the stream covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    App,
    Wechat,
    Sms,
    Telephony,
    Webchat,
}

/// The channels `stream` sends over HTTP; web chat has its own sockets (`webchat_stream`).
pub const KINDS: [Kind; 4] = [Kind::App, Kind::Wechat, Kind::Sms, Kind::Telephony];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::App => "app",
            Kind::Wechat => "wechat",
            Kind::Sms => "sms",
            Kind::Telephony => "telephony",
            Kind::Webchat => "webchat",
        }
    }

    /// The agent queue's skill its messages are routed to.
    pub fn skill(self) -> &'static str {
        match self {
            Kind::Telephony => "claims",
            _ => "general",
        }
    }
}

/// One message as its channel sends it, and the dedupe key its envelope carries.
struct Request {
    kind: Kind,
    key: String,
    send: reqwest::RequestBuilder,
}

/// The users of each channel (a handful, so replies go to known conversations).
#[derive(Clone)]
pub struct People {
    pub app: Vec<String>,
    pub wechat: Vec<String>,
    pub phones: Vec<String>,
    /// Conversation ids of the web chat visitors, when the run has some.
    pub webchat: Vec<String>,
}

impl Default for People {
    fn default() -> Self {
        Self {
            app: (0..5).map(|i| format!("u-{i}")).collect(),
            wechat: (0..5).map(|_| openid()).collect(),
            phones: (0..5).map(|i| format!("+861380000{i:04}")).collect(),
            webchat: Vec::new(),
        }
    }
}

fn twilio_sign(token: &str, url: &str, params: &[(String, String)]) -> String {
    twilio_signature::compute(token.as_bytes(), url, params)
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// What stays the same when a channel retries a message: its ids and time.
struct Identity {
    n: usize,
    /// A random 63-bit number for the channel's message id.
    random: u64,
    created: i64,
}

impl Identity {
    fn new(n: usize) -> Self {
        Self {
            n,
            random: (ulid::Ulid::new().random() as u64) >> 1,
            created: now(),
        }
    }
}

/// The message `id` of `kind`, signed afresh as that channel signs, aimed at `base`.
fn request(
    client: &reqwest::Client,
    base: &str,
    people: &People,
    kind: Kind,
    id: &Identity,
    run: &str,
) -> Request {
    let n = id.n;
    let user = n % 5;
    match kind {
        Kind::App => {
            let key = format!("m-{run}-{n}");
            let body = text_message(&key, &people.app[user], "hello");
            let (ts, sig) = sign(&body, now());
            let send = client
                .post(format!("{base}/app/shop/messages"))
                .header("X-Switchboard-Timestamp", ts)
                .header("X-Switchboard-Signature", sig)
                .header("Content-Type", "application/json")
                .body(body);
            Request { kind, key, send }
        }
        Kind::Wechat => {
            let msg_id = id.random;
            let openid = &people.wechat[user];
            let inner = text_xml(openid, id.created, msg_id, "hello");
            let push = safe_push(&ACCOUNT, openid, &inner, now());
            let send = client
                .post(format!("{base}{}", ACCOUNT.path()))
                .query(&push.query)
                .header("Content-Type", "text/xml")
                .body(push.body);
            Request {
                kind,
                key: format!("{openid}|{}|{msg_id}", id.created),
                send,
            }
        }
        Kind::Sms => {
            let sid = format!("SM{:032x}", id.random);
            let from = &people.phones[user];
            let params = pairs(&[
                ("ToCountry", "US"),
                ("SmsMessageSid", &sid),
                ("NumMedia", "0"),
                ("SmsSid", &sid),
                ("SmsStatus", "received"),
                ("Body", "hello"),
                ("FromCountry", "CN"),
                ("To", SMS_NUMBER),
                ("NumSegments", "1"),
                ("MessageSid", &sid),
                ("AccountSid", ACCOUNT_SID),
                ("From", from),
                ("ApiVersion", "2010-04-01"),
            ]);
            let public = format!("{SMS_PUBLIC_URL}/inbound");
            let signature = twilio_sign(SMS_AUTH_TOKEN, &public, &params);
            let send = client
                .post(format!("{base}/sms/main/inbound"))
                .header("X-Twilio-Signature", signature)
                .form(&params);
            Request {
                kind,
                key: sid,
                send,
            }
        }
        Kind::Webchat => unreachable!("web chat messages go over sockets, not requests"),
        Kind::Telephony => {
            let call = format!("CA{:032x}", id.random);
            let caller = &people.phones[user];
            let params = pairs(&[
                ("Called", VOICE_NUMBER),
                ("Direction", "inbound"),
                ("CallSid", &call),
                ("To", VOICE_NUMBER),
                ("ApiVersion", "2010-04-01"),
                ("CallStatus", "in-progress"),
                ("From", caller),
                ("AccountSid", ACCOUNT_SID),
                ("Caller", caller),
                ("FromCountry", "CN"),
                ("FinishedOnKey", ""),
                ("Digits", "2"),
            ]);
            let public = format!("{HOTLINE_PUBLIC_URL}/gather?step=menu&attempt=1");
            let signature = twilio_sign(VOICE_AUTH_TOKEN, &public, &params);
            let path = public.strip_prefix(PUBLIC_ORIGIN).unwrap();
            let send = client
                .post(format!("{base}{path}"))
                .header("X-Twilio-Signature", signature)
                .form(&params);
            Request {
                kind,
                key: format!("{call}:ringing"),
                send,
            }
        }
    }
}

/// Whether the channel was told its message is taken.
fn accepted(kind: Kind, status: u16, body: &str) -> bool {
    status == 200
        && match kind {
            Kind::App => body.contains("envelope_id"),
            Kind::Telephony => body.contains("<Enqueue"),
            Kind::Wechat | Kind::Sms | Kind::Webchat => true,
        }
}

/// What the inbound stream saw.
#[derive(Default)]
pub struct Tally {
    /// Distinct messages sent.
    pub sent: AtomicUsize,
    /// (kind, dedupe key) of every message answered as accepted, with its envelope id when
    /// the channel's answer names it.
    pub accepted: Mutex<HashMap<(Kind, String), Option<String>>>,
    /// Messages the channel gave up on (never accepted within the retry budget).
    pub refused: AtomicUsize,
    /// Answers other than "accepted" (503s, connection errors), retries included.
    pub not_accepted_answers: AtomicUsize,
    /// The same on web chat sockets (`unavailable` errors, dropped sockets).
    pub webchat_retries: AtomicUsize,
    /// Web chat sockets closed with `resync` and reopened at once, as the widget does: the
    /// documented answer when a conversation's history moves (to this instance's memory
    /// while Redis is away, and back), not a refusal.
    pub webchat_resyncs: AtomicUsize,
}

impl Tally {
    pub fn accepted_count(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }
}

/// Sends messages on every channel, two workers per channel each at most one per `pace`,
/// until `stop`; each message retried (a fresh signature each time) for up to
/// `retry_budget` as a channel would, while the daemon answers anything but "accepted".
pub async fn stream(
    base: String,
    people: People,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    pace: Duration,
    retry_budget: Duration,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let run = ulid::Ulid::new().to_string().to_lowercase();
    let next = Arc::new(AtomicUsize::new(0));
    let workers = KINDS.iter().flat_map(|&kind| {
        let (client, base, people, tally, stop, next, run) = (
            client.clone(),
            base.clone(),
            people.clone(),
            tally.clone(),
            stop.clone(),
            next.clone(),
            run.clone(),
        );
        (0..2).map(move |_| {
            let (client, base, people, tally, stop, next, run) = (
                client.clone(),
                base.clone(),
                people.clone(),
                tally.clone(),
                stop.clone(),
                next.clone(),
                run.clone(),
            );
            async move {
                let mut pacer = tokio::time::interval(pace);
                while !stop.load(Ordering::SeqCst) {
                    pacer.tick().await;
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    tally.sent.fetch_add(1, Ordering::SeqCst);
                    let started = Instant::now();
                    let identity = Identity::new(n);
                    loop {
                        let request = request(&client, &base, &people, kind, &identity, &run);
                        let answer = match request.send.send().await {
                            Ok(response) => {
                                let status = response.status().as_u16();
                                let body = response.text().await.unwrap_or_default();
                                Some((status, body))
                            }
                            Err(_) => None,
                        };
                        if let Some((status, body)) = &answer {
                            if accepted(kind, *status, body) {
                                let envelope = serde_json::from_str::<Value>(body)
                                    .ok()
                                    .and_then(|v| v["envelope_id"].as_str().map(str::to_owned));
                                tally
                                    .accepted
                                    .lock()
                                    .unwrap()
                                    .insert((request.kind, request.key), envelope);
                                break;
                            }
                            // 502 and 504 come from a load balancer in front of a dead instance.
                            assert!(
                                matches!(*status, 502..=504),
                                "{kind:?}: only 'retry later' is acceptable, got {status} {body}"
                            );
                        }
                        tally.not_accepted_answers.fetch_add(1, Ordering::SeqCst);
                        if started.elapsed() > retry_budget {
                            tally.refused.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
    });
    futures_util::future::join_all(workers).await;
}

/// A web chat visitor of connector `site`: the signed id it reconnects with, its
/// conversation, and the client address it comes from.
#[derive(Clone, Debug)]
pub struct Visitor {
    pub signed: String,
    pub conversation_id: String,
    ip: String,
}

/// Opens a socket on `public` as the widget does (own origin, `hello` from `last_seq`) and
/// returns it with `ready`; None when the daemon is not there or refuses.
async fn visitor_socket(
    public: &str,
    visitor: Option<&Visitor>,
    ip: &str,
    last_seq: u64,
    epoch: Option<&str>,
) -> Option<(Ws, Value)> {
    let mut url = format!("ws://{public}/webchat/site/ws?v=1");
    if let Some(visitor) = visitor {
        url.push_str("&visitor=");
        url.push_str(&visitor.signed);
    }
    let mut request = url.into_client_request().ok()?;
    let headers = request.headers_mut();
    headers.insert("origin", format!("http://{public}").parse().ok()?);
    headers.insert("x-forwarded-for", ip.parse().ok()?);
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(request),
    )
    .await
    .ok()?
    .ok()?;
    let hello = json!({"type": "hello", "v": 1, "last_seq": last_seq, "epoch": epoch});
    ws.send(Message::text(hello.to_string())).await.ok()?;
    let ready = next_frame(&mut ws, Duration::from_secs(5)).await?;
    (ready["type"] == "ready").then_some((ws, ready))
}

/// The next text frame as JSON; None on close, error or silence for `wait`.
async fn next_frame(ws: &mut Ws, wait: Duration) -> Option<Value> {
    loop {
        match tokio::time::timeout(wait, ws.next()).await.ok()??.ok()? {
            Message::Text(text) => return serde_json::from_str(text.as_str()).ok(),
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

/// `count` new visitors of `public`'s web chat (each connects once to be given its id).
pub async fn webchat_visitors(public: &str, count: usize) -> Vec<Visitor> {
    let mut visitors = Vec::new();
    for i in 0..count {
        let ip = format!("10.9.0.{}", i + 1);
        let (mut ws, ready) = visitor_socket(public, None, &ip, 0, None)
            .await
            .expect("a web chat visitor connects");
        let _ = ws.close(None).await;
        visitors.push(Visitor {
            signed: ready["visitor"].as_str().expect("visitor").to_owned(),
            conversation_id: ready["conversation_id"]
                .as_str()
                .expect("conversation_id")
                .to_owned(),
            ip,
        });
    }
    visitors
}

/// What became of one send of a web chat message.
enum Answer {
    /// `ack`, with the envelope id.
    Acked(String),
    /// A retryable refusal for this message: resend after the wait.
    Later(Duration),
    /// The server closed the socket with `resync`: the conversation's numbering started
    /// over (its history moved, e.g. to local memory while Redis is away, and back).
    Resync,
    /// The socket closed, failed or fell silent.
    Lost,
}

/// Where a visitor stands in its conversation's agent messages; the next `hello` resumes
/// from there.
#[derive(Default)]
struct Position {
    last_seq: u64,
    epoch: Option<String>,
}

/// Sends message `id` on `ws` and reads frames until its answer, following `position`.
async fn send_message(ws: &mut Ws, id: &str, position: &mut Position) -> Answer {
    let frame = json!({"type": "message", "id": id, "content": {"type": "text", "text": "hello"}});
    if ws.send(Message::text(frame.to_string())).await.is_err() {
        return Answer::Lost;
    }
    loop {
        let Some(frame) = next_frame(ws, Duration::from_secs(10)).await else {
            return Answer::Lost;
        };
        if frame["type"] == "agent"
            && let Some(seq) = frame["seq"].as_u64()
        {
            position.last_seq = position.last_seq.max(seq);
            position.epoch = frame["epoch"].as_str().map(str::to_owned);
        }
        match frame["type"].as_str() {
            Some("ack") if frame["id"] == id => {
                let envelope = frame["envelope_id"].as_str().unwrap_or_default();
                return Answer::Acked(envelope.to_owned());
            }
            Some("error") if frame["id"] == id => {
                let code = frame["code"].as_str().unwrap_or_default();
                assert!(
                    matches!(code, "unavailable" | "rate_limited"),
                    "web chat: only 'retry later' is acceptable, got {frame}"
                );
                let wait = frame["retry_after_ms"].as_u64().unwrap_or(100).min(1000);
                return Answer::Later(Duration::from_millis(wait));
            }
            Some("error") if frame["fatal"] == true && frame["code"] == "resync" => {
                return Answer::Resync;
            }
            Some("error") if frame["fatal"] == true => return Answer::Lost,
            _ => {}
        }
    }
}

/// Web chat traffic: each visitor keeps a socket and sends one message per `pace` until
/// `stop`, resending it (same client id) after a retryable error and reconnecting (with its
/// visitor id, from the last reply seen) when the socket drops, as the widget does, for up
/// to `retry_budget` per message.
pub async fn webchat_stream(
    public: String,
    visitors: Vec<Visitor>,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    pace: Duration,
    retry_budget: Duration,
) {
    let run = ulid::Ulid::new().to_string().to_lowercase();
    let next = Arc::new(AtomicUsize::new(0));
    let workers = visitors.into_iter().map(|visitor| {
        let (public, tally, stop, next, run) = (
            public.clone(),
            tally.clone(),
            stop.clone(),
            next.clone(),
            run.clone(),
        );
        async move {
            let mut socket: Option<Ws> = None;
            let mut position = Position::default();
            let mut pacer = tokio::time::interval(pace);
            while !stop.load(Ordering::SeqCst) {
                pacer.tick().await;
                let n = next.fetch_add(1, Ordering::SeqCst);
                tally.sent.fetch_add(1, Ordering::SeqCst);
                let id = format!("w-{run}-{n}");
                let started = Instant::now();
                loop {
                    if socket.is_none() {
                        let opened = visitor_socket(
                            &public,
                            Some(&visitor),
                            &visitor.ip,
                            position.last_seq,
                            position.epoch.as_deref(),
                        )
                        .await;
                        socket = opened.map(|(ws, ready)| {
                            if ready["reset"] == true {
                                position.last_seq = 0;
                            }
                            if let Some(epoch) = ready["epoch"].as_str().filter(|e| !e.is_empty()) {
                                position.epoch = Some(epoch.to_owned());
                            }
                            ws
                        });
                    }
                    let answer = match socket.as_mut() {
                        Some(ws) => send_message(ws, &id, &mut position).await,
                        None => Answer::Lost,
                    };
                    let wait = match answer {
                        Answer::Acked(envelope) => {
                            tally
                                .accepted
                                .lock()
                                .unwrap()
                                .insert((Kind::Webchat, id), Some(envelope));
                            break;
                        }
                        Answer::Later(wait) => {
                            tally.webchat_retries.fetch_add(1, Ordering::SeqCst);
                            wait
                        }
                        Answer::Resync => {
                            tally.webchat_resyncs.fetch_add(1, Ordering::SeqCst);
                            socket = None;
                            Duration::ZERO
                        }
                        Answer::Lost => {
                            tally.webchat_retries.fetch_add(1, Ordering::SeqCst);
                            socket = None;
                            Duration::from_millis(100)
                        }
                    };
                    if started.elapsed() > retry_budget {
                        tally.refused.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    tokio::time::sleep(wait).await;
                }
            }
            if let Some(mut ws) = socket {
                let _ = ws.close(None).await;
            }
        }
    });
    futures_util::future::join_all(workers).await;
}

/// A reply id the fakes can find in any encoding of the text.
pub fn reply_id(n: usize) -> String {
    format!("rpq{n}x{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// Whether the reply `reply_id` (from `reply_id`) went to a web chat visitor.
pub fn addressed_to_webchat(people: &People, reply_id: &str) -> bool {
    let n = reply_id
        .strip_prefix("rpq")
        .and_then(|rest| rest.split_once('x'))
        .and_then(|(n, _)| n.parse::<usize>().ok());
    !people.webchat.is_empty() && n.is_some_and(|n| n % 4 == 3)
}

/// The reply `n` goes to one of the stream's users, round robin over the channels.
fn reply(people: &People, n: usize, id: &str) -> Value {
    let user = n % 5;
    let channels = if people.webchat.is_empty() { 3 } else { 4 };
    let conversation = match n % channels {
        0 => format!("app:shop:{}", people.app[user]),
        1 => ACCOUNT.conversation(&people.wechat[user]),
        2 => format!("sms:main:{}", people.phones[user]),
        _ => people.webchat[user % people.webchat.len()].clone(),
    };
    json!({
        "schema": "switchboard.reply.v1",
        "id": id,
        "conversation_id": conversation,
        "content": {"type": "text", "text": format!("reply {id} ok")},
        "agent": {"id": "a-7", "name": "Wang"},
    })
}

/// A helpdesk publishing replies with confirms, reconnecting and republishing (same id)
/// whenever the broker does not confirm, until `stop`.
pub async fn replies(
    prefix: String,
    people: People,
    published: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    pace: Duration,
) {
    let mut link: Option<(Connection, lapin::Channel)> = None;
    let mut pacer = tokio::time::interval(pace);
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        pacer.tick().await;
        let id = reply_id(n);
        let body = serde_json::to_vec(&reply(&people, n, &id)).unwrap();
        n += 1;
        loop {
            if stop.load(Ordering::SeqCst) && link.is_none() {
                return;
            }
            if link.is_none() {
                link = connect_confirming().await;
                if link.is_none() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
            let (_, channel) = link.as_ref().unwrap();
            let confirmed = tokio::time::timeout(Duration::from_secs(3), async {
                channel
                    .basic_publish(
                        format!("{prefix}.outbound").as_str().into(),
                        "reply".into(),
                        BasicPublishOptions::default(),
                        &body,
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                    .ok()?
                    .await
                    .ok()
                    .filter(|c| c.is_ack())
            })
            .await
            .ok()
            .flatten();
            if confirmed.is_some() {
                published.lock().unwrap().push(id.clone());
                break;
            }
            link = None;
        }
    }
}

async fn connect_confirming() -> Option<(Connection, lapin::Channel)> {
    let conn = tokio::time::timeout(
        Duration::from_secs(3),
        Connection::connect(&amqp_url(), ConnectionProperties::default()),
    )
    .await
    .ok()?
    .ok()?;
    let channel = conn.create_channel().await.ok()?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .ok()?;
    Some((conn, channel))
}

/// A durable queue of the test's own on the events exchange (survives a broker restart).
pub async fn durable_events_queue(prefix: &str) -> String {
    let conn = amqp().await;
    let channel = conn.create_channel().await.unwrap();
    let queue = format!("{prefix}.test-events");
    let exchange = format!("{prefix}.events");
    channel
        .exchange_declare(
            exchange.as_str().into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            "delivery.*".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let _ = conn.close(200, "declared".into()).await;
    queue
}

// ---------------------------------------------------------------------------------------
// Counting.

/// The final count of one run.
#[derive(Debug, Default)]
pub struct Count {
    pub sent: usize,
    pub accepted: usize,
    pub refused: usize,
    pub delivered: usize,
    pub duplicated: usize,
    pub lost: usize,
    pub replies: usize,
    pub replies_delivered: usize,
    pub replies_failed: usize,
    pub replies_lost: usize,
}

/// Drains `queues` until every accepted message arrived or `deadline` passed: counts
/// deliveries, duplicates (asserting they carry one envelope id, the one the channel was
/// told when it was told one) and losses.
pub async fn count_inbound(
    queues: &[String],
    accepted: &HashMap<(Kind, String), Option<String>>,
    deadline: Duration,
) -> (usize, usize, usize) {
    let conn = amqp().await;
    let mut seen: HashMap<(Kind, String), Vec<String>> = HashMap::new();
    let mut total = 0;
    let start = Instant::now();
    while accepted.keys().any(|k| !seen.contains_key(k)) && start.elapsed() < deadline {
        // `take` waits up to its deadline for deliveries, so an idle round costs no busy loop.
        for queue in queues {
            for message in take(&conn, queue, 500, Duration::from_millis(500)).await {
                total += 1;
                let kind = match message.body["channel"]["kind"].as_str().unwrap_or("") {
                    "app" => Kind::App,
                    "wechat" => Kind::Wechat,
                    "sms" => Kind::Sms,
                    "telephony" => Kind::Telephony,
                    "webchat" => Kind::Webchat,
                    other => panic!("unexpected channel {other}"),
                };
                let key = message.body["dedupe_key"].as_str().unwrap().to_owned();
                let id = message.body["id"].as_str().unwrap().to_owned();
                seen.entry((kind, key)).or_default().push(id);
            }
        }
    }
    let _ = conn.close(200, "counted".into()).await;
    let mut lost = 0;
    for (key, envelope) in accepted {
        match seen.get(key) {
            None => lost += 1,
            Some(ids) => {
                assert!(
                    ids.iter().all(|id| id == &ids[0]),
                    "{key:?} published under several envelope ids: {ids:?}"
                );
                if let Some(told) = envelope {
                    assert_eq!(&ids[0], told, "{key:?} arrived under another envelope id");
                }
            }
        }
    }
    let distinct = seen.keys().filter(|k| accepted.contains_key(k)).count();
    (total, total - distinct, lost)
}

/// Reads delivery events until each reply in `published` has one or `deadline` passed:
/// `(succeeded, failed, lost)`.
pub async fn count_replies(
    events: &str,
    published: &[String],
    deadline: Duration,
) -> (usize, usize, usize) {
    let conn = amqp().await;
    let channel = conn.create_channel().await.unwrap();
    let mut consumer = channel
        .basic_consume(
            events.into(),
            format!("count-{}", ulid::Ulid::new()).as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let wanted: HashSet<&String> = published.iter().collect();
    let (mut succeeded, mut failed) = (HashSet::new(), HashSet::new());
    let start = Instant::now();
    while wanted
        .iter()
        .any(|id| !succeeded.contains(*id) && !failed.contains(*id))
    {
        let left = deadline.saturating_sub(start.elapsed());
        let Ok(Some(Ok(delivery))) = tokio::time::timeout(left, consumer.next()).await else {
            break;
        };
        let _ = delivery.ack(BasicAckOptions::default()).await;
        let event: Value = serde_json::from_slice(&delivery.data).unwrap_or_default();
        let id = event["reply_id"].as_str().unwrap_or_default().to_owned();
        match event["kind"].as_str() {
            Some("delivery.succeeded") => {
                succeeded.insert(id);
            }
            Some("delivery.failed") => {
                failed.insert(id);
            }
            _ => {}
        }
    }
    let _ = conn.close(200, "counted".into()).await;
    let ok = wanted.iter().filter(|id| succeeded.contains(**id)).count();
    let bad = wanted
        .iter()
        .filter(|id| !succeeded.contains(**id) && failed.contains(**id))
        .count();
    (ok, bad, wanted.len() - ok - bad)
}

/// Appends `count` as a row of the results file and prints it.
pub fn record(fault: &str, count: &Count, recovery: Duration, note: &str) {
    let row = format!(
        "{fault}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{:.1}\t{note}\n",
        count.sent,
        count.accepted,
        count.refused,
        count.delivered,
        count.duplicated,
        count.lost,
        count.replies,
        count.replies_delivered,
        count.replies_failed,
        count.replies_lost,
        recovery.as_secs_f64(),
    );
    eprint!("RESULT {row}");
    let path = std::env::var("SWITCHBOARD_RELIABILITY_RESULTS").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/target/reliability/results.tsv"
        )
        .to_owned()
    });
    let path = std::path::PathBuf::from(path);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("results file");
    file.write_all(row.as_bytes()).expect("write result");
}

// ---------------------------------------------------------------------------------------
// Faults.

/// `rabbitmqctl` on the test broker's node; panics when it fails.
pub fn rabbitmqctl(args: &[&str]) {
    let output = rabbitmqctl_command()
        .args(args)
        .output()
        .expect("rabbitmqctl");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// An Erlang expression's value on the test broker's node.
fn rabbit_eval(expression: &str) -> Option<String> {
    let output = rabbitmqctl_command()
        .args(["eval", expression])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Puts the broker back however a test ends: the application started if the test stops
/// it, the memory watermark and disk free limit it had if the test alarms it. (Each
/// rabbitmqctl call costs seconds on a busy machine, so only what the test touches.)
pub struct BrokerGuard {
    stops_app: bool,
    watermark: Option<Vec<String>>,
    disk_limit: Option<String>,
}

impl BrokerGuard {
    pub fn new(stops_app: bool, alarms_memory: bool, alarms_disk: bool) -> Self {
        let watermark = alarms_memory.then(|| {
            let watermark = rabbit_eval("vm_memory_monitor:get_vm_memory_high_watermark().")
                .unwrap_or_else(|| "0.4".to_owned());
            // `0.4`, or `{absolute,1073741824}`.
            match watermark
                .strip_prefix("{absolute,")
                .and_then(|w| w.strip_suffix('}'))
            {
                Some(bytes) => vec!["absolute".to_owned(), bytes.to_owned()],
                None => vec![watermark],
            }
        });
        let disk_limit = alarms_disk.then(|| {
            rabbit_eval("rabbit_disk_monitor:get_disk_free_limit().")
                .filter(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_digit()))
                .unwrap_or_else(|| "50000000".to_owned())
        });
        Self {
            stops_app,
            watermark,
            disk_limit,
        }
    }

    /// `rabbitmqctl` arguments restoring the memory watermark.
    pub fn restore_watermark(&self) -> Vec<String> {
        let mut args = vec!["set_vm_memory_high_watermark".to_owned()];
        args.extend(self.watermark.iter().flatten().cloned());
        args
    }

    /// `rabbitmqctl` arguments restoring the disk free limit.
    pub fn restore_disk_limit(&self) -> Vec<String> {
        vec![
            "set_disk_free_limit".to_owned(),
            self.disk_limit.clone().unwrap_or_default(),
        ]
    }
}

impl Drop for BrokerGuard {
    fn drop(&mut self) {
        if self.stops_app {
            let _ = rabbitmqctl_command().arg("start_app").output();
            let _ = rabbitmqctl_command()
                .args(["await_startup", "--timeout", "60"])
                .output();
        }
        if self.watermark.is_some() {
            let _ = rabbitmqctl_command()
                .args(self.restore_watermark())
                .output();
        }
        if self.disk_limit.is_some() {
            let _ = rabbitmqctl_command()
                .args(self.restore_disk_limit())
                .output();
        }
    }
}

/// The test Redis's port, from its URL.
fn redis_port() -> String {
    let url = redis_url();
    let authority = url.trim_start_matches("redis://");
    let host_port = authority.split('/').next().unwrap_or("127.0.0.1:6379");
    host_port
        .rsplit_once(':')
        .map_or("6379", |(_, p)| p)
        .to_owned()
}

pub fn redis_up() -> bool {
    Command::new("redis-cli")
        .args(["-u", &redis_url(), "ping"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"))
}

/// Stops the test Redis (no save).
pub fn stop_redis() {
    let _ = Command::new("redis-cli")
        .args(["-u", &redis_url(), "shutdown", "nosave"])
        .output();
}

/// Starts the test Redis again as scripts/test starts it (no persistence).
pub fn start_redis() {
    if redis_up() {
        return;
    }
    let status = Command::new("redis-server")
        .args([
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "--port",
            &redis_port(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .status()
        .expect("redis-server");
    assert!(status.success(), "redis-server did not start");
}

/// Starts Redis again however a test ends.
pub struct RedisGuard;

impl Drop for RedisGuard {
    fn drop(&mut self) {
        start_redis();
    }
}

/// Whether the long variants were asked for (`SWITCHBOARD_FAULTS_LONG=1`).
pub fn long() -> bool {
    std::env::var("SWITCHBOARD_FAULTS_LONG").is_ok_and(|v| v == "1")
}

/// The daemon's `/readyz` answer.
pub async fn readyz(admin: &str) -> Option<Value> {
    reqwest::get(format!("{admin}/readyz"))
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// A daemon is back to normal: broker connected, spool empty, shared state shared.
pub async fn recovered(admin: &str) -> bool {
    readyz(admin).await.is_some_and(|r| {
        r["broker"] == "connected" && r["spool"]["depth"] == 0 && r["shared_state"] == "ok"
    })
}
