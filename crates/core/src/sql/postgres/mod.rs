//! PostgreSQL: UNNEST arrays make every write one statement per kind of change.

mod epochs;

pub(super) use epochs::{
    allocate_epoch, lease_info, lease_release, lease_renew, lease_take, purge, raise_epoch,
    session_epoch,
};

use std::str::FromStr;

use std::sync::LazyLock;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};

use super::{
    apply_migrations, chunks_within, creds_row, versioned_rows, KeyRow, Merged, SessionRow,
    VersionedRow,
};
use crate::config::SqlOptions;
use crate::model::{SessionId, Value};

/// Bytes of values per statement (a bound on one message's size; TCP_NODELAY, set in
/// `nodelay.rs`, keeps large messages from waiting on delayed ACKs: measured on loopback, 812
/// pre-keys in one statement took 55 ms without it, 12 KiB statements 10 ms).
const STATEMENT_BYTES: usize = 256 * 1024;

/// Arbitrary constant naming this schema's advisory lock.
const MIGRATION_LOCK: i64 = 0x7761_5f61_7574_6801;

const MIGRATIONS: &[(i64, &[&str])] = &[
    (
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
    ),
    (
        2,
        &[
            "ALTER TABLE wa_auth_sessions
            ADD COLUMN IF NOT EXISTS version BIGINT NOT NULL DEFAULT 0,
            ADD COLUMN IF NOT EXISTS creds_version BIGINT NOT NULL DEFAULT 0,
            ADD COLUMN IF NOT EXISTS cleared_version BIGINT NOT NULL DEFAULT 0,
            ADD COLUMN IF NOT EXISTS epoch BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE wa_auth_keys
            ADD COLUMN IF NOT EXISTS version BIGINT NOT NULL DEFAULT 0,
            ALTER COLUMN value DROP NOT NULL",
            "CREATE TABLE IF NOT EXISTS wa_auth_leases (
            session_id TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            epoch BIGINT NOT NULL,
            expires_at BIGINT NOT NULL,
            acquired_at BIGINT NOT NULL)",
        ],
    ),
    (
        3,
        &["ALTER TABLE wa_auth_leases ADD COLUMN IF NOT EXISTS token TEXT NOT NULL DEFAULT ''"],
    ),
    (
        4,
        &[
            "ALTER TABLE wa_auth_sessions ADD COLUMN IF NOT EXISTS epoch_seq BIGINT NOT NULL DEFAULT 0",
            "CREATE TABLE IF NOT EXISTS wa_auth_settings (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
        ],
    ),
    (
        5,
        &["ALTER TABLE wa_auth_sessions ADD COLUMN IF NOT EXISTS sealed BIGINT NOT NULL DEFAULT 0"],
    ),
];

pub(super) async fn connect(opts: &SqlOptions) -> Result<PgPool, sqlx::Error> {
    let connect = PgConnectOptions::from_str(&opts.url)?;
    let port = connect.get_port();
    super::nodelay::register(port);
    PgPoolOptions::new()
        .max_connections(opts.max_connections)
        .acquire_timeout(opts.timeout)
        .after_connect(move |conn, _| Box::pin(prepare(conn, port)))
        .connect_with(connect)
        .await
}

