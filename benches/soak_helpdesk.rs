//! A helpdesk stand-in for the soak (`scripts/soak`): consumes the agent queue, answers every
//! `SOAK_REPLY_EVERY`-th envelope with a `switchboard.reply.v1` on the outbound exchange, and
//! receives the daemon's signed reply webhooks on a local HTTP sink, so traffic runs both
//! ways for the whole soak. It rides out broker faults the way a real helpdesk would:
//! reconnects with backoff and relies on redelivery of what it had not acked.
//!
//! Settings (environment; cargo passes `--bench` as an argument):
//! - `SOAK_AMQP_URL` (default the local guest URL), `SOAK_QUEUE` (agent queue to consume),
//!   `SOAK_OUTBOUND` (the outbound exchange), `SOAK_REPLY_EVERY` (default 10),
//! - `SOAK_SINK` (address for the webhook sink, default `127.0.0.1:0`).
//!
//! Prints `SINK <addr>` once, then every `SOAK_REPORT_SECS` (default 10) and at exit one line
//! `STATS consumed=… distinct=… replied=… webhooks=… reconnects=…` (`replied`: distinct
//! reply ids the broker confirmed; `webhooks`: reply requests that reached a channel API,
//! retries included). Stops on SIGTERM/SIGINT.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Default)]
struct Counters {
    consumed: AtomicU64,
    webhooks: AtomicU64,
    reconnects: AtomicU64,
    /// Envelope ids seen, hashed: what arrived at least once, for the loss count.
    distinct: std::sync::Mutex<HashSet<u64>>,
    /// Reply ids the broker confirmed, hashed: an envelope redelivered and answered again
    /// carries the same reply id, so this is what the daemon owes the channels.
    replied: std::sync::Mutex<HashSet<u64>>,
}

impl Counters {
    fn line(&self) -> String {
        let distinct = self.distinct.lock().map_or(0, |seen| seen.len());
        let replied = self.replied.lock().map_or(0, |seen| seen.len());
        format!(
            "STATS consumed={} distinct={distinct} replied={replied} webhooks={} reconnects={}",
            self.consumed.load(Ordering::Relaxed),
            self.webhooks.load(Ordering::Relaxed),
            self.reconnects.load(Ordering::Relaxed),
        )
    }
}

