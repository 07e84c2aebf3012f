//! The commit lanes' own server connections: one the server dropped is replaced without failing
//! the write.
//!
//! Each test works in a database of its own (made and dropped here), so it can end server
//! connections without touching anything else on the server.

mod common;

use std::time::Duration;

use common::*;
use sqlx::{Connection, Executor};
use wa_auth_core::lease::{LeaseOptions, LeaseOutcome};
use wa_auth_core::{AuthStore, KeyWrite, SessionId, SqlStore, StoreOptions, WriteBatch};

/// A database of the test's own on the server `admin_url` points at, dropped by `drop_db`.
struct OwnDb {
    admin: String,
    name: String,
    url: String,
    postgres: bool,
}

/// Runs `sql` on a new connection to `url`.
async fn exec(url: &str, postgres: bool, sql: String) -> Result<(), sqlx::Error> {
    if postgres {
        let mut c = sqlx::PgConnection::connect(url).await?;
        c.execute(sqlx::AssertSqlSafe(sql)).await?;
        c.close().await
    } else {
        let mut c = sqlx::MySqlConnection::connect(url).await?;
        c.execute(sqlx::AssertSqlSafe(sql)).await?;
        c.close().await
    }
}

impl OwnDb {
    async fn create(admin_url: &str, postgres: bool, tag: &str) -> Option<OwnDb> {
        let name = format!("wa_test_rs_{tag}_{}", std::process::id());
        exec(
            admin_url,
            postgres,
            format!("DROP DATABASE IF EXISTS {name}"),
        )
        .await
        .ok()?;
        exec(admin_url, postgres, format!("CREATE DATABASE {name}"))
            .await
            .expect("create a database of the test's own");
        let base = admin_url.rsplit_once('/').expect("a url with a database").0;
        Some(OwnDb {
            admin: admin_url.to_string(),
            url: format!("{base}/{name}"),
            name,
            postgres,
        })
    }

    /// Ends every server connection to the database (as a server restart or an idle reaper
    /// would); returns how many there were.
    async fn end_connections(&self) -> usize {
        if self.postgres {
            let mut conn = sqlx::PgConnection::connect(&self.admin).await.unwrap();
            let ended: Vec<(bool,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
                self.name
            )))
            .fetch_all(&mut conn)
            .await
            .expect("terminate the database's connections");
            conn.close().await.unwrap();
            return ended.len();
        }
        let mut conn = sqlx::MySqlConnection::connect(&self.admin).await.unwrap();
        let ids: Vec<(i64,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT CAST(id AS SIGNED) FROM information_schema.processlist WHERE db = '{}'",
            self.name
        )))
        .fetch_all(&mut conn)
        .await
        .expect("list the database's connections");
        for (id,) in &ids {
            let _ = conn
                .execute(sqlx::AssertSqlSafe(format!("KILL CONNECTION {id}")))
                .await;
        }
        conn.close().await.unwrap();
        ids.len()
    }

    async fn drop_db(self) {
        self.end_connections().await;
        exec(
            &self.admin,
            self.postgres,
            format!("DROP DATABASE IF EXISTS {}", self.name),
        )
        .await
        .expect("drop the test's database");
    }
}

async fn own_db(postgres: bool, tag: &str) -> Option<OwnDb> {
    let (urls, what) = if postgres {
        (postgres_urls(), "PostgreSQL")
    } else {
        (mysql_urls(), "MariaDB/MySQL")
    };
    for u in &urls {
        if let Some(db) = OwnDb::create(u, postgres, tag).await {
            return Some(db);
        }
    }
    if in_ci() {
        panic!("{what} is required under CI but unavailable at {urls:?}");
    }
    eprintln!("SKIPPED: {what} unavailable; start it or set its URL to run this test");
    None
}

fn leased() -> StoreOptions {
    StoreOptions {
        leases: true,
        ..Default::default()
    }
}

fn batch(v: u8) -> WriteBatch {
    WriteBatch {
        creds: None,
        keys: vec![KeyWrite::put("session", "a", vec![v; 64])],
    }
}

async fn leased_session(store: &AuthStore, name: &str) -> SessionId {
    let sid = SessionId::new(unique(name)).unwrap();
    let opts = LeaseOptions {
        ttl: Duration::from_secs(60),
        holder: "test".into(),
        force: false,
    };
    match store.acquire_lease(&sid, &opts).await.unwrap() {
        LeaseOutcome::Acquired(_) => sid,
        other => panic!("lease not acquired: {other:?}"),
    }
}

/// The server ends every connection between two commits (a restart, an idle reaper, a
/// failover): the next commit runs on a new connection and succeeds; nothing is lost.
async fn a_dropped_lane_connection_is_replaced(postgres: bool) {
    let what = if postgres {
        "PostgreSQL"
    } else {
        "MariaDB/MySQL"
    };
    let Some(db) = own_db(postgres, "lanes").await else {
        return;
    };
    // the database goes whatever the test finds
    let run = std::panic::AssertUnwindSafe(async {
        let sql = SqlStore::connect(options(&db.url)).await.unwrap();
        let store = AuthStore::new(None, Some(sql.clone()), leased()).unwrap();
        let sid = leased_session(&store, "lanes").await;
        for round in 1..=3u8 {
            store
                .write(&sid, batch(round), &Default::default())
                .await
                .unwrap();
            assert!(
                db.end_connections().await > 0,
                "{what}: the store holds no connection"
            );
            // the lane's connection is dead now; the next write must not fail for it
            store
                .write(&sid, batch(round + 100), &Default::default())
                .await
                .unwrap_or_else(|e| {
                    panic!("{what}: a write after the server ended the connections failed: {e}")
                });
        }
        let fresh = AuthStore::new(
            None,
            Some(SqlStore::connect(options(&db.url)).await.unwrap()),
            StoreOptions::default(),
        )
        .unwrap();
        let got = fresh
            .get_keys(&sid, "session", &["a".to_string()])
            .await
            .unwrap();
        assert_eq!(got[0].as_deref(), Some(&[103u8; 64][..]), "{what}");
        fresh.close().await;
        store.close().await;
    });
    let outcome = futures::FutureExt::catch_unwind(run).await;
    db.drop_db().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_lane_connection_is_replaced_postgres() {
    a_dropped_lane_connection_is_replaced(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_lane_connection_is_replaced_mysql() {
    a_dropped_lane_connection_is_replaced(false).await;
}
