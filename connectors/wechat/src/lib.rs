//! Placeholder until the wechat connector lands.
