//! CPU cost of routing one message: normalization, classification (one automaton over
//! 10,000 keywords, regexes, entities) and the decision over 500 rules, without I/O (tiers
//! from the static table, no hooks, no store).
//!
//! Run with `cargo bench --bench routing`. `ROUTING_BENCH_SECS` (default 2) sets the time
//! spent per measurement. Prints a table on stdout and one `RESULT key=value ...` line.

use std::hint::black_box;
use std::time::{Duration, Instant};

use switchboard::config::Config;
use switchboard::pipeline::routing::hooks::HookResult;
use switchboard::pipeline::routing::normalize::normalize;
use switchboard::pipeline::routing::tiers::TierLookup;
use switchboard::pipeline::routing::{Facts, Policy, Subject};
use time::macros::datetime;

const KEYWORDS: usize = 10_000;
const INTENTS: usize = 200;
const RULES: usize = 500;

/// Messages as customers write them; the mix of scripts decides which normalization steps
/// run.
const MESSAGES: &[&str] = &[
    "我的顺丰SF1234567890123三天了还没到",
    "點解我嘅包裹仲未收到？已經等咗一個星期",
    "Where is my parcel? Tracking 1Z5R89390357567127",
    "快递送到了但是箱子破损了，里面的杯子碎了，要求理赔",
    "I want a refund for order ORD-88123456, I was charged twice US$12.50",
    "你好",
    "ＳＦ１２３４５６７８９０１２３　還沒到，電話 13800138000",
    "Can you redeliver tomorrow? I'm not at home today",
];

/// Deterministic pseudo-random numbers (xorshift), so every run builds the same config.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A word of 2-4 common CJK ideographs, or of 5-9 Latin letters.
    fn word(&mut self) -> String {
        if self.next().is_multiple_of(2) {
            let len = 2 + self.next() % 3;
            (0..len)
                .map(|_| char::from_u32(0x4E00 + (self.next() % 0x5000) as u32).unwrap_or('字'))
                .collect()
        } else {
            let len = 5 + self.next() % 5;
            (0..len)
                .map(|_| (b'a' + (self.next() % 26) as u8) as char)
                .collect()
        }
    }
}

/// The example config's logistics pack plus synthetic intents up to 10,000 keywords, and
/// 500 rules of which the real ones come last, so a message is checked against nearly all.
fn config() -> (String, usize) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml");
    let example = std::fs::read_to_string(path).unwrap_or_default();
    let real_keywords: usize = switchboard::config::load_str(path, &example)
        .map(|c| c.intents.iter().map(|i| i.keywords.len()).sum())
        .unwrap_or(0);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut extra = String::new();
    let per_intent = (KEYWORDS - real_keywords.min(KEYWORDS)).div_ceil(INTENTS);
    let mut total = real_keywords;
    for i in 0..INTENTS {
        let words: Vec<String> = (0..per_intent)
            .map(|_| format!("{:?}", rng.word()))
            .collect();
        total += words.len();
        extra += &format!(
            "\n[[intents]]\nname = \"synthetic_{i}\"\nkeywords = [{}]\n",
            words.join(", ")
        );
    }
    let mut rules = String::new();
    for i in 0..RULES - 9 {
        rules += &format!(
            "\n[[routing.rules]]\nname = \"synthetic-{i}\"\nchannels = [\"{}\"]\nintents = [\"synthetic_{}\"]\ntiers = [\"{}\"]\nskill = \"general\"\npriority = {}\n",
            if i % 3 == 0 { "wechat" } else { "app" },
            i % INTENTS,
            if i % 2 == 0 { "standard" } else { "vip" },
            i % 10
        );
    }
    // The synthetic rules go before the example's, which then decide.
    let first_rule = example.find("[[routing.rules]]").unwrap_or(example.len());
    let source = format!(
        "{}{rules}\n{}{extra}",
        &example[..first_rule],
        &example[first_rule..]
    );
    (source, total)
}

fn facts(tier: &str) -> Facts {
    Facts {
        tier: TierLookup {
            tier: tier.to_owned(),
            source: "default".to_owned(),
            customer_id: None,
            failed: false,
            outcome: "default",
        },
        shipment: HookResult::Skipped,
        classifier: HookResult::Skipped,
        sticky: None,
    }
}

