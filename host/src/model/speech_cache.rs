//! Synthesised speech kept for reuse by the offline provider. Prompts such as greetings are the
//! same on every call, and espeak-ng costs tens of milliseconds of CPU per sentence: at 100
//! calls a second that alone would need more cores than the machine has.
//!
//! One slot per (voice, speed, sample rate, text): speech is kept at the rate calls play it,
//! so no call resamples a prompt. The first call to miss synthesises while holding the
//! slot, so concurrent calls wanting the same words wait for that one synthesis instead of
//! each starting espeak-ng. Least recently used entries go when the byte budget is exceeded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use super::AudioFormat;

/// The audio of one utterance.
#[derive(Debug)]
pub struct Speech {
    pub format: AudioFormat,
    pub pcm: Vec<u8>,
}

type Slot = Arc<AsyncMutex<Option<Arc<Speech>>>>;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    voice: String,
    words_per_minute: u32,
    rate: u32,
    text: String,
}

#[derive(Debug)]
struct Entry {
    slot: Slot,
    bytes: usize,
    last_used: u64,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<Key, Entry>,
    bytes: usize,
    clock: u64,
}

#[derive(Debug)]
pub struct SpeechCache {
    entries: Mutex<Entries>,
    max_bytes: usize,
}

/// What a lookup found.
pub enum Lookup {
    Hit(Arc<Speech>),
    /// Nobody has these words yet: synthesise them and [`Filler::fill`] the slot. Others
    /// asking meanwhile wait; dropping the filler unfilled lets the next one try.
    Miss(Filler),
}

/// The right (and duty) to synthesise one missing entry.
pub struct Filler {
    key: Key,
    guard: OwnedMutexGuard<Option<Arc<Speech>>>,
}

