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

mod keyed;
mod mysql;
mod nodelay;
pub mod plugin;
mod postgres;
pub mod raw;
mod sqlite;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{url_secrets, SqlOptions};
use crate::error::{scrub, with_timeout, Error, Result, Tier};
use crate::model::{SessionId, Value, WriteBatch};

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

/// Highest schema version this build knows.
pub const SCHEMA_VERSION: i64 = 3;
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
}

/// A connection a commit lane owns, outside the pool.
enum LaneConn {
    Postgres(sqlx::PgConnection),
    MySql(sqlx::MySqlConnection),
}

/// How many group commits a server dialect runs at once: half the connections, at most 4.
fn server_commit_lanes(max_connections: u32) -> u32 {
    (max_connections / 2).clamp(1, 4)
}

/// How many commit lanes get connections of their own, out of `max_connections`: every lane a
/// server dialect commits on, as long as the pool keeps at least one. SQLite and plug-ins commit
/// through their pool.
fn lane_connections(dialect: Dialect, max_connections: u32) -> u32 {
    match dialect {
        Dialect::Postgres | Dialect::MySql => {
            let lanes = server_commit_lanes(max_connections);
            if max_connections > lanes {
                lanes
            } else {
                0
            }
        }
        Dialect::Sqlite | Dialect::Plugin => 0,
    }
}

/// A failure of the connection rather than of the statement (the server went away, restarted,
/// or the link broke): worth one more try on a new connection.
fn is_connection_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        // PostgreSQL: 57P01-57P03 (shut down, crash, cannot connect now), class 08 (connection
        // exception)
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("57P0") || c.starts_with("08")),
        _ => false,
    }
}

/// How the group commits have been batching.
#[derive(Default, Debug)]
pub struct GroupStats {
    pub transactions: AtomicU64,
    pub writes: AtomicU64,
}

/// One write of a group commit: a session's batch at the version the store gave it.
#[derive(Clone, Copy)]
pub struct VersionedWrite<'a> {
    pub sid: &'a SessionId,
    pub batch: &'a WriteBatch,
    pub version: u64,
    /// The lease epoch the writer holds: refused if the session's epoch is higher (`None`: the
    /// writer takes no lease and is not fenced).
    pub epoch: Option<u64>,
}

/// A failed commit, and whether the failure belongs to the statements (each write of the group
/// may succeed alone) or to the connection (every write would fail the same way).
#[derive(Debug)]
pub struct CommitError {
    pub error: Error,
    pub statement_level: bool,
}

/// A session as [`SqlStore::list_sessions`] finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionListing {
    pub id: String,
    pub has_creds: bool,
    pub version: u64,
    pub updated_at_ms: i64,
}

/// A row read back with the version that wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionedRow {
    pub id: String,
    pub version: u64,
    pub value: Value,
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

/// Splits `items` into statement-sized runs: at most [`ROWS_PER_STATEMENT`] rows and about
/// [`BYTES_PER_STATEMENT`] bytes each.
pub(crate) fn statement_chunks<T>(items: &[T], size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    chunks_within(items, size, ROWS_PER_STATEMENT, BYTES_PER_STATEMENT)
}

/// [`statement_chunks`] with explicit limits.
pub(crate) fn chunks_within<T>(
    items: &[T],
    size: impl Fn(&T) -> usize,
    max_rows: usize,
    max_bytes: usize,
) -> Vec<&[T]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let n = size(item);
        if i > start && (i - start >= max_rows || bytes + n > max_bytes) {
            out.push(&items[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += n;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

/// The session row a write upserts: its version rises to `version`; `creds` replace the stored
/// creds when `creds_version` is higher than theirs; `cleared` raises the cleared watermark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SessionRow<'a> {
    pub sid: &'a str,
    pub version: i64,
    pub creds: Option<&'a [u8]>,
    pub creds_version: i64,
    pub cleared: i64,
}

/// A key row: a value, or a tombstone (`None`), at a version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyRow<'a> {
    pub sid: &'a str,
    pub kind: &'a str,
    pub id: &'a str,
    pub value: Option<&'a [u8]>,
    pub version: i64,
}

impl KeyRow<'_> {
    pub fn size(&self) -> usize {
        self.sid.len() + self.kind.len() + self.id.len() + self.value.map_or(0, |v| v.len()) + 24
    }
}

