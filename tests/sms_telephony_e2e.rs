//! The SMS and telephony channels end to end: the real binary, real RabbitMQ, and local
//! fakes of the provider APIs (Twilio's Messages API) on 127.0.0.1:0.
//!
//! The daemon listens on port 0, so the URL Twilio would sign cannot be known before it
//! starts. The connectors are therefore configured with placeholder public URLs under
//! `https://sb.test`, as when running behind a TLS-terminating proxy: requests are signed
//! over the public URL and sent to the daemon's real address.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::*;
use hmac::{Hmac, Mac};
use lapin::{Channel, Connection};
use serde_json::{Value, json};
use sha2::Sha256;
use switchboard_connector_sms::twilio_signature;
use time::{OffsetDateTime, UtcOffset, Weekday};

const WAIT: Duration = Duration::from_secs(20);

/// Where the proxy in front of the daemon is reached by the providers.
const PUBLIC_ORIGIN: &str = "https://sb.test";
const SMS_PUBLIC_URL: &str = "https://sb.test/sms/main";
const GATEWAY_PUBLIC_URL: &str = "https://sb.test/sms/gw";
const HOTLINE_PUBLIC_URL: &str = "https://sb.test/telephony/hotline";
const AFTERHOURS_PUBLIC_URL: &str = "https://sb.test/telephony/afterhours";

/// Made-up Twilio credentials, shaped like real ones.
const ACCOUNT_SID: &str = "AC00000000000000000000000000000001";
const SMS_AUTH_TOKEN: &str = "5f1e2d3c4b5a69788796a5b4c3d2e1f0";
const VOICE_AUTH_TOKEN: &str = "0f9e8d7c6b5a49382716a5b4c3d2e1f0";
/// `Basic base64("{ACCOUNT_SID}:{SMS_AUTH_TOKEN}")`, computed with coreutils'
/// `printf '%s' "$ACCOUNT_SID:$SMS_AUTH_TOKEN" | base64 -w0`.
const SMS_BASIC_AUTH: &str = "Basic QUMwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMTo1ZjFlMmQzYzRiNWE2OTc4ODc5NmE1YjRjM2QyZTFmMA==";
const GATEWAY_KEY: &str = "gateway-signing-key-0123456789abcdef";

/// Our Twilio numbers and the customers.
const SMS_NUMBER: &str = "+14155550100";
const VOICE_NUMBER: &str = "+14155550199";
const CUSTOMER: &str = "+8613812345678";
const OTHER_CUSTOMER: &str = "+8613987654321";

// ---------------------------------------------------------------------------------------
// The fake Twilio Messages API.

/// How the fake answers the next send.
#[derive(Clone, Copy, Debug)]
enum TwilioAnswer {
    /// 201 with a Message resource.
    Created,
    /// 429 with `Retry-After: 1` and Twilio's error 20429.
    TooManyRequests,
}

/// One request the fake received.
#[derive(Clone, Debug)]
struct SentSms {
    at: Instant,
    account: String,
    authorization: Option<String>,
    content_type: Option<String>,
    form: Vec<(String, String)>,
    /// The sid the fake answered with (None when it refused).
    sid: Option<String>,
}

impl SentSms {
    fn get(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The reply id the connector put in the StatusCallback query.
    fn reply_id(&self) -> Option<&str> {
        self.get("StatusCallback")?
            .split_once("?reply_id=")
            .map(|(_, id)| id)
    }
}

/// A local stand-in for `https://api.twilio.com` speaking the Messages API's wire format
/// (form-encoded request, JSON answers as in connectors/sms/fixtures/twilio).
#[derive(Clone, Default)]
struct FakeTwilio {
    sent: Arc<Mutex<Vec<SentSms>>>,
    script: Arc<Mutex<Vec<TwilioAnswer>>>,
    counter: Arc<AtomicU32>,
}

impl FakeTwilio {
    async fn start() -> (Self, String) {
        let fake = FakeTwilio::default();
        let app = axum::Router::new()
            .route(
                "/2010-04-01/Accounts/{account}/Messages.json",
                post(fake_messages),
            )
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (fake, format!("http://{addr}"))
    }

    fn sent(&self) -> Vec<SentSms> {
        self.sent.lock().unwrap().clone()
    }

    fn sent_for(&self, reply_id: &str) -> Vec<SentSms> {
        self.sent()
            .into_iter()
            .filter(|s| s.reply_id() == Some(reply_id))
            .collect()
    }
}

async fn fake_messages(
    State(fake): State<FakeTwilio>,
    Path(account): Path<String>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let answer = {
        let mut script = fake.script.lock().unwrap();
        if script.is_empty() {
            TwilioAnswer::Created
        } else {
            script.remove(0)
        }
    };
    let header_text = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut sent = SentSms {
        at: Instant::now(),
        account: account.clone(),
        authorization: header_text(header::AUTHORIZATION),
        content_type: header_text(header::CONTENT_TYPE),
        form,
        sid: None,
    };
    let response = match answer {
        TwilioAnswer::Created => {
            let sid = format!(
                "SM{:032x}",
                0x5eed_0000 + fake.counter.fetch_add(1, Ordering::SeqCst)
            );
            sent.sid = Some(sid.clone());
            let body = json!({
                "account_sid": account,
                "api_version": "2010-04-01",
                "body": sent.get("Body"),
                "direction": "outbound-api",
                "error_code": null,
                "error_message": null,
                "from": sent.get("From"),
                "num_media": "0",
                "num_segments": "1",
                "sid": sid,
                "status": "queued",
                "to": sent.get("To"),
                "uri": format!("/2010-04-01/Accounts/{account}/Messages/{sid}.json"),
            });
            (StatusCode::CREATED, axum::Json(body)).into_response()
        }
        TwilioAnswer::TooManyRequests => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            axum::Json(json!({
                "code": 20429,
                "message": "Too Many Requests",
                "more_info": "https://www.twilio.com/docs/errors/20429",
                "status": 429,
            })),
        )
            .into_response(),
    };
    fake.sent.lock().unwrap().push(sent);
    response
}

