//! What the WeChat end-to-end tests need besides the common harness: a fake WeChat API on
//! 127.0.0.1:0 speaking the real JSON of the token and customer-service endpoints, the
//! account the daemon is configured with, and pushes built the way WeChat's servers build
//! them (signed, and in safe mode encrypted with the connector crate's public crypto).

#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::routing::{get, post};
use serde_json::{Value, json};
use switchboard_connector_wechat::crypto::{AesKey, signature};

/// The official account the daemon is configured with, as the MP console would show it.
pub struct Account {
    pub id: &'static str,
    pub app_id: &'static str,
    pub app_secret: &'static str,
    /// The server-config Token.
    pub token: &'static str,
    pub encoding_aes_key: &'static str,
    /// The account's original id (`gh_…`), WeChat's `ToUserName`.
    pub original_id: &'static str,
}

pub const ACCOUNT: Account = Account {
    id: "cs-main",
    app_id: "wx2c2769f8efd9abc2",
    app_secret: "e2e-appsecret-0123456789abcdef",
    token: "switchboardE2E",
    encoding_aes_key: "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
    original_id: "gh_10f6c3c3ac5a",
};

impl Account {
    /// The `[[connectors.wechat]]` table pointing the connector at `api_base`.
    pub fn config(&self, api_base: &str) -> String {
        format!(
            r#"
[[connectors.wechat]]
id = "{id}"
app_id = "{app_id}"
app_secret = "{secret}"
token = "{token}"
encoding_aes_key = "{key}"
timestamp_window_secs = 300
api_base = "{api_base}"
"#,
            id = self.id,
            app_id = self.app_id,
            secret = self.app_secret,
            token = self.token,
            key = self.encoding_aes_key,
        )
    }

    /// The same table with a fixed passive reply to new followers.
    pub fn config_with_subscribe_reply(&self, api_base: &str, text: &str) -> String {
        format!(
            "{}\n[connectors.wechat.auto_reply]\nsubscribe_text = \"{text}\"\n",
            self.config(api_base)
        )
    }

    /// The conversation id of `openid` on this account.
    pub fn conversation(&self, openid: &str) -> String {
        format!("wechat:{}:{openid}", self.id)
    }

    pub fn path(&self) -> String {
        format!("/wechat/{}", self.id)
    }

    pub fn aes_key(&self) -> AesKey {
        AesKey::from_encoding_aes_key(self.encoding_aes_key).expect("valid EncodingAESKey")
    }
}

/// A `[redis]` table with its own key prefix.
pub fn redis_config(key_prefix: &str) -> String {
    format!(
        "\n[redis]\nurl = \"{url}\"\nkey_prefix = \"{key_prefix}\"\n",
        url = crate::common::redis_url()
    )
}

/// Deletes every Redis key under `key_prefix`.
pub async fn redis_cleanup(key_prefix: &str) {
    let Ok(client) = redis::Client::open(crate::common::redis_url()) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{key_prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: Result<i64, _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
    }
}

/// An OpenID-shaped user id (28 characters, like WeChat's), unique per call.
pub fn openid() -> String {
    let unique = ulid::Ulid::new().to_string();
    format!("o6_bmj{}", &unique[unique.len() - 22..])
}

/// A message id like WeChat's (a 64-bit decimal), unique per call.
pub fn msg_id() -> u64 {
    // The low bits of a fresh ULID: random within this test run.
    (ulid::Ulid::new().random() as u64) >> 1
}

/// A text message as WeChat pushes it (plaintext XML, CDATA as WeChat writes it).
pub fn text_xml(openid: &str, create_time: i64, msg_id: u64, content: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{to}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName><CreateTime>{create_time}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId></xml>",
        to = ACCOUNT.original_id,
    )
}

/// A `subscribe` event as WeChat pushes it.
pub fn subscribe_xml(openid: &str, create_time: i64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{to}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName><CreateTime>{create_time}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event></xml>",
        to = ACCOUNT.original_id,
    )
}

/// One HTTP request as WeChat's servers send it to the server URL.
#[derive(Clone, Debug)]
pub struct Push {
    pub query: Vec<(String, String)>,
    pub body: String,
}

/// A fresh nonce like WeChat's (decimal digits).
pub fn nonce() -> String {
    ((ulid::Ulid::new().random() as u64) % 10_000_000_000).to_string()
}

/// `inner` pushed in safe mode (`encrypt_type=aes`): encrypted for the account, both
/// signatures computed from the account's Token.
pub fn safe_push(account: &Account, openid: &str, inner: &str, timestamp: i64) -> Push {
    let ts = timestamp.to_string();
    let nonce = nonce();
    let random = ulid::Ulid::new().to_bytes();
    let encrypt = account.aes_key().encrypt(&random, inner, account.app_id);
    let msg_signature = signature(&[account.token, &ts, &nonce, &encrypt]);
    let body = format!(
        "<xml>\n<ToUserName><![CDATA[{}]]></ToUserName>\n<Encrypt><![CDATA[{encrypt}]]></Encrypt>\n</xml>",
        account.original_id
    );
    Push {
        query: vec![
            ("signature".into(), signature(&[account.token, &ts, &nonce])),
            ("timestamp".into(), ts),
            ("nonce".into(), nonce),
            ("openid".into(), openid.to_owned()),
            ("encrypt_type".into(), "aes".into()),
            ("msg_signature".into(), msg_signature),
        ],
        body,
    }
}

