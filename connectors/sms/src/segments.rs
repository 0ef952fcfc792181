//! SMS segment arithmetic (3GPP TS 23.038 / 23.040).
//!
//! A text that fits the GSM 7-bit default alphabet (with its extension table) is sent in
//! septets: 160 in a single message, 153 per part of a concatenated one (the user data
//! header takes the rest). Extension-table characters cost two septets (escape + char) and
//! the two are never split across parts. Anything else is sent as UCS-2: 70 UTF-16 code
//! units single, 67 per part; a character outside the BMP is a surrogate pair (two units)
//! and is never split.

/// Septets in a single GSM-7 message.
pub const GSM7_SINGLE: usize = 160;
/// Septets per part of a concatenated GSM-7 message.
pub const GSM7_PART: usize = 153;
/// UTF-16 code units in a single UCS-2 message.
pub const UCS2_SINGLE: usize = 70;
/// UTF-16 code units per part of a concatenated UCS-2 message.
pub const UCS2_PART: usize = 67;

/// The GSM 03.38 default alphabet (the escape code 0x1B itself is not a character).
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";

/// The GSM 03.38 extension table, each sent as escape + character.
const GSM7_EXTENSION: &str = "\u{0C}^{}\\[~]|€";

/// How a text is encoded on the air.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// GSM 7-bit default alphabet.
    Gsm7,
    /// UCS-2 (UTF-16 code units).
    Ucs2,
}

impl Encoding {
    /// The limit of a single message in this encoding's units.
    pub fn single_limit(self) -> usize {
        match self {
            Encoding::Gsm7 => GSM7_SINGLE,
            Encoding::Ucs2 => UCS2_SINGLE,
        }
    }

    /// The limit of one part of a concatenated message.
    pub fn part_limit(self) -> usize {
        match self {
            Encoding::Gsm7 => GSM7_PART,
            Encoding::Ucs2 => UCS2_PART,
        }
    }

    /// What `c` costs in this encoding (septets or UTF-16 units). For GSM-7 the caller must
    /// have checked that the text is GSM-7.
    fn cost(self, c: char) -> usize {
        match self {
            Encoding::Gsm7 => gsm7_septets(c).unwrap_or(2),
            Encoding::Ucs2 => c.len_utf16(),
        }
    }
}

/// Septets `c` takes in GSM-7: 1 for the default alphabet, 2 for the extension table, `None`
/// when GSM-7 cannot carry it.
pub fn gsm7_septets(c: char) -> Option<usize> {
    if GSM7_BASIC.contains(c) {
        Some(1)
    } else if GSM7_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// The encoding a text needs.
pub fn encoding(text: &str) -> Encoding {
    if text.chars().all(|c| gsm7_septets(c).is_some()) {
        Encoding::Gsm7
    } else {
        Encoding::Ucs2
    }
}

/// The size of a text on the air.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SegmentCount {
    /// The encoding the text needs.
    pub encoding: Encoding,
    /// Septets (GSM-7) or UTF-16 code units (UCS-2).
    pub units: usize,
    /// Messages the network bills and delivers (1 for an empty text).
    pub segments: usize,
}

/// Counts the segments of `text` exactly as [`split`] cuts it.
pub fn count(text: &str) -> SegmentCount {
    let encoding = encoding(text);
    let units = text.chars().map(|c| encoding.cost(c)).sum();
    let segments = if units <= encoding.single_limit() {
        1
    } else {
        split_with(text, encoding).len()
    };
    SegmentCount {
        encoding,
        units,
        segments,
    }
}

/// Cuts `text` into the parts of a concatenated SMS: one part when it fits a single
/// message, otherwise parts of at most 153 septets / 67 code units, never splitting an
/// escape sequence or a surrogate pair. Joining the parts gives back `text`.
pub fn split(text: &str) -> Vec<String> {
    let encoding = encoding(text);
    let units: usize = text.chars().map(|c| encoding.cost(c)).sum();
    if units <= encoding.single_limit() {
        return vec![text.to_owned()];
    }
    split_with(text, encoding)
}

