//! The widget in a real browser: headless Debian chromium driven by playwright-core
//! (tests/browser/webchat.mjs) opens the demo page, sends a message, sees the agent's reply,
//! lives through a daemon restart mid-conversation, and takes screenshots of the open
//! widget (target/tmp/webchat-widget.png, and a phone-sized one). This test plays the
//! helpdesk and restarts the daemon; scripts/test installs chromium and playwright-core.

mod common;
mod webchat_support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use common::*;
use serde_json::Value;
use webchat_support::*;

const WAIT: Duration = Duration::from_secs(30);

/// The node side: its stdin for commands and its `STEP` lines.
struct Driver {
    child: Child,
    stdin: ChildStdin,
    steps: Receiver<String>,
}

impl Driver {
    fn start(url: &str, shots: &Path) -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
        assert!(
            dir.join("node_modules/playwright-core").exists()
                && Path::new("/usr/bin/chromium").exists(),
            "the browser test needs Debian's chromium and playwright-core in tests/browser/node_modules: \
             run scripts/test (its ensure_browser step installs both)"
        );
        let mut child = Command::new("node")
            .arg(dir.join("webchat.mjs"))
            .env("WEBCHAT_URL", url)
            .env("SCREENSHOT_DIR", shots)
            .env("CHROMIUM", "/usr/bin/chromium")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn node");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, steps) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            steps,
        }
    }

    /// Waits for `STEP name`, returning its data; a `failed` step or silence fails the test.
    fn expect(&self, name: &str) -> Value {
        loop {
            let line = match self.steps.recv_timeout(WAIT) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => panic!("browser: no step {name} within {WAIT:?}"),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("browser driver exited before step {name}")
                }
            };
            let Some(rest) = line.strip_prefix("STEP ") else {
                eprintln!("browser: {line}");
                continue;
            };
            let (step, data) = rest.split_once(' ').unwrap_or((rest, "{}"));
            let data: Value = serde_json::from_str(data).unwrap_or(Value::Null);
            assert_ne!(
                step, "failed",
                "browser step failed while waiting for {name}: {}",
                data["error"]
            );
            assert_eq!(step, name, "browser steps out of order: {data}");
            return data;
        }
    }

    fn say(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").expect("write to the browser driver");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_widget_chats_in_a_real_browser_and_survives_a_daemon_restart() {
    let prefix = unique_prefix("webchat-browser");
    let scratch = Scratch::new(&prefix);
    let mut setup = Setup::new(&prefix);
    setup.extra = format!("{}{}", webchat_table("", ""), redis_block(&prefix));
    let port = free_port();
    let config = setup.config(&scratch.0).replace(
        "\nlisten = \"127.0.0.1:0\"",
        &format!("\nlisten = \"127.0.0.1:{port}\""),
    );
    let mut daemon = Daemon::start(&scratch.0, &config);
    daemon.wait_broker().await;
    let conn = amqp().await;
    let channel = conn.create_channel().await.unwrap();

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let mut browser = Driver::start(&daemon.url("/webchat/site"), &shots);

    browser.expect("sent1");
    let first = take(&conn, &setup.queue("claims"), 1, WAIT).await;
    assert_eq!(
        first.len(),
        1,
        "the browser's message reached the claims queue"
    );
    let envelope = &first[0].body;
    assert_eq!(envelope["channel"]["kind"], "webchat");
    assert!(
        envelope["content"]["text"]
            .as_str()
            .unwrap()
            .contains("破损")
    );
    let conversation = envelope["conversation_id"].as_str().unwrap().to_owned();
    publish_reply(
        &channel,
        &prefix,
        &reply(&conversation, "r-1", "您好，很抱歉！我们会为您补发。"),
    )
    .await;
    browser.say("replied1");
    let got = browser.expect("got1");
    assert_eq!(got["agent"], "Han Meimei");

    // Restart mid-conversation: the browser notices, queues a message, reconnects.
    let status = daemon.terminate(WAIT).await;
    assert!(status.success(), "daemon stopped cleanly: {status:?}");
    browser.say("stopped");
    let queued = browser.expect("queued");
    assert_ne!(queued["state"], "online");
    assert_eq!(queued["sent"], 1, "the second message waits in the outbox");
    let daemon = Daemon::start(&scratch.0, &config);
    daemon.wait_broker().await;
    browser.say("restarted");
    browser.expect("sent2");

    let second = take(&conn, &setup.queue("general"), 1, WAIT).await;
    assert_eq!(second.len(), 1);
    assert_eq!(
        second[0].body["conversation_id"],
        conversation.as_str(),
        "same visitor after the restart"
    );
    assert_eq!(second[0].body["sequence"], 2);
    publish_reply(
        &channel,
        &prefix,
        &reply(&conversation, "r-2", "在的，请问还有什么可以帮您？"),
    )
    .await;
    browser.say("replied2");
    let done = browser.expect("done");
    assert_eq!(
        done["mine"].as_array().map(Vec::len),
        Some(2),
        "two visitor messages, no duplicate: {done}"
    );
    assert_eq!(
        done["agents"].as_array().map(Vec::len),
        Some(2),
        "two agent replies, no duplicate: {done}"
    );
    assert_eq!(done["agents"][1], "在的，请问还有什么可以帮您？");
    assert_eq!(done["badgeHidden"], true);
    assert_eq!(
        done["phoneBox"][0], 390.0,
        "the open panel fills a phone's width: {done}"
    );
    assert_eq!(done["phoneMine"], 2, "a reload keeps the conversation");

    // Nothing was published twice.
    let more = take(&conn, &setup.queue("claims"), 5, Duration::from_millis(500)).await;
    let more_general = take(
        &conn,
        &setup.queue("general"),
        5,
        Duration::from_millis(500),
    )
    .await;
    assert!(
        more.is_empty() && more_general.is_empty(),
        "a message was published twice"
    );
    assert!(shots.join("webchat-widget.png").exists());
    drop(daemon);
    cleanup(&prefix, &[setup.queue("claims"), setup.queue("general")]).await;
    redis_cleanup(&prefix);
}
