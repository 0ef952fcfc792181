//! Connector-level tests: the compliance harness on the HTTP message route, and the socket
//! protocol against a local listener with a real WebSocket client.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::Request;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard_sdk::services::{LocalFanout, MemoryKv};
use switchboard_sdk::testing::{ComplianceFixture, RecordingSink, check_connector};
use switchboard_sdk::webhook::RejectedBecause;
use switchboard_sdk::{
    AcceptError, ChannelRef, Connector, ConnectorContext, ConnectorFactory, ConversationId, Fanout,
    Inbound, KvError, KvStore, RejectReason, Reply,
};
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::{WebchatConfig, WebchatFactory, identity::Signer};

const SECRET: &str = "test-visitor-secret-0123456789abcdef";
const SITE_KEY: &str = "test-site-key-0123456789";
const WAIT: Duration = Duration::from_secs(5);

fn config(extra: &str) -> WebchatConfig {
    let text = format!(
        "id = \"site\"\nvisitor_secret = \"{SECRET}\"\nsite_key = \"{SITE_KEY}\"\n\
         allowed_origins = [\"https://shop.example.com\"]\napp_connector_id = \"shop-app\"\n{extra}"
    );
    toml::from_str(&text).unwrap_or_else(|e| panic!("test config: {e}"))
}

fn signer() -> Signer {
    Signer::new("site", switchboard_sdk::Secret::new(SECRET), None)
}

// ---- compliance harness on POST /messages ------------------------------------------------

struct Fixture {
    visitor: String,
}

impl Fixture {
    fn post(&self, visitor: &str, body: &str) -> Request<Body> {
        Request::post("/messages")
            .header("content-type", "application/json")
            .header("x-webchat-visitor", visitor)
            .body(Body::from(body.to_owned()))
            .unwrap()
    }
}

impl ComplianceFixture for Fixture {
    fn valid_request(&self) -> Request<Body> {
        self.post(
            &self.visitor,
            r#"{"id":"c-1","content":{"type":"text","text":"where is my parcel"}}"#,
        )
    }

    fn forged_request(&self) -> Request<Body> {
        let forged = format!("{}0", &self.visitor[..self.visitor.len() - 1]);
        let forged = if forged == self.visitor {
            format!("{}1", &self.visitor[..self.visitor.len() - 1])
        } else {
            forged
        };
        self.post(
            &forged,
            r#"{"id":"c-1","content":{"type":"text","text":"where is my parcel"}}"#,
        )
    }

    fn malformed_request(&self) -> Request<Body> {
        self.post(
            &self.visitor,
            r#"{"id":"c-1","content":{"type":"hologram"}}"#,
        )
    }

    fn stale_request(&self) -> Option<Request<Body>> {
        None
    }
}

#[tokio::test]
async fn the_message_route_passes_the_compliance_harness() {
    let connector = WebchatFactory::build(&config(""), &ConnectorContext::in_memory()).unwrap();
    let visitor = signer().sign_visitor(&Signer::new_visitor());
    check_connector(connector, &Fixture { visitor }).await;
}

// ---- a local server and a WebSocket client --------------------------------------------------

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Server {
    addr: std::net::SocketAddr,
    connector: Arc<dyn Connector>,
    sink: Arc<RecordingSink>,
    kv: Arc<dyn KvStore>,
    refused: Arc<Mutex<Vec<RejectReason>>>,
}