fn split_with(text: &str, encoding: Encoding) -> Vec<String> {
    let limit = encoding.part_limit();
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut used = 0;
    for c in text.chars() {
        let cost = encoding.cost(c);
        if used + cost > limit {
            parts.push(std::mem::take(&mut current));
            used = 0;
        }
        current.push(c);
        used += cost;
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn counts_segments_like_the_network() {
        let a = |n: usize| "a".repeat(n);
        let euro = |n: usize| "€".repeat(n);
        let zh = |n: usize| "中".repeat(n);
        let smile = |n: usize| "😀".repeat(n);
        let cases: Vec<(&str, String, Encoding, usize, usize)> = vec![
            ("empty", String::new(), Encoding::Gsm7, 0, 1),
            ("short ascii", "hello".into(), Encoding::Gsm7, 5, 1),
            (
                "gsm accents",
                "Ça va? Ñandu è à ü".into(),
                Encoding::Gsm7,
                18,
                1,
            ),
            ("full single", a(160), Encoding::Gsm7, 160, 1),
            ("one over", a(161), Encoding::Gsm7, 161, 2),
            ("two full parts", a(306), Encoding::Gsm7, 306, 2),
            ("third part", a(307), Encoding::Gsm7, 307, 3),
            ("extension fits single", euro(80), Encoding::Gsm7, 160, 1),
            ("extension over single", euro(81), Encoding::Gsm7, 162, 2),
            (
                "extension counts double",
                format!("{}{{}}", a(158)),
                Encoding::Gsm7,
                162,
                2,
            ),
            // 306 septets would fit two parts by arithmetic, but the escape pair cannot
            // straddle the boundary, so the exact cut needs a third part.
            (
                "escape never straddles",
                format!("{}€{}", a(152), a(152)),
                Encoding::Gsm7,
                306,
                3,
            ),
            (
                "lowercase c cedilla is not gsm",
                "ç".into(),
                Encoding::Ucs2,
                1,
                1,
            ),
            ("chinese short", "你好".into(), Encoding::Ucs2, 2, 1),
            ("chinese full single", zh(70), Encoding::Ucs2, 70, 1),
            ("chinese one over", zh(71), Encoding::Ucs2, 71, 2),
            ("chinese two full parts", zh(134), Encoding::Ucs2, 134, 2),
            ("chinese third part", zh(135), Encoding::Ucs2, 135, 3),
            (
                "mixed latin and chinese",
                "Hello 你好".into(),
                Encoding::Ucs2,
                8,
                1,
            ),
            ("emoji pairs fit single", smile(35), Encoding::Ucs2, 70, 1),
            // 72 units: 33 pairs (66 units) per part since the 34th pair would need 68.
            ("emoji pairs over single", smile(36), Encoding::Ucs2, 72, 2),
            ("emoji makes ucs2", "ok 👍".into(), Encoding::Ucs2, 5, 1),
            (
                "pair never straddles",
                format!("{}😀{}", zh(66), zh(4)),
                Encoding::Ucs2,
                72,
                2,
            ),
            (
                "pair pushed to next part",
                format!("{}😀{}", zh(66), zh(67)),
                Encoding::Ucs2,
                135,
                3,
            ),
        ];
        for (name, text, encoding, units, segments) in cases {
            let got = count(&text);
            assert_eq!(
                got,
                SegmentCount {
                    encoding,
                    units,
                    segments
                },
                "{name}"
            );
            assert_eq!(split(&text).len(), segments, "{name}: split agrees");
        }
    }

    #[test]
    fn splits_at_the_documented_sizes() {
        let parts = split(&"a".repeat(161));
        assert_eq!(parts.iter().map(String::len).collect::<Vec<_>>(), [153, 8]);
        let parts = split(&format!("{}😀{}", "中".repeat(66), "中".repeat(4)));
        assert_eq!(parts[0], "中".repeat(66));
        assert_eq!(parts[1], format!("😀{}", "中".repeat(4)));
        let parts = split(&format!("{}€{}", "a".repeat(152), "a".repeat(152)));
        assert_eq!(parts[0], "a".repeat(152));
        assert!(parts[1].starts_with('€'));
    }

    fn units_of(part: &str, encoding: Encoding) -> usize {
        part.chars().map(|c| encoding.cost(c)).sum()
    }

    fn text_of(chars: &'static [char], max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(chars), 0..max)
            .prop_map(|chars| chars.into_iter().collect())
    }

    fn check_parts(text: &str) -> Result<(), TestCaseError> {
        let parts = split(text);
        prop_assert_eq!(parts.concat(), text);
        let enc = encoding(text);
        if parts.len() > 1 {
            for part in &parts {
                prop_assert!(!part.is_empty());
                prop_assert!(units_of(part, enc) <= enc.part_limit());
            }
        } else {
            prop_assert!(units_of(&parts[0], enc) <= enc.single_limit());
        }
        prop_assert_eq!(count(text).segments, parts.len());
        Ok(())
    }

    proptest! {
        #[test]
        fn gsm_parts_rejoin_and_respect_limits(
            text in text_of(&['a', ' ', '€', '{', '[', '~', '\\', 'é', '\n'], 700)
        ) {
            prop_assert_eq!(encoding(&text), Encoding::Gsm7);
            check_parts(&text)?;
        }

        #[test]
        fn ucs2_parts_rejoin_and_respect_limits(
            text in text_of(&['a', '中', '😀', '€', 'ç', '𝄞', ' '], 300)
        ) {
            check_parts(&text)?;
        }

        #[test]
        fn any_text_rejoins(text in "\\PC{0,400}") {
            check_parts(&text)?;
        }

        #[test]
        fn long_gsm_texts_fill_parts_greedily(n in 161usize..2000) {
            let text = "x".repeat(n);
            prop_assert_eq!(count(&text).segments, n.div_ceil(GSM7_PART));
        }
    }
}
