//! The operator console in a real browser (headless Debian chromium driven by playwright-core,
//! tests/browser/console.mjs) against the real binary and RabbitMQ: the console shows the
//! connectors and queues; a visitor writes from the web chat demo page in another tab; the
//! live tail shows the message with its route and explanation; "Try it" answers as the
//! helpdesk and the reply reaches the widget; a malformed reply lands in the dead letters,
//! and fixed and replayed from the console it reaches the widget too. Then the consumer's
//! config is at fault: a second site is taken out of the config, the helpdesk's reply to its
//! visitor is dead-lettered as `unknown_connector`; once the site is back (SIGHUP), the dead
//! letter replayed unchanged from the console reaches that visitor. Saves the console's
//! screenshot as docs/console.png.

mod common;
mod console_support;
mod webchat_support;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use console_support::Driver;
use serde_json::json;
use webchat_support::*;

const WAIT: Duration = Duration::from_secs(45);

#[tokio::test]
async fn the_console_shows_the_whole_loop_in_a_real_browser() {
    let prefix = unique_prefix("console-browser");
    let scratch = Scratch::new(&prefix);
    let mut setup = Setup::new(&prefix);
    let site = webchat_table("", "");
    let site2 = site.replace("id = \"site\"", "id = \"site2\"");
    assert_ne!(site, site2);
    setup.extra = format!("{site}{site2}");
    let with_management = |config: String| {
        config.replace(
            "reconnect_max_ms = 1000\n",
            "reconnect_max_ms = 1000\nmanagement_url = \"http://127.0.0.1:15672\"\n",
        )
    };
    let config = with_management(setup.config(&scratch.0));
    setup.extra = site.clone();
    let without_site2 = with_management(setup.config(&scratch.0));
    assert!(config.contains("management_url") && !without_site2.contains("site2"));
    let config_path = scratch.0.join("switchboard.toml");
    let daemon = Daemon::start(&scratch.0, &config);
    daemon.wait_broker().await;
    let claims = setup.queue("claims");
    let screenshot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/console.png");

    let mut browser = Driver::start(
        "console.mjs",
        &[
            ("CONSOLE_URL", daemon.admin_url("/console/")),
            ("WEBCHAT_URL", daemon.url("/webchat/site")),
            ("WEBCHAT2_URL", daemon.url("/webchat/site2")),
            ("CLAIMS_QUEUE", claims.clone()),
            ("SCREENSHOT", screenshot.display().to_string()),
        ],
    );

    let seen = browser.expect("console", WAIT);
    assert!(
        seen["connectors"]
            .as_array()
            .unwrap()
            .contains(&json!("/webchat/site"))
            && seen["connectors"]
                .as_array()
                .unwrap()
                .contains(&json!("/app/shop")),
        "{seen}"
    );
    assert!(
        seen["queues"].as_array().unwrap().contains(&json!(claims)),
        "{seen}"
    );
    browser.expect("listening", WAIT);
    browser.expect("sent", WAIT);

    let tailed = browser.expect("tailed", WAIT);
    assert_eq!(tailed["route"], "claims.standard p6", "{tailed}");
    let explanation = tailed["explanation"].as_str().unwrap();
    assert!(
        explanation.contains("rule        damaged") && explanation.contains("MATCH"),
        "{explanation}"
    );
    assert!(
        !tailed["rowText"].as_str().unwrap().contains("0013"),
        "phone numbers are masked in the tail: {tailed}"
    );
    let conversation = tailed["conversation"].as_str().unwrap().to_owned();
    assert!(conversation.starts_with("webchat:site:"), "{conversation}");

    let delivered = browser.expect("delivered", WAIT);
    assert!(
        delivered["text"].as_str().unwrap().contains("补发"),
        "{delivered}"
    );
    browser.expect("screenshot", WAIT);
    assert!(std::fs::metadata(&screenshot).is_ok_and(|m| m.len() > 10_000));

    // A helpdesk publishes a reply without content: the dispatcher dead-letters it.
    let response = reqwest::Client::new()
        .post(daemon.admin_url("/api/reply"))
        .json(&json!({"schema": "switchboard.reply.v1", "id": "r-broken", "conversation_id": conversation}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    wait_for("the malformed reply in the dead letters", WAIT, || async {
        let list: serde_json::Value = reqwest::get(daemon.admin_url("/api/dead"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (list["total"] == 1).then_some(())
    })
    .await;
    browser.say("dead");
    let replayed = browser.expect("replayed", WAIT);
    let agents = replayed["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 2, "{replayed}");
    assert!(
        agents[1].as_str().unwrap().contains("Fixed and replayed"),
        "{replayed}"
    );
    assert_eq!(
        replayed["left"], 0,
        "the dead queue is empty after the replay"
    );
    assert_ne!(
        replayed["queue"]["oldest"], "",
        "the claims queue's oldest message has an age: {replayed}"
    );

    // A visitor of the second site...
    browser.say("visit2");
    let visitor = browser.expect("visitor2", WAIT);
    let signed = visitor["visitor"]
        .as_str()
        .expect("a visitor id")
        .to_owned();
    let user = signed
        .rsplit_once('.')
        .expect("user.signature")
        .0
        .to_owned();
    // ... which the operator then takes out of the config by mistake.
    std::fs::write(&config_path, &without_site2).unwrap();
    signal(daemon.pid(), "HUP");
    wait_for("site2 out of force", WAIT, || async {
        let paths = connector_paths(&daemon).await?;
        (!paths.iter().any(|p| p == "/webchat/site2")).then_some(())
    })
    .await;
    let response = reqwest::Client::new()
        .post(daemon.admin_url("/api/reply"))
        .json(&json!({
            "schema": "switchboard.reply.v1", "id": "r-site2",
            "conversation_id": format!("webchat:site2:{user}"),
            "content": {"type": "text", "text": "您的退款已处理 Your refund is done."},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    wait_for(
        "the reply dead-lettered as unknown_connector",
        WAIT,
        || async {
            let list: serde_json::Value =
                reqwest::get(daemon.admin_url("/api/dead?reason=unknown_connector"))
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
            (list["dead_letters"].as_array()?.len() == 1).then_some(())
        },
    )
    .await;
    // The operator puts the site back; replayed unchanged, the reply reaches the visitor.
    std::fs::write(&config_path, &config).unwrap();
    signal(daemon.pid(), "HUP");
    wait_for("site2 back in force", WAIT, || async {
        let paths = connector_paths(&daemon).await?;
        paths.iter().any(|p| p == "/webchat/site2").then_some(())
    })
    .await;
    browser.say("replay2");
    let redelivered = browser.expect("redelivered", WAIT);
    assert!(
        redelivered["text"]
            .as_str()
            .unwrap()
            .contains("Your refund is done"),
        "{redelivered}"
    );
    assert!(
        redelivered["body"].as_str().unwrap().contains("r-site2"),
        "replayed as it was: {redelivered}"
    );
    assert_eq!(redelivered["left"], 0, "{redelivered}");

    drop(browser);
    drop(daemon);
    cleanup(&prefix, &[claims, setup.queue("general")]).await;
}

/// The paths of the connectors in force, from `GET /api/links`.
async fn connector_paths(daemon: &Daemon) -> Option<Vec<String>> {
    let links: serde_json::Value = reqwest::get(daemon.admin_url("/api/links"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some(
        links["connectors"]
            .as_array()?
            .iter()
            .filter_map(|c| c["path"].as_str().map(str::to_owned))
            .collect(),
    )
}
