//! One order of writes in every tier: the regressions of issue 7, each against real services.
//! Every test here failed on the store before versions (the numbers are the items).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use fred::prelude::*;
use wa_auth_core::{
    AuthStore, KeyWrite, RedisOptions, RedisTier, SessionId, SqlStore, StoreOptions, WriteBatch,
    WriteOptions,
};

fn sid(name: &str) -> SessionId {
    SessionId::new(unique(name)).unwrap()
}

fn one(kind: &str, id: &str, v: &[u8]) -> WriteBatch {
    WriteBatch {
        creds: None,
        keys: vec![KeyWrite::put(kind, id, v.to_vec())],
    }
}

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

async fn read(store: &AuthStore, s: &SessionId, kind: &str, id: &str) -> Option<Vec<u8>> {
    store.get_keys(s, kind, &ids(&[id])).await.unwrap()[0]
        .as_ref()
        .map(|v| v.to_vec())
}

type Combo = (&'static str, Option<Arc<RedisTier>>, Option<Arc<SqlStore>>);

async fn combos() -> Vec<Combo> {
    let mut out: Vec<Combo> = vec![("sqlite", None, Some(sqlite_memory().await))];
    let (r, p, m) = (redis().await, postgres().await, mysql().await);
    if let Some(p) = &p {
        out.push(("postgres", None, Some(p.clone())));
    }
    if let Some(r) = &r {
        out.push(("redis", Some(r.clone()), None));
        out.push(("redis+sqlite", Some(r.clone()), Some(sqlite_memory().await)));
        if let Some(p) = &p {
            out.push(("redis+postgres", Some(r.clone()), Some(p.clone())));
        }
        if let Some(m) = &m {
            out.push(("redis+mysql", Some(r.clone()), Some(m.clone())));
        }
    }
    out
}

/// The reproduction: 50 concurrent writes of one record; the value this process reads
/// afterwards is what every tier holds and what a new store reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_of_one_record_land_in_one_order() {
    for (name, redis, sql) in combos().await {
        let store =
            Arc::new(AuthStore::new(redis.clone(), sql.clone(), StoreOptions::default()).unwrap());
        for round in 0..10 {
            let s = sid(&format!("race-{name}-{round}"));
            let mut set = tokio::task::JoinSet::new();
            for i in 0..50u32 {
                let (store, s) = (store.clone(), s.clone());
                set.spawn(async move {
                    let v = format!("{{\"v\":{i}}}");
                    store
                        .write(
                            &s,
                            one("session", "a", v.as_bytes()),
                            &WriteOptions::default(),
                        )
                        .await
                        .unwrap()
                });
            }
            let mut versions = Vec::new();
            while let Some(r) = set.join_next().await {
                versions.push(r.unwrap());
            }
            versions.sort();
            versions.dedup();
            assert_eq!(
                versions.len(),
                50,
                "{name}: every write has its own version"
            );
            let seen = read(&store, &s, "session", "a").await;
            // a fresh store without cache reads the tiers
            let fresh = uncached(redis.clone(), sql.clone());
            assert_eq!(
                read(&fresh, &s, "session", "a").await,
                seen,
                "{name} round {round}: fresh store"
            );
            if let Some(sql) = &sql {
                let sql_only = uncached(None, Some(sql.clone()));
                assert_eq!(
                    read(&sql_only, &s, "session", "a").await,
                    seen,
                    "{name} round {round}: SQL"
                );
            }
            if let Some(r) = &redis {
                let redis_only = uncached(Some(r.clone()), None);
                assert_eq!(
                    read(&redis_only, &s, "session", "a").await,
                    seen,
                    "{name} round {round}: Redis"
                );
            }
            store.purge_session(&s).await.unwrap();
        }
    }
}

