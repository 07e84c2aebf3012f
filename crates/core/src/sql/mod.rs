//! The SQL tier: typed sqlx pools, one module per dialect, one transaction per group commit.
//!
//! Schema (versioned, applied on connect): `wa_auth_sessions(session_id PK, creds, creds_version,
//! version, cleared_version, epoch, created_at, updated_at)` and `wa_auth_keys(session_id, type,
//! id, value, version, updated_at, PK(session_id, type, id))`, values as bytes, times as epoch
//! milliseconds. `wa_auth_migrations(version)` records what ran; `wa_auth_leases` holds session
//! leases.
//!
//! Versions: every write carries the version the store gave it. A row is only replaced by a
//! higher version (`... DO UPDATE ... WHERE version < new`), a delete leaves a tombstone row
//! (`value` NULL) at its version, and a session's `version` is the highest one committed for it,
//! so a reader can tell when Redis holds less than SQL. Clearing a session sets
//! `cleared_version`: rows below it are dead whatever raced the clear (reads filter them), and
//! the clear deletes them.
//!
//! The rooms: one file per dialect (`postgres`, `mysql`, `sqlite`, with the statements MySQL and
//! SQLite share in `keyed`; `plugin` for a persistence plug-in), `rows` (what a commit writes and
//! the version rules of merging), `commit` (group commits, lanes, retries), `leases` (lease rows
//! and the lease decision), `errors`, `raw` (tools' own statements) and `nodelay` (the
//! TCP_NODELAY connector the server dialects use, a leaf).

mod commit;
mod errors;
mod keyed;
mod leases;
mod mysql;
mod nodelay;
pub mod plugin;
mod postgres;
pub mod raw;
mod rows;
pub mod rules;
pub mod rules_json;
mod sqlite;

pub use rows::{CommitError, SessionListing, TypeSummary, VersionedRow, VersionedWrite};
pub use rules::{Epochs, LeaseRequest, StoredLease, TakeMode, Taken};

pub(crate) use rows::{
    chunks_within, creds_row, statement_chunks, summaries, versioned_rows, KeyRow, Merged,
    SessionRow,
};

use commit::{lane_connections, server_commit_lanes, LaneConn};
use errors::{is_retryable, map_err, refuse_fast};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{url_secrets, SqlOptions};
use crate::error::{with_timeout, Error, Result, Tier};
use crate::model::{SessionId, Value};

/// Calls the function of that name in the module of `$pool`'s dialect, with the pool first.
macro_rules! on_dialect {
    ($pool:expr, $f:ident($($arg:expr),*)) => {
        match $pool {
            Pool::Postgres(p) => postgres::$f(p, $($arg),*).await,
            Pool::MySql(p) => mysql::$f(p, $($arg),*).await,
            Pool::Sqlite(p) => sqlite::$f(p, $($arg),*).await,
            Pool::Plugin(p) => plugin::$f(p, $($arg),*).await,
        }
    };
}
pub(crate) use on_dialect;

/// Highest schema version this build knows.
pub const SCHEMA_VERSION: i64 = 5;
/// Applies the migrations newer than the recorded version on `$conn` (a transaction or a locked
/// connection): refuses a schema newer than this build, records each version applied.
macro_rules! apply_migrations {
    ($conn:expr, $migrations:expr, $current_sql:expr, $record_sql:expr) => {{
        let current: i64 = sqlx::query_scalar($current_sql).fetch_one(&mut *$conn).await?;
        if current > super::SCHEMA_VERSION {
            return Err(sqlx::Error::Protocol(format!(
                "the database schema is at version {current}, newer than this wa-auth-store knows ({}); upgrade wa-auth-store",
                super::SCHEMA_VERSION
            )));
        }
        for (version, statements) in $migrations.iter().filter(|(v, _)| *v > current) {
            for s in *statements {
                sqlx::query(*s).execute(&mut *$conn).await?;
            }
            sqlx::query($record_sql)
                .bind(version)
                .bind(super::now_ms())
                .execute(&mut *$conn)
                .await?;
        }
    }};
}
pub(crate) use apply_migrations;

