//! The statements MySQL and SQLite share: both take `?` placeholders and multi-row VALUES lists,
//! and differ only in the upsert clauses and how a write transaction begins. A macro rather than
//! generic code keeps the sqlx types concrete (no higher-ranked trait bounds) while the SQL is
//! written once.

/// Live rows only: not a tombstone, not below the session's cleared watermark.
pub(super) const LIVE: &str = "k.value IS NOT NULL AND k.version >= COALESCE(
    (SELECT s.cleared_version FROM wa_auth_sessions s WHERE s.session_id = k.session_id), 0)";

/// Defines the reads, `write`, `clear`, `purge`, `summary` and `list_ids` for one pool type.
/// `$upsert_sessions` / `$upsert_keys` are the clauses that follow the VALUES lists (versions only
/// rise, a row only replaces an older version); `$summary_sql` selects `(type, count, bytes)` of
/// one session as integers; `$begin` starts a write transaction; `$lock` follows a SELECT that
/// locks rows for the transaction; `$now` is the database's clock in ms; `$ignore` an INSERT that
/// skips existing rows; `$lease_upsert` the clause that replaces a lease row; `$greatest` the
/// two-argument maximum; `$setting_upsert` the clause that raises a setting to the value given.
macro_rules! keyed_statements {
    ($db:ty, $pool:ty, $conn:ty, $upsert_sessions:expr, $upsert_keys:expr, $summary_sql:expr, $begin:expr,
     $lock:expr, $now:expr, $ignore:expr, $lease_upsert:expr, $greatest:expr, $setting_upsert:expr) => {
        pub(super) async fn summary(
            pool: &$pool,
            sid: &$crate::model::SessionId,
        ) -> Result<Vec<super::TypeSummary>, sqlx::Error> {
            let rows: Vec<(Vec<u8>, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "{} WHERE k.session_id = ? AND {} GROUP BY k.type ORDER BY k.type",
                $summary_sql,
                super::keyed::LIVE
            )))
            .bind(&**sid)
            .fetch_all(pool)
            .await?;
            super::summaries(rows)
        }

        pub(super) async fn list_ids(
            pool: &$pool,
            sid: &$crate::model::SessionId,
            kind: &str,
        ) -> Result<Vec<String>, sqlx::Error> {
            let rows: Vec<(Vec<u8>,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT k.id FROM wa_auth_keys k WHERE k.session_id = ? AND k.type = ? AND {} ORDER BY k.id",
                super::keyed::LIVE
            )))
            .bind(&**sid)
            .bind(kind)
            .fetch_all(pool)
            .await?;
            rows.into_iter()
                .map(|(id,)| String::from_utf8(id).map_err(|e| sqlx::Error::Decode(Box::new(e))))
                .collect()
        }

        pub(super) async fn get_creds(
            pool: &$pool,
            sid: &$crate::model::SessionId,
        ) -> Result<Option<(u64, $crate::model::Value)>, sqlx::Error> {
            let row: Option<(Option<Vec<u8>>, i64)> = sqlx::query_as(
                "SELECT creds, creds_version FROM wa_auth_sessions WHERE session_id = ?",
            )
            .bind(&**sid)
            .fetch_optional(pool)
            .await?;
            Ok(super::creds_row(row))
        }

        pub(super) async fn session_version(
            pool: &$pool,
            sid: &$crate::model::SessionId,
        ) -> Result<u64, sqlx::Error> {
            let v: Option<i64> =
                sqlx::query_scalar("SELECT version FROM wa_auth_sessions WHERE session_id = ?")
                    .bind(&**sid)
                    .fetch_optional(pool)
                    .await?;
            Ok(v.unwrap_or(0).max(0) as u64)
        }

        pub(super) async fn get_keys(
            pool: &$pool,
            sid: &$crate::model::SessionId,
            kind: &str,
            ids: &[String],
        ) -> Result<Vec<super::VersionedRow>, sqlx::Error> {
            let mut out = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(super::ROWS_PER_STATEMENT) {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "SELECT k.id, k.version, k.value FROM wa_auth_keys k WHERE k.session_id = ",
                );
                q.push_bind(&**sid)
                    .push(" AND k.type = ")
                    .push_bind(kind)
                    .push(" AND ")
                    .push(super::keyed::LIVE)
                    .push(" AND k.id IN (");
                let mut list = q.separated(", ");
                for id in chunk {
                    list.push_bind(id.as_str());
                }
                q.push(")");
                let rows: Vec<(Vec<u8>, i64, Vec<u8>)> =
                    q.build_query_as().fetch_all(pool).await?;
                for (id, version, value) in rows {
                    let id = String::from_utf8(id).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
                    out.push(super::VersionedRow {
                        id,
                        version: version.max(0) as u64,
                        value: $crate::model::Value::from(value),
                    });
                }
            }
            Ok(out)
        }

        async fn upsert_sessions(
            conn: &mut $conn,
            rows: &[super::SessionRow<'_>],
            now: i64,
        ) -> Result<(), sqlx::Error> {
            for chunk in super::statement_chunks(rows, super::SessionRow::size) {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO wa_auth_sessions (session_id, creds, creds_version, version, cleared_version, created_at, updated_at) ",
                );
                q.push_values(chunk, |mut b, r| {
                    b.push_bind(r.sid)
                        .push_bind(r.creds)
                        .push_bind(r.creds_version)
                        .push_bind(r.version)
                        .push_bind(r.cleared)
                        .push_bind(now)
                        .push_bind(now);
                });
                q.push(" ").push($upsert_sessions);
                q.build().execute(&mut *conn).await?;
            }
            Ok(())
        }

        /// The stored epochs of the sessions named, their rows locked for the transaction.
        async fn lock_epochs(
            conn: &mut $conn,
            sids: &[&str],
        ) -> Result<Vec<(String, i64)>, sqlx::Error> {
            if sids.is_empty() {
                return Ok(Vec::new());
            }
            let mut q = sqlx::QueryBuilder::<$db>::new(
                "SELECT session_id, epoch FROM wa_auth_sessions WHERE session_id IN (",
            );
            let mut list = q.separated(", ");
            for sid in sids {
                list.push_bind(*sid);
            }
            q.push(")").push($lock);
            let rows: Vec<(Vec<u8>, i64)> = q.build_query_as().fetch_all(&mut *conn).await?;
            rows.into_iter()
                .map(|(s, e)| {
                    String::from_utf8(s)
                        .map(|s| (s, e))
                        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
                })
                .collect()
        }

        /// Applies merged writes atomically in one transaction: the fenced sessions' rows are
        /// locked and checked first, then the session rows (they take the session locks), then
        /// the key rows in statement-sized chunks. Returns the fenced sessions.
        pub(super) async fn write(
            pool: &$pool,
            m: &super::Merged<'_>,
            now: i64,
        ) -> Result<Vec<String>, sqlx::Error> {
            write_on(&mut *pool.acquire().await?, m, now).await
        }

        /// [`write`] on a connection of the caller's.
        #[allow(dead_code)] // SQLite commits through its pool
        pub(super) async fn write_on(
            conn: &mut $conn,
            m: &super::Merged<'_>,
            now: i64,
        ) -> Result<Vec<String>, sqlx::Error> {
            let mut tx = sqlx::Connection::begin_with(conn, $begin).await?;
            let ids: Vec<&str> = m.fences.iter().map(|f| f.0).collect();
            let fenced = m.fenced(&lock_epochs(&mut tx, &ids).await?);
            let rest = m.without(&fenced);
            if !rest.sessions.is_empty() {
                upsert_sessions(&mut tx, &rest.sessions, now).await?;
            }
            for chunk in super::statement_chunks(&rest.keys, super::KeyRow::size) {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO wa_auth_keys (session_id, type, id, value, version, updated_at) ",
                );
                q.push_values(chunk, |mut b, k| {
                    b.push_bind(k.sid)
                        .push_bind(k.kind)
                        .push_bind(k.id)
                        .push_bind(k.value)
                        .push_bind(k.version)
                        .push_bind(now);
                });
                q.push(" ").push($upsert_keys);
                q.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(fenced)
        }

        /// Raises the cleared watermark (dropping the creds unless kept), then deletes the rows
        /// below it, in one transaction; nothing (false) when the session's lease epoch is
        /// above `fence`.
        pub(super) async fn clear(
            pool: &$pool,
            row: &super::SessionRow<'_>,
            now: i64,
            fence: Option<i64>,
        ) -> Result<bool, sqlx::Error> {
            let mut tx = pool.begin_with($begin).await?;
            if let Some(epoch) = fence {
                let stored = lock_epochs(&mut tx, &[row.sid]).await?;
                if super::rules::is_fenced(stored.first().map(|(_, e)| *e), epoch) {
                    tx.rollback().await?;
                    return Ok(false);
                }
            }
            upsert_sessions(&mut tx, std::slice::from_ref(row), now).await?;
            sqlx::query("DELETE FROM wa_auth_keys WHERE session_id = ? AND version < ?")
                .bind(row.sid)
                .bind(row.cleared)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(true)
        }

        pub(super) async fn session_epoch(
            pool: &$pool,
            sid: &$crate::model::SessionId,
        ) -> Result<u64, sqlx::Error> {
            let v: Option<i64> =
                sqlx::query_scalar("SELECT epoch FROM wa_auth_sessions WHERE session_id = ?")
                    .bind(&**sid)
                    .fetch_optional(pool)
                    .await?;
            Ok(v.unwrap_or(0).max(0) as u64)
        }

        /// The epoch floor of sessions created from now on (a purge raises it).
        async fn epoch_floor(conn: &mut $conn) -> Result<i64, sqlx::Error> {
            let v: Option<i64> =
                sqlx::query_scalar("SELECT value FROM wa_auth_settings WHERE name = 'epoch_floor'")
                    .fetch_optional(&mut *conn)
                    .await?;
            Ok(v.unwrap_or(0))
        }

        /// Creates the session's row if it has none (its epochs start at the floor); whether it
        /// did.
        async fn ensure_session(
            conn: &mut $conn,
            sid: &str,
            now: i64,
        ) -> Result<bool, sqlx::Error> {
            let floor = epoch_floor(&mut *conn).await?;
            let done = sqlx::query(sqlx::AssertSqlSafe(format!(
                "{} wa_auth_sessions (session_id, creds, created_at, updated_at, epoch_seq) VALUES (?, NULL, ?, ?, ?)",
                $ignore
            )))
            .bind(sid)
            .bind(now)
            .bind(now)
            .bind(floor)
            .execute(&mut *conn)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        /// The session's epochs and whether its data is sealed, its row locked for the
        /// transaction; None when it has no row.
        async fn lock_session_epochs(
            conn: &mut $conn,
            sid: &str,
        ) -> Result<Option<(super::rules::Epochs, bool)>, sqlx::Error> {
            let row: Option<(i64, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT epoch, epoch_seq, sealed FROM wa_auth_sessions WHERE session_id = ?{}",
                $lock
            )))
            .bind(sid)
            .fetch_optional(&mut *conn)
            .await?;
            Ok(row.map(|(epoch, seq, sealed)| (super::rules::Epochs { epoch, seq }, sealed > 0)))
        }

        async fn set_epochs(
            conn: &mut $conn,
            sid: &str,
            e: super::rules::Epochs,
            seal: bool,
        ) -> Result<(), sqlx::Error> {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE wa_auth_sessions SET epoch = ?, epoch_seq = ?, sealed = {}(sealed, ?) WHERE session_id = ?",
                $greatest
            )))
            .bind(e.epoch)
            .bind(e.seq)
            .bind(i64::from(seal))
            .bind(sid)
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        /// Hands out the session's next epoch (`rules::allocate`), creating its row; and
        /// whether the session was sealed before. A reacquisition (`since`) creates no row
        /// and gets None where `rules::may_reacquire` refuses it.
        pub(super) async fn allocate_epoch(
            pool: &$pool,
            sid: &$crate::model::SessionId,
            floor: i64,
            seal: bool,
            now: i64,
            since: Option<i64>,
        ) -> Result<Option<(i64, bool)>, sqlx::Error> {
            let mut tx = pool.begin_with($begin).await?;
            if since.is_none() {
                ensure_session(&mut tx, sid, now).await?;
            }
            let row = lock_session_epochs(&mut tx, sid).await?;
            let Some((epochs, sealed)) =
                row.filter(|(e, _)| since.is_none_or(|s| super::rules::may_reacquire(Some(*e), s)))
            else {
                return Ok(None);
            };
            let e = super::rules::allocate(epochs, floor);
            set_epochs(&mut tx, sid, super::rules::Epochs { seq: e, ..epochs }, seal).await?;
            tx.commit().await?;
            Ok(Some((e, sealed)))
        }

        /// Raises the session's fence to `epoch`; false when its row is gone (purged).
        pub(super) async fn raise_epoch(
            pool: &$pool,
            sid: &$crate::model::SessionId,
            epoch: i64,
        ) -> Result<bool, sqlx::Error> {
            let done = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE wa_auth_sessions SET epoch = {g}(epoch, ?), epoch_seq = {g}(epoch_seq, ?) WHERE session_id = ?",
                g = $greatest
            )))
            .bind(epoch)
            .bind(epoch)
            .bind(&**sid)
            .execute(pool)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        fn stored_lease(
            (t, h, epoch, expires_at, acquired_at): (Vec<u8>, Vec<u8>, i64, i64, i64),
        ) -> super::rules::StoredLease {
            let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
            super::rules::StoredLease {
                token: text(t),
                holder: text(h),
                epoch,
                expires_at,
                acquired_at,
            }
        }

        /// Takes the session's lease row (a store without Redis) in one transaction with its
        /// epochs: the decision is `rules::take_lease`.
        pub(super) async fn lease_take(
            pool: &$pool,
            req: &super::rules::LeaseRequest<'_>,
        ) -> Result<(super::rules::Taken, i64, bool), sqlx::Error> {
            use super::rules::{LeaseWrite, Taken};
            let mut tx = pool.begin_with($begin).await?;
            let now: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {}", $now)))
                .fetch_one(&mut *tx)
                .await?;
            let created = ensure_session(&mut tx, req.sid, now).await?;
            let (epochs, sealed) = lock_session_epochs(&mut tx, req.sid)
                .await?
                .ok_or(sqlx::Error::RowNotFound)?;
            let current: Option<(Vec<u8>, Vec<u8>, i64, i64, i64)> = sqlx::query_as(
                "SELECT token, holder, epoch, expires_at, acquired_at FROM wa_auth_leases WHERE session_id = ?",
            )
            .bind(&**req.sid)
            .fetch_optional(&mut *tx)
            .await?;
            let current = current.map(stored_lease);
            let taken = super::rules::take_lease(req, current.as_ref(), epochs, created, now);
            let Taken::Granted { lease, epochs, .. } = &taken else {
                // end the transaction now: a rollback left to the pool would hold the locks
                tx.rollback().await?;
                return Ok((taken, now, sealed));
            };
            match lease {
                LeaseWrite::Keep => {}
                LeaseWrite::Delete => {
                    sqlx::query("DELETE FROM wa_auth_leases WHERE session_id = ?")
                        .bind(&**req.sid)
                        .execute(&mut *tx)
                        .await?;
                }
                LeaseWrite::Put(l) => {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "INSERT INTO wa_auth_leases (session_id, token, holder, epoch, expires_at, acquired_at)
                         VALUES (?, ?, ?, ?, ?, ?) {}",
                        $lease_upsert
                    )))
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
            set_epochs(&mut tx, req.sid, *epochs, req.seal).await?;
            tx.commit().await?;
            Ok((taken, now, sealed))
        }

        /// Extends the lease if `token` holds it and it has not expired (`rules::renew`).
        pub(super) async fn lease_renew(
            pool: &$pool,
            sid: &$crate::model::SessionId,
            token: &str,
            ttl_ms: i64,
        ) -> Result<bool, sqlx::Error> {
            let done = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE wa_auth_leases SET expires_at = {now} + ? WHERE session_id = ? AND token = ? AND expires_at > {now}",
                now = $now
            )))
            .bind(ttl_ms)
            .bind(&**sid)
            .bind(token)
            .execute(pool)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        pub(super) async fn lease_release(
            pool: &$pool,
            sid: &$crate::model::SessionId,
            token: &str,
        ) -> Result<(), sqlx::Error> {
            sqlx::query("DELETE FROM wa_auth_leases WHERE session_id = ? AND token = ?")
                .bind(&**sid)
                .bind(token)
                .execute(pool)
                .await?;
            Ok(())
        }

        /// The lease row and the database's clock.
        pub(super) async fn lease_info(
            pool: &$pool,
            sid: &$crate::model::SessionId,
        ) -> Result<Option<(super::rules::StoredLease, i64)>, sqlx::Error> {
            let row: Option<(Vec<u8>, Vec<u8>, i64, i64, i64, i64)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT token, holder, epoch, expires_at, acquired_at, {} FROM wa_auth_leases WHERE session_id = ?",
                    $now
                )))
                .bind(&**sid)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|(t, h, e, x, a, now)| (stored_lease((t, h, e, x, a)), now)))
        }

        /// Removes every row of the session and raises the epoch floor of new sessions above
        /// its epochs (a holder paused across the purge stays fenced).
        pub(super) async fn purge(
            pool: &$pool,
            sid: &$crate::model::SessionId,
        ) -> Result<(), sqlx::Error> {
            let mut tx = pool.begin_with($begin).await?;
            let top: Option<(i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT epoch, epoch_seq FROM wa_auth_sessions WHERE session_id = ?{}",
                $lock
            )))
            .bind(&**sid)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((e, q)) = top {
                raise_setting(&mut tx, "epoch_floor", e.max(q)).await?;
            }
            for sql in [
                "DELETE FROM wa_auth_keys WHERE session_id = ?",
                "DELETE FROM wa_auth_sessions WHERE session_id = ?",
                "DELETE FROM wa_auth_leases WHERE session_id = ?",
            ] {
                sqlx::query(sql).bind(&**sid).execute(&mut *tx).await?;
            }
            tx.commit().await
        }

        /// One statement, so concurrent raises take the row's lock once (an insert that skips
        /// an existing row and an update after it would each lock it: two raisers deadlock).
        async fn raise_setting(conn: &mut $conn, name: &str, value: i64) -> Result<(), sqlx::Error> {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO wa_auth_settings (name, value) VALUES (?, ?) {}",
                $setting_upsert
            )))
            .bind(name)
            .bind(value)
            .execute(&mut *conn)
            .await?;
            Ok(())
        }
    };
}

pub(super) use keyed_statements;
