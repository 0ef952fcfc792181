//! The app channel end to end: the real binary, real RabbitMQ, a local app backend.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_signed_message_arrives_on_its_agent_queue_with_every_contract_field() {
    let prefix = unique_prefix("contract");
    let scratch = Scratch::new(&prefix);
    let setup = Setup::new(&prefix);
    let daemon = Daemon::start(&scratch.0, &setup.config(&scratch.0));
    daemon.wait_broker().await;
    let client = reqwest::Client::new();

    let (status, answer) = post_signed(
        &client,
        &daemon,
        text_message("m-1", "u-vip", "my parcel is damaged"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "accepted");
    assert_eq!(answer["duplicate"], false);
    let (status, _) = post_signed(
        &client,
        &daemon,
        text_message("m-2", "u-vip", "hello again"),
    )
    .await;
    assert_eq!(status, 200);

    let conn = amqp().await;
    let claims = take(&conn, &setup.queue("claims"), 1, WAIT).await;
    let general = take(&conn, &setup.queue("general"), 1, WAIT).await;
    assert_eq!((claims.len(), general.len()), (1, 1));

    let m = &claims[0];
    let e = &m.body;
    assert_eq!(e["schema"], "switchboard.envelope.v1");
    assert_eq!(e["id"], answer["envelope_id"]);
    assert!(
        ulid::Ulid::from_string(e["id"].as_str().unwrap()).is_ok(),
        "id is a ULID"
    );
    assert_eq!(e["conversation_id"], "app:shop:u-vip");
    assert_eq!(e["sequence"], 1);
    assert_eq!(e["channel"], json!({"kind": "app", "connector_id": "shop"}));
    assert_eq!(e["sender"]["channel_user_id"], "u-vip");
    assert_eq!(e["sender"]["tier"], "vip");
    assert_eq!(e["sender"]["display_name"], "Test User");
    assert_eq!(e["sender"]["phone"], "+8613800138000");
    let received_at = e["received_at"].as_str().unwrap();
    assert!(
        time::OffsetDateTime::parse(received_at, &time::format_description::well_known::Rfc3339)
            .is_ok()
            && received_at.ends_with('Z'),
        "received_at {received_at} is RFC 3339 UTC"
    );
    assert_eq!(
        e["content"],
        json!({"type": "text", "text": "my parcel is damaged"})
    );
    assert!(e["entities"].is_array() && e["flags"].is_array());
    assert_eq!(e["route"]["skill"], "claims");
    assert_eq!(e["route"]["tier"], "vip");
    assert_eq!(e["route"]["queue_key"], "claims.vip");
    assert_eq!(e["route"]["priority"], 6);
    assert_eq!(e["route"]["rule"], "damaged");
    assert_eq!(e["dedupe_key"], "m-1");
    assert_eq!(m.routing_key, "claims.vip");

    let p = &m.properties;
    assert_eq!(
        p.message_id().as_ref().map(|s| s.to_string()),
        Some(answer["envelope_id"].as_str().unwrap().to_owned())
    );
    assert_eq!(*p.delivery_mode(), Some(2), "persistent");
    assert_eq!(
        p.content_type().as_ref().map(|s| s.to_string()).as_deref(),
        Some("application/json")
    );
    assert_eq!(*p.priority(), Some(6));
    assert_eq!(
        m.header("x-schema").as_deref(),
        Some("switchboard.envelope.v1")
    );
    assert_eq!(m.header("x-channel").as_deref(), Some("app"));
    assert_eq!(
        m.header("x-conversation-id").as_deref(),
        Some("app:shop:u-vip")
    );

    assert_eq!(
        general[0].body["sequence"], 2,
        "sequence counts per conversation"
    );
    assert_eq!(general[0].body["route"]["rule"], "default");

    cleanup(&prefix, &[setup.queue("claims"), setup.queue("general")]).await;
}

