//! Fan-out of agent replies to connected web chat visitors: replies per second delivered and
//! the latency from publishing a reply on RabbitMQ to its frame arriving on the visitor's
//! socket. Run by `connectors/webchat/scripts/bench-fanout`, which starts the servers.
//!
//! Modes (`BENCH_MODE`):
//! - `load`: opens `BENCH_N` WebSocket connections to `BENCH_URL` (with `Origin:
//!   BENCH_ORIGIN`) from the comma-separated source addresses `BENCH_SOURCES`, says `hello`
//!   on each and keeps the `conversation_id` of its `ready`. Then publishes replies
//!   (`switchboard.reply.v1`, persistent, confirm mode) to exchange `BENCH_EXCHANGE` with
//!   routing key `reply`, reply `i` to visitor `i % N`: first `BENCH_WARMUP` of them, waited
//!   for, then `BENCH_REPLIES`. With `BENCH_RATE` above 0 reply `i` is due at
//!   `start + i / rate` (open loop; latency counts from the due moment, so a publisher
//!   that falls behind shows up in it); with 0 as fast as `BENCH_WINDOW` unconfirmed
//!   publishes allow (latency counts from the publish call). Each reply's id carries that
//!   moment; the visitor's socket reads it back from the `agent` frame.
//! - `bare-server`: the yardstick, doing only the transport part of the daemon's work: a
//!   tokio-tungstenite server (4 KiB read buffer, unbuffered writes, one task per socket)
//!   that answers `hello` with a `ready` naming a conversation of its own, and one lapin
//!   consumer (prefetch `BENCH_PREFETCH`, manual acks) on a queue `BENCH_NAME` bound to a
//!   direct exchange of the same name, which parses each reply and writes an `agent` frame
//!   to the socket holding its conversation. Listens on `BENCH_LISTEN` and prints
//!   `listening ADDR`.
//!
//! - `cleanup`: deletes the queues and exchanges a daemon with broker prefix
//!   `BENCH_PREFIX` declared (and its agent queue `{prefix}.agents.general`).
//!
//! Other variables: `BENCH_AMQP_URL` (default the local guest URL), `BENCH_SERVER_PID`
//! (the server whose CPU time to report), `BENCH_MAX_SECS` (default 300), `BENCH_CLK_TCK`
//! (default 100).
//!
//! `load` prints a human summary on stderr and one `RESULT key=value ...` line on stdout.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Handshakes in flight at once, so the server's accept backlog is not overrun.
const CONCURRENT_HANDSHAKES: usize = 256;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => value
            .trim()
            .parse()
            .map_err(|_| format!("{name}: cannot parse {value:?}")),
        _ => Ok(default),
    }
}

fn required(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is required"))
}

/// Both sides use small buffers: 10,000 default sockets would take 1.3 GB per process.
fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// A process's user+system CPU seconds, from `/proc/{pid}/stat`.
fn cpu_seconds(pid: &str, clk_tck: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clk_tck)
}

