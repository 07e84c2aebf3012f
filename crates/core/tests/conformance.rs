//! One behaviour suite run against every tier combination, over real connections.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use wa_auth_core::{
    AuthStore, KeyWrite, RedisTier, SessionId, SqlStore, StoreOptions, WriteBatch, WriteOptions,
};

fn sid(name: &str) -> SessionId {
    SessionId::new(unique(name)).unwrap()
}

fn put(kind: &str, id: &str, v: &[u8]) -> KeyWrite {
    KeyWrite::put(kind, id, v.to_vec())
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

async fn write(store: &AuthStore, s: &SessionId, keys: Vec<KeyWrite>) {
    store
        .write(
            s,
            WriteBatch { creds: None, keys },
            &WriteOptions::default(),
        )
        .await
        .unwrap();
}

fn bytes(v: &Option<wa_auth_core::Value>) -> Option<&[u8]> {
    v.as_deref()
}

/// The behaviour every configuration must show.
async fn suite(label: &str, make: impl Fn() -> AuthStore) {
    eprintln!("conformance: {label}");
    let store = make();

    // creds round trip, unknown session
    let s = sid("creds");
    assert!(store.get_creds(&s).await.unwrap().is_none());
    let batch = WriteBatch {
        creds: Some(Arc::from(&b"{\"me\":1}"[..])),
        keys: vec![],
    };
    store
        .write(&s, batch, &WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(
        store.get_creds(&s).await.unwrap().as_deref(),
        Some(&b"{\"me\":1}"[..])
    );

    // keys: missing ids left out, aligned answers, binary values kept exactly
    let s = sid("keys");
    let blob: Vec<u8> = (0..=255u8).collect();
    write(
        &store,
        &s,
        vec![put("pre-key", "1", b"one"), put("pre-key", "2", &blob)],
    )
    .await;
    let got = store
        .get_keys(&s, "pre-key", &ids(&["2", "3", "1"]))
        .await
        .unwrap();
    assert_eq!(bytes(&got[0]), Some(&blob[..]));
    assert!(got[1].is_none());
    assert_eq!(bytes(&got[2]), Some(&b"one"[..]));
    assert!(store.get_keys(&s, "pre-key", &[]).await.unwrap().is_empty());

    // a mixed set is applied as a whole; null deletes
    write(
        &store,
        &s,
        vec![
            put("session", "5511.0", b"sess"),
            KeyWrite::delete("pre-key", "1"),
            put("app-state-sync-key", "AAb/+=", b"k"),
        ],
    )
    .await;
    let fresh = make();
    assert!(fresh.get_keys(&s, "pre-key", &ids(&["1"])).await.unwrap()[0].is_none());
    assert_eq!(
        bytes(
            &fresh
                .get_keys(&s, "session", &ids(&["5511.0"]))
                .await
                .unwrap()[0]
        ),
        Some(&b"sess"[..])
    );
    assert_eq!(
        bytes(
            &fresh
                .get_keys(&s, "app-state-sync-key", &ids(&["AAb/+="]))
                .await
                .unwrap()[0]
        ),
        Some(&b"k"[..])
    );
    // an empty batch does nothing and does not fail
    write(&store, &s, vec![]).await;

    // JSON values are stored compact and read back as the same text; bytes that begin like a
    // stored-form header come back verbatim
    let pk = br#"{"public":{"type":"Buffer","data":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="},"private":{"type":"Buffer","data":"AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="}}"#;
    let odd: &[u8] = &[1, 2, 3];
    write(
        &store,
        &s,
        vec![put("pk-json", "7", pk), put("pk-json", "8", odd)],
    )
    .await;
    let got = make()
        .get_keys(&s, "pk-json", &ids(&["7", "8"]))
        .await
        .unwrap();
    assert_eq!(bytes(&got[0]), Some(&pk[..]));
    assert_eq!(bytes(&got[1]), Some(odd));
    let stored = make().summary(&s).await.unwrap();
    let pk_row = stored.iter().find(|t| t.kind == "pk-json").unwrap();
    assert!(pk_row.bytes < (pk.len() as u64) / 2 + 8, "{pk_row:?}");
    write(
        &store,
        &s,
        vec![
            KeyWrite::delete("pk-json", "7"),
            KeyWrite::delete("pk-json", "8"),
        ],
    )
    .await;

    // summaries and id listings
    let sum = make().summary(&s).await.unwrap();
    let kinds: Vec<&str> = sum.iter().map(|t| t.kind.as_str()).collect();
    assert_eq!(kinds, vec!["app-state-sync-key", "pre-key", "session"]);
    assert_eq!((sum[1].count, sum[1].bytes), (1, 256));
    assert_eq!(make().list_ids(&s, "pre-key").await.unwrap(), ids(&["2"]));

    // pairing-size batch
    let many: Vec<KeyWrite> = (1..=812)
        .map(|i| put("pre-key", &i.to_string(), format!("pk{i}").as_bytes()))
        .collect();
    write(&store, &s, many).await;
    let all: Vec<String> = (1..=812).map(|i| i.to_string()).collect();
    let got = make().get_keys(&s, "pre-key", &all).await.unwrap();
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, v)| bytes(v) == Some(format!("pk{}", i + 1).as_bytes())));

    // sessions are isolated, clearing one leaves the others
    let base = unique("iso");
    let names = [
        base.clone(),
        format!("{base}0"),
        format!("{base}:x"),
        format!("{base}*"),
        format!("{{{base}}}"),
    ];
    for n in &names {
        let s = SessionId::new(n.clone()).unwrap();
        let batch = WriteBatch {
            creds: Some(Arc::from(n.as_bytes())),
            keys: vec![put("session", "1", n.as_bytes())],
        };
        store
            .write(&s, batch, &WriteOptions::default())
            .await
            .unwrap();
    }
    for n in &names {
        let s = SessionId::new(n.clone()).unwrap();
        let got = make().get_keys(&s, "session", &ids(&["1"])).await.unwrap();
        assert_eq!(bytes(&got[0]), Some(n.as_bytes()), "{n}");
    }
    let first = SessionId::new(names[0].clone()).unwrap();
    store.delete_session(&first, false).await.unwrap();
    assert!(store.get_creds(&first).await.unwrap().is_none());
    assert!(make()
        .get_keys(&first, "session", &ids(&["1"]))
        .await
        .unwrap()[0]
        .is_none());
    for n in &names[1..] {
        let s = SessionId::new(n.clone()).unwrap();
        assert_eq!(
            make().get_creds(&s).await.unwrap().as_deref(),
            Some(n.as_bytes()),
            "{n}"
        );
    }
    // keep_creds clears keys only
    let second = SessionId::new(names[1].clone()).unwrap();
    store.delete_session(&second, true).await.unwrap();
    assert!(make()
        .get_keys(&second, "session", &ids(&["1"]))
        .await
        .unwrap()[0]
        .is_none());
    assert!(make().get_creds(&second).await.unwrap().is_some());

    // invalid input is refused before any I/O
    let err = store.get_keys(&s, "", &ids(&["1"])).await.unwrap_err();
    assert_eq!(err.code(), "ERR_INVALID_ARGUMENT");
    assert_eq!(
        SessionId::new("").unwrap_err().code(),
        "ERR_INVALID_SESSION_ID"
    );

    // after close, every call is refused
    store.close().await;
    assert_eq!(
        store.get_creds(&s).await.unwrap_err().code(),
        "ERR_STORE_CLOSED"
    );
}

