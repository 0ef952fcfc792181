//! Policy decisions on a small config: rules, tiers, the channel's choice, stickiness,
//! transfers, abuse, overflow, calendars and hooks.

use switchboard_sdk::services::MemoryKv;
use time::OffsetDateTime;
use time::macros::datetime;

use super::overflow::NoBacklog;
use super::*;

const CONFIG: &str = r##"
[tiers]
names = ["standard", "vip"]
customers = { "app:shop:u-vip" = "vip", "crm-7" = "vip" }

[[queues]]
name = "claims"
bindings = ["claims.*"]

[[queues]]
name = "tracking"
bindings = ["tracking.*"]

[[queues]]
name = "general"
bindings = ["general.*"]

[[queues]]
name = "supervisor"
bindings = ["supervisor.*"]

[[intents]]
name = "damaged"
keywords = ["damaged", "破损"]
breaks_stickiness = true

[[intents]]
name = "tracking"
keywords = ["where is", "包裹", "tracking"]

[[routing.rules]]
name = "vip-claims"
tiers = ["vip"]
keywords = ["Damaged", "破损"]
skill = "claims"
priority = 8

[[routing.rules]]
name = "damaged"
intents = ["damaged"]
skill = "claims"
priority = 6

[[routing.rules]]
name = "office-tracking"
intents = ["tracking"]
min_confidence = 0.5
open_in = "office"
skill = "tracking"
priority = 3

[[routing.rules]]
name = "night-tracking"
intents = ["tracking"]
closed_in = "office"
skill = "tracking"
queue_key = "tracking.night"
priority = 2

[[routing.rules]]
name = "crm-down"
flags = ["tier_lookup_failed"]
skill = "general"
priority = 4

[routing.default]
skill = "general"
priority = 1

[[routing.calendars]]
name = "office"
time_zone = "Asia/Shanghai"

[routing.stickiness]
ttl_secs = 600

[[routing.overflow]]
queue = "claims"
ready_above = 100
queue_key = "general.overflow"
priority_boost = 2

[routing.abuse]
extra_words = ["废物"]
skill = "supervisor"
priority = 9
excerpt_chars = 10
"##;

/// Monday 10:00 in Shanghai.
const OPEN: OffsetDateTime = datetime!(2026-11-23 02:00 UTC);
/// Monday 22:00 in Shanghai.
const CLOSED: OffsetDateTime = datetime!(2026-11-23 14:00 UTC);

fn policy_from(source: &str) -> Policy {
    Policy::from_config(&crate::config::load_str("test.toml", source).unwrap())
}

fn policy() -> Policy {
    policy_from(CONFIG)
}

fn subject<'a>(conversation: &'a str, text: &'a str) -> Subject<'a> {
    let mut s = Subject::text_only("app", conversation, text);
    s.now = OPEN;
    s
}

async fn facts(policy: &Policy, subject: &Subject<'_>, analysis: &Analysis) -> Facts {
    policy.enrich(subject, analysis, &MemoryKv::default()).await
}

async fn decide(policy: &Policy, subject: &Subject<'_>) -> Decision {
    let analysis = policy.analyze(subject.text);
    let facts = facts(policy, subject, &analysis).await;
    policy.decide(subject, &analysis, &facts, true)
}

#[tokio::test]
async fn first_matching_rule_wins_with_its_tier_in_the_key() {
    let d = decide(
        &policy(),
        &subject("app:shop:u-vip", "my parcel is DAMAGED"),
    )
    .await;
    assert_eq!(
        (d.rule.as_str(), d.queue_key.as_str(), d.priority),
        ("vip-claims", "claims.vip", 8)
    );
    assert_eq!(d.tier_source, "customers[conversation]");
    assert!(d.reason.contains("keyword \"damaged\""), "{}", d.reason);
    assert_eq!(d.intent.as_ref().map(|i| i.name.as_str()), Some("damaged"));
}

