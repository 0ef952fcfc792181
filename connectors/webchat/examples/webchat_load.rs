//! Load client for the web chat benchmark (connectors/webchat/scripts/bench-idle): opens N
//! WebSocket connections from several 127.0.0.x source addresses (each address has its own
//! ~28k ephemeral ports), says `hello` on each, waits for the first answer, then holds them
//! idle until stdin closes or says `quit`.
//!
//! ```text
//! webchat_load URL CONNECTIONS SOURCES [ORIGIN]
//! webchat_load ws://127.0.0.1:8080/webchat/bench/ws?v=1 10000 127.0.0.2,127.0.0.3 http://127.0.0.1:8080
//! ```
//! Prints `READY <connected> <failed> <seconds>` once every connection answered or failed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use std::io::BufRead;
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Handshakes in flight at once, so the server's accept backlog is not overrun.
const CONCURRENT_HANDSHAKES: usize = 256;

#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error("usage: webchat_load URL CONNECTIONS SOURCES [ORIGIN]")]
    Usage,
    #[error("bad argument {0}")]
    Argument(String),
}

async fn one(
    url: &str,
    server: SocketAddr,
    source: IpAddr,
    origin: Option<&str>,
) -> Result<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, String> {
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::new(source, 0))
        .map_err(|e| format!("bind {source}: {e}"))?;
    let stream = socket.connect(server).await.map_err(|e| e.to_string())?;
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    if let Some(origin) = origin {
        request.headers_mut().insert(
            "origin",
            origin.parse().map_err(|_| "bad origin".to_owned())?,
        );
    }
    // The client side is not what is measured, but 10k default clients would take 1.3 GB.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| e.to_string())?;
    ws.send(Message::text(r#"{"type":"hello","v":1}"#))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(_))) => return Ok(ws),
            Some(Ok(Message::Close(frame))) => return Err(format!("closed: {frame:?}")),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("closed".to_owned()),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), LoadError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (url, count, sources) = match args.as_slice() {
        [url, count, sources, ..] => (url.clone(), count, sources),
        _ => return Err(LoadError::Usage),
    };
    let origin: Option<Arc<str>> = args.get(3).map(|o| o.as_str().into());
    let count: usize = count
        .parse()
        .map_err(|_| LoadError::Argument(count.clone()))?;
    let sources: Vec<IpAddr> = sources
        .split(',')
        .map(|s| s.parse().map_err(|_| LoadError::Argument(s.to_owned())))
        .collect::<Result<_, _>>()?;
    let authority = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| LoadError::Argument(url.clone()))?;
    let server: SocketAddr = authority
        .parse()
        .map_err(|_| LoadError::Argument(authority.to_owned()))?;
    let url: Arc<str> = url.into();

    let started = Instant::now();
    let connected = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(CONCURRENT_HANDSHAKES));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    for i in 0..count {
        let (url, origin, connected, failed, gate, done) = (
            url.clone(),
            origin.clone(),
            connected.clone(),
            failed.clone(),
            gate.clone(),
            done_tx.clone(),
        );
        let source = sources[i % sources.len()];
        tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let result = one(&url, server, source, origin.as_deref()).await;
            drop(permit);
            match result {
                Ok(mut ws) => {
                    connected.fetch_add(1, Ordering::Relaxed);
                    let _ = done.send(());
                    drop(done);
                    // Idle: answer pings until the server or the process ends it.
                    while let Some(Ok(_)) = ws.next().await {}
                }
                Err(err) => {
                    if failed.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("connection {i} from {source}: {err}");
                    }
                    let _ = done.send(());
                }
            }
        });
    }
    drop(done_tx);
    for _ in 0..count {
        if done_rx.recv().await.is_none() {
            break;
        }
    }
    println!(
        "READY {} {} {:.1}",
        connected.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    // Held until stdin says quit or closes; read on a thread of its own.
    let (quit_tx, quit_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(line) if line.trim() != "quit" => {}
                _ => break,
            }
        }
        let _ = quit_tx.send(());
    });
    let _ = quit_rx.await;
    Ok(())
}