/// Rows per multi-row statement: a pairing burst (812 pre-keys) fits in one, and 6 columns x 1000
/// rows stays under SQLite's 32,766 and MySQL's 65,535 bind parameters.
const ROWS_PER_STATEMENT: usize = 1000;
/// Value bytes per multi-row statement (keeps MySQL under `max_allowed_packet`).
const BYTES_PER_STATEMENT: usize = 4 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    MySql,
    Sqlite,
    /// A persistence plug-in the application brought ([`plugin::PluginTransport`]).
    Plugin,
}

#[derive(Clone)]
enum Pool {
    Postgres(sqlx::PgPool),
    MySql(sqlx::MySqlPool),
    Sqlite(sqlx::SqlitePool),
    Plugin(plugin::Plugin),
}

pub struct SqlStore {
    pool: Pool,
    timeout: Duration,
    secrets: Vec<String>,
    closed: AtomicBool,
    groups: GroupStats,
    max_connections: u32,
    /// The commit lanes' own connections (see [`SqlStore::commit_in_lane`]), opened on first
    /// use; empty where commits go through the pool.
    lanes: Vec<tokio::sync::Mutex<Option<LaneConn>>>,
    /// A SQLite file's path and the (device, inode) it named when the store opened it (see
    /// [`SqlStore::check_file`]).
    sqlite_file: Option<(std::path::PathBuf, (u64, u64))>,
}

/// How the group commits have been batching.
#[derive(Default, Debug)]
pub struct GroupStats {
    pub transactions: AtomicU64,
    pub writes: AtomicU64,
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("dialect", &self.dialect())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Which dialect a URL names.
pub fn dialect_of(url: &str) -> Result<Dialect> {
    let scheme = url.split(':').next().unwrap_or_default();
    match scheme {
        "postgres" | "postgresql" => Ok(Dialect::Postgres),
        "mysql" | "mariadb" => Ok(Dialect::MySql),
        "sqlite" => Ok(Dialect::Sqlite),
        _ => Err(Error::Config(
            "database url must start with postgres://, mysql://, mariadb://, sqlite:// or sqlite::memory:"
                .into(),
        )),
    }
}

impl SqlStore {
    /// Connects, then applies the pending migrations.
    pub async fn connect(opts: SqlOptions) -> Result<Arc<Self>> {
        let dialect = dialect_of(&opts.url)?;
        if opts.timeout.is_zero() || opts.max_connections == 0 {
            return Err(Error::Config(
                "timeout and maxConnections must be greater than zero".into(),
            ));
        }
        let secrets = url_secrets(&opts.url);
        if dialect != Dialect::Sqlite {
            refuse_fast(&opts.url, opts.timeout).await?;
        }
        let map = |e: sqlx::Error| map_err(e, &secrets, opts.timeout);
        let lanes = lane_connections(dialect, opts.max_connections);
        // the lanes' connections count against max_connections too
        let pool_opts = SqlOptions {
            max_connections: opts.max_connections - lanes,
            ..opts.clone()
        };
        let pool = with_timeout(Tier::Database, "connect", opts.timeout * 2, async {
            Ok(match dialect {
                Dialect::Postgres => {
                    Pool::Postgres(postgres::connect(&pool_opts).await.map_err(map)?)
                }
                Dialect::MySql => Pool::MySql(mysql::connect(&pool_opts).await.map_err(map)?),
                Dialect::Sqlite => Pool::Sqlite(sqlite::connect(&opts).await.map_err(map)?),
                Dialect::Plugin => unreachable!("dialect_of never answers Plugin"),
            })
        })
        .await
        .map_err(|e| match e {
            // the pool retried until its deadline: say what the server answered instead
            Error::Timeout { .. } => Error::Database(format!(
                "could not connect within {} ms: {}",
                opts.timeout.as_millis(),
                "the server refused or did not answer (check the URL, that the server runs, and its credentials)"
            )),
            other => other,
        })?;
        let sqlite_file = match dialect {
            Dialect::Sqlite if !opts.read_only => {
                sqlite::file_of(&opts.url).and_then(|p| sqlite::identity(&p).ok().map(|id| (p, id)))
            }
            _ => None,
        };
        let store = SqlStore {
            pool,
            timeout: opts.timeout,
            secrets,
            closed: AtomicBool::new(false),
            groups: GroupStats::default(),
            max_connections: opts.max_connections,
            lanes: (0..lanes).map(|_| tokio::sync::Mutex::new(None)).collect(),
            sqlite_file,
        };
        if !opts.migrate {
            return Ok(Arc::new(store));
        }
        // Fast path of every open after the first: the schema is current, take no lock, run no DDL.
        if store.schema_version().await.ok() == Some(SCHEMA_VERSION) {
            return Ok(Arc::new(store));
        }
        // Migrations may wait for another process's lock: give them a longer deadline.
        let deadline = opts.timeout.max(Duration::from_secs(30));
        with_timeout(Tier::Database, "migrate", deadline, async {
            on_dialect!(&store.pool, migrate()).map_err(|e| store.err(e))
        })
        .await?;
        Ok(Arc::new(store))
    }

