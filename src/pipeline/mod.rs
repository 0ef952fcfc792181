//! The inbound path, written once for every channel: rate limit per user → dedupe →
//! customer tier → classify and route → envelope with its conversation sequence →
//! confirmed publish or durable spool.

pub mod dedupe;
pub mod routing;

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroU32;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use switchboard_sdk::envelope::ENVELOPE_SCHEMA;
use switchboard_sdk::event::EVENT_SCHEMA;
use switchboard_sdk::{
    AcceptError, Accepted, ChannelRef, Content, ConversationId, Envelope, Event, InboundMessage,
    InboundSink, KvStore, Route, Sender,
};
use time::OffsetDateTime;
use tokio::sync::Mutex;

use crate::broker::OutgoingMessage;
use crate::durable::DurablePublisher;
use crate::metrics::Metrics;
use crate::request_id::{self, RequestId};
use crate::spool::LocalStore;
use routing::overflow::{Backlog, NoBacklog};
use routing::{Policy, Services, Subject, TransferError};

/// Where per-conversation sequence numbers come from.
#[derive(Clone)]
pub enum Sequences {
    /// Redis `INCR`, shared by every instance.
    Shared(Arc<dyn KvStore>),
    /// The local store, durable across restarts of this instance.
    Local(LocalStore),
}

impl Sequences {
    async fn next(&self, conversation_id: &str) -> Result<u64, String> {
        match self {
            Sequences::Shared(kv) => kv
                .increment(&format!("seq:{conversation_id}"))
                .await
                .map_err(|e| e.to_string()),
            Sequences::Local(store) => store
                .next_sequence(conversation_id)
                .await
                .map_err(|e| e.to_string()),
        }
    }
}

type UserLimiter = DefaultKeyedRateLimiter<String>;

/// Exchange names the pipeline publishes to.
#[derive(Debug, Clone)]
pub struct Exchanges {
    /// Envelopes.
    pub inbound: String,
    /// Events.
    pub events: String,
}

/// The pipeline; the daemon's implementation of the connectors' [`InboundSink`].
pub struct Pipeline {
    policy: ArcSwap<Policy>,
    user_limits: ArcSwap<HashMap<String, Arc<UserLimiter>>>,
    kv: Arc<dyn KvStore>,
    sequences: Sequences,
    publisher: DurablePublisher,
    exchanges: Exchanges,
    dedupe: dedupe::Claims,
    metrics: Arc<Metrics>,
    /// Messages of one conversation take the same stripe, so their sequence numbers and
    /// their order on the wire agree.
    stripes: Vec<Mutex<()>>,
    hasher: RandomState,
    backlog: std::sync::OnceLock<Arc<dyn Backlog>>,
    observer: std::sync::OnceLock<Arc<crate::observe::Observer>>,
}

const STRIPES: usize = 256;