#[tokio::test]
async fn falls_through_with_every_verdict_explained() {
    let p = policy();
    let d = decide(&p, &subject("app:shop:u-1", "我的包裹破損了")).await;
    assert_eq!(
        (d.rule.as_str(), d.queue_key.as_str()),
        ("damaged", "claims.standard")
    );
    assert!(!d.tried[0].matched && d.tried[0].why.contains("tier standard not in"));
    assert!(d.tried[1].matched, "{:?}", d.tried);
    let d = decide(&p, &subject("app:shop:u-1", "hello")).await;
    assert_eq!(
        (d.rule.as_str(), d.queue_key.as_str()),
        ("default", "general.standard")
    );
    assert_eq!(d.tried.len(), 5);
    assert!(d.tried.iter().all(|t| !t.matched));
}

#[tokio::test]
async fn calendars_and_confidence_decide_between_rules() {
    let p = policy();
    let mut s = subject("app:shop:u-1", "where is my tracking");
    let d = decide(&p, &s).await;
    assert_eq!(d.rule, "office-tracking", "{:?}", d.tried);
    assert!(
        d.reason
            .contains("office open (Mon 2026-11-23 10:00 Asia/Shanghai)"),
        "{}",
        d.reason
    );
    s.now = CLOSED;
    let d = decide(&p, &s).await;
    assert_eq!(
        (d.rule.as_str(), d.queue_key.as_str()),
        ("night-tracking", "tracking.night")
    );
    assert!(d.tried[2].why.contains("office is closed"), "{:?}", d.tried);

    // One keyword of two intents each: confidence 1/(1+1+1) is below the rule's 0.5.
    s.now = OPEN;
    s.text = Some("包裹 damaged");
    let d = decide(&p, &s).await;
    assert_eq!(d.intent.as_ref().unwrap().confidence, 0.333);
    assert_eq!(
        d.rule, "damaged",
        "damaged is listed first and wins the tie"
    );
}

#[tokio::test]
async fn a_skill_chosen_in_the_channel_wins_over_rules() {
    let p = policy();
    let mut s = subject("telephony:hotline:+8613800138000", "damaged");
    s.skill_hint = Some("tracking");
    let d = decide(&p, &s).await;
    assert_eq!(
        (d.rule.as_str(), d.queue_key.as_str()),
        ("channel_choice", "tracking.standard")
    );
    s.skill_hint = Some("Not A Word");
    assert_eq!(
        decide(&p, &s).await.rule,
        "damaged",
        "an invalid hint is ignored"
    );
}

#[tokio::test]
async fn customer_id_and_override_set_the_tier() {
    let p = policy();
    let mut s = subject("app:shop:u-2", "damaged");
    s.customer_id = Some("crm-7");
    assert_eq!(decide(&p, &s).await.rule, "vip-claims");
    s.customer_id = None;
    s.tier_override = Some("vip");
    assert_eq!(decide(&p, &s).await.tier_source, "override");
}

#[tokio::test]
async fn the_classifier_wins_when_confident_and_rules_see_hook_results() {
    let p = policy();
    let s = subject("app:shop:u-1", "where is it");
    let analysis = p.analyze(s.text);
    let mut f = facts(&p, &s, &analysis).await;
    // No classifier configured: its answer is not consulted.
    f.classifier = HookResult::Ok {
        value: hooks::ClassifierAnswer {
            intent: "damaged".into(),
            confidence: 0.99,
        },
        millis: 3,
    };
    assert_eq!(p.decide(&s, &analysis, &f, false).rule, "office-tracking");

    let with_classifier = policy_from(&format!(
        "{CONFIG}\n[routing.enrichment.classifier]\nurl = \"http://127.0.0.1:9/c\"\nmin_confidence = 0.9\n"
    ));
    let d = with_classifier.decide(&s, &analysis, &f, false);
    assert_eq!(d.rule, "damaged");
    assert_eq!(d.intent.unwrap().source, "classifier");
    f.classifier = HookResult::Ok {
        value: hooks::ClassifierAnswer {
            intent: "damaged".into(),
            confidence: 0.5,
        },
        millis: 3,
    };
    assert_eq!(
        with_classifier.decide(&s, &analysis, &f, false).rule,
        "office-tracking",
        "below min_confidence the keywords stand"
    );
    f.classifier = HookResult::Timeout { millis: 250 };
    let d = with_classifier.decide(&s, &analysis, &f, false);
    assert!(
        d.flags.contains(&"classifier_failed".to_owned()),
        "{:?}",
        d.flags
    );
}

