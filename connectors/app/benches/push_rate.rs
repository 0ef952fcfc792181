//! Push delivery rate: replies driven through the app connector's `deliver` by the same
//! smoothing limiter the daemon puts in front of every connector (governor, quota
//! `limits.outbound_per_second` with `limits.outbound_burst`), with the daemon's default 64
//! replies in flight, to local fakes of FCM, APNs (HTTP/2 + TLS) and JPush. The fakes
//! enforce the same quota as the provider's own rate limit and answer 429 above it, so any
//! 429 is one we caused. Prints a Markdown table row per run.
//!
//! cargo bench -p switchboard-connector-app --bench push_rate -- [--rate R] [--burst B]
//!     [--secs S] [--concurrency C] [--users U] [--provider fcm|apns|jpush|mix]
//!
//! Everything listens on 127.0.0.1; the run is bounded by `--secs` (at most 120) and stops
//! by itself.

#[path = "../src/push/fakes.rs"]
mod fakes;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use governor::{Quota, RateLimiter};
use serde_json::json;
use switchboard_connector_app::{AppConfig, AppConnectorFactory};
use switchboard_sdk::signature::sign_timestamped;
use switchboard_sdk::testing::RecordingSink;
use switchboard_sdk::time::OffsetDateTime;
use switchboard_sdk::{
    ChannelRef, Connector, ConnectorContext, ConnectorFactory, ConversationId, DeliveryError,
    Inbound, Recipient, Reply,
};
use tower::ServiceExt;

const KEY: &str = "bench-signing-key-0123456789";
const CLIENT_EMAIL: &str = "bench@demo-project.iam.gserviceaccount.com";
const APNS_TOKEN_TAIL: &str = "4b1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b";

