//! The Twilio profile end to end inside the crate: signed webhooks in, the Messages API
//! (a local fake speaking Twilio's wire format) out.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{FakeTwilio, TwilioMode, encode, fixture, reply};
use serde_json::{Map, Value};
use switchboard_connector_sms::{SmsConfig, SmsConnector};
use switchboard_sdk::schedule::fixed_clock;
use switchboard_sdk::testing::{ComplianceFixture, Harness, check_connector, twilio_request};
use switchboard_sdk::{Connector, ConnectorContext, Content, DeliveryError, RejectReason};
use time::macros::datetime;

const PUBLIC_URL: &str = "https://sb.example.com/sms/main";
const ACCOUNT: &str = "AC00000000000000000000000000000001";
const TOKEN: &str = "twilio-test-token";

fn config(api_base: &str, extra: &str) -> SmsConfig {
    let text = format!(
        r#"
        id = "main"
        provider = "twilio"
        public_url = "{PUBLIC_URL}"
        {extra}
        [twilio]
        account_sid = "{ACCOUNT}"
        auth_token = "{TOKEN}"
        from = "+14155550100"
        api_base = "{api_base}"
        "#
    );
    toml::from_str(&text).unwrap_or_else(|err| panic!("config: {err}"))
}

fn connector(api_base: &str) -> SmsConnector {
    SmsConnector::new(&config(api_base, ""), &ConnectorContext::in_memory())
        .unwrap_or_else(|err| panic!("build: {:?}", err.0))
}

fn inbound(body: &str) -> Request<Body> {
    twilio_request(PUBLIC_URL, TOKEN, "/inbound", body, None)
}

struct TwilioFixture;

impl ComplianceFixture for TwilioFixture {
    fn valid_request(&self) -> Request<Body> {
        inbound(&fixture("twilio/inbound-sms.form"))
    }
    fn forged_request(&self) -> Request<Body> {
        twilio_request(
            PUBLIC_URL,
            "not-the-token",
            "/inbound",
            &fixture("twilio/inbound-sms.form"),
            None,
        )
    }
    fn malformed_request(&self) -> Request<Body> {
        inbound("MessageSid=SM1&Body=no+sender")
    }
    fn stale_request(&self) -> Option<Request<Body>> {
        None
    }
}

#[tokio::test]
async fn passes_the_compliance_harness() {
    check_connector(
        Arc::new(connector("https://api.twilio.com")),
        &TwilioFixture,
    )
    .await;
}

#[tokio::test]
async fn a_signed_sms_becomes_a_message_from_the_senders_number() {
    let h = Harness::new(&connector("https://api.twilio.com"));
    let answer = h.call(inbound(&fixture("twilio/inbound-sms.form"))).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.body.contains("<Response>"), "{}", answer.body);
    assert!(
        answer.headers[axum::http::header::CONTENT_TYPE]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/xml")
    );
    let accepted = h.sink.accepted();
    assert_eq!(accepted.len(), 1);
    let (channel, message) = &accepted[0];
    assert_eq!(channel.kind, "sms");
    assert_eq!(channel.connector_id, "main");
    assert_eq!(message.channel_user_id, "+8613812345678");
    assert_eq!(message.phone.as_deref(), Some("+8613812345678"));
    assert_eq!(message.dedupe_key, "SM5e2c8a1f0b7d4c3a9e6f1d2b3c4a5e6f");
    assert_eq!(
        message.content.searchable_text(),
        Some("Where is my parcel SF1234567890123?")
    );
    assert_eq!(message.raw, None, "raw capture is off by default");
}

#[tokio::test]
async fn an_mms_becomes_image_and_file_messages() {
    let h = Harness::new(&connector("https://api.twilio.com"));
    let answer = h.call(inbound(&fixture("twilio/inbound-mms.form"))).await;
    assert_eq!(answer.status, StatusCode::OK);
    let accepted = h.sink.accepted();
    assert_eq!(accepted.len(), 2);
    match &accepted[0].1.content {
        Content::Image {
            url: Some(url),
            caption: Some(caption),
            ..
        } => {
            assert!(
                url.ends_with("/Media/ME11111111111111111111111111111111"),
                "{url}"
            );
            assert_eq!(caption, "The box arrived broken");
        }
        other => panic!("expected an image, got {other:?}"),
    }
    match &accepted[1].1.content {
        Content::File { url, mime, .. } => {
            assert!(url.ends_with("ME22222222222222222222222222222222"), "{url}");
            assert_eq!(mime.as_deref(), Some("application/pdf"));
        }
        other => panic!("expected a file, got {other:?}"),
    }
    assert_eq!(
        accepted[0].1.dedupe_key,
        "MM7a1b2c3d4e5f60718293a4b5c6d7e8f9"
    );
    assert_eq!(
        accepted[1].1.dedupe_key,
        "MM7a1b2c3d4e5f60718293a4b5c6d7e8f9:1"
    );
}