impl Push {
    pub fn param(&self, name: &str) -> &str {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    }

    pub fn set_param(&mut self, name: &str, value: &str) {
        for (k, v) in &mut self.query {
            if k == name {
                *v = value.to_owned();
            }
        }
    }
}

/// What the daemon answered to a push.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// Posts `push` to the daemon at `url` (the account's server URL).
pub async fn send_push(client: &reqwest::Client, url: &str, push: &Push) -> Answer {
    let response = client
        .post(url)
        .query(&push.query)
        .header("Content-Type", "text/xml")
        .body(push.body.clone())
        .send()
        .await
        .expect("post push");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.text().await.unwrap_or_default();
    Answer {
        status,
        content_type,
        body,
    }
}

/// One call to an API endpoint that takes a token.
#[derive(Clone, Debug)]
pub struct ApiCall {
    /// The `access_token` query parameter.
    pub token: String,
    pub content_type: String,
    /// The body as sent.
    pub raw: String,
    /// The body parsed.
    pub body: Value,
    /// The errcode the fake answered.
    pub errcode: i64,
}

/// One call to a token endpoint.
#[derive(Clone, Debug)]
pub struct TokenCall {
    /// `stable_token` or `token`.
    pub endpoint: &'static str,
    /// The JSON body (stable_token) or the query (classic).
    pub request: Value,
    /// The token handed out, if any.
    pub issued: Option<String>,
}

#[derive(Default)]
struct Inner {
    /// The token stable_token hands out until it is rotated.
    current: Option<String>,
    /// Tokens WeChat no longer takes.
    revoked: HashSet<String>,
    issued: usize,
    token_calls: Vec<TokenCall>,
    sends: Vec<ApiCall>,
    typing: Vec<ApiCall>,
    /// Errcodes answered to the next sends with a valid token, in order; then 0.
    send_errcodes: VecDeque<i64>,
}

/// The fake's state, shared with its handlers.
pub struct FakeState {
    inner: Mutex<Inner>,
    /// Token requests wait while this is false (to make concurrent callers overlap).
    gate: tokio::sync::watch::Sender<bool>,
}

/// A fake WeChat API on a free loopback port.
#[derive(Clone)]
pub struct FakeWechat {
    /// `http://127.0.0.1:PORT`, the connector's `api_base`.
    pub base: String,
    state: Arc<FakeState>,
}

/// How long a held token request waits for the gate before answering anyway.
const GATE_LIMIT: Duration = Duration::from_secs(8);