async fn serve(connector: Arc<dyn Connector>, kv: Arc<dyn KvStore>) -> Server {
    let sink = Arc::new(RecordingSink::default());
    let channel = ChannelRef {
        kind: "webchat".into(),
        connector_id: connector.id().to_owned(),
    };
    let refused = Arc::new(Mutex::new(Vec::new()));
    let seen = refused.clone();
    // Stands in for the daemon's gate: records the refusals it would count.
    let app = connector.routes(Inbound::new(sink.clone(), channel)).layer(
        axum::middleware::map_response(move |response: axum::response::Response| {
            let seen = seen.clone();
            async move {
                if let Some(because) = response.extensions().get::<RejectedBecause>() {
                    seen.lock().unwrap().push(because.reason);
                }
                response
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server {
        addr,
        connector,
        sink,
        kv,
        refused,
    }
}

async fn start(extra: &str) -> Server {
    let context = ConnectorContext::in_memory();
    let kv = context.kv.clone();
    let connector = WebchatFactory::build(&config(extra), &context).unwrap();
    let run = connector.clone();
    tokio::spawn(async move { run.run(tokio_util::sync::CancellationToken::new()).await });
    serve(connector, kv).await
}

impl Server {
    async fn open(&self, query: &str, origin: Option<&str>) -> Ws {
        let url = format!("ws://{}/ws?{query}", self.addr);
        let mut request = url.into_client_request().unwrap();
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("origin", origin.parse().unwrap());
        }
        let (ws, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket handshake");
        assert_eq!(response.status(), 101);
        ws
    }

    /// Connects and says hello; returns the socket and the `ready` frame.
    async fn hello(&self, query: &str, last_seq: u64, epoch: Option<&str>) -> (Ws, Value) {
        let mut ws = self.open(query, Some("https://shop.example.com")).await;
        send(
            &mut ws,
            json!({"type": "hello", "v": 1, "last_seq": last_seq, "epoch": epoch}),
        )
        .await;
        let ready = recv(&mut ws).await;
        assert_eq!(ready["type"], "ready", "{ready}");
        (ws, ready)
    }

    async fn reply(&self, user: &str, id: &str, content: Value) {
        deliver(&self.connector, user, id, content).await;
    }
}

async fn deliver(connector: &Arc<dyn Connector>, user: &str, id: &str, content: Value) {
    let reply: Reply = serde_json::from_value(json!({
        "schema": "switchboard.reply.v1",
        "id": id,
        "conversation_id": format!("webchat:site:{user}"),
        "content": content,
        "agent": {"id": "a-1", "name": "Han Meimei"},
    }))
    .unwrap();
    let recipient = switchboard_sdk::Recipient {
        conversation: ConversationId::parse(&reply.conversation_id).unwrap(),
    };
    connector.deliver(&reply, &recipient).await.unwrap();
}

async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::text(frame.to_string())).await.unwrap();
}

/// The next text frame as JSON.
async fn recv(ws: &mut Ws) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .expect("frame");
        match message {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
}

/// Reads until the server closes; returns the error frames seen and the close code.
async fn closing(ws: &mut Ws) -> (Vec<Value>, Option<CloseCode>) {
    let mut frames = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Text(text))) => {
                frames.push(serde_json::from_str(text.as_str()).unwrap())
            }
            Some(Ok(Message::Close(frame))) => return (frames, frame.map(|f| f.code)),
            Some(Ok(_)) => {}
            None | Some(Err(_)) => return (frames, None),
        }
    }
}

fn visitor_of(ready: &Value) -> (String, String) {
    let signed = ready["visitor"].as_str().unwrap().to_owned();
    let user = signed.rsplit_once('.').unwrap().0.to_owned();
    (signed, user)
}

async fn wait_until<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        tick.tick().await;
        if probe().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
    }
}

// ---- protocol ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_message_is_acked_after_the_pipeline_took_it_and_a_resend_keeps_its_key() {
    let server = start("").await;
    let (mut ws, ready) = server.hello("v=1", 0, None).await;
    let (signed, user) = visitor_of(&ready);
    assert!(signer().verify_visitor(&signed).is_ok());
    assert_eq!(ready["conversation_id"], format!("webchat:site:{user}"));
    assert_eq!(
        (ready["seq"].as_u64(), ready["reset"].as_bool()),
        (Some(0), Some(false))
    );

    let message = json!({"type": "message", "id": "c-1", "content": {"type": "text", "text": "我的快递到哪了 📦"}});
    send(&mut ws, message.clone()).await;
    let ack = recv(&mut ws).await;
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["id"], "c-1");
    let accepted = server.sink.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].1.channel_user_id, user);
    assert_eq!(accepted[0].1.dedupe_key, "c-1");
    assert_eq!(
        accepted[0].1.content,
        switchboard_sdk::Content::text("我的快递到哪了 📦")
    );

    // The pipeline refuses: no ack, an error that says when to resend.
    server
        .sink
        .refuse_with(Some(AcceptError::Unavailable("spool full".into())));
    send(
        &mut ws,
        json!({"type": "message", "id": "c-2", "content": {"type": "text", "text": "hello?"}}),
    )
    .await;
    let error = recv(&mut ws).await;
    assert_eq!(
        (
            error["type"].as_str(),
            error["code"].as_str(),
            error["id"].as_str()
        ),
        (Some("error"), Some("unavailable"), Some("c-2"))
    );
    assert!(error["retry_after_ms"].as_u64().is_some() && error["fatal"] == false);
    server.sink.refuse_with(None);

    // The resend after reconnecting as the same visitor carries the same dedupe key.
    drop(ws);
    let (mut ws, again) = server
        .hello(&format!("v=1&visitor={signed}"), 0, None)
        .await;
    assert_eq!(
        again["visitor"],
        signed.as_str(),
        "a returning visitor keeps its id"
    );
    send(
        &mut ws,
        json!({"type": "message", "id": "c-2", "content": {"type": "text", "text": "hello?"}}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "ack");
    let keys: Vec<String> = server
        .sink
        .accepted()
        .iter()
        .map(|(_, m)| m.dedupe_key.clone())
        .collect();
    assert_eq!(keys, ["c-1", "c-2"]);
}

