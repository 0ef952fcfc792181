//! The second phase of loading: checks that types cannot express (references between
//! sections, ranges, patterns, resolvable secrets), collecting every problem with its key.

use std::collections::{BTreeSet, HashSet};

use switchboard_sdk::SecretRef;

use super::model::*;
use crate::broker::topic;

/// `(key path, message)` pairs.
pub type Problems = Vec<(String, String)>;

/// Every problem in `config`, in no particular order.
pub fn validate(config: &Config) -> Problems {
    let mut problems = Problems::new();
    daemon(&config.daemon, &mut problems);
    broker(&config.broker, &mut problems);
    if let Some(redis) = &config.redis {
        redis_section(redis, &mut problems);
    }
    spool(&config.spool, &mut problems);
    tiers(&config.tiers, &mut problems);
    queues(&config.queues, &mut problems);
    routing(config, &mut problems);
    outbound(&config.outbound, &mut problems);
    problems.extend(config.connectors.problems());
    problems
}

fn push(problems: &mut Problems, key: impl Into<String>, message: impl Into<String>) {
    problems.push((key.into(), message.into()));
}

fn daemon(daemon: &DaemonConfig, problems: &mut Problems) {
    if !(1..=300).contains(&daemon.shutdown_grace_secs) {
        push(
            problems,
            "daemon.shutdown_grace_secs",
            "must be between 1 and 300",
        );
    }
    if let Some(id) = &daemon.instance_id
        && (id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
    {
        push(
            problems,
            "daemon.instance_id",
            "must be letters, digits, '-', '_' or '.'",
        );
    }
}

fn broker(broker: &BrokerConfig, problems: &mut Problems) {
    match broker.resolve_url() {
        Ok(url) => {
            if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
                let key = given_key("broker", &broker.url_env, &broker.url_file);
                push(problems, key, "must start with amqp:// or amqps://");
            }
        }
        Err(problem) => push(problems, format!("broker.{}", problem.key), problem.message),
    }
    if broker.prefix.is_empty()
        || !broker
            .prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        push(
            problems,
            "broker.prefix",
            "must be non-empty letters, digits, '-', '_' or '.'",
        );
    }
    if !(100..=60_000).contains(&broker.confirm_timeout_ms) {
        push(
            problems,
            "broker.confirm_timeout_ms",
            "must be between 100 and 60000",
        );
    }
    if broker.reconnect_min_ms == 0 || broker.reconnect_min_ms > broker.reconnect_max_ms {
        push(
            problems,
            "broker.reconnect_min_ms",
            "must be greater than 0 and at most broker.reconnect_max_ms",
        );
    }
}

fn redis_section(redis: &RedisConfig, problems: &mut Problems) {
    match redis.resolve_url() {
        Ok(url) => {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                let key = given_key("redis", &redis.url_env, &redis.url_file);
                push(problems, key, "must start with redis:// or rediss://");
            }
        }
        Err(problem) => push(problems, format!("redis.{}", problem.key), problem.message),
    }
}

fn spool(spool: &SpoolConfig, problems: &mut Problems) {
    if spool.max_bytes < 1 << 20 {
        push(
            problems,
            "spool.max_bytes",
            "must be at least 1048576 (1 MiB)",
        );
    }
    if !(1..=10_000).contains(&spool.drain_batch) {
        push(problems, "spool.drain_batch", "must be between 1 and 10000");
    }
}

fn tiers(tiers: &TiersConfig, problems: &mut Problems) {
    if tiers.names.is_empty() {
        push(problems, "tiers.names", "must name at least one tier");
    }
    for (i, name) in tiers.names.iter().enumerate() {
        if !topic::is_word(name) {
            push(
                problems,
                format!("tiers.names[{i}]"),
                format!("tier {name:?} must be lowercase letters, digits, '-' or '_'"),
            );
        }
    }
    if !tiers.names.contains(&tiers.default) {
        push(
            problems,
            "tiers.default",
            format!(
                "default tier {:?} is not listed in tiers.names",
                tiers.default
            ),
        );
    }
    for (customer, tier) in &tiers.customers {
        if !tiers.names.contains(tier) {
            push(
                problems,
                format!("tiers.customers.\"{customer}\""),
                format!("tier {tier:?} is not listed in tiers.names"),
            );
        }
    }
}

fn queues(queues: &[QueueConfig], problems: &mut Problems) {
    let mut seen = HashSet::new();
    for (i, queue) in queues.iter().enumerate() {
        if queue.name.is_empty() || queue.name.len() > 200 {
            push(
                problems,
                format!("queues[{i}].name"),
                "must be 1 to 200 characters",
            );
        }
        if !seen.insert(queue.name.as_str()) {
            push(
                problems,
                format!("queues[{i}].name"),
                format!("queue {:?} is declared twice", queue.name),
            );
        }
        if queue.bindings.is_empty() {
            push(
                problems,
                format!("queues[{i}].bindings"),
                "must list at least one pattern",
            );
        }
        for (j, pattern) in queue.bindings.iter().enumerate() {
            if !topic::is_pattern(pattern) {
                push(
                    problems,
                    format!("queues[{i}].bindings[{j}]"),
                    format!(
                        "{pattern:?} is not a routing pattern (words, '*' or '#' separated by '.')"
                    ),
                );
            }
        }
        if !(1..=9).contains(&queue.max_priority) {
            push(
                problems,
                format!("queues[{i}].max_priority"),
                "must be between 1 and 9",
            );
        }
    }
}