#[tokio::test]
async fn a_long_text_arrives_whole() {
    // Twilio joins concatenated parts before the webhook (NumSegments says how many).
    let text = "这是一条很长的消息。".repeat(20);
    let body = encode(&[
        ("MessageSid", "SM000000000000000000000000000000aa"),
        ("From", "+8613812345678"),
        ("To", "+14155550100"),
        ("Body", &text),
        ("NumSegments", "3"),
        ("NumMedia", "0"),
    ]);
    let h = Harness::new(&connector("https://api.twilio.com"));
    assert_eq!(h.call(inbound(&body)).await.status, StatusCode::OK);
    assert_eq!(
        h.sink.accepted()[0].1.content.searchable_text(),
        Some(text.as_str())
    );
}

#[tokio::test]
async fn forged_or_missing_signatures_are_refused_and_nothing_is_accepted() {
    let h = Harness::new(&connector("https://api.twilio.com"));
    let body = fixture("twilio/inbound-sms.form");
    // Signed for the URL the process sees rather than the configured public one.
    let local = twilio_request(
        "http://127.0.0.1:8080/sms/main",
        TOKEN,
        "/inbound",
        &body,
        None,
    );
    let unsigned = Request::post("/inbound")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body.clone()))
        .unwrap_or_default();
    let tampered = {
        let good = inbound(&body);
        let signature = good.headers()["x-twilio-signature"]
            .to_str()
            .unwrap_or_default()
            .to_owned();
        twilio_request(
            PUBLIC_URL,
            TOKEN,
            "/inbound",
            &body.replace("Where", "Who"),
            Some(&signature),
        )
    };
    for (name, request) in [
        ("local url", local),
        ("unsigned", unsigned),
        ("tampered", tampered),
    ] {
        let answer = h.call(request).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{name}");
        assert_eq!(
            answer.rejected.map(|r| r.reason),
            Some(RejectReason::BadSignature),
            "{name}"
        );
        assert!(!answer.body.contains(TOKEN));
    }
    assert!(h.sink.accepted().is_empty());
    assert!(h.sink.reported().is_empty());
}

#[tokio::test]
async fn replies_go_through_the_messages_api_with_basic_auth_and_status_callback() {
    let fake = FakeTwilio::start(ACCOUNT, TOKEN).await;
    let sms = connector(&fake.base);
    let (r, recipient) = reply(
        "main",
        "+8613812345678",
        Content::text("Your parcel is on its way"),
    );
    let delivered = sms.deliver(&r, &recipient).await;
    let calls = fake.calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.account, ACCOUNT);
    assert_eq!(call.get("To"), Some("+8613812345678"));
    assert_eq!(call.get("From"), Some("+14155550100"));
    assert_eq!(call.get("Body"), Some("Your parcel is on its way"));
    let callback = call.get("StatusCallback").unwrap_or_default();
    assert_eq!(callback, format!("{PUBLIC_URL}/status?reply_id={}", r.id));
    assert_eq!(
        delivered,
        Ok(switchboard_sdk::Delivered {
            channel_message_id: Some(format!("SM{:032}", 1))
        })
    );
}

#[tokio::test]
async fn a_long_reply_is_one_twilio_message() {
    let fake = FakeTwilio::start(ACCOUNT, TOKEN).await;
    let sms = connector(&fake.base);
    let text = "Your claim has been registered. ".repeat(12);
    let (r, recipient) = reply("main", "+14155550123", Content::text(text.clone()));
    assert!(sms.deliver(&r, &recipient).await.is_ok());
    let calls = fake.calls();
    assert_eq!(calls.len(), 1, "twilio concatenates; we send once");
    assert_eq!(calls[0].get("Body"), Some(text.as_str()));

    let too_long = "x".repeat(1601);
    let (r, recipient) = reply("main", "+14155550123", Content::text(too_long));
    assert!(matches!(
        sms.deliver(&r, &recipient).await,
        Err(DeliveryError::Permanent { code, .. }) if code == "body_too_long"
    ));
    assert_eq!(fake.calls().len(), 1);
}

