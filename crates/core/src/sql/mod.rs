//! The SQL tier: typed sqlx pools, one module per dialect, one transaction per write.
//!
//! Schema (versioned, applied on connect): `wa_auth_sessions(session_id PK, creds, created_at,
//! updated_at)` and `wa_auth_keys(session_id, type, id, value, updated_at, PK(session_id, type, id))`,
//! values as bytes, times as epoch milliseconds. `wa_auth_migrations(version)` records what ran.

mod keyed;
mod mysql;
mod nodelay;
mod postgres;
mod sqlite;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{url_secrets, SqlOptions};
use crate::error::{scrub, with_timeout, Error, Result, Tier};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::model::{SessionId, Value, WriteBatch};

/// Calls the function of that name in the module of `$pool`'s dialect, with the pool first.
macro_rules! on_dialect {
    ($pool:expr, $f:ident($($arg:expr),*)) => {
        match $pool {
            Pool::Postgres(p) => postgres::$f(p, $($arg),*).await,
            Pool::MySql(p) => mysql::$f(p, $($arg),*).await,
            Pool::Sqlite(p) => sqlite::$f(p, $($arg),*).await,
        }
    };
}

/// Highest schema version this build knows.
pub const SCHEMA_VERSION: i64 = 1;
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

/// Rows per multi-row statement: a pairing burst (812 pre-keys) fits in one, and 5 columns x 1000
/// rows stays under SQLite's 32,766 and MySQL's 65,535 bind parameters.
const ROWS_PER_STATEMENT: usize = 1000;
/// Value bytes per multi-row statement (keeps MySQL under `max_allowed_packet`).
const BYTES_PER_STATEMENT: usize = 4 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    MySql,
    Sqlite,
}

#[derive(Clone)]
enum Pool {
    Postgres(sqlx::PgPool),
    MySql(sqlx::MySqlPool),
    Sqlite(sqlx::SqlitePool),
}

pub struct SqlStore {
    pool: Pool,
    timeout: Duration,
    secrets: Vec<String>,
    closed: AtomicBool,
    /// Writes wait here for the group committers (see [`Committer`]), one lane per session hash.
    lanes: Mutex<Vec<mpsc::UnboundedSender<Job>>>,
    committers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    groups: Arc<GroupStats>,
}

/// Most writes one group transaction takes, and about how many value bytes.
const MAX_GROUP_JOBS: usize = 256;
const MAX_GROUP_BYTES: usize = 16 * 1024 * 1024;
/// Most group committers (transactions in flight) per pool.
const MAX_LANES: usize = 4;

struct Job {
    sid: SessionId,
    batch: WriteBatch,
    done: oneshot::Sender<Result<()>>,
}

/// How the group committer has been batching.
#[derive(Default, Debug)]
pub struct GroupStats {
    pub transactions: AtomicU64,
    pub writes: AtomicU64,
}

/// Group commit: concurrent writes (of any sessions) queue up while a lane's transaction commits, and
/// the next transaction takes them all, merged in arrival order. Each caller is answered only
/// after the transaction holding its write committed. If a group fails, its writes are retried
/// one transaction each, so one bad write cannot fail the others.
struct Committer {
    pool: Pool,
    timeout: Duration,
    secrets: Vec<String>,
    groups: Arc<GroupStats>,
}

impl Committer {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Job>) {
        while let Some(first) = rx.recv().await {
            let mut bytes = first.batch.byte_size();
            let mut group = vec![first];
            while group.len() < MAX_GROUP_JOBS && bytes < MAX_GROUP_BYTES {
                match rx.try_recv() {
                    Ok(job) => {
                        bytes += job.batch.byte_size();
                        group.push(job);
                    }
                    Err(_) => break,
                }
            }
            match self.commit(&group).await {
                Ok(()) => group.into_iter().for_each(|j| {
                    let _ = j.done.send(Ok(()));
                }),
                Err(e) if group.len() == 1 => {
                    if let Some(j) = group.pop() {
                        let _ = j.done.send(Err(e));
                    }
                }
                Err(_) => {
                    for job in group {
                        let r = self.commit(std::slice::from_ref(&job)).await;
                        let _ = job.done.send(r);
                    }
                }
            }
        }
    }

    async fn commit(&self, jobs: &[Job]) -> Result<()> {
        let merged = Merged::of(jobs.iter().map(|j| (&j.sid, &j.batch)));
        let now = now_ms();
        let pool = &self.pool;
        let write = Box::pin(async move { on_dialect!(pool, write(&merged, now)) });
        let r = with_timeout(Tier::Database, "write", self.timeout, async {
            write
                .await
                .map_err(|e| map_err(e, &self.secrets, self.timeout))
        })
        .await;
        if r.is_ok() {
            self.groups.transactions.fetch_add(1, Ordering::Relaxed);
            self.groups
                .writes
                .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        }
        r
    }
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