#[tokio::test]
async fn a_failed_tier_lookup_is_flagged_for_rules() {
    let p = policy();
    let s = subject("app:shop:u-1", "hello");
    let analysis = p.analyze(s.text);
    let mut f = facts(&p, &s, &analysis).await;
    f.tier.failed = true;
    let d = p.decide(&s, &analysis, &f, false);
    assert_eq!((d.rule.as_str(), d.priority), ("crm-down", 4));
    assert!(d.flags.contains(&"tier_lookup_failed".to_owned()));
}

fn sticky(skill: &str, transferred: bool) -> Sticky {
    Sticky {
        skill: skill.into(),
        queue_key: None,
        priority: Some(5),
        rule: if transferred {
            "transfer"
        } else {
            "office-tracking"
        }
        .into(),
        transferred,
    }
}

#[tokio::test]
async fn stickiness_keeps_follow_ups_unless_a_stronger_intent_appears() {
    let p = policy();
    let s = subject("app:shop:u-1", "ok, thanks");
    let analysis = p.analyze(s.text);
    let mut f = facts(&p, &s, &analysis).await;
    f.sticky = Some(sticky("tracking", false));
    let d = p.decide(&s, &analysis, &f, false);
    assert_eq!(
        (d.rule.as_str(), d.queue_key.as_str(), d.priority),
        ("sticky", "tracking.standard", 5)
    );
    assert!(d.flags.contains(&"sticky".to_owned()));
    assert_eq!(d.stick, f.sticky, "the record is refreshed");

    let s = subject("app:shop:u-1", "now it is damaged");
    let analysis = p.analyze(s.text);
    let d = p.decide(&s, &analysis, &f, false);
    assert_eq!(d.rule, "damaged", "damaged breaks stickiness");
    assert!(
        d.reason.contains("ends stickiness to tracking"),
        "{}",
        d.reason
    );
    assert_eq!(d.stick.map(|s| s.skill), Some("claims".to_owned()));

    // A transfer holds even against that intent; abuse goes to supervisors regardless.
    f.sticky = Some(sticky("general", true));
    let d = p.decide(&s, &analysis, &f, false);
    assert_eq!((d.rule.as_str(), d.skill.as_str()), ("transfer", "general"));
    assert!(d.stick.is_none(), "a transfer is not rewritten by messages");
    let s = subject("app:shop:u-1", "you 废物, it is damaged");
    let analysis = p.analyze(s.text);
    let d = p.decide(&s, &analysis, &f, false);
    assert_eq!(
        (d.rule.as_str(), d.queue_key.as_str(), d.priority),
        ("abuse", "supervisor.standard", 9)
    );
    assert!(d.flags.contains(&"abusive".to_owned()));

    // A record naming a skill no queue takes any more is ignored.
    f.sticky = Some(sticky("gone", false));
    let s = subject("app:shop:u-1", "hello");
    let analysis = p.analyze(s.text);
    assert_eq!(p.decide(&s, &analysis, &f, false).rule, "default");
}

