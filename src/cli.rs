//! The command line of CONTRACT §1: `run`, `check-config`, `route`, `schema`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::config::{self, Config};
use crate::console::client::{Admin, AdminArgs, query};
use crate::pipeline::routing::explain::explain;
use crate::pipeline::routing::overflow::NoBacklog;
use crate::pipeline::routing::{Policy, Routed, Subject, stickiness};

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
    Route(RouteArgs),
    /// Print the JSON Schema of an AMQP payload.
    Schema {
        /// Which payload.
        #[arg(value_enum)]
        payload: Payload,
    },
    /// Follow routed envelopes of the running daemon as JSON lines (its admin API).
    Tap(TapArgs),
    /// List, show, replay or discard dead letters through the running daemon.
    Dead {
        /// The admin API.
        #[command(flatten)]
        admin: AdminArgs,
        /// What to do.
        #[command(subcommand)]
        action: DeadAction,
    },
    /// The running daemon's spool: status, or wait until it is drained.
    Spool {
        /// The admin API.
        #[command(flatten)]
        admin: AdminArgs,
        /// What to do.
        #[command(subcommand)]
        action: SpoolAction,
    },
}

/// The `tap` command's arguments; every filter given must match.
#[derive(Debug, clap::Args)]
pub struct TapArgs {
    /// The admin API.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Only this channel kind.
    #[arg(long)]
    pub channel: Option<String>,
    /// Only envelopes an agent queue of this name receives.
    #[arg(long)]
    pub queue: Option<String>,
    /// Only this skill.
    #[arg(long)]
    pub skill: Option<String>,
    /// Only this tier.
    #[arg(long)]
    pub tier: Option<String>,
    /// Only this intent.
    #[arg(long)]
    pub intent: Option<String>,
    /// Only envelopes with this flag.
    #[arg(long)]
    pub flag: Option<String>,
    /// Show phone numbers unmasked (the daemon logs that it was asked).
    #[arg(long)]
    pub unmask: bool,
}

