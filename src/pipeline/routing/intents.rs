//! Intent classification from keywords, regexes, weights and negative keywords.
//!
//! Score of an intent = `weight` × distinct keywords found + `regex_weight` × regexes that
//! match. A keyword found only inside a longer keyword of another intent does not count
//! (「包裹破损」 is about damage, not about where the parcel is), nor does one inside a longer
//! keyword of the same intent (one phrase is one piece of evidence). A negative keyword rules
//! the intent out. The best intent at or above its `min_score` wins, ties going to the one
//! listed first; its confidence is `score / (score + runner-up + 1)`, so one keyword alone
//! gives 0.5 and a close competitor lowers it.

use regex::{Regex, RegexSet, RegexSetBuilder};
use serde::Serialize;

use super::lexicon::{Hit, Lexicon, Owner};
use crate::config::IntentConfig;

/// One intent as compiled.
#[derive(Debug, Clone)]
pub struct IntentDef {
    /// Name.
    pub name: String,
    /// Score per keyword.
    pub weight: f64,
    /// Score per regex.
    pub regex_weight: f64,
    /// Lowest counting score.
    pub min_score: f64,
    /// Ends stickiness.
    pub breaks_stickiness: bool,
}

/// Every intent with its regexes.
#[derive(Debug, Clone, Default)]
pub struct Intents {
    /// Intents in config order.
    pub defs: Vec<IntentDef>,
    set: Option<RegexSet>,
    /// `(intent, regex)` for each member of the set, in set order.
    regexes: Vec<(usize, Regex)>,
}

/// How one intent scored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntentScore {
    /// Index into [`Intents::defs`].
    #[serde(skip)]
    pub index: usize,
    /// Intent name.
    pub intent: String,
    /// Its score.
    pub score: f64,
    /// Keywords found (normalized).
    pub keywords: Vec<String>,
    /// Text matched by its regexes.
    pub regexes: Vec<String>,
    /// The negative keyword that ruled it out, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excluded_by: Option<String>,
}

/// The intent chosen from the text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Classified {
    /// Index into [`Intents::defs`].
    #[serde(skip)]
    pub index: usize,
    /// Intent name.
    pub name: String,
    /// Score.
    pub score: f64,
    /// `score / (score + runner-up + 1)`.
    pub confidence: f64,
}

/// Why a regex set could not be built.
#[derive(Debug, thiserror::Error)]
#[error("intents[{intent}].regexes[{regex}]: {message}")]
pub struct BadRegex {
    /// Intent index.
    pub intent: usize,
    /// Regex index within the intent.
    pub regex: usize,
    /// The compiler's message.
    pub message: String,
}

/// Compiles a pattern the way intents use it, for validation and for the set.
pub fn compile(pattern: &str) -> Result<Regex, String> {
    regex::RegexBuilder::new(pattern)
        .case_insensitive(true)
        .size_limit(1 << 22)
        .build()
        .map_err(|e| e.to_string())
}

impl Intents {
    /// Compiles `configs`; regexes that do not compile are an error (validation reports
    /// them first, with their position).
    pub fn new(configs: &[IntentConfig]) -> Result<Self, BadRegex> {
        let mut regexes = Vec::new();
        for (i, config) in configs.iter().enumerate() {
            for (j, pattern) in config.regexes.iter().enumerate() {
                let regex = compile(pattern).map_err(|message| BadRegex {
                    intent: i,
                    regex: j,
                    message,
                })?;
                regexes.push((i, regex));
            }
        }
        let set = if regexes.is_empty() {
            None
        } else {
            Some(
                RegexSetBuilder::new(regexes.iter().map(|(_, r)| r.as_str()))
                    .case_insensitive(true)
                    .size_limit(1 << 26)
                    .build()
                    .map_err(|e| BadRegex {
                        intent: 0,
                        regex: 0,
                        message: e.to_string(),
                    })?,
            )
        };
        Ok(Self {
            defs: configs
                .iter()
                .map(|c| IntentDef {
                    name: c.name.clone(),
                    weight: c.weight,
                    regex_weight: c.regex_weight,
                    min_score: c.min_score,
                    breaks_stickiness: c.breaks_stickiness,
                })
                .collect(),
            set,
            regexes,
        })
    }

