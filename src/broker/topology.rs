//! The AMQP topology of CONTRACT §4, declared idempotently on every (re)connection.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use crate::config::{BrokerConfig, QueueConfig, QueueType};

/// Names and agent queues to declare.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Topic exchange of envelopes.
    pub inbound_exchange: String,
    /// Alternate exchange and queue catching unroutable envelopes.
    pub unroutable: String,
    /// Queue (and direct exchange) of helpdesk replies.
    pub outbound: String,
    /// Topic exchange of events.
    pub events_exchange: String,
    /// Exchange and queue of what could not be processed.
    pub dead: String,
    /// Agent queues.
    pub queues: Vec<QueueConfig>,
}

/// Routing keys bound from the outbound direct exchange to the outbound queue.
pub const OUTBOUND_KEYS: [&str; 2] = ["reply", "command"];

impl Topology {
    /// The topology a config asks for.
    pub fn from_config(broker: &BrokerConfig, queues: &[QueueConfig]) -> Self {
        Self {
            inbound_exchange: broker.inbound_exchange(),
            unroutable: broker.unroutable(),
            outbound: broker.outbound(),
            events_exchange: broker.events_exchange(),
            dead: broker.dead(),
            queues: queues.to_vec(),
        }
    }

    /// Declares everything; safe to repeat.
    pub async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let durable_queue = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };

        // Unroutable envelopes land here instead of vanishing.
        channel
            .exchange_declare(
                self.unroutable.as_str().into(),
                ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_declare(
                self.unroutable.as_str().into(),
                durable_queue,
                FieldTable::default(),
            )
            .await?;
        bind(channel, &self.unroutable, &self.unroutable, "").await?;

        let mut inbound_args = FieldTable::default();
        inbound_args.insert(
            "alternate-exchange".into(),
            AMQPValue::LongString(self.unroutable.as_str().into()),
        );
        channel
            .exchange_declare(
                self.inbound_exchange.as_str().into(),
                ExchangeKind::Topic,
                durable,
                inbound_args,
            )
            .await?;

        channel
            .exchange_declare(
                self.dead.as_str().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_declare(
                self.dead.as_str().into(),
                durable_queue,
                FieldTable::default(),
            )
            .await?;
        bind(channel, &self.dead, &self.dead, "#").await?;

        channel
            .exchange_declare(
                self.events_exchange.as_str().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;

        channel
            .exchange_declare(
                self.outbound.as_str().into(),
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await?;
        let mut outbound_args = FieldTable::default();
        outbound_args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(self.dead.as_str().into()),
        );
        channel
            .queue_declare(self.outbound.as_str().into(), durable_queue, outbound_args)
            .await?;
        for key in OUTBOUND_KEYS {
            bind(channel, &self.outbound, &self.outbound, key).await?;
        }

        for queue in &self.queues {
            let mut args = FieldTable::default();
            match queue.queue_type {
                QueueType::Classic => {
                    args.insert(
                        "x-max-priority".into(),
                        AMQPValue::ShortShortUInt(queue.max_priority),
                    );
                }
                QueueType::Quorum => {
                    args.insert(
                        "x-queue-type".into(),
                        AMQPValue::LongString("quorum".into()),
                    );
                }
            }
            channel
                .queue_declare(queue.name.as_str().into(), durable_queue, args)
                .await?;
            for pattern in &queue.bindings {
                bind(channel, &queue.name, &self.inbound_exchange, pattern).await?;
            }
        }
        Ok(())
    }
}

async fn bind(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    key: &str,
) -> Result<(), lapin::Error> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}
