//! The WeChat channel end to end: the real binary, real RabbitMQ (and Redis where two
//! instances share state), and a local fake of the WeChat API the connector's `api_base`
//! points at. Pushes are built as WeChat's servers build them: safe mode, signed with the
//! account's Token and encrypted with its EncodingAESKey.

#![cfg(feature = "wechat")]

mod common;
mod wechat_support;

use std::time::Duration;

use common::*;
use serde_json::json;
use switchboard_connector_wechat::crypto::{AesKey, signature, verify_signature};
use wechat_support::*;

const WAIT: Duration = Duration::from_secs(20);

/// A daemon with the WeChat account pointed at `fake`, plus what it needs.
struct Harness {
    prefix: String,
    setup: Setup,
    daemon: Daemon,
    _scratch: Scratch,
    client: reqwest::Client,
}

impl Harness {
    async fn start(test: &str, wechat_config: String) -> Self {
        let prefix = unique_prefix(test);
        let scratch = Scratch::new(&prefix);
        let mut setup = Setup::new(&prefix);
        setup.extra = wechat_config;
        let daemon = Daemon::start(&scratch.0, &setup.config(&scratch.0));
        daemon.wait_broker().await;
        Self {
            prefix,
            setup,
            daemon,
            _scratch: scratch,
            client: reqwest::Client::new(),
        }
    }

    fn server_url(&self) -> String {
        self.daemon.url(&ACCOUNT.path())
    }

    /// Pushes a text from `openid` in safe mode and expects WeChat's `success`.
    async fn user_writes(&self, openid: &str, text: &str) -> Push {
        let push = safe_push(
            &ACCOUNT,
            openid,
            &text_xml(openid, now(), msg_id(), text),
            now(),
        );
        let answer = send_push(&self.client, &self.server_url(), &push).await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (200, "success"),
            "{answer:?}"
        );
        push
    }

    async fn cleanup(&self) {
        cleanup(
            &self.prefix,
            &[self.setup.queue("claims"), self.setup.queue("general")],
        )
        .await;
    }
}

fn reply(id: &str, openid: &str, text: &str) -> serde_json::Value {
    json!({
        "schema": "switchboard.reply.v1",
        "id": id,
        "conversation_id": ACCOUNT.conversation(openid),
        "content": {"type": "text", "text": text},
        "agent": {"id": "a-7", "name": "Wang"},
    })
}

fn reply_id() -> String {
    format!("r-{}", ulid::Ulid::new())
}

