//! The tiers together: read-through (cache -> Redis -> SQL, warming the tiers above on a lower hit)
//! and write-through (SQL commit, then one Redis script, then cache), or write-behind (Redis with
//! dirty marks now, SQL from the flusher).
//!
//! Why SQL first: Redis then never holds a value SQL lacks, so evicting a session from Redis can
//! never lose data. If the Redis step fails after the commit, the records the write named are
//! removed from Redis (best effort) so it cannot serve a value older than SQL's, and the caller
//! gets the error (Baileys retries the whole transaction).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::cache::{CacheStats, KeyCache};
use crate::codec;
use crate::config::StoreOptions;
use crate::error::{Error, Result};
use crate::ident;
use crate::model::{KeyWrite, SessionId, Value, WriteBatch, WriteOptions};
use crate::redis::{record_name, Durability, RedisTier, CREDS_RECORD, NOSQL_RECORD};
use crate::sql::{SqlStore, TypeSummary};

pub struct AuthStore {
    cache: Option<Arc<KeyCache>>,
    redis: Option<Arc<RedisTier>>,
    sql: Option<Arc<SqlStore>>,
    closed: AtomicBool,
    counters: Counters,
    write_behind: Option<std::time::Duration>,
    /// Store values in the compact form of `codec`.
    compact: bool,
    /// Sessions this process wrote behind, flushed on close.
    behind: Mutex<HashSet<String>>,
    flusher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Sessions one background flush pass takes from the dirty index.
const FLUSH_BATCH: usize = 256;

/// Which tiers answered reads, and how often.
#[derive(Clone, Debug, Default)]
pub struct StoreStats {
    pub cache: Option<CacheStats>,
    pub redis_hits: u64,
    pub redis_misses: u64,
    pub sql_hits: u64,
    pub sql_misses: u64,
}

#[derive(Default)]
struct Counters {
    redis_hits: std::sync::atomic::AtomicU64,
    redis_misses: std::sync::atomic::AtomicU64,
    sql_hits: std::sync::atomic::AtomicU64,
    sql_misses: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for AuthStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthStore")
            .field("cache", &self.cache.is_some())
            .field("redis", &self.redis)
            .field("sql", &self.sql)
            .finish()
    }
}

impl Counters {
    fn redis(&self, hits: usize, asked: usize) {
        self.redis_hits.fetch_add(hits as u64, Ordering::Relaxed);
        self.redis_misses
            .fetch_add((asked - hits) as u64, Ordering::Relaxed);
    }

    fn sql(&self, hits: usize, asked: usize) {
        self.sql_hits.fetch_add(hits as u64, Ordering::Relaxed);
        self.sql_misses
            .fetch_add((asked - hits) as u64, Ordering::Relaxed);
    }
}

impl AuthStore {
    pub fn new(
        redis: Option<Arc<RedisTier>>,
        sql: Option<Arc<SqlStore>>,
        options: StoreOptions,
    ) -> Result<Self> {
        if options.write_behind.is_some() && (redis.is_none() || sql.is_none()) {
            return Err(Error::Config(
                "write-behind needs both a Redis and a SQL tier".into(),
            ));
        }
        if redis.is_none() && sql.is_none() {
            return Err(Error::Config(
                "a store needs a Redis or a SQL tier (openAuthStore() gives the embedded SQLite default)".into(),
            ));
        }
        let cache =
            (options.cache_max_bytes > 0).then(|| Arc::new(KeyCache::new(options.cache_max_bytes)));
        if let (Some(r), Some(c)) = (&redis, &cache) {
            r.register_cache(c);
        }
        Ok(AuthStore {
            cache,
            redis,
            sql,
            closed: AtomicBool::new(false),
            counters: Counters::default(),
            write_behind: options.write_behind,
            compact: options.compact_values,
            behind: Mutex::new(HashSet::new()),
            flusher: Mutex::new(None),
        })
    }

    fn check_open(&self) -> Result<()> {
        let tier_closed = self.redis.as_ref().is_some_and(|r| r.is_closed())
            || self.sql.as_ref().is_some_and(|s| s.is_closed());
        if self.closed.load(Ordering::Acquire) || tier_closed {
            return Err(Error::StoreClosed);
        }
        Ok(())
    }

