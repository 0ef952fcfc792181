//! The human-readable routing explanation: what the text says, which rules were tried and
//! why the decision is what it is.

use super::Routed;
use super::entities::mask_phone;
use super::hooks::HookResult;

fn hook_line<T>(name: &str, result: &HookResult<T>, show: impl Fn(&T) -> String) -> String {
    match result {
        HookResult::Skipped => format!("{name} not asked"),
        HookResult::Ok { value, millis } => format!("{name} {} ({millis} ms)", show(value)),
        HookResult::Timeout { millis } => format!("{name} timed out after {millis} ms"),
        HookResult::Failed { error } => format!("{name} failed: {error}"),
    }
}

/// The routing explanation `switchboard route` prints and the console's live tail shows.
pub fn explain(text: &str, routed: &Routed) -> String {
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