#[tokio::test]
async fn bad_input_gets_its_status_publishes_nothing_and_is_counted() {
    let prefix = unique_prefix("badinput");
    let scratch = Scratch::new(&prefix);
    let mut setup = Setup::new(&prefix);
    setup.per_user_per_minute = 3;
    setup.max_body_bytes = 2048;
    let daemon = Daemon::start(&scratch.0, &setup.config(&scratch.0));
    daemon.wait_broker().await;
    let client = reqwest::Client::new();
    let url = daemon.url("/app/shop/messages");

    let body = text_message("bad-1", "u-1", "hello");
    let (ts, sig) = sign(&body, now());
    let forged = client
        .post(&url)
        .header("X-Switchboard-Timestamp", &ts)
        .header("X-Switchboard-Signature", "0".repeat(64))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let (stale_ts, stale_sig) = sign(&body, now() - 3600);
    let stale = client
        .post(&url)
        .header("X-Switchboard-Timestamp", stale_ts)
        .header("X-Switchboard-Signature", stale_sig)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 403);
    let unsigned = client.post(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(unsigned.status(), 403);

    let (status, answer) = post_signed(
        &client,
        &daemon,
        br#"{"message_id":"x","content":{"type":"text","text":"hi"}}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        answer["detail"].as_str().unwrap().contains("user_id"),
        "the 400 names the field: {answer}"
    );
    let (status, _) = post_signed(&client, &daemon, b"{not json".to_vec()).await;
    assert_eq!(status, 400);

    let huge = text_message("big", "u-1", &"x".repeat(4000));
    let (status, _) = post_signed(&client, &daemon, huge).await;
    assert_eq!(status, 413);

    for i in 0..3 {
        let (status, _) = post_signed(
            &client,
            &daemon,
            text_message(&format!("ok-{i}"), "u-flood", "hi"),
        )
        .await;
        assert_eq!(status, 200);
    }
    let flood = {
        let body = text_message("ok-3", "u-flood", "hi");
        let (ts, sig) = sign(&body, now());
        client
            .post(&url)
            .header("X-Switchboard-Timestamp", ts)
            .header("X-Switchboard-Signature", sig)
            .body(body)
            .send()
            .await
            .unwrap()
    };
    assert_eq!(flood.status(), 429);
    assert!(flood.headers().contains_key("retry-after"));

    let conn = amqp().await;
    let channel = conn.create_channel().await.unwrap();
    let got = take(&conn, &setup.queue("general"), 3, WAIT).await;
    let ids: Vec<&str> = got
        .iter()
        .map(|m| m.body["dedupe_key"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["ok-0", "ok-1", "ok-2"],
        "only the three good messages were published"
    );
    assert_eq!(depth(&channel, &setup.queue("general")).await, 0);
    assert_eq!(depth(&channel, &setup.queue("claims")).await, 0);
    let _ = (ts, sig);

    for (reason, count) in [
        ("bad_signature", 2.0),
        ("stale_timestamp", 1.0),
        ("malformed", 2.0),
        ("oversize", 1.0),
        ("rate_limited", 1.0),
    ] {
        let seen = daemon
            .metric(
                "switchboard_rejections_total",
                &format!("reason=\"{reason}\""),
            )
            .await;
        assert_eq!(seen, count, "rejections counted for {reason}");
    }
    cleanup(&prefix, &[setup.queue("claims"), setup.queue("general")]).await;
}

#[tokio::test]
async fn a_retried_message_is_published_once_and_answered_as_a_duplicate() {
    let prefix = unique_prefix("dedupe");
    let scratch = Scratch::new(&prefix);
    let setup = Setup::new(&prefix);
    let daemon = Daemon::start(&scratch.0, &setup.config(&scratch.0));
    daemon.wait_broker().await;
    let client = reqwest::Client::new();

    let body = text_message("same-id", "u-1", "hello");
    let posts = (0..5).map(|_| post_signed(&client, &daemon, body.clone()));
    let answers = futures_util::future::join_all(posts).await;
    let accepted: Vec<_> = answers.iter().filter(|(s, _)| *s == 200).collect();
    assert!(
        !accepted.is_empty(),
        "at least one attempt is accepted: {answers:?}"
    );
    for (status, _) in &answers {
        assert!(
            *status == 200 || *status == 503,
            "a concurrent retry is accepted or asked to retry, got {status}"
        );
    }
    let (status, again) = post_signed(&client, &daemon, body).await;
    assert_eq!(status, 200);
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["envelope_id"], accepted[0].1["envelope_id"]);

    let conn = amqp().await;
    let channel = conn.create_channel().await.unwrap();
    let got = take(&conn, &setup.queue("general"), 1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        depth(&channel, &setup.queue("general")).await,
        0,
        "published exactly once"
    );
    cleanup(&prefix, &[setup.queue("claims"), setup.queue("general")]).await;
}

