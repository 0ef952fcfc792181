//! AMQP topic routing keys and patterns, as RabbitMQ matches them: `*` stands for exactly one
//! word, `#` for zero or more.

/// A routing-key word as the daemon writes them: lowercase letters, digits, `-`, `_`.
pub fn is_word(word: &str) -> bool {
    !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// A routing key: words separated by dots.
pub fn is_key(key: &str) -> bool {
    key.split('.').all(is_word)
}

/// A binding pattern: words, `*` or `#`, separated by dots.
pub fn is_pattern(pattern: &str) -> bool {
    pattern
        .split('.')
        .all(|w| w == "*" || w == "#" || is_word(w))
}

/// Whether `pattern` accepts `key`.
pub fn matches(pattern: &str, key: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let key: Vec<&str> = key.split('.').collect();
    matches_words(&pattern, &key)
}

fn matches_words(pattern: &[&str], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((&"#", rest)) => (0..=key.len()).any(|skip| matches_words(rest, &key[skip..])),
        Some((&word, rest)) => match key.split_first() {
            Some((first, key_rest)) => {
                (word == "*" || word == *first) && matches_words(rest, key_rest)
            }
            None => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_like_rabbitmq() {
        let cases = [
            ("claims.*", "claims.vip", true),
            ("claims.*", "claims", false),
            ("claims.*", "claims.vip.x", false),
            ("*.vip", "tracking.vip", true),
            ("#", "a.b.c", true),
            ("#", "a", true),
            ("a.#", "a", true),
            ("a.#.c", "a.c", true),
            ("a.#.c", "a.b.b.c", true),
            ("a.#.c", "a.b.d", false),
            ("tracking.standard", "tracking.standard", true),
            ("tracking.standard", "tracking.vip", false),
        ];
        for (pattern, key, expected) in cases {
            assert_eq!(matches(pattern, key), expected, "{pattern} ~ {key}");
        }
    }

    #[test]
    fn validates_words_keys_and_patterns() {
        assert!(is_key("claims.vip"));
        assert!(!is_key("claims..vip"));
        assert!(!is_key("Claims.vip"));
        assert!(is_pattern("*.vip"));
        assert!(is_pattern("#"));
        assert!(!is_pattern("a.b*"));
    }
}
