//! The pronunciation dictionary (CMU `cmudict-en-us.dict`), read once per process and shared
//! by every decoder: a grammar-mode decoder starts with no words and is given only the ones
//! its grammar uses, so it never holds its own copy of the 135 000-word dictionary.
//!
//! The file's lines are `word phone phone ...`; alternative pronunciations are `word(2) ...`.
//! The text is kept as read, with a sorted index into it (a few MB in all).

use std::ops::Range;
use std::path::{Path, PathBuf};

/// Why the dictionary could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DictionaryError {
    #[error("cannot read pronunciation dictionary {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pronunciation dictionary {path}: line {line} has no phones")]
    Malformed { path: PathBuf, line: usize },
    #[error("pronunciation dictionary {path} is too large to index")]
    TooLarge { path: PathBuf },
}

/// One entry: where its key (`word` or `word(2)`) and its phones are in the text.
#[derive(Debug, Clone, Copy)]
struct Entry {
    key_start: u32,
    key_len: u16,
    /// Length of the base word (the key without a `(n)` suffix).
    word_len: u16,
    phones_start: u32,
    phones_len: u32,
}

/// Words and their pronunciations.
pub struct Dictionary {
    text: String,
    /// Sorted by base word, then by position in the file (the main pronunciation first).
    entries: Vec<Entry>,
}

/// One pronunciation of a word, in the form the decoder's `add_word` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pronunciation<'a> {
    /// `word`, or `word(2)` for an alternative.
    pub key: &'a str,
    /// Whitespace-separated phones.
    pub phones: &'a str,
}

impl Dictionary {
    pub fn read(path: &Path) -> Result<Dictionary, DictionaryError> {
        let text = std::fs::read_to_string(path).map_err(|source| DictionaryError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(text).map_err(|e| match e {
            ParseError::Malformed(line) => DictionaryError::Malformed {
                path: path.to_path_buf(),
                line,
            },
            ParseError::TooLarge => DictionaryError::TooLarge {
                path: path.to_path_buf(),
            },
        })
    }

    fn parse(text: String) -> Result<Dictionary, ParseError> {
        if text.len() > u32::MAX as usize {
            return Err(ParseError::TooLarge);
        }
        let mut entries = Vec::with_capacity(text.len() / 24);
        let mut offset = 0usize;
        for (number, line) in text.split_inclusive('\n').enumerate() {
            let start = offset;
            offset += line.len();
            let line = line.trim_end();
            let Some((key, phones)) = line.split_once(char::is_whitespace) else {
                if line.trim().is_empty() {
                    continue;
                }
                return Err(ParseError::Malformed(number + 1));
            };
            let phones = phones.trim();
            if phones.is_empty() || key.len() > u16::MAX as usize {
                return Err(ParseError::Malformed(number + 1));
            }
            let word_len = base_word(key).len();
            let phones_start = phones.as_ptr() as usize - text.as_ptr() as usize;
            entries.push(Entry {
                key_start: start as u32,
                key_len: key.len() as u16,
                word_len: word_len as u16,
                phones_start: phones_start as u32,
                phones_len: phones.len() as u32,
            });
        }
        let mut dictionary = Dictionary { text, entries };
        // Stable: alternatives keep their file order after the main entry.
        let mut entries = std::mem::take(&mut dictionary.entries);
        entries.sort_by(|a, b| dictionary.word(a).cmp(dictionary.word(b)));
        dictionary.entries = entries;
        Ok(dictionary)
    }

    fn slice(&self, range: Range<usize>) -> &str {
        &self.text[range]
    }

    fn word(&self, e: &Entry) -> &str {
        let start = e.key_start as usize;
        self.slice(start..start + e.word_len as usize)
    }

    /// Every pronunciation of `word` (lower case, as in the file), main one first; empty when
    /// the word is unknown.
    pub fn pronunciations(&self, word: &str) -> impl Iterator<Item = Pronunciation<'_>> {
        let first = self.entries.partition_point(|e| self.word(e) < word);
        self.entries[first..]
            .iter()
            .take_while(move |e| self.word(e) == word)
            .map(|e| {
                let key = e.key_start as usize;
                let phones = e.phones_start as usize;
                Pronunciation {
                    key: self.slice(key..key + e.key_len as usize),
                    phones: self.slice(phones..phones + e.phones_len as usize),
                }
            })
    }

    /// Whether `word` has a pronunciation.
    pub fn contains(&self, word: &str) -> bool {
        self.pronunciations(word).next().is_some()
    }

    /// Number of pronunciations.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl std::fmt::Debug for Dictionary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dictionary")
            .field("pronunciations", &self.entries.len())
            .finish_non_exhaustive()
    }
}

enum ParseError {
    Malformed(usize),
    TooLarge,
}

/// `word(2)` → `word`.
fn base_word(key: &str) -> &str {
    match key.rfind('(') {
        Some(i) if key.ends_with(')') && i > 0 => &key[..i],
        _ => key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dictionary(text: &str) -> Dictionary {
        Dictionary::parse(text.to_string()).ok().expect("parses")
    }

    #[test]
    fn finds_every_pronunciation_in_file_order() {
        let d = dictionary("zero Z IH R OW\neither IY DH ER\neither(2) AY DH ER\nyes Y EH S\n");
        let either: Vec<_> = d.pronunciations("either").collect();
        assert_eq!(
            either,
            [
                Pronunciation {
                    key: "either",
                    phones: "IY DH ER"
                },
                Pronunciation {
                    key: "either(2)",
                    phones: "AY DH ER"
                }
            ]
        );
        assert_eq!(d.pronunciations("yes").next().unwrap().phones, "Y EH S");
        assert!(d.contains("zero"));
        assert!(!d.contains("eithe"));
        assert!(!d.contains("yess"));
        assert_eq!(d.len(), 4);
    }

    #[test]
    fn tolerates_blank_lines_and_rejects_words_without_phones() {
        let d = dictionary("\nno N OW\n\n");
        assert!(d.contains("no"));
        assert!(matches!(
            Dictionary::parse("no N OW\nbroken\n".into()),
            Err(ParseError::Malformed(2))
        ));
    }
}
