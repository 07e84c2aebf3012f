//! Write-behind: records written to Redis only (`durability: 'write-behind'`,
//! `syncToDatabase: false`) are marked dirty there and copied to SQL by a flush, each at the
//! version that wrote it, so a flush never moves SQL backwards, whoever runs it.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::{AuthStore, Op, Pipeline, Tiers};
use crate::envelope::Opened;
use crate::error::Result;
use crate::ident;
use crate::model::{KeyWrite, SessionId, WriteBatch};
use crate::redis::{CREDS_RECORD, NOSQL_RECORD};
use crate::sql::VersionedWrite;

/// Sessions flushed at once by a flush pass.
pub(super) const FLUSH_PARALLEL: usize = 32;

impl AuthStore {
    /// Copies a session's records that were written to Redis only (`syncToDatabase: false`,
    /// write-behind) to SQL and marks them clean, so the memory manager may evict the session.
    /// Returns how many records were flushed. A record written again meanwhile stays dirty for
    /// the next flush.
    pub async fn flush(&self, sid: &SessionId) -> Result<u64> {
        self.check_open()?;
        let t = self.tiers();
        if t.redis.is_none() || t.sql.is_none() {
            return Ok(0);
        }
        let slot = self.pipeline.session(sid).await?;
        self.pipeline.submit(sid, slot, Op::Flush).await
    }

    /// Flushes every session of the dirty index (any process's: what a crashed write-behind
    /// process left), each once. Returns the records flushed; if some sessions failed, the
    /// others are still flushed and the first failure is returned (every one is reported).
    pub async fn flush_all(&self) -> Result<u64> {
        self.check_open()?;
        self.pipeline.flush_pass().await
    }

    /// Starts the write-behind flusher (idempotent; needs the async runtime).
    pub(super) fn start_flusher(&self) {
        let Some(every) = self.write_behind else {
            return;
        };
        let mut slot = self.flusher.lock();
        if slot.is_some() {
            return;
        }
        let pipeline = self.pipeline.clone();
        *slot = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if pipeline.tiers_closed() {
                    return;
                }
                // failures were reported one by one already
                let _ = pipeline.flush_pass().await;
            }
        }));
    }
}