impl SessionRow<'_> {
    pub fn size(&self) -> usize {
        self.sid.len() + self.creds.map_or(0, |c| c.len()) + 32
    }
}

/// Versioned writes of one or many sessions merged: the highest version of each record wins,
/// rows sorted by key so concurrent writers lock rows in one order.
#[derive(Default, Debug)]
pub(crate) struct Merged<'a> {
    pub sessions: Vec<SessionRow<'a>>,
    pub keys: Vec<KeyRow<'a>>,
    /// Sessions written under a lease, with the lowest epoch their writes carry.
    pub fences: Vec<(&'a str, i64)>,
}

impl<'a> Merged<'a> {
    pub fn of(writes: &[VersionedWrite<'a>]) -> Self {
        let mut sessions: BTreeMap<&str, SessionRow<'a>> = BTreeMap::new();
        let mut keys: BTreeMap<(&str, &str, &str), KeyRow<'a>> = BTreeMap::new();
        let mut fences: BTreeMap<&str, i64> = BTreeMap::new();
        for w in writes {
            let v = w.version as i64;
            if let Some(e) = w.epoch {
                let f = fences.entry(&**w.sid).or_insert(e as i64);
                *f = (*f).min(e as i64);
            }
            let row = sessions.entry(&**w.sid).or_insert(SessionRow {
                sid: w.sid,
                version: v,
                creds: None,
                creds_version: 0,
                cleared: 0,
            });
            row.version = row.version.max(v);
            if let Some(c) = &w.batch.creds {
                if v >= row.creds_version {
                    row.creds = Some(c);
                    row.creds_version = v;
                }
            }
            for k in &w.batch.keys {
                let new = KeyRow {
                    sid: w.sid,
                    kind: &k.kind,
                    id: &k.id,
                    value: k.value.as_deref(),
                    version: v,
                };
                keys.entry((&**w.sid, &k.kind, &k.id))
                    .and_modify(|old| {
                        if new.version >= old.version {
                            *old = new;
                        }
                    })
                    .or_insert(new);
            }
        }
        Merged {
            sessions: sessions.into_values().collect(),
            keys: keys.into_values().collect(),
            fences: fences.into_iter().collect(),
        }
    }

    /// The same writes less those of `fenced` sessions.
    pub fn without(&self, fenced: &[String]) -> Merged<'a> {
        let out = |sid: &str| fenced.iter().any(|f| f == sid);
        Merged {
            sessions: self
                .sessions
                .iter()
                .filter(|r| !out(r.sid))
                .copied()
                .collect(),
            keys: self.keys.iter().filter(|r| !out(r.sid)).copied().collect(),
            fences: Vec::new(),
        }
    }