#[tokio::test]
async fn one_conversation_keeps_its_order_and_sequence_without_gaps() {
    let prefix = unique_prefix("order");
    let scratch = Scratch::new(&prefix);
    let setup = Setup::new(&prefix);
    let daemon = Daemon::start(&scratch.0, &setup.config(&scratch.0));
    daemon.wait_broker().await;
    let client = reqwest::Client::new();

    let posts = (0..40).map(|i| {
        post_signed(
            &client,
            &daemon,
            text_message(&format!("o-{i}"), "u-order", "hi"),
        )
    });
    for (status, answer) in futures_util::future::join_all(posts).await {
        assert_eq!(status, 200, "{answer}");
    }
    let conn = amqp().await;
    let got = take(&conn, &setup.queue("general"), 40, WAIT).await;
    let sequences: Vec<u64> = got
        .iter()
        .map(|m| m.body["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(
        sequences,
        (1..=40).collect::<Vec<u64>>(),
        "queue order is sequence order, no gaps"
    );
    cleanup(&prefix, &[setup.queue("claims"), setup.queue("general")]).await;
}

fn reply(id: &str, user: &str, text: &str) -> serde_json::Value {
    json!({
        "schema": "switchboard.reply.v1",
        "id": id,
        "conversation_id": format!("app:shop:{user}"),
        "content": {"type": "text", "text": text},
        "agent": {"id": "a-7", "name": "Wang"},
    })
}

#[tokio::test]
async fn replies_reach_the_backend_signed_once_with_receipts_and_retries() {
    let prefix = unique_prefix("replies");
    let scratch = Scratch::new(&prefix);
    let (backend, url) = Backend::start().await;
    let mut setup = Setup::new(&prefix);
    setup.webhook_url = url;
    let daemon = Daemon::start(&scratch.0, &setup.config(&scratch.0));
    daemon.wait_broker().await;
    let conn = amqp().await;
    let channel = conn.create_channel().await.unwrap();
    let events = events_queue(&channel, &prefix, "delivery.*").await;

    // Plain success, published twice by the helpdesk: sent once.
    publish_reply(
        &channel,
        &prefix,
        &reply("r-ok", "u-1", "your parcel is on its way"),
    )
    .await;
    publish_reply(
        &channel,
        &prefix,
        &reply("r-ok", "u-1", "your parcel is on its way"),
    )
    .await;
    let got = take(&conn, &events, 1, WAIT).await;
    assert_eq!(got[0].body["kind"], "delivery.succeeded");
    assert_eq!(got[0].body["reply_id"], "r-ok");
    assert_eq!(got[0].body["channel_message_id"], "backend-1");
    assert_eq!(got[0].routing_key, "delivery.succeeded");
    wait_for("the duplicate to be handled", WAIT, || async {
        (daemon
            .metric("switchboard_deliveries_total", "outcome=\"duplicate\"")
            .await
            >= 1.0)
            .then_some(())
    })
    .await;
    let received = backend.received();
    assert_eq!(received.len(), 1, "a reply published twice is sent once");
    assert_eq!(received[0]["user_id"], "u-1");
    assert_eq!(
        received[0]["reply"]["content"]["text"],
        "your parcel is on its way"
    );
    assert_eq!(
        *backend.bad_signatures.lock().unwrap(),
        0,
        "every webhook is signed"
    );

    // Retryable twice, then success.
    backend
        .script
        .lock()
        .unwrap()
        .extend([Answer::Status(503), Answer::Status(503)]);
    publish_reply(&channel, &prefix, &reply("r-retry", "u-2", "retry me")).await;
    let got = take(&conn, &events, 1, WAIT).await;
    assert_eq!(got[0].body["kind"], "delivery.succeeded");
    assert_eq!(got[0].body["reply_id"], "r-retry");
    assert_eq!(
        daemon
            .metric("switchboard_deliveries_total", "outcome=\"retried\"")
            .await,
        2.0
    );

    // Permanent.
    backend.script.lock().unwrap().push(Answer::Status(404));
    publish_reply(&channel, &prefix, &reply("r-gone", "u-3", "nobody home")).await;
    let got = take(&conn, &events, 1, WAIT).await;
    assert_eq!(got[0].body["kind"], "delivery.failed");
    assert_eq!(got[0].body["reply_id"], "r-gone");
    assert_eq!(got[0].body["retryable"], false);
    assert_eq!(got[0].body["code"], "http_404");

    // Retryable until the attempts run out.
    backend
        .script
        .lock()
        .unwrap()
        .extend([Answer::Status(500); 4]);
    publish_reply(&channel, &prefix, &reply("r-down", "u-4", "backend down")).await;
    let got = take(&conn, &events, 1, WAIT).await;
    assert_eq!(got[0].body["kind"], "delivery.failed");
    assert_eq!(got[0].body["retryable"], true);
    assert_eq!(got[0].body["reason"], "retries_exhausted");

    assert_eq!(backend.received().len(), 2);
    cleanup(&prefix, &[setup.queue("claims"), setup.queue("general")]).await;
}

#[tokio::test]
async fn malformed_replies_are_dead_lettered_with_the_reason() {
    let prefix = unique_prefix("deadletter");
    let scratch = Scratch::new(&prefix);
    let setup = Setup::new(&prefix);
    let daemon = Daemon::start(&scratch.0, &setup.config(&scratch.0));
    daemon.wait_broker().await;
    let conn = amqp().await;
    let channel = conn.create_channel().await.unwrap();
    publish_reply(
        &channel,
        &prefix,
        &json!({"schema": "switchboard.reply.v1", "id": "r-1"}),
    )
    .await;
    let dead = take(&conn, &format!("{prefix}.dead"), 1, WAIT).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].header("x-reason").as_deref(),
        Some("malformed_reply")
    );
    assert!(
        dead[0]
            .header("x-error")
            .unwrap()
            .contains("conversation_id")
    );
    assert_eq!(dead[0].body["id"], "r-1", "the original body is kept");
    assert_eq!(
        depth(&channel, &format!("{prefix}.outbound")).await,
        0,
        "and acked"
    );
    cleanup(&prefix, &[setup.queue("claims"), setup.queue("general")]).await;
}

