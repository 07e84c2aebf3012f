//! One owner per session across processes: a lease with an epoch, and fencing by that epoch.
//! This module owns the lease's state machine and every fencing verdict; the store asks it (and
//! is asked only to forget what it holds of a session: [`Forget`]).
//!
//! - **Where it lives**: in Redis when the store has Redis (`<p>:{s:<sid>}:l`, in the session's
//!   hash slot, lapsing by the server's clock), else in SQL (`wa_auth_leases`, by the database's
//!   clock). Epochs are handed out by the durable tier (SQL, else Redis), never by a process.
//! - **Every writer has an epoch of its own** (`crate::version`): a holder its lease's; a store
//!   writing a session it does not hold (a tool, `BaileysAuthStore` on an unheld session,
//!   `lease: false`) *claims* one on its first write. A claim is refused while another holder's
//!   lease lives (unless forced, or leases are off, which end that lease), and it raises the
//!   session's fence like an acquisition. So two writers never share an epoch and versions never
//!   tie; a writer whose epoch is behind is fenced and never silently loses.
//!
//! The invariants, each enforced here or in the tier named:
//! - **Durable tier first.** An epoch is handed out by the durable tier before it is granted,
//!   and the durable tier's fence is raised before the grant returns. A durable write is fenced
//!   by SQL alone: the Redis step of a write SQL committed is never refused (`redis/scripts/
//!   write.lua`), so a write answered with an error is never visible afterwards.
//! - **Expiry ends a lease.** A renewal after the lease lapsed is a new acquisition
//!   ([`TakeMode::Reacquire`]): a new epoch and the session's cached state dropped, or, when
//!   another writer took an epoch meanwhile, the lease is lost (`onLeaseLost`).
//! - **A fence belongs to its epoch.** A write of epoch e that was refused marks this store's
//!   lease lost only if that lease's epoch is e or lower ([`Leases::fenced`]).
//! - **Release is final.** Renewals and releases of one session run one at a time; once
//!   released, nothing of this store renews or takes the lease back.
//! - **The cache** serves a session only while this store holds its lease; losing it drops the
//!   session from the cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::events::Events;
use crate::model::SessionId;
use crate::redis::RedisTier;
use crate::sql::{SqlStore, TakeMode};

mod take;

use take::{info_of, take, Took};

/// The shortest lease ttl (the JavaScript facade reads it from the binding).
pub const MIN_TTL: Duration = Duration::from_millis(100);
/// Who holds a session while a forced write of a tool runs (named in others' errors).
const CLAIM_HOLDER: &str = "wa-auth-store writer";

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
struct Held {
    token: String,
    holder: String,
    epoch: u64,
    ttl: Duration,
    renewed: Instant,
    lost: bool,
    /// The session's data was sealed when the lease was taken.
    sealed: bool,
}

/// This store's standing on one session.
#[derive(Default)]
struct Standing {
    held: Option<Held>,
    /// An epoch claimed to write without holding the session, and whether the session's data
    /// was sealed then.
    claim: Option<(u64, bool)>,
    /// Takes, renewals and releases of the session, one at a time.
    gate: Arc<tokio::sync::Mutex<()>>,
}

/// The leases and claims of a store.
pub(crate) struct Leases {
    sessions: Mutex<HashMap<String, Standing>>,
    /// The token this store claims under (it never holds a lease with it).
    claim_token: String,
}

impl Default for Leases {
    fn default() -> Self {
        Leases {
            sessions: Mutex::new(HashMap::new()),
            claim_token: token(),
        }
    }
}

/// The epoch a write carries, whether it is a claim (a store not holding the session: fenced,
/// it may claim again and write once more), and whether the session's data is sealed (a store
/// without the encryption key may then clear it, but not write values: `rules::may_write`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fence {
    pub epoch: u64,
    pub claimed: bool,
    pub sealed: bool,
}

/// What a refused write of an epoch means for its writer ([`Leases::fenced`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// This store's lease was taken over: the write is refused, and so is every later one.
    Lost,
    /// A claim was overtaken by another writer: claim again and write anew.
    Claim,
    /// A write of an earlier epoch of this store (its lease or claim moved on since): refused,
    /// nothing else changes.
    Stale,
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
    /// Leases are on for the store (`lease: false`: claims do not wait for holders).
    pub leases_on: bool,
    /// The store seals what it writes (it has an encryption key).
    pub sealing: bool,
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

pub(super) fn held_by(info: &LeaseInfo) -> Error {
    locked(format!(
        "session is held by '{}' (lease epoch {}, taken {} ms ago, expires in {} ms); pass {{ force: true }} to write anyway",
        info.holder,
        info.epoch,
        (crate::sql::now_ms() - info.acquired_at_ms).max(0),
        info.expires_in_ms
    ))
}

