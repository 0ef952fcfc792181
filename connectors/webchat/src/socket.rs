//! `GET /webchat/{id}/ws`: the handshake checks (version, origin, address limits,
//! credentials, caps) and the life of one socket.
//!
//! A refused handshake still completes the upgrade and then sends an `error` frame and a
//! close code, because a browser's WebSocket cannot read an HTTP refusal; the response
//! carries the sdk's `RejectedBecause` so the daemon counts and logs it like any refused
//! request. Refusals later in a socket's life (flood, oversize frame, idle) are counted here
//! for the minute log and in the daemon's rejection metric through `Inbound::refused`.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{Extensions, HeaderMap, header};
use axum::response::Response;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use switchboard_sdk::time::OffsetDateTime;
use switchboard_sdk::webhook::RejectedBecause;
use switchboard_sdk::{AcceptError, Content, Event, Inbound, InboundMessage, RejectReason};
use tokio::time::Instant;

use crate::Shared;
use crate::hub::{Admission, Outgoing, Registration};
use crate::identity::{Identity, IdentityError, Signer};
use crate::protocol::{
    ClientContent, ClientFrame, MAX_CLIENT_ID_CHARS, PROTOCOL_VERSION, ServerFrame, close,
    parse_client_frame,
};
use crate::web::AppState;

/// Refusals that happen inside a socket, by reason; logged every minute by `run`.
#[derive(Debug, Default)]
pub struct Refusals {
    /// Frames over the size limit.
    pub oversize: AtomicU64,
    /// Sockets closed for sending too fast.
    pub flood: AtomicU64,
    /// Frames that were not protocol frames.
    pub malformed: AtomicU64,
    /// Messages refused by the per-address message limit.
    pub rate_limited: AtomicU64,
    /// Sockets closed for silence.
    pub idle: AtomicU64,
}

impl Refusals {
    /// Writes the counts to the log, when any is non-zero.
    pub fn log(&self, connector: &str, connections: u32) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        tracing::info!(
            connector,
            connections,
            oversize = get(&self.oversize),
            flood = get(&self.flood),
            malformed = get(&self.malformed),
            rate_limited = get(&self.rate_limited),
            idle = get(&self.idle),
            "web chat sockets"
        );
    }
}

/// Query string of the socket URL.
#[derive(Debug, Deserialize)]
pub struct ConnectQuery {
    /// Protocol version.
    v: Option<u32>,
    /// Signed visitor id from an earlier `ready`.
    visitor: Option<String>,
    /// Site token from the site's backend.
    token: Option<String>,
}

/// A handshake refusal: the error frame and close code the client gets, and the reason
/// the daemon counts.
pub(crate) struct Refusal {
    /// Error code of the frame.
    pub code: &'static str,
    /// Explanation.
    pub message: String,
    /// Close code.
    pub close: u16,
    /// What the daemon counts.
    pub reason: RejectReason,
}

impl Refusal {
    fn new(
        code: &'static str,
        message: impl Into<String>,
        close: u16,
        reason: RejectReason,
    ) -> Self {
        Self {
            code,
            message: message.into(),
            close,
            reason,
        }
    }
}

impl From<IdentityError> for Refusal {
    fn from(err: IdentityError) -> Self {
        let (code, reason) = match err {
            IdentityError::BadVisitor => ("bad_visitor", RejectReason::BadSignature),
            IdentityError::ExpiredToken => ("expired_token", RejectReason::StaleTimestamp),
            IdentityError::BadToken(_)
            | IdentityError::TokensNotAccepted
            | IdentityError::TokenRequired => ("bad_token", RejectReason::BadSignature),
        };
        Refusal::new(code, err.to_string(), close::FORBIDDEN, reason)
    }
}

/// The client address: the trusted proxy header when configured, else the peer address
/// when the server records it.
pub(crate) fn client_ip(
    shared: &Shared,
    headers: &HeaderMap,
    extensions: &Extensions,
) -> Option<IpAddr> {
    if let Some(name) = &shared.settings.client_ip_header {
        // A proxy appends the address it saw, so the last entry is the one it vouches for.
        return headers
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse().ok());
    }
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
}

