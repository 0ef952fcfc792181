//! Text helpers for what a connector puts into errors and logs.

/// The first `max_chars` characters of `text`, cut at a character boundary (a byte cut could
/// split a multi-byte character and panic): for excerpts of provider answers in errors.
pub fn truncate_chars(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_on_character_boundaries() {
        let cases = [
            ("hello", 3, "hel"),
            ("hello", 5, "hello"),
            ("hello", 9, "hello"),
            ("错误信息", 2, "错误"),
            ("a😀b", 2, "a😀"),
            ("", 4, ""),
            ("abc", 0, ""),
        ];
        for (text, max, want) in cases {
            assert_eq!(truncate_chars(text, max), want, "{text} {max}");
        }
    }
}
