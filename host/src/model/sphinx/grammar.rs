//! What the caller is expected to say, as a JSGF grammar: a list of phrases ("yes", "talk to
//! an operator") and optionally a spoken number (a run of digits). Recognising against a small
//! grammar is what makes PocketSphinx usable on phone audio (see `offline-speech.md`: exact
//! on a natural voice, far better than its large-vocabulary mode on a robotic one).

use std::collections::BTreeSet;
use std::fmt::Write as _;

/// The words a spoken digit can be; "oh" is how people say 0 in phone numbers.
pub const DIGIT_WORDS: [&str; 11] = [
    "zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

/// Why a list of phrases is not a grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrammarError {
    #[error("a grammar needs at least one phrase or digits")]
    Empty,
    #[error("phrase {0:?} has no words")]
    EmptyPhrase(String),
}

/// Phrases to recognise, normalised to lower-case words.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Grammar {
    phrases: Vec<Vec<String>>,
    digits: bool,
}

impl Grammar {
    /// A grammar of `phrases` (any case and punctuation; a digit inside a phrase is its word,
    /// "press 1" → "press one"). Duplicates are dropped.
    pub fn new<I, S>(phrases: I) -> Result<Grammar, GrammarError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut seen = BTreeSet::new();
        let mut normalised = Vec::new();
        for phrase in phrases {
            let phrase = phrase.as_ref();
            let words = words(phrase);
            if words.is_empty() {
                return Err(GrammarError::EmptyPhrase(phrase.to_string()));
            }
            if seen.insert(words.clone()) {
                normalised.push(words);
            }
        }
        Ok(Grammar {
            phrases: normalised,
            digits: false,
        })
    }

    /// Also accept a spoken number: one or more digits ("four two", "oh seven").
    pub fn with_digits(mut self) -> Grammar {
        self.digits = true;
        self
    }

    /// Only a spoken number.
    pub fn digits() -> Grammar {
        Grammar {
            phrases: Vec::new(),
            digits: true,
        }
    }

    /// Every distinct word the grammar can produce, sorted.
    pub fn words(&self) -> BTreeSet<&str> {
        let mut words: BTreeSet<&str> = self.phrases.iter().flatten().map(String::as_str).collect();
        if self.digits {
            words.extend(DIGIT_WORDS);
        }
        words
    }

    /// Whether `text` (lower-case words, as the recogniser gives them) is a whole sentence of
    /// the grammar.
    pub fn accepts(&self, text: &str) -> bool {
        let heard: Vec<&str> = text.split_whitespace().collect();
        if heard.is_empty() {
            return false;
        }
        self.phrases.iter().any(|p| p.iter().eq(heard.iter()))
            || (self.digits && heard.iter().all(|w| DIGIT_WORDS.contains(w)))
    }

    /// The grammar in JSGF 1.0, the form PocketSphinx parses.
    pub fn jsgf(&self) -> Result<String, GrammarError> {
        let mut alternatives: Vec<String> = self.phrases.iter().map(|p| p.join(" ")).collect();
        if self.digits {
            alternatives.push("<digits>".into());
        }
        if alternatives.is_empty() {
            return Err(GrammarError::Empty);
        }
        let mut jsgf = String::from("#JSGF V1.0;\ngrammar switchboard;\n");
        let _ = writeln!(jsgf, "public <answer> = {};", alternatives.join(" | "));
        if self.digits {
            let _ = writeln!(jsgf, "<digits> = <digit>+;");
            let _ = writeln!(jsgf, "<digit> = {};", DIGIT_WORDS.join(" | "));
        }
        Ok(jsgf)
    }
}

/// Lower-case words of `phrase`: letters and apostrophes; digits become their words; anything
/// else separates words.
fn words(phrase: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    for c in phrase.chars().flat_map(char::to_lowercase) {
        if c.is_alphabetic() || c == '\'' {
            current.push(c);
            continue;
        }
        if !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        if let Some(d) = c.to_digit(10) {
            // "0" is read "zero": the grammar's digit rule accepts "oh" too.
            words.push(DIGIT_WORDS[if d == 0 { 0 } else { d as usize + 1 }].to_string());
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    // A lone apostrophe ("rock 'n' roll" quotes) is not a word.
    words.retain(|w| w.chars().any(char::is_alphabetic));
    words
        .into_iter()
        .map(|w| w.trim_matches('\'').to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_phrases_and_writes_jsgf() {
        let g = Grammar::new(["Yes", "no.", "Talk to an OPERATOR!", "yes", "press 1"])
            .unwrap()
            .with_digits();
        assert_eq!(
            g.jsgf().unwrap(),
            "#JSGF V1.0;\ngrammar switchboard;\n\
             public <answer> = yes | no | talk to an operator | press one | <digits>;\n\
             <digits> = <digit>+;\n\
             <digit> = zero | oh | one | two | three | four | five | six | seven | eight | nine;\n"
        );
        let words = g.words();
        for w in ["yes", "no", "talk", "operator", "press", "oh", "nine"] {
            assert!(words.contains(w), "{w}");
        }
    }

    #[test]
    fn accepts_only_whole_sentences() {
        let g = Grammar::new(["cancel", "talk to an operator"])
            .unwrap()
            .with_digits();
        assert!(g.accepts("cancel"));
        assert!(g.accepts("talk to an operator"));
        assert!(g.accepts("oh four two"));
        assert!(!g.accepts("talk to"));
        assert!(!g.accepts("cancel two"));
        assert!(!g.accepts(""));
        assert!(!Grammar::new(["yes"]).unwrap().accepts("two"));
    }

    #[test]
    fn keeps_apostrophes_inside_words() {
        let g = Grammar::new(["I'd like 'that'", "don't"]).unwrap();
        assert_eq!(
            g.jsgf().unwrap().lines().nth(2).unwrap(),
            "public <answer> = i'd like that | don't;"
        );
    }

    #[test]
    fn rejects_empty_grammars_and_phrases() {
        assert_eq!(
            Grammar::new(["yes", " ?! "]),
            Err(GrammarError::EmptyPhrase(" ?! ".into()))
        );
        let none: [&str; 0] = [];
        assert_eq!(Grammar::new(none).unwrap().jsgf(), Err(GrammarError::Empty));
        assert!(Grammar::digits().jsgf().unwrap().contains("<digit>+"));
    }
}