/// Whether the request's `Origin` may open a socket or post.
pub(crate) fn origin_allowed(shared: &Shared, headers: &HeaderMap) -> Result<(), Refusal> {
    let settings = &shared.settings;
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return if settings.allow_missing_origin || settings.any_origin {
            Ok(())
        } else {
            Err(Refusal::new(
                "origin_not_allowed",
                "request has no Origin header",
                close::FORBIDDEN,
                RejectReason::BadSignature,
            ))
        };
    };
    if settings.any_origin {
        return Ok(());
    }
    let origin = origin.to_ascii_lowercase();
    if settings.allowed_origins.contains(&origin) {
        return Ok(());
    }
    // The demo page is served by the daemon itself: its own origin is always fine.
    let own = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|host| {
            let host = host.to_ascii_lowercase();
            origin == format!("http://{host}") || origin == format!("https://{host}")
        });
    if own {
        return Ok(());
    }
    Err(Refusal::new(
        "origin_not_allowed",
        "this page's origin may not use this chat",
        close::FORBIDDEN,
        RejectReason::BadSignature,
    ))
}

/// Who the credentials name: a verified customer, a returning visitor, or a new one.
pub(crate) fn identify(
    shared: &Shared,
    visitor: Option<&str>,
    token: Option<&str>,
) -> Result<Identity, IdentityError> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    if let Some(token) = token.filter(|t| !t.is_empty()) {
        return shared.signer.verify_token(token, now);
    }
    if shared.settings.require_site_token {
        return Err(IdentityError::TokenRequired);
    }
    match visitor.filter(|v| !v.is_empty()) {
        Some(signed) => shared
            .signer
            .verify_visitor(signed)
            .map(Identity::anonymous),
        None => Ok(Identity::anonymous(Signer::new_visitor())),
    }
}

/// Everything one accepted socket owns.
struct Conn {
    state: AppState,
    identity: Identity,
    registration: Registration,
    _admission: Admission,
    ip: Option<IpAddr>,
    limiter: DefaultDirectRateLimiter,
    /// Epoch of the numbering this socket follows, once known.
    epoch: Option<Arc<str>>,
    /// Highest sequence number sent on this socket.
    last_sent: u64,
    /// The last typing state forwarded to the helpdesk, and when.
    typing: Option<(Instant, bool)>,
}

/// A visitor who keeps typing is reported again this often, not at every keystroke frame.
const TYPING_REPEAT: Duration = Duration::from_secs(3);

/// The handler of `GET /ws`.
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    Query(query): Query<ConnectQuery>,
    headers: HeaderMap,
    extensions: Extensions,
    ws: WebSocketUpgrade,
) -> Response {
    let shared = state.shared.clone();
    let s = &shared.settings.socket;
    // tungstenite refuses frames beyond twice our limit outright; up to that we answer
    // with a clear error frame first.
    let ws = ws
        .read_buffer_size(s.read_buffer_bytes)
        .write_buffer_size(s.write_buffer_bytes)
        .max_write_buffer_size((s.write_buffer_bytes * 2).max(64 * 1024))
        .max_message_size(s.max_frame_bytes * 2)
        .max_frame_size(s.max_frame_bytes * 2);

    let admitted = handshake(&state, &query, &headers, &extensions);
    match admitted {
        Ok(conn) => ws.on_upgrade(move |socket| serve(socket, conn)),
        Err(refusal) => {
            let frame = ServerFrame::Error {
                code: refusal.code,
                message: &refusal.message,
                id: None,
                retry_after_ms: None,
                fatal: true,
            }
            .to_text();
            let close_code = refusal.close;
            let mut response = ws.on_upgrade(move |mut socket| async move {
                let _ = socket.send(Message::Text(frame.into())).await;
                let _ = socket
                    .send(Message::Close(Some(CloseFrame {
                        code: close_code,
                        reason: Utf8Bytes::from_static("refused"),
                    })))
                    .await;
            });
            response.extensions_mut().insert(RejectedBecause {
                reason: refusal.reason,
                detail: format!("web chat socket refused: {}", refusal.code),
            });
            response
        }
    }
}

