//! One owner per session across processes: a lease with an epoch, and fencing by that epoch.
//!
//! - **Where it lives**: in Redis when the store has Redis (`<p>:{s:<sid>}:l`, in the session's
//!   hash slot, expiring by the server's clock), else in SQL (`wa_auth_leases`, expiring by the
//!   database's clock). The epoch is kept in SQL either way (`wa_auth_sessions.epoch`), and in
//!   the session's Redis meta (`ep`): a Redis that restarts empty cannot hand out an old epoch.
//! - **Epochs** only grow: a new holder takes one above every epoch the session has seen; the
//!   same holder (token) renewing or re-taking an expired lease nobody else took keeps its own.
//! - **Fencing**: every write and clear carries the writer's epoch; the Redis write script and the
//!   SQL transaction refuse it when the session's epoch is higher, so a holder that was paused
//!   past its lease cannot write after a successor took over, in any tier.
//! - **Others' writes**: with leases on, a write by a store that does not hold the session is
//!   refused while another holder's lease is live (unless forced, which takes a new epoch and so
//!   fences that holder), and carries the session's current epoch otherwise.
//! - **The cache** serves a session only while this store holds its lease; losing it drops the
//!   session from the cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::events::Events;
use crate::model::SessionId;
use crate::redis::RedisTier;
use crate::sql::LeaseRequest;
use crate::sql::SqlStore;

/// What an acquirer asks for.
#[derive(Clone, Debug)]
pub struct LeaseOptions {
    pub ttl: Duration,
    /// Who holds it, as others will be told (a pod or host name).
    pub holder: String,
    /// Take it even while another holder's lease is live (fences that holder).
    pub force: bool,
}

/// A session's lease as the tiers hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    pub holder: String,
    pub epoch: u64,
    /// When the holder took it (ms since the epoch, by the holder's or the database's clock).
    pub acquired_at_ms: i64,
    /// Milliseconds until it expires (<= 0: expired).
    pub expires_in_ms: i64,
    /// Held by this store.
    pub mine: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseOutcome {
    Acquired(LeaseInfo),
    /// Another holder's live lease.
    Held(LeaseInfo),
}

/// A lease this store holds.
pub(crate) struct Held {
    token: String,
    holder: String,
    epoch: u64,
    ttl: Duration,
    renewed: Instant,
    lost: bool,
}

/// The leases a store holds, shared with its write lanes (they learn of fencing first).
#[derive(Default)]
pub(crate) struct Leases {
    held: Mutex<HashMap<String, Held>>,
}

/// The epoch a write carries, and whether it took the lease just for this write (force).
#[derive(Clone, Copy)]
pub(crate) struct Fence {
    pub epoch: Option<u64>,
    pub release: bool,
}

impl Leases {
    /// This store holds the session's lease and has not lost it.
    pub fn holds(&self, sid: &str) -> bool {
        self.held.lock().get(sid).is_some_and(|h| !h.lost)
    }

    /// The sessions whose leases this store holds.
    pub fn sessions(&self) -> Vec<String> {
        self.held.lock().keys().cloned().collect()
    }

    /// Marks a lease lost (a write was fenced, a renewal failed). Returns whether it was held.
    pub fn lose(&self, sid: &str) -> bool {
        match self.held.lock().get_mut(sid) {
            Some(h) if !h.lost => {
                h.lost = true;
                true
            }
            _ => false,
        }
    }
}

/// What a lease change asks of the store: forget what it holds of a session (its cache, what it
/// knew of the session's Redis copy), since another holder may have written meanwhile.
pub(crate) trait Forget: Sync {
    fn forget(&self, sid: &SessionId);
}

/// The tiers a lease lives in, and where its changes are told.
pub(crate) struct LeaseTiers<'a> {
    pub redis: Option<&'a RedisTier>,
    pub sql: Option<&'a SqlStore>,
    pub events: &'a Events,
    pub forget: &'a dyn Forget,
    /// Leases are on for the store (`lease: false` turns every fence off).
    pub leases_on: bool,
}

fn token() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let stack = &nanos as *const u128 as usize;
    format!(
        "{:x}-{nanos:x}-{:x}-{stack:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub(crate) fn locked(msg: impl Into<String>) -> Error {
    Error::SessionLocked(msg.into())
}

