//! Faults of the broker while messages stream in. These tests stop and disturb the shared
//! RabbitMQ, so scripts/test runs this target on its own, serially, after every other test;
//! each test restarts the broker application before it returns, pass or fail.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

fn rabbitmqctl(args: &[&str]) {
    let output = rabbitmqctl_command()
        .args(args)
        .output()
        .expect("rabbitmqctl");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Starts the broker application again however the test ends.
struct BrokerGuard;

impl Drop for BrokerGuard {
    fn drop(&mut self) {
        let _ = rabbitmqctl_command().arg("start_app").output();
        let _ = rabbitmqctl_command()
            .args(["await_startup", "--timeout", "60"])
            .output();
    }
}

/// What the channel side saw: dedupe key (message id) -> envelope id, for every 200.
type Accepted = Arc<Mutex<HashMap<String, String>>>;

/// Posts messages with 16 in flight, each worker at most one per `pace`, retrying each until
/// accepted as a channel would, until `stop` is set (by the fault, once it has seen enough
/// accepted after it, so the stream always outlasts the fault however slow the machine);
/// returns how many messages it started, every one of them accepted.
async fn stream(daemon: &Daemon, accepted: Accepted, pace: Duration, stop: &AtomicBool) -> usize {
    let client = reqwest::Client::new();
    let next = AtomicUsize::new(0);
    let workers = (0..16).map(|_| {
        let (client, next, accepted) = (client.clone(), &next, accepted.clone());
        async move {
            let mut pacer = tokio::time::interval(pace);
            loop {
                pacer.tick().await;
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let id = format!("f-{i}");
                let body = text_message(&id, &format!("u-{}", i % 25), "hello");
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    assert!(attempts < 200, "message {id} never accepted");
                    let (status, answer) = post_signed(&client, daemon, body.clone()).await;
                    if status == 200 {
                        let envelope = answer["envelope_id"].as_str().unwrap().to_owned();
                        accepted.lock().unwrap().insert(id, envelope);
                        break;
                    }
                    assert!(
                        status == 503,
                        "only 'retry later' is acceptable, got {status} {answer}"
                    );
                }
            }
        }
    });
    futures_util::future::join_all(workers).await;
    next.load(Ordering::SeqCst)
}

/// Waits until at least `n` messages were accepted.
async fn accepted_at_least(accepted: &Accepted, n: usize, what: &str) {
    wait_for(what, Duration::from_secs(90), || {
        let len = accepted.lock().unwrap().len();
        async move { (len >= n).then_some(()) }
    })
    .await;
}

