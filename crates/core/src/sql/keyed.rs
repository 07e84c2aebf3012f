//! The statements MySQL and SQLite share: both take `?` placeholders and multi-row VALUES lists,
//! and differ only in the upsert clause. A macro rather than generic code keeps the sqlx types
//! concrete (no higher-ranked trait bounds) while the SQL is written once.

/// Defines `get_creds`, `get_keys`, `write` and `delete_session` for one pool type.
/// `$upsert_creds` / `$upsert_keys` are the clauses that follow the VALUES list; `$summary_sql`
/// selects `(type, count, bytes)` of one session as integers.
macro_rules! keyed_statements {
    ($db:ty, $pool:ty, $conn:ty, $upsert_creds:expr, $upsert_keys:expr, $summary_sql:expr) => {
        pub(super) async fn summary(
            pool: &$pool,
            sid: &$crate::model::SessionId,
        ) -> Result<Vec<super::TypeSummary>, sqlx::Error> {
            let rows: Vec<(Vec<u8>, i64, i64)> = sqlx::query_as($summary_sql)
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
            let rows: Vec<(Vec<u8>,)> = sqlx::query_as(
                "SELECT id FROM wa_auth_keys WHERE session_id = ? AND type = ? ORDER BY id",
            )
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
        ) -> Result<Option<$crate::model::Value>, sqlx::Error> {
            let row: Option<(Option<Vec<u8>>,)> =
                sqlx::query_as("SELECT creds FROM wa_auth_sessions WHERE session_id = ?")
                    .bind(&**sid)
                    .fetch_optional(pool)
                    .await?;
            Ok(row.and_then(|(c,)| c).map($crate::model::Value::from))
        }

        pub(super) async fn get_keys(
            pool: &$pool,
            sid: &$crate::model::SessionId,
            kind: &str,
            ids: &[String],
        ) -> Result<Vec<(String, $crate::model::Value)>, sqlx::Error> {
            let mut out = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(super::ROWS_PER_STATEMENT) {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "SELECT id, value FROM wa_auth_keys WHERE session_id = ",
                );
                q.push_bind(&**sid)
                    .push(" AND type = ")
                    .push_bind(kind)
                    .push(" AND id IN (");
                let mut list = q.separated(", ");
                for id in chunk {
                    list.push_bind(id.as_str());
                }
                q.push(")");
                let rows: Vec<(Vec<u8>, Vec<u8>)> = q.build_query_as().fetch_all(pool).await?;
                for (id, value) in rows {
                    let id = String::from_utf8(id).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
                    out.push((id, $crate::model::Value::from(value)));
                }
            }
            Ok(out)
        }

        /// Applies merged batches atomically: one transaction of statement-sized multi-row
        /// chunks, or a lone statement (one round trip instead of three) when they fit in one.
        pub(super) async fn write(
            pool: &$pool,
            m: &super::Merged<'_>,
            now: i64,
        ) -> Result<(), sqlx::Error> {
            let put_size =
                |(s, t, i, v): &(&str, &str, &str, &[u8])| s.len() + t.len() + i.len() + v.len();
            let statements = super::statement_chunks(&m.creds, |(s, c)| s.len() + c.len()).len()
                + super::statement_chunks(&m.puts, put_size).len()
                + super::statement_chunks(&m.dels, |(s, t, i)| s.len() + t.len() + i.len()).len();
            if statements == 1 {
                let mut conn = pool.acquire().await?;
                return apply(&mut conn, m, now).await;
            }
            let mut tx = pool.begin().await?;
            apply(&mut tx, m, now).await?;
            tx.commit().await
        }

        async fn apply(
            conn: &mut $conn,
            m: &super::Merged<'_>,
            now: i64,
        ) -> Result<(), sqlx::Error> {
            for chunk in super::statement_chunks(&m.creds, |(s, c)| s.len() + c.len()) {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO wa_auth_sessions (session_id, creds, created_at, updated_at) ",
                );
                q.push_values(chunk, |mut row, (sid, creds)| {
                    row.push_bind(*sid)
                        .push_bind(*creds)
                        .push_bind(now)
                        .push_bind(now);
                });
                q.push(" ").push($upsert_creds);
                q.build().execute(&mut *conn).await?;
            }
            let size =
                |(s, t, i, v): &(&str, &str, &str, &[u8])| s.len() + t.len() + i.len() + v.len();
            for chunk in super::statement_chunks(&m.puts, size) {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO wa_auth_keys (session_id, type, id, value, updated_at) ",
                );
                q.push_values(chunk, |mut row, (sid, kind, id, value)| {
                    row.push_bind(*sid)
                        .push_bind(*kind)
                        .push_bind(*id)
                        .push_bind(*value)
                        .push_bind(now);
                });
                q.push(" ").push($upsert_keys);
                q.build().execute(&mut *conn).await?;
            }
            for chunk in super::statement_chunks(&m.dels, |(s, t, i)| s.len() + t.len() + i.len()) {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "DELETE FROM wa_auth_keys WHERE (session_id, type, id) IN (",
                );
                let mut list = q.separated(", ");
                for (sid, kind, id) in chunk {
                    list.push("(")
                        .push_bind_unseparated(*sid)
                        .push_unseparated(", ")
                        .push_bind_unseparated(*kind)
                        .push_unseparated(", ")
                        .push_bind_unseparated(*id)
                        .push_unseparated(")");
                }
                q.push(")");
                q.build().execute(&mut *conn).await?;
            }
            Ok(())
        }

        pub(super) async fn delete_session(
            pool: &$pool,
            sid: &$crate::model::SessionId,
            keep_creds: bool,
        ) -> Result<(), sqlx::Error> {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM wa_auth_keys WHERE session_id = ?")
                .bind(&**sid)
                .execute(&mut *tx)
                .await?;
            if !keep_creds {
                sqlx::query("DELETE FROM wa_auth_sessions WHERE session_id = ?")
                    .bind(&**sid)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        }
    };
}

pub(super) use keyed_statements;
