//! Offline speech recognition with PocketSphinx 5 and the CMU en-us model (no key, no
//! network): phone audio in, text and a confidence out.
//!
//! Two modes, chosen per utterance: a grammar of the phrases the caller is expected to say
//! ([`Grammar`]: "yes", "operator", digits...), accurate and cheap, and large vocabulary (the
//! model's 3-gram language model), a weak fallback for anything. Figures measured on this kind
//! of machine are in `shared/reference/offline-speech.md` and in this module's tests.
//!
//! Sharing: PocketSphinx shares nothing between decoders (each loads its own acoustic model),
//! so what is shared is done here. The pronunciation dictionary is read once per process
//! ([`Dictionary`]) and a grammar-mode decoder is given only its grammar's words, instead of
//! each loading the 135 000-word file. Decoders are pooled: one released by a finished call is
//! handed to the next, with the grammars it has already compiled, so a call does not pay the
//! model load. Large vocabulary loads the full dictionary and the language model into that
//! decoder (tens of MB; see the tests' memory figures).
//!
//! The acoustic model is 16 kHz only (no 8 kHz model ships in any package, and running the 16
//! kHz one at 8 kHz gives garbage), so 8 kHz call audio is resampled to 16 kHz here with the
//! project's resampler. Decoding is CPU work (milliseconds per second of audio in grammar
//! mode): callers run it off the async runtime.

mod dictionary;
mod engine;
mod grammar;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Deserialize;

use crate::resample::{ResampleError, StreamResampler};
pub use dictionary::{Dictionary, DictionaryError, Pronunciation};
pub use engine::EngineError;
use engine::{Engine, EngineSettings, MODEL_RATE};
pub use grammar::{DIGIT_WORDS, Grammar, GrammarError};

/// Where the Debian package `pocketsphinx-en-us` installs the model (the PyPI wheel
/// `pocketsphinx` holds the same files under `pocketsphinx/model/en-us`).
pub const DEFAULT_MODEL_DIR: &str = "/usr/share/pocketsphinx/model/en-us";
/// Grammars a decoder keeps compiled; the oldest is freed past this.
const GRAMMARS_PER_DECODER: usize = 8;
/// The search name of large-vocabulary mode.
const LARGE_VOCABULARY: &str = "large-vocabulary";
/// The longest utterance kept for decoding (20 s at 16 kHz, 640 KB); audio past it is dropped.
/// Turn detection ends a caller's turn long before.
const MAX_UTTERANCE_SAMPLES: usize = 20 * MODEL_RATE as usize;
/// The resampler's filter block: long and steep, since a whole utterance is decoded at once
/// and the delay does not matter. Measured on the 44-phrase espeak-ng set: 24/44 intents right
/// with the 20 ms filter calls use, 27–29 with this one, 30–32 with sox's resampler.
const RESAMPLER_BLOCK_MS: u32 = 200;
/// 10 ms at the model's rate: the step silence is trimmed in.
const TRIM_FRAME: usize = MODEL_RATE as usize / 100;
/// RMS below which a 10 ms frame at either end of an utterance is line silence (about -60
/// dBFS) and is cut before decoding. Cut to the first and last loud frame, no margin: even 50
/// ms of digital silence kept at each end lost most phrases of the test set.
const SILENCE_RMS: i64 = 32;

fn default_model_dir() -> PathBuf {
    PathBuf::from(DEFAULT_MODEL_DIR)
}
fn default_idle_decoders() -> usize {
    8
}
fn default_large_vocabulary_decoders() -> usize {
    4
}

/// The recogniser's settings (`[model.recogniser]` style keys, kebab-case).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RecogniserConfig {
    /// Folder with `en-us/` (the acoustic model), `cmudict-en-us.dict` and `en-us.lm.bin`.
    #[serde(default = "default_model_dir")]
    pub model_dir: PathBuf,
    /// Decoders kept loaded between calls for the next ones.
    #[serde(default = "default_idle_decoders")]
    pub idle_decoders: usize,
    /// Decoders with the large vocabulary loaded (about 75 MiB each), in calls or idle, at
    /// most: past it a call's free speech is not recognised (logged) rather than the memory
    /// growing with the number of calls.
    #[serde(default = "default_large_vocabulary_decoders")]
    pub large_vocabulary_decoders: usize,
}