/// What every new connection gets before its first statement (the pool's and the commit
/// lanes' alike).
async fn prepare(conn: &mut PgConnection, port: u16) -> Result<(), sqlx::Error> {
    if !super::nodelay::set_before_connect() {
        super::nodelay::enable_towards(port);
    }
    // sqlx prepares each statement once per connection, and PostgreSQL then plans it at every
    // execution while its custom plans look cheaper than a generic one: the commit statement
    // (COMBINED: an UPDATE, an INSERT and the key upsert over arrays) took ~250 µs to plan on
    // each bind, more than it takes to run. Every statement here is keyed by the session, so
    // one generic plan per connection serves them all. (PostgreSQL before 12 has no such
    // setting, 42704: it keeps planning.)
    // In the simple protocol: one round trip (a prepared statement takes three).
    match sqlx::raw_sql("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await
    {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42704") => Ok(()),
        r => r.map(|_| ()),
    }
}

/// A connection of the pool's settings outside the pool (a commit lane's own).
pub(super) async fn connect_one(pool: &PgPool) -> Result<PgConnection, sqlx::Error> {
    let options = pool.connect_options();
    let mut conn = options.connect().await?;
    prepare(&mut conn, options.get_port()).await?;
    Ok(conn)
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

/// The session upsert: versions only rise, creds only over older creds.
const UPSERT_SESSIONS: &str = "INSERT INTO wa_auth_sessions
       (session_id, creds, creds_version, version, cleared_version, created_at, updated_at)
     SELECT t.s, t.c, t.cv, t.v, t.cl, $6, $6
     FROM UNNEST($1::text[], $2::bytea[], $3::bigint[], $4::bigint[], $5::bigint[]) AS t(s, c, cv, v, cl)
     ON CONFLICT (session_id) DO UPDATE SET
       creds = CASE WHEN EXCLUDED.creds_version > wa_auth_sessions.creds_version
                    THEN EXCLUDED.creds ELSE wa_auth_sessions.creds END,
       creds_version = GREATEST(wa_auth_sessions.creds_version, EXCLUDED.creds_version),
       version = GREATEST(wa_auth_sessions.version, EXCLUDED.version),
       cleared_version = GREATEST(wa_auth_sessions.cleared_version, EXCLUDED.cleared_version),
       updated_at = EXCLUDED.updated_at";

/// The key upsert: a row (or tombstone) only replaces an older version.
const UPSERT_KEYS: &str = "INSERT INTO wa_auth_keys (session_id, type, id, value, version, updated_at)
     SELECT t.s, t.type, t.id, t.value, t.v, $6
     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bigint[]) AS t(s, type, id, value, v)
     ON CONFLICT (session_id, type, id) DO UPDATE SET
       value = EXCLUDED.value, version = EXCLUDED.version, updated_at = EXCLUDED.updated_at
     WHERE wa_auth_keys.version < EXCLUDED.version";

/// A commit in one statement (CTEs): the session rows of fenced writes ($13 ids, $14 the
/// writers' epochs) are updated, never inserted, and only while their stored epoch is not above
/// the writer's (a writer's row exists from the moment it took its epoch: a missing one was
/// purged since, and the write is fenced too); the session rows of unfenced writes (flushes) are
/// upserted; the keys are written for the sessions either step wrote; the fenced sessions are
/// returned. An UPDATE locks the row and judges its WHERE on the row's latest committed version,
/// so an epoch taken concurrently is seen. The key upsert's parameters follow the sessions'.
static COMBINED: LazyLock<String> = LazyLock::new(|| {
    let keys = (1..=6).fold(UPSERT_KEYS.to_string(), |sql, n| {
        sql.replace(&format!("${n}"), &format!("${}", n + 6))
    });
    let keys = keys.replacen(
        "ON CONFLICT",
        "WHERE t.s IN (SELECT session_id FROM u UNION ALL SELECT session_id FROM i) ON CONFLICT",
        1,
    );
    let inserts = UPSERT_SESSIONS.replacen(
        "AS t(s, c, cv, v, cl)",
        "AS t(s, c, cv, v, cl) WHERE t.s NOT IN (SELECT fe.s FROM fe)",
        1,
    );
    format!(
        "WITH fe AS (SELECT * FROM UNNEST($13::text[], $14::bigint[]) AS fe(s, ep)),
              u AS (UPDATE wa_auth_sessions w SET
                      creds = CASE WHEN t.cv > w.creds_version THEN t.c ELSE w.creds END,
                      creds_version = GREATEST(w.creds_version, t.cv),
                      version = GREATEST(w.version, t.v),
                      cleared_version = GREATEST(w.cleared_version, t.cl),
                      updated_at = $6
                    FROM UNNEST($1::text[], $2::bytea[], $3::bigint[], $4::bigint[], $5::bigint[]) AS t(s, c, cv, v, cl)
                    JOIN fe ON fe.s = t.s
                    WHERE w.session_id = t.s AND w.epoch <= fe.ep
                    RETURNING w.session_id),
              i AS ({inserts} RETURNING session_id),
              k AS ({keys} RETURNING 1)
         SELECT fe.s FROM fe WHERE fe.s NOT IN (SELECT session_id FROM u)"
    )
});

/// [`COMBINED`] for the commonest group, one session under a lease (a sequential writer: a
/// `saveCreds`, a message's session record): the session's columns as scalars ($1-$7, $7 the
/// writer's epoch), its keys as arrays ($8-$11), and no insert step (a fenced writer's row
/// exists). Same rules, a plan about half the size: measured with pgbench on this machine, ~180
/// µs against COMBINED's ~215 µs for a 2 KB creds write. Answers whether the write was fenced.
const SINGLE_FENCED: &str = "WITH u AS (UPDATE wa_auth_sessions w SET
           creds = CASE WHEN $3::bigint > w.creds_version THEN $2::bytea ELSE w.creds END,
           creds_version = GREATEST(w.creds_version, $3::bigint),
           version = GREATEST(w.version, $4::bigint),
           cleared_version = GREATEST(w.cleared_version, $5::bigint),
           updated_at = $6::bigint
         WHERE w.session_id = $1::text AND w.epoch <= $7::bigint
         RETURNING 1),
       k AS (INSERT INTO wa_auth_keys (session_id, type, id, value, version, updated_at)
         SELECT $1::text, t.type, t.id, t.value, t.v, $6::bigint
         FROM UNNEST($8::text[], $9::text[], $10::bytea[], $11::bigint[]) AS t(type, id, value, v)
         WHERE EXISTS (SELECT 1 FROM u)
         ON CONFLICT (session_id, type, id) DO UPDATE SET
           value = EXCLUDED.value, version = EXCLUDED.version, updated_at = EXCLUDED.updated_at
         WHERE wa_auth_keys.version < EXCLUDED.version
         RETURNING 1)
  SELECT NOT EXISTS (SELECT 1 FROM u)";