    /// Index of the intent called `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.defs.iter().position(|d| d.name == name)
    }

    /// Scores every intent with evidence in `folded`, given the lexicon's `hits` on it.
    pub fn score(&self, lexicon: &Lexicon, hits: &[Hit], folded: &str) -> Vec<IntentScore> {
        if self.defs.is_empty() {
            return Vec::new();
        }
        // Few intents have evidence in one message: a short list searched linearly beats a
        // slot per intent.
        let mut scores: Vec<IntentScore> = Vec::new();
        let entry = |scores: &mut Vec<IntentScore>, i: usize| -> usize {
            match scores.iter().position(|s| s.index == i) {
                Some(at) => at,
                None => {
                    scores.push(IntentScore {
                        index: i,
                        intent: self.defs[i].name.clone(),
                        score: 0.0,
                        keywords: Vec::new(),
                        regexes: Vec::new(),
                        excluded_by: None,
                    });
                    scores.len() - 1
                }
            }
        };
        let keyword_hits: Vec<&Hit> = hits
            .iter()
            .filter(|h| {
                lexicon.words[h.word]
                    .owners
                    .iter()
                    .any(|o| matches!(o, Owner::Keyword(_)))
            })
            .collect();
        for hit in hits {
            let word = &lexicon.words[hit.word];
            for owner in &word.owners {
                match *owner {
                    Owner::Keyword(i) => {
                        let shadowed = keyword_hits.iter().any(|other| {
                            other.start <= hit.start
                                && hit.end <= other.end
                                && (other.end - other.start) > (hit.end - hit.start)
                        });
                        if shadowed {
                            continue;
                        }
                        let at = entry(&mut scores, i);
                        let s = &mut scores[at];
                        if !s.keywords.contains(&word.text) {
                            s.keywords.push(word.text.clone());
                            s.score += self.defs[i].weight;
                        }
                    }
                    Owner::Negative(i) => {
                        let at = entry(&mut scores, i);
                        let s = &mut scores[at];
                        if s.excluded_by.is_none() {
                            s.excluded_by = Some(word.text.clone());
                        }
                    }
                    _ => {}
                }
            }
        }
        if let Some(set) = &self.set {
            for index in set.matches(folded).iter() {
                let (i, regex) = &self.regexes[index];
                let matched = regex
                    .find(folded)
                    .map(|m| m.as_str().to_owned())
                    .unwrap_or_default();
                let at = entry(&mut scores, *i);
                let s = &mut scores[at];
                s.regexes.push(matched);
                s.score += self.defs[*i].regex_weight;
            }
        }
        scores.sort_by_key(|s| s.index);
        scores
    }

    /// The best intent among `scores`, if any counts.
    pub fn best(&self, scores: &[IntentScore]) -> Option<Classified> {
        let mut best: Option<(usize, f64)> = None;
        let mut runner_up = 0.0_f64;
        for s in scores {
            let i = s.index;
            if i >= self.defs.len() {
                continue;
            }
            if s.excluded_by.is_some() || s.score < self.defs[i].min_score || s.score <= 0.0 {
                continue;
            }
            match best {
                Some((b, score)) if s.score > score || (s.score == score && i < b) => {
                    runner_up = runner_up.max(score);
                    best = Some((i, s.score));
                }
                Some(_) => runner_up = runner_up.max(s.score),
                None => best = Some((i, s.score)),
            }
        }
        best.map(|(i, score)| Classified {
            index: i,
            name: self.defs[i].name.clone(),
            score,
            confidence: round3(score / (score + runner_up + 1.0)),
        })
    }
}

