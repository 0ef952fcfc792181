//! Secrets never reach the logs or the metrics: the real daemon runs with every kind of
//! secret configured (app HMAC key, WeChat Token / EncodingAESKey / AppSecret and the access
//! tokens it is issued, Twilio auth tokens, web chat keys, the broker password, the envelope
//! signing key), takes traffic on every channel including forgeries, failed deliveries and a
//! refused reload, and then no log line and no `/metrics` line contains any secret, nor its
//! hex or base64 form.

mod common;
mod wechat_support;

use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::*;
use serde_json::json;
use switchboard_connector_sms::twilio_signature;
use wechat_support::{ACCOUNT, FakeWechat, msg_id, openid, safe_push, send_push, text_xml};

const WAIT: Duration = Duration::from_secs(20);

const ACCOUNT_SID: &str = "AC0000000000000000000000000000cafe";
const SMS_AUTH_TOKEN: &str = "7e3a91c04b5d28f6a0e9c3b1d7f54a2e";
const VOICE_AUTH_TOKEN: &str = "c2d9e4f1a0b3c6d5e8f7a2b1c4d3e6f5";
const SMS_PUBLIC_URL: &str = "https://sb.test/sms/main";
const VOICE_PUBLIC_URL: &str = "https://sb.test/telephony/hotline";
const VISITOR_SECRET: &str = "visitor-secret-9f2c7a1e5b3d8046c1d2e3f4a5b6";
const SITE_KEY: &str = "site-key-4e8b1c9d2a7f3e6051a2b3c4d5e6f7a8b9";
const ENVELOPE_KEY: &str = "envelope-signing-key-6d1f9a3c7e2b";
/// The Token of a reload that must be refused (its EncodingAESKey is one character short),
/// so the refusal is checked for echoing what it refused.
const REFUSED_AES_KEY: &str = "RefusedKeyRefusedKeyRefusedKeyRefusedKey12";

/// A RabbitMQ user of this test alone, so the broker password is a value that occurs
/// nowhere else; deleted on drop.
struct BrokerUser {
    name: String,
    password: String,
}

impl BrokerUser {
    fn create(prefix: &str) -> Self {
        let unique = ulid::Ulid::new().to_string();
        let user = Self {
            name: format!("{prefix}-user"),
            password: format!("Pw{unique}x"),
        };
        rabbitmqctl(&["add_user", &user.name, &user.password]);
        rabbitmqctl(&["set_permissions", "-p", "/", &user.name, ".*", ".*", ".*"]);
        user
    }

    /// The suite's broker URL with this user's credentials instead of guest's.
    fn url(&self) -> String {
        amqp_url().replacen(
            "guest:guest@",
            &format!("{}:{}@", self.name, self.password),
            1,
        )
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        let _ = rabbitmqctl_command()
            .args(["-q", "delete_user", &self.name])
            .output();
    }
}