impl SpeechCache {
    pub fn new(max_bytes: usize) -> SpeechCache {
        SpeechCache {
            entries: Mutex::new(Entries::default()),
            max_bytes,
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The speech of `text` in `voice` at `words_per_minute`, as 16-bit PCM at `rate` Hz.
    pub async fn lookup(
        &self,
        voice: &str,
        words_per_minute: u32,
        rate: u32,
        text: &str,
    ) -> Lookup {
        let key = Key {
            voice: voice.to_string(),
            words_per_minute,
            rate,
            text: text.to_string(),
        };
        if self.max_bytes == 0 {
            // Caching is off: nothing to share, nobody to wait for.
            let guard = Slot::default().lock_owned().await;
            return Lookup::Miss(Filler { key, guard });
        }
        let slot = {
            let mut entries = self.entries();
            entries.clock += 1;
            let now = entries.clock;
            let entry = entries.map.entry(key.clone()).or_insert_with(|| Entry {
                slot: Slot::default(),
                bytes: 0,
                last_used: now,
            });
            entry.last_used = now;
            entry.slot.clone()
        };
        let guard = slot.lock_owned().await;
        match guard.as_ref() {
            Some(speech) => Lookup::Hit(speech.clone()),
            None => Lookup::Miss(Filler { key, guard }),
        }
    }

    /// Store a finished synthesis and evict the least recently used entries beyond the budget.
    /// Speech larger than the whole budget is handed back without being kept.
    pub fn fill(&self, mut filler: Filler, speech: Speech) -> Arc<Speech> {
        let speech = Arc::new(speech);
        let bytes = speech.pcm.len();
        if bytes > self.max_bytes {
            return speech;
        }
        *filler.guard = Some(speech.clone());
        let mut entries = self.entries();
        // The entry may have been evicted while synthesising; the slot is then re-added.
        let now = entries.clock;
        let previous = entries.map.insert(
            filler.key.clone(),
            Entry {
                slot: OwnedMutexGuard::mutex(&filler.guard).clone(),
                bytes,
                last_used: now,
            },
        );
        entries.bytes = entries.bytes + bytes - previous.map_or(0, |e| e.bytes);
        // Slots whose synthesis was abandoned (barge-in, failure) hold nothing: drop them.
        entries.map.retain(|_, e| {
            e.bytes > 0 || e.slot.try_lock().map_or(true, |speech| speech.is_some())
        });
        while entries.bytes > self.max_bytes {
            let Some(oldest) = entries
                .map
                .iter()
                .filter(|(_, e)| e.bytes > 0)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(gone) = entries.map.remove(&oldest) {
                entries.bytes -= gone.bytes;
            }
        }
        speech
    }

    /// Bytes of audio held.
    pub fn bytes(&self) -> usize {
        self.entries().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT: AudioFormat = AudioFormat::Pcm16 { rate: 22_050 };

    fn speech(bytes: usize) -> Speech {
        Speech {
            format: FORMAT,
            pcm: vec![0; bytes],
        }
    }

    async fn fill(cache: &SpeechCache, text: &str, bytes: usize) {
        match cache.lookup("en", 175, 8000, text).await {
            Lookup::Miss(f) => {
                cache.fill(f, speech(bytes));
            }
            Lookup::Hit(_) => panic!("{text} was already cached"),
        }
    }

    #[tokio::test]
    async fn second_lookup_hits_and_voice_speed_or_rate_are_part_of_the_key() {
        let cache = SpeechCache::new(1000);
        fill(&cache, "hello", 100).await;
        assert!(
            matches!(cache.lookup("en", 175, 8000, "hello").await, Lookup::Hit(s) if s.pcm.len() == 100)
        );
        assert!(matches!(
            cache.lookup("de", 175, 8000, "hello").await,
            Lookup::Miss(_)
        ));
        assert!(matches!(
            cache.lookup("en", 200, 8000, "hello").await,
            Lookup::Miss(_)
        ));
        assert!(matches!(
            cache.lookup("en", 175, 48000, "hello").await,
            Lookup::Miss(_)
        ));
    }

    #[tokio::test]
    async fn concurrent_misses_wait_for_one_synthesis() {
        let cache = Arc::new(SpeechCache::new(1000));
        let Lookup::Miss(filler) = cache.lookup("en", 175, 8000, "hi").await else {
            panic!("empty cache");
        };
        let waiter = {
            let cache = cache.clone();
            tokio::spawn(async move {
                matches!(cache.lookup("en", 175, 8000, "hi").await, Lookup::Hit(_))
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(
            !waiter.is_finished(),
            "the second caller waits for the first synthesis"
        );
        cache.fill(filler, speech(10));
        assert!(waiter.await.unwrap(), "and then gets the cached speech");
    }

    #[tokio::test]
    async fn an_abandoned_miss_lets_the_next_caller_synthesise() {
        let cache = SpeechCache::new(1000);
        let Lookup::Miss(filler) = cache.lookup("en", 175, 8000, "hi").await else {
            panic!("empty cache");
        };
        drop(filler); // e.g. barge-in aborted the synthesis
        assert!(matches!(
            cache.lookup("en", 175, 8000, "hi").await,
            Lookup::Miss(_)
        ));
    }

    #[tokio::test]
    async fn least_recently_used_goes_first_and_the_budget_holds() {
        let cache = SpeechCache::new(250);
        fill(&cache, "a", 100).await;
        fill(&cache, "b", 100).await;
        assert!(matches!(
            cache.lookup("en", 175, 8000, "a").await,
            Lookup::Hit(_)
        ));
        fill(&cache, "c", 100).await;
        assert!(cache.bytes() <= 250);
        assert!(matches!(
            cache.lookup("en", 175, 8000, "a").await,
            Lookup::Hit(_)
        ));
        assert!(matches!(
            cache.lookup("en", 175, 8000, "b").await,
            Lookup::Miss(_)
        ));
        // Larger than the whole budget: handed back, not kept.
        fill(&cache, "huge", 1000).await;
        assert!(cache.bytes() <= 250);
    }
}
