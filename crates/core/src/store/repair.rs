//! Checking a session's Redis copy against SQL, and rebuilding it when it lost writes.
//!
//! A session's version counter is seeded, the first time this process touches the session,
//! from the highest version SQL and Redis hold for it. Redis keeps, per session, the highest
//! version applied (`ver`); this process remembers the highest version it knows Redis applied
//! (the *floor*). A Redis copy below the floor, or below SQL's version when first touched, lost
//! writes (restarted empty, restored from an older snapshot, failed over): it is rebuilt (its
//! dirty records flushed, everything else dropped) and reads go to SQL.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{flush_marks, Job, Op, Pipeline, Slot, Tiers};
use crate::error::{Error, Result};
use crate::model::SessionId;
use crate::redis::{Applied, Durability, WriteStamp};

impl Pipeline {
    /// The session's slot, validated: its version counter seeded from what the tiers hold, its
    /// Redis copy checked against SQL (and rebuilt when behind).
    pub(super) async fn session(&self, sid: &SessionId) -> Result<Arc<Slot>> {
        let slot = self.slot(sid);
        let connection = self.tiers.redis.as_ref().map_or(0, |r| r.reconnects());
        if slot.validated(connection) {
            return Ok(slot);
        }
        let gate = slot.clone();
        let _one = gate.gate.lock().await;
        if slot.validated(connection) {
            return Ok(slot);
        }
        let t = &self.tiers;
        let (rv, sv) = match (&t.redis, &t.sql) {
            (Some(r), Some(s)) => {
                let (meta, sv) = tokio::join!(r.meta(sid), s.session_version(sid));
                let (meta, sv) = (meta?, sv?);
                if meta.sql_behind || meta.ver > sv {
                    self.check_sql_behind(sid).await?;
                }
                (meta.ver, sv)
            }
            (Some(r), None) => (r.meta(sid).await?.ver, 0),
            (None, Some(s)) => (0, s.session_version(sid).await?),
            (None, None) => (0, 0),
        };
        let mut floor = rv;
        if t.redis.is_some() && t.sql.is_some() && (rv < sv || slot.is_suspect()) {
            self.submit(sid, slot.clone(), Op::Rebuild).await?;
            floor = sv;
        }
        let mut s = slot.state.lock();
        s.last = s.last.max(rv).max(sv);
        s.floor = s.floor.max(floor);
        s.validated = true;
        s.connection = connection;
        drop(s);
        Ok(slot)
    }

    /// Redis says it applied more of the session than SQL holds (its `ver` above SQL's version,
    /// or the mark of an earlier finding): SQL lost commits, restored from an older backup. A
    /// session written to Redis only (dirty records) is ahead of SQL by design; otherwise SQL is
    /// read again after Redis (a commit lands in SQL before Redis, so one that raced the first
    /// reads is seen now). Confirmed, the session is refused with `ERR_SQL_BEHIND` in every
    /// store (the mark is kept in Redis), the logger is told, until an operator accepts SQL's
    /// state: serving it would send Signal state back in time (Bad MAC), and a new write would
    /// hide the gap.
    pub(super) async fn check_sql_behind(&self, sid: &SessionId) -> Result<()> {
        let (Some(redis), Some(sql)) = (&self.tiers.redis, &self.tiers.sql) else {
            return Ok(());
        };
        let (meta, dirty) = redis.meta_and_dirty(sid).await?;
        if !meta.sql_behind {
            if dirty > 0 {
                return Ok(());
            }
            let sv = sql.session_version(sid).await?;
            if meta.ver <= sv {
                return Ok(());
            }
            redis.mark_sql_behind(sid).await?;
            self.tiers
                .counters
                .sql_behind
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.tiers.events.error(
                "ERR_SQL_BEHIND",
                "SQL holds less of a session than Redis applied (SQL restored from an older backup?): the session is refused until its state is accepted (store.acceptSqlState, or the command line's repair --accept-sql), rather than served from the older copy",
            );
        }
        Err(Error::SqlBehind(
            "SQL holds less of this session than Redis applied (SQL restored from an older backup?): reads and writes of it are refused until an operator accepts SQL's state (store.acceptSqlState(sessionId), or wa-auth-store repair <id> --accept-sql); serving the older state would break its Signal sessions".into(),
        ))
    }

    /// A read found the session's Redis copy below the floor: rebuild it (through the lane) so
    /// the next reads come from SQL.
    pub(super) async fn redis_behind(&self, sid: &SessionId, slot: &Arc<Slot>) -> Result<()> {
        self.tiers.events.warn(
            "WARN_REDIS_BEHIND",
            "a session's Redis copy is older than what this process wrote or read (Redis restarted, was restored from an older snapshot or failed over): rebuilding it from SQL",
        );
        slot.invalidate();
        self.session(sid).await.map(|_| ())
    }
}

/// A Redis step failed after the SQL commit: with SQL to rebuild from, rebuild before the next use;
/// without, just check Redis again.
pub(super) fn suspect(tiers: &Tiers, slot: &Slot) {
    if tiers.sql.is_some() {
        slot.suspect();
    } else {
        slot.invalidate();
    }
}

/// A write script found the session's Redis copy behind: rebuild it from SQL, then apply the
/// write again if only Redis holds it.
pub(super) async fn recover_write(tiers: &Tiers, job: &Job, v: u64) -> Result<()> {
    tiers.events.warn(
        "WARN_REDIS_BEHIND",
        "a session's Redis copy is older than what this process wrote (Redis restarted, was restored from an older snapshot or failed over): rebuilding it from SQL",
    );
    let floor = rebuild(tiers, &job.sid, &job.slot).await?;
    let (Some(redis), Some(w)) = (&tiers.redis, job.write()) else {
        return Ok(());
    };
    let Some(durability) = w.redis.filter(|d| *d != Durability::Durable) else {
        return Ok(()); // SQL holds it; reads now come from SQL
    };
    let stamp = WriteStamp {
        version: v,
        floor,
        epoch: Some(w.fence.epoch),
    };
    match redis
        .write(&job.sid, w.stored(), stamp, w.ttl, durability)
        .await?
    {
        Applied::Yes => {
            if durability == Durability::RedisOnly {
                redis.index_dirty_after_write(&job.sid).await?;
            }
            Ok(())
        }
        _ => Err(Error::Redis(
            "the session's Redis copy kept moving backwards while it was rebuilt".into(),
        )),
    }
}

/// Makes a session's Redis copy consistent with SQL again: flushes its dirty records (only over
/// older SQL rows), then drops everything else (but records written to Redis only after the
/// flush began: another process's write-behind) and raises its version to SQL's. Without SQL,
/// accepts what Redis has. Returns the new floor.
pub(super) async fn rebuild(tiers: &Tiers, sid: &SessionId, slot: &Slot) -> Result<u64> {
    let Some(redis) = &tiers.redis else {
        return Ok(0);
    };
    let floor = match &tiers.sql {
        Some(sql) => {
            let (_, flushed) = flush_marks(tiers, sid).await?;
            let sv = sql.session_version(sid).await?;
            redis.rebuild(sid, sv, &flushed).await?;
            tiers.counters.rebuilds.fetch_add(1, Ordering::Relaxed);
            // the cache stays: it holds what was acknowledged, or read after a check of Redis
            sv
        }
        None => {
            tiers.events.error(
                "ERR_REDIS",
                "a session's Redis copy lost writes and there is no SQL tier to rebuild it from",
            );
            redis.meta(sid).await?.ver
        }
    };
    let mut s = slot.state.lock();
    s.floor = floor;
    s.last = s.last.max(floor);
    s.suspect = false;
    Ok(floor)
}