fn handshake(
    state: &AppState,
    query: &ConnectQuery,
    headers: &HeaderMap,
    extensions: &Extensions,
) -> Result<Conn, Refusal> {
    let shared = &state.shared;
    let s = &shared.settings.socket;
    if query.v != Some(PROTOCOL_VERSION) {
        return Err(Refusal::new(
            "unsupported_version",
            format!(
                "this server speaks protocol version {PROTOCOL_VERSION}; connect with ?v={PROTOCOL_VERSION}"
            ),
            close::VERSION,
            RejectReason::Malformed,
        ));
    }
    origin_allowed(shared, headers)?;
    let ip = client_ip(shared, headers, extensions);
    if let Some(ip) = ip
        && shared.connects.check_key(&ip).is_err()
    {
        return Err(Refusal::new(
            "too_many_connects",
            "too many new connections from this address, retry later",
            close::TOO_MANY,
            RejectReason::RateLimited,
        ));
    }
    let identity = identify(shared, query.visitor.as_deref(), query.token.as_deref())?;
    let admission = shared
        .hub
        .admit(ip, s.max_connections, s.max_connections_per_ip)
        .ok_or_else(|| {
            Refusal::new(
                "too_many_connections",
                "too many open chats from this address, close one or retry later",
                close::TOO_MANY,
                RejectReason::RateLimited,
            )
        })?;
    let registration = shared
        .hub
        .register(&identity.user, s.max_connections_per_visitor)
        .ok_or_else(|| {
            Refusal::new(
                "too_many_tabs",
                "this visitor has too many chats open",
                close::TOO_MANY,
                RejectReason::RateLimited,
            )
        })?;
    let per_second = NonZeroU32::new(s.frames_per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(s.frame_burst).unwrap_or(NonZeroU32::MIN);
    Ok(Conn {
        state: state.clone(),
        identity,
        registration,
        _admission: admission,
        ip,
        limiter: RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)),
        epoch: None,
        last_sent: 0,
        typing: None,
    })
}

/// How a socket's life ended, for its close frame.
struct Ending {
    close: u16,
    reason: &'static str,
}

async fn send_text(socket: &mut WebSocket, text: impl Into<Utf8Bytes>) -> Result<(), ()> {
    socket
        .send(Message::Text(text.into()))
        .await
        .map_err(|_| ())
}

async fn send_error(
    socket: &mut WebSocket,
    code: &str,
    message: &str,
    id: Option<&str>,
    retry_after_ms: Option<u64>,
    fatal: bool,
) -> Result<(), ()> {
    let frame = ServerFrame::Error {
        code,
        message,
        id,
        retry_after_ms,
        fatal,
    };
    send_text(socket, frame.to_text()).await
}

async fn serve(mut socket: WebSocket, mut conn: Conn) {
    conn.state.shared.hub.listen();
    let ending = match Box::pin(greet(&mut socket, &mut conn)).await {
        Ok(()) => Box::pin(converse(&mut socket, &mut conn)).await,
        Err(ending) => ending,
    };
    if let Some(ending) = ending {
        let _ = socket
            .send(Message::Close(Some(CloseFrame {
                code: ending.close,
                reason: Utf8Bytes::from_static(ending.reason),
            })))
            .await;
    }
    let user = conn.identity.user.clone();
    let app_user = conn.identity.app_user_id.clone();
    let shared = conn.state.shared.clone();
    drop(conn);
    if shared.hub.sockets_of(&user) == 0 {
        let instance = shared.instance_id.as_bytes();
        let _ = shared
            .kv
            .delete_if_equals(&shared.presence_key(&user), instance)
            .await;
        if let Some(key) = shared.app_presence_key(app_user.as_deref()) {
            let _ = shared.kv.delete_if_equals(&key, instance).await;
        }
    }
}

