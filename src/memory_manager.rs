use std::sync::Arc;
use std::time::Duration;

use napi_derive::napi;
use wa_auth_core::memory::{Measure, MemoryManager, MemoryOptions};
use wa_auth_core::{Error, SessionId};

use crate::error::{to_napi, IntoNapi};
use crate::redis_connection::RedisConnection;

#[napi(object)]
pub struct MemoryManagerOptions {
    pub max_memory_bytes: Option<f64>,
    /// Percent of maxMemoryBytes above which eviction starts (default 80).
    pub eviction_threshold: Option<f64>,
    /// Percent eviction brings usage down to (default threshold - 10).
    pub eviction_target: Option<f64>,
    /// Seconds without access before a session leaves Redis (default 7 days).
    pub ttl_inactivity: Option<f64>,
    /// `server` (INFO used_memory, default) or `store` (MEMORY USAGE of this store's keys).
    pub measure: Option<String>,
}

#[napi(object)]
pub struct NativeCheckReport {
    pub used_before: f64,
    pub used_after: f64,
    pub evicted_idle: f64,
    pub evicted_for_memory: f64,
    pub refused: f64,
    pub refused_sessions: Vec<String>,
}

#[napi(object)]
pub struct NativeSessionMeta {
    pub session_id: String,
    pub last_access: f64,
    pub access_count: f64,
    pub size_bytes: f64,
}

#[napi(object)]
pub struct NativeNodeMemory {
    /// `host:port`
    pub node: String,
    pub used_bytes: f64,
}

#[napi(object)]
pub struct NativeMemoryStats {
    pub used_bytes: f64,
    /// `server` measure: each server summed into usedBytes (every primary of a cluster).
    pub nodes: Vec<NativeNodeMemory>,
    pub max_bytes: f64,
    pub measure: String,
    pub total_sessions: f64,
    pub session_metadata: Vec<NativeSessionMeta>,
    pub evictions: f64,
    pub evictions_all_processes: f64,
    pub refused_evictions: f64,
    pub checks: f64,
}

/// Keeps Redis inside a memory budget (see `wa_auth_core::memory`).
#[napi]
pub struct NativeMemoryManager {
    inner: Arc<MemoryManager>,
}

fn options(o: Option<MemoryManagerOptions>) -> napi::Result<MemoryOptions> {
    let mut m = MemoryOptions::default();
    let Some(o) = o else { return Ok(m) };
    let bad = |what: &str| to_napi(Error::invalid(format!("{what} must be a positive number")));
    if let Some(v) = o.max_memory_bytes {
        if !(v.is_finite() && v >= 1.0) {
            return Err(bad("maxMemoryBytes"));
        }
        m.max_memory_bytes = v as u64;
    }
    if let Some(v) = o.eviction_threshold {
        m.eviction_threshold = v;
        m.eviction_target = (v - 10.0).max(v / 2.0);
    }
    if let Some(v) = o.eviction_target {
        m.eviction_target = v;
    }
    if let Some(v) = o.ttl_inactivity {
        if !(v.is_finite() && v > 0.0) {
            return Err(bad("ttlInactivity"));
        }
        m.ttl_inactivity = Duration::from_secs_f64(v);
    }
    m.measure = match o.measure.as_deref() {
        None | Some("server") => Measure::Server,
        Some("store") => Measure::Store,
        Some(other) => {
            return Err(to_napi(Error::invalid(format!(
                "measure must be 'server' or 'store', got '{other}'"
            ))))
        }
    };
    Ok(m)
}

#[napi]
impl NativeMemoryManager {
    #[napi(constructor)]
    pub fn new(redis: &RedisConnection, opts: Option<MemoryManagerOptions>) -> napi::Result<Self> {
        let inner = MemoryManager::new(redis.inner.clone(), options(opts)?).napi()?;
        Ok(NativeMemoryManager {
            inner: Arc::new(inner),
        })
    }

    /// One pass: idle sessions out, then LRU eviction while above the threshold.
    #[napi]
    pub async fn check(&self) -> napi::Result<NativeCheckReport> {
        let r = self.inner.check().await.napi()?;
        Ok(NativeCheckReport {
            used_before: r.used_before as f64,
            used_after: r.used_after as f64,
            evicted_idle: r.evicted_idle as f64,
            evicted_for_memory: r.evicted_for_memory as f64,
            refused: r.refused as f64,
            refused_sessions: r.refused_sessions,
        })
    }

    #[napi]
    pub async fn track_access(&self, session_id: String, size: Option<f64>) -> napi::Result<()> {
        let sid = SessionId::new(session_id).napi()?;
        let size = size
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| s as u64);
        self.inner.track_access(&sid, size).await.napi()
    }

    #[napi]
    pub async fn stats(&self) -> napi::Result<NativeMemoryStats> {
        let s = self.inner.stats().await.napi()?;
        Ok(NativeMemoryStats {
            used_bytes: s.used_bytes as f64,
            nodes: s
                .nodes
                .into_iter()
                .map(|(node, bytes)| NativeNodeMemory {
                    node,
                    used_bytes: bytes as f64,
                })
                .collect(),
            max_bytes: s.max_bytes as f64,
            measure: match s.measure {
                Measure::Server => "server".into(),
                Measure::Store => "store".into(),
            },
            total_sessions: s.total_sessions as f64,
            session_metadata: s
                .sessions
                .into_iter()
                .map(|m| NativeSessionMeta {
                    session_id: m.session_id,
                    last_access: m.last_access_ms as f64,
                    access_count: m.access_count as f64,
                    size_bytes: m.size_bytes as f64,
                })
                .collect(),
            evictions: s.evictions as f64,
            evictions_all_processes: s.evictions_all as f64,
            refused_evictions: s.refused as f64,
            checks: s.checks as f64,
        })
    }
}