impl FakeWechat {
    pub async fn start() -> Self {
        let (gate, _) = tokio::sync::watch::channel(true);
        let state = Arc::new(FakeState {
            inner: Mutex::new(Inner::default()),
            gate,
        });
        let app = axum::Router::new()
            .route("/cgi-bin/stable_token", post(stable_token))
            .route("/cgi-bin/token", get(classic_token))
            .route("/cgi-bin/message/custom/send", post(custom_send))
            .route("/cgi-bin/message/custom/typing", post(custom_typing))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake wechat");
        let base = format!("http://{}", listener.local_addr().expect("fake address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, state }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.state.inner.lock().expect("fake state")
    }

    /// Calls to either token endpoint so far.
    pub fn token_calls(&self) -> Vec<TokenCall> {
        self.inner().token_calls.clone()
    }

    /// custom/send calls so far.
    pub fn sends(&self) -> Vec<ApiCall> {
        self.inner().sends.clone()
    }

    /// custom/typing calls so far.
    pub fn typing(&self) -> Vec<ApiCall> {
        self.inner().typing.clone()
    }

    /// Another system took a new token (a force refresh elsewhere): the current one stops
    /// working, stable_token hands out a new one.
    pub fn rotate(&self) {
        let mut inner = self.inner();
        if let Some(old) = inner.current.take() {
            inner.revoked.insert(old);
        }
        let token = new_token(&mut inner);
        inner.current = Some(token);
    }

    /// The next sends with a valid token answer these errcodes, in order.
    pub fn script_send_errcodes(&self, codes: &[i64]) {
        self.inner().send_errcodes.extend(codes);
    }

    /// Holds token requests until [`FakeWechat::open_gate`] (or a few seconds).
    pub fn close_gate(&self) {
        self.state.gate.send_replace(false);
    }

    pub fn open_gate(&self) {
        self.state.gate.send_replace(true);
    }
}

fn new_token(inner: &mut Inner) -> String {
    inner.issued += 1;
    // Real tokens are long opaque strings of letters, digits, '_' and '-'.
    format!(
        "{}_ACCESS_TOKEN_{}",
        inner.issued,
        ulid::Ulid::new().to_string().to_lowercase()
    )
}

async fn wait_gate(state: &FakeState) {
    let mut open = state.gate.subscribe();
    let _ = tokio::time::timeout(GATE_LIMIT, open.wait_for(|open| *open)).await;
}

/// `POST /cgi-bin/stable_token`: `{grant_type, appid, secret, force_refresh}`; the same
/// token until it expires or is rotated, a new one on `force_refresh: true`.
async fn stable_token(State(state): State<Arc<FakeState>>, body: Bytes) -> Json<Value> {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let call = {
        let mut inner = state.inner.lock().expect("fake state");
        inner.token_calls.push(TokenCall {
            endpoint: "stable_token",
            request: request.clone(),
            issued: None,
        });
        inner.token_calls.len() - 1
    };
    wait_gate(&state).await;
    if request["grant_type"] != "client_credential" {
        return Json(json!({"errcode": 40002, "errmsg": "invalid grant_type"}));
    }
    if request["appid"] != ACCOUNT.app_id {
        return Json(json!({"errcode": 40013, "errmsg": "invalid appid"}));
    }
    if request["secret"] != ACCOUNT.app_secret {
        return Json(json!({"errcode": 40125, "errmsg": "invalid appsecret"}));
    }
    let mut inner = state.inner.lock().expect("fake state");
    if request["force_refresh"] == true || inner.current.is_none() {
        if let Some(old) = inner.current.take() {
            inner.revoked.insert(old);
        }
        let token = new_token(&mut inner);
        inner.current = Some(token);
    }
    let token = inner.current.clone().unwrap_or_default();
    inner.token_calls[call].issued = Some(token.clone());
    Json(json!({"access_token": token, "expires_in": 7200}))
}

/// `GET /cgi-bin/token?grant_type=client_credential&appid=&secret=`: every call makes a
/// new token and retires the previous one.
async fn classic_token(
    State(state): State<Arc<FakeState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Json<Value> {
    let call = {
        let mut inner = state.inner.lock().expect("fake state");
        inner.token_calls.push(TokenCall {
            endpoint: "token",
            request: json!(query),
            issued: None,
        });
        inner.token_calls.len() - 1
    };
    wait_gate(&state).await;
    if query.get("secret").map(String::as_str) != Some(ACCOUNT.app_secret)
        || query.get("appid").map(String::as_str) != Some(ACCOUNT.app_id)
    {
        return Json(json!({"errcode": 40125, "errmsg": "invalid appsecret"}));
    }
    let mut inner = state.inner.lock().expect("fake state");
    if let Some(old) = inner.current.take() {
        inner.revoked.insert(old);
    }
    let token = new_token(&mut inner);
    inner.current = Some(token.clone());
    inner.token_calls[call].issued = Some(token.clone());
    Json(json!({"access_token": token, "expires_in": 7200}))
}

/// Checks the token and body of a call; the errcode WeChat would answer.
fn check_call(
    inner: &mut Inner,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> (ApiCall, i64) {
    let token = query.get("access_token").cloned().unwrap_or_default();
    let raw = String::from_utf8_lossy(body).into_owned();
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let known = token.contains("_ACCESS_TOKEN_") && !inner.revoked.contains(&token);
    let errcode = if token.is_empty() {
        41001
    } else if !known {
        40001
    } else if parsed.is_none() {
        47001
    } else {
        0
    };
    let call = ApiCall {
        token,
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        raw,
        body: parsed.unwrap_or(Value::Null),
        errcode,
    };
    (call, errcode)
}

fn errmsg(code: i64) -> &'static str {
    match code {
        0 => "ok",
        40001 => "invalid credential, access_token is invalid or not latest",
        41001 => "access_token missing",
        47001 => "data format error",
        45015 => "response out of time limit or subscription is canceled",
        _ => "system error",
    }
}

/// `POST /cgi-bin/message/custom/send?access_token=…`.
async fn custom_send(
    State(state): State<Arc<FakeState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Json<Value> {
    let mut inner = state.inner.lock().expect("fake state");
    let (mut call, mut code) = check_call(&mut inner, &query, &headers, &body);
    if code == 0 {
        code = inner.send_errcodes.pop_front().unwrap_or(0);
        call.errcode = code;
    }
    inner.sends.push(call);
    Json(json!({"errcode": code, "errmsg": errmsg(code)}))
}

/// `POST /cgi-bin/message/custom/typing?access_token=…`.
async fn custom_typing(
    State(state): State<Arc<FakeState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Json<Value> {
    let mut inner = state.inner.lock().expect("fake state");
    let (call, code) = check_call(&mut inner, &query, &headers, &body);
    inner.typing.push(call);
    Json(json!({"errcode": code, "errmsg": errmsg(code)}))
}
