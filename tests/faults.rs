//! The fault matrix (docs/RELIABILITY.md): for each fault, a steady signed stream on the
//! app, WeChat (safe mode), SMS and telephony channels, web chat visitors on their sockets,
//! and replies the other way (web chat included), then the fault, then recovery, then the
//! count. Lost must be 0: every accepted message reaches its agent queue (a duplicate only
//! under the same envelope id), every reply is delivered or reported `delivery.failed`.
//!
//! These tests stop, alarm and cut the broker and Redis the suite points at, so scripts/test
//! runs them alone, serially, after every other test (`-j 1`). Point them at private nodes
//! with SWITCHBOARD_TEST_AMQP_URL, SWITCHBOARD_TEST_RABBITMQ_NODE and
//! SWITCHBOARD_TEST_REDIS_URL. Faults are held 5 s by default (the broker outage 30 s with
//! SWITCHBOARD_FAULTS_LONG=1). Holding a fault for a while is the fault itself, so those
//! are the only sleeps; everything else waits on a condition.

mod common;
mod faults_support;
mod webchat_support;
mod wechat_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use faults_support::*;

/// How long a fault is held.
fn hold() -> Duration {
    Duration::from_secs(5)
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    ConnectionsClosed,
    BrokerStopped,
    MemoryAlarm,
    DiskAlarm,
    RedisStopped,
    ApiFailing,
    ApiHanging,
    Sigkill,
    SpoolFull,
    ReloadStorm,
}

impl Fault {
    fn name(self) -> String {
        match self {
            Fault::ConnectionsClosed => "broker connections closed".into(),
            Fault::BrokerStopped => format!(
                "broker stopped {} s and restarted",
                broker_outage().as_secs()
            ),
            Fault::MemoryAlarm => "broker memory alarm (publishes blocked)".into(),
            Fault::DiskAlarm => "broker disk alarm (publishes blocked)".into(),
            Fault::RedisStopped => "Redis stopped".into(),
            Fault::ApiFailing => "channel APIs answer 500".into(),
            Fault::ApiHanging => "channel APIs hang".into(),
            Fault::Sigkill => "daemon SIGKILL mid-stream, restarted".into(),
            Fault::SpoolFull => "spool full (broker down, spool.max_bytes 1 MiB)".into(),
            Fault::ReloadStorm => "SIGHUP reload storm".into(),
        }
    }
}

fn broker_outage() -> Duration {
    if long() {
        Duration::from_secs(30)
    } else {
        hold()
    }
}

struct Rig {
    prefix: String,
    setup: Setup,
    scratch: Scratch,
    config: String,
    daemon: Daemon,
    apis: FakeApis,
    admin: String,
    tally: Arc<Tally>,
}

impl Rig {
    async fn start(name: &str, spool_max_bytes: Option<u64>) -> Self {
        let prefix = unique_prefix(name);
        let scratch = Scratch::new(&prefix);
        let apis = FakeApis::start().await;
        let mut setup = Setup::new(&prefix);
        setup.webhook_url = format!("{}/replies", apis.base);
        setup.extra = [
            // Each visitor sends a frame every 40 ms, over the default 10 frames/s: without
            // room for it the sockets would be closed for flooding every few seconds.
            webchat_support::webchat_table("", "frames_per_second = 100\nframe_burst = 200"),
            channels_config(&prefix, &apis.base, &format!("{prefix}:")),
        ]
        .concat();
        let (public, admin) = (free_port(), free_port());
        let mut config = instance_config(&setup, &scratch.0, public, admin);
        if let Some(max) = spool_max_bytes {
            config = config.replace("max_bytes = 67108864", &format!("max_bytes = {max}"));
        }
        let daemon = Daemon::start(&scratch.0, &config);
        daemon.wait_broker().await;
        Self {
            admin: format!("http://127.0.0.1:{admin}"),
            prefix,
            setup,
            scratch,
            config,
            daemon,
            apis,
            tally: Arc::default(),
        }
    }

    async fn accepted_at_least(&self, n: usize, what: &str) {
        let tally = self.tally.clone();
        wait_for(what, DEADLINE, || {
            let count = tally.accepted_count();
            async move { (count >= n).then_some(()) }
        })
        .await;
    }
}

