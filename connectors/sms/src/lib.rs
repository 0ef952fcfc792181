//! Switchboard's SMS connector: customers text a number, agents answer by text.
//!
//! Two provider profiles: `twilio` (form-encoded webhooks checked with `X-Twilio-Signature`,
//! replies through the Messages API) and `generic` (signed JSON both ways, for any gateway).
//! Inbound texts and MMS become envelopes from the sender's E.164 number; STOP-style
//! keywords are recorded and later replies to that number refused; replies can wait out
//! quiet hours; delivery receipts become `delivery.status` events.
//!
//! The signatures, phone numbers and time windows come from the sdk
//! ([`switchboard_sdk::signature`], [`switchboard_sdk::phone`],
//! [`switchboard_sdk::schedule`]), shared with the telephony connector.

#![warn(missing_docs)]

pub mod config;
pub mod connector;
pub mod generic;
pub mod message;
pub mod optout;
pub mod segments;
pub mod twilio;

pub use config::SmsConfig;
pub use connector::{KIND, SmsConnector, SmsFactory};

/// Twilio's request signature, which moved to the sdk; kept at its old path because the
/// daemon's end-to-end tests (`tests/sms_telephony_e2e.rs`) sign requests through it. New
/// code uses [`switchboard_sdk::signature::twilio`].
pub use switchboard_sdk::signature::twilio as twilio_signature;
