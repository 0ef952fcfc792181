//! Phone numbers: normalizing what providers send to E.164, checking a configured default
//! country code, and masking numbers for logs (country code and last four digits kept,
//! everything between starred out).

use std::fmt;

use crate::config::ConfigProblem;

/// Why a string is not a usable phone number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// Nothing was given.
    #[error("phone number is empty")]
    Empty,
    /// Something other than digits after the prefix and separators were removed.
    #[error("phone number contains characters other than digits")]
    NotDigits,
    /// A national number without `+` or `00`, and no default country code configured.
    #[error("phone number has no country code")]
    NoCountryCode,
    /// E.164 numbers have 7 to 15 digits and never start with 0.
    #[error("phone number has {0} digits, expected 7 to 15 not starting with 0")]
    Length(usize),
}

/// Normalizes `raw` to E.164 (`+` and 7-15 digits). Spaces, dashes, dots and brackets are
/// dropped; a `00` international prefix becomes `+`; a national number gets
/// `default_country_code` (digits only, e.g. `86`) with one leading trunk `0` removed.
pub fn normalize_e164(raw: &str, default_country_code: Option<&str>) -> Result<String, PhoneError> {
    let cleaned: String = raw
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '\u{a0}'))
        .collect();
    if cleaned.is_empty() {
        return Err(PhoneError::Empty);
    }
    let digits = if let Some(rest) = cleaned.strip_prefix('+') {
        rest.to_owned()
    } else if let Some(rest) = cleaned.strip_prefix("00") {
        rest.to_owned()
    } else {
        let Some(cc) = default_country_code else {
            return if cleaned.chars().all(|c| c.is_ascii_digit()) {
                Err(PhoneError::NoCountryCode)
            } else {
                Err(PhoneError::NotDigits)
            };
        };
        let national = cleaned.strip_prefix('0').unwrap_or(&cleaned);
        format!("{cc}{national}")
    };
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(PhoneError::NotDigits);
    }
    if !(7..=15).contains(&digits.len()) || digits.starts_with('0') {
        return Err(PhoneError::Length(digits.len()));
    }
    Ok(format!("+{digits}"))
}

/// True when `number` is already E.164: `+` then 7-15 digits, the first not 0.
pub fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|digits| {
        (7..=15).contains(&digits.len())
            && !digits.starts_with('0')
            && digits.chars().all(|c| c.is_ascii_digit())
    })
}

/// Checks a configured default country calling code (`86`: 1 to 3 digits, no `+`, not
/// starting with 0), reported at `key`.
pub fn check_country_code(key: &str, code: &str) -> Option<ConfigProblem> {
    let ok = (1..=3).contains(&code.len())
        && code.chars().all(|c| c.is_ascii_digit())
        && !code.starts_with('0');
    (!ok).then(|| {
        ConfigProblem::new(
            key,
            format!("{code:?} must be 1 to 3 digits like \"86\", without +"),
        )
    })
}

/// Length of the ITU country calling code at the start of `digits` (E.164 without `+`).
/// The codes form a prefix-free set: 1 and 7 are one digit, the two-digit codes are listed,
/// every other code has three digits.
pub fn country_code_len(digits: &str) -> usize {
    const TWO_DIGIT: &[&str] = &[
        "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46",
        "47", "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63",
        "64", "65", "66", "81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98",
    ];
    match digits.as_bytes().first() {
        Some(b'1' | b'7') => 1,
        Some(_) if digits.get(..2).is_some_and(|two| TWO_DIGIT.contains(&two)) => 2,
        Some(_) => 3.min(digits.len()),
        None => 0,
    }
}

/// A number made safe for logs: `+86*******5678`. Anything that is not E.164 keeps at most
/// its last four characters.
pub fn mask(number: &str) -> String {
    if is_e164(number) {
        let digits = &number[1..];
        let cc = country_code_len(digits);
        let national = &digits[cc..];
        let keep = if national.len() > 4 { 4 } else { 0 };
        let hidden = national.len() - keep;
        return format!(
            "+{}{}{}",
            &digits[..cc],
            "*".repeat(hidden),
            &national[hidden..]
        );
    }
    let chars: Vec<char> = number.chars().collect();
    let keep = if chars.len() > 6 { 4 } else { 0 };
    let hidden = chars.len() - keep;
    let tail: String = chars[hidden..].iter().collect();
    format!("{}{tail}", "*".repeat(hidden))
}

/// Displays a phone number masked, for `tracing` fields: `from = %Masked(&number)`.
#[derive(Debug, Clone, Copy)]
pub struct Masked<'a>(pub &'a str);

impl fmt::Display for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_the_forms_gateways_send() {
        let cases: &[(&str, Option<&str>, Result<&str, PhoneError>)] = &[
            ("+14155550123", None, Ok("+14155550123")),
            ("+1 (415) 555-0123", None, Ok("+14155550123")),
            ("008613812345678", None, Ok("+8613812345678")),
            ("13812345678", Some("86"), Ok("+8613812345678")),
            ("010 6552 9988", Some("86"), Ok("+861065529988")),
            ("13812345678", None, Err(PhoneError::NoCountryCode)),
            ("", None, Err(PhoneError::Empty)),
            ("   ", None, Err(PhoneError::Empty)),
            ("+1415abc0123", None, Err(PhoneError::NotDigits)),
            ("anonymous", None, Err(PhoneError::NotDigits)),
            ("+123", None, Err(PhoneError::Length(3))),
            ("+1234567890123456", None, Err(PhoneError::Length(16))),
            ("+0123456789", None, Err(PhoneError::Length(10))),
        ];
        for (raw, cc, want) in cases {
            let got = normalize_e164(raw, *cc);
            assert_eq!(got.as_deref().map_err(Clone::clone), want.clone(), "{raw}");
        }
    }

    #[test]
    fn configured_country_codes_are_checked() {
        for good in ["1", "86", "852"] {
            assert_eq!(check_country_code("cc", good), None, "{good}");
        }
        for bad in ["", "+86", "0", "08", "8612", "8a"] {
            let problem = check_country_code("generic.default_country_code", bad);
            assert_eq!(
                problem.map(|p| p.key),
                Some("generic.default_country_code".to_owned()),
                "{bad}"
            );
        }
        assert_eq!(
            check_country_code("k", "+86").map(|p| p.message),
            Some(r#""+86" must be 1 to 3 digits like "86", without +"#.to_owned())
        );
    }

    #[test]
    fn country_codes_have_the_right_length() {
        let cases = [
            ("14155550123", 1),
            ("79161234567", 1),
            ("8613812345678", 2),
            ("447911123456", 2),
            ("85291234567", 3),
            ("886912345678", 3),
            ("35312345678", 3),
        ];
        for (digits, len) in cases {
            assert_eq!(country_code_len(digits), len, "{digits}");
        }
    }

    #[test]
    fn masks_keep_country_code_and_last_four() {
        let cases = [
            ("+8613812345678", "+86*******5678"),
            ("+14155550123", "+1******0123"),
            ("+85291234567", "+852****4567"),
            ("+8610086", "+86*0086"),
            ("+79123", "******"),
            ("anonymous", "*****mous"),
            ("1234", "****"),
        ];
        for (number, masked) in cases {
            assert_eq!(mask(number), masked, "{number}");
            assert_eq!(Masked(number).to_string(), masked);
        }
    }
}
