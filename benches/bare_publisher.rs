//! The yardstick for the daemon: a bare lapin publisher doing only the broker's part of the
//! daemon's work (persistent messages, confirm mode, a fixed window of unconfirmed
//! publishes) with the same envelopes, so the daemon's rate and CPU can be read as a
//! multiple of what publishing alone costs.
//!
//! Modes (`BENCH_MODE`):
//! - `publish` (default): optionally takes one real envelope from `BENCH_TEMPLATE_QUEUE`
//!   (body, headers, priority, routing key), purges `BENCH_PURGE_QUEUES`, declares its own
//!   durable topic exchange and durable queue named `BENCH_NAME` (bound with `#`), publishes
//!   `BENCH_WARMUP` messages, purges, then publishes `BENCH_N` messages with at most
//!   `BENCH_WINDOW` unconfirmed, and deletes its exchange and queue. With `BENCH_RATE` above
//!   0 it publishes open-loop instead, message `i` at `start + i / rate` however many are
//!   unconfirmed, and reports publish-to-confirm latency counted from each message's due
//!   moment: the broker's own latency floor at that rate.
//! - `cleanup`: purges `BENCH_PURGE_QUEUES`, deletes `BENCH_DELETE_QUEUES` and
//!   `BENCH_DELETE_EXCHANGES` (comma-separated lists).
//!
//! Other variables: `BENCH_AMQP_URL` (default the local guest URL), `BENCH_MAX_PRIORITY`
//! (default 9, as the daemon declares classic agent queues; 0 for none), `BENCH_MAX_SECS`
//! (default 600), `BENCH_CLK_TCK` (default 100).
//!
//! Prints a human summary on stderr and one `RESULT key=value ...` line on stdout.

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind, PublisherConfirm,
};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => value
            .trim()
            .parse()
            .map_err(|_| format!("{name}: cannot parse {value:?}")),
        _ => Ok(default),
    }
}

fn list(name: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The message every publish repeats, apart from its id and timestamp.
struct Template {
    body: Vec<u8>,
    routing_key: String,
    headers: FieldTable,
    priority: Option<u8>,
    origin: &'static str,
}

/// An envelope shaped like the daemon's (`switchboard.envelope.v1` of the same customer
/// question), for when no real one is at hand.
fn built_template() -> Template {
    let body = concat!(
        r#"{"schema":"switchboard.envelope.v1","id":"01K0000000000000000000BENCH","#,
        r#""conversation_id":"app:bench:u-1","sequence":1,"channel":{"kind":"app","connector_id":"bench"},"#,
        r#""sender":{"channel_user_id":"u-1","customer_id":"c-1","tier":"standard","display_name":"Bench User 1","phone":"+8613800000001"},"#,
        r#""received_at":"2025-01-01T00:00:00.000000000Z","#,
        r#""content":{"type":"text","text":"Where is my parcel SF0000000001? It was due yesterday and the tracking page has not changed since."},"#,
        r#""intent":null,"entities":[],"flags":[],"#,
        r#""route":{"skill":"tracking","tier":"standard","queue_key":"tracking.standard","priority":3,"rule":"where-is-my-parcel","reason":"rule where-is-my-parcel: keyword \"where is\""},"#,
        r#""dedupe_key":"bench-1","raw":null}"#
    );
    let mut headers = FieldTable::default();
    for (name, value) in [
        ("x-schema", "switchboard.envelope.v1"),
        ("x-channel", "app"),
        ("x-connector-id", "bench"),
        ("x-conversation-id", "app:bench:u-1"),
        ("x-sequence", "1"),
    ] {
        headers.insert(name.into(), AMQPValue::LongString(value.into()));
    }
    Template {
        body: body.as_bytes().to_vec(),
        routing_key: "tracking.standard".to_owned(),
        headers,
        priority: Some(3),
        origin: "built",
    }
}

/// Takes one envelope the daemon published (and removes it from that queue).
async fn taken_template(channel: &Channel, queue: &str) -> Result<Option<Template>, String> {
    let got = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .map_err(|e| format!("basic.get from {queue}: {e}"))?;
    Ok(got.map(|message| {
        let delivery = message.delivery;
        Template {
            body: delivery.data,
            routing_key: delivery.routing_key.as_str().to_owned(),
            headers: delivery.properties.headers().clone().unwrap_or_default(),
            priority: *delivery.properties.priority(),
            origin: "daemon",
        }
    }))
}

/// This process's user+system CPU seconds, from `/proc/self/stat`.
fn own_cpu_seconds(clk_tck: f64) -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clk_tck)
}

/// Counts of how publishes ended.
#[derive(Default, Debug)]
struct Outcomes {
    acked: u64,
    nacked: u64,
    returned: u64,
    failed: u64,
}

fn tally(result: Result<lapin::Confirmation, lapin::Error>, outcomes: &mut Outcomes) {
    match result {
        Ok(confirmation) if confirmation.is_nack() => outcomes.nacked += 1,
        Ok(confirmation) => {
            if confirmation.take_message().is_some() {
                outcomes.returned += 1;
            } else {
                outcomes.acked += 1;
            }
        }
        Err(_) => outcomes.failed += 1,
    }
}

