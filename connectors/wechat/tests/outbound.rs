//! Delivery through the customer-service API of a fake WeChat (a local axum server speaking
//! WeChat's JSON): access tokens (single flight, sharing, early refresh, refusal), the
//! 48-hour window, and errcode classification.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::future::join_all;
use serde_json::json;
use switchboard_connector_wechat::WechatConnector;
use switchboard_sdk::services::MemoryKv;
use switchboard_sdk::{Connector, Content, ConversationId, DeliveryError, Recipient, Reply};

use common::fake::FakeWechat;
use common::*;

fn reply(text: &str) -> Reply {
    Reply {
        schema: "switchboard.reply.v1".into(),
        id: format!("r-{text}"),
        conversation_id: format!("wechat:main:{OPENID}"),
        content: Content::text(text),
        in_reply_to: None,
        agent: None,
    }
}

fn recipient(openid: &str) -> Recipient {
    Recipient {
        conversation: ConversationId::new("wechat", "main", openid),
    }
}

async fn ready(fake: &FakeWechat, extra: &str) -> Arc<WechatConnector> {
    let connector = connector(&config(&format!("{}\n{extra}", fake.config_line())));
    open_window(&connector).await;
    connector
}

#[tokio::test]
async fn a_reply_is_sent_as_raw_utf8_json_with_the_seat() {
    let fake = FakeWechat::start().await;
    let connector = ready(&fake, "kf_account = \"kf2001@gh_test\"").await;
    let delivered = connector
        .deliver(&reply("您好，包裹已签收"), &recipient(OPENID))
        .await
        .unwrap();
    assert_eq!(delivered.channel_message_id, None);
    let sends = fake.state.sends.lock().unwrap().clone();
    assert_eq!(sends.len(), 1);
    let (token, body, raw) = &sends[0];
    assert_eq!(token, "token-1");
    assert_eq!(
        body,
        &json!({"touser": OPENID, "msgtype": "text", "text": {"content": "您好，包裹已签收"}, "customservice": {"kf_account": "kf2001@gh_test"}})
    );
    assert!(raw.contains("您好") && !raw.contains("\\u"), "{raw}");
    let requests = fake.state.token_requests.lock().unwrap().clone();
    assert_eq!(
        requests,
        vec![
            json!({"grant_type": "client_credential", "appid": APP_ID, "secret": "s3cret", "force_refresh": false})
        ]
    );
}