// ---------------------------------------------------------------------------------------
// The daemon with the SMS and telephony connectors.

/// Weekday names as the business-hours table spells them.
const DAYS: [(Weekday, &str); 7] = [
    (Weekday::Monday, "mon"),
    (Weekday::Tuesday, "tue"),
    (Weekday::Wednesday, "wed"),
    (Weekday::Thursday, "thu"),
    (Weekday::Friday, "fri"),
    (Weekday::Saturday, "sat"),
    (Weekday::Sunday, "sun"),
];

/// A `business_hours` table that is closed now: an offset that puts local time between
/// 12:00 and 13:00 (so the local day cannot change during the test) and every day but the
/// local today.
fn closed_now() -> String {
    let now = OffsetDateTime::now_utc();
    let hours = 12 - now.hour() as i8;
    let offset = UtcOffset::from_hms(hours, 0, 0).unwrap();
    let today = now.to_offset(offset).weekday();
    let days: Vec<String> = DAYS
        .iter()
        .filter(|(day, _)| *day != today)
        .map(|(_, name)| format!("\"{name}\""))
        .collect();
    let sign = if hours < 0 { '-' } else { '+' };
    format!(
        "utc_offset = \"{sign}{:02}:00\"\ndays = [{}]\nopen = \"00:00\"\nclose = \"23:59\"",
        hours.abs(),
        days.join(", ")
    )
}

fn connectors_config(prefix: &str, twilio_base: &str) -> String {
    format!(
        r#"
[[queues]]
name = "{prefix}.agents.tracking"
bindings = ["tracking.*"]

[[connectors.sms]]
id = "main"
provider = "twilio"
public_url = "{SMS_PUBLIC_URL}"

[connectors.sms.twilio]
account_sid = "{ACCOUNT_SID}"
auth_token = "{SMS_AUTH_TOKEN}"
from = "{SMS_NUMBER}"
api_base = "{twilio_base}"

[[connectors.sms]]
id = "gw"
provider = "generic"
public_url = "{GATEWAY_PUBLIC_URL}"

[connectors.sms.generic]
send_url = "{twilio_base}/gateway/send"
signing_key = "{GATEWAY_KEY}"
default_country_code = "86"

[[connectors.telephony]]
id = "hotline"
provider = "twilio"
public_url = "{HOTLINE_PUBLIC_URL}"
languages = ["en"]

[connectors.telephony.twilio]
auth_token = "{VOICE_AUTH_TOKEN}"

[connectors.telephony.prompts.en]
greeting = "Welcome to Example Express."

[[connectors.telephony.menu]]
digit = "1"
skill = "tracking"
prompt = {{ en = "For parcel tracking, press 1." }}
keywords = ["tracking"]
ask_tracking_number = true
handoff = {{ enqueue = "tracking" }}

[[connectors.telephony.menu]]
digit = "2"
skill = "claims"
prompt = {{ en = "For claims, press 2." }}
keywords = ["claim"]
handoff = {{ enqueue = "claims" }}

[[connectors.telephony]]
id = "afterhours"
provider = "twilio"
public_url = "{AFTERHOURS_PUBLIC_URL}"
languages = ["en"]

[connectors.telephony.twilio]
auth_token = "{VOICE_AUTH_TOKEN}"

[connectors.telephony.business_hours]
{closed}

[[connectors.telephony.menu]]
digit = "2"
skill = "claims"
prompt = {{ en = "For claims, press 2." }}
handoff = {{ enqueue = "claims" }}
"#,
        closed = closed_now(),
    )
}

/// One test's daemon, fake Twilio, AMQP connection and events queue.
struct Rig {
    prefix: String,
    setup: Setup,
    daemon: Daemon,
    twilio: FakeTwilio,
    conn: Connection,
    channel: Channel,
    events: String,
    client: reqwest::Client,
    _scratch: Scratch,
}

impl Rig {
    async fn start(test: &str) -> Self {
        let prefix = unique_prefix(test);
        let scratch = Scratch::new(&prefix);
        let (twilio, twilio_base) = FakeTwilio::start().await;
        let mut setup = Setup::new(&prefix);
        setup.extra = connectors_config(&prefix, &twilio_base);
        let daemon = Daemon::start(&scratch.0, &setup.config(&scratch.0));
        daemon.wait_broker().await;
        let conn = amqp().await;
        let channel = conn.create_channel().await.unwrap();
        let events = events_queue(&channel, &prefix, "delivery.*").await;
        events_queue(&channel, &prefix, "call.*").await;
        Self {
            prefix,
            setup,
            daemon,
            twilio,
            conn,
            channel,
            events,
            client: reqwest::Client::new(),
            _scratch: scratch,
        }
    }

    fn queue(&self, skill: &str) -> String {
        self.setup.queue(skill)
    }

    /// Exactly one message from `queue`.
    async fn take_one(&self, queue: &str) -> Received {
        let mut got = take(&self.conn, queue, 1, WAIT).await;
        assert_eq!(got.len(), 1, "one message on {queue}");
        got.remove(0)
    }