impl Default for RecogniserConfig {
    fn default() -> Self {
        Self {
            model_dir: default_model_dir(),
            idle_decoders: default_idle_decoders(),
            large_vocabulary_decoders: default_large_vocabulary_decoders(),
        }
    }
}

/// Why recognition could not be set up or run.
#[derive(Debug, thiserror::Error)]
pub enum RecogniserError {
    #[error(
        "speech recognition model file {path} is missing: install the Debian package \
         pocketsphinx-en-us, or set model-dir to a folder holding en-us/, cmudict-en-us.dict \
         and en-us.lm.bin"
    )]
    MissingModel { path: PathBuf },
    #[error(transparent)]
    Dictionary(#[from] DictionaryError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Grammar(#[from] GrammarError),
    #[error("words not in the pronunciation dictionary: {}", .0.join(", "))]
    UnknownWords(Vec<String>),
    #[error("audio for the recogniser: {0}")]
    Resample(#[from] ResampleError),
    #[error("no grammar or large vocabulary chosen before audio (call expect first)")]
    NothingExpected,
    #[error("all {limit} large-vocabulary decoders are in use (large-vocabulary-decoders)")]
    LargeVocabularyBusy { limit: usize },
    #[error("speech recognition panicked; its decoder is dropped")]
    Panicked,
}

/// The model's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// Acoustic model folder.
    pub acoustic: PathBuf,
    /// Pronunciation dictionary.
    pub dictionary: PathBuf,
    /// 3-gram language model (large-vocabulary mode only).
    pub language_model: PathBuf,
}

impl ModelFiles {
    /// The files in `dir`, checked to exist (the language model when it is used).
    pub fn locate(dir: &Path) -> Result<ModelFiles, RecogniserError> {
        let files = ModelFiles {
            acoustic: dir.join("en-us"),
            dictionary: dir.join("cmudict-en-us.dict"),
            language_model: dir.join("en-us.lm.bin"),
        };
        for required in [
            files.acoustic.join("mdef"),
            files.acoustic.join("means"),
            files.acoustic.join("noisedict"),
            files.dictionary.clone(),
        ] {
            if !required.is_file() {
                return Err(RecogniserError::MissingModel { path: required });
            }
        }
        Ok(files)
    }
}

/// A recognised utterance.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    /// Lower-case words, space-separated.
    pub text: String,
    /// Posterior probability of these words given the audio and the grammar or language
    /// model, 0–1.
    pub confidence: f32,
}

/// The recogniser of a provider, loaded (a fraction of a second of CPU) by the first call
/// that needs it; a model that cannot be loaded is said once in the log and leaves the
/// provider without recognition.
#[derive(Debug)]
pub struct LazyRecogniser {
    config: RecogniserConfig,
    loaded: tokio::sync::OnceCell<Option<Arc<Recogniser>>>,
}

impl LazyRecogniser {
    pub fn new(config: RecogniserConfig) -> LazyRecogniser {
        LazyRecogniser {
            config,
            loaded: tokio::sync::OnceCell::new(),
        }
    }

    /// The recogniser, or `None` when its model could not be loaded.
    pub async fn get(&self) -> Option<Arc<Recogniser>> {
        let config = self.config.clone();
        self.loaded
            .get_or_init(|| async move {
                match tokio::task::spawn_blocking(move || Recogniser::load(&config)).await {
                    Ok(Ok(recogniser)) => Some(recogniser),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "offline speech recognition is off");
                        None
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "loading the speech recogniser failed");
                        None
                    }
                }
            })
            .await
            .clone()
    }
}

/// The loaded model, shared by every call.
#[derive(Debug)]
pub struct Recogniser {
    files: ModelFiles,
    dictionary: Dictionary,
    idle: Mutex<Vec<Pooled>>,
    max_idle: usize,
    /// Decoders with the large vocabulary loaded, in calls or idle, and the most allowed.
    large: std::sync::atomic::AtomicUsize,
    max_large: usize,
}

