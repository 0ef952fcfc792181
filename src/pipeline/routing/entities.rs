//! Entities in a message: tracking numbers with their carrier, order numbers (configured
//! patterns), mainland and Hong Kong phone numbers, amounts of money.
//!
//! Order numbers are looked for first, then phones, then tracking numbers among the Latin
//! letter-and-digit words left, so one string is one entity. Phone numbers are personal
//! data: [`mask_phone`] is what logs get.

use regex::Regex;
use serde_json::{Map, Value};
use switchboard_sdk::Entity;

use super::carriers::{CARRIERS, Formats};
use crate::config::EntitiesConfig;

/// Entity kinds a rule may name.
pub const KINDS: [&str; 4] = ["tracking_number", "order_number", "phone", "amount"];

/// The compiled recognisers.
#[derive(Debug)]
pub struct Extractor {
    formats: Formats,
    enabled_carriers: Option<Vec<String>>,
    orders: Vec<Regex>,
    phones: bool,
    amounts: bool,
    mainland: Option<Regex>,
    hong_kong: Option<Regex>,
    amount_before: Option<Regex>,
    amount_after: Option<Regex>,
}

/// Compiles an order-number pattern as the extractor uses it.
pub fn compile_order_pattern(pattern: &str) -> Result<Regex, String> {
    regex::RegexBuilder::new(pattern)
        .case_insensitive(true)
        .size_limit(1 << 22)
        .build()
        .map_err(|e| e.to_string())
}

/// A literal pattern of this file; the unit tests show each one compiles.
fn builtin(pattern: &str) -> Option<Regex> {
    Regex::new(pattern).ok()
}

impl Extractor {
    /// The recognisers `config` asks for. Order patterns that do not compile are skipped
    /// (validation reports them before a config is ever used).
    pub fn new(config: &EntitiesConfig) -> Self {
        Self {
            formats: Formats::new(config.carriers.as_deref()),
            enabled_carriers: config.carriers.clone(),
            orders: config
                .order_numbers
                .iter()
                .filter_map(|p| compile_order_pattern(p).ok())
                .collect(),
            phones: config.phones,
            amounts: config.amounts,
            mainland: builtin(r"(?:\+?86[ -]?)?(1[3-9]\d)[ -]?(\d{4})[ -]?(\d{4})"),
            hong_kong: builtin(r"(?:\+852|852|\(852\))[ -]?([2-9]\d{3})[ -]?(\d{4})"),
            amount_before: builtin(
                r"(?i)(¥|rmb|cny|hk\$|hkd|us\$|usd|\$)\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?",
            ),
            amount_after: builtin(
                r"(?i)(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?\s?(块钱|元|块|塊|人民币|人民幣|rmb|cny|yuan|港币|港幣|港元|hkd|美元|usd|dollars?)",
            ),
        }
    }

