//! What the write lanes and the store share: the tiers, the leases, the counters behind
//! [`StoreStats`], and the questions every path asks of them (may the cache serve this session;
//! what does a refused write mean for this process: see `crate::lease`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::Slot;
use crate::cache::{CacheStats, KeyCache};
use crate::crypto::Keyring;
use crate::error::Error;
use crate::events::Events;
use crate::lease::{locked, sealed_error, Forget, LeaseTiers, Leases, Verdict};
use crate::model::SessionId;
use crate::redis::RedisTier;
use crate::sql::rules::may_write;
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
    /// Records written to Redis only that Redis no longer held when a flush came for them.
    pub records_lost: u64,
    /// Sessions this store found with SQL behind Redis (refused with `ERR_SQL_BEHIND`).
    pub sql_behind: u64,
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
    /// Records written to Redis only that were gone before a flush reached them.
    pub(super) records_lost: AtomicU64,
    /// Sessions found with SQL behind Redis (SQL restored from an older backup).
    pub(super) sql_behind: AtomicU64,
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
    /// Seals every value before it reaches Redis or SQL (`crate::crypto`).
    pub(super) keyring: Option<Arc<Keyring>>,
}

/// What a lane forgets of a session when its lease or claim moved: the cache's copy and what
/// the slot knew of Redis.
struct LaneForget<'a> {
    cache: Option<&'a KeyCache>,
    slot: &'a Slot,
}

impl Forget for LaneForget<'_> {
    fn forget(&self, sid: &SessionId) {
        if let Some(cache) = self.cache {
            cache.remove_session(sid, false);
        }
        self.slot.invalidate();
    }
}

impl Tiers {
    /// The cache, for a session it may serve (see `crate::lease`).
    pub(super) fn cache_for(&self, sid: &str) -> Option<&Arc<KeyCache>> {
        self.cache
            .as_ref()
            .filter(|_| !self.leases_on || self.leases.serves_cache(sid))
    }

    /// The lease context of a lane working on `slot`'s session.
    fn lease_tiers<'a>(&'a self, forget: &'a LaneForget<'a>) -> LeaseTiers<'a> {
        LeaseTiers {
            redis: self.redis.as_deref(),
            sql: self.sql.as_deref(),
            events: &self.events,
            forget,
            leases_on: self.leases_on,
            sealing: self.keyring.is_some(),
        }
    }

    /// A write of `epoch` was refused by a tier. For a claimed write: the epoch to write it
    /// under now (this store's newer claim, or one claimed now). Otherwise the error its caller
    /// gets (this store's lease is lost from that epoch on; see [`crate::lease::Leases::fenced`]).
    /// `values`: the write carries values (a claim of a sealed session then needs the key).
    pub(super) async fn refused(
        &self,
        sid: &SessionId,
        slot: &Slot,
        epoch: u64,
        claimed: bool,
        values: bool,
    ) -> std::result::Result<u64, Error> {
        let forget = LaneForget {
            cache: self.cache.as_deref(),
            slot,
        };
        let cx = self.lease_tiers(&forget);
        match self.leases.fenced(&cx, sid, epoch) {
            Verdict::Lost => Err(lost()),
            // a claim this store took since, or a new one
            _ if claimed => {
                let f = self
                    .leases
                    .claim(&cx, sid, false, Some(epoch), false)
                    .await?;
                if values && !may_write(f.sealed, self.keyring.is_some()) {
                    return Err(sealed_error());
                }
                Ok(f.epoch)
            }
            Verdict::Claim | Verdict::Stale => Err(stale()),
        }
    }
}

/// The error of a write refused because this store lost the session's lease.
pub(super) fn lost() -> Error {
    locked("another process holds the session's lease now (a later lease epoch fenced this write); close this socket")
}

/// The error of a write of an earlier epoch of this store, refused after it moved on.
pub(super) fn stale() -> Error {
    locked("this write carried an earlier epoch of this process's lease, which another writer took over meanwhile; it was not applied")
}