#[tokio::test]
async fn replies_are_numbered_stored_and_replayed_after_a_drop() {
    let server = start("").await;
    let (mut ws, ready) = server.hello("v=1", 0, None).await;
    let (signed, user) = visitor_of(&ready);

    server
        .reply(&user, "r-1", json!({"type": "text", "text": "one"}))
        .await;
    server
        .reply(&user, "r-2", json!({"type": "text", "text": "two"}))
        .await;
    let first = recv(&mut ws).await;
    let second = recv(&mut ws).await;
    assert_eq!(
        (first["seq"].as_u64(), second["seq"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(first["content"]["text"], "one");
    assert_eq!(first["agent"], "Han Meimei");
    let epoch = first["epoch"].as_str().unwrap().to_owned();

    // Offline: stored, delivered on resume; a redelivered reply is not stored twice.
    drop(ws);
    server
        .reply(&user, "r-3", json!({"type": "text", "text": "three"}))
        .await;
    server
        .reply(&user, "r-3", json!({"type": "text", "text": "three"}))
        .await;
    server
        .reply(
            &user,
            "r-4",
            json!({"type": "image", "url": "https://cdn.example.com/a.png"}),
        )
        .await;
    let (mut ws, ready) = server
        .hello(&format!("v=1&visitor={signed}"), 2, Some(&epoch))
        .await;
    assert_eq!(
        (
            ready["seq"].as_u64(),
            ready["reset"].as_bool(),
            ready["gap"].as_bool()
        ),
        (Some(4), Some(false), Some(false))
    );
    let third = recv(&mut ws).await;
    let fourth = recv(&mut ws).await;
    assert_eq!(
        (third["seq"].as_u64(), third["id"].as_str()),
        (Some(3), Some("r-3"))
    );
    assert_eq!(
        (fourth["seq"].as_u64(), fourth["content"]["type"].as_str()),
        (Some(4), Some("image"))
    );

    // Typing is shown live and never stored.
    server
        .reply(&user, "r-t", json!({"type": "event", "name": "typing"}))
        .await;
    let typing = recv(&mut ws).await;
    assert_eq!(
        (typing["type"].as_str(), typing["on"].as_bool()),
        (Some("typing"), Some(true))
    );
    server
        .reply(&user, "r-5", json!({"type": "text", "text": "five"}))
        .await;
    assert_eq!(recv(&mut ws).await["seq"], 5);

    // Read receipts go to the events, once per message.
    send(&mut ws, json!({"type": "read", "seq": 5})).await;
    send(&mut ws, json!({"type": "read", "seq": 4})).await;
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(recv(&mut ws).await["type"], "pong");
    let read: Vec<String> = server
        .sink
        .reported()
        .iter()
        .filter(|(_, e)| e.kind == "delivery.read")
        .map(|(_, e)| e.reply_id.clone().unwrap_or_default())
        .collect();
    assert_eq!(read, ["r-1", "r-2", "r-3", "r-4", "r-5"]);
}

#[tokio::test]
async fn presence_is_set_while_connected_and_cleared_after() {
    let server = start("").await;
    let token = crate::make_site_token(
        SITE_KEY,
        &json!({"sub": "cust-7", "exp": switchboard_sdk::time::OffsetDateTime::now_utc().unix_timestamp() + 600,
                "name": "Li Lei", "tier": "vip", "app_user_id": "u-7"}),
    );
    let (mut ws, ready) = server.hello(&format!("v=1&token={token}"), 0, None).await;
    assert_eq!(ready["conversation_id"], "webchat:site:c-cust-7");
    let kv = server.kv.clone();
    assert_eq!(
        kv.get("presence:webchat:site:c-cust-7")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"local"[..])
    );
    assert!(kv.get("presence:app:shop-app:u-7").await.unwrap().is_some());

    send(
        &mut ws,
        json!({"type": "message", "id": "m-1", "content": {"type": "text", "text": "hi"}}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "ack");
    let (_, message) = server.sink.accepted().pop().unwrap();
    assert_eq!(message.customer_id.as_deref(), Some("cust-7"));
    assert_eq!(message.display_name.as_deref(), Some("Li Lei"));
    assert_eq!(
        message.raw,
        Some(json!({"site_token": {"tier": "vip", "app_user_id": "u-7"}}))
    );

    ws.close(None).await.unwrap();
    wait_until("presence cleared", || {
        let kv = kv.clone();
        async move {
            kv.get("presence:webchat:site:c-cust-7")
                .await
                .unwrap()
                .is_none()
                && kv.get("presence:app:shop-app:u-7").await.unwrap().is_none()
        }
    })
    .await;
}

#[tokio::test]
async fn refused_handshakes_get_a_frame_a_close_code_and_a_counted_reason() {
    let server = start("[socket]\nmax_connections_per_visitor = 1\n").await;
    let visitor = signer().sign_visitor("v-someone");
    let forged = format!("v-someone.{}", "0".repeat(32));
    let expired = crate::make_site_token(SITE_KEY, &json!({"sub": "a", "exp": 1}));
    // (query, origin, error code, close code, counted reason)
    let cases: Vec<(String, Option<&str>, &str, u16, RejectReason)> = vec![
        (
            "v=1".into(),
            Some("https://evil.example.net"),
            "origin_not_allowed",
            4003,
            RejectReason::BadSignature,
        ),
        (
            "v=1".into(),
            None,
            "origin_not_allowed",
            4003,
            RejectReason::BadSignature,
        ),
        (
            format!("v=1&visitor={forged}"),
            Some("https://shop.example.com"),
            "bad_visitor",
            4003,
            RejectReason::BadSignature,
        ),
        (
            "v=1&token=abc.def.ghi".into(),
            Some("https://shop.example.com"),
            "bad_token",
            4003,
            RejectReason::BadSignature,
        ),
        (
            format!("v=1&token={expired}"),
            Some("https://shop.example.com"),
            "expired_token",
            4003,
            RejectReason::StaleTimestamp,
        ),
        (
            "v=2".into(),
            Some("https://shop.example.com"),
            "unsupported_version",
            4000,
            RejectReason::Malformed,
        ),
    ];
    for (query, origin, code, close, reason) in &cases {
        let mut ws = server.open(query, *origin).await;
        let (frames, got) = closing(&mut ws).await;
        assert_eq!(
            frames.first().map(|f| f["code"].clone()),
            Some(json!(code)),
            "{query}"
        );
        assert_eq!(frames[0]["fatal"], true);
        assert_eq!(got, Some(CloseCode::from(*close)), "{query}");
        assert_eq!(
            server.refused.lock().unwrap().last(),
            Some(reason),
            "{query}"
        );
    }
    // One tab per visitor here: the second is refused as too many.
    let (_first, _) = server
        .hello(&format!("v=1&visitor={visitor}"), 0, None)
        .await;
    let mut second = server
        .open(
            &format!("v=1&visitor={visitor}"),
            Some("https://shop.example.com"),
        )
        .await;
    let (frames, got) = closing(&mut second).await;
    assert_eq!(frames[0]["code"], "too_many_tabs");
    assert_eq!(got, Some(CloseCode::from(4029)));
    assert_eq!(server.refused.lock().unwrap().len(), cases.len() + 1);
}

#[tokio::test]
async fn oversize_frames_floods_and_garbage_are_answered() {
    let server =
        start("[socket]\nmax_frame_bytes = 1024\nframes_per_second = 1\nframe_burst = 5\n").await;
    let (mut ws, _) = server.hello("v=1", 0, None).await;
    send(&mut ws, json!({"type": "shout"})).await;
    let error = recv(&mut ws).await;
    assert_eq!(
        (error["code"].as_str(), error["fatal"].as_bool()),
        (Some("bad_frame"), Some(false))
    );
    assert!(error["message"].as_str().unwrap().contains("shout"));
    send(
        &mut ws,
        json!({"type": "message", "id": "bad id!", "content": {"type": "text", "text": "x"}}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["code"], "invalid_message");
    let big = "x".repeat(1500);
    send(
        &mut ws,
        json!({"type": "message", "id": "c-big", "content": {"type": "text", "text": big}}),
    )
    .await;
    let (frames, code) = closing(&mut ws).await;
    assert_eq!(frames.last().unwrap()["code"], "too_big");
    assert_eq!(code, Some(CloseCode::Size));

    let (mut ws, _) = server.hello("v=1", 0, None).await;
    for _ in 0..20 {
        if ws
            .send(Message::text(r#"{"type":"typing","on":true}"#))
            .await
            .is_err()
        {
            break;
        }
    }
    let (frames, code) = closing(&mut ws).await;
    assert_eq!(frames.last().unwrap()["code"], "flood");
    assert_eq!(code, Some(CloseCode::Policy));
    assert_eq!(
        server.sink.accepted().len(),
        0,
        "nothing of this reached the pipeline"
    );
    // No HTTP answer carries these: each is counted through the sink, before the close.
    assert_eq!(
        server.sink.refusals(),
        [
            RejectReason::Malformed,
            RejectReason::Malformed,
            RejectReason::Oversize,
            RejectReason::Flood
        ]
    );
    // The typing frames before the flood reached the helpdesk as an event.
    wait_until("typing reported", || async {
        !server.sink.reported().is_empty()
    })
    .await;
    let reported = server.sink.reported();
    assert_eq!(reported[0].1.kind, "conversation.typing");
    assert_eq!(reported[0].1.data["on"], true);
}

// ---- two instances ------------------------------------------------------------------------

/// A fan-out shared by several "instances": each has its own object (as each daemon has
/// its own Redis subscriber), and a publish reaches them all.
#[derive(Default)]
struct LinkedFanout {
    local: LocalFanout,
    peers: Mutex<Vec<Weak<LinkedFanout>>>,
}

#[async_trait]
impl Fanout for LinkedFanout {
    async fn publish(&self, topic: &str, payload: Vec<u8>) -> Result<(), KvError> {
        self.local.publish(topic, payload.clone()).await?;
        let peers: Vec<Arc<LinkedFanout>> = self
            .peers
            .lock()
            .unwrap()
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for peer in peers {
            peer.local.publish(topic, payload.clone()).await?;
        }
        Ok(())
    }

    fn subscribe(&self, topic: &str) -> broadcast::Receiver<Vec<u8>> {
        self.local.subscribe(topic)
    }
}

#[tokio::test]
async fn a_reply_delivered_by_another_instance_reaches_the_socket() {
    let kv: Arc<dyn KvStore> = Arc::new(MemoryKv::default());
    let (fan_a, fan_b) = (
        Arc::new(LinkedFanout::default()),
        Arc::new(LinkedFanout::default()),
    );
    fan_a.peers.lock().unwrap().push(Arc::downgrade(&fan_b));
    fan_b.peers.lock().unwrap().push(Arc::downgrade(&fan_a));
    let context = |fanout: Arc<LinkedFanout>, name: &str| ConnectorContext {
        kv: kv.clone(),
        fanout,
        http: switchboard_sdk::reqwest::Client::new(),
        instance_id: name.to_owned(),
    };
    let a = WebchatFactory::build(&config(""), &context(fan_a.clone(), "a")).unwrap();
    let b = WebchatFactory::build(&config(""), &context(fan_b.clone(), "b")).unwrap();
    for connector in [a.clone(), b.clone()] {
        tokio::spawn(async move {
            connector
                .run(tokio_util::sync::CancellationToken::new())
                .await
        });
    }
    let server_a = serve(a, kv.clone()).await;

    let (mut ws, ready) = server_a.hello("v=1", 0, None).await;
    let (_, user) = visitor_of(&ready);
    assert_eq!(
        kv.get(&format!("presence:webchat:site:{user}"))
            .await
            .unwrap()
            .as_deref(),
        Some(&b"a"[..])
    );
    for i in 1..=3 {
        deliver(
            &b,
            &user,
            &format!("r-{i}"),
            json!({"type": "text", "text": format!("from b {i}")}),
        )
        .await;
    }
    for i in 1..=3 {
        let frame = recv(&mut ws).await;
        assert_eq!(
            (frame["seq"].as_u64(), frame["content"]["text"].as_str()),
            (Some(i), Some(format!("from b {i}").as_str()))
        );
    }
}

#[tokio::test]
async fn the_demo_page_and_assets_answer_when_nested_as_the_daemon_does() {
    use tower::ServiceExt;
    let connector = WebchatFactory::build(&config(""), &ConnectorContext::in_memory()).unwrap();
    let channel = ChannelRef {
        kind: "webchat".into(),
        connector_id: "site".into(),
    };
    let routes = connector.routes(Inbound::new(Arc::new(RecordingSink::default()), channel));
    let app = axum::Router::new().nest("/webchat/site", routes);
    // `/webchat/site/` (trailing slash) is not routed by axum's nest; see README.
    for (path, status) in [
        ("/webchat/site", 200),
        ("/webchat/site/widget.js", 200),
        ("/webchat/site/nothing", 404),
        ("/webchat/site/assets/widget.000000000000.css", 404),
    ] {
        let response = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path}");
        if path == "/webchat/site" {
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            let page = String::from_utf8_lossy(&body);
            assert!(page.contains("/webchat/site/widget.js"), "{page}");
        }
    }
}

#[tokio::test]
async fn an_uploaded_image_becomes_an_image_message_and_can_be_fetched() {
    use tower::ServiceExt;
    let server = start("public_url = \"https://chat.example.com/webchat/site\"\n[media]\nmax_image_bytes = 2048\n[limits]\nmax_body_bytes = 4096\n").await;
    let (mut ws, ready) = server.hello("v=1", 0, None).await;
    let signed = ready["visitor"].as_str().unwrap().to_owned();
    assert_eq!(ready["max_image_bytes"], 2048);
    let routes = server.connector.routes(Inbound::new(
        server.sink.clone(),
        ChannelRef {
            kind: "webchat".into(),
            connector_id: "site".into(),
        },
    ));
    let upload = |body: Vec<u8>, visitor: &str| {
        Request::post("/upload")
            .header("content-type", "image/png")
            .header("x-webchat-visitor", visitor)
            .body(Body::from(body))
            .unwrap()
    };
    let png = [b"\x89PNG\r\n\x1a\n".as_slice(), &[7u8; 100]].concat();
    let cases = [
        (upload(png.clone(), "v-x.00"), 403),
        (upload(b"<svg/>".to_vec(), &signed), 400),
        (upload([png.clone(), vec![0; 3000]].concat(), &signed), 413),
    ];
    for (request, status) in cases {
        let response = routes.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), status);
    }
    let response = routes
        .clone()
        .oneshot(upload(png.clone(), &signed))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    let answer: Value = serde_json::from_slice(&body).unwrap();
    let media_id = answer["media_id"].as_str().unwrap().to_owned();

    send(&mut ws, json!({"type": "message", "id": "img-1", "content": {"type": "image", "media_id": media_id, "caption": "broken box"}})).await;
    assert_eq!(recv(&mut ws).await["type"], "ack");
    let (_, message) = server.sink.accepted().pop().unwrap();
    let expected_url = format!("https://chat.example.com/webchat/site/media/{media_id}");
    match &message.content {
        switchboard_sdk::Content::Image {
            url,
            media_id: id,
            caption,
            ..
        } => {
            assert_eq!(url.as_deref(), Some(expected_url.as_str()));
            assert_eq!(id.as_deref(), Some(media_id.as_str()));
            assert_eq!(caption.as_deref(), Some("broken box"));
        }
        other => panic!("not an image: {other:?}"),
    }
    // Another visitor cannot send someone else's upload.
    let (mut other, _) = server.hello("v=1", 0, None).await;
    send(&mut other, json!({"type": "message", "id": "img-2", "content": {"type": "image", "media_id": media_id}})).await;
    assert_eq!(recv(&mut other).await["code"], "invalid_message");

    let fetched = routes
        .clone()
        .oneshot(
            Request::get(format!("/media/{media_id}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.headers()["content-type"], "image/png");
    assert_eq!(fetched.headers()["x-content-type-options"], "nosniff");
    let bytes = axum::body::to_bytes(fetched.into_body(), 1 << 16)
        .await
        .unwrap();
    assert_eq!(bytes.as_ref(), png.as_slice());
    let missing = routes
        .oneshot(
            Request::get("/media/01ARZ3NDEKTSV4RRFFQ69G5FAV")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}
