//! Cranelift's incremental compilation cache on disk: one file per compiled function, named by
//! the hash of Cranelift's key (the function's body and the compiler settings). A Python or
//! JavaScript agent is an interpreter of some 10 000 functions plus the author's script; when
//! only the script changes, every interpreter function is found here and only the rest is
//! compiled, so a new build goes live in a fraction of a full compile.

use std::borrow::Cow;
use std::path::PathBuf;

use sha2::{Digest, Sha256};
use wasmtime::CacheStore;

#[derive(Debug)]
pub(crate) struct FunctionCache {
    dir: PathBuf,
}

impl FunctionCache {
    pub fn new(dir: PathBuf) -> std::io::Result<FunctionCache> {
        std::fs::create_dir_all(&dir)?;
        Ok(FunctionCache { dir })
    }

    fn path(&self, key: &[u8]) -> PathBuf {
        self.dir.join(hex::encode(Sha256::digest(key)))
    }
}

impl CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        std::fs::read(self.path(key)).ok().map(Cow::Owned)
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        // Written aside and renamed, so hosts sharing the folder never read half an entry.
        let path = self.path(key);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, value)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_misses_are_none() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FunctionCache::new(dir.path().join("functions")).unwrap();
        assert!(cache.get(b"k").is_none());
        assert!(cache.insert(b"k", vec![1, 2, 3]));
        assert_eq!(cache.get(b"k").as_deref(), Some(&[1u8, 2, 3][..]));
        assert!(cache.get(b"other").is_none());
    }
}
