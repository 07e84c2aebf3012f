//! The tiers together: the in-process cache, Redis and SQL behind one [`AuthStore`].
//!
//! The rooms of this module, each holding one concept:
//! - [`pipeline`]: the write lanes. One order of writes per session through every tier, and the
//!   ordering and fencing invariants that order rests on (stated at its top).
//! - [`slot`]: this process's view of one session (its versions, its Redis floor, its call
//!   order).
//! - [`read`]: read-through (cache -> Redis -> SQL) and warming the tiers above on a lower hit.
//! - [`write`]: the write API: call order, validation, stored forms (compaction, sealing).
//! - [`repair`]: checking a session's Redis copy against SQL and rebuilding it when behind.
//! - [`flush`]: write-behind: records written to Redis only, copied to SQL.
//! - [`admin`]: listing, rekeying and purging sessions (for tools).
//! - [`leasing`]: the store's side of session leases (the lease itself is `crate::lease`).
//! - [`tiers`]: what the lanes and the store share.
//!
//! Why SQL first: Redis then never holds a durable value SQL lacks, so evicting a session from
//! Redis never loses data. If the Redis step fails after the commit, the caller gets the error,
//! the session is re-validated on its next use (its Redis copy is then behind SQL and rebuilt).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::cache::KeyCache;
use crate::config::StoreOptions;
use crate::crypto::Keyring;
use crate::error::{Error, Result};
use crate::events::{EventSink, Events};
use crate::lease::Leases;
use crate::model::SessionId;
use crate::redis::RedisTier;
use crate::sql::SqlStore;

mod admin;
mod apply;
mod commit;
mod flush;
mod job;
mod leasing;
mod pipeline;
mod read;
mod repair;
mod slot;
mod tiers;
mod write;

pub use admin::{RekeyReport, SessionInfo};
pub use slot::Ticket;
pub use tiers::StoreStats;

use flush::{flush_marks, flush_session};
use job::{Job, Op, WriteJob};
use pipeline::{Pipeline, REDIS_LANES};
use repair::{rebuild, recover_write, suspect};
use slot::Slot;
use tiers::{Counters, Tiers};

pub struct AuthStore {
    pipeline: Arc<Pipeline>,
    closed: AtomicBool,
    write_behind: Option<Duration>,
    /// Store values in the compact form of `codec`.
    compact: bool,
    /// Seal every value before it reaches Redis or SQL (`crate::crypto`).
    keyring: Option<Arc<Keyring>>,
    /// Sessions this process wrote behind, flushed on close.
    behind: Mutex<HashSet<String>>,
    flusher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for AuthStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = &self.pipeline.tiers;
        f.debug_struct("AuthStore")
            .field("cache", &t.cache.is_some())
            .field("redis", &t.redis)
            .field("sql", &t.sql)
            .field("encryption", &self.keyring)
            .finish()
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
        if options
            .write_behind
            .is_some_and(|d| d < Duration::from_millis(1))
        {
            return Err(Error::invalid("flushIntervalMs must be at least 1"));
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
        let timeout = |d: Option<Duration>| d.unwrap_or(Duration::ZERO);
        let deadline = (timeout(sql.as_ref().map(|s| s.timeout()))
            + timeout(redis.as_ref().map(|r| r.timeout())))
            * 2;
        let lanes = sql.as_ref().map_or(REDIS_LANES, |s| s.parallel_commits());
        let tiers = Arc::new(Tiers {
            cache,
            redis,
            sql,
            events: Arc::new(Events::default()),
            counters: Counters::default(),
            leases: Leases::default(),
            leases_on: options.leases,
            keyring: options.encryption.clone(),
        });
        let pipeline = Arc::new(Pipeline {
            tiers: tiers.clone(),
            lanes: Mutex::new(Vec::new()),
            tasks: Mutex::new(Vec::new()),
            slots: Mutex::new(HashMap::new()),
            deadline,
            lane_count: Mutex::new(lanes),
        });
        Ok(AuthStore {
            pipeline,
            closed: AtomicBool::new(false),
            write_behind: options.write_behind,
            compact: options.compact_values,
            keyring: options.encryption,
            behind: Mutex::new(HashSet::new()),
            flusher: Mutex::new(None),
        })
    }

    fn tiers(&self) -> &Tiers {
        &self.pipeline.tiers
    }

    /// Where background failures go (default: stderr). The Redis connection's too.
    pub fn set_event_sink(&self, sink: Option<Arc<dyn EventSink>>) {
        self.tiers().events.set_sink(sink.clone());
        if let Some(r) = &self.tiers().redis {
            r.events.set_sink(sink);
        }
    }