#[tokio::test]
async fn a_wrong_token_is_a_permanent_authentication_failure() {
    let fake = FakeTwilio::start(ACCOUNT, "the-real-token").await;
    let sms = connector(&fake.base);
    let (r, recipient) = reply("main", "+14155550123", Content::text("hi"));
    let got = sms.deliver(&r, &recipient).await;
    assert!(
        matches!(&got, Err(DeliveryError::Permanent { code, .. }) if code == "20003"),
        "{got:?}"
    );
    assert!(
        fake.calls()[0]
            .authorization
            .as_deref()
            .is_some_and(|a| a.starts_with("Basic "))
    );
}

#[tokio::test]
async fn twilio_errors_are_classified() {
    let fake = FakeTwilio::start(ACCOUNT, TOKEN).await;
    let sms = connector(&fake.base);
    type Check = Box<dyn Fn(&DeliveryError) -> bool>;
    let cases: Vec<(TwilioMode, Check)> = vec![
        (
            TwilioMode::Error(429, 20429, Some(7)),
            Box::new(|e| {
                *e == DeliveryError::RateLimited {
                    retry_after: Some(Duration::from_secs(7)),
                }
            }),
        ),
        (
            TwilioMode::Error(400, 20429, None),
            Box::new(|e| matches!(e, DeliveryError::RateLimited { .. })),
        ),
        (
            TwilioMode::Error(429, 0, None),
            Box::new(|e| matches!(e, DeliveryError::RateLimited { .. })),
        ),
        (
            TwilioMode::Error(400, 21211, None),
            Box::new(|e| matches!(e, DeliveryError::Permanent { code, .. } if code == "21211")),
        ),
        (
            TwilioMode::Error(400, 30001, None),
            Box::new(
                |e| matches!(e, DeliveryError::Retryable { code: Some(c), .. } if c == "30001"),
            ),
        ),
        (
            TwilioMode::Error(503, 20500, None),
            Box::new(|e| matches!(e, DeliveryError::Retryable { .. })),
        ),
        (
            TwilioMode::Garbage(502),
            Box::new(|e| matches!(e, DeliveryError::Retryable { .. })),
        ),
    ];
    for (mode, check) in cases {
        fake.set(mode.clone());
        let (r, recipient) = reply("main", "+14155550123", Content::text("hi"));
        let got = sms.deliver(&r, &recipient).await;
        match got {
            Err(err) => assert!(check(&err), "{mode:?} gave {err:?}"),
            Ok(ok) => panic!("{mode:?} gave {ok:?}"),
        }
    }
}

#[tokio::test]
async fn unsubscribed_recipient_error_21610_is_permanent_and_remembered() {
    let fake = FakeTwilio::start(ACCOUNT, TOKEN).await;
    let sms = connector(&fake.base);
    fake.set(TwilioMode::Error(400, 21610, None));
    let (first, recipient) = reply("main", "+14155550123", Content::text("hi"));
    assert!(matches!(
        sms.deliver(&first, &recipient).await,
        Err(DeliveryError::Permanent { code, .. }) if code == "21610"
    ));
    fake.set(TwilioMode::Created);
    let (second, recipient) = reply("main", "+14155550123", Content::text("hi again"));
    assert!(matches!(
        sms.deliver(&second, &recipient).await,
        Err(DeliveryError::Permanent { code, .. }) if code == "opted_out"
    ));
    assert_eq!(
        fake.calls().len(),
        1,
        "the second reply never reached twilio"
    );
}