/// Waits for `hello`, answers `ready` and replays what the client missed.
async fn greet(socket: &mut WebSocket, conn: &mut Conn) -> Result<(), Option<Ending>> {
    let shared = conn.state.shared.clone();
    let deadline = Instant::now() + Duration::from_secs(shared.settings.socket.hello_timeout_secs);
    let (last_seq, epoch) = loop {
        let message = match tokio::time::timeout_at(deadline, socket.recv()).await {
            Err(_) => {
                let _ = send_error(
                    socket,
                    "hello_timeout",
                    "send hello first",
                    None,
                    None,
                    true,
                )
                .await;
                return Err(Some(Ending {
                    close: close::PROTOCOL,
                    reason: "no hello",
                }));
            }
            Ok(None | Some(Err(_))) => return Err(None),
            Ok(Some(Ok(message))) => message,
        };
        let text = match message {
            Message::Text(text) => text,
            Message::Close(_) => return Err(None),
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Binary(_) => {
                let _ = send_error(
                    socket,
                    "bad_frame",
                    "frames are JSON text",
                    None,
                    None,
                    true,
                )
                .await;
                return Err(Some(Ending {
                    close: close::PROTOCOL,
                    reason: "binary frame",
                }));
            }
        };
        match parse_client_frame(text.as_str()) {
            Ok(ClientFrame::Hello { v, last_seq, epoch }) if v == PROTOCOL_VERSION => {
                break (last_seq, epoch);
            }
            Ok(ClientFrame::Hello { .. }) => {
                let _ = send_error(
                    socket,
                    "unsupported_version",
                    "this server speaks protocol version 1",
                    None,
                    None,
                    true,
                )
                .await;
                return Err(Some(Ending {
                    close: close::VERSION,
                    reason: "version",
                }));
            }
            Ok(_) => {
                let _ = send_error(
                    socket,
                    "hello_first",
                    "the first frame must be hello",
                    None,
                    None,
                    true,
                )
                .await;
                return Err(Some(Ending {
                    close: close::PROTOCOL,
                    reason: "no hello",
                }));
            }
            Err(detail) => {
                shared.refusals.malformed.fetch_add(1, Ordering::Relaxed);
                conn.state.inbound.refused(RejectReason::Malformed);
                let _ = send_error(socket, "bad_frame", &detail, None, None, true).await;
                return Err(Some(Ending {
                    close: close::PROTOCOL,
                    reason: "bad frame",
                }));
            }
        }
    };

    let user = conn.identity.user.clone();
    // Registered in the hub before reading history (handshake), so a message stored after
    // this read arrives in the mailbox; one stored before is in the replay; the overlap is
    // dropped by its number.
    let replay = match shared
        .history
        .replay(&user, last_seq, epoch.as_deref())
        .await
    {
        Ok(replay) => replay,
        Err(err) => {
            tracing::warn!(connector = %shared.settings.id, error = %err, "cannot read web chat history");
            let _ = send_error(
                socket,
                "unavailable",
                "history is unavailable, reconnect soon",
                None,
                Some(2000),
                true,
            )
            .await;
            return Err(Some(Ending {
                close: close::TRY_AGAIN,
                reason: "unavailable",
            }));
        }
    };
    let known = replay.head.seq > 0;
    let signed = shared.signer.sign_visitor(&user);
    let conversation_id = shared.conversation_id(&user);
    let ready = ServerFrame::Ready {
        v: PROTOCOL_VERSION,
        visitor: &signed,
        conversation_id: &conversation_id,
        epoch: if known { &replay.head.epoch } else { "" },
        seq: replay.head.seq,
        reset: replay.reset,
        gap: replay.gap,
        ping_interval_ms: shared.settings.socket.ping_interval_secs * 1000,
        max_text_chars: shared.settings.socket.max_text_chars,
        max_image_bytes: shared.settings.media.max_image_bytes,
    };
    send_text(socket, ready.to_text()).await.map_err(|_| None)?;
    if known {
        conn.epoch = Some(replay.head.epoch.as_str().into());
        // Without a reset the client has shown everything up to its last_seq.
        conn.last_sent = if replay.reset {
            0
        } else {
            last_seq.min(replay.head.seq)
        };
    }
    for (seq, text) in replay.frames {
        send_text(socket, text).await.map_err(|_| None)?;
        conn.last_sent = conn.last_sent.max(seq);
    }
    refresh_presence(&shared, &conn.identity).await;
    tracing::debug!(connector = %shared.settings.id, visitor = %user, last_seq, head = replay.head.seq, "web chat socket ready");
    Ok(())
}

