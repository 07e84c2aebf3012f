//! The SQL tier: typed sqlx pools, one module per dialect, one transaction per write.
//!
//! Schema (versioned, applied on connect): `wa_auth_sessions(session_id PK, creds, created_at,
//! updated_at)` and `wa_auth_keys(session_id, type, id, value, updated_at, PK(session_id, type, id))`,
//! values as bytes, times as epoch milliseconds. `wa_auth_migrations(version)` records what ran.

mod keyed;
mod mysql;
mod postgres;
mod sqlite;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{url_secrets, SqlOptions};
use crate::error::{scrub, with_timeout, Error, Result, Tier};
use crate::model::{KeyWrite, SessionId, Value, WriteBatch};

/// Highest schema version this build knows.
pub const SCHEMA_VERSION: i64 = 1;
/// Rows per multi-row statement (keeps every dialect under its bind-parameter limit).
const ROWS_PER_STATEMENT: usize = 500;
/// Value bytes per multi-row statement (keeps MySQL under `max_allowed_packet`).
const BYTES_PER_STATEMENT: usize = 4 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    MySql,
    Sqlite,
}

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

/// Splits the puts of a batch into statement-sized groups.
pub(crate) fn put_chunks<'a>(puts: &[&'a KeyWrite]) -> Vec<Vec<&'a KeyWrite>> {
    let mut out = Vec::new();
    let mut cur: Vec<&KeyWrite> = Vec::new();
    let mut bytes = 0;
    for k in puts {
        let size = k.value.as_ref().map_or(0, |v| v.len()) + k.id.len() + k.kind.len();
        if !cur.is_empty()
            && (cur.len() >= ROWS_PER_STATEMENT || bytes + size > BYTES_PER_STATEMENT)
        {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += size;
        cur.push(k);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
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
        let store = SqlStore {
            pool,
            timeout: opts.timeout,
            secrets,
            closed: AtomicBool::new(false),
        };
        // Migrations may wait for another process's lock: give them a longer deadline.
        let deadline = opts.timeout.max(Duration::from_secs(30));
        with_timeout(Tier::Database, "migrate", deadline, async {
            match &store.pool {
                Pool::Postgres(p) => postgres::migrate(p).await,
                Pool::MySql(p) => mysql::migrate(p).await,
                Pool::Sqlite(p) => sqlite::migrate(p).await,
            }
            .map_err(|e| store.err(e))
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
            match &self.pool {
                Pool::Postgres(p) => postgres::get_creds(p, sid).await,
                Pool::MySql(p) => mysql::get_creds(p, sid).await,
                Pool::Sqlite(p) => sqlite::get_creds(p, sid).await,
            }
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
            match &self.pool {
                Pool::Postgres(p) => postgres::get_keys(p, sid, kind, ids).await,
                Pool::MySql(p) => mysql::get_keys(p, sid, kind, ids).await,
                Pool::Sqlite(p) => sqlite::get_keys(p, sid, kind, ids).await,
            }
        })
        .await
    }

    /// Applies a whole batch in one transaction.
    pub async fn write(&self, sid: &SessionId, batch: &WriteBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        self.call("write", async {
            match &self.pool {
                Pool::Postgres(p) => postgres::write(p, sid, batch, now).await,
                Pool::MySql(p) => mysql::write(p, sid, batch, now).await,
                Pool::Sqlite(p) => sqlite::write(p, sid, batch, now).await,
            }
        })
        .await
    }

    /// Removes a session's keys, and its creds row too unless `keep_creds`.
    pub async fn delete_session(&self, sid: &SessionId, keep_creds: bool) -> Result<()> {
        self.call("delete session", async {
            match &self.pool {
                Pool::Postgres(p) => postgres::delete_session(p, sid, keep_creds).await,
                Pool::MySql(p) => mysql::delete_session(p, sid, keep_creds).await,
                Pool::Sqlite(p) => sqlite::delete_session(p, sid, keep_creds).await,
            }
        })
        .await
    }

    /// Records and value bytes per key type of one session, in type order.
    pub async fn summary(&self, sid: &SessionId) -> Result<Vec<TypeSummary>> {
        self.call("summary", async {
            match &self.pool {
                Pool::Postgres(p) => postgres::summary(p, sid).await,
                Pool::MySql(p) => mysql::summary(p, sid).await,
                Pool::Sqlite(p) => sqlite::summary(p, sid).await,
            }
        })
        .await
    }

    /// Every id of one type in one session.
    pub async fn list_ids(&self, sid: &SessionId, kind: &str) -> Result<Vec<String>> {
        self.call("list ids", async {
            match &self.pool {
                Pool::Postgres(p) => postgres::list_ids(p, sid, kind).await,
                Pool::MySql(p) => mysql::list_ids(p, sid, kind).await,
                Pool::Sqlite(p) => sqlite::list_ids(p, sid, kind).await,
            }
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
        let small: Vec<KeyWrite> = (0..1200)
            .map(|i| KeyWrite::put("pre-key", i.to_string(), vec![1; 10]))
            .collect();
        let refs: Vec<&KeyWrite> = small.iter().collect();
        let c = put_chunks(&refs);
        assert_eq!(
            c.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![500, 500, 200]
        );
        let big: Vec<KeyWrite> = (0..5)
            .map(|i| KeyWrite::put("x", i.to_string(), vec![1; 3 * 1024 * 1024]))
            .collect();
        let refs: Vec<&KeyWrite> = big.iter().collect();
        assert_eq!(put_chunks(&refs).len(), 5);
    }
}
