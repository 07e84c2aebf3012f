//! In-process LRU of encoded values, bounded in bytes.
//!
//! Fills from reads are guarded by a write epoch: a read notes the epoch before it goes to Redis or
//! SQL and may only fill the cache if no write or delete went through this cache in between, so a
//! slow read can never put back a value that a concurrent write replaced. Writes update the cache
//! after their I/O, under the same lock that bumps the epoch.

use std::sync::atomic::{AtomicU64, Ordering};

use lru::LruCache;
use parking_lot::Mutex;

use crate::model::{KeyWrite, SessionId};

/// Bookkeeping bytes charged per entry on top of key and value.
const ENTRY_OVERHEAD: usize = 64;

pub use crate::model::Value;

struct Inner {
    lru: LruCache<String, Value>,
    bytes: usize,
    epoch: u64,
}

pub struct KeyCache {
    inner: Mutex<Inner>,
    max_bytes: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Counters of one cache.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: u64,
    pub bytes: u64,
    pub max_bytes: u64,
}

fn key_name(sid: &str, kind: &str, id: &str) -> String {
    let mut k = String::with_capacity(sid.len() + kind.len() + id.len() + 2);
    k.push_str(sid);
    k.push('\0');
    k.push_str(kind);
    k.push('\0');
    k.push_str(id);
    k
}

/// Creds live under an empty type name, which no key type can have.
fn creds_name(sid: &str) -> String {
    key_name(sid, "", "")
}

fn cost(key: &str, value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD
}

impl Inner {
    fn remove(&mut self, key: &str) {
        if let Some(v) = self.lru.pop(key) {
            self.bytes -= cost(key, &v);
        }
    }

    fn insert(&mut self, key: String, value: Value, max_bytes: usize) {
        let c = cost(&key, &value);
        if c > max_bytes / 4 {
            // One huge value must not flush the whole cache.
            self.remove(&key);
            return;
        }
        if let Some(old) = self.lru.put(key.clone(), value) {
            self.bytes -= cost(&key, &old);
        }
        self.bytes += c;
        while self.bytes > max_bytes {
            match self.lru.pop_lru() {
                Some((k, v)) => self.bytes -= cost(&k, &v),
                None => break,
            }
        }
    }
}

impl KeyCache {
    pub fn new(max_bytes: usize) -> Self {
        KeyCache {
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
                epoch: 0,
            }),
            max_bytes,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The write epoch; pass it back to the `fill_*` calls after the tier reads.
    pub fn epoch(&self) -> u64 {
        self.inner.lock().epoch
    }

    pub fn get_keys(&self, sid: &SessionId, kind: &str, ids: &[String]) -> Vec<Option<Value>> {
        let mut inner = self.inner.lock();
        let out: Vec<Option<Value>> = ids
            .iter()
            .map(|id| inner.lru.get(&key_name(sid, kind, id)).cloned())
            .collect();
        drop(inner);
        let hits = out.iter().filter(|v| v.is_some()).count() as u64;
        self.hits.fetch_add(hits, Ordering::Relaxed);
        self.misses
            .fetch_add(ids.len() as u64 - hits, Ordering::Relaxed);
        out
    }