    /// The sessions whose stored epoch (`epochs`) is above the epoch their writes carry.
    pub fn fenced(&self, epochs: &[(String, i64)]) -> Vec<String> {
        self.fences
            .iter()
            .filter(|(sid, e)| epochs.iter().any(|(s, stored)| s == sid && stored > e))
            .map(|(sid, _)| sid.to_string())
            .collect()
    }
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
        let store = SqlStore {
            pool,
            timeout: opts.timeout,
            secrets,
            closed: AtomicBool::new(false),
            groups: GroupStats::default(),
            max_connections: opts.max_connections,
            lanes: (0..lanes).map(|_| tokio::sync::Mutex::new(None)).collect(),
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

    /// Commits versioned writes of any sessions in one transaction (or one statement), each row
    /// only over an older version. The writes of sessions whose lease epoch moved past the
    /// writer's are left out (fenced): their ids are returned.
    pub async fn commit(&self, writes: &[VersionedWrite<'_>]) -> Result<Vec<String>, CommitError> {
        self.commit_with(writes, None).await
    }

    /// [`Self::commit`] from commit lane `lane` (of [`Self::parallel_commits`]), on the lane's
    /// own connection where it has one. A lane commits one group at a time, so its connection
    /// needs no pool: sqlx's pool tests every connection it hands out and every one given back
    /// with a round trip each, two round trips of the server's time per commit. A lane's
    /// connection that fails (a server restart, a broken link, a deadline that dropped it
    /// mid-statement) is closed and the next commit opens another; a failure of the connection
    /// itself on a connection that served before is tried once more on a new one (every write is
    /// versioned, so running one twice changes nothing).
    pub async fn commit_in_lane(
        &self,
        lane: usize,
        writes: &[VersionedWrite<'_>],
    ) -> Result<Vec<String>, CommitError> {
        self.commit_with(writes, self.lanes.get(lane)).await
    }

    /// Runs `merged` on the lane's connection, opening it if needed (see
    /// [`Self::commit_in_lane`]).
    async fn write_in_lane(
        &self,
        lane: &tokio::sync::Mutex<Option<LaneConn>>,
        m: &Merged<'_>,
        now: i64,
    ) -> std::result::Result<Vec<String>, sqlx::Error> {
        let mut held = lane.lock().await;
        let mut reused = true;
        loop {
            // taken out while in use: a failure, or a deadline that drops this future, drops it
            let mut conn = match held.take() {
                Some(c) => c,
                None => {
                    reused = false;
                    match &self.pool {
                        Pool::Postgres(p) => LaneConn::Postgres(postgres::connect_one(p).await?),
                        Pool::MySql(p) => LaneConn::MySql(mysql::connect_one(p).await?),
                        Pool::Sqlite(_) | Pool::Plugin(_) => {
                            unreachable!("lane connections are only made for server dialects")
                        }
                    }
                }
            };
            let r = match &mut conn {
                LaneConn::Postgres(c) => postgres::write_on(c, m, now).await,
                LaneConn::MySql(c) => mysql::write_on(c, m, now).await,
            };
            match r {
                Ok(fenced) => {
                    *held = Some(conn);
                    return Ok(fenced);
                }
                // Any failure drops the connection: a failed transaction's rollback would wait
                // for the connection's next use, holding its locks until then.
                Err(e) if reused && is_connection_error(&e) => reused = false,
                Err(e) => return Err(e),
            }
        }
    }

    async fn commit_with(
        &self,
        writes: &[VersionedWrite<'_>],
        lane: Option<&tokio::sync::Mutex<Option<LaneConn>>>,
    ) -> Result<Vec<String>, CommitError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(CommitError {
                error: Error::StoreClosed,
                statement_level: false,
            });
        }
        let merged = Merged::of(writes);
        if merged.sessions.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let pool = &self.pool;
        let merged = &merged;
        // a deadlock or serialization failure rolled the transaction back: run it again
        let write = Box::pin(async move {
            let mut tries = 0;
            loop {
                let r = match lane {
                    Some(l) => self.write_in_lane(l, merged, now).await,
                    None => on_dialect!(pool, write(merged, now)),
                };
                match r {
                    Err(e) if tries < 3 && is_retryable(&e) => tries += 1,
                    r => return r,
                }
            }
        });
        let r = match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(fenced)) => Ok(fenced),
            Ok(Err(e)) => Err(CommitError {
                // a plug-in's failure may belong to one session's rows: try each write alone
                statement_level: matches!(e, sqlx::Error::Database(_))
                    || matches!(pool, Pool::Plugin(_)),
                error: self.err(e),
            }),
            Err(_) => Err(CommitError {
                error: Error::Timeout {
                    tier: Tier::Database,
                    op: "write",
                    millis: self.timeout.as_millis(),
                },
                statement_level: false,
            }),
        };
        if r.is_ok() {
            self.groups.transactions.fetch_add(1, Ordering::Relaxed);
            self.groups
                .writes
                .fetch_add(writes.len() as u64, Ordering::Relaxed);
        }
        r
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

    /// The session's lease epoch as SQL records it (0 for a session SQL does not know).
    pub async fn session_epoch(&self, sid: &SessionId) -> Result<u64> {
        self.call("select epoch", async {
            on_dialect!(&self.pool, session_epoch(sid))
        })
        .await
    }

    /// Raises the session's recorded lease epoch to `epoch` (creating the session row).
    pub async fn raise_epoch(&self, sid: &SessionId, epoch: u64) -> Result<()> {
        let now = now_ms();
        self.call("raise epoch", async {
            on_dialect!(&self.pool, raise_epoch(sid, epoch as i64, now))
        })
        .await
    }

    /// Takes the session's lease row (see `crate::lease`), in one transaction with the
    /// session's epoch.
    pub async fn lease_acquire(&self, req: &LeaseRequest<'_>) -> Result<LeaseRow> {
        self.call("acquire lease", async {
            on_dialect!(&self.pool, lease_acquire(req))
        })
        .await
    }

    /// Extends the lease if `token` still holds it.
    pub async fn lease_renew(&self, sid: &SessionId, token: &str, ttl_ms: i64) -> Result<bool> {
        self.call("renew lease", async {
            on_dialect!(&self.pool, lease_renew(sid, token, ttl_ms))
        })
        .await
    }

    pub async fn lease_release(&self, sid: &SessionId, token: &str) -> Result<()> {
        self.call("release lease", async {
            on_dialect!(&self.pool, lease_release(sid, token))
        })
        .await
    }

    /// The lease row, with the database's clock.
    pub async fn lease_info(&self, sid: &SessionId) -> Result<Option<LeaseRow>> {
        self.call("lease info", async {
            on_dialect!(&self.pool, lease_info(sid))
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
                Pool::Postgres(p) => sqlx::query_scalar(SQL).fetch_one(p).await,
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

/// A server that refuses the TCP connection is reported at once (sqlx's pool would retry until
/// its deadline and then report a timeout). Anything else is left to sqlx.
async fn refuse_fast(url: &str, timeout: Duration) -> Result<()> {
    let Ok(u) = url::Url::parse(&url.replacen("mariadb://", "mysql://", 1)) else {
        return Ok(());
    };
    let (Some(host), Some(port)) = (
        u.host_str(),
        u.port_or_known_default().or(match u.scheme() {
            "mysql" => Some(3306),
            _ => Some(5432),
        }),
    ) else {
        return Ok(());
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    match tokio::time::timeout(
        timeout,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Err(Error::Database(
            format!("connection refused by {host}:{port} (is the database server running?)"),
        )),
        _ => Ok(()),
    }
}

/// A transaction the database rolled back to break a deadlock or a serialization conflict (safe
/// to run again: nothing of it was applied).
fn is_retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => matches!(
            d.code().as_deref(),
            Some("40001") | Some("40P01") | Some("1213")
        ),
        _ => false,
    }
}

fn map_err(e: sqlx::Error, secrets: &[String], timeout: Duration) -> Error {
    match e {
        sqlx::Error::PoolTimedOut => Error::Timeout {
            tier: Tier::Database,
            op: "acquire connection",
            millis: timeout.as_millis(),
        },
        sqlx::Error::PoolClosed => Error::StoreClosed,
        sqlx::Error::Configuration(c) => {
            Error::Config(scrub(format!("invalid database url: {c}"), secrets))
        }
        // our own refusals (a schema too new, a plug-in's failure): the message is the news
        sqlx::Error::Protocol(m) => Error::Database(scrub(m, secrets)),
        other => Error::Database(scrub(other.to_string(), secrets)),
    }
}

/// What an acquirer asks for.
pub struct LeaseRequest<'a> {
    pub sid: &'a SessionId,
    pub token: &'a str,
    pub holder: &'a str,
    pub ttl_ms: i64,
    pub force: bool,
}

/// A lease row as the database has it: `acquired` tells whether the request got it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRow {
    pub acquired: bool,
    pub token: String,
    pub holder: String,
    pub epoch: i64,
    pub expires_at: i64,
    pub acquired_at: i64,
    /// The database's clock when read (ms).
    pub now: i64,
}

/// The lease decision every dialect makes inside its transaction: `current` is the lease row
/// (if any), `session_epoch` the session's recorded epoch.
pub(crate) fn decide_lease(
    req: &LeaseRequest<'_>,
    current: Option<(String, String, i64, i64, i64)>,
    session_epoch: i64,
    now: i64,
) -> LeaseRow {
    if let Some((token, holder, epoch, expires_at, acquired_at)) = &current {
        let live = *expires_at > now;
        if live && token != req.token && !req.force {
            return LeaseRow {
                acquired: false,
                token: String::new(),
                holder: holder.clone(),
                epoch: *epoch,
                expires_at: *expires_at,
                acquired_at: *acquired_at,
                now,
            };
        }
    }
    let same = current.as_ref().is_some_and(|c| c.0 == req.token);
    let prior = current.as_ref().map_or(0, |c| c.2);
    let epoch = if same {
        prior.max(session_epoch)
    } else {
        prior.max(session_epoch) + 1
    };
    LeaseRow {
        acquired: true,
        token: req.token.to_string(),
        holder: req.holder.to_string(),
        epoch,
        expires_at: now + req.ttl_ms,
        acquired_at: if same {
            current.as_ref().map_or(now, |c| c.4)
        } else {
            now
        },
        now,
    }
}

/// How many records of one type a session holds, and their value bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeSummary {
    pub kind: String,
    pub count: u64,
    pub bytes: u64,
}

/// Rows of `(type, count, bytes)` into summaries.
pub(crate) fn summaries(rows: Vec<(Vec<u8>, i64, i64)>) -> Result<Vec<TypeSummary>, sqlx::Error> {
    rows.into_iter()
        .map(|(kind, count, bytes)| {
            Ok(TypeSummary {
                kind: String::from_utf8(kind).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                count: count.max(0) as u64,
                bytes: bytes.max(0) as u64,
            })
        })
        .collect()
}

/// Turns `(id, version, bytes)` rows into versioned values.
pub(crate) fn versioned_rows(rows: Vec<(String, i64, Vec<u8>)>) -> Vec<VersionedRow> {
    rows.into_iter()
        .map(|(id, version, v)| VersionedRow {
            id,
            version: version.max(0) as u64,
            value: Value::from(v),
        })
        .collect()
}

/// The creds column and its version as a versioned value.
pub(crate) fn creds_row(row: Option<(Option<Vec<u8>>, i64)>) -> Option<(u64, Value)> {
    row.and_then(|(c, v)| c.map(|c| (v.max(0) as u64, Value::from(c))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KeyWrite;

    #[test]
    fn dialects_from_urls() {
        assert_eq!(dialect_of("postgres://x/y").unwrap(), Dialect::Postgres);
        assert_eq!(dialect_of("postgresql://x/y").unwrap(), Dialect::Postgres);
        assert_eq!(dialect_of("mysql://x/y").unwrap(), Dialect::MySql);
        assert_eq!(dialect_of("sqlite::memory:").unwrap(), Dialect::Sqlite);
        assert_eq!(dialect_of("sqlite://a.db").unwrap(), Dialect::Sqlite);
        assert_eq!(dialect_of("oracle://x").unwrap_err().code(), "ERR_CONFIG");
    }

    #[test]
    fn chunks_respect_rows_and_bytes() {
        let small = vec![10usize; 2200];
        let c = statement_chunks(&small, |n| *n);
        assert_eq!(
            c.iter().map(|c| c.len()).collect::<Vec<_>>(),
            vec![1000, 1000, 200]
        );
        let big = vec![3 * 1024 * 1024usize; 5];
        assert_eq!(statement_chunks(&big, |n| *n).len(), 5);
        assert!(statement_chunks(&Vec::<usize>::new(), |n| *n).is_empty());
    }

    #[test]
    fn merging_keeps_the_highest_version_of_each_record() {
        let a = SessionId::new("a").unwrap();
        let b = SessionId::new("b").unwrap();
        let first = WriteBatch {
            creds: Some(Value::from(&b"c1"[..])),
            keys: vec![
                KeyWrite::put("pre-key", "1", b"x".to_vec()),
                KeyWrite::put("session", "s", b"y".to_vec()),
            ],
        };
        let second = WriteBatch {
            creds: Some(Value::from(&b"c2"[..])),
            keys: vec![KeyWrite::delete("pre-key", "1")],
        };
        let third = WriteBatch {
            creds: None,
            keys: vec![KeyWrite::put("pre-key", "1", b"z".to_vec())],
        };
        // the second write of `a` has the higher version even though it is listed first
        let m = Merged::of(&[
            VersionedWrite {
                sid: &a,
                batch: &second,
                version: 5,
                epoch: None,
            },
            VersionedWrite {
                sid: &a,
                batch: &first,
                version: 4,
                epoch: None,
            },
            VersionedWrite {
                sid: &b,
                batch: &third,
                version: 9,
                epoch: None,
            },
        ]);
        assert_eq!(m.sessions.len(), 2);
        assert_eq!(
            (
                m.sessions[0].version,
                m.sessions[0].creds,
                m.sessions[0].creds_version
            ),
            (5, Some(&b"c2"[..]), 5)
        );
        assert_eq!((m.sessions[1].version, m.sessions[1].creds), (9, None));
        let keys: Vec<_> = m
            .keys
            .iter()
            .map(|k| (k.sid, k.kind, k.id, k.value, k.version))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("a", "pre-key", "1", None, 5),
                ("a", "session", "s", Some(&b"y"[..]), 4),
                ("b", "pre-key", "1", Some(&b"z"[..]), 9),
            ]
        );
    }
}