impl Pipeline {
    /// Flushes every session of the dirty index once; reports each failure, returns the first.
    pub(super) async fn flush_pass(&self) -> Result<u64> {
        let t = &self.tiers;
        let (Some(redis), Some(_)) = (&t.redis, &t.sql) else {
            return Ok(0);
        };
        let sessions = redis.dirty_sessions().await.inspect_err(|e| {
            t.events.warn(
                e.code(),
                &format!("write-behind flush could not read the dirty index: {e}"),
            )
        })?;
        t.counters
            .flush_dirty
            .store(sessions.len() as u64, Ordering::Relaxed);
        let mut total = 0;
        let mut first_error = None;
        for chunk in sessions.chunks(FLUSH_PARALLEL) {
            let flushes = chunk.iter().filter_map(|name| {
                let sid = SessionId::new(name.clone()).ok()?;
                let slot = self.slot(&sid);
                // a flush needs no validation: it writes SQL only over older versions
                Some(async move { self.submit(&sid, slot, Op::Flush).await })
            });
            for r in futures::future::join_all(flushes).await {
                match r {
                    Ok(n) => total += n,
                    Err(e) => {
                        t.events.warn(
                            e.code(),
                            &format!("write-behind flush of a session failed (it stays dirty for the next pass): {e}"),
                        );
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        if first_error.is_none() {
            t.counters
                .last_flush_ms
                .store(crate::sql::now_ms().max(0) as u64, Ordering::Relaxed);
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }
}

/// Copies a session's dirty records from Redis to SQL (each at the version that wrote it, so
/// only over older rows) and clears their marks; returns how many it copied. A mark whose record
/// Redis no longer holds is reported (each one, counted by type) and dropped: SQL's older copy is
/// all that is left.
pub(super) async fn flush_session(tiers: &Tiers, sid: &SessionId) -> Result<u64> {
    flush_marks(tiers, sid).await.map(|(n, _)| n)
}

/// [`flush_session`], also returning the marks it settled (name, version written to SQL).
pub(super) async fn flush_marks(
    tiers: &Tiers,
    sid: &SessionId,
) -> Result<(u64, Vec<(String, u64)>)> {
    let (Some(redis), Some(sql)) = (&tiers.redis, &tiers.sql) else {
        return Ok((0, Vec::new()));
    };
    let marks = redis.dirty_records(sid).await?;
    if marks.is_empty() {
        redis.unindex_if_clean(sid).await?;
        return Ok((0, Vec::new()));
    }
    let mut by_version: BTreeMap<u64, WriteBatch> = BTreeMap::new();
    let mut done: Vec<(String, u64, bool)> = Vec::with_capacity(marks.len());
    let mut lost: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_type: BTreeMap<String, Vec<(String, String, u64)>> = BTreeMap::new();
    for (name, mark) in marks {
        if name == NOSQL_RECORD {
            continue; // written by a store without SQL: never flushed
        }
        if name == CREDS_RECORD {
            match redis.creds_record(sid).await? {
                Some(Opened {
                    version,
                    value: Some(c),
                }) if version >= mark => {
                    by_version.entry(version).or_default().creds = Some(c);
                    done.push((name, version, false));
                }
                _ => {
                    *lost.entry("creds".into()).or_default() += 1;
                    done.push((name, mark, false));
                }
            }
            continue;
        }
        let Some((escaped, id)) = name.split_once('\0') else {
            continue;
        };
        let (escaped, id) = (escaped.to_string(), id.to_string());
        by_type
            .entry(escaped)
            .or_default()
            .push((id, name.clone(), mark));
    }
    for (escaped, entries) in by_type {
        let Some(kind) = ident::unescape(&escaped) else {
            continue;
        };
        let ids: Vec<String> = entries.iter().map(|(id, _, _)| id.clone()).collect();
        let records = redis.records(sid, &escaped, &ids).await?;
        for ((id, name, mark), rec) in entries.into_iter().zip(records) {
            match rec {
                // older than the mark: the dirty record was lost and an older copy warmed back
                Some(Opened { version, value }) if version >= mark => {
                    let tomb = value.is_none();
                    by_version.entry(version).or_default().keys.push(KeyWrite {
                        kind: kind.clone(),
                        id,
                        value,
                    });
                    done.push((name, version, tomb));
                }
                _ => {
                    *lost.entry(kind.clone()).or_default() += 1;
                    done.push((name, mark, false));
                }
            }
        }
    }
    if !lost.is_empty() {
        let total: u64 = lost.values().sum();
        tiers
            .counters
            .records_lost
            .fetch_add(total, Ordering::Relaxed);
        let by_type: Vec<String> = lost.iter().map(|(k, n)| format!("{k} {n}")).collect();
        tiers.events.warn(
            "WARN_RECORD_LOST",
            &format!(
                "{total} record(s) of a session written to Redis only were gone from Redis before they were flushed ({}); SQL keeps its older copy of each, or none",
                by_type.join(", ")
            ),
        );
    }
    let writes: Vec<VersionedWrite<'_>> = by_version
        .iter()
        .map(|(v, batch)| VersionedWrite {
            sid,
            batch,
            version: *v,
            epoch: None,
        })
        .collect();
    let flushed = by_version
        .values()
        .map(|b| b.keys.len() + b.creds.is_some() as usize)
        .sum::<usize>() as u64;
    if !writes.is_empty() {
        sql.commit(&writes).await.map_err(|ce| ce.error)?;
    }
    redis.clean(sid, &done).await?;
    redis.unindex_if_clean(sid).await?;
    Ok((flushed, done.into_iter().map(|(n, v, _)| (n, v)).collect()))
}
