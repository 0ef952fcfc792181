//! The web chat channel end to end: the real binary, real RabbitMQ (and Redis for two
//! instances), a Rust WebSocket client speaking protocol version 1.

mod common;
mod webchat_support;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use serde_json::json;
use webchat_support::*;

const WAIT: Duration = Duration::from_secs(20);

fn start(scratch: &Scratch, setup: &Setup) -> Daemon {
    Daemon::start(&scratch.0, &setup.config(&scratch.0))
}

#[tokio::test]
async fn a_visitor_message_becomes_an_envelope_and_a_reply_becomes_a_frame() {
    let prefix = unique_prefix("webchat-flow");
    let scratch = Scratch::new(&prefix);
    let mut setup = Setup::new(&prefix);
    setup.extra = webchat_table("", "");
    let daemon = start(&scratch, &setup);
    daemon.wait_broker().await;
    let conn = amqp().await;
    let channel = conn.create_channel().await.unwrap();
    let events = events_queue(&channel, &prefix, "delivery.*").await;

    let (mut ws, ready) = hello(&daemon, "v=1", 0, None).await;
    let user = user_of(&ready);
    let conversation = format!("webchat:site:{user}");
    assert_eq!(ready["conversation_id"], conversation.as_str());
    send(&mut ws, message("c-1", "my parcel is damaged 📦")).await;
    let ack = recv(&mut ws).await;
    assert_eq!(
        (
            ack["type"].as_str(),
            ack["id"].as_str(),
            ack["duplicate"].as_bool()
        ),
        (Some("ack"), Some("c-1"), Some(false)),
        "{ack}"
    );

    let got = take(&conn, &setup.queue("claims"), 1, WAIT).await;
    assert_eq!(got.len(), 1, "the envelope reached its agent queue");
    let e = &got[0].body;
    assert_eq!(e["schema"], "switchboard.envelope.v1");
    assert_eq!(e["id"], ack["envelope_id"]);
    assert_eq!(e["conversation_id"], conversation.as_str());
    assert_eq!(
        e["channel"],
        json!({"kind": "webchat", "connector_id": "site"})
    );
    assert_eq!(e["sender"]["channel_user_id"], user.as_str());
    assert_eq!(
        e["content"],
        json!({"type": "text", "text": "my parcel is damaged 📦"})
    );
    assert_eq!(e["dedupe_key"], "c-1");
    assert_eq!(e["route"]["skill"], "claims");
    assert_eq!(got[0].header("x-channel").as_deref(), Some("webchat"));

    publish_reply(
        &channel,
        &prefix,
        &reply(&conversation, "r-1", "Sorry! We will replace it."),
    )
    .await;
    let frame = recv_kind(&mut ws, "agent").await;
    assert_eq!(frame["seq"], 1);
    assert_eq!(frame["id"], "r-1");
    assert_eq!(frame["content"]["text"], "Sorry! We will replace it.");
    assert_eq!(frame["agent"], "Han Meimei");

    send(&mut ws, json!({"type": "read", "seq": 1})).await;
    let receipts = take(&conn, &events, 2, WAIT).await;
    // The dispatcher reports success after deliver() returns, which can be after the
    // widget already read the frame: the two events may come in either order.
    let mut kinds: Vec<&str> = receipts.iter().map(|r| r.routing_key.as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        ["delivery.read", "delivery.succeeded"],
        "stored, and shown"
    );
    let epoch = frame["epoch"].as_str().unwrap();
    for receipt in &receipts {
        assert_eq!(receipt.body["reply_id"], "r-1");
        assert_eq!(receipt.body["channel_message_id"], format!("{epoch}:1"));
        assert_eq!(receipt.body["conversation_id"], conversation.as_str());
    }
    cleanup(&prefix, &[setup.queue("claims"), setup.queue("general")]).await;
}

