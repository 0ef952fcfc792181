//! The plain HTTP routes beside the socket: a message post for clients that cannot keep a
//! socket open (and for `navigator.sendBeacon` on page exit), image upload, and fetching an
//! uploaded image (widget and helpdesk).

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use switchboard_sdk::{Inbound, RejectReason, Rejection};

use crate::Shared;
use crate::identity::{Identity, IdentityError};
use crate::protocol::ClientContent;
use crate::socket::{accept_message, client_ip, identify, origin_allowed};

/// Header carrying the signed visitor id on HTTP requests.
pub const VISITOR_HEADER: &str = "x-webchat-visitor";

/// What the routes share.
#[derive(Clone)]
pub struct AppState {
    /// The connector's shared state.
    pub shared: Arc<Shared>,
    /// The pipeline.
    pub inbound: Inbound,
}

/// Body of `POST /messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostedMessage {
    /// Client message id (the dedupe key).
    id: String,
    /// The content.
    content: ClientContent,
}

fn identity_rejection(err: IdentityError) -> Rejection {
    let reason = match err {
        IdentityError::ExpiredToken => RejectReason::StaleTimestamp,
        _ => RejectReason::BadSignature,
    };
    Rejection::new(reason, err.to_string())
}

/// The visitor named by a request's credentials: `Authorization: Bearer <site token>` or
/// the signed visitor id header; one of them is required here.
fn request_identity(shared: &Shared, headers: &HeaderMap) -> Result<Identity, Rejection> {
    // Browsers always send Origin on a POST; other clients hold the credentials anyway.
    if headers.contains_key(header::ORIGIN)
        && let Err(refusal) = origin_allowed(shared, headers)
    {
        return Err(Rejection::new(refusal.reason, refusal.message));
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let visitor = headers.get(VISITOR_HEADER).and_then(|v| v.to_str().ok());
    if token.is_none() && visitor.is_none() {
        return Err(Rejection::new(
            RejectReason::BadSignature,
            format!("send {VISITOR_HEADER} or a bearer site token"),
        ));
    }
    identify(shared, visitor, token).map_err(identity_rejection)
}

/// `POST /messages`: one visitor message; answered once the pipeline has it.
pub async fn post_message(
    State(state): State<AppState>,
    headers: HeaderMap,
    extensions: Extensions,
    body: Bytes,
) -> Response {
    let identity = match request_identity(&state.shared, &headers) {
        Ok(identity) => identity,
        Err(rejection) => return rejection.into_response(),
    };
    let posted: PostedMessage = match serde_json::from_slice(&body) {
        Ok(posted) => posted,
        Err(err) => {
            let message = err.to_string();
            let detail = message
                .split(" at line ")
                .next()
                .unwrap_or_default()
                .to_owned();
            return Rejection::new(RejectReason::Malformed, detail).into_response();
        }
    };
    let raw = state
        .shared
        .settings
        .keep_raw
        .then(|| serde_json::from_slice(&body).unwrap_or_default());
    let ip = client_ip(&state.shared, &headers, &extensions);
    match accept_message(&state, &identity, ip, &posted.id, posted.content, raw).await {
        Ok((envelope_id, duplicate)) => Json(json!({
            "status": "accepted",
            "id": posted.id,
            "envelope_id": envelope_id,
            "duplicate": duplicate,
        }))
        .into_response(),
        Err(refused) => Rejection {
            retry_after_secs: refused.retry_after_ms.map(|ms| ms.div_ceil(1000).max(1)),
            ..Rejection::new(refused.reason, refused.message)
        }
        .into_response(),
    }
}

fn media_key(shared: &Shared, media_id: &str) -> String {
    format!("webchat:{}:media:{media_id}", shared.settings.id)
}

/// Media ids are ULIDs: 26 characters of Crockford base32.
fn valid_media_id(media_id: &str) -> bool {
    media_id.len() == 26 && media_id.chars().all(|c| c.is_ascii_alphanumeric())
}

/// Where a helpdesk fetches an uploaded image.
pub fn media_url(shared: &Shared, media_id: &str) -> String {
    match &shared.settings.public_url {
        Some(base) => format!("{base}/media/{media_id}"),
        None => format!("/webchat/{}/media/{media_id}", shared.settings.id),
    }
}

/// The image types accepted, recognised by their first bytes rather than the declared type.
fn sniff_image(bytes: &[u8]) -> Option<&'static str> {
    const TYPES: [(&[u8], &str); 5] = [
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xff\xd8\xff", "image/jpeg"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"RIFF", "image/webp"),
    ];
    let found = TYPES
        .iter()
        .find(|(magic, _)| bytes.starts_with(magic))
        .map(|(_, mime)| *mime)?;
    // RIFF is also WAV and AVI: WebP says so at offset 8.
    if found == "image/webp" && bytes.get(8..12) != Some(b"WEBP") {
        return None;
    }
    Some(found)
}