/// A decoder with what it has been given so far.
#[derive(Debug)]
struct Pooled {
    engine: Engine,
    /// Compiled grammars by search name, the most recently used last.
    grammars: VecDeque<String>,
    /// Words added one by one (grammar mode).
    words: std::collections::HashSet<String>,
    /// The full dictionary and the language model are loaded.
    large_vocabulary: bool,
}

impl Recogniser {
    /// Reads the dictionary and loads one decoder, so a bad model fails here and not in a
    /// call. Takes a fraction of a second of CPU: run it off the async runtime.
    pub fn load(config: &RecogniserConfig) -> Result<Arc<Recogniser>, RecogniserError> {
        let files = ModelFiles::locate(&config.model_dir)?;
        let dictionary = Dictionary::read(&files.dictionary)?;
        let recogniser = Arc::new(Recogniser {
            files,
            dictionary,
            idle: Mutex::new(Vec::new()),
            max_idle: config.idle_decoders,
            large: Default::default(),
            max_large: config.large_vocabulary_decoders,
        });
        let first = recogniser.new_pooled()?;
        recogniser.release(first);
        Ok(recogniser)
    }

    /// The model's files.
    pub fn files(&self) -> &ModelFiles {
        &self.files
    }

    /// The shared pronunciation dictionary.
    pub fn dictionary(&self) -> &Dictionary {
        &self.dictionary
    }

    fn new_pooled(&self) -> Result<Pooled, RecogniserError> {
        let engine = Engine::new(&EngineSettings {
            hmm: &self.files.acoustic,
        })?;
        Ok(Pooled {
            engine,
            grammars: VecDeque::new(),
            words: Default::default(),
            large_vocabulary: false,
        })
    }

    fn release(&self, mut pooled: Pooled) {
        pooled.engine.abandon();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle {
            idle.push(pooled);
        } else {
            self.forget(&pooled);
        }
    }

