//! Cuts the language model's streamed text into sentences, so speech synthesis can start on
//! the first sentence while the rest is still being generated.
//!
//! A sentence ends at `.` `!` `?` `…` (or a run of them, with any closing quotes or brackets
//! after) followed by whitespace, or at a newline. A lone `.` after an abbreviation (Dr. Mr.
//! Mrs. Ms. St. e.g. i.e. etc. vs.) or an initial (J. Smith) does not end one; a decimal point
//! (3.5) never does, as no whitespace follows it. A terminator at the very end of the text so
//! far decides nothing until the next delta shows what follows it.

/// Words that end in a `.` without ending the sentence (compared without case).
const ABBREVIATIONS: &[&str] = &["dr", "mr", "mrs", "ms", "st", "e.g", "i.e", "etc", "vs"];

/// Splits streamed text into sentences.
#[derive(Debug, Default)]
pub struct SentenceSplitter {
    pending: String,
}

impl SentenceSplitter {
    pub fn new() -> SentenceSplitter {
        SentenceSplitter::default()
    }

    /// Add a delta; returns the sentences it completed, trimmed, in order.
    pub fn push(&mut self, delta: &str) -> Vec<String> {
        self.pending.push_str(delta);
        let chars: Vec<(usize, char)> = self.pending.char_indices().collect();
        let mut sentences = Vec::new();
        let mut start = 0; // byte offset where the current sentence begins
        let mut i = 0;
        while i < chars.len() {
            let (at, c) = chars[i];
            if c == '\n' {
                push_trimmed(&mut sentences, &self.pending[start..at]);
                start = at + 1;
                i += 1;
                continue;
            }
            if !is_terminator(c) {
                i += 1;
                continue;
            }
            let mut end = i;
            while end < chars.len() && is_terminator(chars[end].1) {
                end += 1;
            }
            let lone_dot = end == i + 1 && c == '.';
            while end < chars.len() && is_closer(chars[end].1) {
                end += 1;
            }
            let Some(&(next_at, next)) = chars.get(end) else {
                break; // what follows is not known yet
            };
            if next.is_whitespace() && !(lone_dot && continues(&self.pending[start..at])) {
                push_trimmed(&mut sentences, &self.pending[start..next_at]);
                start = next_at;
            }
            i = end;
        }
        self.pending.drain(..start);
        sentences
    }

    /// The text after the last complete sentence, trimmed; none if only whitespace is left.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.pending);
        let rest = rest.trim();
        (!rest.is_empty()).then(|| rest.to_string())
    }
}

fn is_terminator(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…')
}

fn is_closer(c: char) -> bool {
    matches!(c, '"' | '\'' | ')' | ']' | '}' | '”' | '’' | '»')
}

/// Does a `.` right after `before` leave the sentence open (an abbreviation or an initial)?
fn continues(before: &str) -> bool {
    let word = before
        .rsplit(char::is_whitespace)
        .next()
        .unwrap_or("")
        .trim_start_matches(['(', '[', '"', '\'', '“', '‘', '«']);
    let mut letters = word.chars();
    let initial = matches!((letters.next(), letters.next()), (Some(c), None) if c.is_uppercase());
    initial
        || ABBREVIATIONS
            .iter()
            .any(|abbreviation| word.eq_ignore_ascii_case(abbreviation))
}

fn push_trimmed(sentences: &mut Vec<String>, text: &str) {
    let text = text.trim();
    if !text.is_empty() {
        sentences.push(text.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// All sentences of `deltas`, fed one by one, with what `finish` leaves.
    fn split(deltas: &[&str]) -> Vec<String> {
        let mut splitter = SentenceSplitter::new();
        let mut sentences: Vec<String> = deltas.iter().flat_map(|d| splitter.push(d)).collect();
        sentences.extend(splitter.finish());
        sentences
    }

    #[test]
    fn sentences_end_at_terminators_followed_by_space() {
        assert_eq!(
            split(&["Hello there! How are you? I am fine. Bye"]),
            ["Hello there!", "How are you?", "I am fine.", "Bye"]
        );
        assert_eq!(
            split(&["Wait... what?! Really…  Yes."]),
            ["Wait...", "what?!", "Really…", "Yes."]
        );
        assert_eq!(
            split(&["He said \"stop.\" Then (quietly.) left."]),
            ["He said \"stop.\"", "Then (quietly.)", "left."]
        );
    }

    #[test]
    fn a_newline_ends_a_sentence() {
        assert_eq!(
            split(&["First line\nsecond line\n\n- item\n"]),
            ["First line", "second line", "- item"]
        );
    }

    #[test]
    fn decimals_abbreviations_and_initials_do_not_split() {
        assert_eq!(
            split(&["It costs 3.5 dollars. Dr. Who met Mr. and Mrs. Smith on Main St. today."]),
            [
                "It costs 3.5 dollars.",
                "Dr. Who met Mr. and Mrs. Smith on Main St. today."
            ]
        );
        assert_eq!(
            split(&[
                "Bring fruit, e.g. apples, i.e. red ones, etc. and J. R. Smith vs. Ms. Lee. Done."
            ]),
            [
                "Bring fruit, e.g. apples, i.e. red ones, etc. and J. R. Smith vs. Ms. Lee.",
                "Done."
            ]
        );
    }

    #[test]
    fn deltas_split_mid_word_and_mid_abbreviation() {
        assert_eq!(split(&["Hel", "lo. Wor", "ld", "."]), ["Hello.", "World."]);
        assert_eq!(
            split(&[
                "Call D", "r", ".", " Smith", " at 3", ".", "5 pm", ". ", "Thanks"
            ]),
            ["Call Dr. Smith at 3.5 pm.", "Thanks"]
        );
        assert_eq!(
            split(&["Use e", ".", "g", ". ", "this", "!", " Ok"]),
            ["Use e.g. this!", "Ok"]
        );
    }

    #[test]
    fn push_returns_each_sentence_once_as_it_completes() {
        let mut splitter = SentenceSplitter::new();
        assert!(splitter.push("One.").is_empty());
        assert_eq!(splitter.push(" Two"), ["One."]);
        assert!(splitter.push(".").is_empty());
        assert_eq!(splitter.push("\n"), ["Two."]);
        assert_eq!(splitter.finish(), None);
        assert_eq!(splitter.push("  Three  "), Vec::<String>::new());
        assert_eq!(splitter.finish().as_deref(), Some("Three"));
    }
}
