//! The shipped logistics pack (`config.example.toml`) on real-sounding messages in
//! Simplified Chinese, Traditional Chinese (Hong Kong and Taiwan wording) and English: each
//! row names the intent, the entities and the routing key it must get. Then carrier
//! tracking-number tables: real-format samples per carrier, and look-alikes that must not
//! be taken for tracking numbers.

use std::path::Path;

use switchboard::config::{Config, EntitiesConfig};
use switchboard::pipeline::routing::entities::Extractor;
use switchboard::pipeline::routing::overflow::NoBacklog;
use switchboard::pipeline::routing::{Policy, Routed, Services, Subject};
use switchboard_sdk::services::MemoryKv;
use time::OffsetDateTime;
use time::macros::datetime;

/// Monday 10:00 in Shanghai: the example's office calendar is open.
const OFFICE_HOURS: OffsetDateTime = datetime!(2026-11-23 02:00 UTC);

fn example() -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    switchboard::config::load(&path)
        .unwrap_or_else(|err| panic!("config.example.toml does not load:\n{err}"))
        .config
}

struct Case {
    text: &'static str,
    tier: &'static str,
    intent: Option<&'static str>,
    /// `kind=value` or `kind=value@carrier`.
    entities: &'static [&'static str],
    queue_key: &'static str,
}

const fn case(
    text: &'static str,
    intent: Option<&'static str>,
    entities: &'static [&'static str],
    queue_key: &'static str,
) -> Case {
    Case {
        text,
        tier: "standard",
        intent,
        entities,
        queue_key,
    }
}

const fn vip(
    text: &'static str,
    intent: Option<&'static str>,
    entities: &'static [&'static str],
    queue_key: &'static str,
) -> Case {
    Case {
        text,
        tier: "vip",
        intent,
        entities,
        queue_key,
    }
}

const TRACK: Option<&str> = Some("where_is_my_parcel");
const DELAYED: Option<&str> = Some("delivery_delayed");
const DAMAGED: Option<&str> = Some("parcel_damaged");
const LOST: Option<&str> = Some("parcel_lost");
const WRONG: Option<&str> = Some("wrong_or_missing_item");
const ADDRESS: Option<&str> = Some("change_address");
const RESCHEDULE: Option<&str> = Some("reschedule_delivery");
const PICKUP: Option<&str> = Some("pickup_code");
const REFUND: Option<&str> = Some("return_or_refund");
const PAYMENT: Option<&str> = Some("payment_or_cod");
const INVOICE: Option<&str> = Some("invoice");
const COMPLAINT: Option<&str> = Some("complaint");
const HUMAN: Option<&str> = Some("ask_for_human");
const GREETING: Option<&str> = Some("greeting");
const CLAIM: Option<&str> = Some("claim");

