//! The HTTP routes: URL verification, pushes in the three modes, refusals, passive replies,
//! and the sdk's compliance harness in plaintext and safe mode.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use switchboard_connector_wechat::crypto::{AesKey, MessageCrypt, verify_signature};
use switchboard_connector_wechat::{Clock, ManualClock, WechatConnector, xml};
use switchboard_sdk::services::MemoryKv;
use switchboard_sdk::testing::{ComplianceFixture, check_connector};
use switchboard_sdk::{AcceptError, Content};
use time::macros::datetime;

use common::*;

struct PlainFixture;

impl ComplianceFixture for PlainFixture {
    fn valid_request(&self) -> Request<Body> {
        post(
            &plain_query(&now(), "4242"),
            text_xml(1_700_000_000, 42, "where is my parcel"),
        )
    }
    fn forged_request(&self) -> Request<Body> {
        let uri = plain_query(&now(), "4242").replace("signature=", "signature=0");
        post(&uri, text_xml(1_700_000_000, 42, "where is my parcel"))
    }
    fn malformed_request(&self) -> Request<Body> {
        post(&plain_query(&now(), "4242"), "<xml><Content>unclosed")
    }
    fn stale_request(&self) -> Option<Request<Body>> {
        let old = (time::OffsetDateTime::now_utc().unix_timestamp() - 3600).to_string();
        Some(post(
            &plain_query(&old, "4242"),
            text_xml(1_700_000_000, 42, "x"),
        ))
    }
}

struct SafeFixture;

impl ComplianceFixture for SafeFixture {
    fn valid_request(&self) -> Request<Body> {
        let (uri, body) = safe_push(&now(), "777", &text_xml(1_700_000_000, 43, "退货"));
        post(&uri, body)
    }
    fn forged_request(&self) -> Request<Body> {
        let (uri, body) = safe_push(&now(), "777", &text_xml(1_700_000_000, 43, "退货"));
        post(&uri.replace("msg_signature=", "msg_signature=f"), body)
    }
    fn malformed_request(&self) -> Request<Body> {
        let (uri, body) = safe_push(&now(), "777", "this is not xml");
        post(&uri, body)
    }
    fn stale_request(&self) -> Option<Request<Body>> {
        let old = (time::OffsetDateTime::now_utc().unix_timestamp() - 3600).to_string();
        let (uri, body) = safe_push(&old, "777", &text_xml(1_700_000_000, 43, "退货"));
        Some(post(&uri, body))
    }
}

#[tokio::test]
async fn compliance_plaintext_mode() {
    let connector = connector(&config("timestamp_window_secs = 300"));
    check_connector(connector, &PlainFixture).await;
}

#[tokio::test]
async fn compliance_safe_mode() {
    let connector = connector(&config("timestamp_window_secs = 300"));
    check_connector(connector, &SafeFixture).await;
}

#[tokio::test]
async fn safe_mode_push_is_accepted_and_answered_success() {
    let connector = connector(&config(""));
    let (router, sink) = router(&connector);
    let (uri, body) = safe_push(
        &now(),
        "1",
        &text_xml(1_700_000_001, 99, "我的快递 ]]> 到哪了"),
    );
    let (status, headers, answer) = call(&router, post(&uri, body)).await;
    assert_eq!((status, answer.as_str()), (StatusCode::OK, "success"));
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let accepted = sink.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].1.channel_user_id, OPENID);
    assert_eq!(
        accepted[0].1.content.searchable_text(),
        Some("我的快递 ]]> 到哪了")
    );
    assert_eq!(accepted[0].1.dedupe_key, format!("{OPENID}|1700000001|99"));
}

