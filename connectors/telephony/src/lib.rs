//! Switchboard's telephony connector: an IVR menu in front of the agents' phone queues.
//!
//! A call comes in, hears a greeting and a digit menu (keys or speech) in the configured
//! languages, optionally keys in a tracking number, and is handed to the provider-side
//! queue of the chosen skill while a `ringing` call message screen-pops the caller for the
//! helpdesk. Outside business hours callers can leave a voicemail, which is accepted with
//! its recording URL (and its transcription as text). Call progress becomes `call.*` events.
//!
//! Two provider profiles: `twilio` (signed form webhooks, answers in TwiML) and `generic`
//! (signed JSON both ways). The Twilio signature, the generic HMAC scheme, phone masking and
//! the time windows come from the sdk, shared with the SMS connector.

#![warn(missing_docs)]

pub mod call;
pub mod config;
pub mod connector;
pub mod ivr;
pub mod prompts;
pub mod twiml;

pub use config::TelephonyConfig;
pub use connector::{KIND, TelephonyConnector, TelephonyFactory};