const CASES: &[Case] = &[
    // Simplified Chinese.
    vip(
        "我的顺丰SF1234567890123三天了还没到",
        DELAYED,
        &["tracking_number=SF1234567890123@sf_express"],
        "tracking.vip",
    ),
    case("我的包裹到哪了？", TRACK, &[], "tracking.standard"),
    case(
        "帮我查一下快递 YT7512345678901",
        TRACK,
        &["tracking_number=YT7512345678901@yto"],
        "tracking.standard",
    ),
    case(
        "中通单号78912345678901，物流一直没更新",
        DELAYED,
        &["tracking_number=78912345678901@zto"],
        "tracking.standard",
    ),
    case(
        "快递送到了但是箱子破损了，里面的杯子碎了",
        DAMAGED,
        &[],
        "claims.standard",
    ),
    case(
        "包裹丢了，显示签收了但我根本没收到",
        LOST,
        &[],
        "claims.standard",
    ),
    case(
        "你们发错货了，我买的是蓝色的",
        WRONG,
        &[],
        "claims.standard",
    ),
    case("我想改一下收货地址", ADDRESS, &[], "tracking.standard"),
    case(
        "明天不在家，能不能改天送",
        RESCHEDULE,
        &[],
        "tracking.standard",
    ),
    case("丰巢快递柜取件码收不到", PICKUP, &[], "tracking.standard"),
    case(
        "我要退货退款，订单号 SO20261122000123",
        REFUND,
        &["order_number=SO20261122000123"],
        "billing.standard",
    ),
    case(
        "货到付款的运费怎么多收了15元",
        PAYMENT,
        &["amount=15"],
        "billing.standard",
    ),
    case("麻烦开一张电子发票", INVOICE, &[], "billing.standard"),
    case(
        "我要投诉你们的快递员，态度太差了",
        COMPLAINT,
        &[],
        "human.standard",
    ),
    case("转人工", HUMAN, &[], "human.standard"),
    case("你好，在吗", GREETING, &[], "general.standard"),
    case("谢谢", GREETING, &[], "general.standard"),
    case(
        "京东的JDVA12345678901什么时候到",
        TRACK,
        &["tracking_number=JDVA12345678901@jd_logistics"],
        "tracking.standard",
    ),
    case(
        "极兔JT5012345678901 延误好几天了",
        DELAYED,
        &["tracking_number=JT5012345678901@jt_express"],
        "tracking.standard",
    ),
    case(
        "德邦DPK301234567890 的货压坏了要理赔",
        DAMAGED,
        &["tracking_number=DPK301234567890@deppon"],
        "claims.standard",
    ),
    case(
        "韵达 432123456789012",
        None,
        &["tracking_number=432123456789012@yunda"],
        "tracking.standard",
    ),
    case(
        "你们这群傻逼，快递到底在哪",
        TRACK,
        &[],
        "supervisor.standard",
    ),
    case(
        "我的电话是13800138000，请联系我",
        None,
        &["phone=+8613800138000"],
        "general.standard",
    ),
    // Traditional Chinese, Hong Kong and Taiwan wording.
    case("我的包裹還沒到", DELAYED, &[], "tracking.standard"),
    case("點解我嘅包裹仲未收到？", DELAYED, &[], "tracking.standard"),
    case(
        "順豐SF1412345678901喺邊度",
        TRACK,
        &["tracking_number=SF1412345678901@sf_express"],
        "tracking.standard",
    ),
    case("包裹破損了，要申請賠償", DAMAGED, &[], "claims.standard"),
    case("收到嘅嘢爛咗", DAMAGED, &[], "claims.standard"),
    case("我嘅包裹寄失咗", LOST, &[], "claims.standard"),
    case("寄錯咗貨俾我", WRONG, &[], "claims.standard"),
    case("我想更改地址", ADDRESS, &[], "tracking.standard"),
    case(
        "聽日送得唔得？我今日唔喺屋企",
        RESCHEDULE,
        &[],
        "tracking.standard",
    ),
    case("智能櫃的取件碼沒有收到", PICKUP, &[], "tracking.standard"),
    case("我要退貨退錢", REFUND, &[], "billing.standard"),
    case(
        "運費收咗HK$50，太貴",
        PAYMENT,
        &["amount=50"],
        "billing.standard",
    ),
    case("請問可以開發票嗎", INVOICE, &[], "billing.standard"),
    case("我要投訴，你哋服務好差", COMPLAINT, &[], "human.standard"),
    case("我想同真人傾", HUMAN, &[], "human.standard"),
    case("多謝晒", GREETING, &[], "general.standard"),
    case(
        "請打 +852 9123 4567 聯絡我，件貨到咗未",
        TRACK,
        &["phone=+85291234567"],
        "tracking.standard",
    ),
    vip("我的快遞延誤了好幾天", DELAYED, &[], "tracking.vip"),
    case(
        "中國郵政 EA123456785CN 到哪裡了",
        TRACK,
        &["tracking_number=EA123456785CN@ems"],
        "tracking.standard",
    ),
    case(
        "ＳＦ１２３４５６７８９０１２３　還沒到",
        DELAYED,
        &["tracking_number=SF1234567890123@sf_express"],
        "tracking.standard",
    ),
    // English.
    case("Where is my parcel?", TRACK, &[], "tracking.standard"),
    case(
        "Can you track 1Z5R89390357567127 for me",
        TRACK,
        &["tracking_number=1Z5R89390357567127@ups"],
        "tracking.standard",
    ),
    case(
        "My FedEx 986578788855 is delayed",
        DELAYED,
        &["tracking_number=986578788855@fedex"],
        "tracking.standard",
    ),
    case(
        "DHL waybill 3318810025 still not arrived",
        DELAYED,
        &["tracking_number=3318810025@dhl"],
        "tracking.standard",
    ),
    case(
        "USPS 9400111201080805483016 shows delivered but I never received it",
        LOST,
        &["tracking_number=9400111201080805483016@usps"],
        "claims.standard",
    ),
    case(
        "The box arrived smashed and the lamp is broken",
        DAMAGED,
        &[],
        "claims.standard",
    ),
    case("My package never arrived", LOST, &[], "claims.standard"),
    case("You sent the wrong size", WRONG, &[], "claims.standard"),
    case(
        "I need to change my delivery address",
        ADDRESS,
        &[],
        "tracking.standard",
    ),
    case(
        "Can you redeliver tomorrow? I'm not at home today",
        RESCHEDULE,
        &[],
        "tracking.standard",
    ),
    case(
        "I didn't get the locker pickup code",
        PICKUP,
        &[],
        "tracking.standard",
    ),
    case(
        "I want a refund for order ORD-88123456",
        REFUND,
        &["order_number=ORD-88123456"],
        "billing.standard",
    ),
    case(
        "I was charged twice, US$12.50 each",
        PAYMENT,
        &["amount=12.50"],
        "billing.standard",
    ),
    case(
        "Please send me a VAT invoice",
        INVOICE,
        &[],
        "billing.standard",
    ),
    case(
        "This is unacceptable, I want to complain",
        COMPLAINT,
        &[],
        "human.standard",
    ),
    vip(
        "Your courier was rude, I want to complain",
        COMPLAINT,
        &[],
        "human.vip",
    ),
    case("Let me talk to a real person", HUMAN, &[], "human.standard"),
    case("hi there", GREETING, &[], "general.standard"),
    case("Thanks a lot!", GREETING, &[], "general.standard"),
    case(
        "This is fucking ridiculous, where is my package",
        TRACK,
        &[],
        "supervisor.standard",
    ),
    case(
        "GM2951173225174494",
        None,
        &["tracking_number=GM2951173225174494@dhl"],
        "tracking.standard",
    ),
    case(
        "How do I file a claim for compensation?",
        CLAIM,
        &[],
        "claims.standard",
    ),
    case("Is the shop open on Sunday?", None, &[], "general.standard"),
    vip("Is the shop open on Sunday?", None, &[], "general.vip"),
];