/// Item 1: no session id reaches the store's own keys (`mm`, `m`, `{m}` and friends).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_ids_never_reach_the_stores_own_keys() {
    let (Some(own), sql) = (OwnRedis::start(), sqlite_memory().await) else {
        return;
    };
    let r = RedisTier::connect(RedisOptions::new(own.url()))
        .await
        .unwrap();
    let store = AuthStore::new(
        Some(r.clone()),
        Some(sql),
        StoreOptions {
            cache_max_bytes: 0,
            write_behind: Some(Duration::from_secs(3600)),
            ..Default::default()
        },
    )
    .unwrap();
    let other = SessionId::new("someone").unwrap();
    store
        .write(&other, one("session", "a", b"x"), &WriteOptions::default())
        .await
        .unwrap();
    let index: Vec<String> = r.client().smembers(r.mm_key("dirty")).await.unwrap();
    assert_eq!(index, vec!["someone".to_string()]);
    for name in ["mm", "m", "{m}", "m}", "{mm}", "s:m", "%7Bm%7D"] {
        let s = SessionId::new(name).unwrap();
        store
            .write(&s, one("session", "a", b"v"), &WriteOptions::default())
            .await
            .unwrap();
        store.delete_session(&s, false).await.unwrap();
        assert!(read(&store, &s, "session", "a").await.is_none(), "{name}");
    }
    // the dirty index of every process is intact, and a flush still finds the other session
    let index: Vec<String> = r.client().smembers(r.mm_key("dirty")).await.unwrap();
    assert!(index.contains(&"someone".to_string()), "{index:?}");
    assert_eq!(store.flush_all().await.unwrap(), 1);
    store.close().await;
}

/// Item 2: flushes never move SQL backwards, whoever runs them and whatever races them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushes_and_durable_writes_race_without_going_backwards() {
    let (Some(r), Some(p)) = (redis().await, postgres().await) else {
        return;
    };
    let s = sid("flush-race");
    let store = Arc::new(uncached(Some(r.clone()), Some(p.clone())));
    let flusher = Arc::new(uncached(Some(r.clone()), Some(p.clone())));
    let behind = WriteOptions {
        sync_to_database: false,
        ttl: None,
        force: false,
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = {
        let (flusher, s, stop) = (flusher.clone(), s.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                flusher.flush(&s).await.unwrap();
            }
        })
    };
    for i in 0..200u32 {
        let opts = if i % 2 == 0 {
            behind.clone()
        } else {
            WriteOptions::default()
        };
        let v = format!("{{\"v\":{i}}}");
        store
            .write(&s, one("session", "a", v.as_bytes()), &opts)
            .await
            .unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    f.await.unwrap();
    store.flush(&s).await.unwrap();
    let sql_only = uncached(None, Some(p.clone()));
    assert_eq!(
        read(&sql_only, &s, "session", "a").await.as_deref(),
        Some(&b"{\"v\":199}"[..])
    );
    // marks restart nowhere: a record written behind again after a clean is dirty again
    store
        .write(&s, one("session", "a", b"{\"v\":200}"), &behind)
        .await
        .unwrap();
    assert_eq!(store.flush(&s).await.unwrap(), 1);
    assert_eq!(
        read(&sql_only, &s, "session", "a").await.as_deref(),
        Some(&b"{\"v\":200}"[..])
    );
    store.purge_session(&s).await.unwrap();
}

/// Item 3: a dirty record Redis lost is not a delete: reads fall back to SQL's copy (creds too,
/// so no new account is minted), a flush deletes nothing, and the loss is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dirty_record_redis_lost_is_not_a_delete() {
    let (Some(r), Some(p)) = (redis().await, postgres().await) else {
        return;
    };
    let s = sid("lost");
    let store = uncached(Some(r.clone()), Some(p.clone()));
    let durable = WriteBatch {
        creds: Some(Arc::from(&b"{\"creds\":1}"[..])),
        keys: vec![KeyWrite::put("session", "a", b"{\"v\":1}".to_vec())],
    };
    store
        .write(&s, durable, &WriteOptions::default())
        .await
        .unwrap();
    let behind = WriteOptions {
        sync_to_database: false,
        ttl: None,
        force: false,
    };
    let newer = WriteBatch {
        creds: Some(Arc::from(&b"{\"creds\":2}"[..])),
        keys: vec![KeyWrite::put("session", "a", b"{\"v\":2}".to_vec())],
    };
    store.write(&s, newer, &behind).await.unwrap();
    // Redis loses the keys without a delete (maxmemory-policy, an expired hash)
    let _: i64 = r
        .client()
        .del(vec![r.creds_key(&s), r.keys_key(&s, "session")])
        .await
        .unwrap();
    assert_eq!(
        store.get_creds(&s).await.unwrap().as_deref(),
        Some(&b"{\"creds\":1}"[..])
    );
    assert_eq!(
        read(&store, &s, "session", "a").await.as_deref(),
        Some(&b"{\"v\":1}"[..])
    );
    let (warned, _) = store.events().counts();
    store.flush(&s).await.unwrap();
    assert!(store.events().counts().0 > warned, "the loss is reported");
    let sql_only = uncached(None, Some(p.clone()));
    assert_eq!(
        read(&sql_only, &s, "session", "a").await.as_deref(),
        Some(&b"{\"v\":1}"[..])
    );
    store.purge_session(&s).await.unwrap();
}