impl Leases {
    /// Takes the session's lease, or says who holds it.
    pub async fn acquire(
        &self,
        cx: &LeaseTiers<'_>,
        sid: &SessionId,
        opts: &LeaseOptions,
    ) -> Result<LeaseOutcome> {
        if opts.ttl < Duration::from_millis(100) {
            return Err(Error::invalid("a lease ttl must be at least 100 ms"));
        }
        if opts.holder.is_empty() || opts.holder.len() > 255 {
            return Err(Error::invalid("a lease holder id must be 1 to 255 bytes"));
        }
        let mine = self.held.lock().get(&**sid).map(|h| h.token.clone());
        let token = mine.unwrap_or_else(token);
        let started = Instant::now();
        let info = match (cx.redis, cx.sql) {
            (Some(redis), sql) => {
                let min_epoch = match sql {
                    Some(sql) => sql.session_epoch(sid).await?,
                    None => 0,
                };
                let l = redis
                    .acquire_lease(sid, &token, &opts.holder, opts.ttl, min_epoch, opts.force)
                    .await?;
                if l.acquired {
                    if let Some(sql) = sql {
                        // fencing must survive a Redis that restarts empty
                        if let Err(e) = sql.raise_epoch(sid, l.epoch).await {
                            let _ = redis.release_lease(sid, &token).await;
                            return Err(e);
                        }
                    }
                }
                let age = crate::sql::now_ms() - l.acquired_at_ms;
                (
                    l.acquired,
                    LeaseInfo {
                        holder: l.holder,
                        epoch: l.epoch,
                        acquired_at_ms: l.acquired_at_ms,
                        expires_in_ms: l.ttl_ms,
                        mine: l.acquired,
                    },
                    age,
                )
            }
            (None, Some(sql)) => {
                let req = LeaseRequest {
                    sid,
                    token: &token,
                    holder: &opts.holder,
                    ttl_ms: opts.ttl.as_millis() as i64,
                    force: opts.force,
                };
                let row = sql.lease_acquire(&req).await?;
                let age = row.now - row.acquired_at;
                (
                    row.acquired,
                    LeaseInfo {
                        holder: row.holder,
                        epoch: row.epoch.max(0) as u64,
                        acquired_at_ms: row.acquired_at,
                        expires_in_ms: row.expires_at - row.now,
                        mine: row.acquired,
                    },
                    age,
                )
            }
            (None, None) => return Err(Error::Config("a lease needs a Redis or SQL tier".into())),
        };
        let (acquired, info, _age) = info;
        if !acquired {
            return Ok(LeaseOutcome::Held(info));
        }
        let fresh = {
            let mut held = self.held.lock();
            let fresh = held
                .get(&**sid)
                .is_none_or(|h| h.epoch != info.epoch || h.lost);
            held.insert(
                sid.to_string(),
                Held {
                    token,
                    holder: opts.holder.clone(),
                    epoch: info.epoch,
                    ttl: opts.ttl,
                    renewed: started,
                    lost: false,
                },
            );
            fresh
        };
        if fresh {
            // another holder may have written since: read every tier afresh
            cx.forget.forget(sid);
        }
        Ok(LeaseOutcome::Acquired(info))
    }

    /// Extends this store's lease of the session. `false`: it was lost (another holder took
    /// over, or it was forced away); the session then leaves the cache.
    pub async fn renew(&self, cx: &LeaseTiers<'_>, sid: &SessionId) -> Result<bool> {
        let Some((token, holder, epoch, ttl, lost)) = self
            .held
            .lock()
            .get(&**sid)
            .map(|h| (h.token.clone(), h.holder.clone(), h.epoch, h.ttl, h.lost))
        else {
            return Ok(false);
        };
        if lost {
            return Ok(false);
        }
        let started = Instant::now();
        let kept = match (cx.redis, cx.sql) {
            (Some(redis), _) => redis.renew_lease(sid, &token, &holder, ttl, epoch).await?,
            (None, Some(sql)) => sql.lease_renew(sid, &token, ttl.as_millis() as i64).await?,
            (None, None) => false,
        };
        if kept {
            if let Some(h) = self.held.lock().get_mut(&**sid) {
                h.renewed = started;
            }
        } else {
            self.lost(cx, sid);
        }
        Ok(kept)
    }

    /// Gives the lease up (idempotent).
    pub async fn release(&self, cx: &LeaseTiers<'_>, sid: &SessionId) -> Result<()> {
        let Some(h) = self.held.lock().remove(&**sid) else {
            return Ok(());
        };
        cx.forget.forget(sid);
        if h.lost {
            return Ok(());
        }
        match (cx.redis, cx.sql) {
            (Some(redis), _) => redis.release_lease(sid, &h.token).await,
            (None, Some(sql)) => sql.lease_release(sid, &h.token).await,
            (None, None) => Ok(()),
        }
    }