#[tokio::test]
async fn finish_writes_and_reads_stickiness_and_transfers_through_the_store() {
    let p = policy();
    let kv = MemoryKv::default();
    let services = Services {
        kv: &kv,
        backlog: &NoBacklog,
    };
    let conversation = "app:shop:u-5";
    let route = |text: &'static str| {
        let p = &p;
        async move {
            p.route(&subject(conversation, text), services, false)
                .await
                .decision
        }
    };
    assert_eq!(route("where is my tracking").await.rule, "office-tracking");
    let d = route("hello").await;
    assert_eq!((d.rule.as_str(), d.skill.as_str()), ("sticky", "tracking"));

    p.transfer(&kv, conversation, "general", Some(7))
        .await
        .unwrap();
    let d = route("damaged").await;
    assert_eq!(
        (d.rule.as_str(), d.queue_key.as_str(), d.priority),
        ("transfer", "general.standard", 7)
    );
    assert_eq!(
        p.transfer(&kv, conversation, "nowhere", None).await,
        Err(TransferError::Unroutable("nowhere".into()))
    );
    assert_eq!(
        p.transfer(&kv, conversation, "Bad Skill", None).await,
        Err(TransferError::BadSkill("Bad Skill".into()))
    );

    p.close(&kv, conversation).await.unwrap();
    assert_eq!(
        route("hello").await.rule,
        "default",
        "close forgets everything"
    );
}

#[tokio::test]
async fn transfers_hold_with_stickiness_off() {
    let p = policy_from(&CONFIG.replace("ttl_secs = 600", "ttl_secs = 0"));
    let kv = MemoryKv::default();
    let services = Services {
        kv: &kv,
        backlog: &NoBacklog,
    };
    let s = subject("app:shop:u-6", "where is my tracking");
    p.route(&s, services, false).await;
    let s2 = subject("app:shop:u-6", "hello");
    assert_eq!(p.route(&s2, services, false).await.decision.rule, "default");
    p.transfer(&kv, "app:shop:u-6", "claims", None)
        .await
        .unwrap();
    assert_eq!(
        p.route(&s2, services, false).await.decision.rule,
        "transfer"
    );
}

#[tokio::test]
async fn overflow_moves_the_message_only_above_the_threshold() {
    let p = policy();
    let d = decide(&p, &subject("app:shop:u-1", "damaged")).await;
    let rule = p.overflow_for(&d).expect("claims is watched").clone();
    for (ready, moved) in [(None, false), (Some(100), false), (Some(101), true)] {
        let mut d = d.clone();
        Policy::apply_overflow(&mut d, &rule, ready);
        let check = d.backlog.clone().unwrap();
        assert_eq!((check.ready, check.overflowed), (ready, moved));
        if moved {
            assert_eq!((d.queue_key.as_str(), d.priority), ("general.overflow", 8));
            assert!(d.flags.contains(&"overflow".to_owned()));
            assert!(
                d.reason.contains("claims has 101 ready (above 100)"),
                "{}",
                d.reason
            );
        } else {
            assert_eq!((d.queue_key.as_str(), d.priority), ("claims.standard", 6));
        }
    }
    let general = decide(&p, &subject("app:shop:u-1", "hello")).await;
    assert!(p.overflow_for(&general).is_none(), "general is not watched");
}

#[tokio::test]
async fn abusive_messages_make_a_flag_event_with_a_short_excerpt() {
    let p = policy();
    let s = subject("app:shop:u-1", "你这个废物 where is my parcel");
    let analysis = p.analyze(s.text);
    assert_eq!(analysis.abusive_words, vec!["废物"]);
    let event = p.flag_event(&s, &analysis, "01ENVELOPE").unwrap();
    assert_eq!(event.kind, "conversation.flagged");
    assert_eq!(event.conversation_id.as_deref(), Some("app:shop:u-1"));
    assert_eq!(event.data["excerpt"], "你这个废物 wher", "10 characters");
    assert_eq!(event.data["envelope_id"], "01ENVELOPE");
    let clean = p.analyze(Some("where is my parcel"));
    assert!(p.flag_event(&s, &clean, "x").is_none());
    let default_words = p.analyze(Some("What the FUCKING hell"));
    assert_eq!(
        default_words.abusive_words,
        vec!["fuck"],
        "built-in list, prefix word"
    );
}

#[tokio::test]
async fn content_without_text_routes_by_default() {
    let p = policy();
    let mut s = subject("app:shop:u-1", "");
    s.text = None;
    let d = decide(&p, &s).await;
    assert_eq!(d.rule, "default");
    assert!(d.intent.is_none());
}