#[tokio::test]
async fn stop_refuses_later_replies_and_start_allows_them_again() {
    let fake = FakeTwilio::start(ACCOUNT, TOKEN).await;
    let sms = connector(&fake.base);
    let h = Harness::new(&sms);
    let text_from = |sid: &str, body: &str| {
        encode(&[
            ("MessageSid", sid),
            ("From", "+8613812345678"),
            ("To", "+14155550100"),
            ("Body", body),
        ])
    };
    let answer = h.call(inbound(&text_from("SM01", " stop "))).await;
    assert_eq!(answer.status, StatusCode::OK);
    // The keyword is still a message agents see.
    assert_eq!(h.sink.accepted().len(), 1);
    assert_eq!(
        h.sink.accepted()[0].1.content.searchable_text(),
        Some(" stop ")
    );

    let (r, recipient) = reply(
        "main",
        "+8613812345678",
        Content::text("sorry to see you go"),
    );
    let refused = sms.deliver(&r, &recipient).await;
    assert!(
        matches!(&refused, Err(DeliveryError::Permanent { code, .. }) if code == "opted_out"),
        "{refused:?}"
    );
    assert!(fake.calls().is_empty());

    // Another number is not affected.
    let (r, other) = reply("main", "+8613900000000", Content::text("hello"));
    assert!(sms.deliver(&r, &other).await.is_ok());

    assert_eq!(
        h.call(inbound(&text_from("SM02", "START"))).await.status,
        StatusCode::OK
    );
    let (r, recipient) = reply("main", "+8613812345678", Content::text("welcome back"));
    assert!(sms.deliver(&r, &recipient).await.is_ok());
    assert_eq!(fake.calls().len(), 2);

    // 退订 (Chinese "unsubscribe") works the same way.
    assert_eq!(
        h.call(inbound(&text_from("SM03", "退订"))).await.status,
        StatusCode::OK
    );
    let (r, recipient) = reply("main", "+8613812345678", Content::text("?"));
    assert!(sms.deliver(&r, &recipient).await.is_err());
}

#[tokio::test]
async fn twilio_advanced_opt_out_type_counts_too() {
    let fake = FakeTwilio::start(ACCOUNT, TOKEN).await;
    let sms = connector(&fake.base);
    let h = Harness::new(&sms);
    let body = encode(&[
        ("MessageSid", "SM04"),
        ("From", "+14155550123"),
        ("Body", "arrêt"),
        ("OptOutType", "STOP"),
    ]);
    assert_eq!(h.call(inbound(&body)).await.status, StatusCode::OK);
    let (r, recipient) = reply("main", "+14155550123", Content::text("x"));
    assert!(matches!(
        sms.deliver(&r, &recipient).await,
        Err(DeliveryError::Permanent { code, .. }) if code == "opted_out"
    ));
}

