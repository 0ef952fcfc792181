//! Phone numbers out of what the live tail shows, unless an operator asks (and is logged).

use std::sync::LazyLock;

use regex::Regex;

use crate::pipeline::routing::entities::mask_phone;

/// Digit runs that may be a phone number as written (`+86 138-0013-8000`).
static DIGITS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\+?\d[\d \-()]{5,}\d").expect("phone pattern compiles"));

fn digits(text: &str) -> String {
    text.chars().filter(char::is_ascii_digit).collect()
}

/// Masks every place `phones` (E.164 or as written) appear in `text`.
pub fn mask_in(text: &str, phones: &[String]) -> String {
    let numbers: Vec<String> = phones
        .iter()
        .map(|p| digits(p))
        .filter(|d| d.len() >= 7)
        .collect();
    if numbers.is_empty() {
        return text.to_owned();
    }
    DIGITS
        .replace_all(text, |caps: &regex::Captures<'_>| {
            let found = digits(&caps[0]);
            let is_phone = found.len() >= 7
                && numbers
                    .iter()
                    .any(|n| n.ends_with(&found) || found.ends_with(n.as_str()));
            if is_phone {
                mask_phone(&caps[0])
            } else {
                caps[0].to_owned()
            }
        })
        .into_owned()
}

/// Masks the phone numbers of one tapped envelope (serialized) and its explanation.
pub fn mask_tapped(value: &mut serde_json::Value) {
    let mut phones = Vec::new();
    if let Some(phone) = value["envelope"]["sender"]["phone"].as_str() {
        phones.push(phone.to_owned());
    }
    if let Some(entities) = value["envelope"]["entities"].as_array() {
        for entity in entities {
            if entity["kind"] == "phone"
                && let Some(v) = entity["value"].as_str()
            {
                phones.push(v.to_owned());
            }
        }
    }
    mask_strings(value, &phones);
}

fn mask_strings(value: &mut serde_json::Value, phones: &[String]) {
    match value {
        serde_json::Value::String(s) => *s = mask_in(s, phones),
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| mask_strings(v, phones)),
        serde_json::Value::Object(map) => map.values_mut().for_each(|v| mask_strings(v, phones)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_the_numbers_given_as_written_and_leaves_other_digits() {
        let phones = vec!["+8613800138000".to_owned()];
        let masked = mask_in("call 138 0013 8000 about order 20240512", &phones);
        assert!(!masked.contains("0013"), "{masked}");
        assert!(masked.contains("8000"), "{masked}");
        assert!(masked.contains("20240512"), "{masked}");
        let mut value = serde_json::json!({"envelope": {"sender": {"phone": "+8613800138000"}, "entities": []}, "explanation": "text +8613800138000"});
        mask_tapped(&mut value);
        assert!(!value.to_string().contains("13800138000"), "{value}");
    }
}
