//! The rows a commit writes and reads, and the version rules they follow: a write carries the
//! version the store gave it, several writes of one group merge with the highest version of
//! each record winning, and rows are sorted so concurrent writers lock them in one order.

use std::collections::BTreeMap;

use crate::error::Error;
use crate::model::{SessionId, Value, WriteBatch};

use super::{BYTES_PER_STATEMENT, ROWS_PER_STATEMENT};

/// One write of a group commit: a session's batch at the version the store gave it.
#[derive(Clone, Copy)]
pub struct VersionedWrite<'a> {
    pub sid: &'a SessionId,
    pub batch: &'a WriteBatch,
    pub version: u64,
    /// The lease epoch the writer holds: refused if the session's epoch is higher (`None`: the
    /// writer takes no lease and is not fenced).
    pub epoch: Option<u64>,
}

/// A failed commit, and whether the failure belongs to the statements (each write of the group
/// may succeed alone) or to the connection (every write would fail the same way).
#[derive(Debug)]
pub struct CommitError {
    pub error: Error,
    pub statement_level: bool,
}

/// A session as [`SqlStore::list_sessions`] finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionListing {
    pub id: String,
    pub has_creds: bool,
    pub version: u64,
    pub updated_at_ms: i64,
}

/// A row read back with the version that wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionedRow {
    pub id: String,
    pub version: u64,
    pub value: Value,
}

/// Splits `items` into statement-sized runs: at most [`ROWS_PER_STATEMENT`] rows and about
/// [`BYTES_PER_STATEMENT`] bytes each.
pub(crate) fn statement_chunks<T>(items: &[T], size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    chunks_within(items, size, ROWS_PER_STATEMENT, BYTES_PER_STATEMENT)
}

/// [`statement_chunks`] with explicit limits.
pub(crate) fn chunks_within<T>(
    items: &[T],
    size: impl Fn(&T) -> usize,
    max_rows: usize,
    max_bytes: usize,
) -> Vec<&[T]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let n = size(item);
        if i > start && (i - start >= max_rows || bytes + n > max_bytes) {
            out.push(&items[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += n;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

/// The session row a write upserts: its version rises to `version`; `creds` replace the stored
/// creds when `creds_version` is higher than theirs; `cleared` raises the cleared watermark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SessionRow<'a> {
    pub sid: &'a str,
    pub version: i64,
    pub creds: Option<&'a [u8]>,
    pub creds_version: i64,
    pub cleared: i64,
}

/// A key row: a value, or a tombstone (`None`), at a version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyRow<'a> {
    pub sid: &'a str,
    pub kind: &'a str,
    pub id: &'a str,
    pub value: Option<&'a [u8]>,
    pub version: i64,
}

impl KeyRow<'_> {
    pub fn size(&self) -> usize {
        self.sid.len() + self.kind.len() + self.id.len() + self.value.map_or(0, |v| v.len()) + 24
    }
}

impl SessionRow<'_> {
    pub fn size(&self) -> usize {
        self.sid.len() + self.creds.map_or(0, |c| c.len()) + 32
    }
}

/// Versioned writes of one or many sessions merged: the highest version of each record wins,
/// rows sorted by key so concurrent writers lock rows in one order.
#[derive(Default, Debug)]
pub(crate) struct Merged<'a> {
    pub sessions: Vec<SessionRow<'a>>,
    pub keys: Vec<KeyRow<'a>>,
    /// Sessions written under a lease, with the lowest epoch their writes carry.
    pub fences: Vec<(&'a str, i64)>,
}

impl<'a> Merged<'a> {
    pub fn of(writes: &[VersionedWrite<'a>]) -> Self {
        let mut sessions: BTreeMap<&str, SessionRow<'a>> = BTreeMap::new();
        let mut keys: BTreeMap<(&str, &str, &str), KeyRow<'a>> = BTreeMap::new();
        let mut fences: BTreeMap<&str, i64> = BTreeMap::new();
        for w in writes {
            let v = w.version as i64;
            if let Some(e) = w.epoch {
                let f = fences.entry(&**w.sid).or_insert(e as i64);
                *f = (*f).min(e as i64);
            }
            let row = sessions.entry(&**w.sid).or_insert(SessionRow {
                sid: w.sid,
                version: v,
                creds: None,
                creds_version: 0,
                cleared: 0,
            });
            row.version = row.version.max(v);
            if let Some(c) = &w.batch.creds {
                if v >= row.creds_version {
                    row.creds = Some(c);
                    row.creds_version = v;
                }
            }
            for k in &w.batch.keys {
                let new = KeyRow {
                    sid: w.sid,
                    kind: &k.kind,
                    id: &k.id,
                    value: k.value.as_deref(),
                    version: v,
                };
                keys.entry((&**w.sid, &k.kind, &k.id))
                    .and_modify(|old| {
                        if new.version >= old.version {
                            *old = new;
                        }
                    })
                    .or_insert(new);
            }
        }
        Merged {
            sessions: sessions.into_values().collect(),
            keys: keys.into_values().collect(),
            fences: fences.into_iter().collect(),
        }
    }

    /// The same writes less those of `fenced` sessions.
    pub fn without(&self, fenced: &[String]) -> Merged<'a> {
        let out = |sid: &str| fenced.iter().any(|f| f == sid);
        Merged {
            sessions: self
                .sessions
                .iter()
                .filter(|r| !out(r.sid))
                .copied()
                .collect(),
            keys: self.keys.iter().filter(|r| !out(r.sid)).copied().collect(),
            fences: Vec::new(),
        }
    }