async fn refresh_presence(shared: &Shared, identity: &Identity) {
    let ttl = Some(Duration::from_secs(
        shared.settings.socket.idle_timeout_secs,
    ));
    let instance = shared.instance_id.as_bytes();
    if let Err(err) = shared
        .kv
        .set(&shared.presence_key(&identity.user), instance, ttl)
        .await
    {
        tracing::debug!(error = %err, "cannot set web chat presence");
    }
    if let Some(key) = shared.app_presence_key(identity.app_user_id.as_deref()) {
        let _ = shared.kv.set(&key, instance, ttl).await;
    }
}

/// The socket's main loop: client frames, mailbox items, the idle deadline.
async fn converse(socket: &mut WebSocket, conn: &mut Conn) -> Option<Ending> {
    let shared = conn.state.shared.clone();
    let idle = Duration::from_secs(shared.settings.socket.idle_timeout_secs);
    let max_frame = shared.settings.socket.max_frame_bytes;
    let mailbox = conn.registration.mailbox.clone();
    let sleep = tokio::time::sleep(idle);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            () = &mut sleep => {
                shared.refusals.idle.fetch_add(1, Ordering::Relaxed);
                conn.state.inbound.refused(RejectReason::IdleTimeout);
                return Some(Ending { close: close::GOING_AWAY, reason: "idle" });
            }
            item = mailbox.next() => {
                let Some(item) = item else {
                    let _ = send_error(socket, "slow_consumer", "too many messages waiting; reconnect and resume", None, Some(0), true).await;
                    return Some(Ending { close: close::TRY_AGAIN, reason: "behind" });
                };
                if let Err(ending) = Box::pin(deliver_item(socket, conn, item)).await {
                    return ending;
                }
            }
            message = socket.recv() => {
                let message = match message {
                    None => return None,
                    Some(Err(err)) => {
                        // tungstenite ends the stream on a frame over its own limit (twice
                        // ours) before we could answer; it is still a refused frame.
                        if is_capacity_error(&err) {
                            shared.refusals.oversize.fetch_add(1, Ordering::Relaxed);
                            conn.state.inbound.refused(RejectReason::Oversize);
                        }
                        return None;
                    }
                    Some(Ok(message)) => message,
                };
                sleep.as_mut().reset(Instant::now() + idle);
                if conn.limiter.check().is_err() {
                    shared.refusals.flood.fetch_add(1, Ordering::Relaxed);
                    conn.state.inbound.refused(RejectReason::Flood);
                    tracing::info!(connector = %shared.settings.id, reason = "flood", "web chat socket closed");
                    let _ = send_error(socket, "flood", "too many frames, slow down", None, Some(5000), true).await;
                    return Some(Ending { close: close::POLICY, reason: "flood" });
                }
                let text = match message {
                    Message::Text(text) => text,
                    Message::Close(_) => return None,
                    Message::Ping(_) | Message::Pong(_) => continue,
                    Message::Binary(_) => {
                        shared.refusals.malformed.fetch_add(1, Ordering::Relaxed);
                        conn.state.inbound.refused(RejectReason::Malformed);
                        if send_error(socket, "bad_frame", "frames are JSON text", None, None, false).await.is_err() {
                            return None;
                        }
                        continue;
                    }
                };
                if text.len() > max_frame {
                    shared.refusals.oversize.fetch_add(1, Ordering::Relaxed);
                    conn.state.inbound.refused(RejectReason::Oversize);
                    tracing::info!(connector = %shared.settings.id, reason = "oversize", bytes = text.len(), "web chat socket closed");
                    let message = format!("frame is {} bytes, the limit is {max_frame}", text.len());
                    let _ = send_error(socket, "too_big", &message, None, None, true).await;
                    return Some(Ending { close: close::TOO_BIG, reason: "frame too big" });
                }
                if let Err(ending) = Box::pin(handle_frame(socket, conn, text)).await {
                    return ending;
                }
            }
        }
    }
}

