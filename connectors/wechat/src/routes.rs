//! The HTTP side: server URL verification (GET `/`), message push (POST `/`) and, when
//! enabled, the media proxy (GET `/media/{media_id}`). Mounted by the daemon under
//! `/wechat/{id}`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::Value;
use switchboard_sdk::signature::{TimestampError, check_timestamp};
use switchboard_sdk::{ConversationId, Event, Inbound, InboundMessage, RejectReason, Rejection};

use crate::Shared;
use crate::api::{MediaAnswer, MediaError};
use crate::crypto::{DecryptError, verify_signature};
use crate::media::MediaUrlError;
use crate::message::{self, Push, PushBody, report_kind};
use crate::passive;
use crate::xml;

/// How long a report marker keeps WeChat's retries of one event from being reported twice.
const REPORT_MARKER_TTL: Duration = Duration::from_secs(600);

#[derive(Clone)]
struct AppState {
    shared: Arc<Shared>,
    inbound: Inbound,
}

/// Query parameters WeChat puts on the server URL.
#[derive(Debug, Default, Deserialize)]
struct WechatQuery {
    signature: Option<String>,
    timestamp: Option<String>,
    nonce: Option<String>,
    echostr: Option<String>,
    encrypt_type: Option<String>,
    msg_signature: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct MediaQuery {
    exp: Option<String>,
    sig: Option<String>,
}

/// The connector's router; `inbound` accepts on its behalf.
pub(crate) fn router(shared: Arc<Shared>, inbound: Inbound) -> Router {
    let mut router = Router::new().route("/", get(verify_url).post(push));
    if shared.media.is_some() {
        router = router.route("/media/{media_id}", get(media));
    }
    router.with_state(AppState { shared, inbound })
}

fn reject(reason: RejectReason, detail: impl Into<String>) -> Rejection {
    let rejection = Rejection::new(reason, detail);
    tracing::debug!(reason = reason.as_str(), detail = %rejection.detail, "wechat request refused");
    rejection
}

fn parse_query<T: serde::de::DeserializeOwned + Default>(uri: &Uri) -> Result<T, Rejection> {
    if uri.query().is_none() {
        return Ok(T::default());
    }
    Query::<T>::try_from_uri(uri)
        .map(|Query(q)| q)
        .map_err(|_| reject(RejectReason::Malformed, "query string is not url-encoded"))
}

/// Checks `signature` (token, timestamp, nonce) and the optional replay window; returns
/// timestamp and nonce.
fn check_request(shared: &Shared, q: &WechatQuery) -> Result<(String, String), Rejection> {
    let (Some(signature), Some(timestamp), Some(nonce)) = (&q.signature, &q.timestamp, &q.nonce)
    else {
        return Err(reject(
            RejectReason::BadSignature,
            "signature, timestamp and nonce are required",
        ));
    };
    let token = shared.settings.token.expose();
    if !verify_signature(&[token, timestamp, nonce], signature) {
        return Err(reject(
            RejectReason::BadSignature,
            "signature does not match",
        ));
    }
    if let Some(window) = shared.settings.timestamp_window_secs {
        let window = i64::try_from(window).unwrap_or(i64::MAX);
        match check_timestamp(timestamp, shared.clock.now(), window) {
            Ok(_) => {}
            Err(TimestampError::Malformed) => {
                return Err(reject(
                    RejectReason::Malformed,
                    "timestamp is not unix seconds",
                ));
            }
            Err(err @ TimestampError::OutsideWindow(_)) => {
                return Err(reject(RejectReason::StaleTimestamp, err.to_string()));
            }
        }
    }
    Ok((timestamp.clone(), nonce.clone()))
}

async fn verify_url(State(state): State<AppState>, uri: Uri) -> Response {
    let result = parse_query::<WechatQuery>(&uri).and_then(|q| {
        check_request(&state.shared, &q)?;
        q.echostr
            .ok_or_else(|| reject(RejectReason::BadSignature, "echostr is required"))
    });
    match result {
        Ok(echostr) => (
            [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
            echostr,
        )
            .into_response(),
        Err(rejection) => rejection.into_response(),
    }
}

async fn push(State(state): State<AppState>, uri: Uri, body: Bytes) -> Response {
    match handle_push(&state, &uri, &body).await {
        Ok(response) => response,
        Err(rejection) => rejection.into_response(),
    }
}

/// Where the reply must be sealed, for encrypted pushes.
struct Sealing {
    key_index: usize,
    receive_id: String,
    nonce: String,
}

fn success() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        "success",
    )
        .into_response()
}