/// Three decimals, so explanations and envelopes show stable numbers.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::super::lexicon::LexiconBuilder;
    use super::super::normalize::keyword;
    use super::*;

    fn intent(name: &str, keywords: &[&str], regexes: &[&str], negative: &[&str]) -> IntentConfig {
        IntentConfig {
            name: name.to_owned(),
            keywords: keywords.iter().map(|s| s.to_string()).collect(),
            regexes: regexes.iter().map(|s| s.to_string()).collect(),
            negative_keywords: negative.iter().map(|s| s.to_string()).collect(),
            weight: 1.0,
            regex_weight: 2.0,
            min_score: 1.0,
            breaks_stickiness: false,
        }
    }

    fn classify(configs: &[IntentConfig], text: &str) -> (Vec<IntentScore>, Option<Classified>) {
        let intents = Intents::new(configs).unwrap();
        let mut builder = LexiconBuilder::default();
        for (i, c) in configs.iter().enumerate() {
            for k in &c.keywords {
                builder.add(&keyword(k, true), Owner::Keyword(i));
            }
            for k in &c.negative_keywords {
                builder.add(&keyword(k, true), Owner::Negative(i));
            }
        }
        let lexicon = builder.build().unwrap();
        let folded = super::super::normalize::normalize(text, true).folded;
        let hits = lexicon.find(&folded);
        let scores = intents.score(&lexicon, &hits, &folded);
        let best = intents.best(&scores);
        (scores, best)
    }

    fn pack() -> Vec<IntentConfig> {
        vec![
            intent("tracking", &["包裹", "where is", "tracking"], &[], &[]),
            intent(
                "damaged",
                &["包裹破损", "破损", "damaged"],
                &[r"\bbroken\b"],
                &["not damaged", "没有破损"],
            ),
        ]
    }

    #[test]
    fn the_longer_keyword_shadows_the_shorter_one_of_another_intent() {
        let (scores, best) = classify(&pack(), "我的包裹破损了");
        let best = best.unwrap();
        assert_eq!(best.name, "damaged");
        assert!(!scores.iter().any(|s| s.intent == "tracking"), "{scores:?}");
        assert_eq!(best.score, 1.0, "破损 inside 包裹破损 is the same evidence");
        assert_eq!(best.confidence, 0.5);
    }

    #[test]
    fn regexes_add_their_weight_and_report_the_matched_text() {
        let (scores, best) = classify(&pack(), "Where is my parcel? It arrived BROKEN");
        let best = best.unwrap();
        assert_eq!((best.name.as_str(), best.score), ("damaged", 2.0));
        let damaged = scores.iter().find(|s| s.intent == "damaged").unwrap();
        assert_eq!(damaged.regexes, vec!["broken"]);
        assert_eq!(best.confidence, 0.5, "2 / (2 + 1 + 1)");
    }

    #[test]
    fn negative_keywords_rule_an_intent_out() {
        let (scores, best) = classify(&pack(), "the box is not damaged, where is it");
        assert_eq!(best.unwrap().name, "tracking");
        let damaged = scores.iter().find(|s| s.intent == "damaged").unwrap();
        assert_eq!(damaged.excluded_by.as_deref(), Some("not damaged"));
    }

    #[test]
    fn traditional_text_meets_simplified_keywords() {
        let (_, best) = classify(&pack(), "我的包裹破損了");
        assert_eq!(best.unwrap().name, "damaged");
    }

    #[test]
    fn ties_go_to_the_intent_listed_first_and_nothing_found_is_none() {
        let configs = vec![
            intent("a", &["same"], &[], &[]),
            intent("b", &["same"], &[], &[]),
        ];
        assert_eq!(classify(&configs, "same").1.unwrap().name, "a");
        assert_eq!(classify(&configs, "nothing").1, None);
    }

    #[test]
    fn min_score_holds_back_weak_evidence() {
        let mut configs = pack();
        configs[0].min_score = 2.0;
        assert_eq!(classify(&configs, "where is it").1, None);
        assert_eq!(
            classify(&configs, "where is the tracking").1.unwrap().name,
            "tracking"
        );
    }
}
