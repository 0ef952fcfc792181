//! A fake WeChat API on 127.0.0.1:0 speaking the real JSON: stable_token, token,
//! message/custom/send, message/custom/typing, media/get.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// What the fake saw and how it behaves.
#[derive(Default)]
pub struct FakeState {
    /// Token endpoint calls (either kind).
    pub token_fetches: AtomicUsize,
    /// stable_token calls with force_refresh = true.
    pub forced_fetches: AtomicUsize,
    /// Every token request body (stable) or query (classic).
    pub token_requests: Mutex<Vec<Value>>,
    /// Every custom/send call: the token used, the parsed body, the raw body.
    pub sends: Mutex<Vec<(String, Value, String)>>,
    /// Every typing call: token and body.
    pub typing: Mutex<Vec<(String, Value)>>,
    /// Tokens WeChat no longer takes.
    pub revoked: Mutex<HashSet<String>>,
    /// The token stable_token hands out until it rotates.
    pub current: Mutex<Option<String>>,
    /// Errcodes answered to the next sends, in order (then 0).
    pub send_errcodes: Mutex<VecDeque<i64>>,
    /// expires_in of new tokens (default 7200).
    pub expires_in: AtomicI64,
    /// Delay of token answers, to let concurrent callers pile up.
    pub fetch_delay_ms: AtomicU64,
    /// Media files by id: content type and bytes.
    pub media: Mutex<HashMap<String, (String, Vec<u8>)>>,
    /// media/get calls.
    pub media_fetches: AtomicUsize,
    next_token: AtomicUsize,
}

impl FakeState {
    fn new_token(&self) -> String {
        format!(
            "token-{}",
            self.next_token.fetch_add(1, Ordering::SeqCst) + 1
        )
    }

    /// Another system rotated the token: the current one stops working.
    pub fn rotate(&self) {
        let mut current = self.current.lock().unwrap();
        if let Some(old) = current.take() {
            self.revoked.lock().unwrap().insert(old);
        }
        *current = Some(self.new_token());
    }

    /// Token endpoint calls so far.
    pub fn fetches(&self) -> usize {
        self.token_fetches.load(Ordering::SeqCst)
    }

    /// custom/send calls so far.
    pub fn send_count(&self) -> usize {
        self.sends.lock().unwrap().len()
    }

    fn token_ok(&self, token: &str) -> bool {
        !self.revoked.lock().unwrap().contains(token) && token.starts_with("token-")
    }
}

/// A running fake.
pub struct FakeWechat {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its state.
    pub state: Arc<FakeState>,
}

impl FakeWechat {
    /// Starts a fake on a free loopback port.
    pub async fn start() -> Self {
        let state = Arc::new(FakeState::default());
        state.expires_in.store(7200, Ordering::SeqCst);
        let app = Router::new()
            .route("/cgi-bin/stable_token", post(stable_token))
            .route("/cgi-bin/token", get(classic_token))
            .route("/cgi-bin/message/custom/send", post(send))
            .route("/cgi-bin/message/custom/typing", post(typing))
            .route("/cgi-bin/media/get", get(media_get))
            .with_state(state.clone());
        let base = format!("http://{}", switchboard_sdk::testing::serve(app).await);
        Self { base, state }
    }

    /// Config lines pointing a connector at this fake.
    pub fn config_line(&self) -> String {
        format!("api_base = \"{}\"", self.base)
    }
}

async fn delay(state: &FakeState) {
    let ms = state.fetch_delay_ms.load(Ordering::SeqCst);
    if ms > 0 {
        // Simulates WeChat's latency, so that concurrent callers overlap.
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

async fn stable_token(State(state): State<Arc<FakeState>>, Json(body): Json<Value>) -> Json<Value> {
    state.token_fetches.fetch_add(1, Ordering::SeqCst);
    state.token_requests.lock().unwrap().push(body.clone());
    delay(&state).await;
    if body["grant_type"] != "client_credential" || body["secret"] != "s3cret" {
        return Json(json!({"errcode": 40125, "errmsg": "invalid appsecret"}));
    }
    let force = body["force_refresh"] == true;
    if force {
        state.forced_fetches.fetch_add(1, Ordering::SeqCst);
    }
    let token = {
        let mut current = state.current.lock().unwrap();
        if force || current.is_none() {
            if let Some(old) = current.take() {
                state.revoked.lock().unwrap().insert(old);
            }
            *current = Some(state.new_token());
        }
        current.clone().unwrap()
    };
    Json(json!({"access_token": token, "expires_in": state.expires_in.load(Ordering::SeqCst)}))
}

async fn classic_token(
    State(state): State<Arc<FakeState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Json<Value> {
    state.token_fetches.fetch_add(1, Ordering::SeqCst);
    state
        .token_requests
        .lock()
        .unwrap()
        .push(serde_json::to_value(&query).unwrap());
    delay(&state).await;
    if query.get("secret").map(String::as_str) != Some("s3cret") {
        return Json(json!({"errcode": 40125, "errmsg": "invalid appsecret"}));
    }
    let token = state.new_token();
    *state.current.lock().unwrap() = Some(token.clone());
    Json(json!({"access_token": token, "expires_in": state.expires_in.load(Ordering::SeqCst)}))
}

async fn send(
    State(state): State<Arc<FakeState>>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Json<Value> {
    let token = query.get("access_token").cloned().unwrap_or_default();
    let raw = String::from_utf8_lossy(&body).into_owned();
    let Ok(parsed) = serde_json::from_slice::<Value>(&body) else {
        return Json(json!({"errcode": 47001, "errmsg": "data format error"}));
    };
    state
        .sends
        .lock()
        .unwrap()
        .push((token.clone(), parsed, raw));
    if !state.token_ok(&token) {
        return Json(
            json!({"errcode": 40001, "errmsg": "invalid credential, access_token is invalid or not latest"}),
        );
    }
    let code = state.send_errcodes.lock().unwrap().pop_front().unwrap_or(0);
    let msg = if code == 0 { "ok" } else { "scripted failure" };
    Json(json!({"errcode": code, "errmsg": msg}))
}

async fn typing(
    State(state): State<Arc<FakeState>>,
    Query(query): Query<HashMap<String, String>>,
    Json(body): Json<Value>,
) -> Json<Value> {
    let token = query.get("access_token").cloned().unwrap_or_default();
    state.typing.lock().unwrap().push((token.clone(), body));
    if !state.token_ok(&token) {
        return Json(json!({"errcode": 40001, "errmsg": "invalid credential"}));
    }
    Json(json!({"errcode": 0, "errmsg": "ok"}))
}

async fn media_get(
    State(state): State<Arc<FakeState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    state.media_fetches.fetch_add(1, Ordering::SeqCst);
    let token = query.get("access_token").cloned().unwrap_or_default();
    if !state.token_ok(&token) {
        return Json(json!({"errcode": 40001, "errmsg": "invalid credential"})).into_response();
    }
    let id = query.get("media_id").cloned().unwrap_or_default();
    match state.media.lock().unwrap().get(&id).cloned() {
        Some((content_type, bytes)) if content_type == "video" => {
            Json(json!({"video_url": String::from_utf8_lossy(&bytes)})).into_response()
        }
        Some((content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, content_type),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{id}.jpg\""),
                ),
            ],
            bytes,
        )
            .into_response(),
        // WeChat answers a missing media id with errcode 40007 labelled text/plain.
        None => (
            [(header::CONTENT_TYPE, "text/plain".to_owned())],
            json!({"errcode": 40007, "errmsg": "invalid media_id"}).to_string(),
        )
            .into_response(),
    }
}