    /// Who holds the session's lease (`None`: nobody, or it expired), and the session's epoch.
    pub async fn state(
        &self,
        cx: &LeaseTiers<'_>,
        sid: &SessionId,
    ) -> Result<(Option<LeaseInfo>, u64)> {
        let mine = self
            .held
            .lock()
            .get(&**sid)
            .filter(|h| !h.lost)
            .map(|h| h.epoch);
        match (cx.redis, cx.sql) {
            (Some(redis), sql) => {
                let (lease, ep) = redis.lease(sid).await?;
                let sql_epoch = match sql {
                    Some(sql) => sql.session_epoch(sid).await?,
                    None => 0,
                };
                let info = lease.filter(|l| l.ttl_ms != -2).map(|l| LeaseInfo {
                    mine: mine == Some(l.epoch),
                    holder: l.holder,
                    epoch: l.epoch,
                    acquired_at_ms: l.acquired_at_ms,
                    expires_in_ms: l.ttl_ms,
                });
                Ok((info, ep.max(sql_epoch)))
            }
            (None, Some(sql)) => {
                let row = sql.lease_info(sid).await?;
                let epoch = sql.session_epoch(sid).await?;
                let info = row.filter(|r| r.expires_at > r.now).map(|r| LeaseInfo {
                    mine: mine == Some(r.epoch.max(0) as u64),
                    holder: r.holder,
                    epoch: r.epoch.max(0) as u64,
                    acquired_at_ms: r.acquired_at,
                    expires_in_ms: r.expires_at - r.now,
                });
                Ok((info, epoch))
            }
            (None, None) => Ok((None, 0)),
        }
    }

    /// The epoch a write or clear of `sid` carries (see the module docs).
    pub async fn fence(&self, cx: &LeaseTiers<'_>, sid: &SessionId, force: bool) -> Result<Fence> {
        if !cx.leases_on {
            return Ok(Fence {
                epoch: None,
                release: false,
            });
        }
        let held = self
            .held
            .lock()
            .get(&**sid)
            .map(|h| (h.epoch, h.lost, h.renewed + h.ttl <= Instant::now()));
        match held {
            Some((_, true, _)) if !force => Err(locked(
                "this process lost the session's lease: another process holds it now (close this socket)",
            )),
            Some((epoch, false, expired)) => {
                // paused past the lease (GC, SIGSTOP)? make sure it is still ours first
                if expired && !self.renew(cx, sid).await? {
                    return Err(locked(
                        "this process's lease of the session expired and another process took it (close this socket)",
                    ));
                }
                Ok(Fence {
                    epoch: Some(epoch),
                    release: false,
                })
            }
            _ => {
                let (info, epoch) = self.state(cx, sid).await?;
                match info {
                    Some(i) if i.expires_in_ms > 0 && !i.mine => {
                        if !force {
                            return Err(locked(format!(
                                "session is held by '{}' (lease epoch {}, taken {} ms ago, expires in {} ms); pass {{ force: true }} to write anyway",
                                i.holder,
                                i.epoch,
                                (crate::sql::now_ms() - i.acquired_at_ms).max(0),
                                i.expires_in_ms
                            )));
                        }
                        let opts = LeaseOptions {
                            ttl: Duration::from_secs(30),
                            holder: "wa-auth-store force".into(),
                            force: true,
                        };
                        match Box::pin(self.acquire(cx, sid, &opts)).await? {
                            LeaseOutcome::Acquired(i) => Ok(Fence {
                                epoch: Some(i.epoch),
                                release: true,
                            }),
                            LeaseOutcome::Held(_) => Err(locked("could not force the lease")),
                        }
                    }
                    _ => Ok(Fence {
                        epoch: Some(epoch),
                        release: false,
                    }),
                }
            }
        }
    }

    /// The lease was lost: the store forgets what it holds of the session, the logger is told.
    pub fn lost(&self, cx: &LeaseTiers<'_>, sid: &SessionId) {
        if self.lose(sid) {
            cx.forget.forget(sid);
            cx.events.warn(
                "ERR_SESSION_LOCKED",
                "this process lost a session's lease to another process; its writes to it are refused",
            );
        }
    }
}