    pub fn events(&self) -> &Arc<Events> {
        &self.tiers().events
    }

    /// Drops what this process holds of a session (cache, what it knew of Redis): the next use
    /// reads and checks every tier afresh.
    pub(super) fn forget_session(&self, sid: &SessionId) {
        if let Some(cache) = &self.tiers().cache {
            cache.remove_session(sid, false);
        }
        self.pipeline.slot(sid).invalidate();
    }

    pub(super) fn check_open(&self) -> Result<()> {
        let t = self.tiers();
        let tier_closed = t.redis.as_ref().is_some_and(|r| r.is_closed())
            || t.sql.as_ref().is_some_and(|s| s.is_closed());
        if self.closed.load(Ordering::Acquire) || tier_closed {
            return Err(Error::StoreClosed);
        }
        Ok(())
    }

    /// Records an access for the shared LRU of the memory manager.
    fn touch(&self, sid: &SessionId) {
        if let Some(redis) = &self.tiers().redis {
            redis.track(sid, None);
            redis.start_tracking();
        }
    }

    pub fn redis(&self) -> Option<&Arc<RedisTier>> {
        self.tiers().redis.as_ref()
    }

    pub fn sql(&self) -> Option<&Arc<SqlStore>> {
        self.tiers().sql.as_ref()
    }

    pub fn stats(&self) -> StoreStats {
        let t = self.tiers();
        let c = &t.counters;
        let (transactions, writes) = t.sql.as_ref().map_or((0, 0), |s| s.group_stats());
        let (warnings, errors) = t.events.counts();
        StoreStats {
            cache: t.cache.as_deref().map(KeyCache::stats),
            redis_hits: c.redis_hits.load(Ordering::Relaxed),
            redis_misses: c.redis_misses.load(Ordering::Relaxed),
            sql_hits: c.sql_hits.load(Ordering::Relaxed),
            sql_misses: c.sql_misses.load(Ordering::Relaxed),
            redis_rebuilds: c.rebuilds.load(Ordering::Relaxed),
            sql_transactions: transactions,
            sql_writes: writes,
            warnings,
            errors,
            flush_dirty_sessions: c.flush_dirty.load(Ordering::Relaxed),
            last_flush_ms: Some(c.last_flush_ms.load(Ordering::Relaxed)).filter(|ms| *ms > 0),
            records_lost: c.records_lost.load(Ordering::Relaxed),
            sql_behind: c.sql_behind.load(Ordering::Relaxed),
        }
    }

    /// Closes the store: flushes what this process wrote behind, lets the lanes finish every
    /// queued write (SQL, then Redis), then closes SQL, then Redis. Later calls fail with
    /// `ERR_STORE_CLOSED`.
    pub async fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let flusher = self.flusher.lock().take();
        if let Some(task) = flusher {
            task.abort();
        }
        let t = self.tiers();
        let pending: Vec<String> = self.behind.lock().drain().collect();
        for name in pending {
            let Ok(sid) = SessionId::new(name) else {
                continue;
            };
            let slot = self.pipeline.slot(&sid);
            if let Err(e) = self.pipeline.submit(&sid, slot, Op::Flush).await {
                t.events.error(
                    e.code(),
                    &format!("could not flush a written-behind session on close; it stays marked dirty in Redis for any process's flushAll(): {e}"),
                );
            }
        }
        // the lanes end once their queues are drained
        *self.pipeline.lane_count.lock() = 0;
        self.pipeline.lanes.lock().clear();
        let tasks = std::mem::take(&mut *self.pipeline.tasks.lock());
        for task in tasks {
            if tokio::time::timeout(self.pipeline.deadline * 2, task)
                .await
                .is_err()
            {
                t.events.error(
                    "ERR_TIMEOUT",
                    "a write lane did not finish its queue in time",
                );
            }
        }
        // the writes landed under the leases: now let the next owners in
        for name in self.tiers().leases.sessions() {
            if let Ok(sid) = SessionId::new(name) {
                if let Err(e) = self.release_lease(&sid).await {
                    t.events.warn(
                        e.code(),
                        &format!("could not release a session lease on close (it expires by itself): {e}"),
                    );
                }
            }
        }
        if let Some(cache) = &t.cache {
            cache.clear();
        }
        if let Some(sql) = &t.sql {
            sql.close().await;
        }
        if let Some(redis) = &t.redis {
            redis.close().await;
        }
    }
}