/// Locks the session rows of fenced writes and returns their stored epochs.
const LOCK_EPOCHS: &str = "SELECT ws.session_id, ws.epoch FROM wa_auth_sessions ws
     WHERE ws.session_id = ANY($1) FOR UPDATE";

/// Live rows only: not a tombstone, not below the session's cleared watermark.
const LIVE: &str = "k.value IS NOT NULL AND k.version >= COALESCE(
       (SELECT s.cleared_version FROM wa_auth_sessions s WHERE s.session_id = k.session_id), 0)";

pub(super) async fn get_creds(
    pool: &PgPool,
    sid: &SessionId,
) -> Result<Option<(u64, Value)>, sqlx::Error> {
    let row: Option<(Option<Vec<u8>>, i64)> =
        sqlx::query_as("SELECT creds, creds_version FROM wa_auth_sessions WHERE session_id = $1")
            .bind(&**sid)
            .fetch_optional(pool)
            .await?;
    Ok(creds_row(row))
}

pub(super) async fn session_version(pool: &PgPool, sid: &SessionId) -> Result<u64, sqlx::Error> {
    let v: Option<i64> =
        sqlx::query_scalar("SELECT version FROM wa_auth_sessions WHERE session_id = $1")
            .bind(&**sid)
            .fetch_optional(pool)
            .await?;
    Ok(v.unwrap_or(0).max(0) as u64)
}