#[tokio::test]
async fn it_comes_up_without_a_broker_and_delivers_the_spool_once_one_appears() {
    let prefix = unique_prefix("nobroker");
    let scratch = Scratch::new(&prefix);
    let setup = Setup::new(&prefix);
    // A port nothing listens on stands in for the absent broker; the restart below points
    // the same spool at the real one.
    let config = setup
        .config(&scratch.0)
        .replace(&amqp_url(), "amqp://guest:guest@127.0.0.1:1/%2f");
    let mut daemon = Daemon::start(&scratch.0, &config);
    let client = reqwest::Client::new();
    let ready: serde_json::Value = reqwest::get(daemon.admin_url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["broker"], "down");
    assert_eq!(ready["spool"]["accepting"], true);
    for i in 0..10 {
        let (status, _) = post_signed(
            &client,
            &daemon,
            text_message(&format!("s-{i}"), "u-1", "hi"),
        )
        .await;
        assert_eq!(status, 200, "accepted into the spool");
    }
    assert_eq!(
        daemon
            .metric("switchboard_accepted_total", "outcome=\"spooled\"")
            .await,
        10.0
    );
    let status = daemon.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");

    let daemon = Daemon::start(&scratch.0, &setup.config(&scratch.0));
    daemon.wait_broker().await;
    let conn = amqp().await;
    let got = take(&conn, &setup.queue("general"), 10, WAIT).await;
    let keys: Vec<&str> = got
        .iter()
        .map(|m| m.body["dedupe_key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        (0..10).map(|i| format!("s-{i}")).collect::<Vec<_>>(),
        "drained in order"
    );
    let sequences: Vec<u64> = got
        .iter()
        .map(|m| m.body["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, (1..=10).collect::<Vec<_>>());
    cleanup(&prefix, &[setup.queue("claims"), setup.queue("general")]).await;
}
