//! SQLite: the embedded default. WAL journal, `synchronous = FULL` (a resolved write survives a
//! power cut), a busy timeout so writers queue instead of failing. `sqlite::memory:` lives in one
//! connection that never idles out, or its data would vanish.

use std::str::FromStr;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Sqlite;

use super::apply_migrations;
use super::keyed::keyed_statements;
use crate::config::SqlOptions;

const MIGRATIONS: &[(i64, &[&str])] = &[(
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
)];

keyed_statements!(
    Sqlite,
    SqlitePool,
    sqlx::SqliteConnection,
    "ON CONFLICT (session_id) DO UPDATE SET creds = excluded.creds, updated_at = excluded.updated_at",
    "ON CONFLICT (session_id, type, id) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    "SELECT CAST(type AS BLOB), COUNT(*), COALESCE(SUM(LENGTH(value)), 0)
     FROM wa_auth_keys WHERE session_id = ? GROUP BY type ORDER BY type"
);

fn is_memory(url: &str) -> bool {
    url == "sqlite::memory:" || url.contains("mode=memory")
}

pub(super) async fn connect(opts: &SqlOptions) -> Result<SqlitePool, sqlx::Error> {
    let memory = is_memory(&opts.url);
    let mut connect = SqliteConnectOptions::from_str(&opts.url)?
        .busy_timeout(opts.timeout)
        .foreign_keys(false);
    if !memory {
        connect = connect
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
    }
    let pool = SqlitePoolOptions::new().acquire_timeout(opts.timeout);
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