pub(super) async fn get_keys(
    pool: &PgPool,
    sid: &SessionId,
    kind: &str,
    ids: &[String],
) -> Result<Vec<VersionedRow>, sqlx::Error> {
    let rows: Vec<(String, i64, Vec<u8>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT k.id, k.version, k.value FROM wa_auth_keys k
         WHERE k.session_id = $1 AND k.type = $2 AND k.id = ANY($3) AND {LIVE}"
    )))
    .bind(&**sid)
    .bind(kind)
    .bind(ids)
    .fetch_all(pool)
    .await?;
    Ok(versioned_rows(rows))
}

type SessionColumns<'a> = (
    Vec<&'a str>,
    Vec<Option<&'a [u8]>>,
    Vec<i64>,
    Vec<i64>,
    Vec<i64>,
);

fn session_columns<'a>(rows: &[SessionRow<'a>]) -> SessionColumns<'a> {
    let mut c: SessionColumns<'a> = Default::default();
    for r in rows {
        c.0.push(r.sid);
        c.1.push(r.creds);
        c.2.push(r.creds_version);
        c.3.push(r.version);
        c.4.push(r.cleared);
    }
    c
}

/// The session upsert with its columns bound.
fn upsert_sessions<'q>(
    s: &'q SessionColumns<'q>,
    now: i64,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(UPSERT_SESSIONS)
        .bind(&s.0)
        .bind(&s.1)
        .bind(&s.2)
        .bind(&s.3)
        .bind(&s.4)
        .bind(now)
}

type KeyColumns<'a> = (
    Vec<&'a str>,
    Vec<&'a str>,
    Vec<&'a str>,
    Vec<Option<&'a [u8]>>,
    Vec<i64>,
);

fn key_columns<'a>(rows: &[KeyRow<'a>]) -> KeyColumns<'a> {
    let mut c: KeyColumns<'a> = Default::default();
    for r in rows {
        c.0.push(r.sid);
        c.1.push(r.kind);
        c.2.push(r.id);
        c.3.push(r.value);
        c.4.push(r.version);
    }
    c
}

fn fence_columns<'a>(m: &Merged<'a>) -> (Vec<&'a str>, Vec<i64>) {
    m.fences.iter().copied().unzip()
}

/// Applies merged writes atomically: one statement (fence, session and key upserts as CTEs,
/// atomic by itself, one round trip) when the keys fit in one, else one transaction. Returns the
/// fenced sessions.
pub(super) async fn write(
    pool: &PgPool,
    m: &Merged<'_>,
    now: i64,
) -> Result<Vec<String>, sqlx::Error> {
    write_on(&mut *pool.acquire().await?, m, now).await
}