struct Args {
    rate: u32,
    burst: u32,
    secs: u64,
    concurrency: usize,
    users: usize,
    provider: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        rate: 200,
        burst: 50,
        secs: 10,
        concurrency: 64,
        users: 1000,
        provider: "mix".to_owned(),
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        // cargo bench passes --bench to harness-less benches.
        if flag == "--bench" {
            continue;
        }
        let value = given
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {value}"))
        };
        match flag.as_str() {
            "--rate" => args.rate = u32::try_from(number()?).map_err(|e| e.to_string())?,
            "--burst" => args.burst = u32::try_from(number()?).map_err(|e| e.to_string())?,
            "--secs" => args.secs = number()?,
            "--concurrency" => args.concurrency = usize::try_from(number()?).unwrap_or(1),
            "--users" => args.users = usize::try_from(number()?).unwrap_or(1),
            "--provider" => args.provider = value,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if !(1..=20_000).contains(&args.rate)
        || !(1..=20_000).contains(&args.burst)
        || !(1..=120).contains(&args.secs)
        || !(1..=1024).contains(&args.concurrency)
        || !(1..=100_000).contains(&args.users)
        || !matches!(args.provider.as_str(), "fcm" | "apns" | "jpush" | "mix")
    {
        return Err("--rate 1..=20000, --burst 1..=20000, --secs 1..=120, --concurrency 1..=1024, --users 1..=100000, --provider fcm|apns|jpush|mix".to_owned());
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(err) => {
            eprintln!("push_rate: {err}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    runtime.block_on(run(args));
}

async fn run(args: Args) {
    let quota = Quota::per_second(NonZeroU32::new(args.rate).unwrap_or(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(args.burst).unwrap_or(NonZeroU32::MIN));

    // The providers' side: one limit with the configured quota, shared by the three fakes,
    // standing for what we promised to send at most. It allows 20 ms of jitter on top of the
    // burst: requests leave our limiter exactly on time and reach the fake a little late,
    // unevenly, so a limit with no slack at all would count scheduling noise, not excess.
    let jitter = (args.rate / 50).max(1);
    let provider_limit = fakes::limiter(args.rate, args.burst.saturating_add(jitter));
    let fcm = fakes::FakeFcm::start(CLIENT_EMAIL).await;
    let (p8, p8_public) = fakes::p256_key();
    let apns =
        fakes::FakeApns::start(&p8_public, "TEAM123456", "KEY1234567", "com.example.shop").await;
    let jpush =
        fakes::FakeJpush::start("7d431e42dfa6a6d693ac2d04", "5e987ac6d2e04d95a9d8f0d1").await;

    let dir = std::env::temp_dir().join(format!("sb-push-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        path.display().to_string()
    };
    let service_account = write(
        "fcm.json",
        &fakes::service_account_json("demo-project", CLIENT_EMAIL, &fcm.token_uri()),
    );
    let p8_file = write("AuthKey.p8", &p8);
    let ca_file = write("ca.pem", &apns.ca_pem);
    let text = format!(
        r#"
        id = "bench"
        signing_key = "{KEY}"
        [webhook]
        url = "http://127.0.0.1:9/unused"
        [push]
        also_webhook = false
        [push.fcm]
        service_account_file = "{service_account}"
        api_base = "{fcm_base}"
        [push.apns]
        team_id = "TEAM123456"
        key_id = "KEY1234567"
        private_key_file = "{p8_file}"
        topic = "com.example.shop"
        api_base = "{apns_base}"
        tls_ca_file = "{ca_file}"
        [push.jpush]
        app_key = "7d431e42dfa6a6d693ac2d04"
        master_secret = "5e987ac6d2e04d95a9d8f0d1"
        api_base = "{jpush_base}"
        [limits]
        outbound_per_second = {rate}
        outbound_burst = {burst}
        "#,
        fcm_base = fcm.base,
        apns_base = apns.base,
        jpush_base = jpush.base,
        rate = args.rate,
        burst = args.burst,
    );
    let config: AppConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("config: {e}"));
    let connector = AppConnectorFactory::build(&config, &ConnectorContext::in_memory())
        .unwrap_or_else(|e| panic!("build: {:?}", e.0));
    let _ = std::fs::remove_dir_all(&dir);

    register_devices(connector.as_ref(), &args).await;

    // Warm up as a running daemon is: an FCM access token, an APNs provider token, open
    // connections. Then the providers' limit starts counting.
    for n in 0..3.min(args.users) {
        let user = format!("u-{n}");
        let recipient = Recipient {
            conversation: ConversationId::new("app", "bench", &user),
        };
        if let Err(err) = connector
            .deliver(&reply(&user, usize::MAX - n), &recipient)
            .await
        {
            panic!("warm-up: {err}");
        }
    }
    let warm = (
        fcm.state.sends.seen().len(),
        apns.state.sends.seen().len(),
        jpush.state.sends.seen().len(),
    );
    fcm.state.sends.limit(provider_limit.clone());
    apns.state.sends.limit(provider_limit.clone());
    jpush.state.sends.limit(provider_limit.clone());

    let total = usize::try_from(u64::from(args.rate) * args.secs).unwrap_or(usize::MAX);
    let limiter = Arc::new(RateLimiter::direct(quota));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (connector, limiter, next) = (connector.clone(), limiter.clone(), next.clone());
        let users = args.users;
        workers.push(tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return done;
                }
                limiter.until_ready().await;
                let user = format!("u-{}", n % users);
                let reply = reply(&user, n);
                let recipient = Recipient {
                    conversation: ConversationId::new("app", "bench", &user),
                };
                let sent = Instant::now();
                let outcome = connector.deliver(&reply, &recipient).await;
                done.push((Instant::now(), Instant::now() - sent, outcome.err()));
            }
        }));
    }
    let mut finished = Vec::with_capacity(total);
    for worker in workers {
        finished.extend(worker.await.unwrap_or_default());
    }
    let elapsed = started.elapsed();

    finished.sort_by_key(|(at, _, _)| *at);
    let failures: Vec<&DeliveryError> =
        finished.iter().filter_map(|(_, _, e)| e.as_ref()).collect();
    let limited = failures
        .iter()
        .filter(|e| matches!(e, DeliveryError::RateLimited { .. }))
        .count();
    // The limiter lets `burst` go at once and then one every 1/rate: the n-th reply may
    // start at (n - burst) / rate. Achieved = replies beyond the burst per second of run.
    let burst = usize::try_from(args.burst).unwrap_or(0).min(finished.len());
    let achieved = match finished.last() {
        Some((last, _, _)) if *last > started => {
            (finished.len() - burst) as f64 / (*last - started).as_secs_f64()
        }
        _ => 0.0,
    };
    let mut latencies: Vec<Duration> = finished.iter().map(|(_, l, _)| *l).collect();
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let throttled =
        fcm.state.sends.throttled() + apns.state.sends.throttled() + jpush.state.sends.throttled();
    // The most requests the providers saw in any one second: at most rate + burst if we
    // kept the quota.
    let mut arrivals: Vec<Instant> = [&fcm.state.sends, &apns.state.sends, &jpush.state.sends]
        .iter()
        .flat_map(|recorder| recorder.seen())
        .map(|seen| seen.at)
        .filter(|at| *at >= started)
        .collect();
    arrivals.sort();
    let mut peak = 0;
    let mut from = 0;
    for (to, at) in arrivals.iter().enumerate() {
        while *at - arrivals[from] >= Duration::from_secs(1) {
            from += 1;
        }
        peak = peak.max(to - from + 1);
    }
    let (f, a, j) = (
        fcm.state.sends.seen().len() - warm.0,
        apns.state.sends.seen().len() - warm.1,
        jpush.state.sends.seen().len() - warm.2,
    );
    println!(
        "| {} | {} | {} | {} | {:.1} | {:.1} | {:.3} | {peak} | {} | {} | {} | {:.1} / {:.1} | {f}/{a}/{j} |",
        args.provider,
        args.rate,
        args.burst,
        finished.len(),
        elapsed.as_secs_f64(),
        achieved,
        achieved / f64::from(args.rate),
        throttled,
        limited,
        failures.len(),
        percentile(0.5),
        percentile(0.99),
    );
    for err in failures.iter().take(3) {
        eprintln!("push_rate: failure: {err}");
    }
}

