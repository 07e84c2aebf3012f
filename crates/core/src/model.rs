//! The core's vocabulary: validated session ids and batches of opaque values.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::ident;

/// Stored bytes, shared between the cache and in-flight writes without copies.
pub type Value = Arc<[u8]>;

/// A session id that passed validation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    pub fn new(sid: impl Into<String>) -> Result<Self> {
        let sid = sid.into();
        ident::validate_session_id(&sid)?;
        Ok(SessionId(sid))
    }
}

impl Deref for SessionId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// One record of a write: a value to store, or `None` to delete it.
#[derive(Clone, Debug)]
pub struct KeyWrite {
    pub kind: String,
    pub id: String,
    pub value: Option<Value>,
}

impl KeyWrite {
    pub fn put(kind: impl Into<String>, id: impl Into<String>, value: Vec<u8>) -> Self {
        KeyWrite {
            kind: kind.into(),
            id: id.into(),
            value: Some(Arc::from(value)),
        }
    }

    pub fn delete(kind: impl Into<String>, id: impl Into<String>) -> Self {
        KeyWrite {
            kind: kind.into(),
            id: id.into(),
            value: None,
        }
    }
}

/// Everything one `set` call writes: applied atomically in each tier.
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    pub creds: Option<Value>,
    pub keys: Vec<KeyWrite>,
}

impl WriteBatch {
    /// The records grouped by type, puts and deletes apart.
    pub fn by_type(&self) -> BTreeMap<&str, (Vec<&KeyWrite>, Vec<&KeyWrite>)> {
        let mut out: BTreeMap<&str, (Vec<&KeyWrite>, Vec<&KeyWrite>)> = BTreeMap::new();
        for k in &self.keys {
            let e = out.entry(k.kind.as_str()).or_default();
            if k.value.is_some() {
                e.0.push(k);
            } else {
                e.1.push(k);
            }
        }
        out
    }

    /// Value and name bytes, for sizing group transactions.
    pub fn byte_size(&self) -> usize {
        self.creds.as_ref().map_or(0, |c| c.len())
            + self
                .keys
                .iter()
                .map(|k| k.kind.len() + k.id.len() + k.value.as_ref().map_or(0, |v| v.len()))
                .sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.creds.is_none() && self.keys.is_empty()
    }

    /// Checks every type and id, and keeps only the last write of a record named twice.
    pub fn validate(&mut self) -> Result<()> {
        for k in &self.keys {
            ident::validate_type(&k.kind)?;
            ident::validate_key_id(&k.id)?;
        }
        let mut seen = std::collections::HashSet::with_capacity(self.keys.len());
        let mut keys: Vec<KeyWrite> = std::mem::take(&mut self.keys)
            .into_iter()
            .rev()
            .filter(|k| seen.insert((k.kind.clone(), k.id.clone())))
            .collect();
        keys.reverse();
        self.keys = keys;
        Ok(())
    }
}

/// How a write travels through the tiers.
#[derive(Clone, Debug)]
pub struct WriteOptions {
    /// Write the SQL tier too (default). `false` writes Redis only, when there is a Redis tier.
    pub sync_to_database: bool,
    /// Expiry of the session's Redis keys that this write touches.
    pub ttl: Option<Duration>,
    /// Write even though another process holds the session's lease (takes a new lease epoch,
    /// which fences that holder).
    pub force: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            sync_to_database: true,
            ttl: None,
            force: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_write_of_a_record_wins() {
        let mut b = WriteBatch {
            creds: None,
            keys: vec![
                KeyWrite::put("pre-key", "1", b"a".to_vec()),
                KeyWrite::put("pre-key", "2", b"b".to_vec()),
                KeyWrite::delete("pre-key", "1"),
            ],
        };
        b.validate().unwrap();
        assert_eq!(b.keys.len(), 2);
        assert_eq!(b.keys[0].id, "2");
        assert!(b.keys[1].value.is_none());
    }

    #[test]
    fn bad_types_are_rejected() {
        let mut b = WriteBatch {
            creds: None,
            keys: vec![KeyWrite::put("", "1", vec![])],
        };
        assert_eq!(b.validate().unwrap_err().code(), "ERR_INVALID_ARGUMENT");
    }
}
