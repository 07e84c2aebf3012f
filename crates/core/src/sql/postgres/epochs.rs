//! PostgreSQL: the session's epochs, the lease row of a store without Redis, purges.

use sqlx::postgres::{PgConnection, PgPool};

use super::NOW_MS;
use crate::model::SessionId;
use crate::sql::rules::{self, Epochs, LeaseRequest, LeaseWrite, StoredLease, Taken};

pub(crate) async fn session_epoch(pool: &PgPool, sid: &SessionId) -> Result<u64, sqlx::Error> {
    let v: Option<i64> =
        sqlx::query_scalar("SELECT epoch FROM wa_auth_sessions WHERE session_id = $1")
            .bind(&**sid)
            .fetch_optional(pool)
            .await?;
    Ok(v.unwrap_or(0).max(0) as u64)
}

/// The epoch floor of sessions created from now on (a purge raises it: see `purge`).
const FLOOR: &str = "COALESCE((SELECT value FROM wa_auth_settings WHERE name = 'epoch_floor'), 0)";

/// Hands out the session's next epoch (`rules::allocate`), creating its row: the row of a new
/// session starts above the epoch floor.
/// Whether the session was sealed before (a writer that does not seal must not take it: the
/// caller refuses, and the epoch handed out fences nobody). A reacquisition (`since`) creates
/// no row and gets None where `rules::may_reacquire` refuses it (no row, or an epoch above
/// `since`).
pub(crate) async fn allocate_epoch(
    pool: &PgPool,
    sid: &SessionId,
    floor: i64,
    seal: bool,
    now: i64,
    since: Option<i64>,
) -> Result<Option<(i64, bool)>, sqlx::Error> {
    if let Some(since) = since {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "WITH before AS (SELECT sealed FROM wa_auth_sessions WHERE session_id = $1)
             UPDATE wa_auth_sessions SET
               epoch_seq = GREATEST(epoch_seq, epoch, $2) + 1,
               sealed = GREATEST(sealed, $3)
             WHERE session_id = $1 AND epoch <= $4
             RETURNING epoch_seq, COALESCE((SELECT sealed FROM before), 0)",
        )
        .bind(&**sid)
        .bind(floor)
        .bind(i64::from(seal))
        .bind(since)
        .fetch_optional(pool)
        .await?;
        return Ok(row.map(|(epoch, sealed)| (epoch, sealed > 0)));
    }
    let (epoch, sealed): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH before AS (SELECT sealed FROM wa_auth_sessions WHERE session_id = $1)
         INSERT INTO wa_auth_sessions (session_id, creds, created_at, updated_at, epoch_seq, sealed)
         VALUES ($1, NULL, $3, $3, GREATEST($2, {FLOOR}) + 1, $4)
         ON CONFLICT (session_id) DO UPDATE SET
           epoch_seq = GREATEST(wa_auth_sessions.epoch_seq, wa_auth_sessions.epoch, $2) + 1,
           sealed = GREATEST(wa_auth_sessions.sealed, EXCLUDED.sealed)
         RETURNING epoch_seq, COALESCE((SELECT sealed FROM before), 0)"
    )))
    .bind(&**sid)
    .bind(floor)
    .bind(now)
    .bind(i64::from(seal))
    .fetch_one(pool)
    .await?;
    Ok(Some((epoch, sealed > 0)))
}

/// Raises the session's fence to `epoch` (granted elsewhere). False when the row is gone (the
/// session was purged after the epoch was handed out).
pub(crate) async fn raise_epoch(
    pool: &PgPool,
    sid: &SessionId,
    epoch: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE wa_auth_sessions SET epoch = GREATEST(epoch, $2), epoch_seq = GREATEST(epoch_seq, $2)
         WHERE session_id = $1",
    )
    .bind(&**sid)
    .bind(epoch)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

type LeaseColumns = (String, String, i64, i64, i64);

fn stored_lease((token, holder, epoch, expires_at, acquired_at): LeaseColumns) -> StoredLease {
    StoredLease {
        token,
        holder,
        epoch,
        expires_at,
        acquired_at,
    }
}

