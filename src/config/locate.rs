//! Finding where a key path (`connectors.app[0].webhook.url`) stands in the TOML source, so
//! problems found after deserialization still point at a line and column.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A table key.
    Key(String),
    /// An index into an array (of tables).
    Index(usize),
}

/// Parses `a.b[2].c` into segments. Keys containing dots or brackets are written quoted:
/// `tiers.customers."app:x:u"`.
pub fn parse_path(path: &str) -> Vec<Segment> {
    let mut segments = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        rest = rest.strip_prefix('.').unwrap_or(rest);
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            segments.push(Segment::Key(quoted[..end].to_owned()));
            rest = quoted.get(end + 1..).unwrap_or("");
        } else if let Some(indexed) = rest.strip_prefix('[') {
            let end = indexed.find(']').unwrap_or(indexed.len());
            if let Ok(index) = indexed[..end].parse() {
                segments.push(Segment::Index(index));
            }
            rest = indexed.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            segments.push(Segment::Key(rest[..end].to_owned()));
            rest = &rest[end..];
        }
    }
    segments
}

/// The span of the deepest part of `path` present in `source`: the key itself when found,
/// else its nearest existing parent. `None` when the source does not parse or nothing of
/// the path exists.
pub fn locate(source: &str, path: &str) -> Option<Range<usize>> {
    let root = DeTable::parse(source).ok()?;
    let segments = parse_path(path);
    let mut table: &DeTable<'_> = root.get_ref();
    let mut value: Option<&DeValue<'_>> = None;
    let mut found: Option<Range<usize>> = None;
    for segment in &segments {
        match (segment, value) {
            (Segment::Key(key), None | Some(DeValue::Table(_))) => {
                if let Some(DeValue::Table(t)) = value {
                    table = t;
                }
                let Some((k, v)) = table
                    .iter()
                    .find(|(k, _)| k.get_ref().as_ref() == key.as_str())
                else {
                    break;
                };
                found = Some(k.span());
                value = Some(v.get_ref());
            }
            (Segment::Index(index), Some(DeValue::Array(array))) => {
                let Some(item) = array.get(*index) else {
                    break;
                };
                // Tables of an array of tables have their header as span, which is where a
                // reader looks first.
                found = Some(item.span());
                value = Some(item.get_ref());
            }
            _ => break,
        }
    }
    found
}

/// 1-based line and column of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "[broker]\nprefix = \"x\"\n\n[[connectors.app]]\nid = \"a\"\n\n[[connectors.app]]\nid = \"b\"\n[connectors.app.webhook]\nurl = \"u\"\n\n[tiers.customers]\n\"app:a:u\" = \"vip\"\n";

    fn at(path: &str) -> Option<(usize, usize)> {
        locate(SOURCE, path).map(|span| line_col(SOURCE, span.start))
    }

    #[test]
    fn finds_keys_in_tables_and_arrays_of_tables() {
        assert_eq!(at("broker.prefix"), Some((2, 1)));
        assert_eq!(at("connectors.app[1].id"), Some((8, 1)));
        assert_eq!(at("connectors.app[1].webhook.url"), Some((10, 1)));
        assert_eq!(at("tiers.customers.\"app:a:u\""), Some((13, 1)));
    }

    #[test]
    fn falls_back_to_the_nearest_parent() {
        assert_eq!(at("broker.missing"), Some((1, 2)));
        assert_eq!(at("nothing.here"), None);
    }

    #[test]
    fn parses_quoted_and_indexed_segments() {
        assert_eq!(
            parse_path("a[3].\"b.c\".d"),
            vec![
                Segment::Key("a".into()),
                Segment::Index(3),
                Segment::Key("b.c".into()),
                Segment::Key("d".into())
            ]
        );
    }
}