async fn handle_push(state: &AppState, uri: &Uri, body: &[u8]) -> Result<Response, Rejection> {
    let shared = &state.shared;
    let q: WechatQuery = parse_query(uri)?;
    let (timestamp, nonce) = check_request(shared, &q)?;
    let limit = shared.settings.limits.max_body_bytes;
    if body.len() > limit {
        return Err(reject(
            RejectReason::Oversize,
            format!("body exceeds {limit} bytes"),
        ));
    }
    // The mode comes from encrypt_type alone: nonce and timestamp are present in every mode.
    let encrypted = match q.encrypt_type.as_deref() {
        None | Some("") | Some("raw") => false,
        Some("aes") => true,
        Some(_) => return Err(reject(RejectReason::Malformed, "unknown encrypt_type")),
    };
    let outer =
        xml::parse(body, limit).map_err(|e| reject(RejectReason::Malformed, e.to_string()))?;

    let (root, sealing) = if encrypted {
        let crypt = &shared.settings.crypt;
        if !crypt.has_keys() {
            tracing::warn!(connector = %shared.settings.id, "encrypted push but no encoding_aes_key is configured");
            return Err(reject(
                RejectReason::Malformed,
                "encrypted push but no encoding_aes_key is configured",
            ));
        }
        let Some(msg_signature) = &q.msg_signature else {
            return Err(reject(
                RejectReason::BadSignature,
                "msg_signature is required",
            ));
        };
        let Some(encrypt) = outer.text_of("Encrypt") else {
            return Err(reject(RejectReason::Malformed, "missing element Encrypt"));
        };
        // Compatible mode carries plaintext fields too; only the decrypted copy is trusted.
        let opened = crypt
            .open(&timestamp, &nonce, encrypt, msg_signature)
            .map_err(|err| match err {
                DecryptError::BadSignature | DecryptError::AppIdMismatch { .. } => {
                    reject(RejectReason::BadSignature, err.to_string())
                }
                DecryptError::MalformedCiphertext(_) | DecryptError::WrongKey(_) => {
                    if matches!(err, DecryptError::WrongKey(_)) {
                        tracing::warn!(connector = %shared.settings.id, "a signed push does not decrypt with the configured keys; check encoding_aes_key");
                    }
                    reject(RejectReason::Malformed, err.to_string())
                }
            })?;
        let inner = xml::parse(opened.frame.message.as_bytes(), limit)
            .map_err(|e| reject(RejectReason::Malformed, format!("decrypted message: {e}")))?;
        let sealing = Sealing {
            key_index: opened.key_index,
            receive_id: opened.frame.receive_id,
            nonce,
        };
        (inner, Some(sealing))
    } else {
        (outer, None)
    };

    let push =
        message::normalize(&root).map_err(|e| reject(RejectReason::Malformed, e.to_string()))?;
    let raw = shared.settings.keep_raw.then(|| root.to_json());

    let to_agents = match push.event_name() {
        Some(name) => shared.settings.events_to_agents.contains(name),
        None => true,
    };
    if to_agents {
        accept(state, &push, raw).await?;
    } else {
        report(state, &push, raw).await?;
    }

    let Some(text) = auto_reply_text(shared, &push).await else {
        return Ok(success());
    };
    let reply = passive::text_reply(&push.from_user, &push.to_user, shared.clock.unix(), &text);
    let Some(sealing) = sealing else {
        return Ok(xml_response(reply));
    };
    let sealed = shared.settings.crypt.seal(
        sealing.key_index,
        &reply,
        &sealing.receive_id,
        &shared.clock.unix().to_string(),
        &sealing.nonce,
    );
    Ok(sealed.map(xml_response).unwrap_or_else(success))
}