/// Writes message `i` with the properties the daemon sets on every envelope.
async fn publish_one(
    channel: &Channel,
    exchange: &str,
    template: &Template,
    run_id: &str,
    i: usize,
) -> Result<PublisherConfirm, lapin::Error> {
    let mut properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(format!("{run_id}-{i}").as_str().into())
        .with_timestamp(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        )
        .with_headers(template.headers.clone());
    if let Some(priority) = template.priority {
        properties = properties.with_priority(priority);
    }
    channel
        .basic_publish(
            exchange.into(),
            template.routing_key.as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            &template.body,
            properties,
        )
        .await
}

/// Publishes message `i` at `start + i / rate` whatever the confirms do; returns the
/// outcomes and each message's time from its due moment to its confirm, in microseconds.
async fn publish_open(
    channel: &Channel,
    exchange: &str,
    template: &Template,
    run_id: &str,
    n: usize,
    rate: f64,
    deadline: Instant,
) -> (Outcomes, Vec<u64>) {
    let mut outcomes = Outcomes::default();
    let mut latencies = Vec::with_capacity(n);
    let mut in_flight = FuturesUnordered::new();
    let start = tokio::time::Instant::now();
    let mut i = 0;
    while i < n || !in_flight.is_empty() {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::select! {
            biased;
            Some((due, result)) = in_flight.next(), if !in_flight.is_empty() => {
                let waited: Duration = tokio::time::Instant::elapsed(&due);
                latencies.push(u64::try_from(waited.as_micros()).unwrap_or(u64::MAX));
                tally(result, &mut outcomes);
            }
            _ = tokio::time::sleep_until(due), if i < n => {
                if Instant::now() >= deadline {
                    i = n;
                    continue;
                }
                match publish_one(channel, exchange, template, run_id, i).await {
                    Ok(confirm) => in_flight.push(async move { (due, confirm.await) }),
                    Err(err) => {
                        eprintln!("publish {i} failed: {err}");
                        outcomes.failed += 1;
                        i = n;
                        continue;
                    }
                }
                i += 1;
            }
        }
    }
    (outcomes, latencies)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// Publishes `n` copies of `template` keeping at most `window` unconfirmed.
async fn publish(
    channel: &Channel,
    exchange: &str,
    template: &Template,
    run_id: &str,
    n: usize,
    window: usize,
    deadline: Instant,
) -> Outcomes {
    let mut outcomes = Outcomes::default();
    let mut in_flight = FuturesUnordered::new();
    for i in 0..n {
        if Instant::now() >= deadline {
            break;
        }
        while in_flight.len() >= window {
            if let Some(result) = in_flight.next().await {
                tally(result, &mut outcomes);
            }
        }
        match publish_one(channel, exchange, template, run_id, i).await {
            Ok(confirm) => in_flight.push(confirm),
            Err(err) => {
                eprintln!("publish {i} failed: {err}");
                outcomes.failed += 1;
                break;
            }
        }
    }
    while let Some(result) = in_flight.next().await {
        tally(result, &mut outcomes);
    }
    outcomes
}

async fn purge(connection: &Connection, queues: &[String]) -> Result<(), String> {
    for queue in queues {
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| format!("channel: {e}"))?;
        match channel
            .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
            .await
        {
            Ok(count) => eprintln!("purged {count} from {queue}"),
            // A queue that is not there has nothing to purge.
            Err(err) => eprintln!("purge {queue}: {err}"),
        }
        let _ = channel.close(200, "done".into()).await;
    }
    Ok(())
}

async fn cleanup(
    connection: &Connection,
    queues: &[String],
    exchanges: &[String],
) -> Result<(), String> {
    for queue in queues {
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| format!("channel: {e}"))?;
        match channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
        {
            Ok(count) => eprintln!("deleted queue {queue} ({count} messages)"),
            Err(err) => eprintln!("delete queue {queue}: {err}"),
        }
        let _ = channel.close(200, "done".into()).await;
    }
    for exchange in exchanges {
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| format!("channel: {e}"))?;
        match channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await
        {
            Ok(()) => eprintln!("deleted exchange {exchange}"),
            Err(err) => eprintln!("delete exchange {exchange}: {err}"),
        }
        let _ = channel.close(200, "done".into()).await;
    }
    Ok(())
}

async fn declare(channel: &Channel, name: &str, max_priority: u8) -> Result<(), String> {
    channel
        .exchange_declare(
            name.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("declare exchange {name}: {e}"))?;
    let mut args = FieldTable::default();
    if max_priority > 0 {
        args.insert(
            "x-max-priority".into(),
            AMQPValue::ShortShortUInt(max_priority),
        );
    }
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await
        .map_err(|e| format!("declare queue {name}: {e}"))?;
    channel
        .queue_bind(
            name.into(),
            name.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("bind {name}: {e}"))
}

