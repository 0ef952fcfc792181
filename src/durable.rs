//! The promise behind every HTTP 200: a message is either confirmed by the broker or
//! durably spooled before its caller hears "accepted".
//!
//! One dispatch task takes messages in arrival order. While the broker is up and the spool
//! is empty it writes them to the confirm-mode channel (many in flight, never one round trip
//! per message) and hands each caller its confirm to await. While the broker is away, or as
//! long as anything is still spooled, it appends them to the spool instead (one group commit
//! per batch), so spooled messages and later ones keep their order. A nack or a confirm
//! timeout spools that one message from the caller's side. The drainer publishes the spool
//! oldest first once the broker is back and removes only what the broker confirmed, so a
//! crash in between can duplicate (same envelope id) but never lose.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lapin::PublisherConfirm;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, OutgoingMessage, PublishError, confirmed, wait_up};
use crate::metrics::Metrics;
use crate::spool::{LocalStore, SpoolError, SpoolRecord};

/// Where an accepted message is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Confirmed by the broker.
    Published,
    /// In the durable spool, to be published when the broker is back.
    Spooled,
}

impl Outcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Published => "published",
            Outcome::Spooled => "spooled",
        }
    }
}

/// Why a message could not be made safe. The channel must be told to retry.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DurableError {
    /// Broker away and the spool at its size limit.
    #[error("broker unavailable and spool full")]
    SpoolFull,
    /// The spool could not write.
    #[error("spool failed: {0}")]
    Storage(String),
    /// The daemon is shutting down.
    #[error("shutting down")]
    Stopped,
}

impl From<SpoolError> for DurableError {
    fn from(err: SpoolError) -> Self {
        match err {
            SpoolError::Full { .. } => DurableError::SpoolFull,
            SpoolError::Closed => DurableError::Stopped,
            other => DurableError::Storage(other.to_string()),
        }
    }
}

/// What the dispatcher did with one message.
enum Handoff {
    Confirming {
        confirm: PublisherConfirm,
        message: OutgoingMessage,
        generation: u64,
    },
    Spooled,
}

struct Job {
    message: OutgoingMessage,
    target: &'static str,
    reply: oneshot::Sender<Result<Handoff, DurableError>>,
}

/// Publishes with confirm, or spools. Cheap to clone.
#[derive(Clone)]
pub struct DurablePublisher {
    jobs: mpsc::Sender<Job>,
    spool: LocalStore,
    broker: Broker,
    metrics: Arc<Metrics>,
    confirm_timeout: Duration,
}

/// A message handed to the dispatcher, in order; await [`Pending::outcome`].
pub struct Pending {
    reply: oneshot::Receiver<Result<Handoff, DurableError>>,
    publisher: DurablePublisher,
    target: &'static str,
}

impl DurablePublisher {
    /// Starts the dispatch task; it ends when every handle is dropped.
    pub fn start(
        spool: LocalStore,
        broker: Broker,
        metrics: Arc<Metrics>,
        confirm_timeout: Duration,
    ) -> Self {
        let (jobs, queue) = mpsc::channel(4096);
        tokio::spawn(dispatch(
            queue,
            spool.clone(),
            broker.clone(),
            metrics.clone(),
        ));
        Self {
            jobs,
            spool,
            broker,
            metrics,
            confirm_timeout,
        }
    }

    /// Whether a message could be made safe right now (broker up, or room in the spool);
    /// checked before work that must not be wasted, such as taking a sequence number.
    pub fn can_accept(&self, approx_bytes: u64) -> bool {
        self.broker.live().is_some() || self.spool.would_fit(approx_bytes)
    }

    /// Hands `message` over in order; `target` labels metrics (`inbound`, `events`, `dead`).
    pub async fn enqueue(
        &self,
        message: OutgoingMessage,
        target: &'static str,
    ) -> Result<Pending, DurableError> {
        let (reply, pending) = oneshot::channel();
        self.jobs
            .send(Job {
                message,
                target,
                reply,
            })
            .await
            .map_err(|_| DurableError::Stopped)?;
        Ok(Pending {
            reply: pending,
            publisher: self.clone(),
            target,
        })
    }

