//! Reply dispatch: consume `switchboard.outbound` with manual acks and bounded prefetch,
//! send each reply through its conversation's connector (rate-limited, retried with
//! backoff), report `delivery.succeeded` / `delivery.failed` on `switchboard.events`, and
//! acknowledge only once the outcome is known and recorded. Helpdesk commands
//! (`switchboard.command.v1`: `transfer`, `close`) share the queue; each is carried out and
//! acknowledged with an event.

mod claim;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use switchboard_sdk::event::EVENT_SCHEMA;
use switchboard_sdk::{
    Action, Command, ConversationId, DeliveryError, Event, KvStore, Recipient, Reply,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::{Broker, Link, LiveLink, OutgoingMessage, wait_up};
use crate::config::OutboundConfig;
use crate::durable::DurablePublisher;
use crate::live::LiveSet;
use crate::metrics::{Metrics, OutcomeLabels};
use claim::{Claim, ReplyClaims};
use tokio::sync::watch;

/// Names the dispatcher uses.
#[derive(Debug, Clone)]
pub struct OutboundNames {
    /// The queue consumed.
    pub queue: String,
    /// Events exchange.
    pub events: String,
    /// Dead-letter exchange.
    pub dead: String,
}

/// A command that could not be carried out: a short code for the event's `reason`, the
/// text, and whether sending it again may work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRefused {
    /// Machine-readable reason (`unroutable_skill`, `bad_skill`, `store_unavailable`, ...).
    pub code: &'static str,
    /// What went wrong.
    pub text: String,
    /// Whether trying again later may succeed.
    pub retryable: bool,
}

/// What commands act on: the pipeline's routing state.
#[async_trait]
pub trait Conversations: Send + Sync + 'static {
    /// Routes the conversation's next messages to `skill`.
    async fn transfer(
        &self,
        conversation_id: &str,
        skill: &str,
        priority: Option<u8>,
    ) -> Result<(), CommandRefused>;

    /// Forgets the conversation's stickiness and transfer.
    async fn close(&self, conversation_id: &str) -> Result<(), CommandRefused>;
}

/// The reply dispatcher.
pub struct Dispatcher {
    broker: Broker,
    live: Arc<ArcSwap<LiveSet>>,
    claims: ReplyClaims,
    publisher: DurablePublisher,
    config: OutboundConfig,
    names: OutboundNames,
    instance: String,
    metrics: Arc<Metrics>,
    conversations: Option<Arc<dyn Conversations>>,
    observer: Option<Arc<crate::observe::Observer>>,
}

/// How handling one delivery ended, for its ack.
enum Settle {
    Ack,
    Requeue,
}

/// How sending a reply ended.
enum Outcome {
    /// Sent or failed for good: the event to report.
    Reported(Box<Event>),
    /// Shutdown came before an outcome.
    Interrupted,
    /// No connector of the conversation's kind and id is configured (the text says which).
    UnknownConnector(String),
}