    /// Records an access for the shared LRU of the memory manager.
    fn touch(&self, sid: &SessionId) {
        if let Some(redis) = &self.redis {
            redis.track(sid, None);
            redis.start_tracking();
        }
    }

    pub fn redis(&self) -> Option<&Arc<RedisTier>> {
        self.redis.as_ref()
    }

    pub fn sql(&self) -> Option<&Arc<SqlStore>> {
        self.sql.as_ref()
    }

    /// The creds of a session, as JSON text (the cache holds the expanded form, so a hit costs no
    /// decoding; values from Redis and SQL are expanded as they arrive).
    pub async fn get_creds(&self, sid: &SessionId) -> Result<Option<Value>> {
        self.check_open()?;
        self.touch(sid);
        if let Some(v) = self.cache.as_ref().and_then(|c| c.get_creds(sid)) {
            return Ok(Some(v));
        }
        let epoch = self.cache.as_deref().map(KeyCache::epoch);
        let mut found = None;
        let mut generation = String::new();
        if let Some(redis) = &self.redis {
            found = redis.get_creds(sid).await?;
            self.counters.redis(found.is_some() as usize, 1);
            if found.is_none() && self.sql.is_some() {
                let (g, dirty) = redis.miss_info(sid, &[CREDS_RECORD.to_string()]).await?;
                if dirty.first().copied().unwrap_or(false) {
                    // deleted in Redis only: SQL's copy is stale
                    return Ok(None);
                }
                generation = g;
            }
        }
        if found.is_none() {
            if let Some(sql) = &self.sql {
                found = sql.get_creds(sid).await?;
                self.counters.sql(found.is_some() as usize, 1);
                if let (Some(v), Some(redis)) = (&found, &self.redis) {
                    if let Err(e) = redis.warm_creds(sid, v, &generation).await {
                        log::warn!("could not warm redis with creds read from SQL: {e}");
                    }
                }
            }
        }
        let found = found.map(expand).transpose()?;
        if let (Some(cache), Some(epoch), Some(v)) = (&self.cache, epoch, &found) {
            cache.fill_creds(epoch, sid, v);
        }
        Ok(found)
    }

    /// Answers from the in-process cache alone, without I/O or an async hop: `Some` only when
    /// every id is cached (callers fall back to [`Self::get_keys`]).
    pub fn get_keys_cached(
        &self,
        sid: &SessionId,
        kind: &str,
        ids: &[String],
    ) -> Result<Option<Vec<Value>>> {
        self.check_open()?;
        ident::validate_type(kind)?;
        let Some(cache) = &self.cache else {
            return Ok(None);
        };
        let Some(found) = cache.get_all(sid, kind, ids) else {
            return Ok(None);
        };
        if let Some(redis) = &self.redis {
            redis.track(sid, None);
        }
        Ok(Some(found))
    }