#[tokio::test]
async fn many_concurrent_sends_fetch_one_token() {
    let fake = FakeWechat::start().await;
    fake.state.fetch_delay_ms.store(150, Ordering::SeqCst);
    let connector = ready(&fake, "").await;
    let replies: Vec<Reply> = (0..20).map(|i| reply(&format!("m{i}"))).collect();
    let to = recipient(OPENID);
    let results = join_all(replies.iter().map(|r| connector.deliver(r, &to))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(fake.state.fetches(), 1);
    assert_eq!(fake.state.send_count(), 20);
}

#[tokio::test]
async fn two_instances_sharing_a_store_fetch_once() {
    let fake = FakeWechat::start().await;
    fake.state.fetch_delay_ms.store(150, Ordering::SeqCst);
    let kv = Arc::new(MemoryKv::default());
    let cfg = config(&fake.config_line());
    let a = connector_with(
        &cfg,
        kv.clone(),
        "instance-a",
        Arc::new(switchboard_connector_wechat::SystemClock),
    );
    let b = connector_with(
        &cfg,
        kv.clone(),
        "instance-b",
        Arc::new(switchboard_connector_wechat::SystemClock),
    );
    let calls = (0..10).map(|i| {
        let c = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move { c.tokens().get().await }
    });
    let tokens = join_all(calls).await;
    assert!(
        tokens.iter().all(|t| matches!(t.as_deref(), Ok("token-1"))),
        "{tokens:?}"
    );
    assert_eq!(fake.state.fetches(), 1);
}

#[tokio::test]
async fn tokens_are_refreshed_early_and_the_window_closes_after_48_hours() {
    let fake = FakeWechat::start().await;
    fake.state.expires_in.store(1000, Ordering::SeqCst);
    let clock = manual_clock();
    let connector = connector_with(
        &config(&fake.config_line()),
        Arc::new(MemoryKv::default()),
        "a",
        clock.clone(),
    );
    open_window(&connector).await;
    let to = recipient(OPENID);
    connector.deliver(&reply("1"), &to).await.unwrap();
    assert_eq!(fake.state.fetches(), 1);
    clock.advance(time::Duration::seconds(790));
    connector.deliver(&reply("2"), &to).await.unwrap();
    assert_eq!(
        fake.state.fetches(),
        1,
        "refreshed before 80% of the lifetime"
    );
    clock.advance(time::Duration::seconds(20));
    connector.deliver(&reply("3"), &to).await.unwrap();
    assert_eq!(
        fake.state.fetches(),
        2,
        "not refreshed after 80% of the lifetime"
    );

    clock.advance(time::Duration::hours(48));
    let err = connector.deliver(&reply("4"), &to).await.unwrap_err();
    assert!(
        matches!(&err, DeliveryError::Permanent { code, .. } if code == "window_closed"),
        "{err:?}"
    );
    assert_eq!(fake.state.send_count(), 3);
}

#[tokio::test]
async fn a_refused_token_is_refreshed_once_and_the_send_retried_once() {
    let fake = FakeWechat::start().await;
    let connector = ready(&fake, "").await;
    let to = recipient(OPENID);
    connector.deliver(&reply("first"), &to).await.unwrap();
    // Someone else rotated the token: the cached one is refused with 40001.
    fake.state.rotate();
    connector.deliver(&reply("second"), &to).await.unwrap();
    assert_eq!(fake.state.fetches(), 2, "exactly one refresh");
    let sends = fake.state.sends.lock().unwrap().clone();
    let tokens: Vec<&str> = sends.iter().map(|(t, ..)| t.as_str()).collect();
    assert_eq!(
        tokens,
        ["token-1", "token-1", "token-2"],
        "exactly one retry"
    );
    connector.deliver(&reply("third"), &to).await.unwrap();
    assert_eq!(fake.state.fetches(), 2);
}

#[tokio::test]
async fn stable_token_repeating_the_refused_token_is_forced() {
    let fake = FakeWechat::start().await;
    let connector = ready(&fake, "").await;
    let to = recipient(OPENID);
    connector.deliver(&reply("first"), &to).await.unwrap();
    // WeChat refuses token-1 but stable_token would hand it out again.
    fake.state.revoked.lock().unwrap().insert("token-1".into());
    connector.deliver(&reply("second"), &to).await.unwrap();
    assert_eq!(fake.state.forced_fetches.load(Ordering::SeqCst), 1);
    let last = fake.state.sends.lock().unwrap().last().unwrap().0.clone();
    assert_eq!(last, "token-2");
}

#[tokio::test]
async fn a_token_refused_after_the_refresh_is_not_retried_again() {
    let fake = FakeWechat::start().await;
    let connector = ready(&fake, "").await;
    let to = recipient(OPENID);
    connector.deliver(&reply("first"), &to).await.unwrap();
    fake.state
        .revoked
        .lock()
        .unwrap()
        .extend(["token-1".to_owned(), "token-2".to_owned()]);
    let before = fake.state.send_count();
    let err = connector.deliver(&reply("second"), &to).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(fake.state.send_count() - before, 2);
}

#[tokio::test]
async fn a_closed_window_is_refused_without_calling_the_api() {
    let fake = FakeWechat::start().await;
    let connector = ready(&fake, "").await;
    let err = connector
        .deliver(&reply("hello"), &recipient("o-stranger"))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        DeliveryError::Permanent {
            code: "window_closed".into(),
            text: "the user has not written in the last 48 hours".into()
        }
    );
    assert_eq!(fake.state.fetches(), 0);
    assert_eq!(fake.state.send_count(), 0);
}