impl Dispatcher {
    /// A dispatcher; nothing runs until [`Dispatcher::run`].
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        broker: Broker,
        live: Arc<ArcSwap<LiveSet>>,
        kv: Arc<dyn KvStore>,
        publisher: DurablePublisher,
        config: OutboundConfig,
        names: OutboundNames,
        instance: String,
        metrics: Arc<Metrics>,
    ) -> Self {
        let claims = ReplyClaims::new(kv, Duration::from_secs(config.dedupe_ttl_secs), &instance);
        Self {
            broker,
            live,
            claims,
            publisher,
            config,
            names,
            instance,
            metrics,
            conversations: None,
            observer: None,
        }
    }

    /// Counts failed deliveries in the console's statistics.
    pub fn with_observer(mut self, observer: Arc<crate::observe::Observer>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Lets `transfer` and `close` commands act on `conversations`; without it they are
    /// answered with `command.failed`.
    pub fn with_conversations(mut self, conversations: Arc<dyn Conversations>) -> Self {
        self.conversations = Some(conversations);
        self
    }

    /// Consumes until `shutdown`, resuming after every reconnection; replies in progress at
    /// shutdown finish (or are requeued) before this returns.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut links = self.broker.subscribe();
        let in_flight = TaskTracker::new();
        loop {
            let live = tokio::select! {
                _ = shutdown.cancelled() => break,
                live = wait_up(&mut links) => match live { Some(live) => live, None => break },
            };
            match self.consume(&live, &mut links, &shutdown, &in_flight).await {
                Ok(()) => break,
                Err(err) => {
                    tracing::warn!(error = %err, "outbound consumer stopped, waiting for the broker");
                    // Let the supervisor notice and replace the link before trying again.
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = links.changed() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
        in_flight.close();
        in_flight.wait().await;
    }

    /// Returns Ok on shutdown, Err when the channel or connection failed.
    async fn consume(
        self: &Arc<Self>,
        live: &LiveLink,
        links: &mut watch::Receiver<Link>,
        shutdown: &CancellationToken,
        in_flight: &TaskTracker,
    ) -> Result<(), String> {
        let channel = live
            .connection
            .create_channel()
            .await
            .map_err(|e| e.to_string())?;
        channel
            .basic_qos(self.config.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        let tag = format!("switchboard-{}-{}", self.instance, ulid::Ulid::new());
        let mut consumer = channel
            .basic_consume(
                self.names.queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(queue = %self.names.queue, "consuming replies");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                    // Finish what was taken before closing the channel its acks travel on.
                    in_flight.close();
                    in_flight.wait().await;
                    let _ = channel.close(200, "shutting down".into()).await;
                    return Ok(());
                }
                // The supervisor replaced the link (it may have given up closing the old one):
                // consume on the new connection rather than wait on a dead one.
                changed = links.changed() => {
                    let current = changed.is_ok()
                        && matches!(&*links.borrow_and_update(), Link::Up(now) if now.generation == live.generation);
                    if !current {
                        return Err("broker link replaced".into());
                    }
                }
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        let this = self.clone();
                        let shutdown = shutdown.clone();
                        in_flight.spawn(async move { this.handle(delivery, shutdown).await });
                    }
                    Some(Err(err)) => return Err(err.to_string()),
                    None => return Err("consumer ended".to_owned()),
                }
            }
        }
    }

    async fn handle(&self, delivery: Delivery, shutdown: CancellationToken) {
        let settle = self.process(&delivery, &shutdown).await;
        let result = match settle {
            Settle::Ack => delivery.acker.ack(BasicAckOptions::default()).await,
            Settle::Requeue => {
                delivery
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await
            }
        };
        if let Err(err) = result {
            // The broker will redeliver; the claim makes sure nothing is sent twice.
            tracing::warn!(error = %err, "cannot settle reply delivery");
        }
    }

    async fn process(&self, delivery: &Delivery, shutdown: &CancellationToken) -> Settle {
        if Command::is_command(&delivery.data) {
            return self.command(delivery).await;
        }
        let reply = match Reply::from_slice(&delivery.data) {
            Ok(reply) => reply,
            Err(err) => return self.dead_letter(delivery, "malformed_reply", &err).await,
        };
        let conversation = match ConversationId::parse(&reply.conversation_id) {
            Ok(conversation) => conversation,
            Err(err) => {
                let err = err.to_string();
                return self
                    .dead_letter(delivery, "bad_conversation_id", &err)
                    .await;
            }
        };
        let token = loop {
            match self.claims.claim(&reply.id).await {
                Ok(Claim::Ours(token)) => break token,
                Ok(Claim::InProgressElsewhere) => {
                    // Another delivery of this id is being sent; wait for its outcome rather
                    // than sending twice.
                    tokio::select! {
                        _ = shutdown.cancelled() => return Settle::Requeue,
                        _ = tokio::time::sleep(Duration::from_millis(250)) => continue,
                    }
                }
                Ok(Claim::Done(recorded_event)) => {
                    return self
                        .duplicate(delivery, &conversation, &recorded_event)
                        .await;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "reply dedupe store unavailable, sending without it");
                    self.metrics
                        .kv_errors
                        .get_or_create(&OutcomeLabels {
                            outcome: "reply_dedupe_skipped".into(),
                        })
                        .inc();
                    break String::new();
                }
            }
        };

        let event = match self.deliver(&reply, &conversation, shutdown).await {
            Outcome::Reported(event) => *event,
            Outcome::Interrupted => {
                self.claims.release(&reply.id, &token).await;
                return Settle::Requeue;
            }
            Outcome::UnknownConnector(text) => {
                // Not sent, so not done: once the operator configures the connector, a
                // replay of the dead letter must be sent rather than taken for a duplicate.
                self.claims.release(&reply.id, &token).await;
                return self.unknown_connector(delivery, &reply, text).await;
            }
        };
        let recorded = serde_json::to_string(&event).unwrap_or_default();
        self.claims.complete(&reply.id, &recorded).await;
        match self.publish_event(event).await {
            Ok(()) => Settle::Ack,
            Err(()) => Settle::Requeue,
        }
    }

    /// Carries out a helpdesk command and acknowledges it with an event. Commands are
    /// idempotent (a transfer twice is one transfer), so a redelivery simply does it again.
    async fn command(&self, delivery: &Delivery) -> Settle {
        let count = |outcome: &str| {
            self.metrics
                .commands
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.into(),
                })
                .inc();
        };
        let command = match Command::from_slice(&delivery.data) {
            Ok(command) => command,
            Err(err) => {
                count("malformed");
                return self.dead_letter(delivery, "malformed_command", &err).await;
            }
        };
        if let Err(err) = ConversationId::parse(&command.conversation_id) {
            count("malformed");
            let err = err.to_string();
            return self
                .dead_letter(delivery, "bad_conversation_id", &err)
                .await;
        }
        let conversation = command.conversation_id.as_str();
        let outcome = match (&self.conversations, &command.action) {
            (None, _) => Err(CommandRefused {
                code: "unsupported",
                text: "this instance does not carry out commands".to_owned(),
                retryable: false,
            }),
            (Some(c), Action::Transfer { skill, priority }) => {
                c.transfer(conversation, skill, *priority).await
            }
            (Some(c), Action::Close) => c.close(conversation).await,
        };
        let mut event = match (&outcome, &command.action) {
            (Ok(()), Action::Transfer { skill, priority }) => {
                let mut event = Event::new("conversation.transferred");
                event.data.insert("skill".into(), skill.clone().into());
                if let Some(priority) = priority {
                    event.data.insert("priority".into(), (*priority).into());
                }
                event
            }
            (Ok(()), Action::Close) => Event::new("conversation.closed"),
            (Err(refused), _) => {
                let mut event = Event::new("command.failed");
                event.reason = Some(refused.code.to_owned());
                event.text = Some(refused.text.clone());
                event.retryable = Some(refused.retryable);
                event
            }
        };
        count(match &outcome {
            Ok(()) if matches!(command.action, Action::Close) => "closed",
            Ok(()) => "transferred",
            Err(_) => "failed",
        });
        tracing::info!(
            command = command.action.name(),
            command_id = %command.id,
            conversation = %conversation,
            outcome = %event.kind,
            "helpdesk command handled"
        );
        event.conversation_id = Some(command.conversation_id.clone());
        event
            .data
            .insert("command_id".into(), command.id.clone().into());
        event
            .data
            .insert("command".into(), command.action.name().into());
        if let Some(agent) = &command.agent {
            event
                .data
                .insert("agent_id".into(), agent.id.clone().into());
        }
        match self.publish_event(event).await {
            Ok(()) => Settle::Ack,
            Err(()) => Settle::Requeue,
        }
    }

    /// Metric labels for a conversation: its connector when configured, else `unknown`.
    fn labels(&self, conversation: &ConversationId) -> (String, String) {
        match self
            .live
            .load()
            .connector(&conversation.kind, &conversation.connector_id)
        {
            Some(_) => (conversation.kind.clone(), conversation.connector_id.clone()),
            None => ("unknown".to_owned(), "unknown".to_owned()),
        }
    }

    async fn duplicate(
        &self,
        delivery: &Delivery,
        conversation: &ConversationId,
        recorded_event: &str,
    ) -> Settle {
        let (kind, id) = self.labels(conversation);
        Metrics::count(&self.metrics.deliveries, &kind, &id, "duplicate");
        if delivery.redelivered && !recorded_event.is_empty() {
            // We may have died between sending and reporting: report again (same event id)
            // so the helpdesk surely hears the outcome.
            if let Ok(event) = serde_json::from_str::<Event>(recorded_event)
                && self.publish_event(event).await.is_err()
            {
                return Settle::Requeue;
            }
        }
        Settle::Ack
    }

    /// Sends with retries.
    async fn deliver(
        &self,
        reply: &Reply,
        conversation: &ConversationId,
        shutdown: &CancellationToken,
    ) -> Outcome {
        let (kind, id) = (
            conversation.kind.as_str(),
            conversation.connector_id.as_str(),
        );
        let live = self.live.load();
        let Some(target) = live.connector(kind, id) else {
            // Label values come from config only, never from what a helpdesk wrote.
            Metrics::count(&self.metrics.deliveries, "unknown", "unknown", "failed");
            return Outcome::UnknownConnector(format!("no connector {kind}:{id} is configured"));
        };
        let recipient = Recipient {
            conversation: conversation.clone(),
        };
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(self.config.retry_min_ms))
            .with_max_delay(Duration::from_millis(self.config.retry_max_ms))
            .with_jitter()
            .without_max_times()
            .build();
        let mut attempt = 1;
        loop {
            // Taking a permit when one is free, else waiting: the wait is what the console
            // shows as the outbound limiter's saturation.
            let throttled = target.outbound.check().is_err();
            if let Some(observer) = &self.observer {
                observer
                    .rates
                    .reply_attempt(&format!("{kind}:{id}"), throttled);
            }
            if throttled {
                tokio::select! {
                    _ = shutdown.cancelled() => return Outcome::Interrupted,
                    _ = target.outbound.until_ready() => {}
                }
            }
            let result = target.connector.deliver(reply, &recipient).await;
            match result {
                Ok(delivered) => {
                    Metrics::count(&self.metrics.deliveries, kind, id, "succeeded");
                    tracing::info!(channel = kind, connector = id, reply_id = %reply.id, attempt, "reply delivered");
                    let mut event = self.event("delivery.succeeded", reply);
                    event.channel_message_id = delivered.channel_message_id;
                    return Outcome::Reported(Box::new(event));
                }
                Err(err) if err.is_retryable() && attempt < self.config.max_attempts => {
                    Metrics::count(&self.metrics.deliveries, kind, id, "retried");
                    let wait = backoff
                        .next()
                        .unwrap_or(Duration::from_millis(self.config.retry_max_ms))
                        .max(err.retry_after().unwrap_or_default());
                    tracing::warn!(channel = kind, connector = id, reply_id = %reply.id, attempt, error = %err, ?wait, "reply delivery failed, will retry");
                    attempt += 1;
                    tokio::select! {
                        _ = shutdown.cancelled() => return Outcome::Interrupted,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                Err(err) => {
                    Metrics::count(&self.metrics.deliveries, kind, id, "failed");
                    let reason = if err.is_retryable() {
                        "retries_exhausted"
                    } else {
                        "permanent"
                    };
                    tracing::warn!(channel = kind, connector = id, reply_id = %reply.id, attempt, error = %err, "reply not delivered");
                    return Outcome::Reported(Box::new(self.failed_event(reply, &err, reason)));
                }
            }
        }
    }

    /// A reply to a connector that is not configured: the helpdesk hears `delivery.failed`
    /// and the reply goes to the dead letters, from where the operator replays it once the
    /// connector is configured (a config mistake, not the reply's, is the usual cause).
    async fn unknown_connector(&self, delivery: &Delivery, reply: &Reply, text: String) -> Settle {
        let mut event = self.event("delivery.failed", reply);
        event.reason = Some("unknown_connector".to_owned());
        event.code = Some("unknown_connector".to_owned());
        event.retryable = Some(false);
        event.text = Some(text.clone());
        event.data.insert("dead_lettered".into(), true.into());
        tracing::warn!(reply_id = %reply.id, error = %text, "reply to an unknown connector");
        // The event first: if it cannot be published, nothing has happened yet and the
        // redelivery starts over. (The statistics count the dead letter.)
        if self.publish_event(event).await.is_err() {
            return Settle::Requeue;
        }
        self.dead_letter(delivery, "unknown_connector", &text).await
    }

    fn event(&self, kind: &str, reply: &Reply) -> Event {
        let mut event = Event::new(kind);
        event.conversation_id = Some(reply.conversation_id.clone());
        event.reply_id = Some(reply.id.clone());
        event
    }

    fn failed_event(&self, reply: &Reply, err: &DeliveryError, reason: &str) -> Event {
        let mut event = self.event("delivery.failed", reply);
        event.retryable = Some(err.is_retryable());
        event.reason = Some(reason.to_owned());
        let (code, text) = match err {
            DeliveryError::Permanent { code, text } => (Some(code.clone()), text.clone()),
            DeliveryError::Retryable { code, text, .. } => (code.clone(), text.clone()),
            DeliveryError::RateLimited { .. } => (Some("rate_limited".to_owned()), err.to_string()),
        };
        // A permanent failure whose code is one of ours (window_closed, opted_out) is the
        // more useful reason.
        if let (DeliveryError::Permanent { code, .. }, "permanent") = (err, reason)
            && code.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        {
            event.reason = Some(code.clone());
        }
        event.code = code;
        event.text = Some(text);
        if let (Some(observer), Some(reason)) = (&self.observer, &event.reason) {
            observer.stats.record_failed(reason);
        }
        event
    }

    async fn publish_event(&self, event: Event) -> Result<(), ()> {
        let Ok(body) = serde_json::to_string(&event) else {
            return Err(());
        };
        let mut headers = vec![("x-schema".to_owned(), EVENT_SCHEMA.to_owned())];
        if let Some(conversation) = &event.conversation_id {
            headers.push(("x-conversation-id".to_owned(), conversation.clone()));
        }
        let message = OutgoingMessage {
            exchange: self.names.events.clone(),
            routing_key: event.kind.clone(),
            message_id: event.id.clone(),
            priority: None,
            headers,
            body,
            mandatory: false,
        };
        self.publisher
            .send(message, "events")
            .await
            .map(|_| ())
            .map_err(|err| {
                tracing::error!(error = %err, "cannot report delivery outcome");
            })
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        reason: &'static str,
        err: &(dyn std::fmt::Display + Sync),
    ) -> Settle {
        self.metrics
            .dead_lettered
            .get_or_create(&OutcomeLabels {
                outcome: reason.into(),
            })
            .inc();
        tracing::warn!(reason, error = %err, "reply dead-lettered");
        if let Some(observer) = &self.observer {
            observer.stats.record_failed(reason);
        }
        let message = OutgoingMessage {
            exchange: self.names.dead.clone(),
            routing_key: format!("outbound.{reason}"),
            message_id: ulid::Ulid::new().to_string(),
            priority: None,
            headers: vec![
                ("x-reason".to_owned(), reason.to_owned()),
                ("x-error".to_owned(), err.to_string()),
                (
                    "x-original-exchange".to_owned(),
                    delivery.exchange.to_string(),
                ),
                (
                    "x-original-routing-key".to_owned(),
                    delivery.routing_key.to_string(),
                ),
            ],
            // Bytes that are not UTF-8 are kept visible rather than dropped.
            body: String::from_utf8_lossy(&delivery.data).into_owned(),
            mandatory: true,
        };
        match self.publisher.send(message, "dead").await {
            Ok(_) => Settle::Ack,
            Err(_) => Settle::Requeue,
        }
    }
}