    /// Values of `ids`, aligned with `ids` (`None` where a record does not exist), as JSON text
    /// (expanded from the stored form as they arrive from Redis or SQL; the cache holds them
    /// expanded).
    pub async fn get_keys(
        &self,
        sid: &SessionId,
        kind: &str,
        ids: &[String],
    ) -> Result<Vec<Option<Value>>> {
        self.check_open()?;
        ident::validate_type(kind)?;
        for id in ids {
            ident::validate_key_id(id)?;
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.touch(sid);
        let mut out: Vec<Option<Value>> = match &self.cache {
            Some(c) => c.get_keys(sid, kind, ids),
            None => vec![None; ids.len()],
        };
        let epoch = self.cache.as_deref().map(KeyCache::epoch);
        let missing = |out: &[Option<Value>]| -> Vec<usize> {
            (0..ids.len()).filter(|&i| out[i].is_none()).collect()
        };
        let mut todo = missing(&out);
        if todo.is_empty() {
            return Ok(out);
        }
        let mut filled: Vec<usize> = Vec::new();
        let mut generation = String::new();
        if let Some(redis) = &self.redis {
            let want: Vec<String> = todo.iter().map(|&i| ids[i].clone()).collect();
            let got = redis.get_keys(sid, kind, &want).await?;
            for (&i, v) in todo.iter().zip(got) {
                if let Some(v) = v {
                    out[i] = Some(expand(v)?);
                    filled.push(i);
                }
            }
            self.counters.redis(filled.len(), todo.len());
            todo = missing(&out);
            if !todo.is_empty() && self.sql.is_some() {
                let names: Vec<String> = todo.iter().map(|&i| record_name(kind, &ids[i])).collect();
                let (g, dirty) = redis.miss_info(sid, &names).await?;
                generation = g;
                // a dirty record Redis lacks was deleted in Redis only: SQL's copy is stale
                todo = todo
                    .into_iter()
                    .zip(dirty)
                    .filter_map(|(i, d)| (!d).then_some(i))
                    .collect();
            }
        }
        if !todo.is_empty() {
            if let Some(sql) = &self.sql {
                let want: Vec<String> = todo.iter().map(|&i| ids[i].clone()).collect();
                let rows = sql.get_keys(sid, kind, &want).await?;
                self.counters.sql(rows.len(), todo.len());
                if !rows.is_empty() {
                    let by_id: std::collections::HashMap<&str, &Value> =
                        rows.iter().map(|(id, v)| (id.as_str(), v)).collect();
                    for &i in &todo {
                        if let Some(v) = by_id.get(ids[i].as_str()) {
                            out[i] = Some(expand((*v).clone())?);
                            filled.push(i);
                        }
                    }
                    if let Some(redis) = &self.redis {
                        let pairs: Vec<(&str, &Value)> =
                            rows.iter().map(|(id, v)| (id.as_str(), v)).collect();
                        if let Err(e) = redis.warm_keys(sid, kind, &pairs, &generation).await {
                            log::warn!("could not warm redis with keys read from SQL: {e}");
                        }
                    }
                }
            }
        }
        if let (Some(cache), Some(epoch)) = (&self.cache, epoch) {
            cache.fill_keys(
                epoch,
                sid,
                kind,
                filled
                    .iter()
                    .filter_map(|&i| out[i].as_ref().map(|v| (ids[i].as_str(), v))),
            );
        }
        Ok(out)
    }

    /// Writes a batch: atomically in each tier, SQL first (see the module docs).
    pub async fn write(
        &self,
        sid: &SessionId,
        mut batch: WriteBatch,
        opts: &WriteOptions,
    ) -> Result<()> {
        self.check_open()?;
        batch.validate()?;
        if batch.is_empty() {
            return Ok(());
        }
        // the tiers get the stored forms, the cache the JSON text callers read
        let plain = self.cache.is_some().then(|| batch.clone());
        let batch = store_forms(batch, self.compact).await?;
        // Without Redis there is nowhere else to write: the SQL tier is always written then.
        // Write-behind leaves SQL to the flusher.
        let to_sql = self.sql.is_some()
            && (self.redis.is_none() || (opts.sync_to_database && self.write_behind.is_none()));
        if opts.ttl.is_some() && self.redis.is_some() && !to_sql {
            return Err(Error::invalid(
                "ttl on a write that goes to Redis only would expire the only copy of the keys; \
                 write to the database too (syncToDatabase, write-through) or drop the ttl",
            ));
        }
        if let (Some(redis), Some(_), false) = (&self.redis, &self.sql, to_sql) {
            redis.index_dirty(sid).await?;
            if self.write_behind.is_some() {
                self.behind.lock().insert(sid.to_string());
                self.start_flusher();
            }
        }
        if let Some(sql) = self.sql.as_ref().filter(|_| to_sql) {
            if let Err(e) = sql.write(sid, &batch).await {
                self.forget(sid, &batch);
                return Err(e);
            }
        }
        self.touch(sid);
        if let Some(redis) = &self.redis {
            let durability = match (&self.sql, to_sql) {
                (Some(_), true) => Durability::Durable,
                (Some(_), false) => Durability::RedisOnly,
                (None, _) => Durability::NoSql,
            };
            if let Err(e) = redis.write(sid, &batch, opts.ttl, durability).await {
                self.forget(sid, &batch);
                if to_sql {
                    if let Err(e2) = redis.invalidate(sid, &batch).await {
                        log::warn!("redis write failed after the SQL commit and its records could not be invalidated: {e2}");
                    }
                }
                return Err(e);
            }
        }
        if let (Some(cache), Some(plain)) = (&self.cache, &plain) {
            cache.apply_write(sid, plain.creds.as_ref(), &plain.keys);
        }
        Ok(())
    }

    fn forget(&self, sid: &SessionId, batch: &WriteBatch) {
        if let Some(cache) = &self.cache {
            cache.invalidate(sid, batch.creds.is_some(), &batch.keys);
        }
    }

    /// Copies a session's records that were written to Redis only (`syncToDatabase: false`) to
    /// SQL and marks them clean, so the memory manager may evict the session. Returns how many
    /// records were flushed. A record written again meanwhile stays dirty for the next flush.
    pub async fn flush(&self, sid: &SessionId) -> Result<u64> {
        self.check_open()?;
        let (Some(redis), Some(sql)) = (&self.redis, &self.sql) else {
            return Ok(0);
        };
        flush_session(redis, sql, sid).await
    }

    /// Flushes every session of the dirty index (any process's: what a crashed write-behind
    /// process left). Returns the records flushed.
    pub async fn flush_all(&self) -> Result<u64> {
        self.check_open()?;
        let (Some(redis), Some(sql)) = (&self.redis, &self.sql) else {
            return Ok(0);
        };
        let mut total = 0;
        loop {
            let n = flush_pass(redis, sql).await?;
            total += n.records;
            if n.sessions < FLUSH_BATCH {
                return Ok(total);
            }
        }
    }

    /// Starts the write-behind flusher (idempotent; needs the async runtime).
    fn start_flusher(&self) {
        let (Some(every), Some(redis), Some(sql)) = (self.write_behind, &self.redis, &self.sql)
        else {
            return;
        };
        let mut slot = self.flusher.lock();
        if slot.is_some() {
            return;
        }
        let (redis, sql) = (redis.clone(), sql.clone());
        *slot = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if redis.is_closed() || sql.is_closed() {
                    return;
                }
                if let Err(e) = flush_pass(&redis, &sql).await {
                    log::warn!("write-behind flush failed (will retry): {e}");
                }
            }
        }));
    }

    /// Removes every key of a session; its creds too unless `keep_creds`.
    pub async fn delete_session(&self, sid: &SessionId, keep_creds: bool) -> Result<()> {
        self.check_open()?;
        if let Some(cache) = &self.cache {
            cache.remove_session(sid, keep_creds);
        }
        if let Some(sql) = &self.sql {
            sql.delete_session(sid, keep_creds).await?;
        }
        if let Some(redis) = &self.redis {
            redis.delete_session(sid, keep_creds).await?;
        }
        if let Some(cache) = &self.cache {
            cache.remove_session(sid, keep_creds);
        }
        Ok(())
    }

    /// Records and bytes per type of one session, from the durable tier when there is one.
    pub async fn summary(&self, sid: &SessionId) -> Result<Vec<TypeSummary>> {
        self.check_open()?;
        match (&self.sql, &self.redis) {
            (Some(sql), _) => sql.summary(sid).await,
            (None, Some(redis)) => redis.summary(sid).await,
            (None, None) => Ok(Vec::new()),
        }
    }

    /// Every id of one type in one session: the union of what Redis and SQL hold.
    pub async fn list_ids(&self, sid: &SessionId, kind: &str) -> Result<Vec<String>> {
        self.check_open()?;
        ident::validate_type(kind)?;
        let mut ids = Vec::new();
        if let Some(sql) = &self.sql {
            ids.extend(sql.list_ids(sid, kind).await?);
        }
        if let Some(redis) = &self.redis {
            ids.extend(redis.list_ids(sid, kind).await?);
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    pub fn stats(&self) -> StoreStats {
        let c = &self.counters;
        StoreStats {
            cache: self.cache.as_deref().map(KeyCache::stats),
            redis_hits: c.redis_hits.load(Ordering::Relaxed),
            redis_misses: c.redis_misses.load(Ordering::Relaxed),
            sql_hits: c.sql_hits.load(Ordering::Relaxed),
            sql_misses: c.sql_misses.load(Ordering::Relaxed),
        }
    }

    /// Closes the store and the tiers it holds, after flushing what this process wrote behind.
    /// Later calls fail with `ERR_STORE_CLOSED`.
    pub async fn close(&self) {
        let flusher = self.flusher.lock().take();
        if let Some(task) = flusher {
            task.abort();
        }
        if let (Some(redis), Some(sql)) = (&self.redis, &self.sql) {
            let pending: Vec<String> = self.behind.lock().drain().collect();
            for name in pending {
                let Ok(sid) = SessionId::new(name) else {
                    continue;
                };
                let flushed = async {
                    flush_session(redis, sql, &sid).await?;
                    redis.unindex_if_clean(&sid).await
                };
                if let Err(e) = flushed.await {
                    log::warn!("could not flush a written-behind session on close; it stays marked dirty for any process to flush: {e}");
                }
            }
        }
        self.closed.store(true, Ordering::Release);
        if let Some(cache) = &self.cache {
            cache.clear();
        }
        if let Some(redis) = &self.redis {
            redis.close().await;
        }
        if let Some(sql) = &self.sql {
            sql.close().await;
        }
    }
}

/// The stored bytes as the JSON text they encode (compact values expanded, others as they are).
fn expand(v: Value) -> Result<Value> {
    match v.first() {
        Some(&codec::COMPACT) | Some(&codec::VERBATIM) => Ok(Value::from(codec::decode(&v)?)),
        _ => Ok(v),
    }
}

/// Values of a batch in their stored form (`codec::store_form`); large batches off the async
/// workers.
async fn store_forms(batch: WriteBatch, compact: bool) -> Result<WriteBatch> {
    fn run(mut batch: WriteBatch, compact: bool) -> WriteBatch {
        let squeeze = |v: &mut Value| {
            if let Some(c) = codec::store_form(v, compact) {
                *v = Value::from(c);
            }
        };
        if let Some(c) = batch.creds.as_mut() {
            squeeze(c);
        }
        for k in &mut batch.keys {
            if let Some(v) = k.value.as_mut() {
                squeeze(v);
            }
        }
        batch
    }
    if batch.keys.len() <= 64 || !compact {
        return Ok(run(batch, compact));
    }
    tokio::task::spawn_blocking(move || run(batch, compact))
        .await
        .map_err(|e| Error::invalid(format!("encoding the batch failed: {e}")))
}

struct PassReport {
    sessions: usize,
    records: u64,
}

/// One write-behind pass: flushes up to [`FLUSH_BATCH`] sessions of the dirty index.
async fn flush_pass(redis: &RedisTier, sql: &SqlStore) -> Result<PassReport> {
    let sessions = redis.dirty_sessions(FLUSH_BATCH).await?;
    let mut records = 0;
    for name in &sessions {
        let Ok(sid) = SessionId::new(name.clone()) else {
            continue;
        };
        records += flush_session(redis, sql, &sid).await?;
        redis.unindex_if_clean(&sid).await?;
    }
    Ok(PassReport {
        sessions: sessions.len(),
        records,
    })
}

/// Copies a session's dirty records from Redis to SQL and clears their marks.
async fn flush_session(redis: &RedisTier, sql: &SqlStore, sid: &SessionId) -> Result<u64> {
    // versions first, then values: a value newer than its version is harmless, the reverse
    // would clear a mark SQL has not caught up with
    let marks = redis.dirty_records(sid).await?;
    if marks.is_empty() {
        return Ok(0);
    }
    let mut batch = WriteBatch::default();
    let mut by_type: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for (name, _) in &marks {
        if name == NOSQL_RECORD {
            // written by a store without SQL: its records were never marked one by one
            continue;
        }
        if name == CREDS_RECORD {
            batch.creds = redis.get_creds(sid).await?;
            if batch.creds.is_none() {
                // creds deleted in Redis only: leave the mark, SQL keeps its copy until a delete
                continue;
            }
        } else if let Some((kind, id)) = name.split_once('\0') {
            by_type.entry(kind).or_default().push(id.to_string());
        }
    }
    for (kind, ids) in &by_type {
        let values = redis.get_keys(sid, kind, ids).await?;
        for (id, v) in ids.iter().zip(values) {
            batch.keys.push(KeyWrite {
                kind: kind.to_string(),
                id: id.clone(),
                value: v,
            });
        }
    }
    let flushed = (batch.keys.len() + batch.creds.is_some() as usize) as u64;
    sql.write(sid, &batch).await?;
    let done: Vec<(String, String)> = marks
        .into_iter()
        .filter(|(name, _)| name != NOSQL_RECORD && (name != CREDS_RECORD || batch.creds.is_some()))
        .collect();
    redis.clean(sid, &done).await?;
    Ok(flushed)
}
