//! Keeps Redis inside a memory budget by evicting least-recently-used sessions, never losing
//! data: a session leaves Redis only if SQL holds all of it (see [`RedisTier::evict_session`]),
//! and the next read brings it back from SQL.
//!
//! The LRU order is shared by every process: stores record accesses in Redis
//! (`<prefix>:{m}:lru`), so any process's manager sees one order. One [`MemoryManager::check`]:
//! 1. sessions idle longer than `ttl_inactivity` leave Redis;
//! 2. memory is measured (`Measure::Server`: the server's `used_memory`, summed over the
//!    primaries of a cluster; `Measure::Store`: the `MEMORY USAGE` of this store's own keys, for
//!    a Redis shared with other applications);
//! 3. above `eviction_threshold` percent of `max_memory_bytes`, the oldest sessions are evicted
//!    until usage is at or below `eviction_target` percent (hysteresis, default threshold - 10).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::model::SessionId;
use crate::redis::{Evicted, RedisTier};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    /// `used_memory` of `INFO memory`: everything in the server, ours or not.
    Server,
    /// Sum of `MEMORY USAGE` of this store's session keys.
    Store,
}

#[derive(Clone, Debug)]
pub struct MemoryOptions {
    pub max_memory_bytes: u64,
    /// Percent of `max_memory_bytes` above which eviction starts.
    pub eviction_threshold: f64,
    /// Percent of `max_memory_bytes` eviction brings usage down to.
    pub eviction_target: f64,
    /// Sessions idle longer than this leave Redis.
    pub ttl_inactivity: Duration,
    pub measure: Measure,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        MemoryOptions {
            max_memory_bytes: 1 << 30,
            eviction_threshold: 80.0,
            eviction_target: 70.0,
            ttl_inactivity: Duration::from_secs(7 * 24 * 3600),
            measure: Measure::Server,
        }
    }
}

impl MemoryOptions {
    pub fn validate(&self) -> Result<()> {
        let pct = |v: f64| v.is_finite() && v > 0.0 && v <= 100.0;
        if self.max_memory_bytes == 0 {
            return Err(Error::invalid("maxMemoryBytes must be greater than zero"));
        }
        if !pct(self.eviction_threshold) || !pct(self.eviction_target) {
            return Err(Error::invalid(
                "evictionThreshold and evictionTarget are percentages in (0, 100]",
            ));
        }
        if self.eviction_target > self.eviction_threshold {
            return Err(Error::invalid(
                "evictionTarget must not exceed evictionThreshold",
            ));
        }
        if self.ttl_inactivity.is_zero() {
            return Err(Error::invalid("ttlInactivity must be greater than zero"));
        }
        Ok(())
    }

    fn bytes_at(&self, percent: f64) -> u64 {
        (self.max_memory_bytes as f64 * percent / 100.0) as u64
    }
}

/// What one check did.
#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    pub used_before: u64,
    pub used_after: u64,
    pub evicted_idle: u64,
    pub evicted_for_memory: u64,
    /// Sessions that were due for eviction but hold data SQL lacks.
    pub refused: u64,
    pub refused_sessions: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct SessionMeta {
    pub session_id: String,
    pub last_access_ms: i64,
    pub access_count: u64,
    pub size_bytes: u64,
}

#[derive(Clone, Debug)]
pub struct MemoryStats {
    pub used_bytes: u64,
    /// With `Measure::Server`: `used_memory` of each server summed into `used_bytes` (every
    /// primary of a cluster), by address; empty with `Measure::Store`.
    pub nodes: Vec<(String, u64)>,
    pub max_bytes: u64,
    pub measure: Measure,
    pub total_sessions: u64,
    pub sessions: Vec<SessionMeta>,
    /// Evictions by this manager.
    pub evictions: u64,
    /// Evictions by every manager on this Redis.
    pub evictions_all: u64,
    pub refused: u64,
    pub checks: u64,
}

pub struct MemoryManager {
    redis: Arc<RedisTier>,
    opts: MemoryOptions,
    evictions: AtomicU64,
    refused: AtomicU64,
    checks: AtomicU64,
    /// Serialises checks of this manager.
    running: tokio::sync::Mutex<()>,
    last_sizes: Mutex<HashMap<String, u64>>,
}