    /// The sessions whose writes are fenced ([`super::rules::is_fenced`]): their stored epoch
    /// (`epochs`, of the rows that exist) is above the epoch their writes carry, or their row is
    /// gone.
    pub fn fenced(&self, epochs: &[(String, i64)]) -> Vec<String> {
        self.fences
            .iter()
            .filter(|(sid, e)| {
                let stored = epochs.iter().find(|(s, _)| s == sid).map(|(_, v)| *v);
                super::rules::is_fenced(stored, *e)
            })
            .map(|(sid, _)| sid.to_string())
            .collect()
    }
}

/// How many records of one type a session holds, and their value bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeSummary {
    pub kind: String,
    pub count: u64,
    pub bytes: u64,
}

/// Rows of `(type, count, bytes)` into summaries.
pub(crate) fn summaries(rows: Vec<(Vec<u8>, i64, i64)>) -> Result<Vec<TypeSummary>, sqlx::Error> {
    rows.into_iter()
        .map(|(kind, count, bytes)| {
            Ok(TypeSummary {
                kind: String::from_utf8(kind).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                count: count.max(0) as u64,
                bytes: bytes.max(0) as u64,
            })
        })
        .collect()
}

/// Turns `(id, version, bytes)` rows into versioned values.
pub(crate) fn versioned_rows(rows: Vec<(String, i64, Vec<u8>)>) -> Vec<VersionedRow> {
    rows.into_iter()
        .map(|(id, version, v)| VersionedRow {
            id,
            version: version.max(0) as u64,
            value: Value::from(v),
        })
        .collect()
}

/// The creds column and its version as a versioned value.
pub(crate) fn creds_row(row: Option<(Option<Vec<u8>>, i64)>) -> Option<(u64, Value)> {
    row.and_then(|(c, v)| c.map(|c| (v.max(0) as u64, Value::from(c))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KeyWrite;

    #[test]
    fn chunks_respect_rows_and_bytes() {
        let small = vec![10usize; 2200];
        let c = statement_chunks(&small, |n| *n);
        assert_eq!(
            c.iter().map(|c| c.len()).collect::<Vec<_>>(),
            vec![1000, 1000, 200]
        );
        let big = vec![3 * 1024 * 1024usize; 5];
        assert_eq!(statement_chunks(&big, |n| *n).len(), 5);
        assert!(statement_chunks(&Vec::<usize>::new(), |n| *n).is_empty());
    }

    #[test]
    fn merging_keeps_the_highest_version_of_each_record() {
        let a = SessionId::new("a").unwrap();
        let b = SessionId::new("b").unwrap();
        let first = WriteBatch {
            creds: Some(Value::from(&b"c1"[..])),
            keys: vec![
                KeyWrite::put("pre-key", "1", b"x".to_vec()),
                KeyWrite::put("session", "s", b"y".to_vec()),
            ],
        };
        let second = WriteBatch {
            creds: Some(Value::from(&b"c2"[..])),
            keys: vec![KeyWrite::delete("pre-key", "1")],
        };
        let third = WriteBatch {
            creds: None,
            keys: vec![KeyWrite::put("pre-key", "1", b"z".to_vec())],
        };
        // the second write of `a` has the higher version even though it is listed first
        let m = Merged::of(&[
            VersionedWrite {
                sid: &a,
                batch: &second,
                version: 5,
                epoch: None,
            },
            VersionedWrite {
                sid: &a,
                batch: &first,
                version: 4,
                epoch: None,
            },
            VersionedWrite {
                sid: &b,
                batch: &third,
                version: 9,
                epoch: None,
            },
        ]);
        assert_eq!(m.sessions.len(), 2);
        assert_eq!(
            (
                m.sessions[0].version,
                m.sessions[0].creds,
                m.sessions[0].creds_version
            ),
            (5, Some(&b"c2"[..]), 5)
        );
        assert_eq!((m.sessions[1].version, m.sessions[1].creds), (9, None));
        let keys: Vec<_> = m
            .keys
            .iter()
            .map(|k| (k.sid, k.kind, k.id, k.value, k.version))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("a", "pre-key", "1", None, 5),
                ("a", "session", "s", Some(&b"y"[..]), 4),
                ("b", "pre-key", "1", Some(&b"z"[..]), 9),
            ]
        );
    }
}