    /// The next event.
    async fn event(&self) -> Received {
        self.take_one(&self.events).await
    }

    /// Asserts that no queue of this test holds anything more.
    async fn assert_drained(&self) {
        for skill in ["claims", "general", "tracking"] {
            assert_eq!(
                depth(&self.channel, &self.queue(skill)).await,
                0,
                "nothing more on the {skill} queue"
            );
        }
        assert_eq!(
            depth(&self.channel, &self.events).await,
            0,
            "no further events"
        );
    }

    async fn finish(self) {
        let queues = ["claims", "general", "tracking"].map(|s| self.queue(s));
        cleanup(&self.prefix, &queues).await;
    }

    async fn reply(&self, id: &str, to: &str, text: &str) {
        publish_reply(
            &self.channel,
            &self.prefix,
            &json!({
                "schema": "switchboard.reply.v1",
                "id": id,
                "conversation_id": format!("sms:main:{to}"),
                "content": {"type": "text", "text": text},
                "agent": {"id": "a-7", "name": "Wang"},
            }),
        )
        .await;
    }

    /// POSTs `params` form-encoded to the daemon at `public_url`'s path and query, with
    /// `signature` as X-Twilio-Signature (none when `None`).
    async fn twilio_post(
        &self,
        public_url: &str,
        params: &[(String, String)],
        signature: Option<String>,
    ) -> Answer {
        let path = public_url
            .strip_prefix(PUBLIC_ORIGIN)
            .expect("a public url under the proxy");
        let mut request = self.client.post(self.daemon.url(path)).form(params);
        if let Some(signature) = signature {
            request = request.header("X-Twilio-Signature", signature);
        }
        Answer::read(request.send().await.expect("post")).await
    }

    /// POSTs `params` to `public_url` signed with `token` as Twilio does.
    async fn twilio_signed(
        &self,
        public_url: &str,
        token: &str,
        params: &[(String, String)],
    ) -> Answer {
        let signature = twilio_sign(token, public_url, params);
        self.twilio_post(public_url, params, Some(signature)).await
    }