/// Takes the session's lease row (a store without Redis), in one transaction with its epochs:
/// the decision is `rules::take_lease`.
pub(crate) async fn lease_take(
    pool: &PgPool,
    req: &LeaseRequest<'_>,
) -> Result<(Taken, i64, bool), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let now: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {NOW_MS}")))
        .fetch_one(&mut *tx)
        .await?;
    let created = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO wa_auth_sessions (session_id, creds, created_at, updated_at, epoch_seq)
         VALUES ($1, NULL, $2, $2, {FLOOR}) ON CONFLICT (session_id) DO NOTHING"
    )))
    .bind(&**req.sid)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    let (epoch, seq, sealed): (i64, i64, i64) = sqlx::query_as(
        "SELECT epoch, epoch_seq, sealed FROM wa_auth_sessions WHERE session_id = $1 FOR UPDATE",
    )
    .bind(&**req.sid)
    .fetch_one(&mut *tx)
    .await?;
    let current: Option<LeaseColumns> = sqlx::query_as(
        "SELECT token, holder, epoch, expires_at, acquired_at FROM wa_auth_leases WHERE session_id = $1",
    )
    .bind(&**req.sid)
    .fetch_optional(&mut *tx)
    .await?;
    let current = current.map(stored_lease);
    let epochs = Epochs { epoch, seq };
    let taken = rules::take_lease(req, current.as_ref(), epochs, created, now);
    let Taken::Granted { lease, epochs, .. } = &taken else {
        // end the transaction now: a rollback left to the pool would hold the locks meanwhile
        tx.rollback().await?;
        return Ok((taken, now, sealed > 0));
    };
    match lease {
        LeaseWrite::Keep => {}
        LeaseWrite::Delete => {
            sqlx::query("DELETE FROM wa_auth_leases WHERE session_id = $1")
                .bind(&**req.sid)
                .execute(&mut *tx)
                .await?;
        }
        LeaseWrite::Put(l) => {
            sqlx::query(
                "INSERT INTO wa_auth_leases (session_id, token, holder, epoch, expires_at, acquired_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (session_id) DO UPDATE SET token = EXCLUDED.token, holder = EXCLUDED.holder,
                   epoch = EXCLUDED.epoch, expires_at = EXCLUDED.expires_at, acquired_at = EXCLUDED.acquired_at",
            )
            .bind(&**req.sid)
            .bind(&l.token)
            .bind(&l.holder)
            .bind(l.epoch)
            .bind(l.expires_at)
            .bind(l.acquired_at)
            .execute(&mut *tx)
            .await?;
        }
    }
    sqlx::query(
        "UPDATE wa_auth_sessions SET epoch = $2, epoch_seq = $3, sealed = GREATEST(sealed, $4)
         WHERE session_id = $1",
    )
    .bind(&**req.sid)
    .bind(epochs.epoch)
    .bind(epochs.seq)
    .bind(i64::from(req.seal))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((taken, now, sealed > 0))
}

/// Extends the lease if `token` holds it and it has not expired (`rules::renew`): a lapsed
/// lease is taken again through `lease_take`, never extended.
pub(crate) async fn lease_renew(
    pool: &PgPool,
    sid: &SessionId,
    token: &str,
    ttl_ms: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE wa_auth_leases SET expires_at = {NOW_MS} + $3
         WHERE session_id = $1 AND token = $2 AND expires_at > {NOW_MS}"
    )))
    .bind(&**sid)
    .bind(token)
    .bind(ttl_ms)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn lease_release(
    pool: &PgPool,
    sid: &SessionId,
    token: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM wa_auth_leases WHERE session_id = $1 AND token = $2")
        .bind(&**sid)
        .bind(token)
        .execute(pool)
        .await?;
    Ok(())
}

/// The lease row and the database's clock.
pub(crate) async fn lease_info(
    pool: &PgPool,
    sid: &SessionId,
) -> Result<Option<(StoredLease, i64)>, sqlx::Error> {
    let row: Option<(String, String, i64, i64, i64, i64)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT token, holder, epoch, expires_at, acquired_at, {NOW_MS} FROM wa_auth_leases WHERE session_id = $1"
        )))
        .bind(&**sid)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|(t, h, e, x, a, now)| (stored_lease((t, h, e, x, a)), now)))
}

/// Removes every row of the session, and raises the epoch floor of new sessions above its
/// epochs: a holder paused across the purge stays fenced (its row is gone), and the session's
/// next writer starts above every epoch it had.
pub(crate) async fn purge(pool: &PgPool, sid: &SessionId) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let top: Option<i64> = sqlx::query_scalar(
        "SELECT GREATEST(epoch, epoch_seq) FROM wa_auth_sessions WHERE session_id = $1 FOR UPDATE",
    )
    .bind(&**sid)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(top) = top {
        raise_setting(&mut tx, "epoch_floor", top).await?;
    }
    for sql in [
        "DELETE FROM wa_auth_keys WHERE session_id = $1",
        "DELETE FROM wa_auth_sessions WHERE session_id = $1",
        "DELETE FROM wa_auth_leases WHERE session_id = $1",
    ] {
        sqlx::query(sql).bind(&**sid).execute(&mut *tx).await?;
    }
    tx.commit().await
}

async fn raise_setting(conn: &mut PgConnection, name: &str, value: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO wa_auth_settings (name, value) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET value = GREATEST(wa_auth_settings.value, EXCLUDED.value)",
    )
    .bind(name)
    .bind(value)
    .execute(conn)
    .await?;
    Ok(())
}
