//! Switchboard: the access layer between customer channels and the helpdesk.
//!
//! Connectors (under `connectors/`) speak each channel's wire format; this crate is the
//! core written once for all of them: configuration, the inbound pipeline (dedupe, tier,
//! classification, routing, envelope), the AMQP broker link with publisher confirms, the
//! durable spool for when the broker is away, the outbound reply dispatcher, and the HTTP
//! surface.

pub mod broker;
pub mod cli;
pub mod config;
pub mod console;
pub mod daemon;
pub mod durable;
pub mod heap;
pub mod live;
pub mod liveness;
pub mod metrics;
pub mod observe;
pub mod outbound;
pub mod pipeline;
pub mod registry;
pub mod request_id;
pub mod server;
pub mod spool;
pub mod store;