/// Item 4: a Redis copy older than SQL (restored from an older snapshot) is detected and never
/// served, neither to a new store nor to the store that wrote the newer value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restored_from_an_older_snapshot_is_not_served() {
    let (Some(r), Some(p)) = (redis().await, postgres().await) else {
        return;
    };
    let s = sid("restore");
    // the writer reads past any cache, so it sees what Redis answers
    let writer = uncached(Some(r.clone()), Some(p.clone()));
    writer
        .write(
            &s,
            one("pre-key", "1", b"{\"old\":1}"),
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    // snapshot the session's Redis keys (DUMP), then move on
    let keys = [r.keys_key(&s, "pre-key"), r.meta_key(&s), r.types_key(&s)];
    let mut dumps = Vec::new();
    for k in &keys {
        let d: fred::types::Value = r.client().dump(k).await.unwrap();
        dumps.push(d);
    }
    writer
        .write(
            &s,
            one("pre-key", "1", b"{\"new\":2}"),
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    writer
        .write(
            &s,
            one("pre-key", "2", b"{\"new\":3}"),
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    // "Redis restarts from the older snapshot"
    let restore = || async {
        for (k, d) in keys.iter().zip(dumps.iter()) {
            let bytes = match d {
                fred::types::Value::Bytes(b) => b.clone(),
                other => panic!("dump: {other:?}"),
            };
            let _: () = r
                .client()
                .restore(
                    k,
                    0,
                    fred::types::Value::Bytes(bytes),
                    true,
                    false,
                    None,
                    None,
                )
                .await
                .unwrap();
        }
    };
    restore().await;
    assert_eq!(
        read(&writer, &s, "pre-key", "1").await.as_deref(),
        Some(&b"{\"new\":2}"[..])
    );
    assert_eq!(
        read(&writer, &s, "pre-key", "2").await.as_deref(),
        Some(&b"{\"new\":3}"[..])
    );
    assert_eq!(
        writer.stats().redis_rebuilds,
        1,
        "the writer noticed Redis went back"
    );
    // a new process notices too
    restore().await;
    let fresh = uncached(Some(r.clone()), Some(p.clone()));
    assert_eq!(
        read(&fresh, &s, "pre-key", "1").await.as_deref(),
        Some(&b"{\"new\":2}"[..])
    );
    assert_eq!(fresh.stats().redis_rebuilds, 1);
    // and a write after a restore is not lost under the old state
    restore().await;
    writer
        .write(
            &s,
            one("pre-key", "3", b"{\"w\":1}"),
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    let again = uncached(Some(r.clone()), Some(p.clone()));
    assert_eq!(
        read(&again, &s, "pre-key", "2").await.as_deref(),
        Some(&b"{\"new\":3}"[..])
    );
    assert_eq!(
        read(&again, &s, "pre-key", "3").await.as_deref(),
        Some(&b"{\"w\":1}"[..])
    );
    writer.purge_session(&s).await.unwrap();
}

/// Item 8: a warm that read SQL before a delete committed cannot bring the record back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_after_a_delete_is_dropped() {
    let (Some(r), Some(p)) = (redis().await, postgres().await) else {
        return;
    };
    let s = sid("warm-delete");
    let store = uncached(Some(r.clone()), Some(p.clone()));
    store
        .write(
            &s,
            one("pre-key", "7", b"{\"k\":1}"),
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    // a reader took the generation and SQL's row ...
    let gen = r.meta(&s).await.unwrap().gen;
    let row = p
        .get_keys(&s, "pre-key", &ids(&["7"]))
        .await
        .unwrap()
        .remove(0);
    // ... then the pre-key is consumed ...
    store
        .write(
            &s,
            WriteBatch {
                creds: None,
                keys: vec![KeyWrite::delete("pre-key", "7")],
            },
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    // ... then the reader's warm arrives
    r.warm_keys(&s, "pre-key", &[("7", row.version, &row.value)], &gen)
        .await
        .unwrap();
    assert!(read(&store, &s, "pre-key", "7").await.is_none());
    // and for a whole session: logged-out creds stay logged out
    let creds = WriteBatch {
        creds: Some(Arc::from(&b"{\"c\":1}"[..])),
        keys: vec![],
    };
    store
        .write(&s, creds, &WriteOptions::default())
        .await
        .unwrap();
    let gen = r.meta(&s).await.unwrap().gen;
    let (version, value) = p.get_creds(&s).await.unwrap().unwrap();
    store.delete_session(&s, false).await.unwrap();
    r.warm_creds(&s, version, &value, &gen).await.unwrap();
    assert!(store.get_creds(&s).await.unwrap().is_none());
    store.purge_session(&s).await.unwrap();
}

/// Item 5: close() lets queued writes finish in every tier before it closes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_drains_queued_writes_through_every_tier() {
    let (Some(r), Some(p)) = (redis().await, postgres().await) else {
        return;
    };
    // the store closes its own connections; the checks below use others
    let r2 = RedisTier::connect(RedisOptions::new(redis_url()))
        .await
        .unwrap();
    let p2 = postgres().await.unwrap();
    let store = Arc::new(AuthStore::new(Some(r2), Some(p2), StoreOptions::default()).unwrap());
    let s = sid("close");
    let mut set = tokio::task::JoinSet::new();
    for i in 0..100u32 {
        let (store, s) = (store.clone(), s.clone());
        set.spawn(async move {
            let v = format!("{{\"v\":{i}}}");
            store
                .write(
                    &s,
                    one("session", &format!("r{i}"), v.as_bytes()),
                    &WriteOptions::default(),
                )
                .await
        });
    }
    tokio::task::yield_now().await;
    store.close().await;
    let mut acknowledged = Vec::new();
    while let Some(res) = set.join_next().await {
        if let Ok(v) = res.unwrap() {
            acknowledged.push(v);
        }
    }
    let redis_only = uncached(Some(r.clone()), None);
    let sql_only = uncached(None, Some(p.clone()));
    let all: Vec<String> = (0..100).map(|i| format!("r{i}")).collect();
    let in_redis = redis_only.get_keys(&s, "session", &all).await.unwrap();
    let in_sql = sql_only.get_keys(&s, "session", &all).await.unwrap();
    assert_eq!(in_redis, in_sql, "Redis and SQL agree after close");
    let present = in_sql.iter().filter(|v| v.is_some()).count();
    assert!(
        present >= acknowledged.len(),
        "{present} present, {} acknowledged",
        acknowledged.len()
    );
    let cleaner = uncached(Some(r), Some(p));
    cleaner.purge_session(&s).await.unwrap();
}

/// Item 7: one failing session does not stop a flush pass, and the pass ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_session_does_not_stop_a_flush_pass() {
    let (Some(own), Some(p)) = (OwnRedis::start(), postgres().await) else {
        return;
    };
    let r = RedisTier::connect(RedisOptions::new(own.url()))
        .await
        .unwrap();
    let store = uncached(Some(r.clone()), Some(p.clone()));
    let behind = WriteOptions {
        sync_to_database: false,
        ttl: None,
        force: false,
    };
    let good: Vec<SessionId> = (0..5).map(|i| sid(&format!("pass-{i}"))).collect();
    for s in &good {
        store
            .write(s, one("session", "a", b"{\"ok\":1}"), &behind)
            .await
            .unwrap();
    }
    // a dirty record PostgreSQL refuses (NUL in a TEXT id), planted as another process would
    let bad = sid("pass-bad");
    let name = "session\0x\0y".to_string();
    let env = wa_auth_core::envelope::seal(99, Some(b"{}"));
    let _: () = r
        .client()
        .hset(r.dirty_key(&bad), (name.as_str(), 99))
        .await
        .unwrap();
    let _: () = r
        .client()
        .hset(
            r.keys_key(&bad, "session"),
            ("x\0y", fred::bytes::Bytes::from(env)),
        )
        .await
        .unwrap();
    let _: i64 = r
        .client()
        .sadd(r.mm_key("dirty"), bad.to_string())
        .await
        .unwrap();
    let err = store.flush_all().await.unwrap_err();
    assert_eq!(err.code(), "ERR_DATABASE");
    let sql_only = uncached(None, Some(p.clone()));
    for s in &good {
        assert!(
            read(&sql_only, s, "session", "a").await.is_some(),
            "flushed despite the bad session"
        );
        store.purge_session(s).await.unwrap();
    }
    // the bad one stays indexed for the next pass
    let index: Vec<String> = r.client().smembers(r.mm_key("dirty")).await.unwrap();
    assert_eq!(index, vec![bad.to_string()]);
}