fn combo(redis: Option<Arc<RedisTier>>, sql: Option<Arc<SqlStore>>) -> impl Fn() -> AuthStore {
    move || AuthStore::new(redis.clone(), sql.clone(), StoreOptions::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_only() {
    suite("sqlite", combo(None, Some(sqlite_memory().await))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_survives_reopen() {
    let dir = std::env::temp_dir().join(unique("wa-sqlite"));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/auth.db", dir.display());
    let s = sid("file");
    {
        let sql = SqlStore::connect(options(&url)).await.unwrap();
        let store = AuthStore::new(None, Some(sql), StoreOptions::default()).unwrap();
        write(&store, &s, vec![put("session", "a", b"kept")]).await;
        store.close().await;
    }
    let sql = SqlStore::connect(options(&url)).await.unwrap();
    assert_eq!(
        sql.schema_version().await.unwrap(),
        wa_auth_core::sql::SCHEMA_VERSION
    );
    let store = AuthStore::new(None, Some(sql), StoreOptions::default()).unwrap();
    let got = store.get_keys(&s, "session", &ids(&["a"])).await.unwrap();
    assert_eq!(bytes(&got[0]), Some(&b"kept"[..]));
    store.close().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_only() {
    let Some(r) = redis().await else { return };
    suite("redis", combo(Some(r), None)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_postgres() {
    let (Some(r), Some(p)) = (redis().await, postgres().await) else {
        return;
    };
    suite("redis+postgres", combo(Some(r), Some(p))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_mysql() {
    let (Some(r), Some(m)) = (redis().await, mysql().await) else {
        return;
    };
    suite("redis+mysql", combo(Some(r), Some(m))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_only() {
    let Some(p) = postgres().await else { return };
    suite("postgres", combo(None, Some(p))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_only() {
    let Some(m) = mysql().await else { return };
    suite("mysql", combo(None, Some(m))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sqlite() {
    let Some(r) = redis().await else { return };
    suite("redis+sqlite", combo(Some(r), Some(sqlite_memory().await))).await;
}

/// A value only SQL holds is read through and warms Redis; a later write is not overwritten by
/// a warm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_through_warms_redis() {
    let (Some(r), Some(p)) = (redis().await, postgres().await) else {
        return;
    };
    let s = sid("warm");
    let sql_only = AuthStore::new(None, Some(p.clone()), StoreOptions::default()).unwrap();
    write(&sql_only, &s, vec![put("session", "1", b"from-sql")]).await;
    let redis_only = AuthStore::new(Some(r.clone()), None, StoreOptions::default()).unwrap();
    assert!(redis_only
        .get_keys(&s, "session", &ids(&["1"]))
        .await
        .unwrap()[0]
        .is_none());

    let both = AuthStore::new(Some(r.clone()), Some(p.clone()), StoreOptions::default()).unwrap();
    let got = both.get_keys(&s, "session", &ids(&["1"])).await.unwrap();
    assert_eq!(bytes(&got[0]), Some(&b"from-sql"[..]));
    let got = redis_only
        .get_keys(&s, "session", &ids(&["1"]))
        .await
        .unwrap();
    assert_eq!(bytes(&got[0]), Some(&b"from-sql"[..]), "redis was warmed");
    let st = both.stats();
    assert_eq!((st.redis_misses, st.sql_hits), (1, 1));
    // the same read again is a cache hit
    both.get_keys(&s, "session", &ids(&["1"])).await.unwrap();
    assert_eq!(both.stats().cache.unwrap().hits, 1);

    // a warm never overwrites a newer value
    write(&redis_only, &s, vec![put("session", "2", b"new")]).await;
    r.warm_keys(&s, "session", &[("2", 0, &Arc::from(&b"old"[..]))], "")
        .await
        .unwrap();
    let got = redis_only
        .get_keys(&s, "session", &ids(&["2"]))
        .await
        .unwrap();
    assert_eq!(bytes(&got[0]), Some(&b"new"[..]));
}

/// A backend failure is an error, never "missing"; no write half-lands unnoticed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_redis_is_an_error_not_a_miss() {
    let Some(mut own) = OwnRedis::start() else {
        return;
    };
    let mut o = wa_auth_core::RedisOptions::new(own.url());
    o.timeout = Duration::from_millis(500);
    let r = RedisTier::connect(o).await.unwrap();
    let sql = sqlite_memory().await;
    let store = uncached(Some(r), Some(sql));
    let s = sid("dead");
    write(&store, &s, vec![put("session", "1", b"v")]).await;
    own.kill();
    let err = store
        .get_keys(&s, "session", &ids(&["1"]))
        .await
        .unwrap_err();
    assert!(
        ["ERR_REDIS", "ERR_TIMEOUT"].contains(&err.code()),
        "{}: {err}",
        err.code()
    );
    let err = store
        .write(
            &s,
            WriteBatch {
                creds: None,
                keys: vec![put("session", "1", b"w")],
            },
            &WriteOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(["ERR_REDIS", "ERR_TIMEOUT"].contains(&err.code()), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_applies_to_touched_redis_keys_and_is_refused_without_sql() {
    let Some(r) = redis().await else { return };
    let s = sid("ttl");
    let store = AuthStore::new(
        Some(r.clone()),
        Some(sqlite_memory().await),
        StoreOptions::default(),
    )
    .unwrap();
    let opts = WriteOptions {
        sync_to_database: true,
        ttl: Some(Duration::from_secs(100)),
        force: false,
    };
    store
        .write(
            &s,
            WriteBatch {
                creds: Some(Arc::from(&b"c"[..])),
                keys: vec![put("session", "1", b"v")],
            },
            &opts,
        )
        .await
        .unwrap();
    use fred::prelude::KeysInterface;
    let ttl: i64 = r.client().pttl(r.keys_key(&s, "session")).await.unwrap();
    assert!(ttl > 90_000 && ttl <= 100_000, "{ttl}");
    let ttl: i64 = r.client().pttl(r.creds_key(&s)).await.unwrap();
    assert!(ttl > 90_000, "{ttl}");
    let redis_only_write = WriteOptions {
        sync_to_database: false,
        ttl: Some(Duration::from_secs(1)),
        force: false,
    };
    let err = store
        .write(
            &s,
            WriteBatch {
                creds: None,
                keys: vec![put("session", "1", b"v")],
            },
            &redis_only_write,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "ERR_INVALID_ARGUMENT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_errors() {
    let err = RedisTier::connect(wa_auth_core::RedisOptions::new(
        "redis://user:hunter2secret@127.0.0.1:1",
    ))
    .await
    .unwrap_err();
    assert!(!err.to_string().contains("hunter2secret"), "{err}");
    let mut o = options("postgres://user:hunter2secret@127.0.0.1:1/db");
    o.timeout = Duration::from_millis(500);
    let err = SqlStore::connect(o).await.unwrap_err();
    assert!(!err.to_string().contains("hunter2secret"), "{err}");
    assert!(
        ["ERR_DATABASE", "ERR_TIMEOUT"].contains(&err.code()),
        "{}",
        err.code()
    );
}

/// Concurrent writes of many sessions share group transactions; each still lands whole, and one
/// bad write in a group does not fail the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_group_commits() {
    let Some(p) = postgres().await else { return };
    let store = Arc::new(AuthStore::new(None, Some(p.clone()), StoreOptions::default()).unwrap());
    let base = unique("group");
    let (tx0, _) = p.group_stats();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..64 {
        let store = store.clone();
        let s = SessionId::new(format!("{base}-{i}")).unwrap();
        set.spawn(async move {
            for r in 0..5u8 {
                let keys = vec![
                    put("session", "a", &[r]),
                    KeyWrite::delete("pre-key", "1"),
                    put("pre-key", "2", &[i as u8]),
                ];
                store
                    .write(
                        &s,
                        WriteBatch { creds: None, keys },
                        &WriteOptions::default(),
                    )
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    let (tx1, writes) = p.group_stats();
    assert!(writes >= 320);
    assert!(
        tx1 - tx0 < 320,
        "no write shared a transaction ({} for 320 writes)",
        tx1 - tx0
    );
    let fresh = uncached(None, Some(p.clone()));
    for i in 0..64 {
        let s = SessionId::new(format!("{base}-{i}")).unwrap();
        let got = fresh.get_keys(&s, "session", &ids(&["a"])).await.unwrap();
        assert_eq!(
            bytes(&got[0]),
            Some(&[4u8][..]),
            "session {i} ends on its last write"
        );
    }
    // a write PostgreSQL refuses (NUL is not allowed in TEXT) fails alone
    let bad = SessionId::new(format!("{base}-bad")).unwrap();
    let good = SessionId::new(format!("{base}-good")).unwrap();
    // (straight to the SQL tier: the store itself refuses NUL before any I/O)
    let nul = WriteBatch {
        creds: None,
        keys: vec![put("session", "x\0y", b"v")],
    };
    let fine = WriteBatch {
        creds: Some(Arc::from(&b"c"[..])),
        keys: vec![],
    };
    let w = |sid, batch| wa_auth_core::sql::VersionedWrite {
        sid,
        batch,
        version: 1,
        epoch: None,
    };
    // together they fail as a statement-level error (the lane then retries each alone) ...
    let both = p
        .commit(&[w(&bad, &nul), w(&good, &fine)])
        .await
        .unwrap_err();
    assert_eq!(both.error.code(), "ERR_DATABASE");
    assert!(both.statement_level);
    // ... and alone only the bad one fails
    assert!(p.commit(&[w(&bad, &nul)]).await.is_err());
    p.commit(&[w(&good, &fine)]).await.unwrap();
    assert!(fresh.get_creds(&good).await.unwrap().is_some());
}