/// `switchboard dead ...`.
#[derive(Debug, Subcommand)]
pub enum DeadAction {
    /// List dead letters (JSON).
    List {
        /// Only those dead-lettered for this reason.
        #[arg(long)]
        reason: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one dead letter with its headers and body.
    Show {
        /// Its id (from `list`).
        id: String,
    },
    /// Send dead letters back where they were going.
    Replay {
        /// One dead letter's id.
        #[arg(conflicts_with_all = ["reason", "all"])]
        id: Option<String>,
        /// Every dead letter with this reason.
        #[arg(long)]
        reason: Option<String>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
        /// Send this file's content instead of the dead body (a fixed reply); with an id only.
        #[arg(long, requires = "id")]
        body_file: Option<PathBuf>,
    },
    /// Remove one dead letter for good.
    Discard {
        /// Its id.
        id: String,
    },
}

/// `switchboard spool ...`.
#[derive(Debug, Subcommand)]
pub enum SpoolAction {
    /// Depth, bytes and oldest age (JSON).
    Status,
    /// Wait until the daemon has drained its spool to the broker.
    Drain {
        /// Give up after this many seconds (exit 1).
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
}

/// The `route` command's arguments.
#[derive(Debug, clap::Args)]
pub struct RouteArgs {
    /// Config file.
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    pub config: PathBuf,
    /// Channel kind the message comes from.
    #[arg(long)]
    pub channel: String,
    /// Connector id the message comes from. Default: the conversation's, else `cli`.
    #[arg(long)]
    pub connector: Option<String>,
    /// Customer tier to assume instead of looking it up.
    #[arg(long)]
    pub tier: Option<String>,
    /// Conversation id to look the tier and stickiness up by (`app:shop-app:u-42`).
    #[arg(long)]
    pub conversation: Option<String>,
    /// Customer id the channel would give.
    #[arg(long)]
    pub customer: Option<String>,
    /// Phone number the channel would give (E.164).
    #[arg(long)]
    pub phone: Option<String>,
    /// When the message arrives, RFC 3339 (business hours are judged then). Default now.
    #[arg(long)]
    pub at: Option<String>,
    /// Print JSON for tools.
    #[arg(long)]
    pub json: bool,
    /// The message text.
    pub text: String,
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
    /// `switchboard.command.v1`.
    Command,
}

/// The JSON Schema of `payload`, pretty-printed.
pub fn schema(payload: Payload) -> String {
    let schema = match payload {
        Payload::Envelope => schemars::schema_for!(switchboard_sdk::Envelope),
        Payload::Reply => schemars::schema_for!(switchboard_sdk::Reply),
        Payload::Event => schemars::schema_for!(switchboard_sdk::Event),
        Payload::Command => schemars::schema_for!(switchboard_sdk::Command),
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
        "intents     {} ({} keywords)\n",
        config.intents.len(),
        config
            .intents
            .iter()
            .map(|i| i.keywords.len())
            .sum::<usize>()
    );
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

/// Runs `route`; the text to print. Looks the tier up as the daemon would (Redis, the CRM)
/// and reads the conversation's stickiness, but writes nothing and does not ask the broker
/// about backlogs.
pub fn route(config: &Config, args: &RouteArgs) -> Result<String, String> {
    let channel = args.channel.as_str();
    if !crate::registry::KINDS.contains(&channel) {
        return Err(format!(
            "unknown channel {channel:?}, expected one of {}",
            crate::registry::KINDS.join(", ")
        ));
    }
    if let Some(tier) = &args.tier
        && !config.tiers.names.iter().any(|t| t == tier)
    {
        return Err(format!(
            "unknown tier {tier:?}, expected one of {}",
            config.tiers.names.join(", ")
        ));
    }
    let now = match &args.at {
        Some(at) => time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
            .map_err(|e| format!("--at {at:?} is not an RFC 3339 time: {e}"))?,
        None => time::OffsetDateTime::now_utc(),
    };
    let connector = args.connector.clone().unwrap_or_else(|| {
        args.conversation
            .as_deref()
            .and_then(|c| c.split(':').nth(1))
            .unwrap_or("cli")
            .to_owned()
    });
    let conversation = args
        .conversation
        .clone()
        .unwrap_or_else(|| format!("{channel}:{connector}:cli"));
    let user = conversation
        .splitn(3, ':')
        .nth(2)
        .unwrap_or("cli")
        .to_owned();
    let policy = Policy::from_config(config);
    let kv: Box<dyn switchboard_sdk::KvStore> = match &config.redis {
        Some(redis) => {
            let url = redis.resolve_url().map_err(|p| p.message)?;
            Box::new(
                crate::store::RedisKv::new(&url, &redis.key_prefix).map_err(|e| e.to_string())?,
            )
        }
        None => Box::new(switchboard_sdk::services::MemoryKv::default()),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let subject = Subject {
        channel,
        connector: &connector,
        conversation_id: &conversation,
        user: &user,
        customer_id: args.customer.as_deref(),
        phone: args.phone.as_deref(),
        tier_override: args.tier.as_deref(),
        text: Some(&args.text),
        skill_hint: None,
        now,
    };
    let routed = runtime.block_on(async {
        let analysis = policy.analyze(subject.text);
        let mut facts = policy.enrich(&subject, &analysis, kv.as_ref()).await;
        if config.redis.is_some() {
            facts.sticky = stickiness::load(kv.as_ref(), &conversation)
                .await
                .ok()
                .flatten();
        }
        let mut decision = policy.decide(&subject, &analysis, &facts, true);
        if let Some(rule) = policy.overflow_for(&decision) {
            let ready = crate::pipeline::routing::overflow::Backlog::ready(
                &NoBacklog,
                &rule.queue,
                rule.max_age,
            )
            .await;
            Policy::apply_overflow(&mut decision, rule, ready);
        }
        Routed {
            analysis,
            facts,
            decision,
        }
    });
    if args.json {
        let value = json!({
            "text": args.text,
            "channel": channel,
            "connector": connector,
            "conversation": conversation,
            "normalized": routed.analysis.normalized,
            "intent": routed.decision.intent,
            "intent_scores": routed.analysis.intent_scores,
            "entities": routed.analysis.entities,
            "abusive_words": routed.analysis.abusive_words,
            "flags": routed.decision.flags,
            "tier": routed.facts.tier,
            "shipment": routed.facts.shipment,
            "classifier": routed.facts.classifier,
            "sticky": routed.facts.sticky,
            "decision": routed.decision,
        });
        return Ok(serde_json::to_string_pretty(&value).unwrap_or_default());
    }
    Ok(explain(&args.text, &routed))
}

/// Runs `tap`: JSON lines on stdout until the daemon goes away.
pub async fn tap(args: &TapArgs) -> Result<(), String> {
    let admin = Admin::new(&args.admin)?;
    let path = format!(
        "/api/tap{}",
        query(&[
            ("channel", args.channel.as_deref()),
            ("queue", args.queue.as_deref()),
            ("skill", args.skill.as_deref()),
            ("tier", args.tier.as_deref()),
            ("intent", args.intent.as_deref()),
            ("flag", args.flag.as_deref()),
            ("unmask", args.unmask.then_some("true")),
        ])
    );
    admin.follow(&path, &mut std::io::stdout().lock()).await
}

/// Runs `dead ...`; the JSON to print.
pub async fn dead(admin: &AdminArgs, action: &DeadAction) -> Result<serde_json::Value, String> {
    let admin = Admin::new(admin)?;
    let encode = crate::console::client::encode;
    match action {
        DeadAction::List { reason, limit } => {
            let limit = limit.to_string();
            admin
                .get(&format!(
                    "/api/dead{}",
                    query(&[("reason", reason.as_deref()), ("limit", Some(&limit))])
                ))
                .await
        }
        DeadAction::Show { id } => admin.get(&format!("/api/dead/{}", encode(id))).await,
        DeadAction::Replay {
            id: Some(id),
            body_file,
            ..
        } => {
            let body = match body_file {
                Some(file) => {
                    let text = std::fs::read_to_string(file)
                        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
                    json!({ "body": text })
                }
                None => json!({}),
            };
            admin
                .post(&format!("/api/dead/{}/replay", encode(id)), &body)
                .await
        }
        DeadAction::Replay {
            id: None,
            reason,
            all,
            ..
        } => {
            if reason.is_none() && !all {
                return Err("give an id, --reason or --all".to_owned());
            }
            admin
                .post("/api/dead/replay", &json!({ "reason": reason, "all": all }))
                .await
        }
        DeadAction::Discard { id } => admin.delete(&format!("/api/dead/{}", encode(id))).await,
    }
}

/// Runs `spool ...`; the JSON to print.
pub async fn spool(admin: &AdminArgs, action: &SpoolAction) -> Result<serde_json::Value, String> {
    let admin = Admin::new(admin)?;
    match action {
        SpoolAction::Status => admin.get("/api/spool").await,
        SpoolAction::Drain { timeout_secs } => {
            // The daemon drains on its own whenever the broker is up; this waits for it.
            let deadline =
                std::time::Instant::now() + std::time::Duration::from_secs(*timeout_secs);
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
            loop {
                tick.tick().await;
                let status = admin.get("/api/spool").await?;
                if status["depth"] == 0 {
                    return Ok(status);
                }
                if std::time::Instant::now() >= deadline {
                    return Err(format!(
                        "spool not drained within {timeout_secs} s: {status}"
                    ));
                }
                eprintln!(
                    "spool: {} messages left, broker {}",
                    status["depth"],
                    if status["broker_connected"] == true {
                        "connected"
                    } else {
                        "down"
                    }
                );
            }
        }
    }
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
