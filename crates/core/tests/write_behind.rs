//! Write-behind: Redis now, SQL in batches, everything flushed on close, and what a crashed
//! process left is flushed by any other.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use wa_auth_core::{
    AuthStore, KeyWrite, RedisOptions, RedisTier, SessionId, SqlStore, StoreOptions, WriteBatch,
    WriteOptions,
};

async fn sqlite_file() -> (Arc<SqlStore>, String) {
    let dir = std::env::temp_dir().join(unique("wa-behind"));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/auth.db", dir.display());
    (SqlStore::connect(options(&url)).await.unwrap(), url)
}

fn behind(every: Duration) -> StoreOptions {
    StoreOptions {
        cache_max_bytes: 0,
        write_behind: Some(every),
        ..Default::default()
    }
}

/// A write-behind store on `own` and a SQLite file of its own, flushing `every`.
async fn behind_store(
    own: &OwnRedis,
    every: Duration,
) -> (Arc<RedisTier>, Arc<SqlStore>, String, AuthStore) {
    let redis = RedisTier::connect(RedisOptions::new(own.url()))
        .await
        .unwrap();
    let (sql, url) = sqlite_file().await;
    let store = AuthStore::new(Some(redis.clone()), Some(sql.clone()), behind(every)).unwrap();
    (redis, sql, url, store)
}

fn batch(tag: &str) -> WriteBatch {
    WriteBatch {
        creds: Some(Arc::from(format!("creds-{tag}").as_bytes())),
        keys: vec![
            KeyWrite::put("session", "a", tag.as_bytes().to_vec()),
            KeyWrite::put("pre-key", "1", b"pk".to_vec()),
        ],
    }
}

async fn sql_has(sql: &Arc<SqlStore>, sid: &SessionId, tag: &str) -> bool {
    let reader = uncached(None, Some(sql.clone()));
    let creds = reader.get_creds(sid).await.unwrap();
    let keys = reader
        .get_keys(sid, "session", &["a".to_string()])
        .await
        .unwrap();
    creds.as_deref() == Some(format!("creds-{tag}").as_bytes())
        && keys[0].as_deref() == Some(tag.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_sql_in_the_background_and_on_close() {
    let Some(own) = OwnRedis::start() else { return };
    let (_, sql, url, store) = behind_store(&own, Duration::from_millis(100)).await;
    let s = SessionId::new("wb-1").unwrap();
    store
        .write(&s, batch("v1"), &WriteOptions::default())
        .await
        .unwrap();
    // readable at once (from Redis), in SQL shortly after
    let got = store
        .get_keys(&s, "session", &["a".to_string()])
        .await
        .unwrap();
    assert_eq!(got[0].as_deref(), Some(&b"v1"[..]));
    let mut landed = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if sql_has(&sql, &s, "v1").await {
            landed = true;
            break;
        }
    }
    assert!(landed, "the background flush never reached SQL");
    // a delete written behind reaches SQL as a delete
    store
        .write(&s, batch("v2"), &WriteOptions::default())
        .await
        .unwrap();
    store
        .write(
            &s,
            WriteBatch {
                creds: None,
                keys: vec![KeyWrite::delete("pre-key", "1")],
            },
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    store.close().await; // closes `sql` too: read back through a new pool
    let sql = SqlStore::connect(options(&url)).await.unwrap();
    assert!(
        sql_has(&sql, &s, "v2").await,
        "close() flushes what was written behind"
    );
    let reader = AuthStore::new(None, Some(sql.clone()), StoreOptions::default()).unwrap();
    assert!(reader
        .get_keys(&s, "pre-key", &["1".to_string()])
        .await
        .unwrap()[0]
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_flushes_what_a_crashed_one_left() {
    let Some(own) = OwnRedis::start() else { return };
    let (sql, url) = sqlite_file().await;
    let s = SessionId::new("wb-crash").unwrap();
    {
        // "crashes": never flushes (an hour's interval) and never closes
        let redis = RedisTier::connect(RedisOptions::new(own.url()))
            .await
            .unwrap();
        let crashed = AuthStore::new(
            Some(redis),
            Some(sql.clone()),
            behind(Duration::from_secs(3600)),
        )
        .unwrap();
        crashed
            .write(&s, batch("lost?"), &WriteOptions::default())
            .await
            .unwrap();
        std::mem::forget(crashed);
    }
    assert!(!sql_has(&sql, &s, "lost?").await);
    let redis = RedisTier::connect(RedisOptions::new(own.url()))
        .await
        .unwrap();
    let sql2 = SqlStore::connect(options(&url)).await.unwrap();
    let other = AuthStore::new(
        Some(redis.clone()),
        Some(sql2),
        behind(Duration::from_millis(50)),
    )
    .unwrap();
    assert_eq!(other.flush_all().await.unwrap(), 3);
    assert!(sql_has(&sql, &s, "lost?").await);
    // nothing left to flush, the session is clean (and so evictable)
    assert_eq!(other.flush_all().await.unwrap(), 0);
    assert!(redis.dirty_records(&s).await.unwrap().is_empty());
    other.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_behind_needs_both_tiers() {
    let sql = sqlite_memory().await;
    let err = AuthStore::new(None, Some(sql), behind(Duration::from_millis(10))).unwrap_err();
    assert_eq!(err.code(), "ERR_CONFIG");
}

/// A write-behind write marks its records dirty and adds the session to the dirty index in one
/// script: a process killed right after its write leaves no dirty records that `flushAll` (which
/// walks the index) cannot find. Redis' MONITOR tags commands a script ran with `lua`; two
/// separate round trips (the old way) show the SADD from the client's address instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dirty_index_is_written_in_the_same_script_as_the_marks() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let Some(own) = OwnRedis::start() else { return };
    let (redis, sql, _, store) = behind_store(&own, Duration::from_secs(3600)).await;
    let sid = SessionId::new(unique("behind-index")).unwrap();
    // the session's first write loads it (reads that MONITOR need not see)
    store
        .write(&sid, batch("zero"), &WriteOptions::default())
        .await
        .unwrap();
    let mut monitor = tokio::net::TcpStream::connect(("127.0.0.1", own.port))
        .await
        .unwrap();
    monitor.write_all(b"MONITOR\r\n").await.unwrap();
    let mut lines = BufReader::new(monitor).lines();
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("+OK"));
    store
        .write(&sid, batch("one"), &WriteOptions::default())
        .await
        .unwrap();
    let index = redis.mm_key("dirty");
    let sadd = loop {
        let line = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
            .await
            .expect("MONITOR showed no SADD of the dirty index")
            .unwrap()
            .expect("MONITOR ended");
        if line.contains("\"SADD\"") && line.contains(&index) {
            break line;
        }
    };
    assert!(
        sadd.contains("[0 lua]"),
        "the dirty index was written outside the write script: {sadd}"
    );
    store.flush_all().await.unwrap();
    assert!(sql_has(&sql, &sid, "one").await);
    store.close().await;
}
