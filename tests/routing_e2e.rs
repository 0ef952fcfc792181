//! Routing on the real binary and RabbitMQ: helpdesk `transfer` and `close` commands with
//! their acknowledgement events, stickiness, abuse flags to supervisors, a CRM that does
//! not answer, and reloads under load that never mix two configs within one message.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

/// The harness config with its keyword rule replaced by `rules`, plus `extra` at the end.
fn config(setup: &Setup, scratch: &std::path::Path, rules: &str) -> String {
    let base = setup.config(scratch);
    let damaged = "[[routing.rules]]\nname = \"damaged\"\nkeywords = [\"damaged\", \"破损\"]\nskill = \"claims\"\npriority = 6\n";
    assert!(base.contains(damaged), "the harness config changed");
    base.replace(damaged, rules)
}

fn queue_table(prefix: &str, skill: &str) -> String {
    format!("\n[[queues]]\nname = \"{prefix}.agents.{skill}\"\nbindings = [\"{skill}.*\"]\n")
}

async fn publish_command(channel: &lapin::Channel, prefix: &str, body: &Value) {
    channel
        .basic_publish(
            format!("{prefix}.outbound").as_str().into(),
            "command".into(),
            BasicPublishOptions::default(),
            &serde_json::to_vec(body).unwrap(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish command");
}

fn command(id: &str, conversation: &str, fields: Value) -> Value {
    let mut body = json!({
        "schema": "switchboard.command.v1",
        "id": id,
        "conversation_id": conversation,
        "agent": {"id": "agent-7"},
    });
    for (k, v) in fields.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

async fn send(client: &reqwest::Client, daemon: &Daemon, id: &str, user: &str, text: &str) {
    let (status, answer) = post_signed(client, daemon, text_message(id, user, text)).await;
    assert_eq!(status, 200, "{id}: {answer}");
}

async fn one(conn: &lapin::Connection, queue: &str) -> Received {
    let mut got = take(conn, queue, 1, WAIT).await;
    assert_eq!(got.len(), 1, "nothing arrived on {queue}");
    got.remove(0)
}

#[tokio::test]
async fn transfer_and_close_commands_steer_a_sticky_conversation_and_are_acknowledged() {
    let prefix = unique_prefix("commands");
    let scratch = Scratch::new(&prefix);
    let mut setup = Setup::new(&prefix);
    setup.extra = format!(
        "{}\n[routing.stickiness]\nttl_secs = 600\n",
        queue_table(&prefix, "human")
    );
    let rules = "[[routing.rules]]\nname = \"damaged\"\nkeywords = [\"damaged\"]\nskill = \"claims\"\npriority = 6\n";
    let daemon = Daemon::start(&scratch.0, &config(&setup, &scratch.0, rules));
    daemon.wait_broker().await;
    let client = reqwest::Client::new();
    let conn = amqp().await;
    let channel = conn.create_channel().await.unwrap();
    let events = events_queue(&channel, &prefix, "#").await;
    let conversation = "app:shop:u-cmd";

    send(&client, &daemon, "c-1", "u-cmd", "my parcel is damaged").await;
    let first = one(&conn, &setup.queue("claims")).await;
    assert_eq!(first.body["route"]["rule"], "damaged");
    send(&client, &daemon, "c-2", "u-cmd", "hello again").await;
    let follow_up = one(&conn, &setup.queue("claims")).await;
    assert_eq!(
        follow_up.body["route"]["rule"], "sticky",
        "{}",
        follow_up.body
    );
    assert_eq!(follow_up.body["route"]["priority"], 6);
    assert_eq!(follow_up.body["flags"], json!(["sticky"]));

    publish_command(
        &channel,
        &prefix,
        &command(
            "cmd-1",
            conversation,
            json!({"command": "transfer", "skill": "human", "priority": 7}),
        ),
    )
    .await;
    let ack = one(&conn, &events).await;
    assert_eq!(ack.routing_key, "conversation.transferred");
    assert_eq!(ack.body["conversation_id"], conversation);
    assert_eq!(ack.body["data"]["command_id"], "cmd-1");
    assert_eq!(ack.body["data"]["skill"], "human");
    assert_eq!(ack.body["data"]["agent_id"], "agent-7");

    // A transfer holds even for a message the rules would send to claims.
    send(&client, &daemon, "c-3", "u-cmd", "my parcel is damaged").await;
    let moved = one(&conn, &setup.queue("human")).await;
    assert_eq!(moved.body["route"]["rule"], "transfer");
    assert_eq!(moved.body["route"]["queue_key"], "human.standard");
    assert_eq!(moved.body["route"]["priority"], 7);
    assert_eq!(*moved.properties.priority(), Some(7));

    publish_command(
        &channel,
        &prefix,
        &command(
            "cmd-2",
            conversation,
            json!({"command": "transfer", "skill": "nowhere"}),
        ),
    )
    .await;
    let refused = one(&conn, &events).await;
    assert_eq!(refused.routing_key, "command.failed");
    assert_eq!(refused.body["reason"], "unroutable_skill");
    assert_eq!(refused.body["retryable"], false);
    assert_eq!(refused.body["data"]["command_id"], "cmd-2");

    publish_command(
        &channel,
        &prefix,
        &command("cmd-3", conversation, json!({"command": "close"})),
    )
    .await;
    let closed = one(&conn, &events).await;
    assert_eq!(closed.routing_key, "conversation.closed");
    assert_eq!(closed.body["data"]["command_id"], "cmd-3");
    send(&client, &daemon, "c-4", "u-cmd", "hello").await;
    let after = one(&conn, &setup.queue("general")).await;
    assert_eq!(
        after.body["route"]["rule"], "default",
        "close forgot the transfer"
    );

    // A command that is not one goes to the dead letters with its reason.
    publish_command(
        &channel,
        &prefix,
        &json!({"schema": "switchboard.command.v1", "id": "cmd-4", "command": "close"}),
    )
    .await;
    let dead = one(&conn, &format!("{prefix}.dead")).await;
    assert_eq!(
        dead.header("x-reason").as_deref(),
        Some("malformed_command")
    );

    assert_eq!(
        daemon
            .metric("switchboard_commands_total", "outcome=\"transferred\"")
            .await,
        1.0
    );
    assert_eq!(
        daemon
            .metric("switchboard_commands_total", "outcome=\"failed\"")
            .await,
        1.0
    );
    assert!(
        daemon
            .metric("switchboard_routing_decisions_total", "rule=\"sticky\"")
            .await
            >= 1.0
    );
    cleanup(
        &prefix,
        &[
            setup.queue("claims"),
            setup.queue("general"),
            setup.queue("human"),
        ],
    )
    .await;
}

#[tokio::test]
async fn abusive_messages_go_to_supervisors_and_are_reported() {
    let prefix = unique_prefix("abuse");
    let scratch = Scratch::new(&prefix);
    let mut setup = Setup::new(&prefix);
    setup.extra = format!(
        "{}\n[routing.abuse]\nskill = \"supervisor\"\npriority = 9\nexcerpt_chars = 24\n",
        queue_table(&prefix, "supervisor")
    );
    let daemon = Daemon::start(&scratch.0, &setup.config(&scratch.0));
    daemon.wait_broker().await;
    let client = reqwest::Client::new();
    let conn = amqp().await;
    let channel = conn.create_channel().await.unwrap();
    let events = events_queue(&channel, &prefix, "conversation.#").await;

    let text = "你们这群傻逼 my parcel is damaged, call 13800138000";
    send(&client, &daemon, "a-1", "u-angry", text).await;
    let m = one(&conn, &setup.queue("supervisor")).await;
    assert_eq!(m.body["route"]["rule"], "abuse");
    assert_eq!(m.body["route"]["priority"], 9);
    assert_eq!(m.body["flags"], json!(["abusive"]));
    assert_eq!(
        m.body["entities"],
        json!([{"kind": "phone", "value": "+8613800138000", "region": "cn"}])
    );
    let flagged = one(&conn, &events).await;
    assert_eq!(flagged.routing_key, "conversation.flagged");
    assert_eq!(flagged.body["conversation_id"], "app:shop:u-angry");
    assert_eq!(flagged.body["reason"], "abusive");
    assert_eq!(flagged.body["data"]["words"], json!(["傻逼"]));
    let excerpt: String = text.chars().take(24).collect();
    assert_eq!(flagged.body["data"]["excerpt"], excerpt.as_str());
    assert_eq!(flagged.body["data"]["envelope_id"], m.body["id"]);
    assert_eq!(flagged.body["data"]["channel"], "app");
    let log = daemon.log_text();
    assert!(
        !log.contains("13800138000"),
        "a phone number reached the log:\n{log}"
    );
    cleanup(
        &prefix,
        &[
            setup.queue("claims"),
            setup.queue("general"),
            setup.queue("supervisor"),
        ],
    )
    .await;
}

/// A CRM that accepts connections and never answers.
async fn silent_crm() -> SocketAddr {
    let app = axum::Router::new().route(
        "/tier",
        axum::routing::get(std::future::pending::<&'static str>),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn a_silent_crm_delays_a_message_by_its_timeout_only_and_flags_it() {
    let prefix = unique_prefix("crm");
    let scratch = Scratch::new(&prefix);
    let crm = silent_crm().await;
    let setup = Setup::new(&prefix);
    let base = setup.config(&scratch.0).replace(
        "customers = { \"app:shop:u-vip\" = \"vip\" }",
        &format!(
            "customers = {{ \"app:shop:u-vip\" = \"vip\" }}\nsource = \"http\"\n\n[tiers.http]\nurl = \"http://{crm}/tier?c={{conversation_id}}\"\ntimeout_ms = 300\nfailure_threshold = 100\n"
        ),
    );
    assert!(base.contains("[tiers.http]"));
    let daemon = Daemon::start(&scratch.0, &base);
    daemon.wait_broker().await;
    let client = reqwest::Client::new();
    let started = Instant::now();
    send(&client, &daemon, "t-1", "u-1", "hello").await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(300 + 1500),
        "accepting took {took:?} with a 300 ms CRM timeout"
    );
    let conn = amqp().await;
    let m = one(&conn, &setup.queue("general")).await;
    assert_eq!(m.body["sender"]["tier"], "standard");
    assert_eq!(m.body["flags"], json!(["tier_lookup_failed"]));
    // Customers in the static table never wait for the CRM.
    let started = Instant::now();
    send(&client, &daemon, "t-2", "u-vip", "hello").await;
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        one(&conn, &setup.queue("general")).await.body["sender"]["tier"],
        "vip"
    );
    assert_eq!(
        daemon
            .metric("switchboard_routing_lookups_total", "outcome=\"timeout\"")
            .await,
        1.0
    );
    cleanup(&prefix, &[setup.queue("claims"), setup.queue("general")]).await;
}

/// Version `v` of a config whose intent, rule, skill and priority all carry the version, so
/// an envelope built from two versions would show it.
fn versioned_rules(v: u8) -> String {
    let priority = if v == 1 { 3 } else { 7 };
    format!(
        "[[routing.rules]]\nname = \"claims-v{v}\"\nintents = [\"damaged_v{v}\"]\nskill = \"claims{v}\"\npriority = {priority}\n"
    )
}

fn versioned_extra(prefix: &str, v: u8) -> String {
    format!(
        "{}{}\n[[intents]]\nname = \"damaged_v{v}\"\nkeywords = [\"damaged\", \"破损\"]\n",
        queue_table(prefix, "claims1"),
        queue_table(prefix, "claims2"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_under_load_lose_nothing_and_never_mix_two_configs_in_one_message() {
    let prefix = unique_prefix("reloadload");
    let scratch = Scratch::new(&prefix);
    let mut setup = Setup::new(&prefix);
    let version = |setup: &mut Setup, v: u8| {
        setup.extra = versioned_extra(&prefix, v);
        config(setup, &scratch.0, &versioned_rules(v))
    };
    let v1 = version(&mut setup, 1);
    let v2 = version(&mut setup, 2);
    let daemon = Daemon::start(&scratch.0, &v1);
    daemon.wait_broker().await;
    let client = reqwest::Client::new();
    let config_path = scratch.0.join("switchboard.toml");

    const MESSAGES: usize = 240;
    const RELOADS: usize = 12;
    let url = daemon.url("/app/shop/messages");
    let post = |i: usize| {
        let client = client.clone();
        let url = url.clone();
        tokio::spawn(async move {
            let body = text_message(
                &format!("load-{i}"),
                &format!("u-{}", i % 24),
                "my parcel is damaged",
            );
            let (ts, sig) = sign(&body, now());
            client
                .post(&url)
                .header("X-Switchboard-Timestamp", ts)
                .header("X-Switchboard-Signature", sig)
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        })
    };
    let mut sends = FuturesUnordered::new();
    let mut reloads = 0;
    for i in 0..MESSAGES {
        sends.push(post(i));
        // The first and last 40 messages run under one known version each; in between the
        // config flips while the others are being routed.
        if i > 40 && i < MESSAGES - 40 && i % 15 == 0 && reloads < RELOADS {
            reloads += 1;
            let next = if reloads % 2 == 1 { &v2 } else { &v1 };
            std::fs::write(&config_path, next).unwrap();
            let response = client
                .post(daemon.admin_url("/reload"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{:?}", response.text().await);
        }
        if i < 40 {
            // Let the first batch land before any reload.
            if let Some(status) = sends.next().await {
                assert_eq!(status.unwrap(), 200);
            }
        }
    }
    while let Some(status) = sends.next().await {
        assert_eq!(status.unwrap(), 200);
    }
    assert!(
        reloads >= 10,
        "only {reloads} reloads happened during the load"
    );
    // The last reload leaves v2 in force for the final batch.
    std::fs::write(&config_path, &v2).unwrap();
    let response = client
        .post(daemon.admin_url("/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for i in 0..20 {
        let body = text_message(&format!("tail-{i}"), "u-tail", "my parcel is damaged");
        assert_eq!(post_signed(&client, &daemon, body).await.0, 200);
    }

    let conn = amqp().await;
    let total = MESSAGES + 20;
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < total && Instant::now() < deadline {
        for skill in ["claims1", "claims2"] {
            got.extend(
                take(
                    &conn,
                    &setup.queue(skill),
                    total,
                    Duration::from_millis(500),
                )
                .await,
            );
        }
    }
    assert_eq!(
        got.len(),
        total,
        "every accepted message arrived exactly once"
    );
    let mut ids = std::collections::HashSet::new();
    let mut per_version: BTreeMap<String, usize> = BTreeMap::new();
    for m in &got {
        let e = &m.body;
        assert!(
            ids.insert(e["dedupe_key"].as_str().unwrap().to_owned()),
            "duplicate {e}"
        );
        let rule = e["route"]["rule"].as_str().unwrap();
        let v = rule
            .strip_prefix("claims-")
            .unwrap_or_else(|| panic!("rule {rule}"));
        let intent = e["intent"]["name"].as_str().unwrap();
        let priority = e["route"]["priority"].as_u64().unwrap();
        let expected_priority = if v == "v1" { 3 } else { 7 };
        assert_eq!(
            intent,
            format!("damaged_{v}"),
            "intent and rule of one config: {e}"
        );
        assert_eq!(e["route"]["skill"], format!("claims{}", &v[1..]), "{e}");
        assert_eq!(priority, expected_priority, "{e}");
        assert_eq!(m.routing_key, format!("claims{}.standard", &v[1..]));
        *per_version.entry(v.to_owned()).or_default() += 1;
    }
    assert!(
        per_version.get("v1").copied().unwrap_or(0) >= 40
            && per_version.get("v2").copied().unwrap_or(0) >= 20,
        "both configs served: {per_version:?}"
    );
    cleanup(
        &prefix,
        &[
            setup.queue("claims"),
            setup.queue("general"),
            setup.queue("claims1"),
            setup.queue("claims2"),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_full_agent_queue_overflows_to_its_overflow_key_with_a_higher_priority() {
    let prefix = unique_prefix("overflow");
    let scratch = Scratch::new(&prefix);
    let mut setup = Setup::new(&prefix);
    setup.extra = format!(
        "\n[[routing.overflow]]\nqueue = \"{}\"\nready_above = 3\nqueue_key = \"general.overflow\"\npriority_boost = 2\ncheck_every_ms = 100\n",
        setup.queue("claims")
    );
    let daemon = Daemon::start(&scratch.0, &setup.config(&scratch.0));
    daemon.wait_broker().await;
    let client = reqwest::Client::new();
    let conn = amqp().await;
    let channel = conn.create_channel().await.unwrap();

    // Nobody consumes the claims queue: it fills until its ready count passes 3; from the
    // next backlog check on, damaged parcels go to the overflow key.
    let mut sent = 0;
    let overflowed = wait_for("a message to overflow", WAIT, || {
        sent += 1;
        let (client, daemon, conn) = (&client, &daemon, &conn);
        let general = setup.queue("general");
        async move {
            send(
                client,
                daemon,
                &format!("o-{sent}"),
                "u-o",
                "my parcel is damaged",
            )
            .await;
            take(conn, &general, 1, Duration::from_millis(200))
                .await
                .pop()
        }
    })
    .await;
    assert!(depth(&channel, &setup.queue("claims")).await > 3);
    let e = &overflowed.body;
    assert_eq!(e["route"]["rule"], "damaged");
    assert_eq!(e["route"]["queue_key"], "general.overflow");
    assert_eq!(e["route"]["priority"], 8, "6 + 2");
    assert_eq!(*overflowed.properties.priority(), Some(8));
    assert_eq!(e["flags"], json!(["overflow"]));
    assert!(
        e["route"]["reason"]
            .as_str()
            .unwrap()
            .contains("overflow: "),
        "{e}"
    );
    assert!(
        daemon
            .metric(
                "switchboard_routing_overflow_total",
                &format!("queue=\"{}\"", setup.queue("claims"))
            )
            .await
            >= 1.0
    );
    assert!(
        daemon
            .metric("switchboard_queue_ready_messages", "queue=")
            .await
            > 3.0
    );
    cleanup(&prefix, &[setup.queue("claims"), setup.queue("general")]).await;
}