/// A store without the encryption key would write values to a session whose data is sealed.
pub(crate) fn sealed_error() -> Error {
    Error::Config(
        "this session's data is sealed (encryption at rest): a store without the encryption key must not write plain values beside it; open the store with its encryption option (the command line: --key-env)".into(),
    )
}

pub(super) fn epoch_of(e: i64) -> u64 {
    e.max(0) as u64
}

impl Leases {
    /// This store's gate for a session's takes, renewals and releases.
    fn gate(&self, sid: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.sessions
            .lock()
            .entry(sid.to_string())
            .or_default()
            .gate
            .clone()
    }

    /// This store holds the session's lease and has not lost it.
    pub fn holds(&self, sid: &str) -> bool {
        self.sessions
            .lock()
            .get(sid)
            .and_then(|s| s.held.as_ref())
            .is_some_and(|h| !h.lost)
    }

    /// Whether this store's cache may serve the session: it holds the lease, and the lease has
    /// not lapsed by this process's clock (a process paused past its lease reads every tier
    /// afresh until a renewal or a write tells it whether the session is still its own).
    pub fn serves_cache(&self, sid: &str) -> bool {
        self.sessions
            .lock()
            .get(sid)
            .and_then(|s| s.held.as_ref())
            .is_some_and(|h| !h.lost && h.renewed + h.ttl > Instant::now())
    }

    /// [`take`], for a take that may end another holder's live lease (`ends`: a forced take, or
    /// a claim with leases off): once granted, it waits out what that lease had left before it
    /// returns. Until then that holder may still answer reads from its cache (it learns at its
    /// next renewal, every ttl/3, or at once by its own clock when its lease lapses), and a write
    /// acknowledged meanwhile would be older than what it reads.
    #[allow(clippy::too_many_arguments)]
    async fn take_ending(
        &self,
        cx: &LeaseTiers<'_>,
        sid: &SessionId,
        token: &str,
        holder: &str,
        ttl: Duration,
        mode: TakeMode,
        ends: bool,
    ) -> Result<Took> {
        let left = match ends {
            true => self
                .state(cx, sid)
                .await?
                .0
                .filter(|i| !i.mine && i.expires_in_ms > 0)
                .map(|i| i.expires_in_ms as u64),
            false => None,
        };
        let took = take(cx, sid, token, holder, ttl, mode).await?;
        if let (Some(ms), Took::Granted { .. }) = (left, &took) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        Ok(took)
    }