impl MemoryManager {
    pub fn new(redis: Arc<RedisTier>, opts: MemoryOptions) -> Result<Self> {
        opts.validate()?;
        Ok(MemoryManager {
            redis,
            opts,
            evictions: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            checks: AtomicU64::new(0),
            running: tokio::sync::Mutex::new(()),
            last_sizes: Mutex::new(HashMap::new()),
        })
    }

    pub fn options(&self) -> &MemoryOptions {
        &self.opts
    }

    /// Records an access (and optionally a size estimate) and sends it to Redis now.
    pub async fn track_access(&self, sid: &SessionId, size: Option<u64>) -> Result<()> {
        self.redis.track(sid, size);
        self.redis.flush_tracking().await
    }

    async fn measure(&self, sessions: &[String]) -> Result<u64> {
        match self.opts.measure {
            Measure::Server => self.redis.used_memory().await,
            Measure::Store => {
                let sizes = self.measure_sessions(sessions).await?;
                Ok(sizes.values().sum())
            }
        }
    }

    /// `MEMORY USAGE` of every session in `sessions`, remembered for the stats.
    async fn measure_sessions(&self, sessions: &[String]) -> Result<HashMap<String, u64>> {
        let mut sizes = HashMap::with_capacity(sessions.len());
        for chunk in sessions.chunks(64) {
            let mut set = tokio::task::JoinSet::new();
            for sid in chunk {
                let redis = self.redis.clone();
                let sid = sid.clone();
                set.spawn(async move {
                    let id = SessionId::new(sid.clone())?;
                    let bytes = redis.session_memory(&id).await?;
                    Ok::<_, Error>((sid, bytes))
                });
            }
            while let Some(r) = set.join_next().await {
                let (sid, bytes) =
                    r.map_err(|e| Error::Redis(format!("measuring task failed: {e}")))??;
                sizes.insert(sid, bytes);
            }
        }
        let client = self.redis.client();
        if !sizes.is_empty() {
            let pairs: Vec<(&str, i64)> =
                sizes.iter().map(|(s, b)| (s.as_str(), *b as i64)).collect();
            let _: () = self
                .redis
                .call("hset", client.hset(self.redis.mm_key("size"), pairs))
                .await?;
        }
        *self.last_sizes.lock() = sizes.clone();
        Ok(sizes)
    }

