//! The console's admin API against the real binary and RabbitMQ: the admin token guards
//! every endpoint but `/healthz`; links, queues, the live tail, try-it, replies, dead
//! letters (list, show, replay with a fixed body, discard, audit events), statistics with
//! CSV, the spool; and the CLI twins (`tap`, `dead`, `spool`) against the same daemon.

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
    wait_for("the reply at the app backend", WAIT, || async {
        backend
            .received()
            .iter()
            .any(|r| r["reply"]["id"] == "r-ok")
            .then_some(())
    })
    .await;

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
    let response = http
        .post(daemon.admin_url(&format!("/api/dead/{id}/replay")))
        .json(&json!({ "body": fixed.to_string() }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    wait_for("the replayed reply at the app backend", WAIT, || async {
        backend
            .received()
            .iter()
            .any(|r| r["reply"]["id"] == "r-bad")
            .then_some(())
    })
    .await;
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
