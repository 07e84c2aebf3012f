//! Taking a session in the tiers: the durable tier hands out the epoch, the lease tier (Redis,
//! else SQL) decides, the durable tier's fence rises before the grant returns.

use std::time::Duration;

use super::{epoch_of, LeaseInfo, LeaseTiers};
use crate::error::{Error, Result};
use crate::model::SessionId;
use crate::redis::leasing::RedisTake;
use crate::sql::{LeaseRequest, StoredLease, TakeMode, Taken};

/// How often a take is handed a new epoch when Redis saw a higher one than SQL handed out.
const TAKE_TRIES: usize = 4;

/// A take's outcome, by the caller's clock.
pub(super) enum Took {
    Granted {
        epoch: u64,
        acquired_at_ms: i64,
        expires_in_ms: i64,
        /// The session's data was sealed before.
        sealed: bool,
    },
    Held(LeaseInfo),
    Moved,
}

/// Takes (acquires, claims or reacquires) a session in the tiers: the durable tier hands out
/// the epoch, the lease tier decides, the durable tier's fence rises before this returns.
pub(super) async fn take(
    cx: &LeaseTiers<'_>,
    sid: &SessionId,
    token: &str,
    holder: &str,
    ttl: Duration,
    mode: TakeMode,
) -> Result<Took> {
    let ttl_ms = ttl.as_millis().min(i64::MAX as u128) as i64;
    match (cx.redis, cx.sql) {
        (Some(redis), sql) => {
            let mut floor = 0u64;
            let base = match sql {
                // without SQL, Redis hands epochs out, above the floor purges left
                None => epoch_of(redis.counter("epoch-floor").await?),
                Some(_) => 0,
            };
            // a reacquisition asks the durable tier first: a purge or another writer's epoch
            // since loses the lease (Redis alone may have restarted empty meanwhile)
            let since = match mode {
                TakeMode::Reacquire { since } => Some(since.max(0) as u64),
                _ => None,
            };
            for _ in 0..TAKE_TRIES {
                let (epoch, sql_sealed) = match sql {
                    Some(sql) => match sql.allocate_epoch(sid, floor, cx.sealing, since).await? {
                        Some(got) => got,
                        None => return Ok(Took::Moved),
                    },
                    None => (0, false),
                };
                let taken = match redis
                    .take_lease(sid, token, holder, ttl, mode, epoch, base, cx.sealing)
                    .await?
                {
                    RedisTake::Behind { seen } => {
                        cx.events.warn(
                            "WARN_SQL_BEHIND",
                            "SQL handed out a lease epoch that Redis has already seen: SQL holds less than Redis (restored from an older backup?); taking a higher one",
                        );
                        floor = seen;
                        continue;
                    }
                    RedisTake::Taken(t, redis_sealed) => (t, redis_sealed || sql_sealed),
                };
                let (taken, sealed) = taken;
                return match taken {
                    Taken::Granted {
                        epoch: granted,
                        acquired_at,
                        expires_at,
                        ..
                    } => {
                        let granted = epoch_of(granted);
                        if let (Some(sql), true) = (sql, granted == epoch) {
                            if !sql.raise_epoch(sid, granted).await? {
                                // purged after the epoch was handed out
                                if !matches!(mode, TakeMode::Claim { .. }) {
                                    let _ = redis.release_lease(sid, token).await;
                                }
                                return Ok(Took::Moved);
                            }
                        }
                        Ok(Took::Granted {
                            epoch: granted,
                            acquired_at_ms: acquired_at,
                            expires_in_ms: expires_at - acquired_at,
                            sealed,
                        })
                    }
                    Taken::Held(l) => Ok(Took::Held(LeaseInfo {
                        holder: l.holder,
                        epoch: epoch_of(l.epoch),
                        acquired_at_ms: l.acquired_at,
                        // Redis answers the ms left, by its own clock
                        expires_in_ms: l.expires_at,
                        mine: false,
                    })),
                    Taken::Moved { .. } => Ok(Took::Moved),
                };
            }
            Err(Error::Redis(
                "the session's epochs in Redis kept moving above those SQL hands out".into(),
            ))
        }
        (None, Some(sql)) => {
            let req = LeaseRequest {
                sid,
                token,
                holder,
                ttl_ms,
                mode,
                floor: 0,
                seal: cx.sealing,
            };
            let (taken, now, sealed) = sql.lease_take(&req).await?;
            Ok(match taken {
                Taken::Granted {
                    epoch,
                    acquired_at,
                    expires_at,
                    ..
                } => Took::Granted {
                    epoch: epoch_of(epoch),
                    acquired_at_ms: acquired_at,
                    expires_in_ms: expires_at - now,
                    sealed,
                },
                Taken::Held(l) => Took::Held(info_of(&l, now, false)),
                Taken::Moved { .. } => Took::Moved,
            })
        }
        (None, None) => Err(Error::Config("a lease needs a Redis or SQL tier".into())),
    }
}

pub(super) fn info_of(l: &StoredLease, now: i64, mine: bool) -> LeaseInfo {
    LeaseInfo {
        holder: l.holder.clone(),
        epoch: epoch_of(l.epoch),
        acquired_at_ms: l.acquired_at,
        expires_in_ms: l.expires_at - now,
        mine,
    }
}