    /// The durable tier of a persistence plug-in: every operation goes to `transport`, each
    /// with `timeout` as its deadline; at most `parallel` group commits at once.
    pub fn from_plugin(
        transport: Arc<dyn plugin::PluginTransport>,
        timeout: Duration,
        parallel: u32,
    ) -> Result<Arc<Self>> {
        if timeout.is_zero() || parallel == 0 {
            return Err(Error::Config(
                "timeout and parallel commits must be greater than zero".into(),
            ));
        }
        Ok(Arc::new(SqlStore {
            pool: Pool::Plugin(transport),
            timeout,
            secrets: Vec::new(),
            closed: AtomicBool::new(false),
            groups: GroupStats::default(),
            max_connections: parallel * 2,
            lanes: Vec::new(),
            sqlite_file: None,
        }))
    }

    pub fn dialect(&self) -> Dialect {
        match self.pool {
            Pool::Postgres(_) => Dialect::Postgres,
            Pool::MySql(_) => Dialect::MySql,
            Pool::Sqlite(_) => Dialect::Sqlite,
            Pool::Plugin(_) => Dialect::Plugin,
        }
    }

    /// How many group commits may run at once: SQLite has one writer anyway, servers commit
    /// in parallel on half the pool (at most 4).
    pub fn parallel_commits(&self) -> usize {
        match self.dialect() {
            Dialect::Sqlite => 1,
            // a plug-in commits as many at once as it was opened with (from_plugin's `parallel`)
            Dialect::Plugin => (self.max_connections as usize / 2).max(1),
            _ => server_commit_lanes(self.max_connections) as usize,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn err(&self, e: sqlx::Error) -> Error {
        map_err(e, &self.secrets, self.timeout)
    }

    /// Refuses to write to a SQLite file the path no longer names (deleted, or replaced by
    /// another file): the open connections would keep committing into a file no process can open
    /// again. One `stat` per commit.
    pub(super) fn check_file(&self) -> Result<()> {
        let Some((path, id)) = &self.sqlite_file else {
            return Ok(());
        };
        match sqlite::identity(path) {
            Ok(now) if now == *id => Ok(()),
            Ok(_) => Err(Error::Database(format!(
                "the database file {} was replaced by another file while the store had it open; writes are refused (reopen the store)",
                path.display()
            ))),
            Err(e) => Err(Error::Database(format!(
                "the database file {} was deleted while the store had it open ({e}); writes are refused (reopen the store)",
                path.display()
            ))),
        }
    }

    async fn call<T, F>(&self, op: &'static str, fut: F) -> Result<T>
    where
        F: std::future::Future<Output = std::result::Result<T, sqlx::Error>>,
    {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::StoreClosed);
        }
        // Boxed: the dialects' futures are large, and nesting them inline overflows the stack of
        // debug builds.
        let fut = Box::pin(fut);
        with_timeout(Tier::Database, op, self.timeout, async {
            fut.await.map_err(|e| self.err(e))
        })
        .await
    }

    /// The creds of a session and the version that wrote them.
    pub async fn get_creds(&self, sid: &SessionId) -> Result<Option<(u64, Value)>> {
        self.call("select creds", async {
            on_dialect!(&self.pool, get_creds(sid))
        })
        .await
    }

    /// The highest version committed for the session (0 for a session SQL does not know).
    pub async fn session_version(&self, sid: &SessionId) -> Result<u64> {
        self.call("select session version", async {
            on_dialect!(&self.pool, session_version(sid))
        })
        .await
    }

    /// The live rows of `ids` (tombstones and rows below the cleared watermark left out), in no
    /// particular order.
    pub async fn get_keys(
        &self,
        sid: &SessionId,
        kind: &str,
        ids: &[String],
    ) -> Result<Vec<VersionedRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.call("select keys", async {
            on_dialect!(&self.pool, get_keys(sid, kind, ids))
        })
        .await
    }