#[tokio::test]
async fn drop_resume_and_resend_lose_nothing_duplicate_nothing_and_keep_order() {
    let prefix = unique_prefix("webchat-resume");
    let scratch = Scratch::new(&prefix);
    let mut setup = Setup::new(&prefix);
    setup.extra = webchat_table("", "");
    let daemon = start(&scratch, &setup);
    daemon.wait_broker().await;
    let conn = amqp().await;
    let channel = conn.create_channel().await.unwrap();

    let (mut ws, ready) = hello(&daemon, "v=1", 0, None).await;
    let signed = ready["visitor"].as_str().unwrap().to_owned();
    let conversation = ready["conversation_id"].as_str().unwrap().to_owned();
    let query = format!("v=1&visitor={signed}");

    // A resend of an acked id on the same socket is acked again and not published again.
    send(&mut ws, message("m-1", "first")).await;
    send(&mut ws, message("m-1", "first")).await;
    let (a, b) = (recv(&mut ws).await, recv(&mut ws).await);
    assert_eq!(
        (a["id"].as_str(), a["duplicate"].as_bool()),
        (Some("m-1"), Some(false))
    );
    assert_eq!(
        (b["id"].as_str(), b["duplicate"].as_bool()),
        (Some("m-1"), Some(true))
    );
    assert_eq!(b["envelope_id"], a["envelope_id"]);

    // The dispatcher sends replies concurrently, so each is published once the previous
    // one is stored: the order the helpdesk meant is then the order to check.
    let delivered = || async {
        daemon
            .metric("switchboard_deliveries_total", "outcome=\"succeeded\"")
            .await
    };
    for i in 1..=2 {
        publish_reply(
            &channel,
            &prefix,
            &reply(&conversation, &format!("r-{i}"), &format!("reply {i}")),
        )
        .await;
        wait_for("the reply stored", WAIT, || async {
            (delivered().await >= f64::from(i)).then_some(())
        })
        .await;
    }
    let first = recv_kind(&mut ws, "agent").await;
    assert_eq!(first["seq"], 1);
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    // m-2 goes out and the link drops before its ack can arrive: the widget keeps it.
    send(&mut ws, message("m-2", "second")).await;
    drop(ws);

    // Replies while the visitor is away are stored.
    for i in 3..=4 {
        publish_reply(
            &channel,
            &prefix,
            &reply(&conversation, &format!("r-{i}"), &format!("reply {i}")),
        )
        .await;
        wait_for("the reply stored", WAIT, || async {
            (delivered().await >= f64::from(i)).then_some(())
        })
        .await;
    }

    // Resume from seq 1: 2, 3, 4 exactly once, in order; then resend the unacked m-2.
    let (mut ws, ready) = hello(&daemon, &query, 1, Some(&epoch)).await;
    assert_eq!(
        (ready["seq"].as_u64(), ready["reset"].as_bool()),
        (Some(4), Some(false))
    );
    let mut seen = vec![first["id"].as_str().unwrap().to_owned()];
    for expected in 2..=4 {
        let frame = recv_kind(&mut ws, "agent").await;
        assert_eq!(frame["seq"], expected, "{frame}");
        seen.push(frame["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen, ["r-1", "r-2", "r-3", "r-4"]);
    send(&mut ws, message("m-2", "second")).await;
    send(&mut ws, message("m-3", "third")).await;
    let acks = [
        recv_kind(&mut ws, "ack").await,
        recv_kind(&mut ws, "ack").await,
    ];
    assert_eq!(acks[0]["id"], "m-2");
    assert_eq!(acks[1]["id"], "m-3");

    // Nothing more arrives: no replayed reply twice.
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(
        recv(&mut ws).await["type"],
        "pong",
        "no agent frame after the replay"
    );

    let got = take(&conn, &setup.queue("general"), 10, Duration::from_secs(3)).await;
    let keys: Vec<&str> = got
        .iter()
        .map(|m| m.body["dedupe_key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["m-1", "m-2", "m-3"],
        "each message published once, in order"
    );
    let sequences: Vec<u64> = got
        .iter()
        .map(|m| m.body["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, [1, 2, 3]);
    cleanup(&prefix, &[setup.queue("claims"), setup.queue("general")]).await;
}

#[tokio::test]
async fn bad_token_wrong_origin_oversize_flood_and_caps_are_refused_and_counted() {
    let prefix = unique_prefix("webchat-refuse");
    let scratch = Scratch::new(&prefix);
    let mut setup = Setup::new(&prefix);
    setup.extra = webchat_table(
        "",
        "max_frame_bytes = 2048\nframes_per_second = 2\nframe_burst = 10\nmax_connections_per_ip = 2",
    );
    let daemon = start(&scratch, &setup);
    daemon.wait_broker().await;
    let own = own_origin(&daemon);
    let refused = |reason: &'static str| {
        let daemon = &daemon;
        async move {
            daemon
                .metric(
                    "switchboard_rejections_total",
                    &format!("channel=\"webchat\",connector=\"site\",reason=\"{reason}\""),
                )
                .await
        }
    };

    let mut ws = open(&daemon, "v=1&token=not.a.token", Some(&own), "10.0.1.1").await;
    let end = closed(&mut ws).await;
    assert_eq!(end.frames[0]["code"], "bad_token", "{end:?}");
    assert_eq!(end.code, Some(4003));
    let forged = make_token_with("another-key-0123456789");
    let mut ws = open(
        &daemon,
        &format!("v=1&token={forged}"),
        Some(&own),
        "10.0.1.1",
    )
    .await;
    assert_eq!(closed(&mut ws).await.frames[0]["code"], "bad_token");
    let mut ws = open(
        &daemon,
        "v=1",
        Some("https://phish.example.net"),
        "10.0.1.1",
    )
    .await;
    let end = closed(&mut ws).await;
    assert_eq!(end.frames[0]["code"], "origin_not_allowed");
    assert_eq!(end.code, Some(4003));
    assert_eq!(refused("bad_signature").await, 3.0);

    // Three sockets from one address where two are allowed.
    let _one = open(&daemon, "v=1", Some(&own), "10.0.2.2").await;
    let _two = open(&daemon, "v=1", Some(&own), "10.0.2.2").await;
    let mut three = open(&daemon, "v=1", Some(&own), "10.0.2.2").await;
    let end = closed(&mut three).await;
    assert_eq!(end.frames[0]["code"], "too_many_connections");
    assert_eq!(end.code, Some(4029));
    assert_eq!(refused("rate_limited").await, 1.0);

    // A valid customer token is accepted.
    let token = make_token_with(SITE_KEY);
    let mut ws = open(
        &daemon,
        &format!("v=1&token={token}"),
        Some(&own),
        "10.0.3.3",
    )
    .await;
    send(&mut ws, json!({"type": "hello", "v": 1})).await;
    let ready = recv(&mut ws).await;
    assert_eq!(ready["conversation_id"], "webchat:site:c-cust-42");

    // A frame of no known type: a clear error, the socket stays.
    send(&mut ws, json!({"type": "shout"})).await;
    let error = recv(&mut ws).await;
    assert_eq!(
        (error["code"].as_str(), error["fatal"].as_bool()),
        (Some("bad_frame"), Some(false)),
        "{error}"
    );

    // Oversize frame: a clear error, close 1009.
    send(&mut ws, message("big", &"x".repeat(3000))).await;
    let end = closed(&mut ws).await;
    assert_eq!(end.frames.last().unwrap()["code"], "too_big", "{end:?}");
    assert_eq!(end.code, Some(1009));

    // Flood: a clear error, close 1008.
    let (mut ws, _) = hello(&daemon, "v=1", 0, None).await;
    for _ in 0..30 {
        if futures_util::SinkExt::send(
            &mut ws,
            tokio_tungstenite::tungstenite::Message::text(r#"{"type":"typing","on":true}"#),
        )
        .await
        .is_err()
        {
            break;
        }
    }
    let end = closed(&mut ws).await;
    assert_eq!(end.frames.last().unwrap()["code"], "flood", "{end:?}");
    assert_eq!(end.code, Some(1008));
    // Refusals inside a socket have no HTTP answer; the connector counts them through
    // the sdk's seam in the same metric.
    let counted = |reason: &'static str| {
        let refused = &refused;
        async move {
            wait_for(&format!("{reason} counted"), WAIT, || async {
                let n = refused(reason).await;
                (n >= 1.0).then_some(n)
            })
            .await
        }
    };
    assert_eq!(counted("oversize").await, 1.0);
    assert_eq!(counted("flood").await, 1.0);
    assert_eq!(
        counted("malformed").await,
        1.0,
        "the frame of an unknown type"
    );
    cleanup(&prefix, &[setup.queue("claims"), setup.queue("general")]).await;
}

#[tokio::test]
async fn an_idle_socket_is_closed_and_counted() {
    let prefix = unique_prefix("webchat-idle");
    let scratch = Scratch::new(&prefix);
    let mut setup = Setup::new(&prefix);
    setup.extra = webchat_table("", "idle_timeout_secs = 10\nping_interval_secs = 5");
    let daemon = start(&scratch, &setup);
    daemon.wait_broker().await;

    let (mut ws, _) = hello(&daemon, "v=1", 0, None).await;
    let end = closed(&mut ws).await;
    assert_eq!(end.code, Some(1001), "{end:?}");
    let idle = daemon
        .metric(
            "switchboard_rejections_total",
            "channel=\"webchat\",connector=\"site\",reason=\"idle_timeout\"",
        )
        .await;
    assert_eq!(idle, 1.0, "counted before the close was sent");
    cleanup(&prefix, &[setup.queue("claims"), setup.queue("general")]).await;
}

/// A customer token as the site's backend makes it, signed with `key`.
fn make_token_with(key: &str) -> String {
    switchboard_connector_webchat::make_site_token(
        key,
        &json!({"sub": "cust-42", "exp": now() + 600, "name": "Li Lei"}),
    )
}

#[tokio::test]
async fn a_visitor_on_one_instance_gets_replies_consumed_by_either() {
    let prefix = unique_prefix("webchat-two");
    let scratch_a = Scratch::new(&format!("{prefix}-a"));
    let scratch_b = Scratch::new(&format!("{prefix}-b"));
    let mut setup = Setup::new(&prefix);
    setup.extra = format!("{}{}", webchat_table("", ""), redis_block(&prefix));
    let config = |scratch: &Scratch, name: &str| {
        setup.config(&scratch.0).replace(
            &format!("instance_id = \"{prefix}\""),
            &format!("instance_id = \"{name}\""),
        )
    };
    let a = Daemon::start(&scratch_a.0, &config(&scratch_a, "a"));
    let b = Daemon::start(&scratch_b.0, &config(&scratch_b, "b"));
    a.wait_broker().await;
    b.wait_broker().await;
    let conn = amqp().await;
    let channel = conn.create_channel().await.unwrap();

    let (mut ws, ready) = hello(&a, "v=1", 0, None).await;
    let conversation = ready["conversation_id"].as_str().unwrap().to_owned();
    // Both instances consume switchboard.outbound; RabbitMQ spreads the replies over them.
    const N: u64 = 20;
    for i in 1..=N {
        publish_reply(
            &channel,
            &prefix,
            &reply(&conversation, &format!("r-{i}"), &format!("reply {i}")),
        )
        .await;
    }
    let mut texts = HashSet::new();
    for expected in 1..=N {
        let frame = recv_kind(&mut ws, "agent").await;
        assert_eq!(
            frame["seq"], expected,
            "numbers without gaps, in order: {frame}"
        );
        assert!(
            texts.insert(frame["content"]["text"].as_str().unwrap().to_owned()),
            "{frame}"
        );
    }
    assert_eq!(texts.len() as u64, N, "every reply, once");
    let filter = "channel=\"webchat\",connector=\"site\",outcome=\"succeeded\"";
    // A frame goes out inside deliver(), the metric counts after it returns.
    let (on_a, on_b) = wait_for("every delivery counted", WAIT, || async {
        let on_a = a.metric("switchboard_deliveries_total", filter).await;
        let on_b = b.metric("switchboard_deliveries_total", filter).await;
        (on_a + on_b >= N as f64).then_some((on_a, on_b))
    })
    .await;
    assert_eq!(on_a + on_b, N as f64);
    assert!(
        on_b >= 1.0,
        "instance b delivered some ({on_b}) and the visitor on a got them"
    );

    // Nothing more comes: pings find no missed message.
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(recv(&mut ws).await["type"], "pong");
    cleanup(&prefix, &[setup.queue("claims"), setup.queue("general")]).await;
    redis_cleanup(&prefix);
}

#[tokio::test]
async fn a_site_token_carries_customer_and_tier_into_the_envelope_and_its_route() {
    let prefix = unique_prefix("webchat-tier");
    let scratch = Scratch::new(&prefix);
    let mut setup = Setup::new(&prefix);
    // A queue only vip customers' envelopes reach, beside the per-skill ones.
    setup.extra = format!(
        "{}\n[[queues]]\nname = \"{prefix}.agents.vip\"\nbindings = [\"*.vip\"]\n",
        webchat_table("", "")
    );
    let daemon = start(&scratch, &setup);
    daemon.wait_broker().await;
    let conn = amqp().await;
    let vip_queue = format!("{prefix}.agents.vip");

    let token = switchboard_connector_webchat::make_site_token(
        SITE_KEY,
        &json!({
            "sub": "cust-7", "exp": now() + 600, "name": "Li Lei",
            "phone": "+8613800000007", "tier": "vip",
        }),
    );
    let (mut ws, ready) = hello(&daemon, &format!("v=1&token={token}"), 0, None).await;
    assert_eq!(ready["conversation_id"], "webchat:site:c-cust-7");
    send(&mut ws, message("t-1", "where is my order?")).await;
    assert_eq!(recv_kind(&mut ws, "ack").await["id"], "t-1");

    let got = take(&conn, &vip_queue, 1, WAIT).await;
    assert_eq!(got.len(), 1, "the envelope reached the vip queue");
    let e = &got[0].body;
    assert_eq!(e["conversation_id"], "webchat:site:c-cust-7");
    assert_eq!(
        e["sender"],
        json!({
            "channel_user_id": "c-cust-7", "customer_id": "cust-7", "tier": "vip",
            "display_name": "Li Lei", "phone": "+8613800000007",
        })
    );
    assert_eq!(e["route"]["tier"], "vip");
    assert_eq!(e["route"]["queue_key"], "general.vip");

    // A token naming a tier routing does not know is routed by the daemon's own lookup.
    let token = switchboard_connector_webchat::make_site_token(
        SITE_KEY,
        &json!({"sub": "cust-8", "exp": now() + 600, "tier": "platinum"}),
    );
    let (mut ws, _) = hello(&daemon, &format!("v=1&token={token}"), 0, None).await;
    send(&mut ws, message("t-2", "where is my order?")).await;
    assert_eq!(recv_kind(&mut ws, "ack").await["id"], "t-2");
    let got = take(&conn, &setup.queue("general"), 2, WAIT).await;
    let senders: Vec<(&str, &str)> = got
        .iter()
        .map(|m| {
            (
                m.body["sender"]["customer_id"].as_str().unwrap_or(""),
                m.body["sender"]["tier"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(senders, [("cust-7", "vip"), ("cust-8", "standard")]);
    assert_eq!(
        depth(&conn.create_channel().await.unwrap(), &vip_queue).await,
        0,
        "only the vip envelope went to the vip queue"
    );
    cleanup(
        &prefix,
        &[setup.queue("claims"), setup.queue("general"), vip_queue],
    )
    .await;
}

#[tokio::test]
async fn visitor_typing_reaches_the_helpdesk_as_an_event() {
    let prefix = unique_prefix("webchat-typing");
    let scratch = Scratch::new(&prefix);
    let mut setup = Setup::new(&prefix);
    setup.extra = webchat_table("", "");
    let daemon = start(&scratch, &setup);
    daemon.wait_broker().await;
    let conn = amqp().await;
    let channel = conn.create_channel().await.unwrap();
    let events = events_queue(&channel, &prefix, "conversation.typing").await;

    let (mut ws, ready) = hello(&daemon, "v=1", 0, None).await;
    let conversation = ready["conversation_id"].as_str().unwrap().to_owned();
    send(&mut ws, json!({"type": "typing", "on": true})).await;
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(recv(&mut ws).await["type"], "pong", "typing has no answer");

    let got = take(&conn, &events, 1, WAIT).await;
    assert_eq!(got.len(), 1);
    let event = &got[0].body;
    assert_eq!(got[0].routing_key, "conversation.typing");
    assert_eq!(event["schema"], "switchboard.event.v1");
    assert_eq!(event["kind"], "conversation.typing");
    assert_eq!(event["conversation_id"], conversation.as_str());
    assert_eq!(event["data"]["on"], true);
    assert_eq!(event["data"]["channel"], "webchat");
    assert_eq!(event["data"]["connector_id"], "site");
    cleanup(&prefix, &[setup.queue("claims"), setup.queue("general")]).await;
}