#[tokio::test]
async fn the_server_url_verification_echoes_echostr_only_when_signed() {
    let fake = FakeWechat::start().await;
    let h = Harness::start("wx-verify", ACCOUNT.config(&fake.base)).await;
    let ts = now().to_string();
    let nonce = nonce();
    let echostr = format!("{}", msg_id());
    let good = signature(&[ACCOUNT.token, &ts, &nonce]);

    let response = h
        .client
        .get(h.server_url())
        .query(&[
            ("signature", good.as_str()),
            ("timestamp", &ts),
            ("nonce", &nonce),
            ("echostr", &echostr),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(response.text().await.unwrap(), echostr, "echoed verbatim");

    let forged = signature(&["not-the-token", &ts, &nonce]);
    let response = h
        .client
        .get(h.server_url())
        .query(&[
            ("signature", forged.as_str()),
            ("timestamp", &ts),
            ("nonce", &nonce),
            ("echostr", &echostr),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_ne!(response.text().await.unwrap(), echostr);
    h.cleanup().await;
}

#[tokio::test]
async fn a_safe_mode_text_arrives_as_an_envelope_and_wechat_gets_success() {
    let fake = FakeWechat::start().await;
    let h = Harness::start(
        "wx-safe",
        ACCOUNT.config_with_subscribe_reply(&fake.base, "感谢关注"),
    )
    .await;
    let user = openid();
    let (created, id) = (now(), msg_id());
    let push = safe_push(
        &ACCOUNT,
        &user,
        &text_xml(&user, created, id, "我的快递什么时候到？"),
        now(),
    );
    let answer = send_push(&h.client, &h.server_url(), &push).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body, "success");
    assert!(answer.content_type.starts_with("text/plain"), "{answer:?}");

    let conn = amqp().await;
    let got = take(&conn, &h.setup.queue("general"), 1, WAIT).await;
    assert_eq!(got.len(), 1, "the push reached the agent queue");
    let e = &got[0].body;
    assert_eq!(e["schema"], "switchboard.envelope.v1");
    assert_eq!(e["conversation_id"], ACCOUNT.conversation(&user));
    assert_eq!(
        e["channel"],
        json!({"kind": "wechat", "connector_id": ACCOUNT.id})
    );
    assert_eq!(e["sender"]["channel_user_id"], user.as_str());
    assert_eq!(e["content"]["type"], "text");
    assert_eq!(e["content"]["text"], "我的快递什么时候到？");
    assert_eq!(
        e["content"]["extra"]["msg_id"]
            .to_string()
            .trim_matches('"'),
        id.to_string()
    );
    assert_eq!(e["dedupe_key"], format!("{user}|{created}|{id}"));
    assert_eq!(e["sequence"], 1);
    assert_eq!(
        got[0].header("x-conversation-id").as_deref(),
        Some(ACCOUNT.conversation(&user).as_str())
    );
    assert_eq!(got[0].header("x-channel").as_deref(), Some("wechat"));

    // A subscribe event gets the configured passive reply, sealed for WeChat: a valid
    // MsgSignature over our Token and an Encrypt that opens with our key for our app id.
    let push = safe_push(&ACCOUNT, &user, &subscribe_xml(&user, now()), now());
    let answer = send_push(&h.client, &h.server_url(), &push).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let sealed = switchboard_connector_wechat::xml::parse(answer.body.as_bytes(), 1 << 16)
        .expect("the passive reply is XML");
    let encrypt = sealed.text_of("Encrypt").expect("Encrypt");
    let timestamp = sealed.text_of("TimeStamp").expect("TimeStamp");
    let reply_nonce = sealed.text_of("Nonce").expect("Nonce");
    assert_eq!(
        reply_nonce,
        push.param("nonce"),
        "the push's nonce is reused"
    );
    assert!(verify_signature(
        &[ACCOUNT.token, timestamp, reply_nonce, encrypt],
        sealed.text_of("MsgSignature").expect("MsgSignature"),
    ));
    let frame = ACCOUNT
        .aes_key()
        .decrypt(encrypt)
        .expect("opens with our key");
    assert_eq!(frame.receive_id, ACCOUNT.app_id);
    let inner = switchboard_connector_wechat::xml::parse(frame.message.as_bytes(), 1 << 16)
        .expect("inner reply is XML");
    assert_eq!(inner.text_of("ToUserName"), Some(user.as_str()));
    assert_eq!(inner.text_of("FromUserName"), Some(ACCOUNT.original_id));
    assert_eq!(inner.text_of("MsgType"), Some("text"));
    assert_eq!(inner.text_of("Content"), Some("感谢关注"));
    let got = take(&conn, &h.setup.queue("general"), 1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body["content"]["type"], "event");
    assert_eq!(got[0].body["content"]["name"], "subscribe");
    assert_eq!(got[0].body["sequence"], 2);

    assert!(fake.token_calls().is_empty() && fake.sends().is_empty());
    h.cleanup().await;
}

#[tokio::test]
async fn a_push_retried_by_wechat_is_published_once() {
    let fake = FakeWechat::start().await;
    let h = Harness::start("wx-retry", ACCOUNT.config(&fake.base)).await;
    let user = openid();

    // WeChat's retries after a slow answer: the same request again, one after the other.
    let sequential = safe_push(
        &ACCOUNT,
        &user,
        &text_xml(&user, now(), msg_id(), "first"),
        now(),
    );
    for attempt in 0..3 {
        let answer = send_push(&h.client, &h.server_url(), &sequential).await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (200, "success"),
            "attempt {attempt}: {answer:?}"
        );
    }

    // Three copies at once: each is accepted or asked to come back (never an error that
    // would make WeChat give up), and WeChat's next retry is answered success.
    let concurrent = safe_push(
        &ACCOUNT,
        &user,
        &text_xml(&user, now(), msg_id(), "second"),
        now(),
    );
    let url = h.server_url();
    let answers =
        futures_util::future::join_all((0..3).map(|_| send_push(&h.client, &url, &concurrent)))
            .await;
    assert!(
        answers
            .iter()
            .any(|a| a.status == 200 && a.body == "success"),
        "{answers:?}"
    );
    for answer in &answers {
        assert!(
            answer.status == 200 || answer.status == 503,
            "a concurrent copy is accepted or asked to retry: {answer:?}"
        );
    }
    let again = send_push(&h.client, &url, &concurrent).await;
    assert_eq!((again.status, again.body.as_str()), (200, "success"));

    // Every answer above came after a publisher confirm, so the queue holds all there is.
    let conn = amqp().await;
    let channel = conn.create_channel().await.unwrap();
    assert_eq!(
        depth(&channel, &h.setup.queue("general")).await,
        2,
        "one envelope per message, however often it was pushed"
    );
    let got = take(&conn, &h.setup.queue("general"), 2, WAIT).await;
    let texts: Vec<&str> = got
        .iter()
        .map(|m| m.body["content"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["first", "second"]);
    assert_ne!(got[0].body["dedupe_key"], got[1].body["dedupe_key"]);
    assert_eq!(depth(&channel, &h.setup.queue("general")).await, 0);
    h.cleanup().await;
}

#[tokio::test]
async fn a_reply_goes_out_through_custom_send_with_the_issued_token() {
    let fake = FakeWechat::start().await;
    let h = Harness::start("wx-reply", ACCOUNT.config(&fake.base)).await;
    let conn = amqp().await;
    let channel = conn.create_channel().await.unwrap();
    let events = events_queue(&channel, &h.prefix, "delivery.*").await;
    let user = openid();
    h.user_writes(&user, "hello").await;

    let id = reply_id();
    let text = "您好，包裹明天到 \"quoted\" <b>";
    publish_reply(&channel, &h.prefix, &reply(&id, &user, text)).await;
    let got = take(&conn, &events, 1, WAIT).await;
    assert_eq!(got.len(), 1, "a delivery event");
    assert_eq!(got[0].body["kind"], "delivery.succeeded", "{}", got[0].body);
    assert_eq!(got[0].body["reply_id"], id.as_str());
    assert_eq!(got[0].body["conversation_id"], ACCOUNT.conversation(&user));
    assert_eq!(got[0].routing_key, "delivery.succeeded");

    let tokens = fake.token_calls();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(tokens[0].endpoint, "stable_token");
    assert_eq!(
        tokens[0].request,
        json!({
            "grant_type": "client_credential",
            "appid": ACCOUNT.app_id,
            "secret": ACCOUNT.app_secret,
            "force_refresh": false,
        })
    );
    let sends = fake.sends();
    assert_eq!(sends.len(), 1, "{sends:?}");
    let send = &sends[0];
    assert_eq!(
        Some(&send.token),
        tokens[0].issued.as_ref(),
        "the token the fake issued"
    );
    assert_eq!(send.errcode, 0);
    assert!(
        send.content_type.starts_with("application/json"),
        "{send:?}"
    );
    assert_eq!(
        send.body,
        json!({"touser": user, "msgtype": "text", "text": {"content": text}})
    );
    assert!(
        send.raw.contains("您好") && !send.raw.contains("\\u"),
        "raw UTF-8, no \\u escapes (WeChat answers 40033 to those): {}",
        send.raw
    );
    h.cleanup().await;
}

#[tokio::test]
async fn a_refused_token_is_refreshed_once_and_the_send_retried_once() {
    let fake = FakeWechat::start().await;
    let h = Harness::start("wx-40001", ACCOUNT.config(&fake.base)).await;
    let conn = amqp().await;
    let channel = conn.create_channel().await.unwrap();
    let events = events_queue(&channel, &h.prefix, "delivery.*").await;
    let user = openid();
    h.user_writes(&user, "hello").await;

    let first = reply_id();
    publish_reply(&channel, &h.prefix, &reply(&first, &user, "one")).await;
    let got = take(&conn, &events, 1, WAIT).await;
    assert_eq!(got[0].body["kind"], "delivery.succeeded");
    let old_token = fake.sends()[0].token.clone();

    // Another system takes a new token: WeChat answers 40001 to the one the daemon holds.
    fake.rotate();
    let second = reply_id();
    publish_reply(&channel, &h.prefix, &reply(&second, &user, "two")).await;
    let got = take(&conn, &events, 1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body["kind"], "delivery.succeeded", "{}", got[0].body);
    assert_eq!(got[0].body["reply_id"], second.as_str());

    let tokens = fake.token_calls();
    assert_eq!(tokens.len(), 2, "exactly one refresh: {tokens:?}");
    assert_eq!(tokens[1].request["force_refresh"], false);
    let sends = fake.sends();
    assert_eq!(sends.len(), 3, "one refused send, one retry: {sends:?}");
    assert_eq!(
        (sends[1].token.as_str(), sends[1].errcode),
        (old_token.as_str(), 40001)
    );
    assert_eq!(Some(&sends[2].token), tokens[1].issued.as_ref());
    assert_ne!(sends[2].token, old_token);
    assert_eq!(sends[2].errcode, 0);
    assert_eq!(sends[1].body, sends[2].body, "the same message is retried");
    assert_eq!(sends[2].body["text"]["content"], "two");
    assert_eq!(
        h.daemon
            .metric("switchboard_deliveries_total", "outcome=\"retried\"")
            .await,
        0.0,
        "the refresh happens inside one delivery attempt"
    );
    h.cleanup().await;
}

#[tokio::test]
async fn a_reply_outside_the_48_hour_window_fails_without_calling_wechat() {
    let fake = FakeWechat::start().await;
    let h = Harness::start("wx-window", ACCOUNT.config(&fake.base)).await;
    let conn = amqp().await;
    let channel = conn.create_channel().await.unwrap();
    let events = events_queue(&channel, &h.prefix, "delivery.*").await;
    // Someone else wrote, so the connector is live and holds state; this user never did.
    h.user_writes(&openid(), "hello").await;
    let stranger = openid();

    let id = reply_id();
    publish_reply(
        &channel,
        &h.prefix,
        &reply(&id, &stranger, "are you there?"),
    )
    .await;
    let got = take(&conn, &events, 1, WAIT).await;
    assert_eq!(got.len(), 1);
    let event = &got[0].body;
    assert_eq!(event["kind"], "delivery.failed", "{event}");
    assert_eq!(event["reply_id"], id.as_str());
    assert_eq!(event["reason"], "window_closed");
    assert_eq!(event["code"], "window_closed");
    assert_eq!(event["retryable"], false);
    assert_eq!(got[0].routing_key, "delivery.failed");
    assert!(fake.sends().is_empty(), "custom/send never called");
    assert!(fake.token_calls().is_empty(), "no token fetched for it");
    h.cleanup().await;
}

#[tokio::test]
async fn a_forged_msg_signature_is_refused_and_publishes_nothing() {
    let fake = FakeWechat::start().await;
    let h = Harness::start("wx-forged", ACCOUNT.config(&fake.base)).await;
    let user = openid();
    let url = h.server_url();

    // Signed with a Token that is not the account's.
    let mut forged = safe_push(
        &ACCOUNT,
        &user,
        &text_xml(&user, now(), msg_id(), "forged"),
        now(),
    );
    let encrypt_of = |push: &Push| {
        switchboard_connector_wechat::xml::parse(push.body.as_bytes(), 1 << 16)
            .unwrap()
            .text_of("Encrypt")
            .unwrap()
            .to_owned()
    };
    let wrong = signature(&[
        "notTheToken",
        forged.param("timestamp"),
        forged.param("nonce"),
        &encrypt_of(&forged),
    ]);
    forged.set_param("msg_signature", &wrong);
    let answer = send_push(&h.client, &url, &forged).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert_ne!(answer.body, "success");

    // A genuine msg_signature, but over another ciphertext than the one in the body.
    let genuine = safe_push(
        &ACCOUNT,
        &user,
        &text_xml(&user, now(), msg_id(), "genuine"),
        now(),
    );
    let mut swapped = safe_push(
        &ACCOUNT,
        &user,
        &text_xml(&user, now(), msg_id(), "swapped in"),
        now(),
    );
    let key = AesKey::from_encoding_aes_key(ACCOUNT.encoding_aes_key).unwrap();
    assert!(key.decrypt(&encrypt_of(&swapped)).is_ok());
    swapped.query = genuine.query.clone();
    let answer = send_push(&h.client, &url, &swapped).await;
    assert_eq!(answer.status, 403, "{answer:?}");

    // What does get through shows the refused ones were not published before it.
    let answer = send_push(&h.client, &url, &genuine).await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "success"));
    let conn = amqp().await;
    let channel = conn.create_channel().await.unwrap();
    let got = take(&conn, &h.setup.queue("general"), 1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body["content"]["text"], "genuine");
    assert_eq!(depth(&channel, &h.setup.queue("general")).await, 0);
    assert_eq!(depth(&channel, &h.setup.queue("claims")).await, 0);
    assert_eq!(
        h.daemon
            .metric("switchboard_rejections_total", "reason=\"bad_signature\"")
            .await,
        2.0,
        "each refusal is counted"
    );
    h.cleanup().await;
}

#[tokio::test]
async fn two_instances_sharing_redis_fetch_the_token_once() {
    let fake = FakeWechat::start().await;
    let prefix = unique_prefix("wx-two");
    let key_prefix = format!("{prefix}:");
    let mut setup = Setup::new(&prefix);
    setup.extra = format!(
        "{}{}",
        redis_config(&key_prefix),
        ACCOUNT.config(&fake.base)
    );
    // Same broker prefix (both consume one outbound queue), own spool and instance id.
    let start = |name: &str| {
        let scratch = Scratch::new(&format!("{prefix}-{name}"));
        let base = setup.config(&scratch.0);
        let config = base.replacen(
            &format!("instance_id = \"{prefix}\""),
            &format!("instance_id = \"{prefix}-{name}\""),
            1,
        );
        assert_ne!(config, base, "the instance id was made unique");
        let daemon = Daemon::start(&scratch.0, &config);
        (scratch, daemon)
    };
    let (_scratch_a, a) = start("a");
    let (_scratch_b, b) = start("b");
    a.wait_broker().await;
    b.wait_broker().await;
    let conn = amqp().await;
    let channel = conn.create_channel().await.unwrap();
    let events = events_queue(&channel, &prefix, "delivery.*").await;
    let outbound = format!("{prefix}.outbound");
    wait_for("both instances to consume the outbound queue", WAIT, || {
        let channel = channel.clone();
        let outbound = outbound.clone();
        async move {
            let queue = channel
                .queue_declare(
                    outbound.as_str().into(),
                    lapin::options::QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    lapin::types::FieldTable::default(),
                )
                .await
                .ok()?;
            (queue.consumer_count() == 2).then_some(())
        }
    })
    .await;

    // The users write through instance a; the window mark is in Redis for both.
    let client = reqwest::Client::new();
    let users: Vec<String> = (0..4).map(|_| openid()).collect();
    for user in &users {
        let push = safe_push(
            &ACCOUNT,
            user,
            &text_xml(user, now(), msg_id(), "hello"),
            now(),
        );
        let answer = send_push(&client, &a.url(&ACCOUNT.path()), &push).await;
        assert_eq!((answer.status, answer.body.as_str()), (200, "success"));
    }

    // Token answers are held until both instances have replies in hand, so that a missing
    // cross-instance lock would show as a second fetch.
    fake.close_gate();
    let ids: Vec<String> = (0..10).map(|_| reply_id()).collect();
    for (i, id) in ids.iter().enumerate() {
        let user = &users[i % users.len()];
        publish_reply(&channel, &prefix, &reply(id, user, &format!("reply {i}"))).await;
    }
    wait_for("a token request and every reply taken", WAIT, || {
        let channel = channel.clone();
        let outbound = outbound.clone();
        let fake = fake.clone();
        async move {
            let ready = depth(&channel, &outbound).await;
            (!fake.token_calls().is_empty() && ready == 0).then_some(())
        }
    })
    .await;
    fake.open_gate();

    let got = take(&conn, &events, ids.len(), WAIT).await;
    assert_eq!(got.len(), ids.len());
    for event in &got {
        assert_eq!(event.body["kind"], "delivery.succeeded", "{}", event.body);
    }
    let mut reported: Vec<String> = got
        .iter()
        .map(|e| e.body["reply_id"].as_str().unwrap().to_owned())
        .collect();
    reported.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(reported, expected);

    let tokens = fake.token_calls();
    assert_eq!(tokens.len(), 1, "one fetch for both instances: {tokens:?}");
    let sends = fake.sends();
    assert_eq!(sends.len(), ids.len());
    for send in &sends {
        assert_eq!(Some(&send.token), tokens[0].issued.as_ref());
        assert_eq!(send.errcode, 0);
    }
    let by_a = a
        .metric("switchboard_deliveries_total", "outcome=\"succeeded\"")
        .await;
    let by_b = b
        .metric("switchboard_deliveries_total", "outcome=\"succeeded\"")
        .await;
    assert!(
        by_a >= 1.0 && by_b >= 1.0,
        "both instances sent replies (a {by_a}, b {by_b})"
    );
    assert_eq!(by_a + by_b, ids.len() as f64);

    cleanup(&prefix, &[setup.queue("claims"), setup.queue("general")]).await;
    redis_cleanup(&key_prefix).await;
}