    /// All of `ids`, or `None` unless every one is cached (counted as hits only then; a miss is
    /// counted by the read that follows).
    pub fn get_all(&self, sid: &SessionId, kind: &str, ids: &[String]) -> Option<Vec<Value>> {
        let mut inner = self.inner.lock();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(inner.lru.get(&key_name(sid, kind, id))?.clone());
        }
        drop(inner);
        self.hits.fetch_add(ids.len() as u64, Ordering::Relaxed);
        Some(out)
    }

    pub fn get_creds(&self, sid: &SessionId) -> Option<Value> {
        let v = self.inner.lock().lru.get(&creds_name(sid)).cloned();
        let counter = if v.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        v
    }

    /// Inserts values read from a lower tier, unless a write went through since `epoch`.
    pub fn fill_keys<'a>(
        &self,
        epoch: u64,
        sid: &SessionId,
        kind: &str,
        found: impl Iterator<Item = (&'a str, &'a Value)>,
    ) {
        let mut inner = self.inner.lock();
        if inner.epoch != epoch {
            return;
        }
        for (id, v) in found {
            inner.insert(key_name(sid, kind, id), v.clone(), self.max_bytes);
        }
    }

    pub fn fill_creds(&self, epoch: u64, sid: &SessionId, value: &Value) {
        let mut inner = self.inner.lock();
        if inner.epoch == epoch {
            inner.insert(creds_name(sid), value.clone(), self.max_bytes);
        }
    }

    /// Applies a write that reached every tier.
    pub fn apply_write(&self, sid: &SessionId, creds: Option<&Value>, keys: &[KeyWrite]) {
        let mut inner = self.inner.lock();
        inner.epoch += 1;
        if let Some(c) = creds {
            inner.insert(creds_name(sid), c.clone(), self.max_bytes);
        }
        for k in keys {
            let name = key_name(sid, &k.kind, &k.id);
            match &k.value {
                Some(v) => inner.insert(name, v.clone(), self.max_bytes),
                None => inner.remove(&name),
            }
        }
    }

    /// Forgets the records of a write that failed part-way: the tiers are now the only truth.
    pub fn invalidate(&self, sid: &SessionId, creds: bool, keys: &[KeyWrite]) {
        let mut inner = self.inner.lock();
        inner.epoch += 1;
        if creds {
            inner.remove(&creds_name(sid));
        }
        for k in keys {
            inner.remove(&key_name(sid, &k.kind, &k.id));
        }
    }

    /// Drops a session's keys (and its creds unless `keep_creds`).
    pub fn remove_session(&self, sid: &SessionId, keep_creds: bool) {
        let prefix = key_name(sid, "", "");
        let prefix = &prefix[..sid.len() + 1];
        let creds = creds_name(sid);
        let mut inner = self.inner.lock();
        inner.epoch += 1;
        let doomed: Vec<String> = inner
            .lru
            .iter()
            .filter(|(k, _)| k.starts_with(prefix) && !(keep_creds && **k == creds))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            inner.remove(&k);
        }
    }

    pub fn clear(&self) {
        let mut inner = self.inner.lock();
        inner.epoch += 1;
        inner.lru.clear();
        inner.bytes = 0;
    }

    pub fn stats(&self) -> CacheStats {
        let inner = self.inner.lock();
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: inner.lru.len() as u64,
            bytes: inner.bytes as u64,
            max_bytes: self.max_bytes as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn sid(s: &str) -> SessionId {
        SessionId::new(s).unwrap()
    }

    fn val(b: &[u8]) -> Value {
        Arc::from(b)
    }

    fn put(kind: &str, id: &str, v: &[u8]) -> KeyWrite {
        KeyWrite::put(kind, id, v.to_vec())
    }

    #[test]
    fn stays_within_its_byte_budget() {
        let c = KeyCache::new(10_000);
        let s = sid("a");
        for i in 0..1000 {
            c.apply_write(&s, None, &[put("session", &i.to_string(), &[7u8; 100])]);
        }
        let st = c.stats();
        assert!(st.bytes <= 10_000, "{st:?}");
        assert!(st.entries > 10, "{st:?}");
        // the most recent entries survive, the oldest went
        let got = c.get_keys(&s, "session", &["999".into(), "0".into()]);
        assert!(got[0].is_some());
        assert!(got[1].is_none());
    }

    #[test]
    fn a_fill_after_a_write_is_ignored() {
        let c = KeyCache::new(1 << 20);
        let s = sid("a");
        let epoch = c.epoch();
        c.apply_write(&s, None, &[put("session", "1", b"new")]);
        let stale = val(b"old");
        c.fill_keys(epoch, &s, "session", [("1", &stale)].into_iter());
        let got = c.get_keys(&s, "session", &["1".into()]);
        assert_eq!(got[0].as_deref(), Some(&b"new"[..]));
    }

    #[test]
    fn sessions_with_shared_prefixes_are_removed_apart() {
        let c = KeyCache::new(1 << 20);
        for name in ["X", "X0", "X:x"] {
            let s = sid(name);
            c.apply_write(
                &s,
                Some(&val(b"creds")),
                &[put("pre-key", "1", name.as_bytes())],
            );
        }
        c.remove_session(&sid("X"), true);
        assert!(c.get_keys(&sid("X"), "pre-key", &["1".into()])[0].is_none());
        assert!(c.get_creds(&sid("X")).is_some());
        assert!(c.get_keys(&sid("X0"), "pre-key", &["1".into()])[0].is_some());
        assert!(c.get_keys(&sid("X:x"), "pre-key", &["1".into()])[0].is_some());
        c.remove_session(&sid("X"), false);
        assert!(c.get_creds(&sid("X")).is_none());
        assert!(c.get_creds(&sid("X0")).is_some());
    }

    #[test]
    fn get_all_answers_only_full_hits() {
        let c = KeyCache::new(1 << 20);
        let s = sid("a");
        c.apply_write(
            &s,
            None,
            &[put("session", "1", b"v1"), put("session", "2", b"v2")],
        );
        let all = c.get_all(&s, "session", &["2".into(), "1".into()]).unwrap();
        assert_eq!((&*all[0], &*all[1]), (&b"v2"[..], &b"v1"[..]));
        assert!(c
            .get_all(&s, "session", &["1".into(), "3".into()])
            .is_none());
        assert_eq!((c.stats().hits, c.stats().misses), (2, 0));
    }

    #[test]
    fn deletes_remove_entries() {
        let c = KeyCache::new(1 << 20);
        let s = sid("a");
        c.apply_write(&s, None, &[put("pre-key", "1", b"v")]);
        c.apply_write(&s, None, &[KeyWrite::delete("pre-key", "1")]);
        assert!(c.get_keys(&s, "pre-key", &["1".into()])[0].is_none());
        assert_eq!(c.stats().bytes, 0);
    }
}
