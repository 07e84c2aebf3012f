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
/// one session as integers; `$begin` starts a write transaction.
macro_rules! keyed_statements {
    ($db:ty, $pool:ty, $conn:ty, $upsert_sessions:expr, $upsert_keys:expr, $summary_sql:expr, $begin:expr) => {
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

        /// Applies merged writes atomically in one transaction: the session rows first (they
        /// take the session locks), then the key rows in statement-sized chunks.
        pub(super) async fn write(
            pool: &$pool,
            m: &super::Merged<'_>,
            now: i64,
        ) -> Result<(), sqlx::Error> {
            let mut tx = pool.begin_with($begin).await?;
            upsert_sessions(&mut tx, &m.sessions, now).await?;
            for chunk in super::statement_chunks(&m.keys, super::KeyRow::size) {
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
            tx.commit().await
        }

        /// Raises the cleared watermark (dropping the creds unless kept), then deletes the rows
        /// below it, in one transaction.
        pub(super) async fn clear(
            pool: &$pool,
            row: &super::SessionRow<'_>,
            now: i64,
        ) -> Result<(), sqlx::Error> {
            let mut tx = pool.begin_with($begin).await?;
            upsert_sessions(&mut tx, std::slice::from_ref(row), now).await?;
            sqlx::query("DELETE FROM wa_auth_keys WHERE session_id = ? AND version < ?")
                .bind(row.sid)
                .bind(row.cleared)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        }

        pub(super) async fn purge(
            pool: &$pool,
            sid: &$crate::model::SessionId,
        ) -> Result<(), sqlx::Error> {
            let mut tx = pool.begin_with($begin).await?;
            for sql in [
                "DELETE FROM wa_auth_keys WHERE session_id = ?",
                "DELETE FROM wa_auth_sessions WHERE session_id = ?",
                "DELETE FROM wa_auth_leases WHERE session_id = ?",
            ] {
                sqlx::query(sql).bind(&**sid).execute(&mut *tx).await?;
            }
            tx.commit().await
        }
    };
}

pub(super) use keyed_statements;
