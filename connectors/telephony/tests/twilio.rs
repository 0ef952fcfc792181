//! The Twilio voice profile inside the crate: signed webhooks walk the IVR, answers are
//! TwiML (parsed back here), calls and voicemails reach the pipeline.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::fixture;
use quick_xml::Reader;
use quick_xml::events::Event as XmlEvent;
use switchboard_connector_telephony::{TelephonyConfig, TelephonyConnector};
use switchboard_sdk::schedule::fixed_clock;
use switchboard_sdk::testing::{
    Answer, ComplianceFixture, Harness, check_connector, twilio_request,
};
use switchboard_sdk::time::OffsetDateTime;
use switchboard_sdk::{
    AcceptError, Connector, Content, ConversationId, DeliveryError, Recipient, RejectReason, Reply,
};
use time::macros::datetime;

const PUBLIC_URL: &str = "https://sb.example.com/telephony/hotline";
const TOKEN: &str = "twilio-voice-token";
const CALL: &str = "CA0123456789abcdef0123456789abcdef";

// Monday 2024-05-06: 02:00 UTC is 10:00 in +08:00 (open), 13:00 UTC is 21:00 (closed).
const OPEN: OffsetDateTime = datetime!(2024-05-06 02:00 UTC);
const CLOSED: OffsetDateTime = datetime!(2024-05-06 13:00 UTC);

fn config() -> TelephonyConfig {
    let text = format!(
        r#"
        id = "hotline"
        provider = "twilio"
        public_url = "{PUBLIC_URL}"
        languages = ["zh-CN", "en"]
        voice = "alice"

        [twilio]
        auth_token = "{TOKEN}"

        [business_hours]
        utc_offset = "+08:00"
        days = ["mon", "tue", "wed", "thu", "fri"]
        open = "09:00"
        close = "18:00"

        [[menu]]
        digit = "1"
        skill = "tracking"
        prompt = {{ "zh-CN" = "查询快递请按1。", en = "For parcel tracking, press 1." }}
        keywords = ["tracking", "parcel", "查件"]
        ask_tracking_number = true
        handoff = {{ enqueue = "tracking" }}

        [[menu]]
        digit = "2"
        skill = "claims"
        prompt = {{ "zh-CN" = "理赔请按2。", en = "For claims, press 2." }}
        keywords = ["claim", "理赔"]
        handoff = {{ enqueue = "claims" }}

        [[menu]]
        digit = "3"
        skill = "sales"
        prompt = {{ "zh-CN" = "业务咨询请按3。", en = "For sales, press 3." }}
        handoff = {{ sip = "sip:sales@pbx.example.com" }}
        "#
    );
    toml::from_str(&text).unwrap_or_else(|err| panic!("config: {err}"))
}

fn line(at: OffsetDateTime) -> TelephonyConnector {
    TelephonyConnector::new(&config())
        .unwrap_or_else(|err| panic!("build: {:?}", err.0))
        .with_clock(fixed_clock(at))
}

fn post(path_and_query: &str, body: &str) -> Request<Body> {
    twilio_request(PUBLIC_URL, TOKEN, path_and_query, body, None)
}

fn digits(d: &str) -> String {
    fixture("twilio/gather-digit.form").replace("DIGITS", d)
}

/// A TwiML element, parsed back for assertions.
#[derive(Debug, Default, Clone)]
struct El {
    name: String,
    attrs: BTreeMap<String, String>,
    text: String,
    children: Vec<El>,
}

impl El {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.get(name).map(String::as_str)
    }
    fn names(&self) -> Vec<&str> {
        self.children.iter().map(|c| c.name.as_str()).collect()
    }
}

