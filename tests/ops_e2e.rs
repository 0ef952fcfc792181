//! Operations end to end: reload by SIGHUP and by `POST /reload`, a refused reload keeping
//! the old config, and two instances sharing dedupe and sequences through Redis.

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(20);

async fn post_reload(daemon: &Daemon) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(daemon.admin_url("/reload"))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn reload_applies_a_good_config_and_refuses_a_bad_one() {
    let prefix = unique_prefix("reload");
    let scratch = Scratch::new(&prefix);
    let setup = Setup::new(&prefix);
    let config = setup.config(&scratch.0);
    let daemon = Daemon::start(&scratch.0, &config);
    daemon.wait_broker().await;
    let client = reqwest::Client::new();
    let conn = amqp().await;
    let config_path = scratch.0.join("switchboard.toml");

    // "parcel" routes to general (default) before the reload...
    let (status, _) = post_signed(&client, &daemon, text_message("r-1", "u-1", "parcel?")).await;
    assert_eq!(status, 200);
    let got = take(&conn, &setup.queue("general"), 1, WAIT).await;
    assert_eq!(got[0].body["route"]["rule"], "default");

    // ...and to claims after a reload that adds the keyword.
    let reloaded = config.replace(
        r#"keywords = ["damaged", "破损"]"#,
        r#"keywords = ["damaged", "破损", "parcel"]"#,
    );
    assert_ne!(reloaded, config, "the test edits the rule it means to");
    std::fs::write(&config_path, &reloaded).unwrap();
    let (status, answer) = post_reload(&daemon).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "applied");
    let (status, _) = post_signed(&client, &daemon, text_message("r-2", "u-1", "parcel?")).await;
    assert_eq!(status, 200);
    let got = take(&conn, &setup.queue("claims"), 1, WAIT).await;
    assert_eq!(got[0].body["route"]["rule"], "damaged");

    // A config with a mistake is refused with its line, and the old one keeps serving.
    let broken = reloaded.replace("priority = 6", "priority = 60");
    std::fs::write(&config_path, &broken).unwrap();
    let (status, answer) = post_reload(&daemon).await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["problems"]
            .as_str()
            .unwrap()
            .contains("must be between 0 and 9"),
        "{answer}"
    );
    // A change that needs a restart is refused too, not half applied.
    let moved = reloaded.replace(&format!("prefix = \"{prefix}\""), "prefix = \"elsewhere\"");
    std::fs::write(&config_path, &moved).unwrap();
    let (status, answer) = post_reload(&daemon).await;
    assert_eq!(status, 422);
    assert!(
        answer["problems"]
            .as_str()
            .unwrap()
            .contains("broker.prefix"),
        "{answer}"
    );
    let (status, _) = post_signed(&client, &daemon, text_message("r-3", "u-1", "parcel?")).await;
    assert_eq!(status, 200);
    let got = take(&conn, &setup.queue("claims"), 1, WAIT).await;
    assert_eq!(
        got[0].body["route"]["priority"], 6,
        "still the last good config"
    );
    assert_eq!(
        daemon
            .metric("switchboard_config_reloads_total", "outcome=\"refused\"")
            .await,
        2.0
    );

    // SIGHUP reloads the same way.
    let by_signal = reloaded.replace("priority = 6", "priority = 8");
    std::fs::write(&config_path, &by_signal).unwrap();
    signal(daemon.pid(), "HUP");
    wait_for("the SIGHUP reload", WAIT, || async {
        (daemon
            .metric("switchboard_config_reloads_total", "outcome=\"applied\"")
            .await
            >= 2.0)
            .then_some(())
    })
    .await;
    let (status, _) = post_signed(&client, &daemon, text_message("r-4", "u-1", "parcel?")).await;
    assert_eq!(status, 200);
    let got = take(&conn, &setup.queue("claims"), 1, WAIT).await;
    assert_eq!(got[0].body["route"]["priority"], 8);
    cleanup(&prefix, &[setup.queue("claims"), setup.queue("general")]).await;
}

#[tokio::test]
async fn two_instances_share_dedupe_and_sequences_through_redis() {
    let prefix = unique_prefix("redis");
    let scratch_a = Scratch::new(&format!("{prefix}-a"));
    let scratch_b = Scratch::new(&format!("{prefix}-b"));
    let mut setup = Setup::new(&prefix);
    setup.extra = format!(
        "\n[redis]\nurl = \"{}\"\nkey_prefix = \"{prefix}:\"\n",
        redis_url()
    );
    let a = Daemon::start(
        &scratch_a.0,
        &setup.config(&scratch_a.0).replace(
            &format!("instance_id = \"{prefix}\""),
            "instance_id = \"a\"",
        ),
    );
    let b = Daemon::start(
        &scratch_b.0,
        &setup.config(&scratch_b.0).replace(
            &format!("instance_id = \"{prefix}\""),
            "instance_id = \"b\"",
        ),
    );
    a.wait_broker().await;
    b.wait_broker().await;
    let client = reqwest::Client::new();

    // A channel retry that lands on the other instance is recognised.
    let (status, first) = post_signed(&client, &a, text_message("x-1", "u-1", "hi")).await;
    assert_eq!(status, 200);
    let (status, retry) = post_signed(&client, &b, text_message("x-1", "u-1", "hi")).await;
    assert_eq!(status, 200);
    assert_eq!(retry["duplicate"], true);
    assert_eq!(retry["envelope_id"], first["envelope_id"]);
    // One conversation served by both instances keeps one sequence.
    let (status, _) = post_signed(&client, &b, text_message("x-2", "u-1", "hi")).await;
    assert_eq!(status, 200);
    let (status, _) = post_signed(&client, &a, text_message("x-3", "u-1", "hi")).await;
    assert_eq!(status, 200);

    let conn = amqp().await;
    let got = take(&conn, &setup.queue("general"), 3, WAIT).await;
    let seen: Vec<(String, u64)> = got
        .iter()
        .map(|m| {
            (
                m.body["dedupe_key"].as_str().unwrap().to_owned(),
                m.body["sequence"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("x-1".to_owned(), 1),
            ("x-2".to_owned(), 2),
            ("x-3".to_owned(), 3)
        ]
    );
    let channel = conn.create_channel().await.unwrap();
    assert_eq!(
        depth(&channel, &setup.queue("general")).await,
        0,
        "the retry was not published"
    );
    cleanup(&prefix, &[setup.queue("claims"), setup.queue("general")]).await;
    let _ = std::process::Command::new("redis-cli")
        .args(["--scan", "--pattern", &format!("{prefix}:*")])
        .output()
        .map(|out| {
            for key in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = std::process::Command::new("redis-cli")
                    .args(["del", key])
                    .output();
            }
        });
}
