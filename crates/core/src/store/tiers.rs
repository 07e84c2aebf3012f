//! What the write lanes and the store share: the tiers, the leases, the counters behind
//! [`StoreStats`], and the two questions every path asks of them (may the cache serve this
//! session; what does a fenced write mean for this process's lease).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::cache::{CacheStats, KeyCache};
use crate::error::Error;
use crate::events::Events;
use crate::lease::{locked, Leases};
use crate::model::SessionId;
use crate::redis::RedisTier;
use crate::sql::SqlStore;

/// Which tiers answered reads, and how often, and what the background work has been doing.
#[derive(Clone, Debug, Default)]
pub struct StoreStats {
    pub cache: Option<CacheStats>,
    pub redis_hits: u64,
    pub redis_misses: u64,
    pub sql_hits: u64,
    pub sql_misses: u64,
    /// Sessions whose Redis copy was found behind and rebuilt.
    pub redis_rebuilds: u64,
    /// SQL group transactions and the writes they carried.
    pub sql_transactions: u64,
    pub sql_writes: u64,
    /// Background problems reported to the logger.
    pub warnings: u64,
    pub errors: u64,
    /// Sessions with records not yet in SQL when the last flush pass started (any process's).
    pub flush_dirty_sessions: u64,
    /// When the last flush pass (write-behind, flushAll) finished without a failure, epoch ms.
    pub last_flush_ms: Option<u64>,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) redis_hits: AtomicU64,
    pub(super) redis_misses: AtomicU64,
    pub(super) sql_hits: AtomicU64,
    pub(super) sql_misses: AtomicU64,
    pub(super) rebuilds: AtomicU64,
    /// Sessions the dirty index held when the last flush pass started.
    pub(super) flush_dirty: AtomicU64,
    /// When the last flush pass finished without a failure (epoch ms; 0: never).
    pub(super) last_flush_ms: AtomicU64,
}

impl Counters {
    pub(super) fn redis(&self, hits: usize, asked: usize) {
        self.redis_hits.fetch_add(hits as u64, Ordering::Relaxed);
        self.redis_misses
            .fetch_add((asked - hits) as u64, Ordering::Relaxed);
    }

    pub(super) fn sql(&self, hits: usize, asked: usize) {
        self.sql_hits.fetch_add(hits as u64, Ordering::Relaxed);
        self.sql_misses
            .fetch_add((asked - hits) as u64, Ordering::Relaxed);
    }
}

/// What the lanes and the store share.
pub(super) struct Tiers {
    pub(super) cache: Option<Arc<KeyCache>>,
    pub(super) redis: Option<Arc<RedisTier>>,
    pub(super) sql: Option<Arc<SqlStore>>,
    pub(super) events: Arc<Events>,
    pub(super) counters: Counters,
    pub(super) leases: Leases,
    /// Leases are on: the cache serves only sessions this store holds.
    pub(super) leases_on: bool,
}

impl Tiers {
    /// The cache, for a session it may serve (see `crate::lease`).
    pub(super) fn cache_for(&self, sid: &str) -> Option<&Arc<KeyCache>> {
        self.cache
            .as_ref()
            .filter(|_| !self.leases_on || self.leases.holds(sid))
    }

    /// A write of `sid` was fenced: this store lost the session's lease.
    pub(super) fn fenced(&self, sid: &SessionId) -> Error {
        if self.leases.lose(sid) {
            if let Some(cache) = &self.cache {
                cache.remove_session(sid, false);
            }
            self.events.warn(
                "ERR_SESSION_LOCKED",
                "this process lost a session's lease to another process; its writes to it are refused",
            );
        }
        locked("another process holds the session's lease now (a later lease epoch fenced this write); close this socket")
    }
}