    /// The sessions whose leases this store holds.
    pub fn sessions(&self) -> Vec<String> {
        self.sessions
            .lock()
            .iter()
            .filter(|(_, s)| s.held.is_some())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Takes the session's lease, or says who holds it.
    pub async fn acquire(
        &self,
        cx: &LeaseTiers<'_>,
        sid: &SessionId,
        opts: &LeaseOptions,
    ) -> Result<LeaseOutcome> {
        if opts.ttl < MIN_TTL {
            return Err(Error::invalid(format!(
                "a lease ttl must be at least {} ms",
                MIN_TTL.as_millis()
            )));
        }
        if opts.holder.is_empty() || opts.holder.len() > 255 {
            return Err(Error::invalid("a lease holder id must be 1 to 255 bytes"));
        }
        let gate = self.gate(sid);
        let _one = gate.lock().await;
        let mine = self
            .sessions
            .lock()
            .get(&**sid)
            .and_then(|s| s.held.as_ref())
            .filter(|h| !h.lost)
            .map(|h| (h.token.clone(), h.epoch));
        let token = mine.as_ref().map_or_else(token, |(t, _)| t.clone());
        let started = Instant::now();
        let mode = TakeMode::Acquire { force: opts.force };
        let took = self
            .take_ending(cx, sid, &token, &opts.holder, opts.ttl, mode, opts.force)
            .await?;
        match took {
            Took::Granted {
                epoch,
                acquired_at_ms,
                expires_in_ms,
                sealed,
            } => {
                let fresh = mine.is_none_or(|(_, e)| e != epoch);
                let mut sessions = self.sessions.lock();
                let s = sessions.entry(sid.to_string()).or_default();
                s.claim = None;
                s.held = Some(Held {
                    token,
                    holder: opts.holder.clone(),
                    epoch,
                    ttl: opts.ttl,
                    renewed: started,
                    lost: false,
                    sealed: sealed || cx.sealing,
                });
                drop(sessions);
                if fresh {
                    // another holder may have written since: read every tier afresh
                    cx.forget.forget(sid);
                }
                Ok(LeaseOutcome::Acquired(LeaseInfo {
                    holder: opts.holder.clone(),
                    epoch,
                    acquired_at_ms,
                    expires_in_ms,
                    mine: true,
                }))
            }
            Took::Held(info) => Ok(LeaseOutcome::Held(info)),
            Took::Moved => Err(locked("the session moved while its lease was taken")),
        }
    }

    /// Extends this store's lease of the session. After it lapsed, takes it again under a new
    /// epoch (the session's cached state dropped), unless another writer took an epoch
    /// meanwhile. `false`: the lease is lost (or was released); the session leaves the cache.
    pub async fn renew(&self, cx: &LeaseTiers<'_>, sid: &SessionId) -> Result<bool> {
        let gate = self.gate(sid);
        let _one = gate.lock().await;
        let Some((token, holder, epoch, ttl)) = self
            .sessions
            .lock()
            .get(&**sid)
            .and_then(|s| s.held.as_ref())
            .filter(|h| !h.lost)
            .map(|h| (h.token.clone(), h.holder.clone(), h.epoch, h.ttl))
        else {
            return Ok(false);
        };
        let started = Instant::now();
        let kept = match (cx.redis, cx.sql) {
            (Some(redis), _) => redis.renew_lease(sid, &token, ttl).await?,
            (None, Some(sql)) => sql.lease_renew(sid, &token, ttl.as_millis() as i64).await?,
            (None, None) => false,
        };
        let new_epoch = if kept {
            Some(epoch)
        } else {
            let mode = TakeMode::Reacquire {
                since: epoch as i64,
            };
            match take(cx, sid, &token, &holder, ttl, mode).await? {
                Took::Granted { epoch, .. } => Some(epoch),
                Took::Held(_) | Took::Moved => None,
            }
        };
        match new_epoch {
            Some(e) => {
                if let Some(h) = self.held_mut(sid, |h| {
                    h.renewed = started;
                    let moved = h.epoch != e;
                    h.epoch = e;
                    moved
                }) {
                    if h {
                        // lapsed and taken again: another writer may have come and gone
                        cx.forget.forget(sid);
                    }
                }
                Ok(true)
            }
            None => {
                self.lose(cx, sid, u64::MAX);
                Ok(false)
            }
        }
    }

    fn held_mut<T>(&self, sid: &str, f: impl FnOnce(&mut Held) -> T) -> Option<T> {
        self.sessions
            .lock()
            .get_mut(sid)
            .and_then(|s| s.held.as_mut())
            .map(f)
    }

    /// Gives the lease (and any claim) up; idempotent. Once it returns, nothing of this store
    /// renews or recreates the lease.
    pub async fn release(&self, cx: &LeaseTiers<'_>, sid: &SessionId) -> Result<()> {
        let gate = self.gate(sid);
        let _one = gate.lock().await;
        let held = self.sessions.lock().get_mut(&**sid).and_then(|s| {
            s.claim = None;
            s.held.take()
        });
        let Some(h) = held else {
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

    /// Who holds the session's lease (`None`: nobody, or it lapsed), and the session's epoch.
    pub async fn state(
        &self,
        cx: &LeaseTiers<'_>,
        sid: &SessionId,
    ) -> Result<(Option<LeaseInfo>, u64)> {
        let mine = self
            .sessions
            .lock()
            .get(&**sid)
            .and_then(|s| s.held.as_ref())
            .filter(|h| !h.lost)
            .map(|h| h.token.clone());
        match (cx.redis, cx.sql) {
            (Some(redis), sql) => {
                let (lease, ep) = redis.lease(sid).await?;
                let sql_epoch = match sql {
                    Some(sql) => sql.session_epoch(sid).await?,
                    None => 0,
                };
                let info = lease.filter(|l| l.ttl_ms > 0).map(|l| LeaseInfo {
                    mine: mine.as_deref() == Some(l.token.as_str()),
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
                let info = row
                    .filter(|(l, now)| l.expires_at > *now)
                    .map(|(l, now)| info_of(&l, now, mine.as_deref() == Some(l.token.as_str())));
                Ok((info, epoch))
            }
            (None, None) => Ok((None, 0)),
        }
    }

    /// The epoch a write or clear of `sid` carries: the lease's when this store holds the
    /// session (renewed first if it may have lapsed), else a claim (taken now if this store has
    /// none, or when `force` asks for one that ends another holder's lease).
    pub async fn fence(&self, cx: &LeaseTiers<'_>, sid: &SessionId, force: bool) -> Result<Fence> {
        let (held, claim) = {
            let sessions = self.sessions.lock();
            let s = sessions.get(&**sid);
            (
                s.and_then(|s| s.held.as_ref()).map(|h| {
                    (
                        h.epoch,
                        h.lost,
                        h.renewed + h.ttl <= Instant::now(),
                        h.sealed,
                    )
                }),
                s.and_then(|s| s.claim),
            )
        };
        match held {
            Some((_, true, _, _)) if !force => {
                return Err(locked(
                    "this process lost the session's lease: another process holds it now (close this socket)",
                ))
            }
            Some((epoch, false, lapsed, sealed)) => {
                if !lapsed {
                    return Ok(Fence {
                        epoch,
                        claimed: false,
                        sealed,
                    });
                }
                // paused past the lease (GC, SIGSTOP)? make sure it is still ours first
                if !self.renew(cx, sid).await? {
                    return Err(locked(
                        "this process's lease of the session lapsed and another writer took the session (close this socket)",
                    ));
                }
                let epoch = self
                    .sessions
                    .lock()
                    .get(&**sid)
                    .and_then(|s| s.held.as_ref())
                    .map_or(epoch, |h| h.epoch);
                return Ok(Fence {
                    epoch,
                    claimed: false,
                    sealed,
                });
            }
            _ => {}
        }
        if let (Some((epoch, sealed)), false) = (claim, force) {
            return Ok(Fence {
                epoch,
                claimed: true,
                sealed,
            });
        }
        self.claim(cx, sid, force, None, true).await
    }

    /// Claims an epoch to write `sid` under without holding it (see the module docs). Writes
    /// that start together share one claim: a claim this store took meanwhile is used, unless it
    /// is `replacing` (or older: a tier refused it) or `force` asks for a new one.
    /// `wait`: wait out a live lease of another holder it ends (see [`Self::take_ending`]); a
    /// lane claiming again does not (it would hold up every session of the lane).
    pub async fn claim(
        &self,
        cx: &LeaseTiers<'_>,
        sid: &SessionId,
        force: bool,
        replacing: Option<u64>,
        wait: bool,
    ) -> Result<Fence> {
        let gate = self.gate(sid);
        let _one = gate.lock().await;
        let current = self.sessions.lock().get(&**sid).and_then(|s| s.claim);
        if let (Some((epoch, sealed)), false) = (current, force) {
            if replacing.is_none_or(|r| epoch > r) {
                return Ok(Fence {
                    epoch,
                    claimed: true,
                    sealed,
                });
            }
        }
        let mode = TakeMode::Claim {
            force,
            check_live: cx.leases_on,
        };
        let ttl = Duration::from_secs(30);
        let ends = wait && (force || !cx.leases_on);
        let took = self
            .take_ending(cx, sid, &self.claim_token, CLAIM_HOLDER, ttl, mode, ends)
            .await?;
        match took {
            Took::Granted { epoch, sealed, .. } => {
                let sealed = sealed || cx.sealing;
                let mut sessions = self.sessions.lock();
                let s = sessions.entry(sid.to_string()).or_default();
                if let Some(h) = s.held.as_mut() {
                    // a forced claim over this store's own lost lease: that lease is over
                    h.lost = true;
                }
                s.claim = Some((epoch, sealed));
                drop(sessions);
                // others wrote before this claim: what this store knew of the session is old
                cx.forget.forget(sid);
                Ok(Fence {
                    epoch,
                    claimed: true,
                    sealed,
                })
            }
            Took::Held(info) => Err(held_by(&info)),
            Took::Moved => Err(locked("the session was purged while it was claimed")),
        }
    }

    /// A write of `epoch` was refused by a tier: what it means for this store. A lease of a
    /// later epoch, or a claim taken since, is left alone (the refusal belongs to its epoch).
    pub fn fenced(&self, cx: &LeaseTiers<'_>, sid: &SessionId, epoch: u64) -> Verdict {
        let mut sessions = self.sessions.lock();
        let Some(s) = sessions.get_mut(&**sid) else {
            return Verdict::Stale;
        };
        if let Some(h) = s.held.as_mut() {
            if h.epoch > epoch {
                return Verdict::Stale;
            }
            if !h.lost {
                drop(sessions);
                self.lose(cx, sid, epoch);
            }
            return Verdict::Lost;
        }
        match s.claim {
            Some((c, _)) if c <= epoch => {
                // overtaken: the next claim (Leases::claim, replacing it) takes a new epoch
                drop(sessions);
                cx.forget.forget(sid);
                Verdict::Claim
            }
            _ => Verdict::Stale,
        }
    }

    /// Marks this store's lease of `sid` lost if its epoch is `epoch` or lower: the store forgets
    /// what it holds of the session, the logger is told.
    fn lose(&self, cx: &LeaseTiers<'_>, sid: &SessionId, epoch: u64) {
        let newly = self
            .held_mut(sid, |h| {
                let was = !h.lost && h.epoch <= epoch;
                if was {
                    h.lost = true;
                }
                was
            })
            .unwrap_or(false);
        if newly {
            cx.forget.forget(sid);
            cx.events.warn(
                "ERR_SESSION_LOCKED",
                "this process lost a session's lease to another process; its writes to it are refused",
            );
        }
    }
}