/// Batches of one or many sessions merged in order (the last change of a record wins), sorted
/// by key so concurrent writers lock rows in one order.
#[derive(Default)]
pub(crate) struct Merged<'a> {
    pub creds: Vec<(&'a str, &'a [u8])>,
    pub puts: Vec<(&'a str, &'a str, &'a str, &'a [u8])>,
    pub dels: Vec<(&'a str, &'a str, &'a str)>,
}

impl<'a> Merged<'a> {
    pub fn of(jobs: impl IntoIterator<Item = (&'a SessionId, &'a WriteBatch)>) -> Self {
        use std::collections::BTreeMap;
        let mut creds: BTreeMap<&str, &[u8]> = BTreeMap::new();
        let mut keys: BTreeMap<(&str, &str, &str), Option<&[u8]>> = BTreeMap::new();
        for (sid, batch) in jobs {
            if let Some(c) = &batch.creds {
                creds.insert(sid, c);
            }
            for k in &batch.keys {
                keys.insert((sid, &k.kind, &k.id), k.value.as_deref());
            }
        }
        let mut m = Merged {
            creds: creds.into_iter().collect(),
            ..Default::default()
        };
        for ((sid, kind, id), v) in keys {
            match v {
                Some(v) => m.puts.push((sid, kind, id, v)),
                None => m.dels.push((sid, kind, id)),
            }
        }
        m
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
        let map = |e: sqlx::Error| map_err(e, &secrets, opts.timeout);
        let pool = with_timeout(Tier::Database, "connect", opts.timeout * 2, async {
            Ok(match dialect {
                Dialect::Postgres => Pool::Postgres(postgres::connect(&opts).await.map_err(map)?),
                Dialect::MySql => Pool::MySql(mysql::connect(&opts).await.map_err(map)?),
                Dialect::Sqlite => Pool::Sqlite(sqlite::connect(&opts).await.map_err(map)?),
            })
        })
        .await?;
        let groups = Arc::new(GroupStats::default());
        // SQLite has one writer at a time anyway; servers commit lanes in parallel.
        let lane_count = match dialect {
            Dialect::Sqlite => 1,
            _ => (opts.max_connections as usize / 2).clamp(1, MAX_LANES),
        };
        let (mut lanes, mut committers) = (Vec::new(), Vec::new());
        for _ in 0..lane_count {
            let (tx, rx) = mpsc::unbounded_channel();
            let committer = Committer {
                pool: pool.clone(),
                timeout: opts.timeout,
                secrets: secrets.clone(),
                groups: groups.clone(),
            };
            lanes.push(tx);
            committers.push(tokio::spawn(committer.run(rx)));
        }
        let store = SqlStore {
            pool,
            timeout: opts.timeout,
            secrets,
            closed: AtomicBool::new(false),
            lanes: Mutex::new(lanes),
            committers: Mutex::new(committers),
            groups,
        };
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

    pub fn dialect(&self) -> Dialect {
        match self.pool {
            Pool::Postgres(_) => Dialect::Postgres,
            Pool::MySql(_) => Dialect::MySql,
            Pool::Sqlite(_) => Dialect::Sqlite,
        }
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

    pub async fn get_creds(&self, sid: &SessionId) -> Result<Option<Value>> {
        self.call("select creds", async {
            on_dialect!(&self.pool, get_creds(sid))
        })
        .await
    }

    /// The rows of `ids` that exist, in no particular order.
    pub async fn get_keys(
        &self,
        sid: &SessionId,
        kind: &str,
        ids: &[String],
    ) -> Result<Vec<(String, Value)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.call("select keys", async {
            on_dialect!(&self.pool, get_keys(sid, kind, ids))
        })
        .await
    }

    /// Applies a whole batch atomically, in a group transaction shared with concurrent writes;
    /// resolves after that transaction committed.
    pub async fn write(&self, sid: &SessionId, batch: &WriteBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::StoreClosed);
        }
        let (done, answer) = oneshot::channel();
        let job = Job {
            sid: sid.clone(),
            batch: batch.clone(),
            done,
        };
        // A session always takes the same lane, so its writes commit in the order they came.
        let sender = {
            let lanes = self.lanes.lock();
            if lanes.is_empty() {
                return Err(Error::StoreClosed);
            }
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(&**sid, &mut h);
            lanes[std::hash::Hasher::finish(&h) as usize % lanes.len()].clone()
        };
        sender.send(job).map_err(|_| Error::StoreClosed)?;
        // queueing behind one group, then our own: two deadlines at most
        match tokio::time::timeout(self.timeout * 2, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::StoreClosed),
            Err(_) => Err(Error::Timeout {
                tier: Tier::Database,
                op: "write",
                millis: (self.timeout * 2).as_millis(),
            }),
        }
    }

    /// Transactions committed and writes they carried (writes / transactions = group size).
    pub fn group_stats(&self) -> (u64, u64) {
        (
            self.groups.transactions.load(Ordering::Relaxed),
            self.groups.writes.load(Ordering::Relaxed),
        )
    }

    /// Removes a session's keys, and its creds row too unless `keep_creds`.
    pub async fn delete_session(&self, sid: &SessionId, keep_creds: bool) -> Result<()> {
        self.call("delete session", async {
            on_dialect!(&self.pool, delete_session(sid, keep_creds))
        })
        .await
    }

    /// Records and value bytes per key type of one session, in type order.
    pub async fn summary(&self, sid: &SessionId) -> Result<Vec<TypeSummary>> {
        self.call("summary", async { on_dialect!(&self.pool, summary(sid)) })
            .await
    }

    /// Every id of one type in one session.
    pub async fn list_ids(&self, sid: &SessionId, kind: &str) -> Result<Vec<String>> {
        self.call("list ids", async {
            on_dialect!(&self.pool, list_ids(sid, kind))
        })
        .await
    }

    /// The highest migration applied.
    pub async fn schema_version(&self) -> Result<i64> {
        const SQL: &str = "SELECT COALESCE(MAX(version), 0) FROM wa_auth_migrations";
        self.call("schema version", async {
            match &self.pool {
                Pool::Postgres(p) => sqlx::query_scalar(SQL).fetch_one(p).await,
                Pool::MySql(p) => sqlx::query_scalar(SQL).fetch_one(p).await,
                Pool::Sqlite(p) => sqlx::query_scalar(SQL).fetch_one(p).await,
            }
        })
        .await
    }

    pub async fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        // the committers finish the writes already queued, then end
        self.lanes.lock().clear();
        let committers = std::mem::take(&mut *self.committers.lock());
        for task in committers {
            if tokio::time::timeout(self.timeout * 2, task).await.is_err() {
                log::warn!("a SQL group committer did not finish in time");
            }
        }
        let close = async {
            match &self.pool {
                Pool::Postgres(p) => p.close().await,
                Pool::MySql(p) => p.close().await,
                Pool::Sqlite(p) => p.close().await,
            }
        };
        let _ = tokio::time::timeout(self.timeout, close).await;
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
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
        other => Error::Database(scrub(other.to_string(), secrets)),
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

/// Turns `(id, bytes)` rows into stored values.
pub(crate) fn rows_to_values(rows: Vec<(String, Vec<u8>)>) -> Vec<(String, Value)> {
    rows.into_iter()
        .map(|(id, v)| (id, Value::from(v)))
        .collect()
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
    fn merging_keeps_the_last_change_of_each_record() {
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
        let m = Merged::of([(&a, &first), (&a, &second), (&b, &third)]);
        assert_eq!(m.creds, vec![("a", &b"c2"[..])]);
        assert_eq!(m.dels, vec![("a", "pre-key", "1")]);
        assert_eq!(
            m.puts,
            vec![
                ("a", "session", "s", &b"y"[..]),
                ("b", "pre-key", "1", &b"z"[..])
            ]
        );
    }
}
