//! The generic voice profile: signed JSON callbacks walk the same IVR, answers are JSON.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::fixture;
use serde_json::{Value, json};
use switchboard_connector_telephony::{TelephonyConfig, TelephonyConnector};
use switchboard_sdk::schedule::fixed_clock;
use switchboard_sdk::signature::hmac_webhook::{HmacConfig, HmacSigner};
use switchboard_sdk::testing::{ComplianceFixture, Harness, check_connector, hmac_request};
use switchboard_sdk::time::OffsetDateTime;
use switchboard_sdk::{Content, RejectReason, Secret};

const KEY: &str = "voice-gateway-key";

fn config() -> TelephonyConfig {
    let text = format!(
        r#"
        id = "cn-hotline"
        provider = "generic"
        public_url = "https://sb.example.com/telephony/cn-hotline"
        languages = ["zh-CN"]

        [generic]
        signing_key = "{KEY}"
        signature_header = "X-Gw-Signature"
        timestamp_header = "X-Gw-Timestamp"
        default_country_code = "86"

        [[menu]]
        digit = "1"
        skill = "tracking"
        prompt = {{ "zh-CN" = "查询快递请按1。" }}
        ask_tracking_number = true
        handoff = {{ queue = "tracking" }}

        [[menu]]
        digit = "2"
        skill = "claims"
        prompt = {{ "zh-CN" = "理赔请按2。" }}
        handoff = {{ enqueue = "claims" }}
        "#
    );
    toml::from_str(&text).unwrap_or_else(|err| panic!("config: {err}"))
}

fn line() -> TelephonyConnector {
    TelephonyConnector::new(&config()).unwrap_or_else(|err| panic!("build: {:?}", err.0))
}

fn signed(path: &str, body: &str, key: &str, at: OffsetDateTime) -> Request<Body> {
    // Signed with the header names the connector is configured with.
    let signer = HmacConfig {
        signing_key: Some(Secret::new(key)),
        signing_key_env: None,
        signing_key_file: None,
        signature_header: Some("X-Gw-Signature".to_owned()),
        timestamp_header: Some("X-Gw-Timestamp".to_owned()),
        replay_window_secs: None,
    }
    .build("generic")
    .unwrap_or_else(|problems| panic!("signer: {problems:?}"));
    hmac_request(&signer, path, body, at)
}

fn now_signed(path: &str, body: &str) -> Request<Body> {
    signed(path, body, KEY, OffsetDateTime::now_utc())
}

fn actions(body: &str) -> Vec<Value> {
    let parsed: Value = serde_json::from_str(body).unwrap_or_else(|err| panic!("{err}: {body}"));
    parsed["actions"].as_array().cloned().unwrap_or_default()
}

struct GenericVoiceFixture;

impl ComplianceFixture for GenericVoiceFixture {
    fn valid_request(&self) -> Request<Body> {
        now_signed("/gather?step=menu", &fixture("generic/gather-digit.json"))
    }
    fn forged_request(&self) -> Request<Body> {
        signed(
            "/gather?step=menu",
            &fixture("generic/gather-digit.json"),
            "other-key",
            OffsetDateTime::now_utc(),
        )
    }
    fn malformed_request(&self) -> Request<Body> {
        now_signed("/gather?step=menu", r#"{"digits": "2"}"#)
    }
    fn stale_request(&self) -> Option<Request<Body>> {
        Some(signed(
            "/gather?step=menu",
            &fixture("generic/gather-digit.json"),
            KEY,
            OffsetDateTime::now_utc() - time::Duration::hours(1),
        ))
    }
}

#[tokio::test]
async fn passes_the_compliance_harness() {
    check_connector(Arc::new(line()), &GenericVoiceFixture).await;
}

#[tokio::test]
async fn the_menu_and_the_handoff_are_json_actions() {
    let h = Harness::new(&line());
    let answer = h
        .call(now_signed(
            "/incoming",
            &fixture("generic/incoming-call.json"),
        ))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let plan = actions(&answer.body);
    assert_eq!(plan[0]["verb"], "gather");
    assert_eq!(plan[0]["input"], "dtmf_speech");
    assert_eq!(
        plan[0]["action"],
        "https://sb.example.com/telephony/cn-hotline/gather?step=menu&attempt=1"
    );
    assert_eq!(
        plan[0]["prompts"][1],
        json!({"text": "查询快递请按1。", "language": "zh-CN"})
    );

    let answer = h
        .call(now_signed(
            "/gather?step=menu&attempt=1",
            &fixture("generic/gather-digit.json"),
        ))
        .await;
    let plan = actions(&answer.body);
    assert_eq!(
        plan.last(),
        Some(&json!({
            "verb": "enqueue",
            "name": "claims",
            "action": "https://sb.example.com/telephony/cn-hotline/status?event=handoff&skill=claims",
        }))
    );
    let accepted = h.sink.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].1.channel_user_id, "+8613812345678");
    assert_eq!(accepted[0].1.dedupe_key, "gw-call-0001:ringing");
}