/// [`write`] on a connection of the caller's.
pub(super) async fn write_on(
    conn: &mut PgConnection,
    m: &Merged<'_>,
    now: i64,
) -> Result<Vec<String>, sqlx::Error> {
    let chunks = chunks_within(&m.keys, KeyRow::size, usize::MAX, STATEMENT_BYTES);
    if chunks.len() <= 1 {
        if let ([row], [(fenced_sid, epoch)]) = (m.sessions.as_slice(), m.fences.as_slice()) {
            if row.sid == *fenced_sid {
                let k = key_columns(chunks.first().copied().unwrap_or(&[]));
                let fenced: bool = sqlx::query_scalar(SINGLE_FENCED)
                    .bind(row.sid)
                    .bind(row.creds)
                    .bind(row.creds_version)
                    .bind(row.version)
                    .bind(row.cleared)
                    .bind(now)
                    .bind(*epoch)
                    .bind(&k.1)
                    .bind(&k.2)
                    .bind(&k.3)
                    .bind(&k.4)
                    .fetch_one(&mut *conn)
                    .await?;
                return Ok(if fenced {
                    vec![row.sid.to_string()]
                } else {
                    Vec::new()
                });
            }
        }
        let s = session_columns(&m.sessions);
        let k = key_columns(chunks.first().copied().unwrap_or(&[]));
        let f = fence_columns(m);
        let fenced: Vec<String> = sqlx::query_scalar(COMBINED.as_str())
            .bind(&s.0)
            .bind(&s.1)
            .bind(&s.2)
            .bind(&s.3)
            .bind(&s.4)
            .bind(now)
            .bind(&k.0)
            .bind(&k.1)
            .bind(&k.2)
            .bind(&k.3)
            .bind(&k.4)
            .bind(now)
            .bind(&f.0)
            .bind(&f.1)
            .fetch_all(&mut *conn)
            .await?;
        return Ok(fenced);
    }
    let mut tx = conn.begin().await?;
    let mut fenced = Vec::new();
    if !m.fences.is_empty() {
        let ids: Vec<&str> = m.fences.iter().map(|f| f.0).collect();
        let epochs: Vec<(String, i64)> = sqlx::query_as(LOCK_EPOCHS)
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
        fenced = m.fenced(&epochs);
    }
    let rest = m.without(&fenced);
    let s = session_columns(&rest.sessions);
    upsert_sessions(&s, now).execute(&mut *tx).await?;
    for chunk in chunks_within(&rest.keys, KeyRow::size, usize::MAX, STATEMENT_BYTES) {
        let k = key_columns(chunk);
        sqlx::query(UPSERT_KEYS)
            .bind(&k.0)
            .bind(&k.1)
            .bind(&k.2)
            .bind(&k.3)
            .bind(&k.4)
            .bind(now)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(fenced)
}

/// Raises the session's cleared watermark (and drops its creds unless kept), then deletes the
/// rows below it, in one transaction; nothing (false) when the session's lease epoch is above
/// `fence`. The session row is locked first, so a concurrent commit of older rows either lands
/// before (and is deleted) or is hidden by the watermark.
pub(super) async fn clear(
    pool: &PgPool,
    row: &SessionRow<'_>,
    now: i64,
    fence: Option<i64>,
) -> Result<bool, sqlx::Error> {
    let s = session_columns(std::slice::from_ref(row));
    let mut tx = pool.begin().await?;
    if let Some(epoch) = fence {
        let stored: Option<i64> = sqlx::query_scalar(
            "SELECT epoch FROM wa_auth_sessions WHERE session_id = $1 FOR UPDATE",
        )
        .bind(row.sid)
        .fetch_optional(&mut *tx)
        .await?;
        if super::rules::is_fenced(stored, epoch) {
            tx.rollback().await?;
            return Ok(false);
        }
    }
    upsert_sessions(&s, now).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM wa_auth_keys WHERE session_id = $1 AND version < $2")
        .bind(row.sid)
        .bind(row.cleared)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

/// The database's clock, in milliseconds (leases expire by it, not by the callers' clocks).
const NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

pub(super) async fn summary(
    pool: &PgPool,
    sid: &SessionId,
) -> Result<Vec<super::TypeSummary>, sqlx::Error> {
    let rows: Vec<(Vec<u8>, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT convert_to(k.type, 'UTF8'), COUNT(*)::BIGINT, COALESCE(SUM(octet_length(k.value)), 0)::BIGINT
         FROM wa_auth_keys k WHERE k.session_id = $1 AND {LIVE} GROUP BY k.type ORDER BY k.type"
    )))
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
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT k.id FROM wa_auth_keys k WHERE k.session_id = $1 AND k.type = $2 AND {LIVE} ORDER BY k.id"
    )))
    .bind(&**sid)
    .bind(kind)
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::Merged;

    /// The test server's pool, with the store's schema (`None`: no server, outside CI).
    async fn test_pool() -> Option<super::PgPool> {
        let defaults = [
            "postgres://postgres@127.0.0.1:5432/test",
            "postgres://root@127.0.0.1:5432/test",
        ];
        super::super::test_servers::first("POSTGRES_URL", &defaults, |o| async move {
            let pool = super::connect(&o).await?;
            super::migrate(&pool).await?;
            Ok::<_, sqlx::Error>(pool)
        })
        .await
    }

    /// Every connection the store makes (the pool's and a commit lane's) plans a statement
    /// once (a generic plan), not at every execution.
    #[tokio::test]
    async fn every_connection_plans_a_statement_once() {
        let Some(pool) = test_pool().await else {
            return;
        };
        let mode = "SELECT current_setting('plan_cache_mode')";
        let pooled: String = sqlx::query_scalar(mode).fetch_one(&pool).await.unwrap();
        let mut lane = super::connect_one(&pool).await.unwrap();
        let own: String = sqlx::query_scalar(mode).fetch_one(&mut lane).await.unwrap();
        assert_eq!(
            (pooled.as_str(), own.as_str()),
            ("force_generic_plan", "force_generic_plan")
        );
    }

    /// The one-session statement (SINGLE_FENCED) and the general one (COMBINED) leave the same
    /// rows after the same writes: one session written alone, a twin written in groups with a
    /// second session (so COMBINED runs), through creds and keys at rising and stale versions,
    /// tombstones, fences below and at the stored epoch, and a purged row.
    #[tokio::test]
    async fn one_session_commits_like_a_group_commit() {
        use crate::model::{KeyWrite, SessionId, WriteBatch};
        use crate::sql::VersionedWrite;
        let Some(pool) = test_pool().await else {
            return;
        };
        let tag = format!("wa-test-rs-single-{}", std::process::id());
        let (alone, twin, other) = (
            SessionId::new(format!("{tag}-a")).unwrap(),
            SessionId::new(format!("{tag}-b")).unwrap(),
            SessionId::new(format!("{tag}-c")).unwrap(),
        );
        let ids = [&alone, &twin, &other];
        let set_epoch = |epoch: i64| {
            let pool = pool.clone();
            let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
            async move {
                for sid in ids {
                    sqlx::query(
                        "INSERT INTO wa_auth_sessions (session_id, created_at, updated_at, epoch)
                         VALUES ($1, 0, 0, $2)
                         ON CONFLICT (session_id) DO UPDATE SET epoch = EXCLUDED.epoch",
                    )
                    .bind(sid)
                    .bind(epoch)
                    .execute(&pool)
                    .await
                    .unwrap();
                }
            }
        };
        set_epoch(5).await;
        let batch = |creds: Option<&str>, keys: &[(&str, Option<&str>)]| WriteBatch {
            creds: creds.map(|c| crate::model::Value::from(c.as_bytes())),
            keys: keys
                .iter()
                .map(|(id, v)| match v {
                    Some(v) => KeyWrite::put("session", *id, v.as_bytes().to_vec()),
                    None => KeyWrite::delete("session", *id),
                })
                .collect(),
        };
        // (writes of one group: version, epoch, batch), expected fenced
        type Step = (u64, u64, WriteBatch, bool);
        let steps: Vec<Step> = vec![
            (
                10,
                5,
                batch(Some("c10"), &[("a", Some("a10")), ("b", Some("b10"))]),
                false,
            ),
            (8, 5, batch(Some("c8"), &[("a", Some("a8"))]), false), // stale: changes nothing
            (
                12,
                5,
                batch(None, &[("b", None), ("c", Some("c12"))]),
                false,
            ),
            (14, 4, batch(Some("c14"), &[("a", Some("a14"))]), true), // below the epoch
            (15, 5, batch(Some("c15"), &[]), false),
        ];
        let mut conn = super::connect_one(&pool).await.unwrap();
        for (v, e, b, fenced) in &steps {
            let w = [VersionedWrite {
                sid: &alone,
                batch: b,
                version: *v,
                epoch: Some(*e),
            }];
            let got = super::write_on(&mut conn, &Merged::of(&w), 1)
                .await
                .unwrap();
            assert_eq!(got.len(), usize::from(*fenced), "alone at v{v}: {got:?}");
            let pair = [
                VersionedWrite {
                    sid: &twin,
                    batch: b,
                    version: *v,
                    epoch: Some(*e),
                },
                VersionedWrite {
                    sid: &other,
                    batch: b,
                    version: *v,
                    epoch: Some(5),
                },
            ];
            let got = super::write_on(&mut conn, &Merged::of(&pair), 1)
                .await
                .unwrap();
            assert_eq!(got.len(), usize::from(*fenced), "grouped at v{v}: {got:?}");
        }
        let session = |sid: &SessionId| {
            let pool = pool.clone();
            let sid = sid.to_string();
            async move {
                let row: (Option<Vec<u8>>, i64, i64) = sqlx::query_as(
                    "SELECT creds, creds_version, version FROM wa_auth_sessions WHERE session_id = $1",
                )
                .bind(&sid)
                .fetch_one(&pool)
                .await
                .unwrap();
                row
            }
        };
        assert_eq!(session(&alone).await, session(&twin).await);
        assert_eq!(session(&alone).await, (Some(b"c15".to_vec()), 15, 15));
        // a purged row fences both alike
        sqlx::query("DELETE FROM wa_auth_sessions WHERE session_id = ANY($1)")
            .bind(vec![alone.to_string(), twin.to_string()])
            .execute(&pool)
            .await
            .unwrap();
        let late = batch(Some("c20"), &[("d", Some("d20"))]);
        let w = [VersionedWrite {
            sid: &alone,
            batch: &late,
            version: 20,
            epoch: Some(5),
        }];
        assert_eq!(
            super::write_on(&mut conn, &Merged::of(&w), 1)
                .await
                .unwrap()
                .len(),
            1
        );
        let pair = [
            VersionedWrite {
                sid: &twin,
                batch: &late,
                version: 20,
                epoch: Some(5),
            },
            VersionedWrite {
                sid: &other,
                batch: &late,
                version: 20,
                epoch: Some(5),
            },
        ];
        assert_eq!(
            super::write_on(&mut conn, &Merged::of(&pair), 1)
                .await
                .unwrap()
                .len(),
            1
        );
        set_epoch(5).await; // the rows again, to compare what the writes left
        let rows = |sid: &SessionId| {
            let pool = pool.clone();
            let sid = sid.to_string();
            async move {
                let keys: Vec<(String, Option<Vec<u8>>, i64)> = sqlx::query_as(
                    "SELECT id, value, version FROM wa_auth_keys WHERE session_id = $1 ORDER BY id",
                )
                .bind(&sid)
                .fetch_all(&pool)
                .await
                .unwrap();
                keys
            }
        };
        let (a, b) = (rows(&alone).await, rows(&twin).await);
        assert_eq!(a, b);
        let expect: Vec<(String, Option<Vec<u8>>, i64)> = vec![
            ("a".into(), Some(b"a10".to_vec()), 10),
            ("b".into(), None, 12),
            ("c".into(), Some(b"c12".to_vec()), 12),
        ];
        assert_eq!(a, expect);
        for sid in ids {
            for table in ["wa_auth_keys", "wa_auth_sessions"] {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM {table} WHERE session_id = $1"
                )))
                .bind(sid.to_string())
                .execute(&pool)
                .await
                .unwrap();
            }
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn postgres_sockets_have_nodelay_before_the_tls_handshake() {
        let connect = |port: u16| async move {
            let mut opts =
                crate::config::SqlOptions::new(format!("postgres://u@127.0.0.1:{port}/db"));
            opts.timeout = std::time::Duration::from_millis(500);
            // the test server hangs up: the connect fails, which is all it has to do here
            let _ = super::connect(&opts).await;
        };
        assert!(super::super::nodelay::testing::nodelay_before_handshake(
            connect, true
        ));
    }
}