#[tokio::test]
async fn status_callbacks_are_reported_with_the_reply_id() {
    let fake = FakeTwilio::start(ACCOUNT, TOKEN).await;
    let sms = connector(&fake.base);
    let h = Harness::new(&sms);
    let (r, recipient) = reply("main", "+8613812345678", Content::text("on its way"));
    let delivered = sms.deliver(&r, &recipient).await.unwrap_or_default();
    let callback = fake.calls()[0]
        .get("StatusCallback")
        .unwrap_or_default()
        .to_owned();
    // Twilio POSTs to exactly the StatusCallback URL, signing it with the query.
    let path_and_query = callback.trim_start_matches(PUBLIC_URL).to_owned();
    let body = fixture("twilio/status-delivered.form");
    let answer = h
        .call(twilio_request(
            PUBLIC_URL,
            TOKEN,
            &path_and_query,
            &body,
            None,
        ))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let reported = h.sink.reported();
    assert_eq!(reported.len(), 1);
    let event = &reported[0].1;
    assert_eq!(event.kind, "delivery.status");
    assert_eq!(event.reply_id.as_deref(), Some(r.id.as_str()));
    assert_eq!(
        event.channel_message_id.as_deref(),
        Some("SM00000000000000000000000000000042")
    );
    assert_eq!(event.data["status"], "delivered");
    assert_eq!(event.data["error_code"], Value::Null);
    assert_eq!(
        event.conversation_id.as_deref(),
        Some("sms:main:+8613812345678")
    );
    assert!(delivered.channel_message_id.is_some());
    assert!(
        h.sink.accepted().is_empty(),
        "receipts are events, not messages"
    );

    let body = fixture("twilio/status-undelivered.form");
    let answer = h
        .call(twilio_request(
            PUBLIC_URL,
            TOKEN,
            "/status?reply_id=r-9",
            &body,
            None,
        ))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let event = &h.sink.reported()[1].1;
    assert_eq!(event.data["status"], "undelivered");
    assert_eq!(event.data["error_code"], "30003");
    assert_eq!(event.reply_id.as_deref(), Some("r-9"));
    assert_eq!(event.retryable, Some(true));

    // The reply id is part of what Twilio signed: changing it breaks the signature.
    let signed = twilio_request(PUBLIC_URL, TOKEN, "/status?reply_id=r-9", &body, None);
    let signature = signed.headers()["x-twilio-signature"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    let moved = twilio_request(
        PUBLIC_URL,
        TOKEN,
        "/status?reply_id=r-10",
        &body,
        Some(&signature),
    );
    assert_eq!(h.call(moved).await.status, StatusCode::FORBIDDEN);
    assert_eq!(h.sink.reported().len(), 2);
}

#[tokio::test]
async fn quiet_hours_hold_non_urgent_replies_until_they_end() {
    let fake = FakeTwilio::start(ACCOUNT, TOKEN).await;
    let quiet = "[quiet_hours]\nutc_offset = \"+08:00\"\nstart = \"21:00\"\nend = \"08:00\"\n";
    // Tables must come after the top-level keys, so the quiet hours go last.
    let text = format!(
        r#"
        id = "main"
        provider = "twilio"
        public_url = "{PUBLIC_URL}"
        [twilio]
        account_sid = "{ACCOUNT}"
        auth_token = "{TOKEN}"
        from = "+14155550100"
        api_base = "{}"
        {quiet}
        "#,
        fake.base
    );
    let config: SmsConfig = toml::from_str(&text).unwrap_or_else(|err| panic!("{err}"));
    // 23:30 local: quiet for another 8.5 hours.
    let sms = SmsConnector::new(&config, &ConnectorContext::in_memory())
        .unwrap_or_else(|err| panic!("{:?}", err.0))
        .with_clock(fixed_clock(datetime!(2024-05-01 15:30 UTC)));
    let (r, recipient) = reply("main", "+8613812345678", Content::text("good night"));
    let held = sms.deliver(&r, &recipient).await;
    assert_eq!(
        held,
        Err(DeliveryError::Retryable {
            code: Some("quiet_hours".into()),
            text: "quiet hours: held until they end".into(),
            retry_after: Some(Duration::from_secs(8 * 3600 + 1800)),
        })
    );
    assert!(fake.calls().is_empty());

    let mut extra = Map::new();
    extra.insert("urgent".into(), Value::Bool(true));
    let (r, recipient) = reply(
        "main",
        "+8613812345678",
        Content::Text {
            text: "your parcel is at the door".into(),
            extra,
        },
    );
    assert!(sms.deliver(&r, &recipient).await.is_ok(), "urgent goes out");

    let day = sms.with_clock(fixed_clock(datetime!(2024-05-01 02:00 UTC)));
    let (r, recipient) = reply("main", "+8613812345678", Content::text("good morning"));
    assert!(day.deliver(&r, &recipient).await.is_ok());
    assert_eq!(fake.calls().len(), 2);
}

#[tokio::test]
async fn non_phone_recipients_and_uncarriable_content_are_permanent() {
    let fake = FakeTwilio::start(ACCOUNT, TOKEN).await;
    let sms = connector(&fake.base);
    let (r, recipient) = reply("main", "alice", Content::text("hi"));
    assert!(matches!(
        sms.deliver(&r, &recipient).await,
        Err(DeliveryError::Permanent { code, .. }) if code == "invalid_recipient"
    ));
    let (r, recipient) = reply(
        "main",
        "+14155550123",
        Content::Call {
            event: "ringing".into(),
            caller: None,
            data: Map::new(),
        },
    );
    assert!(matches!(
        sms.deliver(&r, &recipient).await,
        Err(DeliveryError::Permanent { code, .. }) if code == "unsupported_content"
    ));
    let (r, recipient) = reply(
        "main",
        "+14155550123",
        Content::Image {
            url: Some("https://cdn.example.com/label.png".into()),
            media_id: None,
            caption: Some("your label".into()),
            extra: Map::new(),
        },
    );
    assert!(sms.deliver(&r, &recipient).await.is_ok());
    let calls = fake.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].get("MediaUrl"),
        Some("https://cdn.example.com/label.png")
    );
    assert_eq!(calls[0].get("Body"), Some("your label"));
}

#[tokio::test]
async fn the_pipeline_refusing_is_never_answered_with_success() {
    let h = Harness::new(&connector("https://api.twilio.com"));
    h.sink
        .refuse_with(Some(switchboard_sdk::AcceptError::Unavailable(
            "spool full".into(),
        )));
    let answer = h.call(inbound(&fixture("twilio/inbound-mms.form"))).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let answer = h
        .call(twilio_request(
            PUBLIC_URL,
            TOKEN,
            "/status",
            &fixture("twilio/status-delivered.form"),
            None,
        ))
        .await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
}