async fn run(fault: Fault) {
    let broker = BrokerGuard::new(
        matches!(fault, Fault::BrokerStopped | Fault::SpoolFull),
        matches!(fault, Fault::MemoryAlarm),
        matches!(fault, Fault::DiskAlarm),
    );
    let _redis = matches!(fault, Fault::RedisStopped).then_some(RedisGuard);
    let spool_max = matches!(fault, Fault::SpoolFull).then_some(1024 * 1024);
    let mut rig = Rig::start("faults", spool_max).await;
    let events = durable_events_queue(&rig.prefix).await;
    let public = rig.daemon.public.to_string();
    let visitors = webchat_visitors(&public, 2).await;
    let people = People {
        webchat: visitors.iter().map(|v| v.conversation_id.clone()).collect(),
        ..People::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::default();
    let inbound = tokio::spawn(stream(
        format!("http://{public}"),
        people.clone(),
        rig.tally.clone(),
        stop.clone(),
        Duration::from_millis(40),
        Duration::from_secs(120),
    ));
    let webchat = tokio::spawn(webchat_stream(
        public,
        visitors,
        rig.tally.clone(),
        stop.clone(),
        Duration::from_millis(40),
        Duration::from_secs(120),
    ));
    let outbound = tokio::spawn(replies(
        rig.prefix.clone(),
        people.clone(),
        Arc::clone(&published),
        stop.clone(),
        Duration::from_millis(30),
    ));
    rig.accepted_at_least(100, "100 accepted before the fault")
        .await;

    let note = inject(fault, &mut rig, &broker).await;
    let lifted = Instant::now();
    wait_for("the daemon to recover", DEADLINE, || {
        let admin = rig.admin.clone();
        async move { recovered(&admin).await.then_some(()) }
    })
    .await;
    let recovery = lifted.elapsed();
    let after = rig.tally.accepted_count() + 100;
    rig.accepted_at_least(after, "100 more accepted after recovery")
        .await;
    stop.store(true, Ordering::SeqCst);
    inbound.await.expect("inbound stream");
    webchat.await.expect("web chat visitors");
    outbound.await.expect("replies");

    let accepted = rig.tally.accepted.lock().unwrap().clone();
    let queues = [rig.setup.queue("general"), rig.setup.queue("claims")];
    let (delivered, duplicated, lost) = count_inbound(&queues, &accepted, DEADLINE).await;
    let published: Vec<String> = published.lock().unwrap().clone();
    let (replies_delivered, replies_failed, replies_lost) =
        count_replies(&events, &published, DEADLINE).await;
    let count = Count {
        sent: rig.tally.sent.load(Ordering::SeqCst),
        accepted: accepted.len(),
        refused: rig.tally.refused.load(Ordering::SeqCst),
        delivered,
        duplicated,
        lost,
        replies: published.len(),
        replies_delivered,
        replies_failed,
        replies_lost,
    };
    record(&fault.name(), &count, recovery, &note);
    let fakes = rig.apis.delivered();
    assert_eq!(count.lost, 0, "accepted messages lost: {count:?}");
    assert_eq!(count.replies_lost, 0, "replies lost: {count:?}");
    // Web chat replies go to the visitors' sockets, not through a fake channel API.
    let to_sockets = published
        .iter()
        .filter(|id| addressed_to_webchat(&people, id))
        .count();
    assert!(
        fakes.len() + to_sockets >= replies_delivered,
        "every reply reported delivered reached its channel API (web chat's aside): {} + {to_sockets} < {replies_delivered}",
        fakes.len()
    );
    assert!(count.accepted > 200, "the stream ran: {count:?}");
    after_checks(fault, &rig, &count).await;

    cleanup(&rig.prefix, &queues).await;
    wechat_support::redis_cleanup(&format!("{}:", rig.prefix)).await;
}

/// Injects `fault`, holds it, lifts it; returns a note for the results table.
async fn inject(fault: Fault, rig: &mut Rig, broker: &BrokerGuard) -> String {
    match fault {
        Fault::ConnectionsClosed => {
            ctl(&["close_all_connections", "fault test"]).await;
            String::new()
        }
        Fault::BrokerStopped => {
            ctl(&["stop_app"]).await;
            tokio::time::sleep(broker_outage()).await;
            ctl(&["start_app"]).await;
            ctl(&["await_startup", "--timeout", "60"]).await;
            format!(
                "{:.0} spooled",
                rig.daemon
                    .metric("switchboard_accepted_total", "outcome=\"spooled\"")
                    .await
            )
        }
        Fault::MemoryAlarm => {
            ctl(&["set_vm_memory_high_watermark", "absolute", "1"]).await;
            tokio::time::sleep(hold()).await;
            ctl_owned(broker.restore_watermark()).await;
            publish_outcomes(rig).await
        }
        Fault::DiskAlarm => {
            ctl(&["set_disk_free_limit", "100000GB"]).await;
            tokio::time::sleep(hold()).await;
            ctl_owned(broker.restore_disk_limit()).await;
            publish_outcomes(rig).await
        }
        Fault::RedisStopped => {
            tokio::task::spawn_blocking(stop_redis).await.unwrap();
            wait_for("redis to stop", DEADLINE, || async {
                (!redis_up()).then_some(())
            })
            .await;
            tokio::time::sleep(hold()).await;
            let fallbacks = rig
                .daemon
                .metric("switchboard_kv_errors_total", "redis_fallback")
                .await;
            tokio::task::spawn_blocking(start_redis).await.unwrap();
            wait_for("redis to start", DEADLINE, || async {
                redis_up().then_some(())
            })
            .await;
            format!("{fallbacks:.0} operations served locally")
        }
        Fault::ApiFailing => {
            rig.apis.set_mode(Mode::Fail);
            tokio::time::sleep(hold()).await;
            rig.apis.set_mode(Mode::Ok);
            String::new()
        }
        Fault::ApiHanging => {
            rig.apis.set_mode(Mode::Hang);
            tokio::time::sleep(hold()).await;
            rig.apis.set_mode(Mode::Ok);
            String::new()
        }
        Fault::Sigkill => {
            let before = rig.tally.accepted_count();
            rig.daemon.kill9();
            rig.daemon = Daemon::start(&rig.scratch.0, &rig.config);
            format!("killed after {before} accepted")
        }
        Fault::SpoolFull => {
            ctl(&["stop_app"]).await;
            let refused_before = rig.tally.not_accepted_answers.load(Ordering::SeqCst);
            let tally = rig.tally.clone();
            wait_for("the full spool to refuse", DEADLINE, || {
                let refused = tally.not_accepted_answers.load(Ordering::SeqCst);
                async move { (refused >= refused_before + 20).then_some(()) }
            })
            .await;
            let ready = readyz(&rig.admin).await.unwrap_or_default();
            assert_eq!(
                ready["spool"]["accepting"], false,
                "the spool is full: {ready}"
            );
            ctl(&["start_app"]).await;
            ctl(&["await_startup", "--timeout", "60"]).await;
            format!(
                "{:.0} answers 503",
                rig.daemon
                    .metric("switchboard_rejections_total", "unavailable")
                    .await
            )
        }
        Fault::ReloadStorm => {
            let started = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let mut sent = 0;
            while started.elapsed() < hold() {
                tick.tick().await;
                signal(rig.daemon.pid(), "HUP");
                sent += 1;
            }
            format!("{sent} SIGHUPs in {} s", hold().as_secs())
        }
    }
}

async fn ctl(args: &[&str]) {
    ctl_owned(args.iter().map(|a| (*a).to_owned()).collect()).await;
}

async fn ctl_owned(args: Vec<String>) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        rabbitmqctl(&args);
    })
    .await
    .unwrap();
}

