//! Where a durable write's time goes, inside Rust (no napi, no JavaScript): one sequential
//! `AuthStore::write` of ~2 KB creds (a held lease, Redis + PostgreSQL, write-through) against
//! its parts on the same servers and connection settings: the store's SQL commit alone, a bare
//! single-row upsert of the same bytes, and a bare Redis HSET.
//!
//! `cargo run --release -p wa-auth-core --example write_floor -- [writes] [postgres url] [redis url]`
//! (defaults: 3000 writes, the local PostgreSQL with sslmode=disable, the local Redis). Prints the
//! median and p99 of each in microseconds. Rows and keys it makes are removed at its end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::*;
use sqlx::{Connection, Executor};
use wa_auth_core::lease::LeaseOptions;
use wa_auth_core::sql::VersionedWrite;
use wa_auth_core::{
    AuthStore, RedisOptions, RedisTier, SessionId, SqlOptions, SqlStore, StoreOptions, Value,
    WriteBatch, WriteOptions,
};

fn summary(name: &str, mut us: Vec<f64>) {
    us.sort_by(f64::total_cmp);
    let at = |q: f64| us[((us.len() - 1) as f64 * q) as usize];
    println!(
        "{name:<44} median {:7.1} µs   p99 {:7.1} µs",
        at(0.5),
        at(0.99)
    );
}

async fn timed<F, Fut>(n: usize, mut f: F) -> Vec<f64>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for i in 0..n / 10 {
        f(i).await;
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        f(i).await;
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    out
}

fn creds(i: usize) -> Value {
    let mut text = format!("{{\"n\":{i},\"pad\":\"");
    text.push_str(&"x".repeat(2000));
    text.push_str("\"}");
    Value::from(text.into_bytes().into_boxed_slice())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3000);
    let pg = args
        .next()
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test?sslmode=disable".into());
    let redis_url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let sql = SqlStore::connect(SqlOptions::new(&pg)).await.expect("sql");
        let redis = RedisTier::connect(RedisOptions::new(&redis_url))
            .await
            .expect("redis");
        let options = StoreOptions {
            leases: true,
            ..Default::default()
        };
        let store = AuthStore::new(Some(redis.clone()), Some(sql.clone()), options).expect("store");
        let sid = SessionId::new(format!("wa-profile-floor-{}", std::process::id())).unwrap();
        store
            .acquire_lease(
                &sid,
                &LeaseOptions {
                    ttl: Duration::from_secs(60),
                    holder: "floor".into(),
                    force: false,
                },
            )
            .await
            .expect("lease");
        let store = Arc::new(store);
        let opts = WriteOptions::default();
        let full = timed(n, |i| {
            let store = store.clone();
            let sid = sid.clone();
            let opts = opts.clone();
            async move {
                let batch = WriteBatch {
                    creds: Some(creds(i)),
                    keys: Vec::new(),
                };
                store.write(&sid, batch, &opts).await.expect("write");
            }
        })
        .await;

        // the SQL commit alone (unfenced: its version only rises)
        let sid2 = SessionId::new(format!("wa-profile-floor-sql-{}", std::process::id())).unwrap();
        let commit = timed(n, |i| {
            let sql = sql.clone();
            let sid2 = sid2.clone();
            async move {
                let batch = WriteBatch {
                    creds: Some(creds(i)),
                    keys: Vec::new(),
                };
                let w = VersionedWrite {
                    sid: &sid2,
                    batch: &batch,
                    version: i as u64 + 1,
                    epoch: None,
                };
                sql.commit_in_lane(0, &[w]).await.expect("commit");
            }
        })
        .await;

        // a bare upsert on a connection of the same settings
        let mut conn = sqlx::PgConnection::connect(&pg).await.expect("pg");
        conn.execute("SET plan_cache_mode = force_generic_plan")
            .await
            .unwrap();
        conn.execute(
            "CREATE TABLE IF NOT EXISTS wa_profile_bare (id TEXT PRIMARY KEY, v BYTEA, n BIGINT)",
        )
        .await
        .unwrap();
        let bytes = creds(0).to_vec();
        let conn = tokio::sync::Mutex::new(conn);
        let bare = timed(n, |i| {
            let bytes = &bytes;
            let conn = &conn;
            async move {
                sqlx::query(
                    "INSERT INTO wa_profile_bare VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v, n = EXCLUDED.n",
                )
                .bind("a")
                .bind(bytes)
                .bind(i as i64)
                .execute(&mut *conn.lock().await)
                .await
                .expect("upsert");
            }
        })
        .await;

        let client = Client::new(Config::from_url(&redis_url).unwrap(), None, None, None);
        client.init().await.expect("redis client");
        let key = format!("wa-profile-floor-bare-{}", std::process::id());
        let hset = timed(n, |_| {
            let client = &client;
            let key = &key;
            let bytes = &bytes;
            async move {
                let _: i64 = client
                    .hset(key.as_str(), ("creds", bytes.as_slice()))
                    .await
                    .expect("hset");
            }
        })
        .await;

        summary("AuthStore::write (creds, durable, leased)", full);
        summary("SqlStore::commit_in_lane alone", commit);
        summary("bare single-row upsert (sqlx)", bare);
        summary("bare HSET (fred)", hset);

        let _: i64 = client.del(key.as_str()).await.unwrap();
        conn.lock()
            .await
            .execute("DROP TABLE wa_profile_bare")
            .await
            .unwrap();
        store.purge_session(&sid).await.ok();
        store.purge_session(&sid2).await.ok();
        store.close().await;
    });
}