fn routing(config: &Config, problems: &mut Problems) {
    let routing = &config.routing;
    let kinds: BTreeSet<&str> = crate::registry::KINDS.iter().copied().collect();
    let mut names = HashSet::new();
    for (i, rule) in routing.rules.iter().enumerate() {
        let at = |key: &str| format!("routing.rules[{i}].{key}");
        if rule.name.trim().is_empty() {
            push(problems, at("name"), "must not be empty");
        } else if !names.insert(rule.name.as_str()) {
            push(
                problems,
                at("name"),
                format!("rule {:?} is defined twice", rule.name),
            );
        }
        if !topic::is_word(&rule.skill) {
            push(
                problems,
                at("skill"),
                format!(
                    "skill {:?} must be lowercase letters, digits, '-' or '_'",
                    rule.skill
                ),
            );
        }
        if rule.priority.is_some_and(|p| p > 9) {
            push(problems, at("priority"), "must be between 0 and 9");
        }
        for (j, channel) in rule.channels.iter().enumerate() {
            if !kinds.contains(channel.as_str()) {
                push(
                    problems,
                    format!("routing.rules[{i}].channels[{j}]"),
                    format!(
                        "unknown channel {channel:?}, expected one of {}",
                        join(&kinds)
                    ),
                );
            }
        }
        for (j, tier) in rule.tiers.iter().enumerate() {
            if !config.tiers.names.contains(tier) {
                push(
                    problems,
                    format!("routing.rules[{i}].tiers[{j}]"),
                    format!("tier {tier:?} is not listed in tiers.names"),
                );
            }
        }
        if rule.keywords.iter().any(|k| k.trim().is_empty()) {
            push(problems, at("keywords"), "keywords must not be empty");
        }
        let keys: Vec<String> = match &rule.queue_key {
            Some(key) => {
                if !topic::is_key(key) {
                    push(
                        problems,
                        at("queue_key"),
                        format!("{key:?} is not a routing key"),
                    );
                }
                vec![key.clone()]
            }
            None => {
                let tiers = if rule.tiers.is_empty() {
                    &config.tiers.names
                } else {
                    &rule.tiers
                };
                tiers
                    .iter()
                    .map(|tier| format!("{}.{tier}", rule.skill))
                    .collect()
            }
        };
        let key_at = if rule.queue_key.is_some() {
            at("queue_key")
        } else {
            at("skill")
        };
        unroutable(&keys, &config.queues, &rule.name, key_at, problems);
    }
    if !topic::is_word(&routing.default.skill) {
        push(
            problems,
            "routing.default.skill",
            "must be lowercase letters, digits, '-' or '_'",
        );
    }
    if routing.default.priority > 9 {
        push(
            problems,
            "routing.default.priority",
            "must be between 0 and 9",
        );
    }
    let keys: Vec<String> = config
        .tiers
        .names
        .iter()
        .map(|tier| format!("{}.{tier}", routing.default.skill))
        .collect();
    unroutable(
        &keys,
        &config.queues,
        "default",
        "routing.default.skill".to_owned(),
        problems,
    );
}

/// Reports routing keys that no queue binding accepts: messages routed there would only
/// reach the unroutable queue.
fn unroutable(
    keys: &[String],
    queues: &[QueueConfig],
    rule: &str,
    at: String,
    problems: &mut Problems,
) {
    let missing: Vec<&str> = keys
        .iter()
        .filter(|key| {
            !queues.iter().any(|q| {
                q.bindings
                    .iter()
                    .any(|pattern| topic::matches(pattern, key))
            })
        })
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        push(
            problems,
            at,
            format!(
                "rule {rule:?} routes to {} but no queue in [[queues]] is bound to it",
                missing.join(", ")
            ),
        );
    }
}

fn outbound(outbound: &OutboundConfig, problems: &mut Problems) {
    if outbound.prefetch == 0 {
        push(problems, "outbound.prefetch", "must be greater than 0");
    }
    if !(1..=100).contains(&outbound.max_attempts) {
        push(
            problems,
            "outbound.max_attempts",
            "must be between 1 and 100",
        );
    }
    if outbound.retry_min_ms == 0 || outbound.retry_min_ms > outbound.retry_max_ms {
        push(
            problems,
            "outbound.retry_min_ms",
            "must be greater than 0 and at most outbound.retry_max_ms",
        );
    }
}

/// The key a URL came from (`url_env`, `url_file` or `url`), so problems point at it.
fn given_key(section: &str, env: &Option<String>, file: &Option<std::path::PathBuf>) -> String {
    match (env, file) {
        (Some(_), _) => format!("{section}.url_env"),
        (_, Some(_)) => format!("{section}.url_file"),
        _ => format!("{section}.url"),
    }
}

fn join(items: &BTreeSet<&str>) -> String {
    items.iter().copied().collect::<Vec<_>>().join(", ")
}

impl BrokerConfig {
    /// The AMQP URL, from `url`, `url_env` or `url_file`; the local default when none.
    pub fn resolve_url(&self) -> Result<String, switchboard_sdk::ConfigProblem> {
        Ok(
            SecretRef::new("url", &self.url, &self.url_env, &self.url_file)
                .optional()?
                .map_or_else(
                    || "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
                    |s| s.expose().to_owned(),
                ),
        )
    }
}

impl RedisConfig {
    /// The Redis URL, from `url`, `url_env` or `url_file`.
    pub fn resolve_url(&self) -> Result<String, switchboard_sdk::ConfigProblem> {
        SecretRef::new("url", &self.url, &self.url_env, &self.url_file)
            .required()
            .map(|s| s.expose().to_owned())
    }
}
