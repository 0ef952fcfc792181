//! What a Switchboard connector needs and nothing more: the channel-neutral payloads
//! (envelope, reply, event), the [`Connector`] seam the daemon mounts and delivers through,
//! the [`Inbound`] handle that hands messages to the pipeline, the shared services a
//! connector may use ([`ConnectorContext`]), and helpers more than one channel needs:
//! webhook signatures ([`signature`]: timestamped HMAC, Twilio), config checks
//! ([`config`], [`profile`]), phone numbers ([`phone`]), local-time windows
//! ([`schedule`]) and error text ([`text`], [`connector::transport_text`]).
//!
//! A connector depends on this crate only: never on the broker, the router internals or
//! Redis, so it can be tested with the in-memory services of [`testing`].

pub mod command;
pub mod config;
pub mod connector;
pub mod content;
pub mod conversation;
pub mod envelope;
pub mod event;
pub mod inbound;
pub mod phone;
pub mod profile;
pub mod reply;
pub mod schedule;
pub mod services;
pub mod signature;
pub mod text;
pub mod webhook;

#[cfg(feature = "testing")]
pub mod testing;

pub use command::{Action, Command};
pub use config::{ConfigProblem, ConnectorLimits, Secret, SecretRef};
pub use connector::{BuildError, Connector, ConnectorFactory, Delivered, DeliveryError, Recipient};
pub use content::Content;
pub use conversation::ConversationId;
pub use envelope::{ChannelRef, Entity, Envelope, Intent, Route, Sender};
pub use event::Event;
pub use inbound::{AcceptError, Accepted, Inbound, InboundMessage, InboundSink};
pub use reply::{Agent, Reply};
pub use services::{ConnectorContext, Fanout, KvError, KvStore};
pub use webhook::{RejectReason, Rejection};

/// Re-exported so connectors build routers and clients with exactly the versions the daemon
/// mounts and configures.
pub use axum;
pub use reqwest;
pub use time;