/// Sends one mailbox item, filling any hole in the numbering from history first.
async fn deliver_item(
    socket: &mut WebSocket,
    conn: &mut Conn,
    item: Outgoing,
) -> Result<(), Option<Ending>> {
    let shared = conn.state.shared.clone();
    let user = conn.identity.user.clone();
    match item {
        Outgoing::Ephemeral(text) => send_text(socket, text).await.map_err(|_| None),
        Outgoing::Check => {
            let head = match shared.history.head(&user).await {
                Ok(Some(head)) => head,
                _ => return Ok(()),
            };
            if conn.epoch.as_deref().is_some_and(|e| e != head.epoch) {
                return Err(resync(socket).await);
            }
            if head.seq > conn.last_sent {
                conn.epoch = Some(head.epoch.as_str().into());
                fill(socket, conn, head.seq).await?;
            }
            Ok(())
        }
        Outgoing::Stored { seq, epoch, text } => {
            match &conn.epoch {
                Some(current) if **current != *epoch => return Err(resync(socket).await),
                Some(_) => {}
                None => conn.epoch = Some(epoch),
            }
            if seq <= conn.last_sent {
                return Ok(());
            }
            if seq > conn.last_sent + 1 {
                fill(socket, conn, seq - 1).await?;
            }
            if seq > conn.last_sent {
                send_text(socket, text).await.map_err(|_| None)?;
                conn.last_sent = seq;
            }
            Ok(())
        }
    }
}

/// Sends stored frames after `last_sent` up to `to`.
async fn fill(socket: &mut WebSocket, conn: &mut Conn, to: u64) -> Result<(), Option<Ending>> {
    let shared = &conn.state.shared;
    let frames = shared
        .history
        .range(&conn.identity.user, conn.last_sent + 1, to)
        .await
        .unwrap_or_default();
    for (seq, text) in frames {
        send_text(socket, text).await.map_err(|_| None)?;
        conn.last_sent = conn.last_sent.max(seq);
    }
    conn.last_sent = conn.last_sent.max(to);
    Ok(())
}

/// The conversation's numbering started over under this socket: have the client resume.
async fn resync(socket: &mut WebSocket) -> Option<Ending> {
    let _ = send_error(
        socket,
        "resync",
        "conversation history changed; reconnect and resume",
        None,
        Some(0),
        true,
    )
    .await;
    Some(Ending {
        close: close::GOING_AWAY,
        reason: "resync",
    })
}

/// Whether a read failed because the frame was over tungstenite's size limit (its
/// `Error::Capacity`, which axum hands on only as a boxed error with its message).
fn is_capacity_error(err: &axum::Error) -> bool {
    err.to_string().contains("Space limit exceeded")
}

