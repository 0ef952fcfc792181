//! Text normalization before matching: compatibility forms folded (full-width Latin letters,
//! digits and punctuation become half-width), lowercase, Traditional Chinese converted to
//! Simplified, runs of whitespace made one space. Keywords go through the same steps at load,
//! so 「我的包裹還沒到」 and 「我的包裹还没到」 meet the same keywords.

use std::borrow::Cow;
use std::sync::OnceLock;

use ferrous_opencc::OpenCC;
use ferrous_opencc::config::BuiltinConfig;
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfkc_quick};

/// A message's text in the two forms matching needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// NFKC only: case and script kept, for entities (tracking numbers keep their letters).
    pub compat: String,
    /// NFKC, lowercase, Simplified, single spaces: what keywords and intents match.
    pub folded: String,
}

/// The converter, built once: its tables are compiled into the binary and never change.
fn converter() -> Option<&'static OpenCC> {
    static CONVERTER: OnceLock<Option<OpenCC>> = OnceLock::new();
    CONVERTER
        .get_or_init(|| match OpenCC::from_config(BuiltinConfig::T2s) {
            Ok(converter) => Some(converter),
            Err(err) => {
                // The tables are embedded, so this means a broken build; matching still works
                // for Simplified text.
                tracing::error!(error = %err, "cannot load the Traditional to Simplified tables");
                None
            }
        })
        .as_ref()
}

/// Whether `text` holds a CJK ideograph, the only thing the Traditional→Simplified step
/// changes; plain Latin text skips it.
fn has_han(text: &str) -> bool {
    text.chars().any(|c| {
        matches!(c as u32,
            0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x3134F)
    })
}

/// NFKC, borrowed when the text already is.
fn compat(text: &str) -> Cow<'_, str> {
    if text.is_ascii() || is_nfkc_quick(text.chars()) == IsNormalized::Yes {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.nfkc().collect())
    }
}

/// Lowercase with whitespace runs collapsed to one space and trimmed.
fn fold_case_and_space(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase());
        } else {
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// Normalizes message text.
pub fn normalize(text: &str, to_simplified: bool) -> Normalized {
    let compat = compat(text);
    let mut folded = fold_case_and_space(&compat);
    if to_simplified
        && has_han(&folded)
        && let Some(converter) = converter()
    {
        folded = converter.convert(&folded);
    }
    Normalized {
        compat: compat.into_owned(),
        folded,
    }
}

/// Normalizes a configured keyword the way message text is, so both meet.
pub fn keyword(word: &str, to_simplified: bool) -> String {
    normalize(word, to_simplified).folded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_width_case_script_and_space() {
        let cases = [
            ("我的包裹還沒到", "我的包裹还没到"),
            ("ＳＦ１２３４５６７８９０１２３", "sf1234567890123"),
            ("Where   IS\tmy  Parcel ", "where is my parcel"),
            ("順豐快遞　延誤", "顺丰快递 延误"),
            ("點解仲未收到", "点解仲未收到"),
            ("plain ascii", "plain ascii"),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize(input, true).folded, expected, "{input}");
        }
    }

    #[test]
    fn keeps_case_and_script_in_the_compat_form() {
        let n = normalize("順豐ＳＦ１２３", true);
        assert_eq!(n.compat, "順豐SF123");
        assert_eq!(n.folded, "顺丰sf123");
    }

    #[test]
    fn simplified_conversion_can_be_turned_off() {
        assert_eq!(normalize("還沒到", false).folded, "還沒到");
    }

    #[test]
    fn keywords_and_text_meet() {
        assert_eq!(keyword("還沒到", true), normalize("还没到", true).folded);
    }
}