struct Settings {
    amqp_url: String,
    queue: String,
    outbound: String,
    reply_every: u64,
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// One connection's life: consume until the link fails.
async fn consume(
    settings: &Settings,
    counters: &Counters,
    hasher: &RandomState,
) -> Result<(), lapin::Error> {
    let connection = (|| {
        Connection::connect(
            &settings.amqp_url,
            ConnectionProperties::default().with_connection_name("soak-helpdesk".into()),
        )
    })
    .retry(
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(3))
            .without_max_times(),
    )
    .await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    channel.basic_qos(256, BasicQosOptions::default()).await?;
    let mut deliveries = channel
        .basic_consume(
            settings.queue.as_str().into(),
            "soak-helpdesk".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    while let Some(delivery) = deliveries.next().await {
        let delivery = delivery?;
        let n = counters.consumed.fetch_add(1, Ordering::Relaxed) + 1;
        let envelope: serde_json::Value =
            serde_json::from_slice(&delivery.data).unwrap_or_default();
        let id = envelope["id"].as_str().unwrap_or_default().to_owned();
        if let Ok(mut seen) = counters.distinct.lock() {
            seen.insert(hasher.hash_one(&id));
        }
        if n.is_multiple_of(settings.reply_every)
            && let Some(conversation) = envelope["conversation_id"].as_str()
        {
            // The reply id follows the envelope id, so a redelivered envelope answered again
            // is sent to the customer once (the daemon's reply claims).
            let reply = serde_json::json!({
                "schema": "switchboard.reply.v1",
                "id": format!("soak-{id}"),
                "conversation_id": conversation,
                "in_reply_to": id,
                "content": {"type": "text", "text": "Your parcel is on its way."},
            });
            // Acked only once the reply is confirmed: a reply the broker lost comes back as a
            // redelivered envelope, as a real helpdesk would arrange it.
            let confirmation = channel
                .basic_publish(
                    settings.outbound.as_str().into(),
                    "reply".into(),
                    BasicPublishOptions::default(),
                    &serde_json::to_vec(&reply).unwrap_or_default(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?
                .await?;
            if !confirmation.is_ack() {
                eprintln!(
                    "soak-helpdesk: reply {id} refused by the broker; requeueing the envelope"
                );
                delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await?;
                continue;
            }
            if let Ok(mut replied) = counters.replied.lock() {
                replied.insert(hasher.hash_one(format!("soak-{id}")));
            }
        }
        delivery.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}

async fn sink(listener: tokio::net::TcpListener, counters: Arc<Counters>) {
    // Answers as each channel's API would, enough for the daemon to count the reply sent:
    // WeChat's token and customer-service endpoints, Twilio's Messages resource, and the
    // app channel's webhook.
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let counters = counters.clone();
        async move {
            let path = uri.path();
            let body = if path.ends_with("token") {
                serde_json::json!({"access_token": "soak-token", "expires_in": 7200})
            } else if path.starts_with("/cgi-bin/") {
                counters.webhooks.fetch_add(1, Ordering::Relaxed);
                serde_json::json!({"errcode": 0, "errmsg": "ok"})
            } else if path.ends_with("/Messages.json") {
                counters.webhooks.fetch_add(1, Ordering::Relaxed);
                serde_json::json!({"sid": "SM00000000000000000000000000000001", "status": "queued"})
            } else {
                counters.webhooks.fetch_add(1, Ordering::Relaxed);
                serde_json::json!({})
            };
            axum::Json(body)
        }
    });
    if let Err(err) = axum::serve(listener, app).await {
        eprintln!("soak-helpdesk: webhook sink stopped: {err}");
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let settings = Settings {
        amqp_url: env("SOAK_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
        queue: env("SOAK_QUEUE", ""),
        outbound: env("SOAK_OUTBOUND", ""),
        reply_every: env("SOAK_REPLY_EVERY", "10").parse().unwrap_or(10).max(1),
    };
    if settings.queue.is_empty() || settings.outbound.is_empty() {
        eprintln!("soak-helpdesk: SOAK_QUEUE and SOAK_OUTBOUND are required");
        return std::process::ExitCode::from(2);
    }
    let report_every = Duration::from_secs(env("SOAK_REPORT_SECS", "10").parse().unwrap_or(10));
    let counters = Arc::new(Counters::default());
    let listener = match tokio::net::TcpListener::bind(env("SOAK_SINK", "127.0.0.1:0")).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("soak-helpdesk: cannot bind the webhook sink: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("SINK {addr}"),
        Err(err) => {
            eprintln!("soak-helpdesk: {err}");
            return std::process::ExitCode::FAILURE;
        }
    }
    tokio::spawn(sink(listener, counters.clone()));

    let consumer = {
        let counters = counters.clone();
        async move {
            let hasher = RandomState::new();
            loop {
                if let Err(err) = consume(&settings, &counters, &hasher).await {
                    eprintln!("soak-helpdesk: link lost ({err}); reconnecting");
                }
                counters.reconnects.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    let reporter = {
        let counters = counters.clone();
        async move {
            let mut tick = tokio::time::interval(report_every);
            tick.tick().await;
            loop {
                tick.tick().await;
                println!("{}", counters.line());
            }
        }
    };
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("soak-helpdesk: cannot install signal handlers");
        return std::process::ExitCode::FAILURE;
    };
    tokio::select! {
        () = consumer => {}
        () = reporter => {}
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    println!("{}", counters.line());
    std::process::ExitCode::SUCCESS
}