fn xml_response(body: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/xml; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

async fn accept(state: &AppState, push: &Push, raw: Option<Value>) -> Result<(), Rejection> {
    let shared = &state.shared;
    let mut content = push.content();
    if let (Some(signer), Some(media_id)) = (&shared.media, push.media_id())
        && let Some(url) = signer.url(media_id, shared.clock.unix())
    {
        message::attach_media_url(&mut content, &url);
    }
    let mut inbound = InboundMessage::new(&push.from_user, content, &push.dedupe_key);
    inbound.raw = raw;
    let accepted = state.inbound.accept(inbound).await.map_err(|err| {
        tracing::warn!(connector = %shared.settings.id, error = %err, "push not accepted; wechat will retry");
        Rejection::from(err)
    })?;
    tracing::debug!(connector = %shared.settings.id, envelope = %accepted.envelope_id, duplicate = accepted.duplicate, "push accepted");
    // Opens (or extends) the 48-hour customer-service window checked by deliver.
    if let Err(err) = shared.record_interaction(&push.from_user).await {
        tracing::warn!(connector = %shared.settings.id, error = %err, "could not record the user's last interaction");
    }
    Ok(())
}

async fn report(state: &AppState, push: &Push, raw: Option<Value>) -> Result<(), Rejection> {
    let shared = &state.shared;
    let PushBody::Event { name, key, data } = &push.body else {
        return Ok(());
    };
    let marker = format!("wechat:{}:reported:{}", shared.settings.id, push.dedupe_key);
    if let Ok(Some(_)) = shared.kv.get(&marker).await {
        return Ok(());
    }
    let mut event = Event::new(report_kind(name));
    event.conversation_id =
        Some(ConversationId::new(crate::KIND, &shared.settings.id, &push.from_user).to_string());
    event.data = data.clone();
    event
        .data
        .insert("event".into(), Value::String(name.clone()));
    if let Some(key) = key {
        event.data.insert("key".into(), Value::String(key.clone()));
    }
    event
        .data
        .insert("openid".into(), Value::String(push.from_user.clone()));
    event
        .data
        .insert("create_time".into(), Value::from(push.create_time));
    event
        .data
        .insert("dedupe_key".into(), Value::String(push.dedupe_key.clone()));
    if let Some(raw) = raw {
        event.data.insert("raw".into(), raw);
    }
    state.inbound.report(event).await.map_err(|err| {
        tracing::warn!(connector = %shared.settings.id, error = %err, "event not reported; wechat will retry");
        Rejection::from(err)
    })?;
    if let Err(err) = shared.kv.set(&marker, b"1", Some(REPORT_MARKER_TTL)).await {
        tracing::warn!(connector = %shared.settings.id, error = %err, "could not mark the event as reported");
    }
    Ok(())
}

async fn auto_reply_text(shared: &Shared, push: &Push) -> Option<String> {
    let auto = shared.settings.auto_reply.as_ref()?;
    match &push.body {
        PushBody::Event { name, .. } if name == "subscribe" => auto.subscribe_text.clone(),
        PushBody::Message { .. } => {
            let text = auto.after_hours_text.as_ref()?;
            if auto.is_open(shared.clock.now()) {
                return None;
            }
            let key = format!(
                "wechat:{}:after-hours:{}",
                shared.settings.id, push.from_user
            );
            let ttl = Duration::from_secs(auto.after_hours_repeat_secs);
            match shared.kv.set_if_absent(&key, b"1", ttl).await {
                Ok(true) => Some(text.clone()),
                Ok(false) => None,
                Err(err) => {
                    tracing::warn!(connector = %shared.settings.id, error = %err, "after-hours marker failed; not replying");
                    None
                }
            }
        }
        PushBody::Event { .. } => None,
    }
}

async fn media(State(state): State<AppState>, Path(media_id): Path<String>, uri: Uri) -> Response {
    let shared = &state.shared;
    let Some(signer) = &shared.media else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let q: MediaQuery = match parse_query(&uri) {
        Ok(q) => q,
        Err(rejection) => return rejection.into_response(),
    };
    let (Some(exp), Some(sig)) = (q.exp, q.sig) else {
        return reject(RejectReason::BadSignature, "exp and sig are required").into_response();
    };
    match signer.verify(&media_id, &exp, &sig, shared.clock.unix()) {
        Ok(()) => {}
        Err(MediaUrlError::Expired) => {
            return reject(RejectReason::StaleTimestamp, "media url expired").into_response();
        }
        Err(MediaUrlError::BadSignature) => {
            return reject(RejectReason::BadSignature, "bad media url signature").into_response();
        }
    }
    match shared.api.media_get(&media_id).await {
        Ok(MediaAnswer::File(upstream)) => stream_file(upstream),
        Ok(MediaAnswer::VideoUrl(url)) => Redirect::temporary(&url).into_response(),
        Err(MediaError::NotFound) => (StatusCode::NOT_FOUND, "media not found").into_response(),
        Err(err @ MediaError::Upstream(_)) => {
            tracing::warn!(connector = %shared.settings.id, error = %err, "media download failed");
            (StatusCode::BAD_GATEWAY, "media download failed").into_response()
        }
    }
}

fn stream_file(upstream: reqwest::Response) -> Response {
    let mut builder = Response::builder().status(StatusCode::OK);
    for name in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::CONTENT_DISPOSITION,
    ] {
        if let Some(value) = upstream.headers().get(name.as_str())
            && let Ok(value) = HeaderValue::from_bytes(value.as_bytes())
        {
            builder = builder.header(name, value);
        }
    }
    let stream = futures_util::stream::try_unfold(upstream, |mut upstream| async move {
        Ok::<_, reqwest::Error>(upstream.chunk().await?.map(|chunk| (chunk, upstream)))
    });
    builder
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}