fn route(policy: &Policy, kv: &MemoryKv, index: usize, case: &Case) -> Routed {
    let conversation = format!("wechat:cs-main:table-{index}");
    let mut subject = Subject::text_only("wechat", &conversation, case.text);
    subject.tier_override = Some(case.tier);
    subject.now = OFFICE_HOURS;
    let services = Services {
        kv,
        backlog: &NoBacklog,
    };
    let routed = futures_block_on(policy.route(&subject, services, true));
    // Deciding without the explanation skips the rules that cannot match; it must land on
    // the same rule as walking every rule does.
    let quick = policy.decide(&subject, &routed.analysis, &routed.facts, false);
    assert_eq!(
        (quick.rule.as_str(), quick.queue_key.as_str()),
        (
            routed.decision.rule.as_str(),
            routed.decision.queue_key.as_str()
        ),
        "{:?} decided differently without the explanation",
        case.text
    );
    routed
}

fn futures_block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

fn entity_strings(routed: &Routed) -> Vec<String> {
    routed
        .analysis
        .entities
        .iter()
        .map(
            |e| match e.details.get("carrier").and_then(|c| c.as_str()) {
                Some(carrier) => format!("{}={}@{carrier}", e.kind, e.value),
                None => format!("{}={}", e.kind, e.value),
            },
        )
        .collect()
}

