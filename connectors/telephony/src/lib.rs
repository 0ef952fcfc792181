//! Placeholder until the telephony connector lands.