/// Nanoseconds per call of `f` over the message set, best of 5 rounds.
fn measure(budget: Duration, mut f: impl FnMut(&str)) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        let mut calls = 0u64;
        while started.elapsed() < budget / 5 {
            for message in MESSAGES {
                f(message);
            }
            calls += MESSAGES.len() as u64;
        }
        best = best.min(started.elapsed().as_nanos() as f64 / calls as f64);
    }
    best
}

fn main() {
    let secs: u64 = std::env::var("ROUTING_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let budget = Duration::from_secs(secs);
    let (source, keywords) = config();
    let built = Instant::now();
    let config: Config = match switchboard::config::load_str("bench.toml", &source) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("the generated config does not load:\n{err}");
            std::process::exit(2);
        }
    };
    let loaded = built.elapsed();
    let built = Instant::now();
    let policy = Policy::from_config(&config);
    let compiled = built.elapsed();
    let facts = facts("standard");
    let now = datetime!(2026-11-23 02:00 UTC);

    // Warm up: the Traditional to Simplified tables load on first use.
    let _ = normalize(MESSAGES[1], true);

    let normalize_ns = measure(budget, |m| {
        black_box(normalize(black_box(m), true));
    });
    let analyze_ns = measure(budget, |m| {
        black_box(policy.analyze(black_box(Some(m))));
    });
    let (lexicon, intents, extractor) = policy.parts();
    let folded: Vec<_> = MESSAGES.iter().map(|m| normalize(m, true)).collect();
    let mut index = 0;
    let find_ns = measure(budget, |_| {
        let n = &folded[index % MESSAGES.len()];
        index += 1;
        black_box(lexicon.find(black_box(&n.folded)));
    });
    let mut index = 0;
    let score_ns = measure(budget, |_| {
        let n = &folded[index % MESSAGES.len()];
        index += 1;
        let hits = lexicon.find(&n.folded);
        black_box(intents.score(lexicon, &hits, &n.folded));
    });
    let mut index = 0;
    let entities_ns = measure(budget, |_| {
        let n = &folded[index % MESSAGES.len()];
        index += 1;
        black_box(extractor.extract(black_box(&n.compat), &|_| false));
    });
    let analyses: Vec<_> = MESSAGES.iter().map(|m| policy.analyze(Some(m))).collect();
    let mut index = 0;
    let decide_ns = measure(budget, |m| {
        let mut subject = Subject::text_only("wechat", "wechat:cs-main:o-1", m);
        subject.now = now;
        let analysis = &analyses[index % MESSAGES.len()];
        index += 1;
        black_box(policy.decide(&subject, analysis, &facts, false));
    });
    let route_ns = measure(budget, |m| {
        let mut subject = Subject::text_only("wechat", "wechat:cs-main:o-1", m);
        subject.now = now;
        let analysis = policy.analyze(subject.text);
        black_box(policy.decide(&subject, &analysis, &facts, false));
    });

    println!(
        "routing benchmark: {keywords} keywords ({} distinct after normalization), {} intents, {} rules",
        policy.keyword_count(),
        config.intents.len(),
        config.routing.rules.len()
    );
    println!(
        "config load + validate   {:>10.1} ms",
        loaded.as_secs_f64() * 1e3
    );
    println!(
        "policy compile           {:>10.1} ms",
        compiled.as_secs_f64() * 1e3
    );
    println!("normalize                {normalize_ns:>10.0} ns/message");
    println!("  keyword automaton      {find_ns:>10.0} ns/message");
    println!("  + intent scoring       {score_ns:>10.0} ns/message");
    println!("  entities               {entities_ns:>10.0} ns/message");
    println!("analyze (incl. normalize){analyze_ns:>10.0} ns/message");
    println!("decide                   {decide_ns:>10.0} ns/message");
    println!("normalize+classify+route {route_ns:>10.0} ns/message");
    for message in MESSAGES {
        let mut subject = Subject::text_only("wechat", "wechat:cs-main:o-1", message);
        subject.now = now;
        let analysis = policy.analyze(subject.text);
        let decision = policy.decide(&subject, &analysis, &facts, false);
        println!(
            "  {:<28} -> {} ({})",
            decision.queue_key, message, decision.rule
        );
    }
    println!(
        "RESULT keywords={keywords} rules={} normalize_ns={normalize_ns:.0} find_ns={find_ns:.0} score_ns={score_ns:.0} entities_ns={entities_ns:.0} analyze_ns={analyze_ns:.0} decide_ns={decide_ns:.0} route_ns={route_ns:.0} compile_ms={:.1}",
        config.routing.rules.len(),
        compiled.as_secs_f64() * 1e3
    );
}