    /// A decoder is freed: it no longer counts against the large-vocabulary limit.
    fn forget(&self, pooled: &Pooled) {
        if pooled.large_vocabulary {
            self.large
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Room for one more large-vocabulary decoder: under the limit, or by freeing an idle one.
    fn reserve_large(&self) -> Result<(), RecogniserError> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if self.large.load(Relaxed) < self.max_large {
            self.large.fetch_add(1, Relaxed);
            return Ok(());
        }
        // Its place is taken over: the count stays.
        match idle.iter().position(|p| p.large_vocabulary) {
            Some(at) => {
                idle.swap_remove(at);
                Ok(())
            }
            None => Err(RecogniserError::LargeVocabularyBusy {
                limit: self.max_large,
            }),
        }
    }

    /// A decoder for one call, taking audio at `input_rate` Hz (any rate; 8 kHz calls are
    /// brought to the model's 16 kHz). Reuses an idle decoder when there is one.
    pub fn decoder(self: &Arc<Self>, input_rate: u32) -> Result<Decoder, RecogniserError> {
        let resampler = (input_rate != MODEL_RATE)
            .then(|| StreamResampler::sharp(input_rate, MODEL_RATE, RESAMPLER_BLOCK_MS))
            .transpose()?;
        let reused = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let pooled = match reused {
            Some(p) => p,
            None => self.new_pooled()?,
        };
        Ok(Decoder {
            recogniser: self.clone(),
            pooled: Some(pooled),
            resampler,
            utterance: Vec::new(),
            grammar: None,
            ready: false,
            broken: false,
        })
    }

    /// Decoders loaded and idle.
    pub fn idle_decoders(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// One call's recogniser: choose what to listen for, push the caller's audio, finish an
/// utterance to get its words. Returned to the pool when dropped.
pub struct Decoder {
    recogniser: Arc<Recogniser>,
    pooled: Option<Pooled>,
    resampler: Option<StreamResampler>,
    /// The open utterance at the model's rate, decoded whole when it ends.
    utterance: Vec<i16>,
    /// The grammar listened for; `None` in large-vocabulary mode.
    grammar: Option<Grammar>,
    /// A search is active.
    ready: bool,
    /// The engine failed while changing searches: dropped, not pooled, at the end.
    broken: bool,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("pooled", &self.pooled)
            .field(
                "input_rate",
                &self.resampler.as_ref().map(|r| r.input_rate()),
            )
            .field("ready", &self.ready)
            .field("broken", &self.broken)
            .finish()
    }
}

impl Decoder {
    fn pooled(&mut self) -> &mut Pooled {
        self.pooled.as_mut().expect("present until drop")
    }

    /// Listen for `grammar` from the next utterance on (an utterance in progress is dropped).
    pub fn expect(&mut self, grammar: &Grammar) -> Result<(), RecogniserError> {
        let result = self.switch_to_grammar(grammar);
        self.grammar = result.is_ok().then(|| grammar.clone());
        self.note(result)
    }

    /// Listen for anything (large-vocabulary mode) from the next utterance on. The first time
    /// on a decoder this loads the full dictionary and the language model into it.
    pub fn expect_anything(&mut self) -> Result<(), RecogniserError> {
        let result = self.switch_to_large_vocabulary();
        self.grammar = None;
        self.note(result)
    }

    /// A decoder whose engine failed mid-change is not given to another call.
    fn note<T>(&mut self, result: Result<T, RecogniserError>) -> Result<T, RecogniserError> {
        if matches!(result, Err(RecogniserError::Engine(_))) {
            self.broken = true;
            self.ready = false;
        }
        result
    }

    fn switch_to_grammar(&mut self, grammar: &Grammar) -> Result<(), RecogniserError> {
        let jsgf = grammar.jsgf()?;
        let dictionary = &self.recogniser.dictionary;
        let unknown: Vec<String> = grammar
            .words()
            .into_iter()
            .filter(|w| !dictionary.contains(w))
            .map(str::to_string)
            .collect();
        if !unknown.is_empty() {
            return Err(RecogniserError::UnknownWords(unknown));
        }
        self.interrupt();
        let name = grammar_search_name(&jsgf);
        let recogniser = self.recogniser.clone();
        let pooled = self.pooled();
        if let Some(at) = pooled.grammars.iter().position(|g| *g == name) {
            pooled.grammars.remove(at);
        } else {
            if !pooled.large_vocabulary {
                for word in grammar.words() {
                    if pooled.words.contains(word) {
                        continue;
                    }
                    for p in recogniser.dictionary.pronunciations(word) {
                        pooled.engine.add_word(p.key, p.phones)?;
                    }
                    pooled.words.insert(word.to_string());
                }
            }
            pooled.engine.add_grammar(&name, &jsgf)?;
        }
        pooled.engine.activate(&name)?;
        pooled.grammars.push_back(name);
        if pooled.grammars.len() > GRAMMARS_PER_DECODER {
            let oldest = pooled.grammars.pop_front().expect("non-empty");
            pooled.engine.remove_search(&oldest)?;
        }
        self.ready = true;
        Ok(())
    }

    fn switch_to_large_vocabulary(&mut self) -> Result<(), RecogniserError> {
        self.interrupt();
        let recogniser = self.recogniser.clone();
        let pooled = self.pooled();
        if !pooled.large_vocabulary {
            let lm = &recogniser.files.language_model;
            if !lm.is_file() {
                return Err(RecogniserError::MissingModel { path: lm.clone() });
            }
            recogniser.reserve_large()?;
            // Counted from here; a failure below breaks the decoder, which is then forgotten.
            pooled.large_vocabulary = true;
            pooled
                .engine
                .load_dictionary(&recogniser.files.dictionary)?;
            pooled.engine.add_language_model(LARGE_VOCABULARY, lm)?;
            pooled.engine.activate(LARGE_VOCABULARY)?;
            // Grammars compiled against the small dictionary would point into the one just
            // replaced: freed, once none of them is the active search.
            for name in pooled.grammars.drain(..) {
                pooled.engine.remove_search(&name)?;
            }
            pooled.words.clear();
        }
        pooled.engine.activate(LARGE_VOCABULARY)?;
        self.ready = true;
        Ok(())
    }

    /// Feeds caller audio (at the decoder's input rate), opening an utterance if none is.
    /// The audio is kept, not decoded yet: see [`Decoder::finish`].
    pub fn push(&mut self, samples: &[i16]) -> Result<(), RecogniserError> {
        if !self.ready {
            return Err(RecogniserError::NothingExpected);
        }
        match self.resampler.as_mut() {
            None => self.utterance.extend_from_slice(samples),
            Some(r) => {
                r.push(samples)?;
                self.utterance.extend(r.pop_all());
            }
        }
        self.utterance.truncate(MAX_UTTERANCE_SAMPLES);
        Ok(())
    }

    /// Ends the utterance and decodes it: its words and confidence, or `None` when nothing in
    /// the grammar (or no word at all) was heard.
    ///
    /// The utterance is decoded whole, so the model's batch normalisation applies (see
    /// `engine`), after the line silence at either end is cut: digital silence around a short
    /// answer pulls the normalisation off (measured: 300 ms of it on each side turned 6/6 into
    /// 1/6 on the PyPI wheel too). CPU time is a few ms per second of audio in grammar mode.
    pub fn finish(&mut self) -> Result<Option<Transcript>, RecogniserError> {
        if let Some(r) = self.resampler.as_mut() {
            r.drain()?;
            self.utterance.extend(r.pop_all());
            self.utterance.truncate(MAX_UTTERANCE_SAMPLES);
        }
        let utterance = std::mem::take(&mut self.utterance);
        let voiced = trim_silence(&utterance);
        if voiced.is_empty() {
            self.pooled().engine.abandon();
            return Ok(None);
        }
        let engine = &mut self.pooled().engine;
        engine.process_utterance(voiced)?;
        let result = engine.finish()?;
        // Keep the allocation for the next utterance.
        self.utterance = utterance;
        self.utterance.clear();
        // PocketSphinx returns the best partial path when no path reaches the grammar's end
        // ("Final result does not match the grammar"): words the grammar cannot produce
        // alone, such as "can" for "cancel". Not an answer.
        let result =
            result.filter(|(text, _)| self.grammar.as_ref().is_none_or(|g| g.accepts(text)));
        Ok(result.map(|(text, posterior)| Transcript {
            text,
            confidence: posterior as f32,
        }))
    }

    /// Drops the utterance in progress, if any (barge-in, a new prompt).
    pub fn interrupt(&mut self) {
        if let Some(r) = self.resampler.as_mut() {
            r.clear();
        }
        self.utterance.clear();
        self.pooled().engine.abandon();
    }
}

/// `samples` without the 10 ms frames of line silence at either end.
fn trim_silence(samples: &[i16]) -> &[i16] {
    let loud = |frame: &[i16]| {
        let energy: i64 = frame.iter().map(|&s| i64::from(s) * i64::from(s)).sum();
        energy >= SILENCE_RMS * SILENCE_RMS * frame.len() as i64
    };
    let frames: Vec<&[i16]> = samples.chunks(TRIM_FRAME).collect();
    let Some(first) = frames.iter().position(|f| loud(f)) else {
        return &[];
    };
    let last = frames
        .iter()
        .rposition(|f| loud(f))
        .expect("a loud frame exists");
    let end = ((last + 1) * TRIM_FRAME).min(samples.len());
    &samples[first * TRIM_FRAME..end]
}

impl Drop for Decoder {
    fn drop(&mut self) {
        match self.pooled.take() {
            Some(pooled) if !self.broken => self.recogniser.release(pooled),
            Some(pooled) => self.recogniser.forget(&pooled),
            None => {}
        }
    }
}

/// A search name per grammar text, so a decoder reuses what it compiled.
fn grammar_search_name(jsgf: &str) -> String {
    // SipHash with fixed keys: the same grammar gets the same name on every decoder.
    let mut hasher = std::hash::DefaultHasher::new();
    jsgf.hash(&mut hasher);
    format!("grammar-{:016x}", hasher.finish())
}