    async fn evict(&self, sid: &str, report: &mut CheckReport) -> Result<Option<u64>> {
        let id = match SessionId::new(sid.to_string()) {
            Ok(id) => id,
            Err(_) => {
                self.forget(sid).await?;
                return Ok(None);
            }
        };
        let size = self.last_sizes.lock().get(sid).copied();
        let size = match (size, self.opts.measure) {
            (Some(s), _) => s,
            (None, Measure::Store) => self.redis.session_memory(&id).await?,
            (None, Measure::Server) => 0,
        };
        match self.redis.evict_session(&id).await? {
            Evicted::Keys(_) => {
                self.forget(sid).await?;
                self.evictions.fetch_add(1, Ordering::Relaxed);
                let _: i64 = self
                    .redis
                    .call(
                        "incr",
                        self.redis.client().incr(self.redis.mm_key("evictions")),
                    )
                    .await?;
                Ok(Some(size))
            }
            Evicted::Dirty => {
                report.refused += 1;
                if report.refused_sessions.len() < 20 {
                    report.refused_sessions.push(sid.to_string());
                }
                self.refused.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
        }
    }

    /// Drops the bookkeeping of a session that left Redis; its next access adds it again.
    async fn forget(&self, sid: &str) -> Result<()> {
        let client = self.redis.client();
        let pipe = client.pipeline();
        self.redis
            .queued(pipe.zrem(self.redis.mm_key("lru"), sid).await)?;
        self.redis
            .queued(pipe.hdel(self.redis.mm_key("size"), sid).await)?;
        let _: Vec<Value> = self.redis.call("forget", pipe.all()).await?;
        self.last_sizes.lock().remove(sid);
        Ok(())
    }

    /// Sessions by last access, oldest first.
    async fn sessions_by_age(&self) -> Result<Vec<(String, f64)>> {
        let lru = self.redis.mm_key("lru");
        self.redis
            .call(
                "zrange",
                self.redis
                    .client()
                    .zrange(lru, 0, -1, None, false, None, true),
            )
            .await
    }

    /// One pass: idle sessions out, then LRU eviction while above the threshold.
    pub async fn check(&self) -> Result<CheckReport> {
        let _one_at_a_time = self.running.lock().await;
        self.checks.fetch_add(1, Ordering::Relaxed);
        self.redis.flush_tracking().await?;
        let mut report = CheckReport::default();

        let cutoff = crate::sql::now_ms() - self.opts.ttl_inactivity.as_millis() as i64;
        let sessions = self.sessions_by_age().await?;
        let (idle, active): (Vec<_>, Vec<_>) = sessions
            .into_iter()
            .partition(|(_, t)| (*t as i64) < cutoff);
        for (sid, _) in &idle {
            if self.evict(sid, &mut report).await?.is_some() {
                report.evicted_idle += 1;
            }
        }

        let names: Vec<String> = active.into_iter().map(|(s, _)| s).collect();
        let mut used = self.measure(&names).await?;
        report.used_before = used;
        let trigger = self.opts.bytes_at(self.opts.eviction_threshold);
        let target = self.opts.bytes_at(self.opts.eviction_target);
        if used > trigger {
            let mut since_measure = 0;
            for sid in &names {
                if used <= target {
                    break;
                }
                if let Some(size) = self.evict(sid, &mut report).await? {
                    report.evicted_for_memory += 1;
                    since_measure += 1;
                    match self.opts.measure {
                        Measure::Store => used = used.saturating_sub(size),
                        // the server's figure moves with every eviction: re-read it now and then
                        Measure::Server if since_measure >= 16 => {
                            used = self.redis.used_memory().await?;
                            since_measure = 0;
                        }
                        Measure::Server => {}
                    }
                }
            }
            if self.opts.measure == Measure::Server {
                used = self.redis.used_memory().await?;
            }
        }
        report.used_after = used;
        // refusals are in the report: the JavaScript manager hands them to its logger
        Ok(report)
    }

    pub async fn stats(&self) -> Result<MemoryStats> {
        let client = self.redis.client();
        let sessions = self.sessions_by_age().await?;
        let r = &self.redis;
        let counts: HashMap<String, i64> =
            r.call("hgetall", client.hgetall(r.mm_key("count"))).await?;
        let sizes: HashMap<String, i64> =
            r.call("hgetall", client.hgetall(r.mm_key("size"))).await?;
        let all: Option<i64> = r.call("get", client.get(r.mm_key("evictions"))).await?;
        let (used, nodes) = match self.opts.measure {
            Measure::Server => {
                let nodes = self.redis.used_memory_by_node().await?;
                (nodes.iter().map(|(_, b)| b).sum(), nodes)
            }
            Measure::Store => (
                sessions
                    .iter()
                    .map(|(s, _)| sizes.get(s).copied().unwrap_or(0).max(0) as u64)
                    .sum(),
                Vec::new(),
            ),
        };
        let meta: Vec<SessionMeta> = sessions
            .into_iter()
            .rev()
            .map(|(sid, t)| SessionMeta {
                last_access_ms: t as i64,
                access_count: counts.get(&sid).copied().unwrap_or(0).max(0) as u64,
                size_bytes: sizes.get(&sid).copied().unwrap_or(0).max(0) as u64,
                session_id: sid,
            })
            .collect();
        Ok(MemoryStats {
            used_bytes: used,
            nodes,
            max_bytes: self.opts.max_memory_bytes,
            measure: self.opts.measure,
            total_sessions: meta.len() as u64,
            sessions: meta,
            evictions: self.evictions.load(Ordering::Relaxed),
            evictions_all: all.unwrap_or(0).max(0) as u64,
            refused: self.refused.load(Ordering::Relaxed),
            checks: self.checks.load(Ordering::Relaxed),
        })
    }
}