    /// Every entity in `compat` (NFKC text, case kept). `named(carrier)` tells whether the
    /// text names that carrier.
    pub fn extract(&self, compat: &str, named: &dyn Fn(&str) -> bool) -> Vec<Entity> {
        let mut taken: Vec<(usize, usize)> = Vec::new();
        let mut entities = Vec::new();
        // Phones, tracking numbers and amounts all hold digits; most messages hold few or none,
        // and then the number patterns need not run at all.
        let digits = compat.bytes().filter(u8::is_ascii_digit).count();
        let free = |taken: &[(usize, usize)], start: usize, end: usize| {
            taken.iter().all(|&(s, e)| end <= s || e <= start)
        };

        for (index, regex) in self.orders.iter().enumerate() {
            for m in regex.find_iter(compat) {
                if word_bounded(compat, m.start(), m.end()) && free(&taken, m.start(), m.end()) {
                    taken.push((m.start(), m.end()));
                    entities.push(entity(
                        "order_number",
                        m.as_str().to_ascii_uppercase(),
                        [("pattern", Value::from(index))],
                    ));
                }
            }
        }

        if self.phones && digits >= 8 {
            for caps in self.mainland.iter().flat_map(|r| r.captures_iter(compat)) {
                let Some(m) = caps.get(0) else { continue };
                if !number_bounded(compat, m.start(), m.end()) || !free(&taken, m.start(), m.end())
                {
                    continue;
                }
                taken.push((m.start(), m.end()));
                let digits: String = (1..=3)
                    .filter_map(|i| caps.get(i))
                    .map(|g| g.as_str())
                    .collect();
                entities.push(entity(
                    "phone",
                    format!("+86{digits}"),
                    [("region", "cn".into())],
                ));
            }
            let hong_kong = self.hong_kong.iter().filter(|_| compat.contains("852"));
            for caps in hong_kong.flat_map(|r| r.captures_iter(compat)) {
                let Some(m) = caps.get(0) else { continue };
                if !number_bounded(compat, m.start(), m.end()) || !free(&taken, m.start(), m.end())
                {
                    continue;
                }
                taken.push((m.start(), m.end()));
                let digits: String = (1..=2)
                    .filter_map(|i| caps.get(i))
                    .map(|g| g.as_str())
                    .collect();
                entities.push(entity(
                    "phone",
                    format!("+852{digits}"),
                    [("region", "hk".into())],
                ));
            }
        }

        let enabled = |carrier: &str| {
            self.enabled_carriers.as_ref().is_none_or(|list| {
                list.iter()
                    .any(|c| c == carrier || (c == "postal" && carrier == "postal"))
            })
        };
        // The shortest formats (S10, DHL piece ids) hold nine digits.
        for (start, end) in latin_words(if digits >= 9 { compat } else { "" }) {
            if !free(&taken, start, end) {
                continue;
            }
            if let Some(found) = self.formats.recognise(&compat[start..end], named, enabled) {
                taken.push((start, end));
                let mut details = Map::new();
                details.insert("carrier".into(), found.carrier.into());
                if let Some(country) = found.country {
                    details.insert("country".into(), country.into());
                }
                entities.push(Entity {
                    kind: "tracking_number".into(),
                    value: found.number,
                    details,
                });
            }
        }

        if self.amounts && digits > 0 {
            let mut amounts: Vec<(usize, usize, String, &'static str)> = Vec::new();
            for caps in self
                .amount_before
                .iter()
                .flat_map(|r| r.captures_iter(compat))
            {
                let (Some(m), Some(unit), Some(whole)) = (caps.get(0), caps.get(1), caps.get(2))
                else {
                    continue;
                };
                amounts.push((
                    m.start(),
                    m.end(),
                    amount_value(whole.as_str(), caps.get(3).map(|f| f.as_str())),
                    currency(unit.as_str()),
                ));
            }
            for caps in self
                .amount_after
                .iter()
                .flat_map(|r| r.captures_iter(compat))
            {
                let (Some(m), Some(whole), Some(unit)) = (caps.get(0), caps.get(1), caps.get(3))
                else {
                    continue;
                };
                amounts.push((
                    m.start(),
                    m.end(),
                    amount_value(whole.as_str(), caps.get(2).map(|f| f.as_str())),
                    currency(unit.as_str()),
                ));
            }
            amounts.sort_by_key(|a| a.0);
            for (start, end, value, currency) in amounts {
                if number_bounded(compat, start, end) && free(&taken, start, end) {
                    taken.push((start, end));
                    entities.push(entity("amount", value, [("currency", currency.into())]));
                }
            }
        }
        entities
    }

    /// Carrier names, for the lexicon (`Owner::Carrier(index)`).
    pub fn carrier_names() -> impl Iterator<Item = (usize, &'static str)> {
        CARRIERS
            .iter()
            .enumerate()
            .flat_map(|(i, c)| c.names.iter().map(move |n| (i, *n)))
    }
}

fn entity<const N: usize>(kind: &str, value: String, details: [(&str, Value); N]) -> Entity {
    Entity {
        kind: kind.to_owned(),
        value,
        details: details
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    }
}

fn amount_value(whole: &str, fraction: Option<&str>) -> String {
    let whole: String = whole.chars().filter(|c| *c != ',').collect();
    match fraction {
        Some(f) => format!("{whole}.{f}"),
        None => whole,
    }
}

fn currency(unit: &str) -> &'static str {
    match unit.to_ascii_lowercase().as_str() {
        "hk$" | "hkd" | "港币" | "港幣" | "港元" => "HKD",
        "us$" | "usd" | "$" | "美元" | "dollar" | "dollars" => "USD",
        _ => "CNY",
    }
}