async fn handle_frame(
    socket: &mut WebSocket,
    conn: &mut Conn,
    text: Utf8Bytes,
) -> Result<(), Option<Ending>> {
    let shared = conn.state.shared.clone();
    let frame = match parse_client_frame(text.as_str()) {
        Ok(frame) => frame,
        Err(detail) => {
            shared.refusals.malformed.fetch_add(1, Ordering::Relaxed);
            conn.state.inbound.refused(RejectReason::Malformed);
            return send_error(socket, "bad_frame", &detail, None, None, false)
                .await
                .map_err(|_| None);
        }
    };
    match frame {
        ClientFrame::Hello { .. } => send_error(
            socket,
            "already_ready",
            "hello was already answered",
            None,
            None,
            false,
        )
        .await
        .map_err(|_| None),
        ClientFrame::Typing { on } => {
            forward_typing(conn, on);
            Ok(())
        }
        ClientFrame::Ping {} => {
            refresh_presence(&shared, &conn.identity).await;
            send_text(socket, ServerFrame::Pong {}.to_text())
                .await
                .map_err(|_| None)?;
            // A fan-out message lost on the way (pub/sub keeps nothing) shows up here.
            deliver_item(socket, conn, Outgoing::Check).await
        }
        ClientFrame::Read { seq } => {
            report_read(&conn.state.inbound, &shared, &conn.identity.user, seq).await;
            Ok(())
        }
        ClientFrame::Message { id, content } => {
            let raw = shared
                .settings
                .keep_raw
                .then(|| serde_json::from_str::<Value>(text.as_str()).unwrap_or(Value::Null));
            let outcome =
                accept_message(&conn.state, &conn.identity, conn.ip, &id, content, raw).await;
            if let Err(refused) = &outcome {
                // POST /messages answers these with a Rejection the daemon counts; a socket
                // has only its error frame.
                conn.state.inbound.refused(refused.reason);
            }
            let frame = match &outcome {
                Ok((envelope_id, duplicate)) => ServerFrame::Ack {
                    id: &id,
                    envelope_id,
                    duplicate: *duplicate,
                },
                Err(refused) => ServerFrame::Error {
                    code: refused.code,
                    message: &refused.message,
                    id: Some(&id),
                    retry_after_ms: refused.retry_after_ms,
                    fatal: false,
                },
            };
            send_text(socket, frame.to_text()).await.map_err(|_| None)
        }
    }
}

/// Why a visitor message was not acked; the client keeps it and, when `retry_after_ms` is
/// given, sends it again after that long.
pub(crate) struct NotAccepted {
    /// Error code for the frame.
    pub code: &'static str,
    /// Explanation.
    pub message: String,
    /// When to resend; `None` means resending the same message will not help.
    pub retry_after_ms: Option<u64>,
    /// The rejection reason for HTTP answers.
    pub reason: RejectReason,
}

impl NotAccepted {
    fn invalid(message: impl Into<String>) -> Self {
        Self {
            code: "invalid_message",
            message: message.into(),
            retry_after_ms: None,
            reason: RejectReason::Malformed,
        }
    }
}