    /// Clears a session at `version`: its keys go (rows below the version are dead from now
    /// on), and its creds too unless `keep_creds`. The session row stays as the record of the
    /// clear, so nothing older can come back.
    /// Returns false (nothing done) when the session's lease epoch is above `epoch`.
    pub async fn clear(
        &self,
        sid: &SessionId,
        version: u64,
        keep_creds: bool,
        epoch: Option<u64>,
    ) -> Result<bool> {
        let fence = epoch.map(|e| e as i64);
        let row = SessionRow {
            sid,
            version: version as i64,
            creds: None,
            creds_version: if keep_creds { 0 } else { version as i64 },
            cleared: version as i64,
        };
        self.check_file()?;
        let now = now_ms();
        self.call("clear session", async {
            let mut tries = 0;
            loop {
                match on_dialect!(&self.pool, clear(&row, now, fence)) {
                    Err(e) if tries < 3 && is_retryable(&e) => tries += 1,
                    r => return r,
                }
            }
        })
        .await
    }

    /// Transactions committed and writes they carried (writes / transactions = group size).
    pub fn group_stats(&self) -> (u64, u64) {
        (
            self.groups.transactions.load(Ordering::Relaxed),
            self.groups.writes.load(Ordering::Relaxed),
        )
    }

    /// Records and value bytes per key type of one session, in type order.
    pub async fn summary(&self, sid: &SessionId) -> Result<Vec<TypeSummary>> {
        self.call("summary", async { on_dialect!(&self.pool, summary(sid)) })
            .await
    }

    /// Every live id of one type in one session.
    pub async fn list_ids(&self, sid: &SessionId, kind: &str) -> Result<Vec<String>> {
        self.call("list ids", async {
            on_dialect!(&self.pool, list_ids(sid, kind))
        })
        .await
    }

    /// Removes every row of the session, the record of its deletion too (for tests and tools
    /// that own the whole database: a Redis snapshot that still holds the session could then
    /// bring it back).
    pub async fn purge(&self, sid: &SessionId) -> Result<()> {
        self.call("purge session", async {
            on_dialect!(&self.pool, purge(sid))
        })
        .await
    }

    /// Runs a statement the caller wrote for this dialect (`$1` or `?` placeholders, parameters
    /// bound as text) and returns its rows. For tools reading other tables: the store's own
    /// operations never go through here.
    pub async fn query_rows(&self, sql: &str, params: &[String]) -> Result<Vec<raw::RawRow>> {
        self.call("query", async {
            match &self.pool {
                Pool::Postgres(p) => raw::query_rows!(p, sql, params),
                Pool::MySql(p) => raw::query_rows!(p, sql, params),
                Pool::Sqlite(p) => raw::query_rows!(p, sql, params),
                Pool::Plugin(_) => Err(sqlx::Error::Protocol(
                    "a persistence plug-in runs no SQL statements".into(),
                )),
            }
        })
        .await
    }