/// Consumes until every accepted message arrived; asserts none is lost and duplicates carry
/// the first envelope id.
async fn verify_delivery(
    daemon: &Daemon,
    queue: &str,
    accepted: &HashMap<String, String>,
) -> usize {
    let conn = amqp().await;
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    let mut total = 0;
    while seen.len() < accepted.len() {
        let batch = take(
            &conn,
            queue,
            accepted.len() - seen.len(),
            Duration::from_secs(60),
        )
        .await;
        if batch.is_empty() {
            // Show what the daemon thought happened, so a loss can be explained.
            let metrics = reqwest::get(daemon.admin_url("/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let log = daemon.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "{} of {} accepted messages never arrived\nmetrics:\n{}\nlog tail:\n{}",
                accepted.len() - seen.len(),
                accepted.len(),
                metrics
                    .lines()
                    .filter(|l| !l.starts_with('#') && !l.contains("bucket"))
                    .collect::<Vec<_>>()
                    .join("\n"),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        for message in batch {
            total += 1;
            let key = message.body["dedupe_key"].as_str().unwrap().to_owned();
            let id = message.body["id"].as_str().unwrap().to_owned();
            seen.entry(key).or_default().push(id);
        }
    }
    for (key, envelope) in accepted {
        let ids = seen
            .get(key)
            .unwrap_or_else(|| panic!("accepted message {key} lost"));
        assert!(
            ids.iter().all(|id| id == envelope),
            "{key} arrived as {ids:?}, accepted as {envelope}"
        );
    }
    total
}

#[tokio::test]
async fn broker_connections_closed_mid_stream_lose_nothing() {
    let _guard = BrokerGuard;
    let prefix = unique_prefix("closeconn");
    let scratch = Scratch::new(&prefix);
    let setup = Setup::new(&prefix);
    let daemon = Daemon::start(&scratch.0, &setup.config(&scratch.0));
    daemon.wait_broker().await;
    let accepted: Accepted = Arc::default();

    let stop = AtomicBool::new(false);
    let fault = async {
        accepted_at_least(&accepted, 300, "300 accepted").await;
        tokio::task::spawn_blocking(|| rabbitmqctl(&["close_all_connections", "fault test"]))
            .await
            .unwrap();
        let closed_at = accepted.lock().unwrap().len();
        accepted_at_least(&accepted, closed_at + 300, "300 more accepted").await;
        stop.store(true, Ordering::SeqCst);
    };
    let (sent, ()) = tokio::join!(
        stream(&daemon, accepted.clone(), Duration::from_millis(20), &stop),
        fault
    );
    let accepted = accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), sent);
    let total = verify_delivery(&daemon, &setup.queue("general"), &accepted).await;
    assert!(
        daemon
            .metric("switchboard_broker_reconnects_total", "")
            .await
            >= 1.0,
        "the daemon reconnected"
    );
    eprintln!(
        "closed connections: {sent} accepted, {total} delivered, {} duplicates",
        total - sent
    );
    cleanup(&prefix, &[setup.queue("claims"), setup.queue("general")]).await;
}

#[tokio::test]
async fn broker_stopped_and_started_mid_stream_loses_nothing() {
    let guard = BrokerGuard;
    let prefix = unique_prefix("stopapp");
    let scratch = Scratch::new(&prefix);
    let setup = Setup::new(&prefix);
    let daemon = Daemon::start(&scratch.0, &setup.config(&scratch.0));
    daemon.wait_broker().await;
    let accepted: Accepted = Arc::default();

    let stop = AtomicBool::new(false);
    let fault = async {
        accepted_at_least(&accepted, 300, "300 accepted").await;
        tokio::task::spawn_blocking(|| rabbitmqctl(&["stop_app"]))
            .await
            .unwrap();
        // Keep the broker away while a good share of the stream goes to the spool.
        let stopped_at = accepted.lock().unwrap().len();
        accepted_at_least(&accepted, stopped_at + 200, "200 accepted without a broker").await;
        let spooled = daemon
            .metric("switchboard_accepted_total", "outcome=\"spooled\"")
            .await;
        assert!(
            spooled > 0.0,
            "messages were spooled while the broker was away"
        );
        tokio::task::spawn_blocking(|| {
            rabbitmqctl(&["start_app"]);
            rabbitmqctl(&["await_startup", "--timeout", "60"]);
        })
        .await
        .unwrap();
        let started_at = accepted.lock().unwrap().len();
        accepted_at_least(
            &accepted,
            started_at + 200,
            "200 accepted after the restart",
        )
        .await;
        stop.store(true, Ordering::SeqCst);
    };
    let (sent, ()) = tokio::join!(
        stream(&daemon, accepted.clone(), Duration::from_millis(80), &stop),
        fault
    );
    drop(guard);
    let accepted = accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), sent);
    let total = verify_delivery(&daemon, &setup.queue("general"), &accepted).await;
    wait_for("the spool to drain", Duration::from_secs(30), || async {
        (daemon.metric("switchboard_spool_depth", "").await == 0.0).then_some(())
    })
    .await;
    eprintln!(
        "stop_app: {sent} accepted, {total} delivered, {} duplicates",
        total - sent
    );
    cleanup(&prefix, &[setup.queue("claims"), setup.queue("general")]).await;
}

#[tokio::test]
async fn spooled_messages_survive_sigkill_and_arrive_after_restart() {
    let guard = BrokerGuard;
    let prefix = unique_prefix("sigkill");
    let scratch = Scratch::new(&prefix);
    let setup = Setup::new(&prefix);
    let mut daemon = Daemon::start(&scratch.0, &setup.config(&scratch.0));
    daemon.wait_broker().await;

    tokio::task::spawn_blocking(|| rabbitmqctl(&["stop_app"]))
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let mut accepted = HashMap::new();
    for i in 0..50 {
        let id = format!("k-{i}");
        let (status, answer) =
            post_signed(&client, &daemon, text_message(&id, "u-kill", "hi")).await;
        assert_eq!(status, 200, "{answer}");
        accepted.insert(id, answer["envelope_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(daemon.metric("switchboard_spool_depth", "").await, 50.0);
    daemon.kill9();
    drop(guard);

    let daemon = Daemon::start(&scratch.0, &setup.config(&scratch.0));
    daemon.wait_broker().await;
    let total = verify_delivery(&daemon, &setup.queue("general"), &accepted).await;
    assert_eq!(
        total, 50,
        "nothing duplicated either: the spool was never drained before the kill"
    );
    cleanup(&prefix, &[setup.queue("claims"), setup.queue("general")]).await;
}