fn is_latin(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// Maximal runs of ASCII letters and digits, as byte ranges.
fn latin_words(text: &str) -> Vec<(usize, usize)> {
    let mut words = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (is_latin(c), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                words.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        words.push((s, text.len()));
    }
    words
}

/// Not glued to a Latin letter or digit on either side.
fn word_bounded(text: &str, start: usize, end: usize) -> bool {
    !text[..start].chars().next_back().is_some_and(is_latin)
        && !text[end..].chars().next().is_some_and(is_latin)
}

/// Not glued to a digit, `+` or Latin letter: `13800138000` inside a longer number is not a
/// phone number.
fn number_bounded(text: &str, start: usize, end: usize) -> bool {
    !text[..start]
        .chars()
        .next_back()
        .is_some_and(|c| is_latin(c) || c == '+')
        && !text[end..].chars().next().is_some_and(is_latin)
}

/// A phone number for logs: country code and the last four digits.
pub fn mask_phone(phone: &str) -> String {
    let digits: Vec<char> = phone.chars().filter(char::is_ascii_digit).collect();
    if digits.len() <= 4 {
        return "****".to_owned();
    }
    let tail: String = digits[digits.len() - 4..].iter().collect();
    let head = if phone.starts_with("+852") {
        "+852"
    } else if phone.starts_with("+86") {
        "+86"
    } else {
        ""
    };
    format!("{head}****{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extractor() -> Extractor {
        Extractor::new(&EntitiesConfig {
            order_numbers: vec![r"ORD-\d{8}".into()],
            ..EntitiesConfig::default()
        })
    }

    fn values(text: &str) -> Vec<(String, String)> {
        extractor()
            .extract(text, &|_| false)
            .into_iter()
            .map(|e| (e.kind, e.value))
            .collect()
    }

    #[test]
    fn built_in_patterns_compile() {
        let e = extractor();
        assert!(e.mainland.is_some() && e.hong_kong.is_some());
        assert!(e.amount_before.is_some() && e.amount_after.is_some());
    }

    #[test]
    fn phones_are_normalized_to_e164_and_bounded() {
        assert_eq!(
            values("call me 138 0013 8000 or +86-139-1234-5678"),
            vec![
                ("phone".into(), "+8613800138000".into()),
                ("phone".into(), "+8613912345678".into())
            ]
        );
        assert_eq!(
            values("香港電話 +852 9123 4567"),
            vec![("phone".into(), "+85291234567".into())]
        );
        assert!(
            !values("id 2138001380001").iter().any(|(k, _)| k == "phone"),
            "inside a longer number"
        );
        assert!(
            values("12800138000").is_empty(),
            "12x is not a mobile prefix"
        );
    }

    #[test]
    fn amounts_with_their_currency() {
        assert_eq!(
            values("退我¥1,280.50和30元, and US$12"),
            vec![
                ("amount".into(), "1280.50".into()),
                ("amount".into(), "30".into()),
                ("amount".into(), "12".into())
            ]
        );
        let e = extractor().extract("運費 HK$300", &|_| false);
        assert_eq!(e[0].details["currency"], "HKD");
    }

    #[test]
    fn order_numbers_come_first_and_are_not_taken_for_anything_else() {
        assert_eq!(
            values("订单 ord-20261122 呢"),
            vec![("order_number".into(), "ORD-20261122".into())]
        );
        assert!(values("xord-20261122").is_empty(), "not a whole word");
    }

    #[test]
    fn masks_keep_only_the_country_and_last_four_digits() {
        assert_eq!(mask_phone("+8613800138000"), "+86****8000");
        assert_eq!(mask_phone("+85291234567"), "+852****4567");
        assert_eq!(mask_phone("12"), "****");
    }
}
