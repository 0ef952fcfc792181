//! Placeholder until the sms connector lands.