#[tokio::main]
async fn main() -> ExitCode {
    let mode = std::env::var("BENCH_MODE").unwrap_or_else(|_| "load".to_owned());
    let result = match mode.as_str() {
        "load" => load().await,
        "bare-server" => bare_server().await,
        "cleanup" => cleanup().await,
        other => Err(format!("unknown BENCH_MODE {other:?}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("webchat_fanout: {err}");
            ExitCode::FAILURE
        }
    }
}

fn amqp_url() -> String {
    std::env::var("BENCH_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

// ---------------------------------------------------------------------------------------
// load

/// The moment a reply was published (or due), in microseconds since the run's origin.
fn reply_id(i: usize, sent_us: u64) -> String {
    format!("b{i}-{sent_us}")
}

fn sent_us_of(id: &str) -> Option<u64> {
    id.rsplit_once('-')?.1.parse().ok()
}

type Ws = WebSocketStream<TcpStream>;

async fn connect(
    url: &str,
    server: SocketAddr,
    source: IpAddr,
    origin: &str,
) -> Result<(Ws, String), String> {
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::new(source, 0))
        .map_err(|e| format!("bind {source}: {e}"))?;
    let stream = socket.connect(server).await.map_err(|e| e.to_string())?;
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    request.headers_mut().insert(
        "origin",
        origin.parse().map_err(|_| "bad origin".to_owned())?,
    );
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(socket_config()))
            .await
            .map_err(|e| e.to_string())?;
    ws.send(Message::text(r#"{"type":"hello","v":1}"#))
        .await
        .map_err(|e| e.to_string())?;
    while let Some(frame) = ws.next().await {
        if let Message::Text(text) = frame.map_err(|e| e.to_string())? {
            let ready: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            return match ready["conversation_id"].as_str() {
                Some(conversation) => Ok((ws, conversation.to_owned())),
                None => Err(format!("no conversation in {ready}")),
            };
        }
    }
    Err("closed before ready".to_owned())
}

/// Reads agent frames until the socket ends, sending each one's latency to `latencies`.
async fn visitor(mut ws: Ws, origin: Instant, latencies: mpsc::UnboundedSender<u64>) {
    while let Some(Ok(frame)) = ws.next().await {
        let Message::Text(text) = frame else { continue };
        let arrived = origin.elapsed().as_micros() as u64;
        let Ok(frame) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if frame["type"] != "agent" {
            continue;
        }
        if let Some(sent) = frame["id"].as_str().and_then(sent_us_of) {
            let _ = latencies.send(arrived.saturating_sub(sent));
        }
    }
}

fn not_confirmed(result: &Result<lapin::Confirmation, lapin::Error>) -> bool {
    result.as_ref().is_ok_and(lapin::Confirmation::is_nack) || result.is_err()
}

struct Publisher {
    channel: Channel,
    exchange: String,
    conversations: Arc<Vec<String>>,
}

impl Publisher {
    async fn publish(
        &self,
        i: usize,
        sent_us: u64,
    ) -> Result<lapin::PublisherConfirm, lapin::Error> {
        let conversation = &self.conversations[i % self.conversations.len()];
        let body = json!({
            "schema": "switchboard.reply.v1",
            "id": reply_id(i, sent_us),
            "conversation_id": conversation,
            "content": {"type": "text", "text": "Your parcel left the depot this morning and arrives tomorrow."},
            "agent": {"id": "a-7", "name": "Han Meimei"},
        });
        self.channel
            .basic_publish(
                self.exchange.as_str().into(),
                "reply".into(),
                BasicPublishOptions::default(),
                &serde_json::to_vec(&body).unwrap_or_default(),
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into()),
            )
            .await
    }

    /// Publishes replies `first..first + n`; returns how many were not confirmed.
    async fn run(&self, first: usize, n: usize, rate: f64, window: usize, origin: Instant) -> u64 {
        let mut failed = 0;
        let mut in_flight = FuturesUnordered::new();
        let start = tokio::time::Instant::now();
        let start_us = origin.elapsed().as_micros() as u64;
        for i in 0..n {
            let sent_us = if rate > 0.0 {
                let due = Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(start + due).await;
                start_us + due.as_micros() as u64
            } else {
                while in_flight.len() >= window {
                    if in_flight.next().await.as_ref().is_some_and(not_confirmed) {
                        failed += 1;
                    }
                }
                origin.elapsed().as_micros() as u64
            };
            match self.publish(first + i, sent_us).await {
                Ok(confirm) => in_flight.push(confirm),
                Err(_) => failed += 1,
            }
            // Settle confirms that have come without blocking the schedule.
            while let Some(Some(done)) = futures_util::FutureExt::now_or_never(in_flight.next()) {
                if not_confirmed(&done) {
                    failed += 1;
                }
            }
        }
        while let Some(done) = in_flight.next().await {
            if not_confirmed(&done) {
                failed += 1;
            }
        }
        failed
    }
}

/// Waits until `count` latencies arrived or `deadline` passed; returns them.
async fn collect(
    latencies: &mut mpsc::UnboundedReceiver<u64>,
    count: usize,
    deadline: Instant,
) -> Vec<u64> {
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, latencies.recv()).await {
            Ok(Some(latency)) => got.push(latency),
            _ => break,
        }
    }
    got
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

async fn load() -> Result<(), String> {
    let url = required("BENCH_URL")?;
    let origin_header = required("BENCH_ORIGIN")?;
    let exchange = required("BENCH_EXCHANGE")?;
    let n: usize = env_or("BENCH_N", 10_000)?;
    let replies: usize = env_or("BENCH_REPLIES", 20_000)?;
    let warmup: usize = env_or("BENCH_WARMUP", 2_000)?;
    let rate: f64 = env_or("BENCH_RATE", 0.0)?;
    let window: usize = env_or("BENCH_WINDOW", 256)?;
    let max_secs: u64 = env_or("BENCH_MAX_SECS", 300)?;
    let clk_tck: f64 = env_or("BENCH_CLK_TCK", 100.0)?;
    let server_pid = std::env::var("BENCH_SERVER_PID").unwrap_or_default();
    let sources: Vec<IpAddr> = std::env::var("BENCH_SOURCES")
        .unwrap_or_else(|_| "127.0.0.1".to_owned())
        .split(',')
        .map(|s| s.trim().parse().map_err(|_| format!("bad source {s:?}")))
        .collect::<Result<_, _>>()?;
    let authority = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| format!("bad url {url}"))?;
    let server: SocketAddr = authority
        .parse()
        .map_err(|_| format!("bad address {authority}"))?;
    let deadline = Instant::now() + Duration::from_secs(max_secs);

    // Visitors.
    let origin = Instant::now();
    let gate = Arc::new(Semaphore::new(CONCURRENT_HANDSHAKES));
    let (latency_tx, mut latency_rx) = mpsc::unbounded_channel();
    let mut opening = FuturesUnordered::new();
    let (url, origin_header): (Arc<str>, Arc<str>) = (url.into(), origin_header.into());
    for i in 0..n {
        let (url, origin_header, gate) = (url.clone(), origin_header.clone(), gate.clone());
        let source = sources[i % sources.len()];
        opening.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            connect(&url, server, source, &origin_header).await
        }));
    }
    let mut conversations = Vec::with_capacity(n);
    let mut refused = 0usize;
    while let Some(opened) = opening.next().await {
        match opened {
            Ok(Ok((ws, conversation))) => {
                conversations.push(conversation);
                tokio::spawn(visitor(ws, origin, latency_tx.clone()));
            }
            Ok(Err(err)) => {
                refused += 1;
                if refused <= 5 {
                    eprintln!("connection refused: {err}");
                }
            }
            Err(err) => return Err(err.to_string()),
        }
    }
    drop(latency_tx);
    eprintln!(
        "{} visitors connected ({refused} failed) in {:.1} s",
        conversations.len(),
        origin.elapsed().as_secs_f64()
    );
    if conversations.is_empty() {
        return Err("no visitor connected".to_owned());
    }

    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .map_err(|e| format!("amqp: {e}"))?;
    let channel = conn.create_channel().await.map_err(|e| e.to_string())?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let publisher = Publisher {
        channel,
        exchange,
        conversations: Arc::new(conversations),
    };

    // Warm-up at the same rate, so connections, history keys and caches exist.
    let unconfirmed = publisher.run(0, warmup, rate, window, origin).await;
    let warm = collect(&mut latency_rx, warmup, deadline).await;
    if warm.len() < warmup || unconfirmed > 0 {
        return Err(format!(
            "warm-up: {} of {warmup} delivered, {unconfirmed} unconfirmed",
            warm.len()
        ));
    }

    let cpu_before = cpu_seconds(&server_pid, clk_tck);
    let started = Instant::now();
    let publishing = publisher.run(warmup, replies, rate, window, origin);
    let collecting = collect(&mut latency_rx, replies, deadline);
    let (unconfirmed, mut latencies) = tokio::join!(publishing, collecting);
    let secs = started.elapsed().as_secs_f64();
    let server_cpu = cpu_seconds(&server_pid, clk_tck)
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    latencies.sort_unstable();
    let delivered = latencies.len();
    let per_sec = delivered as f64 / secs;
    let (p50, p90, p99, max) = (
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 100.0),
    );
    let cpu_ms_per_1000 = server_cpu.map_or(f64::NAN, |cpu| cpu * 1e6 / delivered.max(1) as f64);
    eprintln!(
        "visitors={} replies={replies} rate={rate} delivered={delivered} in {secs:.2} s = \
         {per_sec:.0}/s; latency ms p50={p50:.2} p90={p90:.2} p99={p99:.2} max={max:.2}; \
         server CPU {:.2} s ({cpu_ms_per_1000:.1} ms per 1000); unconfirmed={unconfirmed}",
        publisher.conversations.len(),
        server_cpu.unwrap_or(f64::NAN),
    );
    println!(
        "RESULT visitors={} replies={replies} rate={rate} delivered={delivered} secs={secs:.3} \
         per_sec={per_sec:.0} p50_ms={p50:.2} p90_ms={p90:.2} p99_ms={p99:.2} max_ms={max:.2} \
         server_cpu_s={:.2} cpu_ms_per_1000={cpu_ms_per_1000:.1} unconfirmed={unconfirmed}",
        publisher.conversations.len(),
        server_cpu.unwrap_or(f64::NAN),
    );
    if delivered < replies {
        return Err(format!("only {delivered} of {replies} replies arrived"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// bare-server

type Sockets = Arc<Mutex<HashMap<String, mpsc::Sender<String>>>>;

async fn bare_socket(stream: TcpStream, sockets: Sockets, id: u64) {
    let Ok(mut ws) =
        tokio_tungstenite::accept_async_with_config(stream, Some(socket_config())).await
    else {
        return;
    };
    let conversation = format!("bare:{id}");
    // Up to 256 frames wait for a socket, as the daemon's mailbox allows.
    let (tx, mut rx) = mpsc::channel::<String>(256);
    loop {
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    if text.contains("\"hello\"") {
                        sockets.lock().unwrap_or_else(|e| e.into_inner()).insert(conversation.clone(), tx.clone());
                        let ready = json!({"type": "ready", "v": 1, "conversation_id": conversation});
                        if ws.send(Message::text(ready.to_string())).await.is_err() {
                            break;
                        }
                    }
                }
                Some(Ok(_)) => {}
                _ => break,
            },
            Some(frame) = rx.recv() => {
                if ws.send(Message::text(frame)).await.is_err() {
                    break;
                }
            }
        }
    }
    sockets
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&conversation);
}

