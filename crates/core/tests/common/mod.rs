//! Real services for the integration tests. URLs come from the environment with loopback
//! defaults. A missing service fails the run under `CI=true` and skips the test elsewhere.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use wa_auth_core::{AuthStore, RedisOptions, RedisTier, SqlOptions, SqlStore, StoreOptions};

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn unavailable<T>(what: &str, err: impl std::fmt::Display) -> Option<T> {
    if in_ci() {
        panic!("{what} is required under CI but unavailable: {err}");
    }
    eprintln!("SKIPPED: {what} unavailable ({err}); start it or set its URL to run this test");
    None
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn postgres_urls() -> Vec<String> {
    match std::env::var("POSTGRES_URL") {
        Ok(u) => vec![u],
        Err(_) => vec![
            "postgres://postgres@127.0.0.1:5432/test".into(),
            "postgres://root@127.0.0.1:5432/test".into(),
        ],
    }
}

pub fn mysql_urls() -> Vec<String> {
    match std::env::var("MYSQL_URL") {
        Ok(u) => vec![u],
        Err(_) => vec![
            "mysql://root@127.0.0.1:3306/test".into(),
            "mysql://wa:wa@127.0.0.1:3306/test".into(),
        ],
    }
}

pub fn options(url: &str) -> SqlOptions {
    let mut o = SqlOptions::new(url);
    o.timeout = Duration::from_secs(10);
    o
}

pub async fn redis() -> Option<Arc<RedisTier>> {
    match RedisTier::connect(RedisOptions::new(redis_url())).await {
        Ok(r) => Some(r),
        Err(e) => unavailable("Redis", e),
    }
}

async fn first_sql(what: &str, urls: Vec<String>) -> Option<Arc<SqlStore>> {
    let mut last = None;
    for u in urls {
        match SqlStore::connect(options(&u)).await {
            Ok(s) => return Some(s),
            Err(e) => last = Some(e),
        }
    }
    let err = last.map(|e| e.to_string()).unwrap_or_default();
    unavailable(what, err)
}

pub async fn postgres() -> Option<Arc<SqlStore>> {
    first_sql("PostgreSQL", postgres_urls()).await
}

pub async fn mysql() -> Option<Arc<SqlStore>> {
    first_sql("MariaDB/MySQL", mysql_urls()).await
}

pub async fn sqlite_memory() -> Arc<SqlStore> {
    SqlStore::connect(options("sqlite::memory:"))
        .await
        .expect("sqlite in memory")
}

/// A session id no other test run uses.
pub fn unique(name: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    // the prefix lets the test teardown (__test__/support/cleanup.mjs) remove what is left
    format!(
        "wa-test-rs-{name}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A redis-server of the test's own on a free loopback port, killed on drop.
pub struct OwnRedis {
    pub port: u16,
    child: std::process::Child,
}

impl OwnRedis {
    pub fn start() -> Option<OwnRedis> {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
            l.local_addr().ok()?.port()
        };
        Self::on_port(port)
    }

    /// Kills `old` and starts an empty server on the same port.
    pub fn restart(old: OwnRedis) -> OwnRedis {
        let port = old.port;
        drop(old);
        Self::on_port(port).expect("redis-server restarts")
    }

    fn on_port(port: u16) -> Option<OwnRedis> {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => return unavailable("redis-server binary", e),
        };
        let me = OwnRedis { port, child };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(me);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {port} did not start");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A store without the in-process cache, so every read reaches the tiers.
pub fn uncached(redis: Option<Arc<RedisTier>>, sql: Option<Arc<SqlStore>>) -> AuthStore {
    let options = StoreOptions {
        cache_max_bytes: 0,
        ..Default::default()
    };
    AuthStore::new(redis, sql, options).expect("a store with at least one tier")
}
