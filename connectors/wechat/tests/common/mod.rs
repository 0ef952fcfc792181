//! Shared test helpers: connectors built from TOML, a router driven in-process, and a fake
//! WeChat API (a local axum server speaking WeChat's JSON).

#![allow(dead_code)]

pub mod fake;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use switchboard_connector_wechat::crypto::signature;
use switchboard_connector_wechat::{
    Clock, ManualClock, SystemClock, WechatConfig, WechatConnector,
};
use switchboard_sdk::ConnectorContext;
use switchboard_sdk::services::MemoryKv;
use switchboard_sdk::testing::RecordingSink;
use tower::ServiceExt;

/// The official sample's token, key and app id (vectors.json `official_mp_sample_compat_mode`).
pub const TOKEN: &str = "spamtest";
pub const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
pub const APP_ID: &str = "wx2c2769f8efd9abc2";
pub const OPENID: &str = "oyORnuP8q7ou2gfYjqLzSIWZf0rs";
pub const ACCOUNT: &str = "gh_10f6c3c3ac5a";

/// A config table with the sample credentials plus `extra` TOML lines.
pub fn config(extra: &str) -> WechatConfig {
    let text = format!(
        "id = \"main\"\napp_id = \"{APP_ID}\"\napp_secret = \"s3cret\"\ntoken = \"{TOKEN}\"\nencoding_aes_key = \"{AES_KEY}\"\n{extra}\n"
    );
    toml::from_str(&text).unwrap_or_else(|e| panic!("test config does not parse: {e}\n{text}"))
}

/// A context on `kv` named `instance`.
pub fn context(kv: Arc<MemoryKv>, instance: &str) -> ConnectorContext {
    ConnectorContext {
        kv,
        fanout: Arc::new(switchboard_sdk::services::LocalFanout::default()),
        http: reqwest::Client::new(),
        instance_id: instance.to_owned(),
    }
}

/// A connector on a fresh in-memory context with the system clock.
pub fn connector(config: &WechatConfig) -> Arc<WechatConnector> {
    let context = ConnectorContext::in_memory();
    Arc::new(WechatConnector::from_config(config, &context, Arc::new(SystemClock)).unwrap())
}

/// A connector on `kv` with `clock`.
pub fn connector_with(
    config: &WechatConfig,
    kv: Arc<MemoryKv>,
    instance: &str,
    clock: Arc<dyn Clock>,
) -> Arc<WechatConnector> {
    Arc::new(WechatConnector::from_config(config, &context(kv, instance), clock).unwrap())
}

/// A manual clock at the current time.
pub fn manual_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()))
}

/// The connector's router with a recording sink behind it.
pub fn router(connector: &Arc<WechatConnector>) -> (Router, Arc<RecordingSink>) {
    switchboard_sdk::testing::mount(connector.as_ref())
}

/// Sends `request` through `router`; returns status, headers and body text.
pub async fn call(router: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, String) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = to_bytes(response.into_body(), 1 << 24).await.unwrap();
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

/// A GET of `uri`.
pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

/// A POST of `body` to `uri`.
pub fn post(uri: &str, body: impl Into<String>) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "text/xml")
        .body(Body::from(body.into()))
        .unwrap()
}

/// The query WeChat puts on a plaintext push at `timestamp` with `nonce`.
pub fn plain_query(timestamp: &str, nonce: &str) -> String {
    let signature = signature(&[TOKEN, timestamp, nonce]);
    format!("/?signature={signature}&timestamp={timestamp}&nonce={nonce}&openid={OPENID}")
}

/// A plaintext text message from [`OPENID`].
pub fn text_xml(create_time: i64, msg_id: u64, text: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><FromUserName><![CDATA[{OPENID}]]></FromUserName><CreateTime>{create_time}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content>{}</Content><MsgId>{msg_id}</MsgId></xml>",
        switchboard_connector_wechat::passive::cdata(text)
    )
}

/// Opens the 48-hour window for [`OPENID`] the way production does: by a message.
pub async fn open_window(connector: &Arc<WechatConnector>) {
    let (router, sink) = router(connector);
    let now = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
    let (status, _, body) = call(
        &router,
        post(&plain_query(&now, "1"), text_xml(1_700_000_000, 1, "hi")),
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "success"));
    assert_eq!(sink.accepted().len(), 1);
}

/// A safe-mode push of `inner` (plaintext XML) at `timestamp` with `nonce`, sealed with the
/// EncodingAESKey `key` for `app_id`: the query (with both signatures) and the body.
pub fn safe_push_with(
    key: &str,
    app_id: &str,
    timestamp: &str,
    nonce: &str,
    inner: &str,
) -> (String, String) {
    use switchboard_connector_wechat::crypto::AesKey;
    let aes = AesKey::from_encoding_aes_key(key).unwrap();
    let encrypt = aes.encrypt(b"0123456789abcdef", inner, app_id);
    let signature = signature(&[TOKEN, timestamp, nonce]);
    let msg_signature = signature_of(&[TOKEN, timestamp, nonce, &encrypt]);
    let uri = format!(
        "/?signature={signature}&timestamp={timestamp}&nonce={nonce}&openid={OPENID}&encrypt_type=aes&msg_signature={msg_signature}"
    );
    let body = format!(
        "<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    );
    (uri, body)
}

fn signature_of(parts: &[&str]) -> String {
    signature(parts)
}

/// [`safe_push_with`] with the sample key and app id.
pub fn safe_push(timestamp: &str, nonce: &str, inner: &str) -> (String, String) {
    safe_push_with(AES_KEY, APP_ID, timestamp, nonce, inner)
}

/// Now, as unix seconds text.
pub fn now() -> String {
    time::OffsetDateTime::now_utc().unix_timestamp().to_string()
}

/// Sends `request` through `router`; returns status and the body's bytes.
pub async fn call_raw(router: &Router, request: Request<Body>) -> (StatusCode, Vec<u8>) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = to_bytes(response.into_body(), 1 << 24).await.unwrap();
    (status, bytes.to_vec())
}