fn rabbitmqctl(args: &[&str]) {
    let out = rabbitmqctl_command()
        .arg("-q")
        .args(args)
        .output()
        .expect("rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Twilio API that refuses our credentials, so every SMS reply fails.
async fn refusing_twilio() -> String {
    let app = axum::Router::new().route(
        "/2010-04-01/Accounts/{account}/Messages.json",
        post(|| async {
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"code": 20003, "message": "Authenticate", "status": 401})),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn channels_config(wechat_api: &str, twilio_api: &str, aes_key: &str) -> String {
    format!(
        r#"
[broker.signing]
key_id = "k1"
key = "{ENVELOPE_KEY}"

[[connectors.wechat]]
id = "{id}"
app_id = "{app_id}"
app_secret = "{app_secret}"
token = "{token}"
encoding_aes_key = "{aes_key}"
timestamp_window_secs = 300
api_base = "{wechat_api}"

[[connectors.sms]]
id = "main"
provider = "twilio"
public_url = "{SMS_PUBLIC_URL}"

[connectors.sms.twilio]
account_sid = "{ACCOUNT_SID}"
auth_token = "{SMS_AUTH_TOKEN}"
from = "+14155550100"
api_base = "{twilio_api}"

[[connectors.telephony]]
id = "hotline"
provider = "twilio"
public_url = "{VOICE_PUBLIC_URL}"
languages = ["en"]

[connectors.telephony.twilio]
auth_token = "{VOICE_AUTH_TOKEN}"

[connectors.telephony.prompts.en]
greeting = "Welcome."

[[connectors.telephony.menu]]
digit = "1"
skill = "claims"
prompt = {{ en = "For claims, press 1." }}
handoff = {{ enqueue = "claims" }}

[[connectors.webchat]]
id = "site"
visitor_secret = "{VISITOR_SECRET}"
site_key = "{SITE_KEY}"
"#,
        id = ACCOUNT.id,
        app_id = ACCOUNT.app_id,
        app_secret = ACCOUNT.app_secret,
        token = ACCOUNT.token,
    )
}

/// Every form in which a secret could leak: as given, hex and base64 of its bytes.
fn forms(secret: &str) -> Vec<String> {
    vec![
        secret.to_owned(),
        hex::encode(secret.as_bytes()),
        STANDARD.encode(secret.as_bytes()),
    ]
}

/// Waits for a final outcome (`delivery.succeeded` or `delivery.failed`) of every reply in `ids`.
async fn outcomes_of(conn: &lapin::Connection, events: &str, ids: &[&str]) {
    let mut waiting: Vec<&str> = ids.to_vec();
    let start = std::time::Instant::now();
    while !waiting.is_empty() {
        assert!(start.elapsed() < WAIT, "no outcome for {waiting:?}");
        for event in take(conn, events, 1, WAIT).await {
            let final_kind = matches!(
                event.body["kind"].as_str(),
                Some("delivery.succeeded" | "delivery.failed")
            );
            if final_kind {
                waiting.retain(|id| event.body["reply_id"] != *id);
            }
        }
    }
}

#[tokio::test]
async fn no_secret_reaches_a_log_line_or_a_metric() {
    let prefix = unique_prefix("secrets");
    let scratch = Scratch::new(&prefix);
    let user = BrokerUser::create(&prefix);
    let wechat = FakeWechat::start().await;
    let twilio = refusing_twilio().await;
    let (backend, webhook_url) = Backend::start().await;
    backend.script.lock().unwrap().extend([
        Answer::Status(500),
        Answer::Status(401),
        Answer::Status(401),
        Answer::Status(401),
        Answer::Status(401),
    ]);

    let mut setup = Setup::new(&prefix);
    setup.webhook_url = webhook_url;
    setup.extra = channels_config(&wechat.base, &twilio, ACCOUNT.encoding_aes_key);
    let config = setup.config(&scratch.0).replace(&amqp_url(), &user.url());
    let mut daemon = Daemon::start(&scratch.0, &config);
    daemon.wait_broker().await;
    let conn = amqp().await;
    let channel = conn.create_channel().await.unwrap();
    let events = events_queue(&channel, &prefix, "delivery.*").await;
    let client = reqwest::Client::new();

    // App: accepted, forged, malformed.
    let (status, _) = post_signed(&client, &daemon, text_message("m-1", "u-1", "hello")).await;
    assert_eq!(status, 200);
    let forged = client
        .post(daemon.url("/app/shop/messages"))
        .header("X-Switchboard-Timestamp", now().to_string())
        .header("X-Switchboard-Signature", "00".repeat(32))
        .body(text_message("m-2", "u-1", "forged"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let (status, _) = post_signed(&client, &daemon, b"{\"message_id\": 1".to_vec()).await;
    assert_eq!(status, 400);

    // WeChat: a safe-mode push, one with a bad msg_signature.
    let customer = openid();
    let url = daemon.url(&ACCOUNT.path());
    let push = safe_push(
        &ACCOUNT,
        &customer,
        &text_xml(&customer, now(), msg_id(), "hi"),
        now(),
    );
    assert_eq!(send_push(&client, &url, &push).await.status, 200);
    let mut bad = safe_push(
        &ACCOUNT,
        &customer,
        &text_xml(&customer, now(), msg_id(), "x"),
        now(),
    );
    bad.set_param("msg_signature", &"0".repeat(40));
    assert_eq!(send_push(&client, &url, &bad).await.status, 403);

    // SMS: a signed inbound, a forged one.
    let inbound = format!("{SMS_PUBLIC_URL}/inbound");
    let sms = |sid: &str| -> Vec<(String, String)> {
        [
            ("MessageSid", sid),
            ("SmsSid", sid),
            ("AccountSid", ACCOUNT_SID),
            ("From", "+8613812345678"),
            ("To", "+14155550100"),
            ("Body", "where is my parcel"),
            ("NumMedia", "0"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    };
    let good = sms("SM00000000000000000000000000000a01");
    let signature = twilio_signature::compute(SMS_AUTH_TOKEN.as_bytes(), &inbound, &good);
    let answer = client
        .post(daemon.url("/sms/main/inbound"))
        .header("X-Twilio-Signature", signature)
        .form(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let forged = sms("SM00000000000000000000000000000a02");
    let answer = client
        .post(daemon.url("/sms/main/inbound"))
        .header("X-Twilio-Signature", "Zm9yZ2Vk")
        .form(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 403);

    // Telephony: a forged call.
    let answer = client
        .post(daemon.url("/telephony/hotline/incoming"))
        .header("X-Twilio-Signature", "Zm9yZ2Vk")
        .form(&[("CallSid", "CA01"), ("From", "+8613812345678")])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 403);

    // Web chat: a site token, a token signed with another key.
    let token = |key: &str| {
        switchboard_connector_webchat::make_site_token(
            key,
            &json!({"sub": "cust-7", "exp": now() + 600}),
        )
    };
    let message = json!({"id": "w-1", "content": {"type": "text", "text": "hi"}});
    let answer = client
        .post(daemon.url("/webchat/site/messages"))
        .bearer_auth(token(SITE_KEY))
        .json(&message)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
    let answer = client
        .post(daemon.url("/webchat/site/messages"))
        .bearer_auth(token("some-other-site-key-0123456789"))
        .json(&message)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 403);

    let general = take(&conn, &setup.queue("general"), 4, WAIT).await;
    assert_eq!(general.len(), 4, "app, wechat, sms and web chat messages");

    // Replies: app (a 500 then refusals: failed), WeChat (token refused once, then sent;
    // then refused for good), SMS (Twilio refuses the credentials), web chat.
    wechat.script_send_errcodes(&[40001]);
    let replies = [
        ("r-app", "app:shop:u-1".to_owned()),
        ("r-wx", ACCOUNT.conversation(&customer)),
        ("r-sms", "sms:main:+8613812345678".to_owned()),
        ("r-web", "webchat:site:c-cust-7".to_owned()),
    ];
    for (id, conversation) in &replies {
        publish_reply(
            &channel,
            &prefix,
            &json!({
                "schema": "switchboard.reply.v1",
                "id": id,
                "conversation_id": conversation,
                "content": {"type": "text", "text": "an answer"},
            }),
        )
        .await;
    }
    let ids: Vec<&str> = replies.iter().map(|(id, _)| *id).collect();
    outcomes_of(&conn, &events, &ids).await;
    wechat.script_send_errcodes(&[48001, 48001, 48001, 48001]);
    publish_reply(
        &channel,
        &prefix,
        &json!({
            "schema": "switchboard.reply.v1",
            "id": "r-wx-refused",
            "conversation_id": ACCOUNT.conversation(&customer),
            "content": {"type": "text", "text": "refused"},
        }),
    )
    .await;
    outcomes_of(&conn, &events, &["r-wx-refused"]).await;

    // A reload with a broken EncodingAESKey is refused without echoing it.
    let broken = config.replace(ACCOUNT.encoding_aes_key, REFUSED_AES_KEY);
    std::fs::write(scratch.0.join("switchboard.toml"), broken).unwrap();
    signal(daemon.pid(), "HUP");
    wait_for("the reload refusal", WAIT, || async {
        let refused = daemon
            .metric("switchboard_config_reloads_total", "outcome=\"refused\"")
            .await;
        (refused >= 1.0).then_some(())
    })
    .await;

    let metrics = reqwest::get(daemon.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(daemon.terminate(WAIT).await.success());
    let log = daemon.log_text();
    assert!(log.lines().count() > 20, "the daemon logged the traffic");

    let mut secrets: Vec<(&str, String)> = vec![
        ("app signing key", APP_KEY.to_owned()),
        ("wechat token", ACCOUNT.token.to_owned()),
        ("wechat appsecret", ACCOUNT.app_secret.to_owned()),
        (
            "wechat encoding aes key",
            ACCOUNT.encoding_aes_key.to_owned(),
        ),
        ("refused encoding aes key", REFUSED_AES_KEY.to_owned()),
        ("twilio sms auth token", SMS_AUTH_TOKEN.to_owned()),
        ("twilio voice auth token", VOICE_AUTH_TOKEN.to_owned()),
        ("web chat visitor secret", VISITOR_SECRET.to_owned()),
        ("web chat site key", SITE_KEY.to_owned()),
        ("envelope signing key", ENVELOPE_KEY.to_owned()),
        ("broker password", user.password.clone()),
        (
            "twilio basic credentials",
            format!("{ACCOUNT_SID}:{SMS_AUTH_TOKEN}"),
        ),
    ];
    let aes = ACCOUNT.aes_key();
    secrets.push(("wechat aes key bytes (hex)", hex::encode(aes.bytes())));
    secrets.push((
        "wechat aes key bytes (base64)",
        STANDARD.encode(aes.bytes()),
    ));
    let issued: Vec<String> = wechat
        .token_calls()
        .into_iter()
        .filter_map(|call| call.issued)
        .collect();
    assert!(
        !issued.is_empty(),
        "the daemon fetched a WeChat access token"
    );
    for token in issued {
        secrets.push(("wechat access token", token));
    }
    assert!(wechat.sends().len() >= 2, "the WeChat replies were tried");

    let mut leaks = Vec::new();
    for (what, secret) in &secrets {
        for form in forms(secret) {
            for (source, text) in [("log", &log), ("metrics", &metrics)] {
                for line in text.lines().filter(|line| line.contains(&form)) {
                    leaks.push(format!("{what} in {source}: {line}"));
                }
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));

    drop(conn);
    cleanup(
        &prefix,
        &[setup.queue("general"), setup.queue("claims"), events],
    )
    .await;
}
