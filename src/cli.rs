//! The command line of CONTRACT §1: `run`, `check-config`, `route`, `schema`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::config::{self, Config};
use crate::pipeline::routing::{Decision, Policy, Subject};

/// Switchboard: routes customer messages from every channel to helpdesk queues and carries
/// replies back.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Run {
        /// Config file.
        #[arg(long, env = "SWITCHBOARD_CONFIG")]
        config: PathBuf,
    },
    /// Validate a config file fully and summarise it.
    CheckConfig {
        /// Config file.
        file: PathBuf,
    },
    /// Show how one message would be classified and routed.
    Route {
        /// Config file.
        #[arg(long, env = "SWITCHBOARD_CONFIG")]
        config: PathBuf,
        /// Channel kind the message comes from.
        #[arg(long)]
        channel: String,
        /// Customer tier to assume instead of looking it up.
        #[arg(long)]
        tier: Option<String>,
        /// Conversation id to look the tier up by (`app:shop-app:u-42`).
        #[arg(long)]
        conversation: Option<String>,
        /// Print JSON for tools.
        #[arg(long)]
        json: bool,
        /// The message text.
        text: String,
    },
    /// Print the JSON Schema of an AMQP payload.
    Schema {
        /// Which payload.
        #[arg(value_enum)]
        payload: Payload,
    },
}

/// AMQP payloads with a schema.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Payload {
    /// `switchboard.envelope.v1`.
    Envelope,
    /// `switchboard.reply.v1`.
    Reply,
    /// `switchboard.event.v1`.
    Event,
}

/// The JSON Schema of `payload`, pretty-printed.
pub fn schema(payload: Payload) -> String {
    let schema = match payload {
        Payload::Envelope => schemars::schema_for!(switchboard_sdk::Envelope),
        Payload::Reply => schemars::schema_for!(switchboard_sdk::Reply),
        Payload::Event => schemars::schema_for!(switchboard_sdk::Event),
    };
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// The one-screen summary `check-config` prints.
pub fn summary(file: &str, config: &Config, hash: &str) -> String {
    let mut out = format!("{file}: ok (sha256 {})\n", &hash[..12.min(hash.len())]);
    let broker_url = config.broker.resolve_url().unwrap_or_default();
    out += &format!(
        "broker      {} (prefix {:?}, confirm timeout {} ms)\n",
        mask_url(&broker_url),
        config.broker.prefix,
        config.broker.confirm_timeout_ms
    );
    out += &format!(
        "spool       {} (max {} MiB)\n",
        config.spool.path.display(),
        config.spool.max_bytes >> 20
    );
    out += &format!(
        "shared      {}\n",
        if config.redis.is_some() {
            "redis"
        } else {
            "memory (single instance)"
        }
    );
    out += &format!(
        "listen      public {}  admin {}\n",
        config.server.listen, config.server.admin_listen
    );
    out += &format!(
        "tiers       {} (default {})\n",
        config.tiers.names.join(", "),
        config.tiers.default
    );
    out += &format!("queues      {}\n", config.queues.len());
    for queue in &config.queues {
        out += &format!("  {:<28} <- {}\n", queue.name, queue.bindings.join(", "));
    }
    out += &format!(
        "rules       {} + default -> {}\n",
        config.routing.rules.len(),
        config.routing.default.skill
    );
    let connectors = config
        .connectors
        .build(&switchboard_sdk::ConnectorContext::in_memory())
        .unwrap_or_default();
    out += &format!("connectors  {}\n", connectors.len());
    for connector in connectors {
        out += &format!("  /{}/{}\n", connector.kind(), connector.id());
    }
    out
}

/// Hides the password of a URL.
fn mask_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://****{}", &url[..scheme], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Runs `route`; the text to print.
pub fn route(
    config: &Config,
    channel: &str,
    tier: Option<&str>,
    conversation: Option<&str>,
    text: &str,
    as_json: bool,
) -> Result<String, String> {
    if !crate::registry::KINDS.contains(&channel) {
        return Err(format!(
            "unknown channel {channel:?}, expected one of {}",
            crate::registry::KINDS.join(", ")
        ));
    }
    if let Some(tier) = tier
        && !config.tiers.names.iter().any(|t| t == tier)
    {
        return Err(format!(
            "unknown tier {tier:?}, expected one of {}",
            config.tiers.names.join(", ")
        ));
    }
    let conversation = conversation.map_or_else(|| format!("{channel}:cli:cli"), str::to_owned);
    let decision = Policy::from_config(config).decide(&Subject {
        channel,
        conversation_id: &conversation,
        customer_id: None,
        tier_override: tier,
        text: Some(text),
        skill_hint: None,
    });
    if as_json {
        let value = json!({ "text": text, "channel": channel, "decision": decision });
        return Ok(serde_json::to_string_pretty(&value).unwrap_or_default());
    }
    Ok(explain(text, &decision))
}

fn explain(text: &str, d: &Decision) -> String {
    let mut out = format!("text        {text}\n");
    out += &format!("tier        {} (from {})\n", d.tier, d.tier_source);
    for trace in &d.tried {
        out += &format!(
            "rule        {:<24} {}  {}\n",
            trace.rule,
            if trace.matched { "MATCH" } else { "no   " },
            trace.why
        );
    }
    out += &format!(
        "decision    rule {} -> skill {}, queue key {}, priority {}\n",
        d.rule, d.skill, d.queue_key, d.priority
    );
    out += &format!("why         {}\n", d.reason);
    out
}

/// Loads a config for the read-only commands.
pub fn load(path: &std::path::Path) -> Result<config::LoadedConfig, config::ConfigError> {
    config::load(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_passwords_in_urls() {
        assert_eq!(
            mask_url("amqp://guest:secret@host:5672/%2f"),
            "amqp://****@host:5672/%2f"
        );
        assert_eq!(mask_url("amqp://host"), "amqp://host");
    }
}