#[tokio::test]
async fn tracking_numbers_and_dial_queue_work_the_same() {
    let h = Harness::new(&line());
    let body = json!({"call_id": "c-7", "from": "+8613812345678", "digits": "1"}).to_string();
    let plan = actions(&h.call(now_signed("/gather?step=menu", &body)).await.body);
    assert_eq!(plan[0]["verb"], "gather");
    assert_eq!(plan[0]["finish_on_key"], "#");
    let body =
        json!({"call_id": "c-7", "from": "+8613812345678", "digits": "1234 5678#"}).to_string();
    let plan = actions(
        &h.call(now_signed("/gather?step=tracking&choice=1", &body))
            .await
            .body,
    );
    assert_eq!(
        plan.last().map(|a| a["verb"].clone()),
        Some(json!("dial_queue"))
    );
    match &h.sink.accepted()[0].1.content {
        Content::Call { data, .. } => assert_eq!(data["tracking_number"], "12345678"),
        other => panic!("expected a call, got {other:?}"),
    }
}

#[tokio::test]
async fn voicemail_and_status_over_json() {
    let h = Harness::new(&line());
    let answer = h
        .call(now_signed(
            "/status?event=voicemail",
            &fixture("generic/voicemail.json"),
        ))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        actions(&answer.body).last(),
        Some(&json!({"verb": "hangup"}))
    );
    match &h.sink.accepted()[0].1.content {
        Content::Call { event, data, .. } => {
            assert_eq!(event, "voicemail");
            assert_eq!(data["recording_url"], "https://gw.example.cn/rec/0002.mp3");
            assert_eq!(data["duration"], 23);
        }
        other => panic!("expected a call, got {other:?}"),
    }

    let body = json!({"call_id": "c-8", "from": "13812345678", "call_status": "completed", "call_duration": 65}).to_string();
    let answer = h.call(now_signed("/status", &body)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(actions(&answer.body), Vec::<Value>::new());
    let event = &h.sink.reported()[0].1;
    assert_eq!(event.kind, "call.completed");
    assert_eq!(event.data["duration"], 65);
    assert_eq!(
        event.conversation_id.as_deref(),
        Some("telephony:cn-hotline:+8613812345678")
    );
}

#[tokio::test]
async fn the_configured_header_names_are_the_ones_checked() {
    let h = Harness::new(&line().with_clock(fixed_clock(OffsetDateTime::now_utc())));
    let body = fixture("generic/incoming-call.json");
    // Correctly signed, but under the default header names.
    let request = hmac_request(
        &HmacSigner::new(Secret::new(KEY)),
        "/incoming",
        &body,
        OffsetDateTime::now_utc(),
    );
    let answer = h.call(request).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(
        answer.rejected.map(|r| r.reason),
        Some(RejectReason::BadSignature)
    );
}
