//! Helpers of the web chat end-to-end tests: the connector's config table, a WebSocket
//! visitor speaking protocol version 1, and Redis cleanup. Builds on tests/common.

#![allow(dead_code)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::common::Daemon;

pub const SITE_KEY: &str = "e2e-site-key-0123456789";
const WAIT: Duration = Duration::from_secs(20);

/// A `[[connectors.webchat]]` table with id `site`, plus `extra` lines inside it (before
/// its sub-tables) and `socket` lines in `[connectors.webchat.socket]`.
pub fn webchat_table(extra: &str, socket: &str) -> String {
    format!(
        r#"
[[connectors.webchat]]
id = "site"
visitor_secret = "e2e-visitor-secret-0123456789abcdef"
site_key = "{SITE_KEY}"
client_ip_header = "x-forwarded-for"
{extra}
[connectors.webchat.socket]
{socket}
[connectors.webchat.limits]
per_user_per_minute = 100000
inbound_per_second = 100000
inbound_burst = 100000
outbound_per_second = 1000
outbound_burst = 1000
"#
    )
}

/// `[redis]` with keys under `prefix`.
pub fn redis_block(prefix: &str) -> String {
    format!(
        "\n[redis]\nurl = \"{url}\"\nkey_prefix = \"{prefix}:\"\n",
        url = crate::common::redis_url()
    )
}

/// Deletes the Redis keys a test made under `prefix`.
pub fn redis_cleanup(prefix: &str) {
    let Ok(out) = std::process::Command::new("redis-cli")
        .args(["-u", &crate::common::redis_url()])
        .args(["--scan", "--pattern", &format!("{prefix}:*")])
        .output()
    else {
        return;
    };
    for key in String::from_utf8_lossy(&out.stdout).lines() {
        let _ = std::process::Command::new("redis-cli")
            .args(["-u", &crate::common::redis_url(), "del", key])
            .output();
    }
}

/// A free TCP port on 127.0.0.1 for a daemon that must come back on the same address.
/// Taken below the kernel's ephemeral range (32768 and up), so no outgoing connection
/// (the daemon's own AMQP or Redis link) grabs it between this check and the bind.
pub fn free_port() -> u16 {
    let seed = ulid::Ulid::new().random();
    for attempt in 0..200u128 {
        let port = 20_000 + ((seed + attempt * 7919) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000");
}

/// A reply as a helpdesk publishes it.
pub fn reply(conversation_id: &str, id: &str, text: &str) -> Value {
    json!({
        "schema": "switchboard.reply.v1",
        "id": id,
        "conversation_id": conversation_id,
        "content": {"type": "text", "text": text},
        "agent": {"id": "a-7", "name": "Han Meimei"},
    })
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How a socket ended: error frames seen before the close, and the close code.
#[derive(Debug)]
pub struct Closed {
    pub frames: Vec<Value>,
    pub code: Option<u16>,
}

/// Opens `/webchat/site/ws?{query}` on `daemon` with `origin` (or none) and the client
/// address `ip` (through x-forwarded-for).
pub async fn open(daemon: &Daemon, query: &str, origin: Option<&str>, ip: &str) -> Ws {
    let url = format!("ws://{}/webchat/site/ws?{query}", daemon.public);
    let mut request = url.into_client_request().expect("request");
    let headers = request.headers_mut();
    if let Some(origin) = origin {
        headers.insert("origin", origin.parse().expect("origin"));
    }
    headers.insert("x-forwarded-for", ip.parse().expect("ip"));
    let (ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket handshake");
    assert_eq!(response.status(), 101);
    ws
}

/// The daemon's own origin, which the connector always allows.
pub fn own_origin(daemon: &Daemon) -> String {
    format!("http://{}", daemon.public)
}

/// Connects, says hello from `last_seq`/`epoch`, and returns the socket and `ready`.
pub async fn hello(
    daemon: &Daemon,
    query: &str,
    last_seq: u64,
    epoch: Option<&str>,
) -> (Ws, Value) {
    let mut ws = open(daemon, query, Some(&own_origin(daemon)), "10.0.0.1").await;
    send(
        &mut ws,
        json!({"type": "hello", "v": 1, "last_seq": last_seq, "epoch": epoch}),
    )
    .await;
    let ready = recv(&mut ws).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    (ws, ready)
}

pub async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::text(frame.to_string()))
        .await
        .expect("send frame");
}

/// A text message frame.
pub fn message(id: &str, text: &str) -> Value {
    json!({"type": "message", "id": id, "content": {"type": "text", "text": text}})
}

/// The next text frame as JSON (panics on close or after the deadline).
pub async fn recv(ws: &mut Ws) -> Value {
    loop {
        let next = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .expect("frame");
        match next {
            Message::Text(text) => return serde_json::from_str(text.as_str()).expect("json"),
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
}

/// The next frame of `kind`, skipping others (typing, pong).
pub async fn recv_kind(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let frame = recv(ws).await;
        if frame["type"] == kind {
            return frame;
        }
    }
}

/// Reads until the server closes.
pub async fn closed(ws: &mut Ws) -> Closed {
    let mut frames = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a close in time")
        {
            Some(Ok(Message::Text(text))) => {
                frames.push(serde_json::from_str(text.as_str()).expect("json"))
            }
            Some(Ok(Message::Close(frame))) => {
                return Closed {
                    frames,
                    code: frame.map(|f| u16::from(f.code)),
                };
            }
            Some(Ok(_)) => {}
            None | Some(Err(_)) => return Closed { frames, code: None },
        }
    }
}

/// The user id inside a signed visitor id from `ready`.
pub fn user_of(ready: &Value) -> String {
    let signed = ready["visitor"].as_str().expect("visitor");
    signed.rsplit_once('.').expect("signed id").0.to_owned()
}
