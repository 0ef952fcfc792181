//! The second phase of loading: checks that types cannot express (references between
//! sections, ranges, patterns, resolvable secrets), collecting every problem with its key.

use std::collections::{BTreeSet, HashSet};

use switchboard_sdk::SecretRef;

use super::model::*;
use crate::broker::topic;
use crate::broker::{EnvelopeSigner, SigningKey};

/// `(key path, message)` pairs.
pub type Problems = Vec<(String, String)>;

/// Every problem in `config`, in no particular order.
pub fn validate(config: &Config) -> Problems {
    let mut problems = Problems::new();
    daemon(&config.daemon, &mut problems);
    admin(&config.server, &mut problems);
    broker(&config.broker, &mut problems);
    if let Some(tls) = &config.server.tls {
        server_tls(tls, &mut problems);
    }
    if let Some(redis) = &config.redis {
        redis_section(redis, &mut problems);
    }
    spool(&config.spool, &mut problems);
    tiers(config, &mut problems);
    queues(&config.queues, &mut problems);
    intents(config, &mut problems);
    routing(config, &mut problems);
    routing_extras(config, &mut problems);
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

/// The admin API shows messages and replays them: off loopback it must not be open.
fn admin(server: &ServerConfig, problems: &mut Problems) {
    match server.resolve_admin_token() {
        Ok(Some(token)) if token.expose().len() < 16 => push(
            problems,
            given_secret_key("server.admin_token", server),
            "must be at least 16 characters",
        ),
        Ok(Some(_)) => {}
        Ok(None) if !server.admin_listen.ip().is_loopback() => push(
            problems,
            "server.admin_listen",
            "is not a loopback address: set server.admin_token (or admin_token_env / admin_token_file) so the admin API is not open",
        ),
        Ok(None) => {}
        Err(problem) => push(problems, format!("server.{}", problem.key), problem.message),
    }
}

fn given_secret_key(key: &str, server: &ServerConfig) -> String {
    match (&server.admin_token_env, &server.admin_token_file) {
        (Some(_), _) => format!("{key}_env"),
        (_, Some(_)) => format!("{key}_file"),
        _ => key.to_owned(),
    }
}

fn server_tls(tls: &TlsConfig, problems: &mut Problems) {
    if let Err(err) = crate::server::tls::Certificates::load(&tls.cert_file, &tls.key_file) {
        push(problems, "server.tls", err.to_string());
    }
}

/// The TLS files must be usable now, come as a pair for mutual TLS, and only be given for an
/// `amqps://` URL: on plain AMQP they would suggest an encryption that is not there.
fn broker_tls(broker: &BrokerConfig, amqps: bool, problems: &mut Problems) {
    let files = [
        ("broker.tls_ca_file", &broker.tls_ca_file),
        ("broker.tls_cert_file", &broker.tls_cert_file),
        ("broker.tls_key_file", &broker.tls_key_file),
    ];
    if !amqps {
        if let Some((key, _)) = files.iter().find(|(_, file)| file.is_some()) {
            let url_key = given_key("broker", &broker.url_env, &broker.url_file);
            push(
                problems,
                *key,
                format!("applies only to amqps:// URLs, and {url_key} is not one"),
            );
        }
        return;
    }
    match (&broker.tls_cert_file, &broker.tls_key_file) {
        (Some(_), None) => push(
            problems,
            "broker.tls_cert_file",
            "needs broker.tls_key_file as well",
        ),
        (None, Some(_)) => push(
            problems,
            "broker.tls_key_file",
            "needs broker.tls_cert_file as well",
        ),
        _ => {}
    }
    if let Some(path) = &broker.tls_ca_file
        && let Err(err) = crate::broker::tls::ca_bundle(path)
    {
        push(problems, "broker.tls_ca_file", err.to_string());
    }
    if let (Some(cert), Some(key)) = (&broker.tls_cert_file, &broker.tls_key_file)
        && let Err(err) = crate::broker::tls::client_identity(cert, key)
    {
        let at = match err.path() {
            path if path == key.as_path() => "broker.tls_key_file",
            _ => "broker.tls_cert_file",
        };
        push(problems, at, err.to_string());
    }
}

fn broker(broker: &BrokerConfig, problems: &mut Problems) {
    if let Some(signing) = &broker.signing {
        signing_keys(signing, problems);
    }
    match broker.resolve_url() {
        Ok(url) => {
            if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
                let key = given_key("broker", &broker.url_env, &broker.url_file);
                push(problems, key, "must start with amqp:// or amqps://");
            }
            broker_tls(broker, url.starts_with("amqps://"), problems);
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
    if let Some(url) = &broker.management_url {
        let usable = reqwest::Url::parse(url.expose())
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
        if !usable {
            push(
                problems,
                "broker.management_url",
                "must be an http:// or https:// URL",
            );
        }
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

fn tiers(config: &Config, problems: &mut Problems) {
    let tiers = &config.tiers;
    tier_source(config, problems);
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

fn tier_source(config: &Config, problems: &mut Problems) {
    let tiers = &config.tiers;
    match tiers.source {
        TierSourceKind::Static => {}
        TierSourceKind::Redis => {
            if config.redis.is_none() {
                push(
                    problems,
                    "tiers.source",
                    "source \"redis\" needs a [redis] section",
                );
            }
            if !tiers.redis.key.contains("{id}") {
                push(problems, "tiers.redis.key", "must contain {id}");
            }
        }
        TierSourceKind::Http => {
            if tiers.http.is_none() {
                push(
                    problems,
                    "tiers.source",
                    "source \"http\" needs a [tiers.http] table with url",
                );
            }
        }
    }
    let Some(http) = &tiers.http else { return };
    http_url(
        &http.url,
        "tiers.http.url",
        &crate::pipeline::routing::tiers::TIER_PLACEHOLDERS,
        problems,
    );
    if !(10..=10_000).contains(&http.timeout_ms) {
        push(
            problems,
            "tiers.http.timeout_ms",
            "must be between 10 and 10000",
        );
    }
    if http.cache_ttl_secs > 0 && http.cache_entries == 0 {
        push(
            problems,
            "tiers.http.cache_entries",
            "must be greater than 0 while the cache is on",
        );
    }
    if http.failure_threshold == 0 {
        push(
            problems,
            "tiers.http.failure_threshold",
            "must be greater than 0",
        );
    }
    if !(1..=3600).contains(&http.open_secs) {
        push(
            problems,
            "tiers.http.open_secs",
            "must be between 1 and 3600",
        );
    }
    for (key, field) in [
        ("tier_field", &http.tier_field),
        ("customer_id_field", &http.customer_id_field),
    ] {
        if field.is_empty() {
            push(problems, format!("tiers.http.{key}"), "must not be empty");
        }
    }
    if let Err(problem) =
        SecretRef::new("token", &http.token, &http.token_env, &http.token_file).optional()
    {
        push(
            problems,
            format!("tiers.http.{}", problem.key),
            problem.message,
        );
    }
}

/// An http(s) URL template whose placeholders are all in `allowed`.
fn http_url(url: &str, at: &str, allowed: &[&str], problems: &mut Problems) {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        push(problems, at, "must start with http:// or https://");
    }
    for name in crate::pipeline::routing::tiers::placeholders(url) {
        if !allowed.contains(&name) {
            push(
                problems,
                at,
                format!(
                    "unknown placeholder {{{name}}}, expected one of {}",
                    allowed
                        .iter()
                        .map(|a| format!("{{{a}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
    }
}

fn finite_positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

fn intents(config: &Config, problems: &mut Problems) {
    let to_simplified = config.routing.normalize.traditional_to_simplified;
    let mut names = HashSet::new();
    for (i, intent) in config.intents.iter().enumerate() {
        let at = |key: &str| format!("intents[{i}].{key}");
        if !topic::is_word(&intent.name) {
            push(
                problems,
                at("name"),
                format!(
                    "intent {:?} must be lowercase letters, digits, '-' or '_'",
                    intent.name
                ),
            );
        } else if !names.insert(intent.name.as_str()) {
            push(
                problems,
                at("name"),
                format!("intent {:?} is defined twice", intent.name),
            );
        }
        if intent.keywords.is_empty() && intent.regexes.is_empty() {
            push(problems, at("name"), "an intent needs keywords or regexes");
        }
        for (list, words) in [
            ("keywords", &intent.keywords),
            ("negative_keywords", &intent.negative_keywords),
        ] {
            for (j, word) in words.iter().enumerate() {
                let normalized = crate::pipeline::routing::normalize::keyword(word, to_simplified);
                if normalized.trim_end_matches('*').trim().is_empty() {
                    push(
                        problems,
                        format!("intents[{i}].{list}[{j}]"),
                        "keywords must not be empty",
                    );
                }
            }
        }
        for (j, pattern) in intent.regexes.iter().enumerate() {
            if let Err(err) = crate::pipeline::routing::intents::compile(pattern) {
                push(
                    problems,
                    format!("intents[{i}].regexes[{j}]"),
                    format!("regex does not compile: {}", first_line(&err)),
                );
            }
        }
        for (key, value) in [
            ("weight", intent.weight),
            ("regex_weight", intent.regex_weight),
        ] {
            if !finite_positive(value) {
                push(problems, at(key), "must be a number greater than 0");
            }
        }
        if !(intent.min_score.is_finite() && intent.min_score >= 0.0) {
            push(problems, at("min_score"), "must be a number of at least 0");
        }
    }
}

/// The regex crate's messages span several lines with a caret drawing; the last line says
/// what is wrong.
fn first_line(message: &str) -> String {
    message
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(message)
        .trim()
        .trim_start_matches("error: ")
        .to_owned()
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
        rule_conditions(config, i, rule, problems);
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
        unroutable(
            &keys,
            &config.queues,
            &format!("rule {:?}", rule.name),
            key_at,
            problems,
        );
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
        "rule \"default\"",
        "routing.default.skill".to_owned(),
        problems,
    );
}

fn rule_conditions(config: &Config, i: usize, rule: &RuleConfig, problems: &mut Problems) {
    let at = |key: &str| format!("routing.rules[{i}].{key}");
    for (j, connector) in rule.connectors.iter().enumerate() {
        if connector.trim().is_empty() {
            push(
                problems,
                format!("routing.rules[{i}].connectors[{j}]"),
                "must not be empty",
            );
        }
    }
    for (j, intent) in rule.intents.iter().enumerate() {
        let known = config.intents.iter().any(|x| &x.name == intent);
        if !known && config.routing.enrichment.classifier.is_none() {
            push(
                problems,
                format!("routing.rules[{i}].intents[{j}]"),
                format!("intent {intent:?} is not defined in [[intents]]"),
            );
        } else if !known && !topic::is_word(intent) {
            push(
                problems,
                format!("routing.rules[{i}].intents[{j}]"),
                format!("intent {intent:?} must be lowercase letters, digits, '-' or '_'"),
            );
        }
    }
    if let Some(min) = rule.min_confidence {
        if !(0.0..=1.0).contains(&min) {
            push(problems, at("min_confidence"), "must be between 0 and 1");
        } else if rule.intents.is_empty() {
            push(
                problems,
                at("min_confidence"),
                "applies to the rule's intents; list them in intents",
            );
        }
    }
    let kinds = crate::pipeline::routing::entities::KINDS;
    for (j, kind) in rule.entities.iter().enumerate() {
        if !kinds.contains(&kind.as_str()) {
            push(
                problems,
                format!("routing.rules[{i}].entities[{j}]"),
                format!(
                    "unknown entity kind {kind:?}, expected one of {}",
                    kinds.join(", ")
                ),
            );
        }
    }
    if !rule.shipment_status.is_empty() && config.routing.enrichment.shipment.is_none() {
        push(
            problems,
            at("shipment_status"),
            "needs [routing.enrichment.shipment] to learn the status",
        );
    }
    for (j, status) in rule.shipment_status.iter().enumerate() {
        if crate::pipeline::routing::hooks::status_word(status) != *status {
            push(
                problems,
                format!("routing.rules[{i}].shipment_status[{j}]"),
                format!(
                    "status {status:?} must be lowercase letters, digits and '_' (statuses are compared that way)"
                ),
            );
        }
    }
    let flags = crate::pipeline::routing::RULE_FLAGS;
    for (j, flag) in rule.flags.iter().enumerate() {
        if !flags.contains(&flag.as_str()) {
            push(
                problems,
                format!("routing.rules[{i}].flags[{j}]"),
                format!(
                    "unknown flag {flag:?}, expected one of {}",
                    flags.join(", ")
                ),
            );
        }
    }
    for (key, name) in [("open_in", &rule.open_in), ("closed_in", &rule.closed_in)] {
        if let Some(name) = name
            && !config.routing.calendars.iter().any(|c| &c.name == name)
        {
            push(
                problems,
                at(key),
                format!("calendar {name:?} is not defined in [[routing.calendars]]"),
            );
        }
    }
}

fn routing_extras(config: &Config, problems: &mut Problems) {
    let routing = &config.routing;
    let mut names = HashSet::new();
    for (i, calendar) in routing.calendars.iter().enumerate() {
        let at = |key: &str| format!("routing.calendars[{i}].{key}");
        use crate::pipeline::routing::calendar as cal;
        if calendar.name.trim().is_empty() {
            push(problems, at("name"), "must not be empty");
        } else if !names.insert(calendar.name.as_str()) {
            push(
                problems,
                at("name"),
                format!("calendar {:?} is defined twice", calendar.name),
            );
        }
        if cal::zone(&calendar.time_zone).is_none() {
            push(
                problems,
                at("time_zone"),
                format!(
                    "unknown time zone {:?} (IANA names like \"Asia/Shanghai\")",
                    calendar.time_zone
                ),
            );
        }
        if calendar.days.is_empty() && calendar.workdays.is_empty() {
            push(problems, at("days"), "must name at least one day");
        }
        for (j, day) in calendar.days.iter().enumerate() {
            if cal::weekday(day).is_none() {
                push(
                    problems,
                    format!("routing.calendars[{i}].days[{j}]"),
                    format!("{day:?} is not one of mon, tue, wed, thu, fri, sat, sun"),
                );
            }
        }
        let open = cal::time_of_day(&calendar.open);
        let close = cal::time_of_day(&calendar.close);
        if open.is_none() {
            push(problems, at("open"), "must be a time HH:MM");
        }
        if close.is_none() {
            push(problems, at("close"), "must be a time HH:MM");
        }
        if let (Some(open), Some(close)) = (open, close)
            && open >= close
        {
            push(problems, at("close"), "must be later than open");
        }
        for (list, dates) in [
            ("holidays", &calendar.holidays),
            ("workdays", &calendar.workdays),
        ] {
            for (j, date) in dates.iter().enumerate() {
                if cal::date(date).is_none() {
                    push(
                        problems,
                        format!("routing.calendars[{i}].{list}[{j}]"),
                        format!("{date:?} is not a date YYYY-MM-DD"),
                    );
                }
            }
        }
    }

    if routing.stickiness.ttl_secs > 7 * 86_400 {
        push(
            problems,
            "routing.stickiness.ttl_secs",
            "must be at most 604800 (7 days)",
        );
    }
    if !(60..=30 * 86_400).contains(&routing.stickiness.transfer_ttl_secs) {
        push(
            problems,
            "routing.stickiness.transfer_ttl_secs",
            "must be between 60 and 2592000 (30 days)",
        );
    }

    for (i, overflow) in routing.overflow.iter().enumerate() {
        let at = |key: &str| format!("routing.overflow[{i}].{key}");
        if !config.queues.iter().any(|q| q.name == overflow.queue) {
            push(
                problems,
                at("queue"),
                format!("queue {:?} is not declared in [[queues]]", overflow.queue),
            );
        }
        if overflow.ready_above == 0 {
            push(problems, at("ready_above"), "must be greater than 0");
        }
        if !topic::is_key(&overflow.queue_key) {
            push(
                problems,
                at("queue_key"),
                format!("{:?} is not a routing key", overflow.queue_key),
            );
        } else {
            unroutable(
                std::slice::from_ref(&overflow.queue_key),
                &config.queues,
                &format!("the overflow of {}", overflow.queue),
                at("queue_key"),
                problems,
            );
        }
        if overflow.priority_boost > 9 {
            push(problems, at("priority_boost"), "must be between 0 and 9");
        }
        if !(100..=60_000).contains(&overflow.check_every_ms) {
            push(
                problems,
                at("check_every_ms"),
                "must be between 100 and 60000",
            );
        }
    }

    let abuse = &routing.abuse;
    let to_simplified = routing.normalize.traditional_to_simplified;
    for (list, words) in [
        ("words", abuse.words.as_deref().unwrap_or(&[])),
        ("extra_words", abuse.extra_words.as_slice()),
    ] {
        for (j, word) in words.iter().enumerate() {
            if crate::pipeline::routing::normalize::keyword(word, to_simplified)
                .trim_end_matches('*')
                .trim()
                .is_empty()
            {
                push(
                    problems,
                    format!("routing.abuse.{list}[{j}]"),
                    "words must not be empty",
                );
            }
        }
    }
    if abuse.priority.is_some_and(|p| p > 9) {
        push(
            problems,
            "routing.abuse.priority",
            "must be between 0 and 9",
        );
    }
    if abuse.excerpt_chars > 10_000 {
        push(
            problems,
            "routing.abuse.excerpt_chars",
            "must be at most 10000",
        );
    }
    if let Some(skill) = &abuse.skill {
        if !topic::is_word(skill) {
            push(
                problems,
                "routing.abuse.skill",
                "must be lowercase letters, digits, '-' or '_'",
            );
        } else {
            let keys: Vec<String> = config
                .tiers
                .names
                .iter()
                .map(|tier| format!("{skill}.{tier}"))
                .collect();
            unroutable(
                &keys,
                &config.queues,
                "the abuse skill",
                "routing.abuse.skill".to_owned(),
                problems,
            );
        }
    }

    let enrichment = &routing.enrichment;
    if !(1..=10_000).contains(&enrichment.budget_ms) {
        push(
            problems,
            "routing.enrichment.budget_ms",
            "must be between 1 and 10000",
        );
    }
    if let Some(shipment) = &enrichment.shipment {
        http_url(
            &shipment.url,
            "routing.enrichment.shipment.url",
            &["tracking_number", "carrier"],
            problems,
        );
        if !(1..=10_000).contains(&shipment.timeout_ms) {
            push(
                problems,
                "routing.enrichment.shipment.timeout_ms",
                "must be between 1 and 10000",
            );
        }
        if shipment.status_field.is_empty() {
            push(
                problems,
                "routing.enrichment.shipment.status_field",
                "must not be empty",
            );
        }
    }
    if let Some(classifier) = &enrichment.classifier {
        http_url(
            &classifier.url,
            "routing.enrichment.classifier.url",
            &[],
            problems,
        );
        if !(1..=10_000).contains(&classifier.timeout_ms) {
            push(
                problems,
                "routing.enrichment.classifier.timeout_ms",
                "must be between 1 and 10000",
            );
        }
        if !(0.0..=1.0).contains(&classifier.min_confidence) {
            push(
                problems,
                "routing.enrichment.classifier.min_confidence",
                "must be between 0 and 1",
            );
        }
    }

    let entities = &routing.entities;
    for (j, pattern) in entities.order_numbers.iter().enumerate() {
        if let Err(err) = crate::pipeline::routing::entities::compile_order_pattern(pattern) {
            push(
                problems,
                format!("routing.entities.order_numbers[{j}]"),
                format!("regex does not compile: {}", first_line(&err)),
            );
        }
    }
    if let Some(carriers) = &entities.carriers {
        let known: Vec<&str> = crate::pipeline::routing::carriers::CARRIERS
            .iter()
            .map(|c| c.id)
            .chain(["postal"])
            .collect();
        for (j, carrier) in carriers.iter().enumerate() {
            if !known.contains(&carrier.as_str()) {
                push(
                    problems,
                    format!("routing.entities.carriers[{j}]"),
                    format!(
                        "unknown carrier {carrier:?}, expected one of {}",
                        known.join(", ")
                    ),
                );
            }
        }
    }
}

/// Reports routing keys that no queue binding accepts: messages routed there would only
/// reach the unroutable queue.
fn unroutable(
    keys: &[String],
    queues: &[QueueConfig],
    who: &str,
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
                "{who} routes to {} but no queue in [[queues]] is bound to it",
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

/// Shortest envelope signing key, bytes: HMAC-SHA256's own output size.
pub const MIN_ENVELOPE_KEY_BYTES: usize = 32;

fn signing_keys(signing: &SigningConfig, problems: &mut Problems) {
    let mut ids = BTreeSet::new();
    let keys = std::iter::once((
        "broker.signing".to_owned(),
        &signing.key_id,
        SecretRef::new("key", &signing.key, &signing.key_env, &signing.key_file),
    ))
    .chain(signing.previous.iter().enumerate().map(|(i, p)| {
        (
            format!("broker.signing.previous[{i}]"),
            &p.key_id,
            SecretRef::new("key", &p.key, &p.key_env, &p.key_file),
        )
    }));
    for (section, id, key) in keys {
        // Ids are listed as `id=signature,...` in one header.
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        {
            push(
                problems,
                format!("{section}.key_id"),
                "must be letters, digits, '-', '_', '.' or ':'",
            );
        } else if !ids.insert(id.as_str()) {
            push(problems, format!("{section}.key_id"), "used by another key");
        }
        match key.required() {
            Ok(secret) if secret.expose().len() < MIN_ENVELOPE_KEY_BYTES => push(
                problems,
                format!("{section}.key"),
                format!("must be at least {MIN_ENVELOPE_KEY_BYTES} bytes"),
            ),
            Ok(_) => {}
            Err(problem) => push(
                problems,
                format!("{section}.{}", problem.key),
                problem.message,
            ),
        }
    }
}

impl SigningConfig {
    /// The signer these keys make.
    pub fn signer(&self) -> Result<EnvelopeSigner, switchboard_sdk::ConfigProblem> {
        let current = SigningKey {
            id: self.key_id.clone(),
            key: SecretRef::new("key", &self.key, &self.key_env, &self.key_file).required()?,
        };
        let previous = self
            .previous
            .iter()
            .map(|p| {
                Ok(SigningKey {
                    id: p.key_id.clone(),
                    key: SecretRef::new("key", &p.key, &p.key_env, &p.key_file).required()?,
                })
            })
            .collect::<Result<_, switchboard_sdk::ConfigProblem>>()?;
        Ok(EnvelopeSigner::new(current, previous))
    }
}

impl BrokerConfig {
    /// The envelope signer, when `[broker.signing]` is configured.
    pub fn signer(&self) -> Result<Option<EnvelopeSigner>, switchboard_sdk::ConfigProblem> {
        self.signing.as_ref().map(SigningConfig::signer).transpose()
    }

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

impl ServerConfig {
    /// The admin token, from `admin_token`, `admin_token_env` or `admin_token_file`.
    pub fn resolve_admin_token(
        &self,
    ) -> Result<Option<switchboard_sdk::Secret>, switchboard_sdk::ConfigProblem> {
        SecretRef::new(
            "admin_token",
            &self.admin_token,
            &self.admin_token_env,
            &self.admin_token_file,
        )
        .optional()
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
