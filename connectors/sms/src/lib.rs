//! Switchboard's SMS connector: customers text a number, agents answer by text.
//!
//! Two provider profiles: `twilio` (form-encoded webhooks checked with `X-Twilio-Signature`,
//! replies through the Messages API) and `generic` (signed JSON both ways, for any gateway).
//! Inbound texts and MMS become envelopes from the sender's E.164 number; STOP-style
//! keywords are recorded and later replies to that number refused; replies can wait out
//! quiet hours; delivery receipts become `delivery.status` events.
//!
//! The modules [`twilio_signature`], [`hmac_webhook`], [`phone`] and [`schedule`] are
//! public because the telephony connector shares them.

#![warn(missing_docs)]

pub mod config;
pub mod connector;
pub mod generic;
pub mod hmac_webhook;
pub mod message;
pub mod optout;
pub mod phone;
pub mod schedule;
pub mod segments;
pub mod twilio;
pub mod twilio_signature;

pub use config::SmsConfig;
pub use connector::{KIND, SmsConnector, SmsFactory};
