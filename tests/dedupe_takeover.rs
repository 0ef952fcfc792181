//! A channel retry of a message whose pending dedupe claim was left by a killed instance:
//! the real daemon, RabbitMQ and Redis, with the dead instance's claim planted in Redis as
//! it would have left it. The retry is published under the envelope id the claim names once
//! the holder's heartbeat is gone, and refused (503) while it is there.

mod common;
mod webchat_support;

use std::time::Duration;

use common::*;
use redis::AsyncCommands;
use webchat_support::{redis_block, redis_cleanup};

const WAIT: Duration = Duration::from_secs(20);

/// A pending claim as a daemon writes it: `p:{envelope id}:{claim id}:{incarnation}:{instance}`.
fn pending_claim(envelope_id: &str, incarnation: &str, instance: &str) -> String {
    format!(
        "p:{envelope_id}:{}:{incarnation}:{instance}",
        ulid::Ulid::new()
    )
}

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection")
}

#[tokio::test]
async fn a_retry_takes_over_the_claim_of_a_dead_instance_under_its_envelope_id() {
    let prefix = unique_prefix("takeover");
    let scratch = Scratch::new(&prefix);
    let mut setup = Setup::new(&prefix);
    setup.extra = redis_block(&prefix);
    let mut daemon = Daemon::start(&scratch.0, &setup.config(&scratch.0));
    daemon.wait_broker().await;
    let client = reqwest::Client::new();
    let conn = amqp().await;
    let channel = conn.create_channel().await.unwrap();
    let general = setup.queue("general");
    let mut kv = redis().await;
    // `[redis] key_prefix` is "{prefix}:"; the pipeline's key is
    // `dedupe:{conversation id}:{dedupe key}`, an app conversation `app:{connector}:{user}`.
    let dedupe_key = |message_id: &str| format!("{prefix}:dedupe:app:shop:u-1:{message_id}");

    let own_heartbeat: String = wait_for("the daemon's heartbeat", WAIT, || {
        let mut kv = kv.clone();
        let key = format!("{prefix}:alive:{prefix}");
        async move { kv.get::<_, Option<String>>(key).await.unwrap() }
    })
    .await;
    assert!(
        ulid::Ulid::from_string(&own_heartbeat).is_ok(),
        "an incarnation: {own_heartbeat:?}"
    );

    // Killed mid-request: its claim stays, its heartbeat has expired.
    let lost = ulid::Ulid::new().to_string();
    let _: () = kv
        .set_ex(
            dedupe_key("m-1"),
            pending_claim(&lost, &ulid::Ulid::new().to_string(), "ghost"),
            600,
        )
        .await
        .unwrap();
    let (status, answer) = post_signed(&client, &daemon, text_message("m-1", "u-1", "hi")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["envelope_id"], lost.as_str());
    assert_eq!(answer["duplicate"], false);
    let got = take(&conn, &general, 1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body["id"], lost.as_str());
    assert_eq!(got[0].body["dedupe_key"], "m-1");
    let recorded: Option<String> = kv.get(dedupe_key("m-1")).await.unwrap();
    assert_eq!(recorded, Some(format!("d:{lost}")));
    assert_eq!(
        daemon
            .metric(
                "switchboard_dedupe_takeovers_total",
                "reason=\"holder_gone\""
            )
            .await,
        1.0
    );
    assert!(
        daemon
            .log_text()
            .contains("took over a pending dedupe claim"),
        "the takeover is logged"
    );

    // Still running elsewhere: its heartbeat names the incarnation that made the claim.
    let busy = ulid::Ulid::new().to_string();
    let in_flight = ulid::Ulid::new().to_string();
    let heartbeat = format!("{prefix}:alive:busy");
    let _: () = kv.set_ex(&heartbeat, &busy, 15).await.unwrap();
    let _: () = kv
        .set_ex(
            dedupe_key("m-2"),
            pending_claim(&in_flight, &busy, "busy"),
            600,
        )
        .await
        .unwrap();
    let (status, answer) = post_signed(&client, &daemon, text_message("m-2", "u-1", "hi")).await;
    assert_eq!(status, 503, "{answer}");
    // Then it dies: its heartbeat goes, and the retry is accepted as that claim's envelope.
    let _: () = kv.del(&heartbeat).await.unwrap();
    let (status, answer) = post_signed(&client, &daemon, text_message("m-2", "u-1", "hi")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["envelope_id"], in_flight.as_str());
    let got = take(&conn, &general, 1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body["id"], in_flight.as_str());
    assert_eq!(got[0].body["dedupe_key"], "m-2");
    assert_eq!(
        depth(&channel, &general).await,
        0,
        "the 503 published nothing"
    );
    assert_eq!(
        daemon
            .metric("switchboard_dedupe_takeovers_total", "")
            .await,
        2.0
    );

    // A clean stop withdraws the heartbeat at once.
    assert!(daemon.terminate(WAIT).await.success());
    let left: Option<String> = kv.get(format!("{prefix}:alive:{prefix}")).await.unwrap();
    assert_eq!(left, None);

    cleanup(&prefix, &[setup.queue("claims"), general]).await;
    redis_cleanup(&prefix);
}