/// Parses a TwiML answer into its `<Response>` element, failing on malformed XML.
fn twiml(answer: &Answer) -> El {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let content_type = answer.headers["content-type"].to_str().unwrap_or_default();
    assert!(content_type.starts_with("text/xml"), "{content_type}");
    let mut reader = Reader::from_str(&answer.body);
    let mut stack: Vec<El> = vec![El::default()];
    loop {
        match reader.read_event() {
            Ok(XmlEvent::Start(e)) => stack.push(element(&e)),
            Ok(XmlEvent::Empty(e)) => {
                let el = element(&e);
                if let Some(top) = stack.last_mut() {
                    top.children.push(el);
                }
            }
            Ok(XmlEvent::Text(t)) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.into_inner());
                }
            }
            Ok(XmlEvent::GeneralRef(r)) => {
                let name = r.into_inner().into_owned();
                let ch = match name.as_str() {
                    "amp" => "&",
                    "lt" => "<",
                    "gt" => ">",
                    "quot" => "\"",
                    "apos" => "'",
                    other => panic!("unexpected entity {other}"),
                };
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(ch);
                }
            }
            Ok(XmlEvent::End(_)) => {
                let done = stack.pop().unwrap_or_default();
                if let Some(top) = stack.last_mut() {
                    top.children.push(done);
                }
            }
            Ok(XmlEvent::Eof) => break,
            Ok(_) => {}
            Err(err) => panic!("malformed twiml: {err}\n{}", answer.body),
        }
    }
    let root = stack.pop().unwrap_or_default();
    assert_eq!(root.children.len(), 1, "{}", answer.body);
    let response = root.children[0].clone();
    assert_eq!(response.name, "Response");
    response
}

fn element(e: &quick_xml::events::BytesStart) -> El {
    let mut attrs = BTreeMap::new();
    for attr in e.attributes().flatten() {
        let key = attr.key.as_ref().to_owned();
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .unwrap_or_default()
            .into_owned();
        attrs.insert(key, value);
    }
    El {
        name: e.name().as_ref().to_owned(),
        attrs,
        ..El::default()
    }
}

struct VoiceFixture;

impl ComplianceFixture for VoiceFixture {
    fn valid_request(&self) -> Request<Body> {
        post("/gather?step=menu&attempt=1", &digits("2"))
    }
    fn forged_request(&self) -> Request<Body> {
        twilio_request(
            PUBLIC_URL,
            "wrong",
            "/gather?step=menu&attempt=1",
            &digits("2"),
            None,
        )
    }
    fn malformed_request(&self) -> Request<Body> {
        post(
            "/gather?step=menu&attempt=1",
            "Digits=2&From=%2B8613812345678",
        )
    }
    fn stale_request(&self) -> Option<Request<Body>> {
        None
    }
}

#[tokio::test]
async fn passes_the_compliance_harness() {
    check_connector(Arc::new(line(OPEN)), &VoiceFixture).await;
}

#[tokio::test]
async fn an_incoming_call_hears_the_menu_in_both_languages() {
    let h = Harness::new(&line(OPEN));
    let answer = h
        .call(post("/incoming", &fixture("twilio/incoming-call.form")))
        .await;
    let response = twiml(&answer);
    assert_eq!(response.names(), ["Gather", "Say", "Say", "Redirect"]);
    let gather = &response.children[0];
    assert_eq!(gather.attr("input"), Some("dtmf speech"));
    assert_eq!(gather.attr("numDigits"), Some("1"));
    assert_eq!(
        gather.attr("action"),
        Some("https://sb.example.com/telephony/hotline/gather?step=menu&attempt=1")
    );
    assert_eq!(gather.attr("method"), Some("POST"));
    let says: Vec<(Option<&str>, &str)> = gather
        .children
        .iter()
        .map(|s| (s.attr("language"), s.text.as_str()))
        .collect();
    assert_eq!(
        says,
        [
            (Some("zh-CN"), "您好，感谢致电。"),
            (Some("zh-CN"), "查询快递请按1。"),
            (Some("zh-CN"), "理赔请按2。"),
            (Some("zh-CN"), "业务咨询请按3。"),
            (Some("en"), "Hello, thank you for calling."),
            (Some("en"), "For parcel tracking, press 1."),
            (Some("en"), "For claims, press 2."),
            (Some("en"), "For sales, press 3."),
        ]
    );
    assert!(
        gather
            .children
            .iter()
            .all(|s| s.attr("voice") == Some("alice"))
    );
    assert_eq!(
        response.children[3].text,
        "https://sb.example.com/telephony/hotline/incoming?attempt=2"
    );
    assert!(
        h.sink.accepted().is_empty(),
        "the menu itself accepts nothing"
    );
}