/// How publishes ended so far: confirm timeouts show the alarm blocked them.
async fn publish_outcomes(rig: &Rig) -> String {
    let timeouts = rig
        .daemon
        .metric("switchboard_published_total", "outcome=\"timeout\"")
        .await;
    let spooled = rig
        .daemon
        .metric("switchboard_accepted_total", "outcome=\"spooled\"")
        .await;
    format!("{timeouts:.0} confirm timeouts, {spooled:.0} spooled")
}

/// What each fault must show besides the count.
async fn after_checks(fault: Fault, rig: &Rig, count: &Count) {
    match fault {
        Fault::ConnectionsClosed => assert!(
            rig.daemon
                .metric("switchboard_broker_reconnects_total", "")
                .await
                >= 1.0
        ),
        Fault::BrokerStopped | Fault::MemoryAlarm | Fault::DiskAlarm => assert!(
            rig.daemon
                .metric("switchboard_accepted_total", "outcome=\"spooled\"")
                .await
                > 0.0,
            "messages were spooled while the broker took none"
        ),
        Fault::RedisStopped => {
            assert_eq!(
                rig.tally.not_accepted_answers.load(Ordering::SeqCst),
                0,
                "nothing fails while Redis is away"
            );
            assert_eq!(
                rig.tally.webchat_retries.load(Ordering::SeqCst),
                0,
                "nothing fails on web chat sockets either ({} resyncs as history moved)",
                rig.tally.webchat_resyncs.load(Ordering::SeqCst)
            );
            assert!(
                rig.daemon
                    .metric("switchboard_kv_errors_total", "redis_fallback")
                    .await
                    > 0.0
            );
            assert!(rig.daemon.log_text().contains("redis unavailable"));
        }
        Fault::ApiFailing | Fault::ApiHanging => assert!(
            rig.daemon
                .metric("switchboard_deliveries_total", "outcome=\"retried\"")
                .await
                + count.replies_failed as f64
                > 0.0,
            "the fault touched replies"
        ),
        // Checked while injecting: the daemon said its spool was not accepting.
        Fault::SpoolFull | Fault::Sigkill | Fault::ReloadStorm => {}
    }
}

#[tokio::test]
async fn broker_connections_closed() {
    run(Fault::ConnectionsClosed).await;
}

#[tokio::test]
async fn broker_stopped_and_restarted() {
    run(Fault::BrokerStopped).await;
}

#[tokio::test]
async fn broker_memory_alarm() {
    run(Fault::MemoryAlarm).await;
}

#[tokio::test]
async fn broker_disk_alarm() {
    run(Fault::DiskAlarm).await;
}

#[tokio::test]
async fn redis_stopped() {
    run(Fault::RedisStopped).await;
}

#[tokio::test]
async fn channel_apis_fail() {
    run(Fault::ApiFailing).await;
}

#[tokio::test]
async fn channel_apis_hang() {
    run(Fault::ApiHanging).await;
}

#[tokio::test]
async fn daemon_sigkill() {
    run(Fault::Sigkill).await;
}

#[tokio::test]
async fn spool_full() {
    run(Fault::SpoolFull).await;
}

#[tokio::test]
async fn sighup_reload_storm() {
    run(Fault::ReloadStorm).await;
}
