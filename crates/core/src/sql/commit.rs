//! Group commits: one transaction (or statement) per group of writes, on a commit lane's own
//! connection where the dialect has lanes, run again after a deadlock, a serialization
//! conflict, or (once) a failure of a connection that had served before.

use std::sync::atomic::Ordering;

use crate::error::{Error, Result, Tier};

use super::errors::is_retryable;
use super::rows::{CommitError, Merged, VersionedWrite};
use super::{mysql, now_ms, on_dialect, plugin, postgres, sqlite, Dialect, Pool, SqlStore};

/// A connection a commit lane owns, outside the pool.
pub(super) enum LaneConn {
    Postgres(sqlx::PgConnection),
    MySql(sqlx::MySqlConnection),
}

/// How many group commits a server dialect runs at once: half the connections, at most 4.
pub(super) fn server_commit_lanes(max_connections: u32) -> u32 {
    (max_connections / 2).clamp(1, 4)
}

/// How many commit lanes get connections of their own, out of `max_connections`: every lane a
/// server dialect commits on, as long as the pool keeps at least one. SQLite and plug-ins commit
/// through their pool.
pub(super) fn lane_connections(dialect: Dialect, max_connections: u32) -> u32 {
    match dialect {
        Dialect::Postgres | Dialect::MySql => {
            let lanes = server_commit_lanes(max_connections);
            if max_connections > lanes {
                lanes
            } else {
                0
            }
        }
        Dialect::Sqlite | Dialect::Plugin => 0,
    }
}

/// A failure of the connection rather than of the statement (the server went away, restarted,
/// or the link broke): worth one more try on a new connection.
pub(super) fn is_connection_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        // PostgreSQL: 57P01-57P03 (shut down, crash, cannot connect now), class 08 (connection
        // exception)
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("57P0") || c.starts_with("08")),
        _ => false,
    }
}

impl SqlStore {
    /// Commits versioned writes of any sessions in one transaction (or one statement), each row
    /// only over an older version. The writes of sessions whose lease epoch moved past the
    /// writer's are left out (fenced): their ids are returned.
    pub async fn commit(&self, writes: &[VersionedWrite<'_>]) -> Result<Vec<String>, CommitError> {
        self.commit_with(writes, None).await
    }

    /// [`Self::commit`] from commit lane `lane` (of [`Self::parallel_commits`]), on the lane's
    /// own connection where it has one. A lane commits one group at a time, so its connection
    /// needs no pool: sqlx's pool tests every connection it hands out and every one given back
    /// with a round trip each, two round trips of the server's time per commit. A lane's
    /// connection that fails (a server restart, a broken link, a deadline that dropped it
    /// mid-statement) is closed and the next commit opens another; a failure of the connection
    /// itself on a connection that served before is tried once more on a new one (every write is
    /// versioned, so running one twice changes nothing).
    pub async fn commit_in_lane(
        &self,
        lane: usize,
        writes: &[VersionedWrite<'_>],
    ) -> Result<Vec<String>, CommitError> {
        self.commit_with(writes, self.lanes.get(lane)).await
    }

    /// Runs `merged` on the lane's connection, opening it if needed (see
    /// [`Self::commit_in_lane`]).
    pub(super) async fn write_in_lane(
        &self,
        lane: &tokio::sync::Mutex<Option<LaneConn>>,
        m: &Merged<'_>,
        now: i64,
    ) -> std::result::Result<Vec<String>, sqlx::Error> {
        let mut held = lane.lock().await;
        let mut reused = true;
        loop {
            // taken out while in use: a failure, or a deadline that drops this future, drops it
            let mut conn = match held.take() {
                Some(c) => c,
                None => {
                    reused = false;
                    match &self.pool {
                        Pool::Postgres(p) => LaneConn::Postgres(postgres::connect_one(p).await?),
                        Pool::MySql(p) => LaneConn::MySql(mysql::connect_one(p).await?),
                        Pool::Sqlite(_) | Pool::Plugin(_) => {
                            unreachable!("lane connections are only made for server dialects")
                        }
                    }
                }
            };
            let r = match &mut conn {
                LaneConn::Postgres(c) => postgres::write_on(c, m, now).await,
                LaneConn::MySql(c) => mysql::write_on(c, m, now).await,
            };
            match r {
                Ok(fenced) => {
                    *held = Some(conn);
                    return Ok(fenced);
                }
                // Any failure drops the connection: a failed transaction's rollback would wait
                // for the connection's next use, holding its locks until then.
                Err(e) if reused && is_connection_error(&e) => reused = false,
                Err(e) => return Err(e),
            }
        }
    }

    pub(super) async fn commit_with(
        &self,
        writes: &[VersionedWrite<'_>],
        lane: Option<&tokio::sync::Mutex<Option<LaneConn>>>,
    ) -> Result<Vec<String>, CommitError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(CommitError {
                error: Error::StoreClosed,
                statement_level: false,
            });
        }
        let merged = Merged::of(writes);
        if merged.sessions.is_empty() {
            return Ok(Vec::new());
        }
        self.check_file().map_err(|error| CommitError {
            error,
            statement_level: false,
        })?;
        let now = now_ms();
        let pool = &self.pool;
        let merged = &merged;
        // a deadlock or serialization failure rolled the transaction back: run it again
        let write = Box::pin(async move {
            let mut tries = 0;
            loop {
                let r = match lane {
                    Some(l) => self.write_in_lane(l, merged, now).await,
                    None => on_dialect!(pool, write(merged, now)),
                };
                match r {
                    Err(e) if tries < 3 && is_retryable(&e) => tries += 1,
                    r => return r,
                }
            }
        });
        let r = match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(fenced)) => Ok(fenced),
            Ok(Err(e)) => Err(CommitError {
                // a plug-in's failure may belong to one session's rows: try each write alone
                statement_level: matches!(e, sqlx::Error::Database(_))
                    || matches!(pool, Pool::Plugin(_)),
                error: self.err(e),
            }),
            Err(_) => Err(CommitError {
                error: Error::Timeout {
                    tier: Tier::Database,
                    op: "write",
                    millis: self.timeout.as_millis(),
                },
                statement_level: false,
            }),
        };
        if r.is_ok() {
            self.groups.transactions.fetch_add(1, Ordering::Relaxed);
            self.groups
                .writes
                .fetch_add(writes.len() as u64, Ordering::Relaxed);
        }
        r
    }
}