#[tokio::test]
async fn pressing_2_enqueues_to_claims_and_screen_pops_the_caller() {
    let h = Harness::new(&line(OPEN));
    let answer = h
        .call(post("/gather?step=menu&attempt=1", &digits("2")))
        .await;
    let response = twiml(&answer);
    assert_eq!(response.names(), ["Say", "Say", "Enqueue"]);
    let enqueue = &response.children[2];
    assert_eq!(enqueue.text, "claims");
    assert_eq!(
        enqueue.attr("action"),
        Some("https://sb.example.com/telephony/hotline/status?event=handoff&skill=claims")
    );
    let accepted = h.sink.accepted();
    assert_eq!(accepted.len(), 1);
    let (channel, message) = &accepted[0];
    assert_eq!(channel.kind, "telephony");
    // The same E.164 user id the SMS connector uses, so a caller's texts and calls meet.
    assert_eq!(message.channel_user_id, "+8613812345678");
    assert_eq!(message.phone.as_deref(), Some("+8613812345678"));
    assert_eq!(message.dedupe_key, format!("{CALL}:ringing"));
    match &message.content {
        Content::Call {
            event,
            caller,
            data,
        } => {
            assert_eq!(event, "ringing");
            assert_eq!(caller.as_deref(), Some("+8613812345678"));
            assert_eq!(data["skill"], "claims");
            assert_eq!(data["call_sid"], CALL);
            assert_eq!(data["chosen_by"], "dtmf");
            assert!(data.get("tracking_number").is_none());
        }
        other => panic!("expected a call, got {other:?}"),
    }
}

#[tokio::test]
async fn the_tracking_digit_asks_for_the_number_and_carries_it() {
    let h = Harness::new(&line(OPEN));
    let answer = h
        .call(post("/gather?step=menu&attempt=1", &digits("1")))
        .await;
    let response = twiml(&answer);
    assert_eq!(response.names(), ["Gather"]);
    let gather = &response.children[0];
    assert_eq!(gather.attr("input"), Some("dtmf"));
    assert_eq!(gather.attr("finishOnKey"), Some("#"));
    assert_eq!(gather.attr("actionOnEmptyResult"), Some("true"));
    let action = gather.attr("action").unwrap_or_default().to_owned();
    assert_eq!(
        action,
        "https://sb.example.com/telephony/hotline/gather?step=tracking&choice=1"
    );
    assert_eq!(gather.children[0].attr("language"), Some("zh-CN"));
    assert!(
        h.sink.accepted().is_empty(),
        "not handed over before the number"
    );

    let path = action.trim_start_matches(PUBLIC_URL);
    let answer = h
        .call(post(path, &fixture("twilio/gather-tracking.form")))
        .await;
    let response = twiml(&answer);
    assert_eq!(
        response.children.last().map(|e| e.text.as_str()),
        Some("tracking")
    );
    let accepted = h.sink.accepted();
    assert_eq!(accepted.len(), 1);
    match &accepted[0].1.content {
        Content::Call { data, .. } => {
            assert_eq!(data["skill"], "tracking");
            assert_eq!(data["tracking_number"], "7312345678901");
        }
        other => panic!("expected a call, got {other:?}"),
    }

    // Nothing typed: the caller still reaches an agent, without a number.
    let h = Harness::new(&line(OPEN));
    let empty = digits("").replace("&Digits=", "");
    let answer = h.call(post(path, &empty)).await;
    assert_eq!(twiml(&answer).names().last(), Some(&"Enqueue"));
    match &h.sink.accepted()[0].1.content {
        Content::Call { data, .. } => assert!(data.get("tracking_number").is_none()),
        other => panic!("expected a call, got {other:?}"),
    }
}

#[tokio::test]
async fn speech_chooses_by_keyword() {
    let h = Harness::new(&line(OPEN));
    let answer = h
        .call(post(
            "/gather?step=menu&attempt=1",
            &fixture("twilio/gather-speech.form"),
        ))
        .await;
    assert_eq!(
        twiml(&answer).children.last().map(|e| e.text.as_str()),
        Some("claims")
    );
    match &h.sink.accepted()[0].1.content {
        Content::Call { data, .. } => {
            assert_eq!(data["chosen_by"], "speech");
            assert_eq!(data["speech_result"], "I would like to file a claim.");
        }
        other => panic!("expected a call, got {other:?}"),
    }
}

#[tokio::test]
async fn a_wrong_key_offers_the_menu_again_then_says_goodbye() {
    let h = Harness::new(&line(OPEN));
    let answer = h
        .call(post("/gather?step=menu&attempt=1", &digits("9")))
        .await;
    let response = twiml(&answer);
    assert_eq!(response.names(), ["Say", "Say", "Redirect"]);
    assert_eq!(
        response.children[1].text,
        "Sorry, that is not a valid choice."
    );
    assert_eq!(
        response.children[2].text,
        "https://sb.example.com/telephony/hotline/incoming?attempt=2"
    );
    let answer = h
        .call(post("/gather?step=menu&attempt=3", &digits("9")))
        .await;
    assert_eq!(twiml(&answer).names().last(), Some(&"Hangup"));
    assert!(h.sink.accepted().is_empty());
}