fn valid_client_id(id: &str) -> bool {
    !id.is_empty()
        && id.chars().count() <= MAX_CLIENT_ID_CHARS
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Checks a visitor message and hands it to the pipeline; `(envelope id, duplicate)`.
pub(crate) async fn accept_message(
    state: &AppState,
    identity: &Identity,
    ip: Option<IpAddr>,
    id: &str,
    content: ClientContent,
    raw_frame: Option<Value>,
) -> Result<(String, bool), NotAccepted> {
    let shared = &state.shared;
    if !valid_client_id(id) {
        return Err(NotAccepted::invalid(format!(
            "id must be 1 to {MAX_CLIENT_ID_CHARS} of A-Z a-z 0-9 - _ ."
        )));
    }
    let content = match content {
        ClientContent::Text { text } => {
            let chars = text.chars().count();
            if text.trim().is_empty() {
                return Err(NotAccepted::invalid("text is empty"));
            }
            if chars > shared.settings.socket.max_text_chars {
                return Err(NotAccepted::invalid(format!(
                    "text is {chars} characters, the limit is {}",
                    shared.settings.socket.max_text_chars
                )));
            }
            Content::text(text)
        }
        ClientContent::Image { media_id, caption } => {
            match crate::web::media_owner(shared, &media_id).await {
                Some(owner) if owner == identity.user => {}
                _ => return Err(NotAccepted::invalid("no such uploaded image")),
            }
            let caption = caption.filter(|c| !c.trim().is_empty());
            if caption
                .as_ref()
                .is_some_and(|c| c.chars().count() > shared.settings.socket.max_text_chars)
            {
                return Err(NotAccepted::invalid("caption is too long"));
            }
            Content::Image {
                url: Some(crate::web::media_url(shared, &media_id)),
                media_id: Some(media_id),
                caption,
                extra: Map::new(),
            }
        }
    };
    if let Some(ip) = ip
        && shared.messages.check_key(&ip).is_err()
    {
        shared.refusals.rate_limited.fetch_add(1, Ordering::Relaxed);
        return Err(NotAccepted {
            code: "rate_limited",
            message: "too many messages from this address".to_owned(),
            retry_after_ms: Some(5000),
            reason: RejectReason::RateLimited,
        });
    }
    let mut raw = Map::new();
    if let Some(frame) = raw_frame {
        raw.insert("frame".to_owned(), frame);
    }
    if identity.verified {
        let mut claims = Map::new();
        if let Some(tier) = &identity.tier {
            claims.insert("tier".to_owned(), json!(tier));
        }
        if let Some(app_user) = &identity.app_user_id {
            claims.insert("app_user_id".to_owned(), json!(app_user));
        }
        raw.insert("site_token".to_owned(), Value::Object(claims));
    }
    let message = InboundMessage {
        channel_user_id: identity.user.clone(),
        display_name: identity.display_name.clone(),
        phone: identity.phone.clone(),
        customer_id: identity.customer_id.clone(),
        // Only a site token carries a tier, and only the site's backend can sign one.
        tier: identity.tier.clone().filter(|_| identity.verified),
        content,
        dedupe_key: id.to_owned(),
        raw: (!raw.is_empty()).then_some(Value::Object(raw)),
    };
    match state.inbound.accept(message).await {
        Ok(accepted) => Ok((accepted.envelope_id, accepted.duplicate)),
        Err(AcceptError::RateLimited { retry_after }) => Err(NotAccepted {
            code: "rate_limited",
            message: "too many messages, slow down".to_owned(),
            retry_after_ms: Some(retry_after.as_millis().clamp(250, 60_000) as u64),
            reason: RejectReason::RateLimited,
        }),
        Err(AcceptError::Unavailable(detail)) => {
            tracing::info!(connector = %shared.settings.id, detail, "web chat message not accepted yet");
            Err(NotAccepted {
                code: "unavailable",
                message: "the message could not be made safe yet, it will be sent again".to_owned(),
                retry_after_ms: Some(1000),
                reason: RejectReason::Unavailable,
            })
        }
    }
}

/// Reports `conversation.typing` when the visitor starts or stops typing, and again every
/// [`TYPING_REPEAT`] while they keep on. Published off the socket's loop: the broker
/// confirm is not worth holding the visitor's frames for, and a lost one is soon repeated.
fn forward_typing(conn: &mut Conn, on: bool) {
    let now = Instant::now();
    let due = match conn.typing {
        Some((at, was)) => was != on || (on && now.duration_since(at) >= TYPING_REPEAT),
        None => on,
    };
    if !due {
        return;
    }
    conn.typing = Some((now, on));
    let mut event = Event::new("conversation.typing");
    event.conversation_id = Some(conn.state.shared.conversation_id(&conn.identity.user));
    event.data.insert("on".to_owned(), json!(on));
    let inbound = conn.state.inbound.clone();
    tokio::spawn(async move {
        if let Err(err) = inbound.report(event).await {
            tracing::debug!(error = %err, "web chat typing not reported");
        }
    });
}

/// Reports `delivery.read` for the agent messages newly shown up to `seq`.
async fn report_read(inbound: &Inbound, shared: &Shared, user: &str, seq: u64) {
    let frames = match shared.history.mark_read(user, seq).await {
        Ok(frames) => frames,
        Err(err) => {
            tracing::debug!(error = %err, "cannot record web chat read mark");
            return;
        }
    };
    for (seq, text) in frames {
        let Ok(message) = serde_json::from_str::<crate::protocol::AgentMessage>(&text) else {
            continue;
        };
        let mut event = Event::new("delivery.read");
        event.conversation_id = Some(shared.conversation_id(user));
        event.reply_id = Some(message.id);
        event.channel_message_id = Some(format!("{}:{seq}", message.epoch));
        if let Err(err) = inbound.report(event).await {
            tracing::info!(error = %err, "cannot report a web chat read receipt");
            return;
        }
    }
}
