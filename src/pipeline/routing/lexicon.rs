//! Every configured word (intent keywords and negative keywords, rule keywords, abusive
//! words, carrier names) in one Aho-Corasick automaton, so a message is scanned once however
//! many thousands of words there are. Rebuilt whole with the policy on reload.

use aho_corasick::{AhoCorasick, MatchKind};

/// Who a word belongs to; one word can belong to several.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// A keyword of intent `n`.
    Keyword(usize),
    /// A negative keyword of intent `n`.
    Negative(usize),
    /// A keyword of rule `n`.
    Rule(usize),
    /// An abusive word.
    Abuse,
    /// A name of carrier `n` (tracking-number disambiguation).
    Carrier(usize),
}

/// One distinct normalized word.
#[derive(Debug, Clone)]
pub struct Word {
    /// The normalized word, without a trailing `*`.
    pub text: String,
    /// Written with a trailing `*`: may end inside a longer Latin word.
    pub prefix: bool,
    /// Everything this word stands for.
    pub owners: Vec<Owner>,
}

/// A word found in a text, at byte offsets of the folded text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// Index into [`Lexicon::words`].
    pub word: usize,
    /// Start offset.
    pub start: usize,
    /// End offset.
    pub end: usize,
}

/// The automaton and its words.
#[derive(Debug, Clone, Default)]
pub struct Lexicon {
    automaton: Option<AhoCorasick>,
    /// Distinct words, indexed by pattern id.
    pub words: Vec<Word>,
}

/// Collects words before the automaton is built, merging duplicates.
#[derive(Debug, Default)]
pub struct LexiconBuilder {
    words: Vec<Word>,
    index: std::collections::HashMap<(String, bool), usize>,
}

impl LexiconBuilder {
    /// Adds an already-normalized word for `owner`; returns its index. A trailing `*` marks
    /// a prefix word. Empty words are ignored (validation reports them).
    pub fn add(&mut self, normalized: &str, owner: Owner) -> Option<usize> {
        let (text, prefix) = match normalized.strip_suffix('*') {
            Some(stem) => (stem.trim_end(), true),
            None => (normalized, false),
        };
        if text.is_empty() {
            return None;
        }
        let key = (text.to_owned(), prefix);
        let index = *self.index.entry(key).or_insert_with(|| {
            self.words.push(Word {
                text: text.to_owned(),
                prefix,
                owners: Vec::new(),
            });
            self.words.len() - 1
        });
        let word = &mut self.words[index];
        if !word.owners.contains(&owner) {
            word.owners.push(owner);
        }
        Some(index)
    }

    /// Builds the automaton.
    pub fn build(self) -> Result<Lexicon, String> {
        if self.words.is_empty() {
            return Ok(Lexicon::default());
        }
        // Standard semantics report every occurrence, overlapping ones included: a short
        // abusive word inside a longer keyword must still be seen.
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .build(self.words.iter().map(|w| w.text.as_str()))
            .map_err(|e| format!("cannot build the keyword automaton: {e}"))?;
        Ok(Lexicon {
            automaton: Some(automaton),
            words: self.words,
        })
    }
}

fn latin(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

impl Lexicon {
    /// Every word occurring in `folded`, in order of end offset. Words starting (ending) with
    /// a Latin letter or digit must not be glued to another one on that side, so `hi` is not
    /// found in `this`; a prefix word may be followed by more letters.
    pub fn find(&self, folded: &str) -> Vec<Hit> {
        let Some(automaton) = &self.automaton else {
            return Vec::new();
        };
        let mut hits = Vec::new();
        for m in automaton.find_overlapping_iter(folded) {
            let word = &self.words[m.pattern().as_usize()];
            let (start, end) = (m.start(), m.end());
            let first = word.text.chars().next();
            let last = word.text.chars().next_back();
            if first.is_some_and(latin) && folded[..start].chars().next_back().is_some_and(latin) {
                continue;
            }
            if !word.prefix
                && last.is_some_and(latin)
                && folded[end..].chars().next().is_some_and(latin)
            {
                continue;
            }
            hits.push(Hit {
                word: m.pattern().as_usize(),
                start,
                end,
            });
        }
        hits
    }

    /// Number of distinct words.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether there are no words.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lexicon(words: &[&str]) -> Lexicon {
        let mut builder = LexiconBuilder::default();
        for (i, w) in words.iter().enumerate() {
            builder.add(w, Owner::Keyword(i));
        }
        builder.build().unwrap()
    }

    fn found(lexicon: &Lexicon, text: &str) -> Vec<String> {
        lexicon
            .find(text)
            .into_iter()
            .map(|h| text[h.start..h.end].to_owned())
            .collect()
    }

    #[test]
    fn latin_words_match_whole_words_and_cjk_anywhere() {
        let l = lexicon(&["hi", "refund*", "包裹", "包裹破损"]);
        assert_eq!(found(&l, "this is it"), Vec::<String>::new());
        assert_eq!(found(&l, "hi there"), vec!["hi"]);
        assert_eq!(found(&l, "我要refunds了"), vec!["refund"]);
        assert_eq!(found(&l, "prerefund"), Vec::<String>::new());
        assert_eq!(found(&l, "我的包裹破损了"), vec!["包裹", "包裹破损"]);
    }

    #[test]
    fn duplicate_words_merge_their_owners() {
        let mut builder = LexiconBuilder::default();
        let a = builder.add("damaged", Owner::Keyword(0));
        let b = builder.add("damaged", Owner::Rule(3));
        assert_eq!(a, b);
        let l = builder.build().unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l.words[0].owners, vec![Owner::Keyword(0), Owner::Rule(3)]);
        assert!(builder_empty_is_fine());
    }

    fn builder_empty_is_fine() -> bool {
        LexiconBuilder::default()
            .build()
            .unwrap()
            .find("anything")
            .is_empty()
    }
}