#[tokio::test]
async fn a_sip_entry_dials_the_pbx() {
    let h = Harness::new(&line(OPEN));
    let answer = h
        .call(post("/gather?step=menu&attempt=1", &digits("3")))
        .await;
    let response = twiml(&answer);
    let dial = &response.children[2];
    assert_eq!(dial.name, "Dial");
    assert_eq!(dial.children[0].name, "Sip");
    assert_eq!(dial.children[0].text, "sip:sales@pbx.example.com");
}

#[tokio::test]
async fn out_of_hours_callers_can_leave_a_voicemail() {
    let h = Harness::new(&line(CLOSED));
    let answer = h
        .call(post("/incoming", &fixture("twilio/incoming-call.form")))
        .await;
    let response = twiml(&answer);
    assert_eq!(
        response.names(),
        ["Say", "Say", "Say", "Say", "Record", "Say", "Say", "Hangup"]
    );
    assert_eq!(response.children[0].text, "您好，现在是非工作时间。");
    assert_eq!(response.children[1].text, "Hello, we are currently closed.");
    let record = &response.children[4];
    assert_eq!(record.attr("transcribe"), Some("true"));
    assert_eq!(record.attr("maxLength"), Some("120"));
    let action = record.attr("action").unwrap_or_default().to_owned();
    let transcribe = record
        .attr("transcribeCallback")
        .unwrap_or_default()
        .to_owned();
    assert!(h.sink.accepted().is_empty());

    let answer = h
        .call(post(
            action.trim_start_matches(PUBLIC_URL),
            &fixture("twilio/record-voicemail.form"),
        ))
        .await;
    let response = twiml(&answer);
    assert_eq!(response.names(), ["Say", "Say", "Hangup"]);
    let accepted = h.sink.accepted();
    assert_eq!(accepted.len(), 1);
    let message = &accepted[0].1;
    assert_eq!(message.channel_user_id, "+8613812345678");
    assert_eq!(message.dedupe_key, format!("{CALL}:voicemail"));
    match &message.content {
        Content::Call { event, data, .. } => {
            assert_eq!(event, "voicemail");
            assert_eq!(
                data["recording_url"],
                "https://api.twilio.com/2010-04-01/Accounts/AC00000000000000000000000000000001/Recordings/RE0123456789abcdef0123456789abcdef"
            );
            assert_eq!(data["duration"], 17);
        }
        other => panic!("expected a call, got {other:?}"),
    }

    // The transcription follows as text, so classification and entities work on it.
    let answer = h
        .call(post(
            transcribe.trim_start_matches(PUBLIC_URL),
            &fixture("twilio/transcription.form"),
        ))
        .await;
    assert_eq!(twiml(&answer).children.len(), 0);
    let accepted = h.sink.accepted();
    assert_eq!(accepted.len(), 2);
    let message = &accepted[1].1;
    assert_eq!(message.dedupe_key, format!("{CALL}:transcription"));
    assert_eq!(
        message.content.searchable_text(),
        Some("Hi my parcel 7312345678901 never arrived please call me back")
    );
    match &message.content {
        Content::Text { extra, .. } => {
            assert_eq!(extra["source"], "voicemail_transcription");
            assert_eq!(extra["call_sid"], CALL);
        }
        other => panic!("expected text, got {other:?}"),
    }
}

#[tokio::test]
async fn call_statuses_become_call_events() {
    let h = Harness::new(&line(OPEN));
    let cases = [
        ("in-progress", "call.answered"),
        ("completed", "call.completed"),
        ("no-answer", "call.no_answer"),
        ("busy", "call.busy"),
        ("failed", "call.failed"),
    ];
    for (status, kind) in cases {
        let body = fixture("twilio/status-completed.form").replace("STATUS", status);
        let answer = h.call(post("/status", &body)).await;
        assert_eq!(twiml(&answer).children.len(), 0, "{status}");
        let reported = h.sink.reported();
        let event = &reported
            .last()
            .map(|(_, e)| e.clone())
            .unwrap_or_else(|| panic!("{status}"));
        assert_eq!(event.kind, kind);
        assert_eq!(event.data["status"], status);
        assert_eq!(event.data["call_sid"], CALL);
        assert_eq!(event.data["duration"], 42);
        assert_eq!(
            event.conversation_id.as_deref(),
            Some("telephony:hotline:+8613812345678")
        );
    }
    assert_eq!(h.sink.reported().len(), 5);
    assert!(
        h.sink.accepted().is_empty(),
        "call events are events, not messages"
    );

    let body = fixture("twilio/status-completed.form").replace("STATUS", "exploded");
    let answer = h.call(post("/status", &body)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        answer.rejected.map(|r| r.reason),
        Some(RejectReason::Malformed)
    );
}

