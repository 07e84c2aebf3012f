//! The memory manager against a Redis server of the test's own (isolated, killed afterwards).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use wa_auth_core::memory::{Measure, MemoryManager, MemoryOptions};
use wa_auth_core::{
    AuthStore, KeyWrite, RedisOptions, RedisTier, SessionId, StoreOptions, WriteBatch, WriteOptions,
};

async fn tier(own: &OwnRedis) -> Arc<RedisTier> {
    RedisTier::connect(RedisOptions::new(own.url()))
        .await
        .unwrap()
}

fn sid(i: usize) -> SessionId {
    SessionId::new(format!("s{i}")).unwrap()
}

/// A session of about `kb` KiB: pre-keys and Signal sessions.
fn session_batch(tag: &str, kb: usize) -> WriteBatch {
    let keys = (0..kb)
        .map(|i| {
            KeyWrite::put(
                "pre-key",
                i.to_string(),
                format!("{tag}-{i}-{}", "x".repeat(1000)).into_bytes(),
            )
        })
        .collect();
    WriteBatch {
        creds: Some(Arc::from(format!("creds-{tag}").as_bytes())),
        keys,
    }
}

fn opts(max: u64, measure: Measure) -> MemoryOptions {
    MemoryOptions {
        max_memory_bytes: max,
        eviction_threshold: 80.0,
        eviction_target: 70.0,
        ttl_inactivity: Duration::from_secs(3600),
        measure,
    }
}

async fn fill(store: &AuthStore, n: usize, kb: usize, opts: &WriteOptions) {
    for i in 0..n {
        store
            .write(&sid(i), session_batch(&format!("v{i}"), kb), opts)
            .await
            .unwrap();
    }
}