#[tokio::test]
async fn a_bad_msg_signature_is_403_and_nothing_is_accepted() {
    let connector = connector(&config(""));
    let (router, sink) = router(&connector);
    let (uri, body) = safe_push(&now(), "1", &text_xml(1_700_000_001, 99, "hi"));
    for bad in [
        uri.replace("msg_signature=", "msg_signature=00"),
        uri.replace("&msg_signature=", "&x="),
        uri.replace("signature=", "signature=1")
            .replace("msg_signature=1", "msg_signature="),
    ] {
        let (status, _, _) = call(&router, post(&bad, body.clone())).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{bad}");
    }
    // The signature covers the Encrypt element: a swapped ciphertext is refused too.
    let (_, other_body) = safe_push(&now(), "1", &text_xml(1_700_000_001, 100, "other"));
    let (status, _, _) = call(&router, post(&uri, other_body)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(sink.accepted().is_empty());
}

#[tokio::test]
async fn compatible_mode_trusts_only_the_decrypted_copy() {
    let connector = connector(&config(""));
    let (router, sink) = router(&connector);
    let genuine = text_xml(1_700_000_002, 5, "genuine");
    let (uri, body) = safe_push(&now(), "1", &genuine);
    // Compatible mode: plaintext fields beside Encrypt; here they were tampered with.
    let tampered = body.replace(
        "<Encrypt>",
        "<FromUserName><![CDATA[attacker]]></FromUserName><CreateTime>1</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[evil]]></Content><MsgId>6</MsgId><Encrypt>",
    );
    let (status, _, _) = call(&router, post(&uri, tampered)).await;
    assert_eq!(status, StatusCode::OK);
    let accepted = sink.accepted();
    assert_eq!(accepted[0].1.channel_user_id, OPENID);
    assert_eq!(accepted[0].1.content.searchable_text(), Some("genuine"));
}

#[tokio::test]
async fn the_mode_comes_from_encrypt_type_only() {
    let plain_only = {
        let mut c = config("");
        c.encoding_aes_key = None;
        c
    };
    let connector = connector(&plain_only);
    let (router, sink) = router(&connector);
    // Plaintext without encrypt_type, even though nonce and timestamp are there: accepted.
    let (status, _, body) = call(
        &router,
        post(&plain_query(&now(), "1"), text_xml(1, 1, "a")),
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "success"));
    let raw = format!("{}&encrypt_type=raw", plain_query(&now(), "1"));
    let (status, _, _) = call(&router, post(&raw, text_xml(1, 2, "b"))).await;
    assert_eq!(status, StatusCode::OK);
    // Encrypted push to an account without a key, and an unknown mode: 400.
    let (uri, body) = safe_push(&now(), "1", &text_xml(1, 3, "c"));
    let (status, _, _) = call(&router, post(&uri, body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let odd = format!("{}&encrypt_type=rot13", plain_query(&now(), "1"));
    let (status, _, _) = call(&router, post(&odd, text_xml(1, 4, "d"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(sink.accepted().len(), 2);
}

#[tokio::test]
async fn hostile_or_odd_bodies_are_refused_without_accepting() {
    let connector = connector(&config("[limits]\nmax_body_bytes = 2048"));
    let (router, sink) = router(&connector);
    let q = plain_query(&now(), "1");
    let cases = [
        (
            format!(
                "<!DOCTYPE xml [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>{}",
                text_xml(1, 1, "&e;")
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            text_xml(1, 1, "x").replace("<Content><![CDATA[x]]>", "<Content>&e;"),
            StatusCode::BAD_REQUEST,
        ),
        (
            text_xml(1, 1, &"x".repeat(4096)),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "<xml><FromUserName>u</FromUserName></xml>".to_owned(),
            StatusCode::BAD_REQUEST,
        ),
        ("{\"json\": true}".to_owned(), StatusCode::BAD_REQUEST),
    ];
    for (body, expected) in cases {
        let (status, _, _) = call(&router, post(&q, body.clone())).await;
        assert_eq!(status, expected, "{body:.60}");
    }
    let (status, _, _) = call(&router, post("/", text_xml(1, 1, "x"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(sink.accepted().is_empty());
}

#[tokio::test]
async fn accept_failures_are_never_answered_success() {
    let connector = connector(&config("[auto_reply]\nsubscribe_text = \"welcome\""));
    let (router, sink) = router(&connector);
    sink.refuse_with(Some(AcceptError::Unavailable(
        "broker away, spool full".into(),
    )));
    let (uri, body) = safe_push(&now(), "1", &text_xml(1, 1, "x"));
    let (status, _, answer) = call(&router, post(&uri, body)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_ne!(answer, "success");
    // A report that cannot be published is not answered success either.
    let location = "<xml><ToUserName>gh</ToUserName><FromUserName>o</FromUserName><CreateTime>5</CreateTime><MsgType>event</MsgType><Event>LOCATION</Event><Latitude>1</Latitude><Longitude>2</Longitude><Precision>3</Precision></xml>";
    let (status, _, _) = call(&router, post(&plain_query(&now(), "1"), location)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    sink.refuse_with(None);
    let (status, _, _) = call(&router, post(&plain_query(&now(), "1"), location)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sink.reported().len(), 1);
}

fn subscribe_xml() -> String {
    format!(
        "<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><FromUserName><![CDATA[{OPENID}]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event></xml>"
    )
}

/// Opens a sealed passive reply with `key`: checks its signature and returns the inner XML.
fn open_reply(answer: &str, key: &str) -> xml::Element {
    let envelope = xml::parse(answer.as_bytes(), 1 << 16).unwrap();
    let encrypt = envelope.text_of("Encrypt").unwrap();
    let timestamp = envelope.text_of("TimeStamp").unwrap();
    let nonce = envelope.text_of("Nonce").unwrap();
    let msg_signature = envelope.text_of("MsgSignature").unwrap();
    assert!(verify_signature(
        &[TOKEN, timestamp, nonce, encrypt],
        msg_signature
    ));
    let crypt = MessageCrypt::new(
        TOKEN,
        vec![AesKey::from_encoding_aes_key(key).unwrap()],
        APP_ID,
        true,
    );
    let opened = crypt
        .open(timestamp, nonce, encrypt, msg_signature)
        .unwrap();
    xml::parse(opened.frame.message.as_bytes(), 1 << 16).unwrap()
}

#[tokio::test]
async fn subscribe_greeting_is_sealed_in_safe_mode() {
    let greeting = "欢迎关注! Tricky: ]]> <b>";
    let connector = connector(&config(&format!(
        "[auto_reply]\nsubscribe_text = {greeting:?}"
    )));
    let (router, sink) = router(&connector);
    let (uri, body) = safe_push(&now(), "31337", &subscribe_xml());
    let (status, headers, answer) = call(&router, post(&uri, body.clone())).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/xml")
    );
    assert_eq!(sink.accepted().len(), 1);
    let envelope = xml::parse(answer.as_bytes(), 1 << 16).unwrap();
    assert_eq!(envelope.text_of("Nonce"), Some("31337"));
    let inner = open_reply(&answer, AES_KEY);
    assert_eq!(inner.text_of("Content"), Some(greeting));
    assert_eq!(inner.text_of("ToUserName"), Some(OPENID));
    assert_eq!(inner.text_of("FromUserName"), Some(ACCOUNT));
    assert_eq!(inner.text_of("MsgType"), Some("text"));
    // A fresh random prefix each time: two answers to one push differ.
    let (_, _, again) = call(&router, post(&uri, body)).await;
    assert_ne!(
        xml::parse(again.as_bytes(), 1 << 16)
            .unwrap()
            .text_of("Encrypt"),
        envelope.text_of("Encrypt")
    );
    // Plaintext mode gets a plaintext reply.
    let (_, _, plain) = call(&router, post(&plain_query(&now(), "5"), subscribe_xml())).await;
    let inner = xml::parse(plain.as_bytes(), 1 << 16).unwrap();
    assert_eq!(inner.text_of("Content"), Some(greeting));
}

#[tokio::test]
async fn a_rotated_key_still_opens_and_the_reply_uses_it() {
    const NEW_KEY: &str = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut";
    let cfg = config(&format!(
        "previous_encoding_aes_key = \"{AES_KEY}\"\n[auto_reply]\nsubscribe_text = \"hi\""
    ));
    let mut cfg = cfg;
    cfg.encoding_aes_key = Some(switchboard_sdk::Secret::new(NEW_KEY));
    let connector = connector(&cfg);
    let (router, sink) = router(&connector);
    let (uri, body) = safe_push(&now(), "9", &subscribe_xml());
    let (status, _, answer) = call(&router, post(&uri, body)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sink.accepted().len(), 1);
    assert_eq!(open_reply(&answer, AES_KEY).text_of("Content"), Some("hi"));
    let (uri, body) = safe_push_with(NEW_KEY, APP_ID, &now(), "9", &subscribe_xml());
    let (_, _, answer) = call(&router, post(&uri, body)).await;
    assert_eq!(open_reply(&answer, NEW_KEY).text_of("Content"), Some("hi"));
}

#[tokio::test]
async fn app_id_check_is_strict_unless_relaxed() {
    let (uri, body) = safe_push_with(
        AES_KEY,
        "wxcomponent00000",
        &now(),
        "9",
        &text_xml(1, 1, "x"),
    );
    let strict = connector(&config(""));
    let (strict_router, sink) = router(&strict);
    let (status, _, _) = call(&strict_router, post(&uri, body.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(sink.accepted().is_empty());
    let relaxed = connector(&config("strict_app_id = false"));
    let (relaxed_router, sink) = router(&relaxed);
    let (status, _, _) = call(&relaxed_router, post(&uri, body)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sink.accepted().len(), 1);
}

#[tokio::test]
async fn after_hours_notice_once_per_period() {
    let clock = Arc::new(ManualClock::new(
        datetime!(2024-06-09 03:00 +08:00).to_offset(time::UtcOffset::UTC),
    ));
    let cfg = config(
        "[auto_reply]\nafter_hours_text = \"We open at 9.\"\nafter_hours_repeat_secs = 3600",
    );
    let connector = Arc::new(
        WechatConnector::from_config(
            &cfg,
            &context(Arc::new(MemoryKv::default()), "a"),
            clock.clone(),
        )
        .unwrap(),
    );
    let (router, sink) = router(&connector);
    let ts = clock.unix().to_string();
    let (_, _, first) = call(
        &router,
        post(&plain_query(&ts, "1"), text_xml(1, 1, "hello?")),
    )
    .await;
    assert_eq!(
        xml::parse(first.as_bytes(), 1 << 16)
            .unwrap()
            .text_of("Content"),
        Some("We open at 9.")
    );
    let (_, _, second) = call(
        &router,
        post(&plain_query(&ts, "2"), text_xml(2, 2, "anyone?")),
    )
    .await;
    assert_eq!(second, "success");
    // Monday 10:00 local: open, no notice.
    clock.set(datetime!(2024-06-10 10:00 +08:00).to_offset(time::UtcOffset::UTC));
    let ts = clock.unix().to_string();
    let (_, _, open) = call(&router, post(&plain_query(&ts, "3"), text_xml(3, 3, "hi"))).await;
    assert_eq!(open, "success");
    assert_eq!(sink.accepted().len(), 3);
}

#[tokio::test]
async fn url_verification_refuses_anything_but_a_valid_signature() {
    let connector = connector(&config(""));
    let (router, _) = router(&connector);
    let ts = now();
    let good = format!("{}&echostr=abc123", plain_query(&ts, "5"));
    let (status, _, body) = call(&router, get(&good)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "abc123"));
    for bad in [
        "/?echostr=abc".to_owned(),
        good.replace("signature=", "signature=a"),
        good.replace("&echostr=abc123", ""),
        good.replace("nonce=5", "nonce=6"),
    ] {
        let (status, _, body) = call(&router, get(&bad)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{bad}");
        assert_ne!(body, "abc123");
    }
}

#[tokio::test]
async fn accepted_content_is_normalized() {
    let connector = connector(&config(""));
    let (router, sink) = router(&connector);
    let (uri, body) = safe_push(&now(), "1", &text_xml(1_700_000_003, 7, "hi"));
    call(&router, post(&uri, body)).await;
    assert_eq!(
        sink.accepted()[0].1.content,
        Content::Text {
            text: "hi".into(),
            extra: serde_json::from_value(serde_json::json!({"msg_id": "7"})).unwrap(),
        }
    );
}
