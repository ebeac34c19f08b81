//! The agents' persistent key-value store: one JSON file per agent under the data folder,
//! rewritten atomically (temp file + rename) on every change, with a byte quota.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

pub const MAX_KEY_BYTES: usize = 256;
pub const MAX_VALUE_BYTES: usize = 64 << 10;
pub const MAX_LIST_KEYS: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("key is empty or longer than {MAX_KEY_BYTES} bytes")]
    BadKey,
    #[error("value is longer than {MAX_VALUE_BYTES} bytes")]
    ValueTooLarge,
    #[error("kv quota of {quota} bytes would be exceeded (in use: {used})")]
    Quota { quota: u64, used: u64 },
    #[error("kv file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("kv file {path} is corrupt: {message}")]
    Corrupt { path: String, message: String },
}

#[derive(Default, Serialize, Deserialize)]
struct Contents {
    /// Values are hex so arbitrary bytes survive JSON.
    entries: BTreeMap<String, String>,
}

/// One agent's store, shared by all its calls and versions.
pub struct KvStore {
    path: PathBuf,
    inner: Mutex<BTreeMap<String, Vec<u8>>>,
}

fn entry_size(key: &str, value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
}

impl KvStore {
    /// Open (or create on first write) the store in `path`.
    pub fn open(path: &Path) -> Result<KvStore, KvError> {
        let map = match std::fs::read(path) {
            Ok(bytes) => {
                let corrupt = |message: String| KvError::Corrupt {
                    path: path.display().to_string(),
                    message,
                };
                let contents: Contents =
                    serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
                contents
                    .entries
                    .into_iter()
                    .map(|(k, v)| Ok((k, hex::decode(v).map_err(|e| corrupt(e.to_string()))?)))
                    .collect::<Result<_, KvError>>()?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(KvError::Io {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        Ok(KvStore {
            path: path.to_path_buf(),
            inner: Mutex::new(map),
        })
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().get(key).cloned()
    }

    pub fn set(&self, key: &str, value: &[u8], quota: u64) -> Result<(), KvError> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(KvError::BadKey);
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(KvError::ValueTooLarge);
        }
        let mut map = self.lock();
        let used: u64 = map.iter().map(|(k, v)| entry_size(k, v)).sum();
        let old = map.get(key).map_or(0, |v| entry_size(key, v));
        let after = used - old + entry_size(key, value);
        if after > quota {
            return Err(KvError::Quota { quota, used });
        }
        let previous = map.insert(key.to_string(), value.to_vec());
        if let Err(e) = self.persist(&map) {
            // Keep memory and disk in step: undo the change the disk did not take.
            match previous {
                Some(v) => map.insert(key.to_string(), v),
                None => map.remove(key),
            };
            return Err(e);
        }
        Ok(())
    }

    pub fn delete(&self, key: &str) -> Result<(), KvError> {
        let mut map = self.lock();
        if map.remove(key).is_some() {
            self.persist(&map)?;
        }
        Ok(())
    }

    pub fn list_keys(&self, prefix: &str) -> Vec<String> {
        self.lock()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(MAX_LIST_KEYS)
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        // A panic while holding the lock leaves a consistent map (every change is one insert or
        // remove), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn persist(&self, map: &BTreeMap<String, Vec<u8>>) -> Result<(), KvError> {
        let io = |source| KvError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let contents = Contents {
            entries: map
                .iter()
                .map(|(k, v)| (k.clone(), hex::encode(v)))
                .collect(),
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&contents).expect("serialisable")).map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_and_enforces_the_quota() {
        let dir = tempdir();
        let path = dir.join("agent.json");
        let kv = KvStore::open(&path).unwrap();
        kv.set("a", b"\x00\xffbytes", 100).unwrap();
        kv.set("msg:2", b"two", 100).unwrap();
        kv.set("msg:1", b"one", 100).unwrap();
        assert!(matches!(
            kv.set("big", &[0; 200], 100),
            Err(KvError::Quota { .. })
        ));
        assert!(matches!(kv.set("", b"x", 100), Err(KvError::BadKey)));
        assert_eq!(kv.list_keys("msg:"), vec!["msg:1", "msg:2"]);
        kv.delete("msg:2").unwrap();
        let reopened = KvStore::open(&path).unwrap();
        assert_eq!(reopened.get("a").unwrap(), b"\x00\xffbytes");
        assert_eq!(reopened.list_keys(""), vec!["a", "msg:1"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sb-kv-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
