//! The console's admin API against the real binary and RabbitMQ: the admin token guards
//! every endpoint but `/healthz`; links, queues, the live tail, try-it, replies, dead
//! letters (list, show, replay with a fixed body, discard, audit events), statistics with
//! CSV, the spool; and the CLI twins (`tap`, `dead`, `spool`) against the same daemon. Also
//! unacked counts and message ages from RabbitMQ's management API, rate-limit pressure and
//! an open tier lookup breaker on the links, and a reply to a connector not configured:
//! dead-lettered, then replayed unchanged once the connector is added (SIGHUP), delivered.

mod common;
mod console_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use console_support::Sse;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "console-test-token-0123456789";

async fn get(url: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("admin request")
}

async fn json_of(url: &str) -> Value {
    let response = get(url, None).await;
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response.json().await.expect("JSON")
}

/// Waits until the app backend has received reply `reply_id`.
async fn reply_reaches(backend: &Backend, reply_id: &str, what: &str) {
    wait_for(what, WAIT, || async {
        backend
            .received()
            .iter()
            .any(|r| r["reply"]["id"] == reply_id)
            .then_some(())
    })
    .await;
}

/// Replays dead letter `id` through the admin API with `request` (`{}` or a new body).
async fn replay(daemon: &Daemon, id: &str, request: &Value) {
    let response = reqwest::Client::new()
        .post(daemon.admin_url(&format!("/api/dead/{id}/replay")))
        .json(request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

#[tokio::test]
async fn the_admin_token_guards_every_endpoint_but_healthz() {
    let prefix = unique_prefix("console-auth");
    let scratch = Scratch::new(&prefix);
    let setup = Setup::new(&prefix);
    let config = setup.config(&scratch.0).replace(
        "admin_listen = \"127.0.0.1:0\"",
        &format!("admin_listen = \"127.0.0.1:0\"\nadmin_token = \"{TOKEN}\""),
    );
    let daemon = Daemon::start(&scratch.0, &config);

    let health = get(&daemon.admin_url("/healthz"), None).await;
    assert_eq!(health.status(), 200, "/healthz needs no token");
    let page = get(&daemon.admin_url("/console/"), None).await;
    assert_eq!(page.status(), 200, "the static page holds no data");

    let guarded = [
        "/readyz",
        "/metrics",
        "/api/links",
        "/api/queues",
        "/api/tap",
        "/api/dead",
        "/api/stats",
        "/api/stats.csv",
        "/api/spool",
    ];
    for path in guarded {
        let url = daemon.admin_url(path);
        assert_eq!(
            get(&url, None).await.status(),
            401,
            "{path} without a token"
        );
        assert_eq!(
            get(&url, Some("console-test-token-wrong00000"))
                .await
                .status(),
            401,
            "{path} with a wrong token"
        );
    }
    for (method, path) in [
        (reqwest::Method::POST, "/reload"),
        (reqwest::Method::POST, "/api/reply"),
        (reqwest::Method::POST, "/api/dead/replay"),
        (reqwest::Method::DELETE, "/api/dead/x"),
        (reqwest::Method::GET, "/api/try/x"),
    ] {
        let status = reqwest::Client::new()
            .request(method.clone(), daemon.admin_url(path))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 401, "{method} {path} without a token");
    }
    // With the token everything answers.
    wait_for("the broker with the token", WAIT, || async {
        let ready: Value = get(&daemon.admin_url("/readyz"), Some(TOKEN))
            .await
            .json()
            .await
            .ok()?;
        (ready["broker"] == "connected").then_some(())
    })
    .await;
    for path in [
        "/metrics",
        "/api/links",
        "/api/queues",
        "/api/dead",
        "/api/stats",
        "/api/spool",
    ] {
        let status = get(&daemon.admin_url(path), Some(TOKEN)).await.status();
        assert_eq!(status, 200, "{path} with the token");
    }
    let mut tap = Sse::open(&daemon.admin_url("/api/tap"), Some(TOKEN)).await;
    tap.expect("ready", WAIT).await;

    // The CLI twins send the token from the environment.
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["spool", "status", "--admin", &daemon.admin_url("")])
        .env("SWITCHBOARD_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["spool", "status", "--admin", &daemon.admin_url("")])
        .env_remove("SWITCHBOARD_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    drop(daemon);
    cleanup(&prefix, &[setup.queue("claims"), setup.queue("general")]).await;
}

#[tokio::test]
async fn an_admin_listener_off_loopback_without_a_token_does_not_start() {
    let prefix = unique_prefix("console-open");
    let scratch = Scratch::new(&prefix);
    let setup = Setup::new(&prefix);
    let config = setup.config(&scratch.0).replace(
        "admin_listen = \"127.0.0.1:0\"",
        "admin_listen = \"0.0.0.0:0\"",
    );
    let path = scratch.0.join("open.toml");
    std::fs::write(&path, config).unwrap();
    for command in [vec!["check-config"], vec!["run", "--config"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(&command)
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{command:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("open.toml:")
                && stderr.contains("is not a loopback address: set server.admin_token"),
            "{command:?}: {stderr}"
        );
    }
}

#[tokio::test]
async fn the_console_api_shows_routes_plays_helpdesk_and_replays_dead_letters() {
    let prefix = unique_prefix("console-api");
    let scratch = Scratch::new(&prefix);
    let (backend, webhook) = Backend::start().await;
    let mut setup = Setup::new(&prefix);
    setup.webhook_url = webhook;
    let daemon = Daemon::start(&scratch.0, &setup.config(&scratch.0));
    daemon.wait_broker().await;
    let conn = amqp().await;
    let channel = conn.create_channel().await.unwrap();
    let events = events_queue(&channel, &prefix, "dead_letter.*").await;
    let claims = setup.queue("claims");
    let http = reqwest::Client::new();

    // Links: the app connector, the broker, no Redis, an empty spool.
    let links = json_of(&daemon.admin_url("/api/links")).await;
    assert_eq!(links["connectors"][0]["path"], "/app/shop", "{links}");
    assert_eq!(links["broker"]["connected"], true);
    assert_eq!(links["redis"]["configured"], false);
    assert_eq!(links["spool"]["depth"], 0);

    // Tail (app only) and try-it on the claims queue, both before the message.
    let mut tail = Sse::open(&daemon.admin_url("/api/tap?channel=app"), None).await;
    tail.expect("ready", WAIT).await;
    let mut helpdesk = Sse::open(&daemon.admin_url(&format!("/api/try/{claims}")), None).await;
    let ready = helpdesk.expect("ready", WAIT).await;
    assert_eq!(ready["queue"], claims.as_str());

    let (status, _) = post_signed(
        &http,
        &daemon,
        text_message(
            "m-1",
            "u-1",
            "my parcel is damaged, call me on 138 0013 8000",
        ),
    )
    .await;
    assert_eq!(status, 200);

    let tapped = tail.expect("envelope", WAIT).await;
    let envelope = &tapped["envelope"];
    assert_eq!(envelope["route"]["skill"], "claims", "{tapped}");
    assert_eq!(envelope["channel"]["kind"], "app");
    let explanation = tapped["explanation"].as_str().unwrap();
    assert!(
        explanation.contains("damaged") && explanation.contains("MATCH"),
        "{explanation}"
    );
    let shown = tapped.to_string();
    assert!(
        !shown.contains("0013") && !shown.contains("13800138000"),
        "phone masked: {shown}"
    );
    let conversation = envelope["conversation_id"].as_str().unwrap().to_owned();

    let got = helpdesk.expect("envelope", WAIT).await;
    assert_eq!(got["envelope"]["id"], envelope["id"]);
    assert_eq!(got["routing_key"], "claims.standard");

    // Queues: the real claims queue holds the message too; the rate counts it.
    let queues = json_of(&daemon.admin_url("/api/queues")).await;
    let claims_row = queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == claims.as_str())
        .unwrap()
        .clone();
    assert_eq!(claims_row["ready"], 1, "{claims_row}");
    assert_eq!(claims_row["consumers"], 0);
    let rate: u64 = claims_row["rates_per_minute"]["app"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(rate, 1);
    let links = json_of(&daemon.admin_url("/api/links")).await;
    assert_eq!(links["connectors"][0]["traffic"]["last_5_minutes"], 1);

    // The helpdesk answers from try-it: the app backend gets it.
    let response = http
        .post(daemon.admin_url("/api/reply"))
        .json(&json!({
            "schema": "switchboard.reply.v1", "id": "r-ok", "conversation_id": conversation,
            "content": {"type": "text", "text": "We will send a new one."},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    reply_reaches(&backend, "r-ok", "the reply at the app backend").await;

    // A malformed reply is dead-lettered; replayed with a fixed body it is delivered.
    for id in ["r-bad", "r-worse"] {
        let response = http
            .post(daemon.admin_url("/api/reply"))
            .json(&json!({"schema": "switchboard.reply.v1", "id": id, "conversation_id": conversation}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    let dead = wait_for("two dead letters", WAIT, || async {
        let list = json_of(&daemon.admin_url("/api/dead?reason=malformed_reply")).await;
        (list["dead_letters"].as_array()?.len() == 2).then_some(list)
    })
    .await;
    let first = &dead["dead_letters"][0];
    assert_eq!(first["reason"], "malformed_reply");
    assert_eq!(first["origin"]["routing_key"], "reply", "{first}");
    let id = first["id"].as_str().unwrap().to_owned();
    let shown = json_of(&daemon.admin_url(&format!("/api/dead/{id}"))).await;
    assert!(shown["body"].as_str().unwrap().contains("r-bad"), "{shown}");
    assert_eq!(shown["headers"]["x-reason"], "malformed_reply");

    // Replaying it unchanged dead-letters it again; with the fixed body it is delivered.
    let fixed = json!({
        "schema": "switchboard.reply.v1", "id": "r-bad", "conversation_id": conversation,
        "content": {"type": "text", "text": "Fixed and replayed."},
    });
    replay(&daemon, &id, &json!({ "body": fixed.to_string() })).await;
    reply_reaches(&backend, "r-bad", "the replayed reply at the app backend").await;
    let missing = get(&daemon.admin_url(&format!("/api/dead/{id}")), None).await;
    assert_eq!(
        missing.status(),
        404,
        "the replayed letter left the dead queue"
    );

    // The other one is discarded, through the CLI twin.
    let list = run_cli(&["dead", "list", "--admin", &daemon.admin_url("")]);
    let other_id = list["dead_letters"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(list["total"], 1, "{list}");
    let shown = run_cli(&["dead", "show", &other_id, "--admin", &daemon.admin_url("")]);
    assert!(shown["body"].as_str().unwrap().contains("r-worse"));
    run_cli(&[
        "dead",
        "discard",
        &other_id,
        "--admin",
        &daemon.admin_url(""),
    ]);
    let list = json_of(&daemon.admin_url("/api/dead")).await;
    assert_eq!(list["total"], 0, "{list}");

    let audit = take(&conn, &events, 2, WAIT).await;
    let kinds: Vec<&str> = audit.iter().map(|e| e.routing_key.as_str()).collect();
    assert_eq!(kinds, ["dead_letter.replayed", "dead_letter.discarded"]);
    assert_eq!(audit[0].body["data"]["dead_letter_id"], id.as_str());
    assert_eq!(audit[0].body["data"]["edited"], true);

    // Statistics: the message by channel, intent-less, tier, and the two failures.
    let stats = wait_for("statistics", WAIT, || async {
        let stats = json_of(&daemon.admin_url("/api/stats?days=7")).await;
        let today = &stats["days"][0]["counts"];
        (today["channel"]["app"] == 1 && today["failed"]["malformed_reply"] == 2).then_some(stats)
    })
    .await;
    assert_eq!(stats["days"].as_array().unwrap().len(), 7);
    assert_eq!(stats["days"][0]["counts"]["tier"]["standard"], 1);
    assert_eq!(stats["days"][0]["counts"]["total"]["messages"], 1);
    let csv = get(&daemon.admin_url("/api/stats.csv"), None)
        .await
        .text()
        .await
        .unwrap();
    assert!(csv.starts_with("date,dimension,value,count\n"), "{csv}");
    assert!(csv.contains(",channel,app,1\n"), "{csv}");

    // `switchboard tap` follows the same stream as JSON lines.
    let mut cli_tap = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args([
            "tap",
            "--channel",
            "app",
            "--queue",
            &claims,
            "--admin",
            &daemon.admin_url(""),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = tokio::sync::mpsc::unbounded_channel();
    let stdout = cli_tap.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let lines = std::sync::Arc::new(tokio::sync::Mutex::new(lines));
    // The CLI is subscribed once a message sent now reaches it; send until one does.
    let line = wait_for("a JSON line from switchboard tap", WAIT, || {
        let (http, lines, daemon) = (http.clone(), lines.clone(), &daemon);
        async move {
            let id = format!("m-{}", ulid::Ulid::new());
            post_signed(&http, daemon, text_message(&id, "u-2", "damaged again")).await;
            let mut lines = lines.lock().await;
            tokio::time::timeout(Duration::from_secs(2), lines.recv())
                .await
                .ok()
                .flatten()
        }
    })
    .await;
    let _ = cli_tap.kill();
    let _ = cli_tap.wait();
    let line: Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(line["envelope"]["route"]["skill"], "claims");
    let spool = run_cli(&["spool", "drain", "--admin", &daemon.admin_url("")]);
    assert_eq!(spool["depth"], 0);
    drop(daemon);
    cleanup(&prefix, &[claims, setup.queue("general")]).await;
}

/// Runs the binary with `args`; its stdout as JSON (it must succeed).
fn run_cli(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .output()
        .expect("run switchboard");
    assert!(
        out.status.success(),
        "switchboard {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// The claims queue's row of `GET /api/queues`.
async fn queue_row(daemon: &Daemon, queue: &str) -> Value {
    let queues = json_of(&daemon.admin_url("/api/queues")).await;
    queues["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .find(|q| q["name"] == queue)
        .cloned()
        .unwrap_or_else(|| panic!("no row for {queue}: {queues}"))
}

#[tokio::test]
async fn queues_show_unacked_counts_and_the_oldest_age_from_the_management_api() {
    let prefix = unique_prefix("console-mgmt");
    let scratch = Scratch::new(&prefix);
    let setup = Setup::new(&prefix);
    let plain = setup.config(&scratch.0);
    let with_management = plain.replace(
        "reconnect_max_ms = 1000\n",
        "reconnect_max_ms = 1000\nmanagement_url = \"http://127.0.0.1:15672\"\n",
    );
    assert_ne!(plain, with_management);
    let daemon = Daemon::start(&scratch.0, &with_management);
    daemon.wait_broker().await;
    let claims = setup.queue("claims");
    let http = reqwest::Client::new();

    // Two messages for the claims helpdesk; it takes one and has not acked it yet.
    for (id, user) in [("m-1", "u-1"), ("m-2", "u-2")] {
        let (status, _) = post_signed(&http, &daemon, text_message(id, user, "damaged")).await;
        assert_eq!(status, 200);
    }
    let conn = amqp().await;
    let helpdesk = conn.create_channel().await.unwrap();
    helpdesk
        .basic_qos(1, lapin::options::BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = helpdesk
        .basic_consume(
            claims.as_str().into(),
            "console-test-helpdesk".into(),
            lapin::options::BasicConsumeOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    let held = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut consumer))
        .await
        .expect("a message for the helpdesk")
        .expect("consumer open")
        .expect("a delivery");

    // The management API refreshes its figures every few seconds.
    let row = wait_for("unacked 1 and the oldest age", WAIT, || async {
        let row = queue_row(&daemon, &claims).await;
        (row["unacked"] == 1 && row["oldest_age_secs"].is_u64() && row["management"]["ready"] == 1)
            .then_some(row)
    })
    .await;
    assert_eq!(row["ready"], 1, "the passive declare agrees: {row}");
    assert_eq!(row["consumers"], 1, "{row}");
    assert_eq!(row["management"]["consumers"], 1, "{row}");
    assert!(row["management_error"].is_null(), "{row}");
    let age = row["oldest_age_secs"].as_u64().unwrap();
    assert!(age < WAIT.as_secs() + 5, "published moments ago: {row}");
    let head = row["management"]["head_message_timestamp"]
        .as_u64()
        .unwrap();
    assert!(
        head.abs_diff(now() as u64) < WAIT.as_secs() + 5,
        "the head message's timestamp is unix seconds: {row}"
    );

    // Once both are handled the queue holds nothing, so there is no age.
    held.ack(lapin::options::BasicAckOptions::default())
        .await
        .unwrap();
    let second = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut consumer))
        .await
        .expect("the second message")
        .expect("consumer open")
        .expect("a delivery");
    second
        .ack(lapin::options::BasicAckOptions::default())
        .await
        .unwrap();
    wait_for("an empty queue without an age", WAIT, || async {
        let row = queue_row(&daemon, &claims).await;
        (row["management"]["ready"] == 0 && row["unacked"] == 0 && row["oldest_age_secs"].is_null())
            .then_some(())
    })
    .await;
    let _ = helpdesk.close(200, "done".into()).await;

    // A management URL nobody answers on: the figures are null with the reason, the
    // passive declare's still there. A reload applies it.
    let config_path = scratch.0.join("switchboard.toml");
    std::fs::write(
        &config_path,
        plain.replace(
            "reconnect_max_ms = 1000\n",
            "reconnect_max_ms = 1000\nmanagement_url = \"http://127.0.0.1:9\"\n",
        ),
    )
    .unwrap();
    let reloaded = http.post(daemon.admin_url("/reload")).send().await.unwrap();
    assert_eq!(reloaded.status(), 200, "{}", reloaded.text().await.unwrap());
    let row = queue_row(&daemon, &claims).await;
    assert!(
        row["unacked"].is_null() && row["oldest_age_secs"].is_null(),
        "{row}"
    );
    assert!(
        row["management_error"]
            .as_str()
            .unwrap()
            .starts_with("management API unreachable"),
        "{row}"
    );
    assert_eq!(row["consumers"], 0, "{row}");

    // Without it: the same, saying it is not set.
    std::fs::write(&config_path, &plain).unwrap();
    let reloaded = http.post(daemon.admin_url("/reload")).send().await.unwrap();
    assert_eq!(reloaded.status(), 200);
    let row = queue_row(&daemon, &claims).await;
    assert_eq!(
        row["management_error"], "broker.management_url is not set",
        "{row}"
    );
    assert!(
        row["unacked"].is_null() && row["management"].is_null(),
        "{row}"
    );
    assert!(row["ready"].is_u64(), "{row}");

    drop(daemon);
    let _ = conn.close(200, "done".into()).await;
    cleanup(&prefix, &[claims, setup.queue("general")]).await;
}

#[tokio::test]
async fn links_show_rate_limiting_and_an_open_tier_lookup_breaker() {
    let prefix = unique_prefix("console-breaker");
    let scratch = Scratch::new(&prefix);
    let mut setup = Setup::new(&prefix);
    setup.per_user_per_minute = 1;
    // A CRM on a port nothing listens on: every lookup fails at once.
    let config = setup.config(&scratch.0).replace(
        "customers = { \"app:shop:u-vip\" = \"vip\" }\n",
        "customers = { \"app:shop:u-vip\" = \"vip\" }\nsource = \"http\"\n\n\
         [tiers.http]\nurl = \"http://127.0.0.1:9/tier/{user}\"\nfailure_threshold = 2\n\
         open_secs = 120\ncache_ttl_secs = 0\n",
    );
    assert!(config.contains("[tiers.http]"));
    let daemon = Daemon::start(&scratch.0, &config);
    daemon.wait_broker().await;
    let http = reqwest::Client::new();

    let links = json_of(&daemon.admin_url("/api/links")).await;
    let breaker = &links["breakers"][0];
    assert_eq!(breaker["name"], "tiers.http", "{links}");
    assert_eq!(breaker["target"], "127.0.0.1:9");
    assert_eq!(breaker["state"], "closed");
    let shop = &links["connectors"][0];
    assert_eq!(shop["limits"]["per_user_per_minute"], 1, "{shop}");
    assert!(shop["pressure"]["rate_limited_share"].is_null(), "{shop}");

    // u-1 twice (the second is over its limit), then u-2: two failed lookups open it.
    let mut statuses = Vec::new();
    for (id, user) in [("m-1", "u-1"), ("m-2", "u-1"), ("m-3", "u-2")] {
        let (status, _) = post_signed(&http, &daemon, text_message(id, user, "hello")).await;
        statuses.push(status);
    }
    assert_eq!(statuses, [200, 429, 200]);

    let links = json_of(&daemon.admin_url("/api/links")).await;
    let breaker = &links["breakers"][0];
    assert_eq!(breaker["state"], "open", "{links}");
    assert_eq!(breaker["failures"], 2);
    assert_eq!(breaker["failure_threshold"], 2);
    let reopens = breaker["half_open_in_secs"].as_u64().unwrap();
    assert!((1..=120).contains(&reopens), "{breaker}");
    let pressure = &links["connectors"][0]["pressure"];
    assert_eq!(pressure["requests"], 3, "{pressure}");
    assert_eq!(pressure["refused"]["rate_limited"], 1, "{pressure}");
    let share = pressure["rate_limited_share"].as_f64().unwrap();
    assert!((share - 1.0 / 3.0).abs() < 1e-9, "{pressure}");

    // A reload starts the breaker closed again.
    let reloaded = http.post(daemon.admin_url("/reload")).send().await.unwrap();
    assert_eq!(reloaded.status(), 200);
    let links = json_of(&daemon.admin_url("/api/links")).await;
    assert_eq!(links["breakers"][0]["state"], "closed", "{links}");

    drop(daemon);
    cleanup(&prefix, &[setup.queue("claims"), setup.queue("general")]).await;
}

#[tokio::test]
async fn a_reply_to_a_missing_connector_is_replayed_once_the_connector_is_configured() {
    let prefix = unique_prefix("console-unknown");
    let scratch = Scratch::new(&prefix);
    let (backend, webhook) = Backend::start().await;
    let mut setup = Setup::new(&prefix);
    setup.webhook_url = webhook.clone();
    let config = setup.config(&scratch.0);
    let daemon = Daemon::start(&scratch.0, &config);
    daemon.wait_broker().await;
    let conn = amqp().await;
    let channel = conn.create_channel().await.unwrap();
    let events = events_queue(&channel, &prefix, "delivery.*").await;
    let http = reqwest::Client::new();

    // The helpdesk answers a conversation of app connector `outlet`, which this daemon
    // does not have (yet).
    let reply = json!({
        "schema": "switchboard.reply.v1", "id": "r-outlet", "conversation_id": "app:outlet:u-7",
        "content": {"type": "text", "text": "Your refund is on its way."},
    });
    publish_reply(&channel, &prefix, &reply).await;
    let failed = take(&conn, &events, 1, WAIT).await;
    assert_eq!(failed.len(), 1, "a delivery event");
    let event = &failed[0].body;
    assert_eq!(event["kind"], "delivery.failed", "{event}");
    assert_eq!(event["reason"], "unknown_connector");
    assert_eq!(event["reply_id"], "r-outlet");
    assert_eq!(event["data"]["dead_lettered"], true);
    let dead = wait_for("the reply in the dead letters", WAIT, || async {
        let list = json_of(&daemon.admin_url("/api/dead?reason=unknown_connector")).await;
        (list["dead_letters"].as_array()?.len() == 1).then_some(list)
    })
    .await;
    let letter = &dead["dead_letters"][0];
    assert_eq!(
        letter["error"], "no connector app:outlet is configured",
        "{letter}"
    );
    let id = letter["id"].as_str().unwrap().to_owned();

    // Replayed before the fix, it comes straight back (and is not taken for a duplicate).
    let response = http
        .post(daemon.admin_url(&format!("/api/dead/{id}/replay")))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let again = take(&conn, &events, 1, WAIT).await;
    assert_eq!(
        again[0].body["reason"], "unknown_connector",
        "{:?}",
        again[0].body
    );
    let dead = wait_for("the reply back in the dead letters", WAIT, || async {
        let list = json_of(&daemon.admin_url("/api/dead?reason=unknown_connector")).await;
        (list["dead_letters"].as_array()?.len() == 1).then_some(list)
    })
    .await;
    let id = dead["dead_letters"][0]["id"].as_str().unwrap().to_owned();

    // The operator adds the connector and reloads (SIGHUP).
    let fixed = format!(
        "{config}\n[[connectors.app]]\nid = \"outlet\"\nsigning_key = \"{APP_KEY}\"\n\n\
         [connectors.app.webhook]\nurl = \"{webhook}\"\ntimeout_ms = 2000\n\n\
         [connectors.app.limits]\noutbound_per_second = 1\noutbound_burst = 1\n"
    );
    std::fs::write(scratch.0.join("switchboard.toml"), fixed).unwrap();
    signal(daemon.pid(), "HUP");
    wait_for("the new connector in force", WAIT, || async {
        let links = json_of(&daemon.admin_url("/api/links")).await;
        links["connectors"]
            .as_array()?
            .iter()
            .any(|c| c["path"] == "/app/outlet")
            .then_some(())
    })
    .await;

    // Replayed unchanged, it is delivered.
    replay(&daemon, &id, &json!({})).await;
    reply_reaches(
        &backend,
        "r-outlet",
        "the replayed reply at the app backend",
    )
    .await;
    let succeeded = take(&conn, &events, 1, WAIT).await;
    assert_eq!(
        succeeded[0].body["kind"], "delivery.succeeded",
        "{:?}",
        succeeded[0].body
    );
    assert_eq!(succeeded[0].body["reply_id"], "r-outlet");
    let list = json_of(&daemon.admin_url("/api/dead")).await;
    assert_eq!(list["total"], 0, "{list}");

    // Two more replies at once through its one-per-second outbound limiter: the second
    // waits, which the links show as the limiter's saturation.
    for id in ["r-outlet-2", "r-outlet-3"] {
        let mut next = reply.clone();
        next["id"] = json!(id);
        publish_reply(&channel, &prefix, &next).await;
    }
    wait_for("both replies at the app backend", WAIT, || async {
        let received = backend.received();
        ["r-outlet-2", "r-outlet-3"]
            .iter()
            .all(|id| received.iter().any(|r| r["reply"]["id"] == *id))
            .then_some(())
    })
    .await;
    let links = json_of(&daemon.admin_url("/api/links")).await;
    let outlet = links["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"] == "/app/outlet")
        .unwrap()
        .clone();
    assert_eq!(outlet["pressure"]["reply_attempts"], 3, "{outlet}");
    let throttled = outlet["pressure"]["replies_throttled"].as_u64().unwrap();
    assert!((1..=2).contains(&throttled), "{outlet}");

    drop(daemon);
    let _ = conn.close(200, "done".into()).await;
    cleanup(&prefix, &[setup.queue("claims"), setup.queue("general")]).await;
}