async fn bare_consumer(channel: Channel, queue: String, sockets: Sockets) -> Result<(), String> {
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "bare-fanout".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut seq = 0u64;
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery.map_err(|e| e.to_string())?;
        if let Ok(reply) = serde_json::from_slice::<Value>(&delivery.data) {
            let target = reply["conversation_id"].as_str().and_then(|c| {
                sockets
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(c)
                    .cloned()
            });
            if let Some(target) = target {
                seq += 1;
                let frame = json!({
                    "type": "agent", "seq": seq, "id": reply["id"],
                    "content": reply["content"], "agent": reply["agent"]["name"],
                });
                let _ = target.send(frame.to_string()).await;
            }
        }
        delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn bare_server() -> Result<(), String> {
    let name = required("BENCH_NAME")?;
    let listen: SocketAddr = env_or("BENCH_LISTEN", "127.0.0.1:0".parse().expect("address"))?;
    let prefetch: u16 = env_or("BENCH_PREFETCH", 64)?;
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .map_err(|e| format!("amqp: {e}"))?;
    let channel = conn.create_channel().await.map_err(|e| e.to_string())?;
    channel
        .exchange_declare(
            name.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    channel
        .queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    channel
        .queue_bind(
            name.as_str().into(),
            name.as_str().into(),
            "reply".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let sockets: Sockets = Arc::default();
    let consumer = tokio::spawn(bare_consumer(
        channel.clone(),
        name.clone(),
        sockets.clone(),
    ));
    let listener = TcpListener::bind(listen).await.map_err(|e| e.to_string())?;
    println!(
        "listening {}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let next_id = AtomicU64::new(0);
    let serving = async {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(bare_socket(stream, sockets.clone(), id));
                }
                // Out of descriptors for a moment: the client's next try will tell.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    };
    tokio::select! {
        () = serving => {}
        ended = consumer => eprintln!("consumer ended: {ended:?}"),
        _ = tokio::signal::ctrl_c() => {}
        () = terminated() => {}
    }
    let _ = channel
        .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = channel
        .exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
        .await;
    Ok(())
}

async fn cleanup() -> Result<(), String> {
    let prefix = required("BENCH_PREFIX")?;
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .map_err(|e| format!("amqp: {e}"))?;
    let channel = conn.create_channel().await.map_err(|e| e.to_string())?;
    for suffix in ["agents.general", "unroutable", "outbound", "dead"] {
        let queue = format!("{prefix}.{suffix}");
        let _ = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for suffix in ["inbound", "unroutable", "outbound", "events", "dead"] {
        let exchange = format!("{prefix}.{suffix}");
        let _ = channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    Ok(())
}

async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