    async fn metric(&self, name: &str, filters: &[&str]) -> f64 {
        let text = reqwest::get(self.daemon.admin_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(name) && filters.iter().all(|f| l.contains(f)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// An HTTP answer of the daemon.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

impl Answer {
    async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = response.text().await.unwrap_or_default();
        Self {
            status,
            content_type,
            body,
        }
    }

    /// A 200 TwiML answer's document.
    fn twiml(&self) -> &str {
        assert_eq!(self.status, 200, "{self:?}");
        assert!(
            self.content_type.starts_with("text/xml"),
            "TwiML is text/xml: {self:?}"
        );
        assert!(self.body.contains("<Response>"), "{}", self.body);
        &self.body
    }
}

// ---------------------------------------------------------------------------------------
// Twilio's and the generic gateway's side.

/// Twilio's X-Twilio-Signature for a POST of `params` to `url`. The connector's own
/// function, anchored to Twilio's published example by `the_test_signer_matches_...`.
fn twilio_sign(token: &str, url: &str, params: &[(String, String)]) -> String {
    twilio_signature::compute(token.as_bytes(), url, params)
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// An incoming-SMS webhook with the fields of connectors/sms/fixtures/twilio/inbound-sms.form
/// (Twilio "Messaging webhooks" reference; made-up SIDs).
fn incoming_sms(sid: &str, from: &str, body: &str) -> Vec<(String, String)> {
    pairs(&[
        ("ToCountry", "US"),
        ("ToState", "CA"),
        ("SmsMessageSid", sid),
        ("NumMedia", "0"),
        ("ToCity", "SAN FRANCISCO"),
        ("FromZip", ""),
        ("SmsSid", sid),
        ("FromState", ""),
        ("SmsStatus", "received"),
        ("FromCity", ""),
        ("Body", body),
        ("FromCountry", "CN"),
        ("To", SMS_NUMBER),
        ("ToZip", "94105"),
        ("NumSegments", "1"),
        ("MessageSid", sid),
        ("AccountSid", ACCOUNT_SID),
        ("From", from),
        ("ApiVersion", "2010-04-01"),
    ])
}

/// A message status callback with the fields of
/// connectors/sms/fixtures/twilio/status-{delivered,undelivered}.form.
fn sms_status(
    sid: &str,
    status: &str,
    to: &str,
    error_code: Option<&str>,
) -> Vec<(String, String)> {
    let mut params = pairs(&[
        ("SmsSid", sid),
        ("SmsStatus", status),
        ("MessageStatus", status),
        ("To", to),
        ("MessageSid", sid),
        ("AccountSid", ACCOUNT_SID),
        ("From", SMS_NUMBER),
        ("ApiVersion", "2010-04-01"),
    ]);
    if let Some(code) = error_code {
        params.insert(0, ("ErrorCode".to_owned(), code.to_owned()));
    }
    params
}

/// A voice webhook with the call fields of connectors/telephony/fixtures/twilio/*.form
/// (Twilio "TwiML voice webhooks" reference; made-up SIDs), plus `extra`.
fn call_params(call_sid: &str, status: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut params = pairs(&[
        ("Called", VOICE_NUMBER),
        ("Direction", "inbound"),
        ("CallSid", call_sid),
        ("To", VOICE_NUMBER),
        ("ApiVersion", "2010-04-01"),
        ("CallStatus", status),
        ("From", CUSTOMER),
        ("AccountSid", ACCOUNT_SID),
        ("Caller", CUSTOMER),
        ("FromCountry", "CN"),
    ]);
    params.extend(pairs(extra));
    params
}

/// `(timestamp, hex HMAC-SHA256 over "timestamp.body")` for the generic gateway.
fn gateway_sign(body: &[u8], timestamp: i64) -> (String, String) {
    let ts = timestamp.to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(GATEWAY_KEY.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    (ts, hex::encode(mac.finalize().into_bytes()))
}

// A test-only reader of the few TwiML attributes the walk needs: the root crate has no XML
// dependency and these tests may not add one. It reads quick-xml's output, which quotes
// attributes with '"' and escapes with XML's five predefined entities.

fn start_of(xml: &str, element: &str) -> Option<usize> {
    let open = format!("<{element}");
    xml.match_indices(&open).map(|(at, _)| at).find(|at| {
        matches!(
            xml.as_bytes().get(at + open.len()),
            Some(b' ' | b'>' | b'/')
        )
    })
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The value of `attribute` on the first `<element>` of `xml`.
fn attr(xml: &str, element: &str, attribute: &str) -> Option<String> {
    let start = start_of(xml, element)?;
    let tag = &xml[start..start + xml[start..].find('>')?];
    let needle = format!(" {attribute}=\"");
    let value = &tag[tag.find(&needle)? + needle.len()..];
    Some(unescape(&value[..value.find('"')?]))
}

/// The text inside the first `<element>...</element>` of `xml`.
fn text_of(xml: &str, element: &str) -> Option<String> {
    let start = start_of(xml, element)?;
    let inner = &xml[start + xml[start..].find('>')? + 1..];
    Some(unescape(&inner[..inner.find(&format!("</{element}>"))?]))
}

// ---------------------------------------------------------------------------------------
// The tests.

/// The signatures below are made with the connector's own function; this ties it to
/// Twilio's published example (docs "Webhooks security", "Validating signatures from
/// Twilio": token 12345, this URL and these parameters give RSOYDt4T1cUTdK1PDd93/VVr8B8=),
/// so the end-to-end tests do not merely agree with themselves.
#[test]
fn the_test_signer_matches_twilios_published_example() {
    let params = pairs(&[
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675309"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
    ]);
    assert_eq!(
        twilio_sign(
            "12345",
            "https://mycompany.com/myapp.php?foo=1&bar=2",
            &params
        ),
        "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    );
}

#[tokio::test]
async fn a_signed_twilio_sms_lands_on_the_agent_queue_and_forgeries_are_refused() {
    let rig = Rig::start("sms-in").await;
    let inbound = format!("{SMS_PUBLIC_URL}/inbound");

    // Refused, each with its own MessageSid so any that slipped through would show.
    let forged = incoming_sms("SM000000000000000000000000000000f1", CUSTOMER, "forged");
    let wrong_token = twilio_sign("not-the-token", &inbound, &forged);
    let answer = rig.twilio_post(&inbound, &forged, Some(wrong_token)).await;
    assert_eq!(answer.status, 403, "wrong token: {answer:?}");

    let unsigned = incoming_sms("SM000000000000000000000000000000f2", CUSTOMER, "unsigned");
    let answer = rig.twilio_post(&inbound, &unsigned, None).await;
    assert_eq!(answer.status, 403, "no signature: {answer:?}");

    // Signed over the address the daemon really listens on, not the configured public URL.
    let local = incoming_sms("SM000000000000000000000000000000f3", CUSTOMER, "local");
    let local_sig = twilio_sign(SMS_AUTH_TOKEN, &rig.daemon.url("/sms/main/inbound"), &local);
    let answer = rig.twilio_post(&inbound, &local, Some(local_sig)).await;
    assert_eq!(answer.status, 403, "signed over the wrong url: {answer:?}");

    let original = incoming_sms("SM000000000000000000000000000000f4", CUSTOMER, "pay 1 yuan");
    let signature = twilio_sign(SMS_AUTH_TOKEN, &inbound, &original);
    let tampered = incoming_sms("SM000000000000000000000000000000f4", CUSTOMER, "pay 9 yuan");
    let answer = rig.twilio_post(&inbound, &tampered, Some(signature)).await;
    assert_eq!(answer.status, 403, "tampered body: {answer:?}");

    // The real thing.
    let sid = "SM5e2c8a1f0b7d4c3a9e6f1d2b3c4a5e6f";
    let params = incoming_sms(sid, CUSTOMER, "Where is my parcel SF1234567890123?");
    let answer = rig.twilio_signed(&inbound, SMS_AUTH_TOKEN, &params).await;
    let twiml = answer.twiml();
    assert!(
        twiml.contains("<Response></Response>"),
        "empty TwiML: nothing is texted back automatically: {twiml}"
    );

    let m = rig.take_one(&rig.queue("general")).await;
    let e = &m.body;
    assert_eq!(e["schema"], "switchboard.envelope.v1");
    assert_eq!(e["conversation_id"], format!("sms:main:{CUSTOMER}"));
    assert_eq!(e["channel"], json!({"kind": "sms", "connector_id": "main"}));
    assert_eq!(e["sender"]["channel_user_id"], CUSTOMER);
    assert_eq!(e["sender"]["phone"], CUSTOMER);
    assert_eq!(e["sender"]["tier"], "standard");
    assert_eq!(
        e["content"],
        json!({
            "type": "text",
            "text": "Where is my parcel SF1234567890123?",
            "extra": {"message_id": sid, "to": SMS_NUMBER},
        })
    );
    assert_eq!(e["dedupe_key"], sid);
    assert_eq!(e["sequence"], 1, "no forged message took a sequence number");
    assert_eq!(e["route"]["rule"], "default");
    assert_eq!(m.routing_key, "general.standard");
    assert_eq!(m.header("x-channel").as_deref(), Some("sms"));
    assert_eq!(
        m.header("x-conversation-id").as_deref(),
        Some(format!("sms:main:{CUSTOMER}").as_str())
    );

    // Twilio retrying the same webhook is accepted and not published again.
    let answer = rig.twilio_signed(&inbound, SMS_AUTH_TOKEN, &params).await;
    answer.twiml();

    rig.assert_drained().await;
    assert_eq!(
        rig.metric(
            "switchboard_rejections_total",
            &["connector=\"main\"", "reason=\"bad_signature\""]
        )
        .await,
        4.0,
        "each forgery is counted as a bad signature"
    );
    rig.finish().await;
}

#[tokio::test]
async fn a_signed_generic_sms_lands_on_the_agent_queue() {
    let rig = Rig::start("sms-generic").await;
    let url = rig.daemon.url("/sms/gw/inbound");
    let body = serde_json::to_vec(&json!({
        "message_id": "gw-msg-1",
        "from": "13812345678",
        "to": "1069000012345",
        "text": "我的快递破损了",
    }))
    .unwrap();
    let post = |ts: String, sig: String| {
        rig.client
            .post(&url)
            .header("Content-Type", "application/json")
            .header("X-Timestamp", ts)
            .header("X-Signature", sig)
            .body(body.clone())
            .send()
    };

    let (ts, _) = gateway_sign(&body, now());
    let forged = post(ts, "0".repeat(64)).await.unwrap();
    assert_eq!(forged.status(), 403);
    let (stale_ts, stale_sig) = gateway_sign(&body, now() - 3600);
    let stale = post(stale_ts, stale_sig).await.unwrap();
    assert_eq!(stale.status(), 403);

    let (ts, sig) = gateway_sign(&body, now());
    let answer = post(ts, sig).await.unwrap();
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["status"], "accepted");

    // "破损" (damaged) is a keyword of the claims rule.
    let m = rig.take_one(&rig.queue("claims")).await;
    let e = &m.body;
    assert_eq!(
        e["conversation_id"], "sms:gw:+8613812345678",
        "the national number got the configured country code"
    );
    assert_eq!(e["channel"], json!({"kind": "sms", "connector_id": "gw"}));
    assert_eq!(e["sender"]["phone"], "+8613812345678");
    assert_eq!(
        e["content"],
        json!({
            "type": "text",
            "text": "我的快递破损了",
            "extra": {"message_id": "gw-msg-1", "to": "1069000012345"},
        })
    );
    assert_eq!(e["dedupe_key"], "gw-msg-1");
    assert_eq!(e["route"]["rule"], "damaged");
    assert_eq!(e["sequence"], 1);

    // The gateway retrying: accepted, not published again.
    let (ts, sig) = gateway_sign(&body, now());
    assert_eq!(post(ts, sig).await.unwrap().status(), 200);
    rig.assert_drained().await;
    rig.finish().await;
}

#[tokio::test]
async fn replies_go_out_through_the_messages_api_with_retries_and_status_callbacks() {
    let rig = Rig::start("sms-out").await;

    // A plain reply.
    rig.reply("r-sms-1", CUSTOMER, "Your parcel is out for delivery.")
        .await;
    let event = rig.event().await;
    assert_eq!(event.routing_key, "delivery.succeeded");
    assert_eq!(event.body["kind"], "delivery.succeeded");
    assert_eq!(event.body["reply_id"], "r-sms-1");
    assert_eq!(
        event.body["conversation_id"],
        format!("sms:main:{CUSTOMER}")
    );
    let sent = rig.twilio.sent_for("r-sms-1");
    assert_eq!(sent.len(), 1, "one send: {sent:?}");
    let first = &sent[0];
    let sid = first.sid.clone().expect("created");
    assert_eq!(
        event.body["channel_message_id"], sid,
        "the event carries Twilio's sid"
    );
    assert_eq!(first.account, ACCOUNT_SID);
    assert_eq!(first.authorization.as_deref(), Some(SMS_BASIC_AUTH));
    assert_eq!(
        first.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    let names: BTreeSet<&str> = first.form.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["To", "From", "Body", "StatusCallback"]),
        "{:?}",
        first.form
    );
    assert_eq!(first.get("To"), Some(CUSTOMER));
    assert_eq!(first.get("From"), Some(SMS_NUMBER));
    assert_eq!(first.get("Body"), Some("Your parcel is out for delivery."));
    let callback = first.get("StatusCallback").unwrap().to_owned();
    assert_eq!(
        callback,
        format!("{SMS_PUBLIC_URL}/status?reply_id=r-sms-1")
    );

    // Throttled once, then sent: one success, after the Retry-After second.
    rig.twilio
        .script
        .lock()
        .unwrap()
        .push(TwilioAnswer::TooManyRequests);
    rig.reply("r-sms-2", CUSTOMER, "Sorry for the wait.").await;
    let event = rig.event().await;
    assert_eq!(event.body["kind"], "delivery.succeeded", "{}", event.body);
    assert_eq!(event.body["reply_id"], "r-sms-2");
    let sent = rig.twilio.sent_for("r-sms-2");
    assert_eq!(sent.len(), 2, "refused once, then sent: {sent:?}");
    assert_eq!(sent[0].sid, None);
    let second_sid = sent[1].sid.clone().expect("created");
    assert_eq!(event.body["channel_message_id"], second_sid);
    assert!(
        sent[1].at.duration_since(sent[0].at) >= Duration::from_millis(900),
        "the retry waited for Retry-After: {:?}",
        sent[1].at.duration_since(sent[0].at)
    );
    assert_eq!(
        sent[0].form, sent[1].form,
        "the retry sends the same message"
    );
    assert_eq!(
        rig.metric(
            "switchboard_deliveries_total",
            &["connector=\"main\"", "outcome=\"retried\""]
        )
        .await,
        1.0
    );

    // Twilio's status callbacks, signed over the StatusCallback URL exactly as given.
    let forged = sms_status(&sid, "delivered", CUSTOMER, None);
    let answer = rig
        .twilio_post(&callback, &forged, Some("bm90IGEgc2lnbmF0dXJl".into()))
        .await;
    assert_eq!(answer.status, 403, "{answer:?}");

    let delivered = sms_status(&sid, "delivered", CUSTOMER, None);
    rig.twilio_signed(&callback, SMS_AUTH_TOKEN, &delivered)
        .await
        .twiml();
    let event = rig.event().await;
    assert_eq!(event.routing_key, "delivery.status");
    let e = &event.body;
    assert_eq!(e["kind"], "delivery.status");
    assert_eq!(
        e["reply_id"], "r-sms-1",
        "linked to the reply through the query"
    );
    assert_eq!(e["channel_message_id"], sid);
    assert_eq!(e["conversation_id"], format!("sms:main:{CUSTOMER}"));
    assert_eq!(e["data"]["status"], "delivered");
    assert_eq!(e["data"]["channel"], "sms");
    assert_eq!(e["data"]["connector_id"], "main");

    let callback_2 = rig.twilio.sent_for("r-sms-2")[1]
        .get("StatusCallback")
        .unwrap()
        .to_owned();
    let undelivered = sms_status(&second_sid, "undelivered", CUSTOMER, Some("30003"));
    rig.twilio_signed(&callback_2, SMS_AUTH_TOKEN, &undelivered)
        .await
        .twiml();
    let event = rig.event().await;
    let e = &event.body;
    assert_eq!(e["kind"], "delivery.status");
    assert_eq!(e["reply_id"], "r-sms-2");
    assert_eq!(e["channel_message_id"], second_sid);
    assert_eq!(e["data"]["status"], "undelivered");
    assert_eq!(e["code"], "30003");
    assert_eq!(e["retryable"], true, "an unreachable handset may come back");

    rig.assert_drained().await;
    assert_eq!(rig.twilio.sent().len(), 3);
    rig.finish().await;
}

#[tokio::test]
async fn after_stop_replies_to_that_number_fail_as_opted_out_without_calling_twilio() {
    let rig = Rig::start("sms-stop").await;
    let inbound = format!("{SMS_PUBLIC_URL}/inbound");

    rig.reply("r-before", CUSTOMER, "How can we help?").await;
    let event = rig.event().await;
    assert_eq!(event.body["kind"], "delivery.succeeded", "{}", event.body);
    assert_eq!(rig.twilio.sent().len(), 1, "the fake is wired up");

    let stop = incoming_sms("SM0000000000000000000000000000a510", CUSTOMER, "Stop");
    rig.twilio_signed(&inbound, SMS_AUTH_TOKEN, &stop)
        .await
        .twiml();
    let m = rig.take_one(&rig.queue("general")).await;
    assert_eq!(
        (&m.body["content"]["type"], &m.body["content"]["text"]),
        (&json!("text"), &json!("Stop")),
        "agents see the customer's STOP"
    );

    rig.reply("r-after", CUSTOMER, "One more thing...").await;
    let event = rig.event().await;
    let e = &event.body;
    assert_eq!(event.routing_key, "delivery.failed");
    assert_eq!(e["kind"], "delivery.failed");
    assert_eq!(e["reply_id"], "r-after");
    assert_eq!(e["reason"], "opted_out");
    assert_eq!(e["code"], "opted_out");
    assert_eq!(e["retryable"], false);
    assert_eq!(
        rig.twilio.sent().len(),
        1,
        "nothing was sent to an opted-out number"
    );

    // Other numbers are not affected.
    rig.reply("r-other", OTHER_CUSTOMER, "Your parcel arrived.")
        .await;
    let event = rig.event().await;
    assert_eq!(event.body["kind"], "delivery.succeeded", "{}", event.body);
    assert_eq!(rig.twilio.sent_for("r-other").len(), 1);

    // START opts back in.
    let start = incoming_sms("SM0000000000000000000000000000a511", CUSTOMER, "START");
    rig.twilio_signed(&inbound, SMS_AUTH_TOKEN, &start)
        .await
        .twiml();
    rig.take_one(&rig.queue("general")).await;
    rig.reply("r-again", CUSTOMER, "Welcome back.").await;
    let event = rig.event().await;
    assert_eq!(event.body["kind"], "delivery.succeeded", "{}", event.body);
    assert_eq!(rig.twilio.sent_for("r-again").len(), 1);

    rig.assert_drained().await;
    rig.finish().await;
}

#[tokio::test]
async fn an_incoming_call_walks_the_ivr_into_the_claims_queue() {
    let rig = Rig::start("ivr").await;
    let call = "CA0123456789abcdef0123456789abcdef";
    let incoming = format!("{HOTLINE_PUBLIC_URL}/incoming");

    // The menu.
    let answer = rig
        .twilio_signed(
            &incoming,
            VOICE_AUTH_TOKEN,
            &call_params(call, "ringing", &[]),
        )
        .await;
    let twiml = answer.twiml();
    assert_eq!(
        attr(twiml, "Gather", "input").as_deref(),
        Some("dtmf speech")
    );
    assert_eq!(attr(twiml, "Gather", "numDigits").as_deref(), Some("1"));
    let menu_action = attr(twiml, "Gather", "action").expect("gather action");
    assert_eq!(
        menu_action,
        format!("{HOTLINE_PUBLIC_URL}/gather?step=menu&attempt=1")
    );
    for said in [
        "Welcome to Example Express.",
        "For parcel tracking, press 1.",
        "For claims, press 2.",
    ] {
        assert!(twiml.contains(said), "the menu says {said:?}: {twiml}");
    }

    // A forged choice is refused.
    let choice = call_params(
        call,
        "in-progress",
        &[("FinishedOnKey", ""), ("Digits", "2")],
    );
    let answer = rig
        .twilio_post(
            &menu_action,
            &choice,
            Some(twilio_sign(SMS_AUTH_TOKEN, &menu_action, &choice)),
        )
        .await;
    assert_eq!(
        answer.status, 403,
        "signed with another account's token: {answer:?}"
    );

    // Pressing 2: handed to Twilio's claims queue and screen-popped to the claims agents.
    let answer = rig
        .twilio_signed(&menu_action, VOICE_AUTH_TOKEN, &choice)
        .await;
    let twiml = answer.twiml();
    assert_eq!(
        text_of(twiml, "Enqueue").as_deref(),
        Some("claims"),
        "{twiml}"
    );
    let handoff_action = attr(twiml, "Enqueue", "action").expect("enqueue action");
    assert_eq!(
        handoff_action,
        format!("{HOTLINE_PUBLIC_URL}/status?event=handoff&skill=claims")
    );

    let m = rig.take_one(&rig.queue("claims")).await;
    let e = &m.body;
    assert_eq!(
        e["conversation_id"],
        format!("telephony:hotline:{CUSTOMER}")
    );
    assert_eq!(
        e["channel"],
        json!({"kind": "telephony", "connector_id": "hotline"})
    );
    assert_eq!(e["sender"]["channel_user_id"], CUSTOMER);
    assert_eq!(e["sender"]["phone"], CUSTOMER);
    assert_eq!(e["content"]["type"], "call");
    assert_eq!(e["content"]["event"], "ringing");
    assert_eq!(e["content"]["caller"], CUSTOMER);
    assert_eq!(e["content"]["data"]["skill"], "claims");
    assert_eq!(e["content"]["data"]["digit"], "2");
    assert_eq!(e["content"]["data"]["chosen_by"], "dtmf");
    assert_eq!(e["content"]["data"]["call_sid"], call);
    assert_eq!(e["content"]["data"]["to"], VOICE_NUMBER);
    assert_eq!(e["route"]["skill"], "claims");
    assert_eq!(e["route"]["rule"], "channel_choice");
    assert_eq!(e["route"]["queue_key"], "claims.standard");
    assert_eq!(e["dedupe_key"], format!("{call}:ringing"));
    assert_eq!(m.routing_key, "claims.standard");
    assert_eq!(m.header("x-channel").as_deref(), Some("telephony"));

    // Twilio retrying the gather: the same TwiML, no second screen pop.
    let again = rig
        .twilio_signed(&menu_action, VOICE_AUTH_TOKEN, &choice)
        .await;
    assert_eq!(text_of(again.twiml(), "Enqueue").as_deref(), Some("claims"));

    // Nobody took the call: the caller is offered a voicemail and the helpdesk hears it.
    let left_queue = call_params(
        call,
        "in-progress",
        &[
            ("QueueResult", "queue-full"),
            ("QueueSid", "QU0123456789abcdef0123456789abcdef"),
            ("QueueTime", "31"),
        ],
    );
    let answer = rig
        .twilio_signed(&handoff_action, VOICE_AUTH_TOKEN, &left_queue)
        .await;
    let twiml = answer.twiml();
    assert_eq!(
        attr(twiml, "Record", "action"),
        Some(format!("{HOTLINE_PUBLIC_URL}/status?event=voicemail")),
        "{twiml}"
    );
    let event = rig.event().await;
    assert_eq!(event.routing_key, "call.handoff");
    let e = &event.body;
    assert_eq!(
        e["conversation_id"],
        format!("telephony:hotline:{CUSTOMER}")
    );
    assert_eq!(e["data"]["result"], "queue-full");
    assert_eq!(e["data"]["skill"], "claims");
    assert_eq!(e["data"]["call_sid"], call);

    // The call ends.
    let status = format!("{HOTLINE_PUBLIC_URL}/status");
    let completed = call_params(call, "completed", &[("CallDuration", "42")]);
    rig.twilio_signed(&status, VOICE_AUTH_TOKEN, &completed)
        .await
        .twiml();
    let event = rig.event().await;
    assert_eq!(event.routing_key, "call.completed");
    assert_eq!(event.body["data"]["duration"], 42);
    assert_eq!(event.body["data"]["call_sid"], call);

    rig.assert_drained().await;
    rig.finish().await;
}

#[tokio::test]
async fn a_tracking_number_typed_on_the_keypad_rides_with_the_call() {
    let rig = Rig::start("ivr-tracking").await;
    let call = "CA00000000000000000000000000000077";
    let menu_action = format!("{HOTLINE_PUBLIC_URL}/gather?step=menu&attempt=1");

    let choice = call_params(
        call,
        "in-progress",
        &[("FinishedOnKey", ""), ("Digits", "1")],
    );
    let answer = rig
        .twilio_signed(&menu_action, VOICE_AUTH_TOKEN, &choice)
        .await;
    let twiml = answer.twiml();
    assert_eq!(attr(twiml, "Gather", "finishOnKey").as_deref(), Some("#"));
    let tracking_action = attr(twiml, "Gather", "action").expect("gather action");
    assert_eq!(
        tracking_action,
        format!("{HOTLINE_PUBLIC_URL}/gather?step=tracking&choice=1")
    );
    assert_eq!(
        depth(&rig.channel, &rig.queue("tracking")).await,
        0,
        "nothing is accepted before the number is typed"
    );

    // Fields of connectors/telephony/fixtures/twilio/gather-tracking.form.
    let typed = call_params(
        call,
        "in-progress",
        &[("FinishedOnKey", "#"), ("Digits", "7312345678901")],
    );
    let answer = rig
        .twilio_signed(&tracking_action, VOICE_AUTH_TOKEN, &typed)
        .await;
    assert_eq!(
        text_of(answer.twiml(), "Enqueue").as_deref(),
        Some("tracking")
    );
    let m = rig.take_one(&rig.queue("tracking")).await;
    let e = &m.body;
    assert_eq!(e["content"]["event"], "ringing");
    assert_eq!(e["content"]["data"]["skill"], "tracking");
    assert_eq!(e["content"]["data"]["tracking_number"], "7312345678901");
    assert_eq!(e["route"]["rule"], "channel_choice");
    assert_eq!(m.routing_key, "tracking.standard");

    rig.assert_drained().await;
    rig.finish().await;
}

#[tokio::test]
async fn after_hours_a_voicemail_and_its_transcription_reach_the_agents() {
    let rig = Rig::start("voicemail").await;
    let call = "CA0000000000000000000000000000vm01";
    let incoming = format!("{AFTERHOURS_PUBLIC_URL}/incoming");

    let answer = rig
        .twilio_signed(
            &incoming,
            VOICE_AUTH_TOKEN,
            &call_params(call, "ringing", &[]),
        )
        .await;
    let twiml = answer.twiml();
    assert!(
        start_of(twiml, "Gather").is_none(),
        "no menu when closed: {twiml}"
    );
    let record_action = attr(twiml, "Record", "action").expect("record action");
    assert_eq!(
        record_action,
        format!("{AFTERHOURS_PUBLIC_URL}/status?event=voicemail")
    );
    let transcribe = attr(twiml, "Record", "transcribeCallback").expect("transcribe callback");
    assert_eq!(
        transcribe,
        format!("{AFTERHOURS_PUBLIC_URL}/status?event=transcription")
    );

    // Fields of connectors/telephony/fixtures/twilio/record-voicemail.form.
    let recording_url = format!(
        "https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/RE0123456789abcdef0123456789abcdef"
    );
    let recorded = call_params(
        call,
        "completed",
        &[
            ("RecordingUrl", &recording_url),
            ("RecordingSid", "RE0123456789abcdef0123456789abcdef"),
            ("RecordingDuration", "17"),
            ("Digits", "hangup"),
        ],
    );
    let answer = rig
        .twilio_signed(&record_action, VOICE_AUTH_TOKEN, &recorded)
        .await;
    assert!(
        start_of(answer.twiml(), "Hangup").is_some(),
        "{}",
        answer.body
    );

    let m = rig.take_one(&rig.queue("general")).await;
    let e = &m.body;
    assert_eq!(
        e["conversation_id"],
        format!("telephony:afterhours:{CUSTOMER}")
    );
    assert_eq!(e["content"]["type"], "call");
    assert_eq!(e["content"]["event"], "voicemail");
    assert_eq!(e["content"]["caller"], CUSTOMER);
    assert_eq!(e["content"]["data"]["recording_url"], recording_url);
    assert_eq!(e["content"]["data"]["duration"], 17);
    assert_eq!(
        e["content"]["data"]["recording_sid"],
        "RE0123456789abcdef0123456789abcdef"
    );
    assert_eq!(e["dedupe_key"], format!("{call}:voicemail"));
    assert_eq!(e["route"]["rule"], "default", "a voicemail names no skill");

    // The transcription is text, so the pipeline's rules see it ("damaged" → claims).
    let transcription = call_params(
        call,
        "completed",
        &[
            ("TranscriptionSid", "TR0123456789abcdef0123456789abcdef"),
            (
                "TranscriptionText",
                "Hi my parcel 7312345678901 arrived damaged please call me back",
            ),
            ("TranscriptionStatus", "completed"),
            ("RecordingSid", "RE0123456789abcdef0123456789abcdef"),
            ("RecordingUrl", &recording_url),
        ],
    );
    rig.twilio_signed(&transcribe, VOICE_AUTH_TOKEN, &transcription)
        .await
        .twiml();
    let m = rig.take_one(&rig.queue("claims")).await;
    let e = &m.body;
    assert_eq!(e["content"]["type"], "text");
    assert_eq!(
        e["content"]["text"],
        "Hi my parcel 7312345678901 arrived damaged please call me back"
    );
    assert_eq!(e["content"]["extra"]["source"], "voicemail_transcription");
    assert_eq!(e["content"]["extra"]["call_sid"], call);
    assert_eq!(e["route"]["rule"], "damaged");
    assert_eq!(e["sequence"], 2, "same conversation as the voicemail");

    rig.assert_drained().await;
    rig.finish().await;
}