async fn register_devices(connector: &dyn Connector, args: &Args) {
    let channel = ChannelRef {
        kind: "app".to_owned(),
        connector_id: "bench".to_owned(),
    };
    let router = connector.routes(Inbound::new(Arc::new(RecordingSink::default()), channel));
    for n in 0..args.users {
        let provider = match args.provider.as_str() {
            "mix" => ["fcm", "apns", "jpush"][n % 3],
            one => one,
        };
        let (platform, token) = match provider {
            "fcm" => ("android", format!("fcm-{n}:APA91bHun4MxP5egoKMwt2KZFBaFUH")),
            "apns" => ("ios", format!("{:04x}{APNS_TOKEN_TAIL}", n % 65_536)),
            _ => ("android", format!("1a0018970a{n:08}")),
        };
        let body = json!({"action": "register", "user_id": format!("u-{n}"),
            "provider": provider, "platform": platform, "token": token})
        .to_string();
        let timestamp = OffsetDateTime::now_utc().unix_timestamp().to_string();
        let signature = sign_timestamped(KEY.as_bytes(), &timestamp, body.as_bytes());
        let request = Request::builder()
            .method("POST")
            .uri("/devices")
            .header("x-switchboard-timestamp", timestamp)
            .header("x-switchboard-signature", signature)
            .body(Body::from(body))
            .unwrap_or_else(|e| panic!("{e}"));
        let response = router
            .clone()
            .oneshot(request)
            .await
            .unwrap_or_else(|e| match e {});
        assert_eq!(response.status(), StatusCode::OK, "registering u-{n}");
    }
}

fn reply(user: &str, n: usize) -> Reply {
    Reply::from_slice(
        json!({"schema": "switchboard.reply.v1", "id": format!("r-{n}"),
            "conversation_id": format!("app:bench:{user}"),
            "content": {"type": "text", "text": format!("Your parcel SF{n:010} left Shenzhen this morning.")}})
        .to_string()
        .as_bytes(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}