    /// Enqueues and waits for the outcome.
    pub async fn send(
        &self,
        message: OutgoingMessage,
        target: &'static str,
    ) -> Result<Outcome, DurableError> {
        self.enqueue(message, target).await?.outcome().await
    }
}

impl Pending {
    /// Waits until the message is confirmed or spooled.
    pub async fn outcome(self) -> Result<Outcome, DurableError> {
        let publisher = self.publisher;
        match self.reply.await.map_err(|_| DurableError::Stopped)?? {
            Handoff::Spooled => Ok(Outcome::Spooled),
            Handoff::Confirming {
                confirm,
                message,
                generation,
            } => {
                let started = Instant::now();
                match confirmed(confirm, publisher.confirm_timeout).await {
                    Ok(()) => {
                        publisher
                            .metrics
                            .confirm_seconds
                            .observe(started.elapsed().as_secs_f64());
                        publisher.metrics.publish(self.target, "confirmed");
                        Ok(Outcome::Published)
                    }
                    Err(err) => {
                        let label = match err {
                            PublishError::Nacked => "nacked",
                            PublishError::Timeout(_) => "timeout",
                            _ => "failed",
                        };
                        publisher.metrics.publish(self.target, label);
                        tracing::warn!(error = %err, message_id = %message.message_id, "publish not confirmed, spooling");
                        if !matches!(err, PublishError::Nacked) {
                            publisher.broker.report_broken(generation, &err.to_string());
                        }
                        publisher.spool.append(vec![to_record(&message)]).await?;
                        Ok(Outcome::Spooled)
                    }
                }
            }
        }
    }
}

async fn dispatch(
    mut queue: mpsc::Receiver<Job>,
    spool: LocalStore,
    broker: Broker,
    metrics: Arc<Metrics>,
) {
    const MAX_BATCH: usize = 512;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut live = broker.live().filter(|_| spool.stats().depth == 0);
        let mut to_spool = Vec::new();
        for job in batch.drain(..) {
            let Some(link) = &live else {
                to_spool.push(job);
                continue;
            };
            match link.publish(&job.message).await {
                Ok(confirm) => {
                    let _ = job.reply.send(Ok(Handoff::Confirming {
                        confirm,
                        message: job.message,
                        generation: link.generation,
                    }));
                }
                Err(err) => {
                    // Everything after a failed write goes to the spool too, to keep order.
                    metrics.publish(job.target, "failed");
                    broker.report_broken(link.generation, &err.to_string());
                    live = None;
                    to_spool.push(job);
                }
            }
        }
        if !to_spool.is_empty() {
            spool_jobs(&spool, to_spool).await;
        }
    }
}

/// Appends jobs in one commit; when that overflows the spool, retries one by one so what
/// fits is kept and only the rest is refused.
async fn spool_jobs(spool: &LocalStore, jobs: Vec<Job>) {
    let records = jobs.iter().map(|job| to_record(&job.message)).collect();
    match spool.append(records).await {
        Ok(_) => {
            for job in jobs {
                let _ = job.reply.send(Ok(Handoff::Spooled));
            }
        }
        Err(SpoolError::Full { .. }) if jobs.len() > 1 => {
            for job in jobs {
                let result = spool
                    .append(vec![to_record(&job.message)])
                    .await
                    .map(|_| Handoff::Spooled)
                    .map_err(DurableError::from);
                let _ = job.reply.send(result);
            }
        }
        Err(err) => {
            let err = DurableError::from(err);
            for job in jobs {
                let _ = job.reply.send(Err(err.clone()));
            }
        }
    }
}