#[tokio::test]
async fn errcodes_in_a_200_are_classified() {
    let fake = FakeWechat::start().await;
    let connector = ready(&fake, "").await;
    let to = recipient(OPENID);
    type Check = fn(&DeliveryError) -> bool;
    let table: Vec<(i64, Check)> = vec![
        (
            -1,
            |e| matches!(e, DeliveryError::Retryable { code: Some(c), .. } if c == "-1"),
        ),
        (45009, |e| matches!(e, DeliveryError::RateLimited { .. })),
        (45011, |e| matches!(e, DeliveryError::RateLimited { .. })),
        (
            45015,
            |e| matches!(e, DeliveryError::Permanent { code, text } if code == "45015" && text.contains("48-hour")),
        ),
        (
            45047,
            |e| matches!(e, DeliveryError::Permanent { code, text } if code == "45047" && text.contains("quota")),
        ),
        (
            43004,
            |e| matches!(e, DeliveryError::Permanent { code, text } if code == "43004" && text.contains("follow")),
        ),
        (
            40003,
            |e| matches!(e, DeliveryError::Permanent { code, text } if code == "40003" && text.contains("openid")),
        ),
        (
            99999,
            |e| matches!(e, DeliveryError::Permanent { code, .. } if code == "99999"),
        ),
    ];
    for (code, expected) in table {
        fake.state.send_errcodes.lock().unwrap().push_back(code);
        let err = connector.deliver(&reply("x"), &to).await.unwrap_err();
        assert!(expected(&err), "errcode {code} gave {err:?}");
    }
    assert!(connector.deliver(&reply("x"), &to).await.is_ok());
}

#[tokio::test]
async fn unreachable_api_is_retryable_and_bad_credentials_are_permanent() {
    let connector_down = connector(&config("api_base = \"http://127.0.0.1:9\""));
    open_window(&connector_down).await;
    let err = connector_down
        .deliver(&reply("x"), &recipient(OPENID))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");

    let fake = FakeWechat::start().await;
    let mut cfg = config(&fake.config_line());
    cfg.app_secret = Some(switchboard_sdk::Secret::new("wrong"));
    let connector = connector(&cfg);
    open_window(&connector).await;
    let err = connector
        .deliver(&reply("x"), &recipient(OPENID))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DeliveryError::Permanent { code, .. } if code == "40125"),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_classic_endpoint_can_be_chosen() {
    let fake = FakeWechat::start().await;
    let connector = ready(&fake, "token_endpoint = \"classic\"").await;
    connector
        .deliver(&reply("x"), &recipient(OPENID))
        .await
        .unwrap();
    let requests = fake.state.token_requests.lock().unwrap().clone();
    assert_eq!(
        requests,
        vec![json!({"grant_type": "client_credential", "appid": APP_ID, "secret": "s3cret"})]
    );
}

#[tokio::test]
async fn typing_indicator() {
    let fake = FakeWechat::start().await;
    let connector = ready(&fake, "").await;
    connector.typing(OPENID, true).await.unwrap();
    connector.typing(OPENID, false).await.unwrap();
    let typing = fake.state.typing.lock().unwrap().clone();
    assert_eq!(
        typing.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>(),
        vec![
            json!({"touser": OPENID, "command": "Typing"}),
            json!({"touser": OPENID, "command": "CancelTyping"}),
        ]
    );
}

#[tokio::test]
async fn unsendable_content_is_refused_before_the_api() {
    let fake = FakeWechat::start().await;
    let connector = ready(&fake, "").await;
    let mut location = reply("x");
    location.content = Content::Location {
        latitude: 1.0,
        longitude: 2.0,
        label: None,
        extra: Default::default(),
    };
    let err = connector
        .deliver(&location, &recipient(OPENID))
        .await
        .unwrap_err();
    assert!(matches!(&err, DeliveryError::Permanent { code, .. } if code == "unsupported_content"));
    assert_eq!(fake.state.send_count(), 0);
}

#[tokio::test]
async fn the_console_status_tells_the_token_expiry_without_fetching_or_showing_it() {
    let fake = FakeWechat::start().await;
    let connector = ready(&fake, "").await;
    assert_eq!(connector.status().await, json!({"access_token": null}));
    assert!(
        fake.state.token_requests.lock().unwrap().is_empty(),
        "asking the status fetches no token"
    );
    connector
        .deliver(&reply("hello"), &recipient(OPENID))
        .await
        .unwrap();
    let status = connector.status().await;
    let token = &status["access_token"];
    let (expires, refresh) = (
        token["expires_in_secs"].as_i64().unwrap(),
        token["refresh_in_secs"].as_i64().unwrap(),
    );
    assert!(expires > 0 && refresh > 0 && refresh < expires, "{status}");
    assert!(!status.to_string().contains("token-1"), "{status}");
}