#[test]
fn the_logistics_pack_routes_every_message_of_the_table() {
    assert!(CASES.len() >= 60, "the table has {} rows", CASES.len());
    let policy = Policy::from_config(&example());
    let mut failures = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        // A fresh store per message: stickiness from one row must not leak into the next.
        let kv = MemoryKv::default();
        let routed = route(&policy, &kv, i, case);
        let d = &routed.decision;
        let intent = d.intent.as_ref().map(|i| i.name.as_str());
        let entities = entity_strings(&routed);
        let expected: Vec<String> = case.entities.iter().map(|e| e.to_string()).collect();
        if intent != case.intent || entities != expected || d.queue_key != case.queue_key {
            failures.push(format!(
                "{:?}\n    expected intent {:?}, entities {:?}, queue {}\n    got      intent {:?}, entities {:?}, queue {} (rule {}: {})\n    normalized {:?}, scores {:?}",
                case.text,
                case.intent,
                expected,
                case.queue_key,
                intent,
                entities,
                d.queue_key,
                d.rule,
                d.reason,
                routed.analysis.normalized,
                routed
                    .analysis
                    .intent_scores
                    .iter()
                    .map(|s| format!("{} {}", s.intent, s.score))
                    .collect::<Vec<_>>()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows differ:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn the_table_covers_three_languages_and_every_intent_of_the_pack() {
    let han = |s: &str| s.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c));
    let chinese = CASES.iter().filter(|c| han(c.text)).count();
    let english = CASES.iter().filter(|c| !han(c.text)).count();
    assert!(
        chinese >= 40 && english >= 20,
        "{chinese} Chinese, {english} English"
    );
    let config = example();
    for intent in &config.intents {
        assert!(
            CASES.iter().any(|c| c.intent == Some(intent.name.as_str())),
            "no row expects intent {}",
            intent.name
        );
    }
}

/// Carrier tracking numbers: real formats, each recognised with its carrier, in a sentence
/// around it. Formats and check digits come from the sources cited in
/// `src/pipeline/routing/carriers.rs`; the UPS, FedEx, DHL, USPS and S10 samples are the
/// valid test numbers of github.com/jkeen/tracking_number_data (`couriers/*.json`), the
/// mainland ones follow the formats of github.com/BF-zh/Courier-Validation
/// (`src/pattern/*.ts`) and Taobao's `reg_mail_no`.
const TRACKING: &[(&str, &str, &str)] = &[
    ("顺丰单号SF1234567890123", "SF1234567890123", "sf_express"),
    ("sf1412345678901 到了吗", "SF1412345678901", "sf_express"),
    ("顺丰 123456789012", "123456789012", "sf_express"),
    ("京东 JDVB12345678901", "JDVB12345678901", "jd_logistics"),
    ("JDX012345678901 呢", "JDX012345678901", "jd_logistics"),
    ("中通 73123456789012", "73123456789012", "zto"),
    ("ZTO 75312345678901", "75312345678901", "zto"),
    ("YT7512345678901", "YT7512345678901", "yto"),
    ("申通 773123456789012", "773123456789012", "sto"),
    ("STO 7712345678901234", "7712345678901234", "sto"),
    ("韵达 462123456789012", "462123456789012", "yunda"),
    ("yunda 312345678901234", "312345678901234", "yunda"),
    ("韵达 5123456789012", "5123456789012", "yunda"),
    ("J&T JT0012345678901", "JT0012345678901", "jt_express"),
    ("EMS 1123456789012", "1123456789012", "ems"),
    ("EMS 9712345678901", "9712345678901", "ems"),
    ("邮政包裹 9812345678901", "9812345678901", "china_post"),
    ("EA123456785CN", "EA123456785CN", "ems"),
    ("RB123456785CN", "RB123456785CN", "china_post"),
    ("德邦 DPK301234567890", "DPK301234567890", "deppon"),
    ("菜鸟 LP00123456789012", "LP00123456789012", "cainiao"),
    ("菜鸟 621123456789012", "621123456789012", "cainiao"),
    ("UPS 1Z5R89390357567127", "1Z5R89390357567127", "ups"),
    ("1Z879E930346834440", "1Z879E930346834440", "ups"),
    ("1Z410E7W0392751591", "1Z410E7W0392751591", "ups"),
    ("FedEx 986578788855", "986578788855", "fedex"),
    ("fedex 477179081230", "477179081230", "fedex"),
    ("FedEx Ground 568283610012000", "568283610012000", "fedex"),
    ("9611020987654312345672", "9611020987654312345672", "fedex"),
    ("DHL 3318810025", "3318810025", "dhl"),
    ("DHL 8487135506", "8487135506", "dhl"),
    ("JJD0099999999", "JJD0099999999", "dhl"),
    ("GM2951173225174494", "GM2951173225174494", "dhl"),
    ("9400111201080805483016", "9400111201080805483016", "usps"),
    ("9361289878700317633795", "9361289878700317633795", "usps"),
    (
        "420221539101026837331000039521",
        "420221539101026837331000039521",
        "usps",
    ),
    ("usps 71123456789123456787", "71123456789123456787", "usps"),
    ("RB123456785US", "RB123456785US", "usps"),
    ("RB123456785GB", "RB123456785GB", "postal"),
];

/// Strings that look like tracking numbers and are not.
const LOOK_ALIKES: &[(&str, &str)] = &[
    ("SF123456789012", "SF with one digit too few"),
    ("SF12345678901234", "SF with one digit too many"),
    ("xSF1234567890123", "glued to another letter"),
    ("SF1234567890123x", "glued to a letter after"),
    ("JD12345", "JD too short"),
    ("JT123456789012", "J&T with 12 digits"),
    ("YT12345678901234", "YTO with 14 digits"),
    ("DPK12345678901", "Deppon with 11 digits"),
    ("72123456789012", "14 digits with a prefix no carrier uses"),
    ("1Z5R89390357567128", "UPS with a wrong check digit"),
    ("1Z1111111111111111", "UPS with a wrong check digit"),
    ("RB123456786US", "S10 with a wrong check digit"),
    ("fedex 996578788855", "FedEx with a wrong check digit"),
    (
        "986578788855",
        "a valid FedEx check digit but no FedEx in the text",
    ),
    (
        "3318810025",
        "a valid DHL check digit but no DHL in the text",
    ),
    ("DHL 3318810010", "DHL with a wrong check digit"),
    ("9200000000000000000000", "USPS with a wrong check digit"),
    ("13800138000", "a mainland mobile number"),
    ("4111111111111111", "a card number"),
    ("110101199003074578", "an identity card number"),
    ("20261122093000", "a timestamp"),
    ("ORD-20261122", "an order number"),
    ("12345", "a short number"),
];

fn extractor() -> (Policy, Extractor) {
    (
        Policy::from_config(&example()),
        Extractor::new(&EntitiesConfig::default()),
    )
}

fn tracking_in(policy: &Policy, text: &str) -> Vec<(String, String)> {
    policy
        .analyze(Some(text))
        .entities
        .into_iter()
        .filter(|e| e.kind == "tracking_number")
        .map(|e| {
            let carrier = e.details["carrier"].as_str().unwrap_or("").to_owned();
            (e.value, carrier)
        })
        .collect()
}

#[test]
fn every_carrier_is_recognised_in_its_real_format() {
    let (policy, _) = extractor();
    let mut failures = Vec::new();
    for (text, number, carrier) in TRACKING {
        let found = tracking_in(&policy, text);
        if found != vec![(number.to_string(), carrier.to_string())] {
            failures.push(format!(
                "{text:?}: expected {number} of {carrier}, got {found:?}"
            ));
        }
    }
    let carriers: std::collections::BTreeSet<&str> = TRACKING.iter().map(|t| t.2).collect();
    for required in [
        "sf_express",
        "jd_logistics",
        "zto",
        "yto",
        "sto",
        "yunda",
        "jt_express",
        "ems",
        "china_post",
        "deppon",
        "cainiao",
        "ups",
        "fedex",
        "dhl",
        "usps",
    ] {
        assert!(carriers.contains(required), "no sample of {required}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn look_alikes_are_not_tracking_numbers() {
    let (policy, _) = extractor();
    let failures: Vec<String> = LOOK_ALIKES
        .iter()
        .filter_map(|(text, why)| {
            let found = tracking_in(&policy, text);
            (!found.is_empty()).then(|| format!("{text:?} ({why}) taken for {found:?}"))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_carrier_named_in_the_text_decides_between_formats_that_fit() {
    let (policy, _) = extractor();
    // 15 digits starting 77 are STO's; 15 digits starting with 3 or 4 are Yunda's.
    assert_eq!(
        tracking_in(&policy, "432123456789012"),
        vec![("432123456789012".into(), "yunda".into())]
    );
    // A 12-digit number is SF's only when SF is named, FedEx's only with a valid check digit
    // and FedEx named.
    assert_eq!(
        tracking_in(&policy, "顺丰 986578788855"),
        vec![("986578788855".into(), "sf_express".into())]
    );
    assert_eq!(
        tracking_in(&policy, "FedEx 986578788855"),
        vec![("986578788855".into(), "fedex".into())]
    );
    // Only the configured carriers are recognised.
    let only_sf = Extractor::new(&EntitiesConfig {
        carriers: Some(vec!["sf_express".into()]),
        ..EntitiesConfig::default()
    });
    assert!(
        only_sf
            .extract("YT7512345678901 SF1234567890123", &|_| false)
            .iter()
            .all(|e| e.value == "SF1234567890123")
    );
}
