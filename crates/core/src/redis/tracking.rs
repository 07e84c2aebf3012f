//! The memory manager's bookkeeping: accesses for the shared LRU (batched), measured memory, and
//! the caches to tell about evictions.

use std::sync::{Arc, Weak};
use std::time::Duration;

use fred::prelude::*;

use super::{used_memory_of, RedisTier};
use crate::cache::KeyCache;
use crate::error::{Error, Result};
use crate::model::SessionId;

#[derive(Default)]
pub(super) struct PendingAccess {
    pub last_ms: i64,
    pub count: i64,
    pub size: Option<u64>,
}

/// How often recorded accesses are sent to the shared LRU.
pub const TRACK_FLUSH: Duration = Duration::from_millis(1000);

impl RedisTier {
    /// Bytes Redis reports for all of a session's keys (`MEMORY USAGE`).
    pub async fn session_memory(&self, sid: &SessionId) -> Result<u64> {
        let types: Vec<String> = self
            .call("smembers", self.client.smembers(self.types_key(sid)))
            .await?;
        let base = self.session_base(sid);
        let mut keys = vec![
            self.creds_key(sid),
            self.types_key(sid),
            self.dirty_key(sid),
            self.meta_key(sid),
        ];
        keys.extend(types.iter().map(|t| format!("{base}k:{t}")));
        let pipe = self.client.pipeline();
        for k in &keys {
            self.queued(pipe.memory_usage(k, Some(0)).await)?;
        }
        let sizes: Vec<Option<i64>> = self.call("memory usage", pipe.all()).await?;
        Ok(sizes.into_iter().flatten().map(|n| n.max(0) as u64).sum())
    }

    /// `used_memory` from `INFO memory`: of the server, or summed over every primary of a
    /// cluster (see [`Self::used_memory_by_node`]).
    pub async fn used_memory(&self) -> Result<u64> {
        Ok(self
            .used_memory_by_node()
            .await?
            .iter()
            .map(|(_, b)| b)
            .sum())
    }

    /// `used_memory` of each server that holds sessions: the one server, or every primary of a
    /// cluster (each holds the sessions of its slots; replicas hold copies and are left out).
    /// INFO is a per-node command: sent without a node, a cluster client asks just one.
    pub async fn used_memory_by_node(&self) -> Result<Vec<(String, u64)>> {
        if !self.client.is_clustered() {
            let info: String = self
                .call(
                    "info",
                    self.client.info(Some(fred::types::InfoKind::Memory)),
                )
                .await?;
            let name = self
                .client
                .active_connections()
                .first()
                .map_or_else(String::new, ToString::to_string);
            return Ok(vec![(name, used_memory_of(&info)?)]);
        }
        let primaries = self
            .client
            .cached_cluster_state()
            .map(|s| s.unique_primary_nodes())
            .unwrap_or_default();
        if primaries.is_empty() {
            return Err(Error::Redis("the cluster's primaries are not known".into()));
        }
        let infos = futures::future::join_all(primaries.iter().map(|node| async move {
            let on_node = self.client.with_cluster_node(node.clone());
            self.call(
                "info",
                on_node.info::<String>(Some(fred::types::InfoKind::Memory)),
            )
            .await
        }))
        .await;
        primaries
            .iter()
            .zip(infos)
            .map(|(node, info)| Ok((node.to_string(), used_memory_of(&info?)?)))
            .collect()
    }

    /// Records an access of `sid` for the shared LRU; sent in batches every [`TRACK_FLUSH`].
    pub fn track(&self, sid: &str, size: Option<u64>) {
        if self.is_closed() {
            return;
        }
        let mut pending = self.pending.lock();
        if !pending.contains_key(sid) {
            pending.insert(sid.to_string(), PendingAccess::default());
        }
        let Some(p) = pending.get_mut(sid) else {
            return;
        };
        p.last_ms = crate::sql::now_ms();
        p.count += 1;
        if size.is_some() {
            p.size = size;
        }
    }

    /// Starts the task that sends recorded accesses to Redis (idempotent).
    pub fn start_tracking(self: &Arc<Self>) {
        let mut task = self.tracking_task.lock();
        if task.is_some() || self.is_closed() {
            return;
        }
        let weak = Arc::downgrade(self);
        *task = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(TRACK_FLUSH).await;
                let Some(tier) = weak.upgrade() else { return };
                if tier.is_closed() {
                    return;
                }
                if let Err(e) = tier.flush_tracking().await {
                    tier.events.warn(
                        "WARN_TRACKING",
                        &format!("could not record session accesses: {e}"),
                    );
                }
            }
        }));
    }

    /// Sends the recorded accesses now: one pipeline.
    pub async fn flush_tracking(&self) -> Result<()> {
        let pending = std::mem::take(&mut *self.pending.lock());
        if pending.is_empty() {
            return Ok(());
        }
        let pipe = self.client.pipeline();
        let (lru, count, size) = (
            self.mm_key("lru"),
            self.mm_key("count"),
            self.mm_key("size"),
        );
        let scores: Vec<(f64, &str)> = pending
            .iter()
            .map(|(s, p)| (p.last_ms as f64, s.as_str()))
            .collect();
        self.queued(
            pipe.zadd(
                &lru,
                None,
                Some(fred::types::sorted_sets::Ordering::GreaterThan),
                false,
                false,
                scores,
            )
            .await,
        )?;
        for (sid, p) in &pending {
            self.queued(pipe.hincrby(&count, sid.as_str(), p.count).await)?;
            if let Some(bytes) = p.size {
                self.queued(pipe.hset(&size, (sid.as_str(), bytes as i64)).await)?;
            }
        }
        let _: Vec<fred::types::Value> = self.call("track", pipe.all()).await?;
        Ok(())
    }

    pub(crate) fn register_cache(&self, cache: &Arc<KeyCache>) {
        let mut caches = self.caches.lock();
        caches.retain(|c| c.strong_count() > 0);
        caches.push(Arc::downgrade(cache));
    }

    pub(super) fn notify_evicted(&self, sid: &SessionId) {
        for cache in self.caches.lock().iter().filter_map(Weak::upgrade) {
            cache.remove_session(sid, false);
        }
    }
}
