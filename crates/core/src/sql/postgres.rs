//! PostgreSQL: UNNEST arrays make every write one statement per kind of change.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use super::{apply_migrations, chunks_within, rows_to_values, Merged};
use crate::config::SqlOptions;
use crate::model::{SessionId, Value};

/// Bytes of values per statement (a bound on one message's size; TCP_NODELAY, set in
/// `nodelay.rs`, keeps large messages from waiting on delayed ACKs: measured on loopback, 812
/// pre-keys in one statement took 55 ms without it, 12 KiB statements 10 ms).
const STATEMENT_BYTES: usize = 256 * 1024;

/// Arbitrary constant naming this schema's advisory lock.
const MIGRATION_LOCK: i64 = 0x7761_5f61_7574_6801;

const MIGRATIONS: &[(i64, &[&str])] = &[(
    1,
    &[
        "CREATE TABLE IF NOT EXISTS wa_auth_sessions (
            session_id TEXT PRIMARY KEY,
            creds BYTEA,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS wa_auth_keys (
            session_id TEXT NOT NULL,
            type TEXT NOT NULL,
            id TEXT NOT NULL,
            value BYTEA NOT NULL,
            updated_at BIGINT NOT NULL,
            PRIMARY KEY (session_id, type, id))",
    ],
)];

pub(super) async fn connect(opts: &SqlOptions) -> Result<PgPool, sqlx::Error> {
    let connect = PgConnectOptions::from_str(&opts.url)?;
    let port = super::nodelay::url_port(&opts.url, 5432);
    PgPoolOptions::new()
        .max_connections(opts.max_connections)
        .acquire_timeout(opts.timeout)
        .after_connect(move |_, _| {
            Box::pin(async move {
                super::nodelay::enable_towards(port);
                Ok(())
            })
        })
        .connect_with(connect)
        .await
}

pub(super) async fn migrate(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS wa_auth_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    apply_migrations!(
        tx,
        MIGRATIONS,
        "SELECT COALESCE(MAX(version), 0) FROM wa_auth_migrations",
        "INSERT INTO wa_auth_migrations (version, applied_at) VALUES ($1, $2)"
    );
    tx.commit().await
}

pub(super) async fn get_creds(
    pool: &PgPool,
    sid: &SessionId,
) -> Result<Option<Value>, sqlx::Error> {
    let row: Option<(Option<Vec<u8>>,)> =
        sqlx::query_as("SELECT creds FROM wa_auth_sessions WHERE session_id = $1")
            .bind(&**sid)
            .fetch_optional(pool)
            .await?;
    Ok(row.and_then(|(c,)| c).map(Value::from))
}

pub(super) async fn get_keys(
    pool: &PgPool,
    sid: &SessionId,
    kind: &str,
    ids: &[String],
) -> Result<Vec<(String, Value)>, sqlx::Error> {
    let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT id, value FROM wa_auth_keys WHERE session_id = $1 AND type = $2 AND id = ANY($3)",
    )
    .bind(&**sid)
    .bind(kind)
    .bind(ids)
    .fetch_all(pool)
    .await?;
    Ok(rows_to_values(rows))
}

/// Applies merged batches atomically: one transaction, or a lone statement (atomic by itself,
/// one round trip instead of three) when the batches fit in one.
pub(super) async fn write(pool: &PgPool, m: &Merged<'_>, now: i64) -> Result<(), sqlx::Error> {
    let put_size =
        |(s, t, i, v): &(&str, &str, &str, &[u8])| s.len() + t.len() + i.len() + v.len() + 16;
    let statements = chunks_within(
        &m.creds,
        |(s, c)| s.len() + c.len() + 16,
        usize::MAX,
        STATEMENT_BYTES,
    )
    .len()
        + chunks_within(&m.puts, put_size, usize::MAX, STATEMENT_BYTES).len()
        + usize::from(!m.dels.is_empty());
    if statements == 1 {
        let mut conn = pool.acquire().await?;
        return apply(&mut conn, m, now).await;
    }
    let mut tx = pool.begin().await?;
    apply(&mut tx, m, now).await?;
    tx.commit().await
}

async fn apply(conn: &mut PgConnection, m: &Merged<'_>, now: i64) -> Result<(), sqlx::Error> {
    for chunk in chunks_within(
        &m.creds,
        |(s, c)| s.len() + c.len() + 16,
        usize::MAX,
        STATEMENT_BYTES,
    ) {
        let (sids, creds): (Vec<&str>, Vec<&[u8]>) = chunk.iter().copied().unzip();
        sqlx::query(
            "INSERT INTO wa_auth_sessions (session_id, creds, created_at, updated_at)
             SELECT t.s, t.c, $3, $3 FROM UNNEST($1::text[], $2::bytea[]) AS t(s, c)
             ON CONFLICT (session_id) DO UPDATE SET creds = EXCLUDED.creds, updated_at = EXCLUDED.updated_at",
        )
        .bind(&sids)
        .bind(&creds)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    let size =
        |(s, t, i, v): &(&str, &str, &str, &[u8])| s.len() + t.len() + i.len() + v.len() + 16;
    for chunk in chunks_within(&m.puts, size, usize::MAX, STATEMENT_BYTES) {
        let (mut sids, mut types, mut ids, mut values) = (vec![], vec![], vec![], vec![]);
        for &(s, t, i, v) in chunk {
            sids.push(s);
            types.push(t);
            ids.push(i);
            values.push(v);
        }
        sqlx::query(
            "INSERT INTO wa_auth_keys (session_id, type, id, value, updated_at)
             SELECT t.s, t.type, t.id, t.value, $5
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bytea[]) AS t(s, type, id, value)
             ON CONFLICT (session_id, type, id) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at",
        )
        .bind(&sids)
        .bind(&types)
        .bind(&ids)
        .bind(&values)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    if !m.dels.is_empty() {
        let (mut sids, mut types, mut ids) = (vec![], vec![], vec![]);
        for &(s, t, i) in &m.dels {
            sids.push(s);
            types.push(t);
            ids.push(i);
        }
        sqlx::query(
            "DELETE FROM wa_auth_keys WHERE (session_id, type, id) IN
             (SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[]))",
        )
        .bind(&sids)
        .bind(&types)
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

pub(super) async fn delete_session(
    pool: &PgPool,
    sid: &SessionId,
    keep_creds: bool,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM wa_auth_keys WHERE session_id = $1")
        .bind(&**sid)
        .execute(&mut *tx)
        .await?;
    if !keep_creds {
        sqlx::query("DELETE FROM wa_auth_sessions WHERE session_id = $1")
            .bind(&**sid)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

pub(super) async fn summary(
    pool: &PgPool,
    sid: &SessionId,
) -> Result<Vec<super::TypeSummary>, sqlx::Error> {
    let rows: Vec<(Vec<u8>, i64, i64)> = sqlx::query_as(
        "SELECT convert_to(type, 'UTF8'), COUNT(*)::BIGINT, COALESCE(SUM(octet_length(value)), 0)::BIGINT
         FROM wa_auth_keys WHERE session_id = $1 GROUP BY type ORDER BY type",
    )
    .bind(&**sid)
    .fetch_all(pool)
    .await?;
    super::summaries(rows)
}

pub(super) async fn list_ids(
    pool: &PgPool,
    sid: &SessionId,
    kind: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM wa_auth_keys WHERE session_id = $1 AND type = $2 ORDER BY id",
    )
    .bind(&**sid)
    .bind(kind)
    .fetch_all(pool)
    .await
}
