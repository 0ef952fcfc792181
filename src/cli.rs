//! The command line of CONTRACT §1: `run`, `check-config`, `route`, `schema`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::config::{self, Config};
use crate::pipeline::routing::entities::mask_phone;
use crate::pipeline::routing::hooks::HookResult;
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

fn hook_line<T>(name: &str, result: &HookResult<T>, show: impl Fn(&T) -> String) -> String {
    match result {
        HookResult::Skipped => format!("{name} not asked"),
        HookResult::Ok { value, millis } => format!("{name} {} ({millis} ms)", show(value)),
        HookResult::Timeout { millis } => format!("{name} timed out after {millis} ms"),
        HookResult::Failed { error } => format!("{name} failed: {error}"),
    }
}

fn explain(text: &str, routed: &Routed) -> String {
    let (a, f, d) = (&routed.analysis, &routed.facts, &routed.decision);
    let mut out = format!("text        {text}\n");
    out += &format!(
        "normalized  {}\n",
        a.normalized.as_deref().unwrap_or("(no text)")
    );
    match &d.intent {
        Some(intent) => {
            let terms = a
                .intent_scores
                .iter()
                .find(|s| s.intent == intent.name)
                .map(|s| {
                    let mut terms: Vec<String> =
                        s.keywords.iter().map(|k| format!("{k:?}")).collect();
                    terms.extend(s.regexes.iter().map(|r| format!("/{r}/")));
                    format!(", score {}: {}", s.score, terms.join(", "))
                })
                .unwrap_or_default();
            out += &format!(
                "intent      {} {:.2} ({}{terms})\n",
                intent.name, intent.confidence, intent.source
            );
        }
        None => out += "intent      none\n",
    }
    for score in &a.intent_scores {
        if d.intent.as_ref().is_some_and(|i| i.name == score.intent) {
            continue;
        }
        let mut terms: Vec<String> = score.keywords.iter().map(|k| format!("{k:?}")).collect();
        terms.extend(score.regexes.iter().map(|r| format!("/{r}/")));
        let excluded = score
            .excluded_by
            .as_ref()
            .map(|w| format!(", ruled out by {w:?}"))
            .unwrap_or_default();
        out += &format!(
            "  also      {} score {} ({}){excluded}\n",
            score.intent,
            score.score,
            terms.join(", ")
        );
    }
    if a.entities.is_empty() {
        out += "entities    none\n";
    }
    for entity in &a.entities {
        let value = if entity.kind == "phone" {
            mask_phone(&entity.value)
        } else {
            entity.value.clone()
        };
        let details: Vec<String> = entity
            .details
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k} {}",
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                )
            })
            .collect();
        out += &format!(
            "entity      {} {value} ({})\n",
            entity.kind,
            details.join(", ")
        );
    }
    out += &format!(
        "flags       {}\n",
        if d.flags.is_empty() {
            "none".to_owned()
        } else {
            d.flags.join(", ")
        }
    );
    out += &format!(
        "tier        {} (from {}){}\n",
        d.tier,
        d.tier_source,
        f.tier
            .customer_id
            .as_ref()
            .map(|c| format!(", customer {c}"))
            .unwrap_or_default()
    );
    out += &format!(
        "lookups     {}; {}\n",
        hook_line("shipment", &f.shipment, |s| s.clone()),
        hook_line("classifier", &f.classifier, |c| format!(
            "{} {:.2}",
            c.intent, c.confidence
        ))
    );
    if let Some(sticky) = &f.sticky {
        out += &format!(
            "sticky      {} from {}{}\n",
            sticky.skill,
            sticky.rule,
            if sticky.transferred {
                " (transferred)"
            } else {
                ""
            }
        );
    }
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
