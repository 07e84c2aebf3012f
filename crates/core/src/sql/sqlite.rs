//! SQLite: the embedded default. WAL journal, `synchronous = FULL` (a resolved write survives a
//! power cut), a busy timeout so writers queue instead of failing. `sqlite::memory:` lives in one
//! connection that never idles out, or its data would vanish.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Database, Sqlite};
use sqlx_core::transaction::TransactionManager;

use super::apply_migrations;
use super::keyed::keyed_statements;
use crate::config::SqlOptions;

const MIGRATIONS: &[(i64, &[&str])] = &[
    (
        1,
        &[
            "CREATE TABLE IF NOT EXISTS wa_auth_sessions (
            session_id TEXT NOT NULL PRIMARY KEY,
            creds BLOB,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL)",
            "CREATE TABLE IF NOT EXISTS wa_auth_keys (
            session_id TEXT NOT NULL,
            type TEXT NOT NULL,
            id TEXT NOT NULL,
            value BLOB NOT NULL,
            updated_at INTEGER NOT NULL,
            PRIMARY KEY (session_id, type, id)) WITHOUT ROWID",
        ],
    ),
    (
        2,
        &[
            "ALTER TABLE wa_auth_sessions ADD COLUMN version INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE wa_auth_sessions ADD COLUMN creds_version INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE wa_auth_sessions ADD COLUMN cleared_version INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE wa_auth_sessions ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0",
            // SQLite cannot drop NOT NULL in place: rebuild the table (tombstones have no value)
            "CREATE TABLE wa_auth_keys_v2 (
            session_id TEXT NOT NULL,
            type TEXT NOT NULL,
            id TEXT NOT NULL,
            value BLOB,
            version INTEGER NOT NULL DEFAULT 0,
            updated_at INTEGER NOT NULL,
            PRIMARY KEY (session_id, type, id)) WITHOUT ROWID",
            "INSERT INTO wa_auth_keys_v2 (session_id, type, id, value, version, updated_at)
            SELECT session_id, type, id, value, 0, updated_at FROM wa_auth_keys",
            "DROP TABLE wa_auth_keys",
            "ALTER TABLE wa_auth_keys_v2 RENAME TO wa_auth_keys",
            "CREATE TABLE IF NOT EXISTS wa_auth_leases (
            session_id TEXT NOT NULL PRIMARY KEY,
            holder TEXT NOT NULL,
            epoch INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            acquired_at INTEGER NOT NULL)",
        ],
    ),
    (
        3,
        &["ALTER TABLE wa_auth_leases ADD COLUMN token TEXT NOT NULL DEFAULT ''"],
    ),
    (
        4,
        &[
            "ALTER TABLE wa_auth_sessions ADD COLUMN epoch_seq INTEGER NOT NULL DEFAULT 0",
            "CREATE TABLE IF NOT EXISTS wa_auth_settings (name TEXT NOT NULL PRIMARY KEY, value INTEGER NOT NULL)",
        ],
    ),
    (
        5,
        &["ALTER TABLE wa_auth_sessions ADD COLUMN sealed INTEGER NOT NULL DEFAULT 0"],
    ),
];

keyed_statements!(
    Sqlite,
    SqlitePool,
    sqlx::SqliteConnection,
    "ON CONFLICT (session_id) DO UPDATE SET
       creds = CASE WHEN excluded.creds_version > creds_version THEN excluded.creds ELSE creds END,
       creds_version = MAX(creds_version, excluded.creds_version),
       version = MAX(version, excluded.version),
       cleared_version = MAX(cleared_version, excluded.cleared_version),
       updated_at = excluded.updated_at",
    "ON CONFLICT (session_id, type, id) DO UPDATE SET
       value = excluded.value, version = excluded.version, updated_at = excluded.updated_at
     WHERE wa_auth_keys.version < excluded.version",
    "SELECT CAST(k.type AS BLOB), COUNT(*), COALESCE(SUM(LENGTH(k.value)), 0) FROM wa_auth_keys k",
    "BEGIN IMMEDIATE",
    "",
    "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
    "INSERT OR IGNORE INTO",
    "ON CONFLICT (session_id) DO UPDATE SET token = excluded.token, holder = excluded.holder,
       epoch = excluded.epoch, expires_at = excluded.expires_at, acquired_at = excluded.acquired_at",
    "MAX",
    "ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)"
);

fn is_memory(url: &str) -> bool {
    url == "sqlite::memory:" || url.contains("mode=memory")
}

pub(super) async fn connect(opts: &SqlOptions) -> Result<SqlitePool, sqlx::Error> {
    let memory = is_memory(&opts.url);
    let path = opts
        .url
        .trim_start_matches("sqlite:")
        .trim_start_matches("//");
    if !memory && path.split('?').next().unwrap_or_default().is_empty() {
        return Err(sqlx::Error::Configuration(
            "sqlite:// needs a file path (sqlite://path/to/file.db) or sqlite::memory:".into(),
        ));
    }
    let mut connect = SqliteConnectOptions::from_str(&opts.url)?
        .busy_timeout(opts.timeout)
        .foreign_keys(false);
    if opts.read_only {
        connect = connect.read_only(true);
    } else if !memory {
        connect = connect
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
    }
    let pool = SqlitePoolOptions::new().acquire_timeout(opts.timeout);
    // A file connection handed back while sqlx still counts a
    // transaction on it is closed, not reused. On SQLITE_FULL (and some SQLITE_IOERR) SQLite rolls
    // the transaction back by itself, the ROLLBACK sqlx sends when the failed transaction is
    // dropped then fails ("no transaction is active"), and sqlx-sqlite leaves its depth at 1: every
    // later BEGIN IMMEDIATE on that connection fails with "attempted to call begin_with at
    // non-zero transaction depth", and its ping (the pool's only check) still succeeds. A dropped
    // transaction whose rollback is still queued counts 1 here too: that connection is closed as
    // well (one reconnect after a failure). Never for `sqlite::memory:`: closing its one
    // connection would drop the database.
    let pool = if memory {
        pool
    } else {
        pool.after_release(|conn, _| {
            let depth = <Sqlite as Database>::TransactionManager::get_transaction_depth(conn);
            Box::pin(async move { Ok(depth == 0) })
        })
    };
    let pool = if memory {
        pool.max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        pool.max_connections(opts.max_connections.min(4))
    };
    pool.connect_with(connect).await
}

/// The database file a `sqlite://` URL names, made absolute (None for an in-memory database).
pub(super) fn file_of(url: &str) -> Option<PathBuf> {
    if is_memory(url) {
        return None;
    }
    let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let path = path.split('?').next().filter(|p| !p.is_empty())?;
    std::fs::canonicalize(path).ok()
}

/// Which file a path names: (device, inode).
#[cfg(unix)]
pub(super) fn identity(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// Elsewhere only whether the path still names a file.
#[cfg(not(unix))]
pub(super) fn identity(path: &Path) -> std::io::Result<(u64, u64)> {
    std::fs::metadata(path).map(|_| (0, 0))
}

/// `BEGIN IMMEDIATE` takes the write lock up front, so two processes cannot interleave.
pub(super) async fn migrate(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS wa_auth_migrations (version INTEGER NOT NULL PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    apply_migrations!(
        tx,
        MIGRATIONS,
        "SELECT COALESCE(MAX(version), 0) FROM wa_auth_migrations",
        "INSERT INTO wa_auth_migrations (version, applied_at) VALUES (?, ?)"
    );
    tx.commit().await
}
