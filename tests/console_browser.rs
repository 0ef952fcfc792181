//! The operator console in a real browser (headless Debian chromium driven by playwright-core,
//! tests/browser/console.mjs) against the real binary and RabbitMQ: the console shows the
//! connectors and queues; a visitor writes from the web chat demo page in another tab; the
//! live tail shows the message with its route and explanation; "Try it" answers as the
//! helpdesk and the reply reaches the widget; a malformed reply lands in the dead letters,
//! and fixed and replayed from the console it reaches the widget too. Saves the console's
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
    setup.extra = webchat_table("", "");
    let daemon = Daemon::start(&scratch.0, &setup.config(&scratch.0));
    daemon.wait_broker().await;
    let claims = setup.queue("claims");
    let screenshot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/console.png");

    let mut browser = Driver::start(
        "console.mjs",
        &[
            ("CONSOLE_URL", daemon.admin_url("/console/")),
            ("WEBCHAT_URL", daemon.url("/webchat/site")),
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

    drop(browser);
    drop(daemon);
    cleanup(&prefix, &[claims, setup.queue("general")]).await;
}