    /// Every session with a row: id, whether it has creds, its version and last write (epoch
    /// ms), in id order. Deleted sessions keep a row without creds (their tombstone).
    pub async fn list_sessions(&self) -> Result<Vec<SessionListing>> {
        if let Pool::Plugin(p) = &self.pool {
            return self
                .call("list sessions", async { plugin::list_sessions(p).await })
                .await;
        }
        const SQL: &str =
            "SELECT session_id, CASE WHEN creds IS NULL THEN 0 ELSE 1 END AS has_creds,
            version, updated_at FROM wa_auth_sessions ORDER BY session_id";
        let rows = self.query_rows(SQL, &[]).await?;
        let int = |c: &raw::Cell| match c {
            raw::Cell::Int(v) => *v,
            _ => 0,
        };
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                // MySQL keeps ids as VARBINARY: they come back as bytes (UTF-8, as written)
                let id = match &r.first()?.1 {
                    raw::Cell::Text(s) => s.clone(),
                    raw::Cell::Bytes(b) => String::from_utf8(b.clone()).ok()?,
                    _ => return None,
                };
                Some(SessionListing {
                    id,
                    has_creds: int(&r.get(1)?.1) == 1,
                    version: int(&r.get(2)?.1).max(0) as u64,
                    updated_at_ms: int(&r.get(3)?.1),
                })
            })
            .collect())
    }

    /// The highest migration applied.
    pub async fn schema_version(&self) -> Result<i64> {
        const SQL: &str = "SELECT COALESCE(MAX(version), 0) FROM wa_auth_migrations";
        self.call("schema version", async {
            match &self.pool {
                // run once per open: the simple protocol's one round trip, not a prepared
                // statement's three
                Pool::Postgres(p) => {
                    use sqlx::Row;
                    sqlx::raw_sql(SQL).fetch_one(p).await?.try_get(0)
                }
                Pool::MySql(p) => sqlx::query_scalar(SQL).fetch_one(p).await,
                Pool::Sqlite(p) => sqlx::query_scalar(SQL).fetch_one(p).await,
                // the plug-in keeps its own schema
                Pool::Plugin(_) => Ok(SCHEMA_VERSION),
            }
        })
        .await
    }

    pub async fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let close = async {
            for lane in &self.lanes {
                let _ = match lane.lock().await.take() {
                    Some(LaneConn::Postgres(c)) => sqlx::Connection::close(c).await,
                    Some(LaneConn::MySql(c)) => sqlx::Connection::close(c).await,
                    None => Ok(()),
                };
            }
            match &self.pool {
                Pool::Postgres(p) => p.close().await,
                Pool::MySql(p) => p.close().await,
                Pool::Sqlite(p) => p.close().await,
                Pool::Plugin(p) => plugin::close(p).await,
            }
        };
        let _ = tokio::time::timeout(self.timeout, close).await;
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// Real servers for the dialects' unit tests: URLs from the environment with loopback
/// defaults; a missing server fails the test under `CI=true` and skips it elsewhere.
#[cfg(test)]
pub(crate) mod test_servers {
    use std::future::Future;

    /// A pool (or whatever `connect` makes) on the first of `var`'s URL or `defaults` that
    /// answers, or None after a SKIPPED line.
    pub async fn first<T, E, F, Fut>(var: &str, defaults: &[&str], connect: F) -> Option<T>
    where
        F: Fn(crate::config::SqlOptions) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let urls = match std::env::var(var) {
            Ok(u) => vec![u],
            Err(_) => defaults.iter().map(|u| u.to_string()).collect(),
        };
        for u in urls {
            let mut opts = crate::config::SqlOptions::new(u);
            opts.timeout = std::time::Duration::from_secs(5);
            if let Ok(p) = connect(opts).await {
                return Some(p);
            }
        }
        let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(
            !in_ci,
            "{var}: the server is required under CI but unavailable"
        );
        eprintln!("SKIPPED: no server at {var} or {defaults:?}; start it or set {var}");
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialects_from_urls() {
        assert_eq!(dialect_of("postgres://x/y").unwrap(), Dialect::Postgres);
        assert_eq!(dialect_of("postgresql://x/y").unwrap(), Dialect::Postgres);
        assert_eq!(dialect_of("mysql://x/y").unwrap(), Dialect::MySql);
        assert_eq!(dialect_of("sqlite::memory:").unwrap(), Dialect::Sqlite);
        assert_eq!(dialect_of("sqlite://a.db").unwrap(), Dialect::Sqlite);
        assert_eq!(dialect_of("oracle://x").unwrap_err().code(), "ERR_CONFIG");
    }
}