async fn assert_all_readable(store: &AuthStore, n: usize, kb: usize) {
    for i in 0..n {
        let s = sid(i);
        assert_eq!(
            store.get_creds(&s).await.unwrap().as_deref(),
            Some(format!("creds-v{i}").as_bytes()),
            "creds of {i}"
        );
        let ids: Vec<String> = (0..kb).map(|k| k.to_string()).collect();
        let got = store.get_keys(&s, "pre-key", &ids).await.unwrap();
        for (k, v) in got.iter().enumerate() {
            let want = format!("v{i}-{k}-{}", "x".repeat(1000));
            assert_eq!(v.as_deref(), Some(want.as_bytes()), "session {i} key {k}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicts_lru_sessions_to_the_budget_and_loses_nothing() {
    let Some(own) = OwnRedis::start() else { return };
    let redis = tier(&own).await;
    let sql = sqlite_memory().await;
    let store = uncached(Some(redis.clone()), Some(sql));
    fill(&store, 40, 8, &WriteOptions::default()).await;
    // session 0 is the most recently used
    store.get_creds(&sid(0)).await.unwrap();
    redis.flush_tracking().await.unwrap();

    let probe = MemoryManager::new(redis.clone(), opts(u64::MAX / 4, Measure::Store)).unwrap();
    let total = probe.check().await.unwrap().used_before;
    assert!(total > 40 * 8 * 1000, "{total}");

    let manager = MemoryManager::new(redis.clone(), opts(total, Measure::Store)).unwrap();
    let report = manager.check().await.unwrap();
    assert!(report.used_before > total * 8 / 10);
    assert!(report.used_after <= total * 7 / 10, "{report:?}");
    assert!(
        report.evicted_for_memory > 0 && report.refused == 0,
        "{report:?}"
    );
    // the most recently used session stayed, the oldest left
    use fred::prelude::KeysInterface;
    let in_redis = |s: SessionId| {
        let r = redis.clone();
        async move { r.client().exists::<i64, _>(r.creds_key(&s)).await.unwrap() == 1 }
    };
    assert!(in_redis(sid(0)).await);
    assert!(!in_redis(sid(1)).await);
    let stats = manager.stats().await.unwrap();
    assert_eq!(stats.evictions, report.evicted_for_memory);
    assert_eq!(stats.evictions_all, report.evicted_for_memory);
    assert_eq!(stats.total_sessions, 40 - report.evicted_for_memory);

    // every session still reads, the evicted ones from SQL, and they warm Redis again
    assert_all_readable(&store, 40, 8).await;
    assert!(in_redis(sid(1)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_memory_falls_back_under_the_budget() {
    let Some(own) = OwnRedis::start() else { return };
    let redis = tier(&own).await;
    let store = uncached(Some(redis.clone()), Some(sqlite_memory().await));
    fill(&store, 60, 16, &WriteOptions::default()).await;
    redis.flush_tracking().await.unwrap();
    let used = redis.used_memory().await.unwrap();
    let manager = MemoryManager::new(redis.clone(), opts(used, Measure::Server)).unwrap();
    let report = manager.check().await.unwrap();
    assert!(report.evicted_for_memory > 0, "{report:?}");
    assert!(report.used_after <= used * 7 / 10, "{report:?} of {used}");
    assert_all_readable(&store, 60, 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_leave_redis() {
    let Some(own) = OwnRedis::start() else { return };
    let redis = tier(&own).await;
    let store = AuthStore::new(
        Some(redis.clone()),
        Some(sqlite_memory().await),
        StoreOptions::default(),
    )
    .unwrap();
    fill(&store, 5, 1, &WriteOptions::default()).await;
    redis.flush_tracking().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    store.get_creds(&sid(4)).await.unwrap(); // session 4 stays active
    let mut o = opts(u64::MAX / 4, Measure::Server);
    o.ttl_inactivity = Duration::from_millis(200);
    let manager = MemoryManager::new(redis.clone(), o).unwrap();
    let report = manager.check().await.unwrap();
    assert_eq!(report.evicted_idle, 4, "{report:?}");
    assert_eq!(
        manager
            .stats()
            .await
            .unwrap()
            .sessions
            .iter()
            .map(|s| s.session_id.as_str())
            .collect::<Vec<_>>(),
        vec!["s4"]
    );
    assert_all_readable(&store, 5, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_evict_what_sql_does_not_hold() {
    let Some(own) = OwnRedis::start() else { return };
    let redis = tier(&own).await;
    // no SQL tier at all
    let redis_only = uncached(Some(redis.clone()), None);
    fill(&redis_only, 4, 2, &WriteOptions::default()).await;
    // a SQL tier, but a write that skipped it
    let both = uncached(Some(redis.clone()), Some(sqlite_memory().await));
    let skip_sql = WriteOptions {
        sync_to_database: false,
        ttl: None,
        force: false,
    };
    let s9 = sid(9);
    both.write(&s9, session_batch("v9", 2), &skip_sql)
        .await
        .unwrap();
    redis.flush_tracking().await.unwrap();

    let manager = MemoryManager::new(redis.clone(), opts(1, Measure::Store)).unwrap();
    let report = manager.check().await.unwrap();
    assert_eq!(report.evicted_for_memory, 0, "{report:?}");
    assert_eq!(report.refused, 5, "{report:?}");
    assert_eq!(manager.stats().await.unwrap().refused, 5);
    assert_all_readable(&redis_only, 4, 2).await;

    // once flushed to SQL, the session may go, and comes back from SQL
    assert_eq!(both.flush(&s9).await.unwrap(), 3);
    let report = manager.check().await.unwrap();
    assert_eq!(report.evicted_for_memory, 1, "{report:?}");
    let got = both
        .get_keys(&s9, "pre-key", &["1".to_string()])
        .await
        .unwrap();
    assert_eq!(
        got[0].as_deref(),
        Some(format!("v9-1-{}", "x".repeat(1000)).as_bytes())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_racing_evictions_are_never_lost() {
    let Some(own) = OwnRedis::start() else { return };
    let redis = tier(&own).await;
    let sql = sqlite_memory().await;
    let store = Arc::new(uncached(Some(redis.clone()), Some(sql)));
    let manager = Arc::new(MemoryManager::new(redis.clone(), opts(1, Measure::Store)).unwrap());
    let sessions = 6;
    let rounds = 40;
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..sessions {
        let store = store.clone();
        writers.spawn(async move {
            let s = sid(w);
            for r in 0..rounds {
                // odd sessions write Redis-only (dirty) every third round
                let o = WriteOptions {
                    sync_to_database: !(w % 2 == 1 && r % 3 == 0),
                    ttl: None,
                    force: false,
                };
                let batch = WriteBatch {
                    creds: Some(Arc::from(format!("c{w}-{r}").as_bytes())),
                    keys: vec![
                        KeyWrite::put("session", "a", format!("a{w}-{r}").into_bytes()),
                        KeyWrite::put("session", format!("r{r}"), vec![r as u8]),
                    ],
                };
                store.write(&s, batch, &o).await.unwrap();
            }
        });
    }
    let evictor = {
        let manager = manager.clone();
        tokio::spawn(async move {
            let mut evicted = 0;
            for _ in 0..30 {
                evicted += manager.check().await.unwrap().evicted_for_memory;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            evicted
        })
    };
    while let Some(r) = writers.join_next().await {
        r.unwrap();
    }
    let evicted = evictor.await.unwrap();
    assert!(
        evicted > 0,
        "the evictor never got a session: the race was not exercised"
    );
    for w in 0..sessions {
        let s = sid(w);
        // the last write of each session always skips SQL for odd sessions when rounds-1 % 3 == 0
        assert_eq!(
            store.get_creds(&s).await.unwrap().as_deref(),
            Some(format!("c{w}-{}", rounds - 1).as_bytes())
        );
        let ids: Vec<String> = std::iter::once("a".to_string())
            .chain((0..rounds).map(|r| format!("r{r}")))
            .collect();
        let got = store.get_keys(&s, "session", &ids).await.unwrap();
        assert_eq!(
            got[0].as_deref(),
            Some(format!("a{w}-{}", rounds - 1).as_bytes()),
            "session {w}"
        );
        for r in 0..rounds {
            assert_eq!(
                got[r + 1].as_deref(),
                Some(&[r as u8][..]),
                "session {w} record r{r}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connections_share_one_lru_order() {
    let Some(own) = OwnRedis::start() else { return };
    let (r1, r2) = (tier(&own).await, tier(&own).await);
    let sql = sqlite_memory().await;
    let p1 = AuthStore::new(Some(r1.clone()), Some(sql.clone()), StoreOptions::default()).unwrap();
    let p2 = AuthStore::new(Some(r2.clone()), Some(sql), StoreOptions::default()).unwrap();
    p1.write(&sid(1), session_batch("v1", 1), &WriteOptions::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    p2.write(&sid(2), session_batch("v2", 1), &WriteOptions::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    p1.get_creds(&sid(1)).await.unwrap();
    r1.flush_tracking().await.unwrap();
    r2.flush_tracking().await.unwrap();
    let m = MemoryManager::new(r2.clone(), opts(u64::MAX / 4, Measure::Server)).unwrap();
    let stats = m.stats().await.unwrap();
    let order: Vec<&str> = stats
        .sessions
        .iter()
        .map(|s| s.session_id.as_str())
        .collect();
    assert_eq!(order, vec!["s1", "s2"], "most recent first");
    assert_eq!(stats.sessions[0].access_count, 2);
    assert_eq!(stats.sessions[1].access_count, 1);
    // a manager on either connection evicts the session the other process used least recently
    let total = m.stats().await.unwrap().total_sessions;
    assert_eq!(total, 2);
}

#[test]
fn options_are_validated() {
    let mut o = opts(100, Measure::Server);
    o.eviction_target = 90.0;
    assert!(o.validate().is_err());
    o.eviction_target = 70.0;
    o.max_memory_bytes = 0;
    assert_eq!(o.validate().unwrap_err().code(), "ERR_INVALID_ARGUMENT");
}