impl Pipeline {
    /// A pipeline publishing through `publisher`.
    pub fn new(
        policy: Policy,
        kv: Arc<dyn KvStore>,
        sequences: Sequences,
        publisher: DurablePublisher,
        exchanges: Exchanges,
        dedupe: dedupe::Claims,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            policy: ArcSwap::from_pointee(policy),
            user_limits: ArcSwap::from_pointee(HashMap::new()),
            kv,
            sequences,
            publisher,
            exchanges,
            dedupe,
            metrics,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: RandomState::new(),
            backlog: std::sync::OnceLock::new(),
            observer: std::sync::OnceLock::new(),
        }
    }

    /// Where overflow reads agent-queue backlogs (the broker); without it nothing
    /// overflows. Set once at start.
    pub fn set_backlog(&self, backlog: Arc<dyn Backlog>) {
        let _ = self.backlog.set(backlog);
    }

    /// Who counts and tails routed envelopes (the console). Set once at start.
    pub fn set_observer(&self, observer: Arc<crate::observe::Observer>) {
        let _ = self.observer.set(observer);
    }

    fn backlog(&self) -> &dyn Backlog {
        match self.backlog.get() {
            Some(backlog) => backlog.as_ref(),
            None => &NoBacklog,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// A helpdesk's `transfer`: the conversation goes to `skill` from its next message on.
    pub async fn transfer(
        &self,
        conversation_id: &str,
        skill: &str,
        priority: Option<u8>,
    ) -> Result<(), TransferError> {
        let policy = self.policy.load_full();
        // Under the conversation's lock, so a message being routed right now finishes with
        // the old record instead of overwriting the transfer afterwards.
        let _in_order = self.stripe(conversation_id).lock().await;
        policy
            .transfer(self.kv.as_ref(), conversation_id, skill, priority)
            .await
    }

    /// A helpdesk's `close`: the conversation's stickiness and transfer are forgotten.
    pub async fn close(&self, conversation_id: &str) -> Result<(), String> {
        let policy = self.policy.load_full();
        let _in_order = self.stripe(conversation_id).lock().await;
        policy.close(self.kv.as_ref(), conversation_id).await
    }

    /// Swaps in a new policy; messages already past the routing step keep the old one.
    pub fn set_policy(&self, policy: Policy) {
        self.policy.store(Arc::new(policy));
    }

    /// Sets each connector's per-user limit (messages per minute), keyed `kind:id`. A reload
    /// starts counting afresh, which forgives at most one minute's allowance.
    pub fn set_user_limits(&self, limits: &[(String, u32)]) {
        let next = limits
            .iter()
            .filter_map(|(key, per_minute)| {
                let quota = Quota::per_minute(NonZeroU32::new(*per_minute)?);
                Some((key.clone(), Arc::new(RateLimiter::keyed(quota))))
            })
            .collect();
        self.user_limits.store(Arc::new(next));
    }

    /// Forgets users idle long enough to be back at a full allowance, so the limiter maps
    /// stay bounded.
    pub fn prune_limiters(&self) {
        for limiter in self.user_limits.load().values() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    fn check_user(&self, channel: &ChannelRef, user: &str) -> Result<(), AcceptError> {
        let limits = self.user_limits.load();
        let key = format!("{}:{}", channel.kind, channel.connector_id);
        let Some(limiter) = limits.get(&key) else {
            return Ok(());
        };
        limiter
            .check_key(&user.to_owned())
            .map_err(|not_until| AcceptError::RateLimited {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            })
    }

    fn stripe(&self, conversation_id: &str) -> &Mutex<()> {
        let index = self.hasher.hash_one(conversation_id) as usize % STRIPES;
        &self.stripes[index]
    }

    fn count_lookups(&self, facts: &routing::Facts) {
        self.metrics.lookup("tier", facts.tier.outcome);
        for (hook, outcome) in [
            ("shipment", facts.shipment.outcome()),
            ("classifier", facts.classifier.outcome()),
        ] {
            if outcome != "skipped" {
                self.metrics.lookup(hook, outcome);
            }
        }
    }

    async fn publish_envelope(
        &self,
        channel: &ChannelRef,
        conversation_id: &str,
        envelope_id: &str,
        message: InboundMessage,
    ) -> Result<crate::durable::Outcome, AcceptError> {
        // One policy for the whole message, however many reloads happen meanwhile.
        let policy = self.policy.load_full();
        let started = std::time::Instant::now();
        let received_at = OffsetDateTime::now_utc();
        // A channel's vouched-for tier wins over lookup, but only a tier routing knows.
        let channel_tier = message.tier.as_deref().filter(|tier| {
            let known = policy.knows_tier(tier);
            if !known {
                tracing::warn!(channel = %channel.kind, connector = %channel.connector_id, tier, "tier from the channel is not in tiers.names, looking it up instead");
            }
            known
        });
        let subject = Subject {
            channel: &channel.kind,
            connector: &channel.connector_id,
            conversation_id,
            user: &message.channel_user_id,
            customer_id: message.customer_id.as_deref(),
            phone: message.phone.as_deref(),
            tier_override: channel_tier,
            text: message.content.searchable_text(),
            skill_hint: match &message.content {
                Content::Call { data, .. } => data.get("skill").and_then(|s| s.as_str()),
                _ => None,
            },
            now: received_at,
        };
        let analysis = policy.analyze(subject.text);
        let mut facts = policy.enrich(&subject, &analysis, self.kv.as_ref()).await;
        self.count_lookups(&facts);
        let services = Services {
            kv: self.kv.as_ref(),
            backlog: self.backlog(),
        };
        let (pending, flagged, envelope, routed) = {
            let _in_order = self.stripe(conversation_id).lock().await;
            // Rules are traced only while someone follows the live tail, which shows them.
            let tapped = self.observer.get().is_some_and(|o| o.tapped());
            let decision = policy
                .finish(&subject, &analysis, &mut facts, services, tapped)
                .await;
            let flagged = policy.flag_event(&subject, &analysis, envelope_id);
            self.metrics
                .routing_seconds
                .observe(started.elapsed().as_secs_f64());
            self.count_decision(&decision);
            tracing::debug!(
                channel = %channel.kind,
                connector = %channel.connector_id,
                envelope_id,
                rule = %decision.rule,
                queue_key = %decision.queue_key,
                intent = decision.intent.as_ref().map(|i| i.name.as_str()),
                entities = ?analysis.entities.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
                flags = ?decision.flags,
                "message routed"
            );
            let sequence =
                self.sequences.next(conversation_id).await.map_err(|e| {
                    AcceptError::Unavailable(format!("cannot number the message: {e}"))
                })?;
            let customer_id = message
                .customer_id
                .or_else(|| facts.tier.customer_id.clone());
            let request_id = RequestId::current();
            let envelope = Envelope {
                schema: ENVELOPE_SCHEMA.to_owned(),
                id: envelope_id.to_owned(),
                conversation_id: conversation_id.to_owned(),
                sequence,
                channel: channel.clone(),
                sender: Sender {
                    channel_user_id: message.channel_user_id,
                    customer_id,
                    tier: decision.tier.clone(),
                    display_name: message.display_name,
                    phone: message.phone,
                },
                received_at,
                content: message.content,
                intent: decision.envelope_intent(),
                entities: analysis.entities.clone(),
                flags: decision.flags.clone(),
                route: Route {
                    skill: decision.skill.clone(),
                    tier: decision.tier.clone(),
                    queue_key: decision.queue_key.clone(),
                    priority: decision.priority,
                    rule: decision.rule.clone(),
                    reason: Some(decision.reason.clone()),
                },
                dedupe_key: message.dedupe_key,
                raw: message.raw,
                request_id: request_id.as_ref().map(|id| id.as_str().to_owned()),
            };
            // The explanation costs; it is built only while someone follows the live tail.
            let routed = tapped.then(|| routing::Routed {
                analysis: analysis.clone(),
                facts: facts.clone(),
                decision: decision.clone(),
            });
            let body = serde_json::to_string(&envelope)
                .map_err(|e| AcceptError::Unavailable(format!("cannot encode envelope: {e}")))?;
            let outgoing = OutgoingMessage {
                exchange: self.exchanges.inbound.clone(),
                routing_key: decision.queue_key.clone(),
                message_id: envelope_id.to_owned(),
                priority: Some(decision.priority),
                headers: vec![
                    ("x-schema".into(), ENVELOPE_SCHEMA.into()),
                    ("x-channel".into(), channel.kind.clone()),
                    ("x-connector-id".into(), channel.connector_id.clone()),
                    ("x-conversation-id".into(), conversation_id.to_owned()),
                    ("x-sequence".into(), sequence.to_string()),
                ]
                .into_iter()
                .chain(
                    request_id
                        .as_ref()
                        .map(|id| (request_id::HEADER.to_owned(), id.as_str().to_owned())),
                )
                .collect(),
                body,
                mandatory: true,
            };
            let pending = self
                .publisher
                .enqueue(outgoing, "inbound")
                .await
                .map_err(|e| AcceptError::Unavailable(e.to_string()))?;
            (pending, flagged, envelope, routed)
        };
        let outcome = pending
            .outcome()
            .await
            .map_err(|e| AcceptError::Unavailable(e.to_string()))?;
        if let Some(observer) = self.observer.get() {
            observer.routed(&envelope, routed.as_ref(), outcome.as_str() != "published");
        }
        if let Some(event) = flagged {
            // The message is safe already; a flag that cannot be published is logged, not a
            // reason to make the channel send the message again.
            if let Err(err) = self.report(channel, event).await {
                tracing::warn!(error = %err, conversation = %conversation_id, "cannot publish conversation.flagged");
            }
        }
        Ok(outcome)
    }

    fn count_decision(&self, decision: &routing::Decision) {
        self.metrics
            .routed
            .get_or_create(&crate::metrics::RuleLabels {
                rule: decision.rule.clone(),
            })
            .inc();
        for flag in &decision.flags {
            self.metrics
                .flagged
                .get_or_create(&crate::metrics::OutcomeLabels {
                    outcome: flag.clone(),
                })
                .inc();
        }
        if let Some(backlog) = &decision.backlog {
            let labels = crate::metrics::QueueLabels {
                queue: backlog.queue.clone(),
            };
            if let Some(ready) = backlog.ready {
                self.metrics
                    .queue_ready
                    .get_or_create(&labels)
                    .set(i64::from(ready));
            }
            if backlog.overflowed {
                self.metrics.overflowed.get_or_create(&labels).inc();
            }
        }
    }
}

#[async_trait]
impl crate::outbound::Conversations for Pipeline {
    async fn transfer(
        &self,
        conversation_id: &str,
        skill: &str,
        priority: Option<u8>,
    ) -> Result<(), crate::outbound::CommandRefused> {
        Pipeline::transfer(self, conversation_id, skill, priority)
            .await
            .map_err(|err| crate::outbound::CommandRefused {
                code: match err {
                    TransferError::BadSkill(_) => "bad_skill",
                    TransferError::Unroutable(_) => "unroutable_skill",
                    TransferError::BadPriority => "bad_priority",
                    TransferError::Store(_) => "store_unavailable",
                },
                retryable: matches!(err, TransferError::Store(_)),
                text: err.to_string(),
            })
    }

    async fn close(&self, conversation_id: &str) -> Result<(), crate::outbound::CommandRefused> {
        Pipeline::close(self, conversation_id)
            .await
            .map_err(|text| crate::outbound::CommandRefused {
                code: "store_unavailable",
                text,
                retryable: true,
            })
    }
}

#[async_trait]
impl InboundSink for Pipeline {
    async fn accept(
        &self,
        channel: &ChannelRef,
        message: InboundMessage,
    ) -> Result<Accepted, AcceptError> {
        let conversation = ConversationId::new(
            &channel.kind,
            &channel.connector_id,
            &message.channel_user_id,
        );
        let conversation_id = conversation.to_string();
        self.check_user(channel, &message.channel_user_id)?;
        if !self.publisher.can_accept(4096) {
            return Err(AcceptError::Unavailable(
                "broker unavailable and spool full".into(),
            ));
        }

        let dedupe_key = format!("dedupe:{conversation_id}:{}", message.dedupe_key);
        let held = match self
            .dedupe
            .claim(&dedupe_key, &ulid::Ulid::new().to_string())
            .await
        {
            Ok(dedupe::Claim::New(held)) => Some(held),
            Ok(dedupe::Claim::TakenOver(held, reason)) => {
                Metrics::count_reason(
                    &self.metrics.dedupe_takeovers,
                    &channel.kind,
                    &channel.connector_id,
                    reason.as_str(),
                );
                Some(held)
            }
            Ok(dedupe::Claim::Done(first)) => {
                Metrics::count(
                    &self.metrics.accepted,
                    &channel.kind,
                    &channel.connector_id,
                    "duplicate",
                );
                return Ok(Accepted {
                    envelope_id: first,
                    duplicate: true,
                });
            }
            Ok(dedupe::Claim::InProgress) => {
                return Err(AcceptError::Unavailable(
                    "the same message is being accepted right now, retry".into(),
                ));
            }
            Err(err) => {
                // Without the shared store a duplicate may slip through; losing the message
                // instead would be worse.
                self.metrics
                    .kv_errors
                    .get_or_create(&crate::metrics::OutcomeLabels {
                        outcome: "dedupe_skipped".into(),
                    })
                    .inc();
                tracing::warn!(error = %err, "dedupe store unavailable, accepting without dedupe");
                None
            }
        };
        let envelope_id = match &held {
            Some(held) => held.envelope_id().to_owned(),
            None => ulid::Ulid::new().to_string(),
        };

        match self
            .publish_envelope(channel, &conversation_id, &envelope_id, message)
            .await
        {
            Ok(outcome) => {
                if let Some(held) = held
                    && let Err(err) = held.complete().await
                {
                    tracing::warn!(error = %err, "cannot record dedupe key");
                }
                Metrics::count(
                    &self.metrics.accepted,
                    &channel.kind,
                    &channel.connector_id,
                    outcome.as_str(),
                );
                tracing::debug!(
                    channel = %channel.kind,
                    connector = %channel.connector_id,
                    envelope_id,
                    outcome = outcome.as_str(),
                    "message accepted"
                );
                Ok(Accepted {
                    envelope_id,
                    duplicate: false,
                })
            }
            Err(err) => {
                if let Some(held) = held {
                    let _ = held.release().await;
                }
                tracing::warn!(channel = %channel.kind, connector = %channel.connector_id, error = %err, "message not accepted");
                Err(err)
            }
        }
    }

    async fn report(&self, channel: &ChannelRef, mut event: Event) -> Result<(), AcceptError> {
        event
            .data
            .entry("channel")
            .or_insert_with(|| channel.kind.clone().into());
        event
            .data
            .entry("connector_id")
            .or_insert_with(|| channel.connector_id.clone().into());
        let body = serde_json::to_string(&event)
            .map_err(|e| AcceptError::Unavailable(format!("cannot encode event: {e}")))?;
        let mut headers = vec![
            ("x-schema".to_owned(), EVENT_SCHEMA.to_owned()),
            ("x-channel".to_owned(), channel.kind.clone()),
            ("x-connector-id".to_owned(), channel.connector_id.clone()),
        ];
        if let Some(conversation) = &event.conversation_id {
            headers.push(("x-conversation-id".to_owned(), conversation.clone()));
        }
        let outgoing = OutgoingMessage {
            exchange: self.exchanges.events.clone(),
            routing_key: event.kind.clone(),
            message_id: event.id.clone(),
            priority: None,
            headers,
            body,
            mandatory: false,
        };
        self.publisher
            .send(outgoing, "events")
            .await
            .map(|_| ())
            .map_err(|e| AcceptError::Unavailable(e.to_string()))
    }

    fn refused(&self, channel: &ChannelRef, reason: switchboard_sdk::RejectReason) {
        Metrics::count_reason(
            &self.metrics.rejections,
            &channel.kind,
            &channel.connector_id,
            reason.as_str(),
        );
    }
}