#[tokio::test]
async fn a_full_queue_offers_voicemail_and_reports_the_handoff() {
    let h = Harness::new(&line(OPEN));
    let path = "/status?event=handoff&skill=claims";
    let body = fixture("twilio/enqueue-action.form").replace("RESULT", "queue-full");
    let response = twiml(&h.call(post(path, &body)).await);
    assert!(
        response.names().contains(&"Record"),
        "{:?}",
        response.names()
    );
    assert_eq!(response.children[0].text, "对不起，目前没有客服可以接听。");
    let event = &h.sink.reported()[0].1;
    assert_eq!(event.kind, "call.handoff");
    assert_eq!(event.data["result"], "queue-full");
    assert_eq!(event.data["skill"], "claims");

    let body = fixture("twilio/enqueue-action.form").replace("RESULT", "bridged");
    let response = twiml(&h.call(post(path, &body)).await);
    assert_eq!(response.names(), ["Hangup"]);
}

#[tokio::test]
async fn forged_or_missing_signatures_are_refused() {
    let h = Harness::new(&line(OPEN));
    let body = digits("2");
    let valid = post("/gather?step=menu&attempt=1", &body);
    let signature = valid.headers()["x-twilio-signature"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    let requests = [
        // The signed URL includes the query: moving the step breaks it.
        twilio_request(
            PUBLIC_URL,
            TOKEN,
            "/gather?step=tracking&choice=2",
            &body,
            Some(&signature),
        ),
        twilio_request(
            PUBLIC_URL,
            TOKEN,
            "/gather?step=menu&attempt=1",
            &digits("1"),
            Some(&signature),
        ),
        Request::post("/incoming")
            .body(Body::from(fixture("twilio/incoming-call.form")))
            .unwrap_or_default(),
        twilio_request(
            "http://localhost:3000/telephony/hotline",
            TOKEN,
            "/status",
            &body,
            None,
        ),
    ];
    for request in requests {
        let answer = h.call(request).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
        assert_eq!(
            answer.rejected.map(|r| r.reason),
            Some(RejectReason::BadSignature)
        );
    }
    assert!(h.sink.accepted().is_empty());
    assert!(h.sink.reported().is_empty());
}

#[tokio::test]
async fn a_pipeline_refusal_is_never_answered_with_twiml() {
    let h = Harness::new(&line(OPEN));
    h.sink
        .refuse_with(Some(AcceptError::Unavailable("spool full".into())));
    let answer = h
        .call(post("/gather?step=menu&attempt=1", &digits("2")))
        .await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!answer.body.contains("Enqueue"));
    let answer = h
        .call(post(
            "/status?event=voicemail",
            &fixture("twilio/record-voicemail.form"),
        ))
        .await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn replies_cannot_be_delivered_to_a_call() {
    let line = line(OPEN);
    let conversation = ConversationId::new("telephony", "hotline", "+8613812345678");
    let reply = Reply {
        schema: "switchboard.reply.v1".into(),
        id: "r-1".into(),
        conversation_id: conversation.to_string(),
        content: Content::text("we called you back"),
        in_reply_to: None,
        agent: None,
    };
    let got = line.deliver(&reply, &Recipient { conversation }).await;
    assert!(
        matches!(&got, Err(DeliveryError::Permanent { code, .. }) if code == "unsupported"),
        "{got:?}"
    );
    assert!(!got.is_err_and(|e| e.is_retryable()));
}

#[tokio::test]
async fn anonymous_callers_get_a_per_call_conversation() {
    let h = Harness::new(&line(OPEN));
    let body = digits("2")
        .replace("From=%2B8613812345678", "From=anonymous")
        .replace("Caller=%2B8613812345678", "Caller=anonymous");
    let answer = h.call(post("/gather?step=menu&attempt=1", &body)).await;
    assert_eq!(answer.status, StatusCode::OK);
    let message = &h.sink.accepted()[0].1;
    assert_eq!(message.channel_user_id, format!("anonymous-{CALL}"));
    assert_eq!(message.phone, None);
    assert!(matches!(
        &message.content,
        Content::Call { caller: None, .. }
    ));
}