async fn run() -> Result<bool, String> {
    let url: String = env_or(
        "BENCH_AMQP_URL",
        "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
    )?;
    let mode: String = env_or("BENCH_MODE", "publish".to_owned())?;
    let connection = tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect(&url, ConnectionProperties::default()),
    )
    .await
    .map_err(|_| "connect timed out".to_owned())?
    .map_err(|e| format!("connect: {e}"))?;

    if mode == "cleanup" {
        purge(&connection, &list("BENCH_PURGE_QUEUES")).await?;
        cleanup(
            &connection,
            &list("BENCH_DELETE_QUEUES"),
            &list("BENCH_DELETE_EXCHANGES"),
        )
        .await?;
        let _ = connection.close(200, "done".into()).await;
        return Ok(true);
    }
    if mode != "publish" {
        return Err(format!(
            "BENCH_MODE must be publish or cleanup, not {mode:?}"
        ));
    }

    let n: usize = env_or("BENCH_N", 50_000)?;
    let warmup: usize = env_or("BENCH_WARMUP", 2_000)?;
    let window: usize = env_or("BENCH_WINDOW", 64)?;
    let rate: f64 = env_or("BENCH_RATE", 0.0)?;
    let max_priority: u8 = env_or("BENCH_MAX_PRIORITY", 9)?;
    let max_secs: u64 = env_or("BENCH_MAX_SECS", 600)?;
    let clk_tck: f64 = env_or("BENCH_CLK_TCK", 100.0)?;
    let name: String = env_or("BENCH_NAME", format!("bench-bare-{}", std::process::id()))?;
    if window == 0 {
        return Err("BENCH_WINDOW must be at least 1".into());
    }
    if !rate.is_finite() || rate < 0.0 {
        return Err("BENCH_RATE must be a non-negative number".into());
    }

    let control = connection
        .create_channel()
        .await
        .map_err(|e| format!("channel: {e}"))?;
    let template = match std::env::var("BENCH_TEMPLATE_QUEUE") {
        Ok(queue) if !queue.is_empty() => taken_template(&control, &queue).await?,
        _ => None,
    }
    .unwrap_or_else(built_template);
    eprintln!(
        "template ({}): {} bytes, routing key {}, priority {:?}",
        template.origin,
        template.body.len(),
        template.routing_key,
        template.priority
    );
    purge(&connection, &list("BENCH_PURGE_QUEUES")).await?;
    declare(&control, &name, max_priority).await?;

    let channel = connection
        .create_channel()
        .await
        .map_err(|e| format!("channel: {e}"))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| format!("confirm mode: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(max_secs);
    let run_id = format!("bare-{}", std::process::id());
    if warmup > 0 {
        let warm = publish(
            &channel,
            &name,
            &template,
            &format!("{run_id}-warm"),
            warmup,
            window,
            deadline,
        )
        .await;
        eprintln!("warm-up: {warm:?}");
        purge(&connection, std::slice::from_ref(&name)).await?;
    }

    let cpu_before = own_cpu_seconds(clk_tck);
    let started = Instant::now();
    let (outcomes, mut latencies) = if rate > 0.0 {
        publish_open(&channel, &name, &template, &run_id, n, rate, deadline).await
    } else {
        let outcomes = publish(&channel, &name, &template, &run_id, n, window, deadline).await;
        (outcomes, Vec::new())
    };
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = match (cpu_before, own_cpu_seconds(clk_tck)) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };

    let achieved = outcomes.acked as f64 / elapsed;
    let cpu_text = cpu.map_or("na".to_owned(), |c| format!("{c:.2}"));
    let per_10k = match cpu {
        Some(c) if outcomes.acked > 0 => format!("{:.3}", c * 10_000.0 / outcomes.acked as f64),
        _ => "na".to_owned(),
    };
    latencies.sort_unstable();
    let (p50, p90, p99, max) = (
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(0),
    );
    let mode = if rate > 0.0 { "bare-open" } else { "bare" };
    eprintln!(
        "{mode} publisher: {} acked of {n} in {elapsed:.2} s = {achieved:.0} msg/s, window {window}, \
         target rate {rate}, cpu {cpu_text} s ({per_10k} s per 10k); {outcomes:?}; \
         confirm latency ms p50 {} p90 {} p99 {} max {} (open loop only)",
        outcomes.acked,
        ms(p50),
        ms(p90),
        ms(p99),
        ms(max),
    );
    println!(
        "RESULT mode={mode} n={n} ok={} nacked={} returned={} failed={} elapsed_s={elapsed:.3} \
         rate={achieved:.1} target_rate={rate:.1} window={window} cpu_s={cpu_text} \
         cpu_per_10k_s={per_10k} p50_ms={} p90_ms={} p99_ms={} max_ms={} body_bytes={} template={}",
        outcomes.acked,
        outcomes.nacked,
        outcomes.returned,
        outcomes.failed,
        ms(p50),
        ms(p90),
        ms(p99),
        ms(max),
        template.body.len(),
        template.origin,
    );

    if std::env::var("BENCH_KEEP").is_err() {
        cleanup(
            &connection,
            std::slice::from_ref(&name),
            std::slice::from_ref(&name),
        )
        .await?;
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(outcomes.acked == n as u64)
}

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("bare_publisher: cannot start the runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(3),
        Err(err) => {
            eprintln!("bare_publisher: {err}");
            ExitCode::from(1)
        }
    }
}