/// Unix milliseconds now (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn to_record(message: &OutgoingMessage) -> SpoolRecord {
    SpoolRecord {
        exchange: message.exchange.clone(),
        routing_key: message.routing_key.clone(),
        message_id: message.message_id.clone(),
        priority: message.priority,
        headers: message.headers.clone(),
        body: message.body.clone(),
        spooled_at_ms: now_ms(),
    }
}

fn from_record(record: SpoolRecord, mandatory: bool) -> OutgoingMessage {
    OutgoingMessage {
        exchange: record.exchange,
        routing_key: record.routing_key,
        message_id: record.message_id,
        priority: record.priority,
        headers: record.headers,
        body: record.body,
        mandatory,
    }
}

/// Publishes the spool to the broker, oldest first, whenever both are ready; removes records
/// only after the broker confirmed them.
pub async fn drain(
    spool: LocalStore,
    broker: Broker,
    metrics: Arc<Metrics>,
    batch: usize,
    confirm_timeout: Duration,
    events_exchange: String,
    shutdown: CancellationToken,
) {
    let mut links = broker.subscribe();
    let mut idle = tokio::time::interval(Duration::from_millis(100));
    loop {
        // The spool gauges are read from `stats()` when /metrics is scraped, not here.
        if spool.stats().depth == 0 {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = idle.tick() => continue,
            }
        }
        let live = tokio::select! {
            _ = shutdown.cancelled() => return,
            live = wait_up(&mut links) => match live { Some(live) => live, None => return },
        };
        let store = spool.clone();
        let peeked = tokio::task::spawn_blocking(move || store.peek(batch)).await;
        let records = match peeked {
            Ok(Ok(records)) => records,
            Ok(Err(SpoolError::Corrupt { id, reason })) => {
                // Undecodable bytes cannot be published anywhere; keep them out of the way of
                // everything behind them and say so loudly.
                tracing::error!(id, %reason, "dropping corrupt spool record");
                metrics
                    .dead_lettered
                    .get_or_create(&crate::metrics::OutcomeLabels {
                        outcome: "spool_corrupt".into(),
                    })
                    .inc();
                let _ = spool.remove(vec![id]).await;
                continue;
            }
            Ok(Err(err)) => {
                tracing::error!(error = %err, "cannot read the spool");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
            Err(join) => {
                tracing::error!(error = %join, "spool reader failed");
                continue;
            }
        };
        let mut confirms = Vec::with_capacity(records.len());
        let mut ids = Vec::with_capacity(records.len());
        let mut broken = None;
        for (id, record) in records {
            let mandatory = record.exchange != events_exchange;
            match live.publish(&from_record(record, mandatory)).await {
                Ok(confirm) => {
                    confirms.push(confirm);
                    ids.push(id);
                }
                Err(err) => {
                    broken = Some(err);
                    break;
                }
            }
        }
        let mut confirmed_ids = Vec::with_capacity(ids.len());
        for (id, confirm) in ids.into_iter().zip(confirms) {
            match confirmed(confirm, confirm_timeout).await {
                Ok(()) => confirmed_ids.push(id),
                Err(err) => {
                    broken.get_or_insert(err);
                    break;
                }
            }
        }
        if !confirmed_ids.is_empty() {
            let drained = confirmed_ids.len() as u64;
            match spool.remove(confirmed_ids).await {
                Ok(()) => {
                    metrics.spool_drained.inc_by(drained);
                    metrics
                        .published
                        .get_or_create(&crate::metrics::PublishLabels {
                            target: "spool_drain".into(),
                            outcome: "confirmed".into(),
                        })
                        .inc_by(drained);
                    tracing::debug!(drained, "drained spool batch");
                }
                Err(err) => tracing::error!(error = %err, "cannot remove drained records"),
            }
        }
        if let Some(err) = broken {
            metrics.publish("spool_drain", "failed");
            tracing::warn!(error = %err, "spool drain interrupted");
            if !matches!(err, PublishError::Nacked) {
                broker.report_broken(live.generation, &err.to_string());
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(confirm_timeout) => {}
            }
        }
    }
}