/// `POST /upload`: stores one image for the visitor; the answer's `media_id` goes into an
/// `image` message.
pub async fn upload(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let shared = &state.shared;
    let max = shared.settings.media.max_image_bytes;
    if max == 0 {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "uploads_disabled"})),
        )
            .into_response();
    }
    let identity = match request_identity(shared, &headers) {
        Ok(identity) => identity,
        Err(rejection) => return rejection.into_response(),
    };
    if body.len() > max {
        return Rejection::new(
            RejectReason::Oversize,
            format!("image is {} bytes, the limit is {max}", body.len()),
        )
        .into_response();
    }
    let Some(mime) = sniff_image(&body) else {
        return Rejection::new(
            RejectReason::Malformed,
            "not a png, jpeg, gif or webp image",
        )
        .into_response();
    };
    let media_id = ulid::Ulid::new().to_string();
    let mut value = Vec::with_capacity(body.len() + 80);
    value.extend_from_slice(mime.as_bytes());
    value.push(b'\n');
    value.extend_from_slice(identity.user.as_bytes());
    value.push(b'\n');
    value.extend_from_slice(&body);
    let ttl = Some(Duration::from_secs(shared.settings.media.ttl_secs));
    if let Err(err) = shared
        .kv
        .set(&media_key(shared, &media_id), &value, ttl)
        .await
    {
        tracing::warn!(error = %err, "cannot store an uploaded image");
        return Rejection {
            retry_after_secs: Some(2),
            ..Rejection::new(RejectReason::Unavailable, "image store unavailable")
        }
        .into_response();
    }
    Json(json!({"media_id": media_id, "url": media_url(shared, &media_id), "type": mime}))
        .into_response()
}

fn split_media(value: &[u8]) -> Option<(&str, &str, &[u8])> {
    let mut parts = value.splitn(3, |b| *b == b'\n');
    let mime = std::str::from_utf8(parts.next()?).ok()?;
    let owner = std::str::from_utf8(parts.next()?).ok()?;
    Some((mime, owner, parts.next()?))
}

/// The visitor who uploaded `media_id`, if it is still kept.
pub async fn media_owner(shared: &Shared, media_id: &str) -> Option<String> {
    if !valid_media_id(media_id) {
        return None;
    }
    let value = shared.kv.get(&media_key(shared, media_id)).await.ok()??;
    split_media(&value).map(|(_, owner, _)| owner.to_owned())
}

/// `GET /media/{media_id}`: an uploaded image. The id is unguessable (80 random bits),
/// which is what lets a helpdesk fetch it without a visitor's credentials.
pub async fn media(State(state): State<AppState>, Path(media_id): Path<String>) -> Response {
    let shared = &state.shared;
    if !valid_media_id(&media_id) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let value = match shared.kv.get(&media_key(shared, &media_id)).await {
        Ok(Some(value)) => value,
        Ok(None) => return StatusCode::NOT_FOUND.into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "cannot read an uploaded image");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    let Some((mime, _, bytes)) = split_media(&value) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut response = Bytes::copy_from_slice(bytes).into_response();
    let headers = response.headers_mut();
    if let Ok(mime) = HeaderValue::from_str(mime) {
        headers.insert(header::CONTENT_TYPE, mime);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=86400"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("inline"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_recognised_by_content() {
        let cases: [(&[u8], Option<&str>); 6] = [
            (b"\x89PNG\r\n\x1a\n....", Some("image/png")),
            (b"\xff\xd8\xff\xe0JFIF", Some("image/jpeg")),
            (b"GIF89a...", Some("image/gif")),
            (b"RIFF\0\0\0\0WEBPVP8 ", Some("image/webp")),
            (b"RIFF\0\0\0\0WAVEfmt ", None),
            (b"<svg onload=alert(1)>", None),
        ];
        for (bytes, expected) in cases {
            assert_eq!(sniff_image(bytes), expected, "{bytes:?}");
        }
    }

    #[test]
    fn media_values_split_into_type_owner_and_bytes() {
        let value = b"image/png\nv-abc\n\x89PNG\n\nrest";
        assert_eq!(
            split_media(value),
            Some(("image/png", "v-abc", &b"\x89PNG\n\nrest"[..]))
        );
        assert!(valid_media_id(&ulid::Ulid::new().to_string()));
        assert!(!valid_media_id("../../etc/passwd"));
    }
}
