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
use wa_auth_core::{
    AuthStore, KeyWrite, SessionId, SqlStore, StoreOptions, WriteBatch, WriteOptions,
};

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

    /// The server's ids of every connection to the database (the admin connection doing the
    /// asking left out), on `admin`.
    async fn connection_ids(&self) -> Vec<i64> {
        let sql = if self.postgres {
            format!(
                "SELECT CAST(pid AS BIGINT) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
                self.name
            )
        } else {
            format!(
                "SELECT CAST(id AS SIGNED) FROM information_schema.processlist WHERE db = '{}'",
                self.name
            )
        };
        let rows: Vec<(i64,)> = if self.postgres {
            let mut c = sqlx::PgConnection::connect(&self.admin).await.unwrap();
            let rows = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_all(&mut c)
                .await;
            c.close().await.unwrap();
            rows
        } else {
            let mut c = sqlx::MySqlConnection::connect(&self.admin).await.unwrap();
            let rows = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_all(&mut c)
                .await;
            c.close().await.unwrap();
            rows
        }
        .expect("list the database's connections");
        rows.into_iter().map(|(id,)| id).collect()
    }

    /// Ends every server connection to the database (as a server restart or an idle reaper
    /// would); returns how many there were.
    async fn end_connections(&self) -> usize {
        let ids = self.connection_ids().await;
        for id in &ids {
            let sql = if self.postgres {
                format!("SELECT pg_terminate_backend({id})")
            } else {
                format!("KILL CONNECTION {id}")
            };
            // a connection that ended meanwhile is no failure
            let _ = exec(&self.admin, self.postgres, sql).await;
        }
        ids.len()
    }

    /// Drops the database whatever the test found, then fails as the test did.
    async fn finish(self, outcome: std::thread::Result<()>) {
        self.drop_db().await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
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

/// Runs a test's body, catching its panic so [`OwnDb::finish`] can drop the database first.
async fn catching(body: impl std::future::Future<Output = ()>) -> std::thread::Result<()> {
    futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(body)).await
}

fn server_name(postgres: bool) -> &'static str {
    if postgres {
        "PostgreSQL"
    } else {
        "MariaDB/MySQL"
    }
}

async fn own_db(postgres: bool, tag: &str) -> Option<OwnDb> {
    let what = server_name(postgres);
    let urls = if postgres {
        postgres_urls()
    } else {
        mysql_urls()
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
    let what = server_name(postgres);
    let Some(db) = own_db(postgres, "lanes").await else {
        return;
    };
    let outcome = catching(async {
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
    })
    .await;
    db.finish(outcome).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_lane_connection_is_replaced_postgres() {
    a_dropped_lane_connection_is_replaced(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_lane_connection_is_replaced_mysql() {
    a_dropped_lane_connection_is_replaced(false).await;
}

/// `maxConnections` bounds every connection the store opens: the commit lanes' own (2 of 4
/// here) come out of it, the pool gets the rest. Commits of 16 sessions (both lanes) run
/// alongside reads that all go to SQL (no cache, no Redis: the pool fills up).
async fn connections_stay_within_max_connections(postgres: bool) {
    let what = server_name(postgres);
    let Some(db) = own_db(postgres, "cap").await else {
        return;
    };
    let outcome = catching(async {
        let mut opts = options(&db.url);
        opts.max_connections = 4;
        let store = uncached(None, Some(SqlStore::connect(opts).await.unwrap()));
        let sessions: Vec<SessionId> = (0..16)
            .map(|i| SessionId::new(unique(&format!("cap-{i}"))).unwrap())
            .collect();
        let wopts = WriteOptions::default();
        let ids = ["a".to_string()];
        for round in 0..5u8 {
            let writes = sessions
                .iter()
                .map(|s| store.write(s, batch(round), &wopts));
            let reads = sessions
                .iter()
                .flat_map(|s| (0..4).map(move |_| s))
                .map(|s| store.get_keys(s, "session", &ids));
            let (w, r) = futures::future::join(
                futures::future::join_all(writes),
                futures::future::join_all(reads),
            )
            .await;
            w.into_iter().for_each(|x| {
                x.unwrap();
            });
            r.into_iter().for_each(|x| {
                x.unwrap();
            });
        }
        let open = db.connection_ids().await.len();
        store.close().await;
        assert!(
            open <= 4,
            "{what}: {open} connections open with maxConnections 4"
        );
        // lanes that reserved their share but committed through the pool would leave 2 at most
        assert!(
            open > 2,
            "{what}: only {open} connections: the commit lanes opened none of their own"
        );
    })
    .await;
    db.finish(outcome).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_stay_within_max_connections_postgres() {
    connections_stay_within_max_connections(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_stay_within_max_connections_mysql() {
    connections_stay_within_max_connections(false).await;
}
