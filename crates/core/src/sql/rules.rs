//! The rules of the durable tier, defined once: fencing by epoch, taking a lease (or claiming a
//! session without one), and what a write does to a stored row. The SQL dialects apply them in
//! their transactions (the lease decision of a store without Redis goes through
//! [`take_lease`]), a persistence plug-in's driver calls the same functions through the binding,
//! and where a rule must also be written in another language (the SQL statements of a commit,
//! the Redis lease script) the tests run that form against the cases these functions pass.
//!
//! Epochs (see `crate::version`): every writer of a session writes under an epoch of its own.
//! The session row keeps two numbers: `epoch`, the highest epoch that has taken the session
//! (a write of a lower epoch is fenced), and `epoch_seq`, the highest epoch handed out (an epoch
//! is handed out before the tier that decides about leases has granted it, so two acquirers
//! racing never get the same one, even when that tier restarts).

use crate::model::SessionId;

/// Whether a write of `writer` epoch is refused by a session whose row has `stored` epoch
/// (`None`: no row). Every writer's row exists from the moment it took its epoch, so a missing
/// row means the session was purged since: the writer is fenced too.
pub fn is_fenced(stored: Option<i64>, writer: i64) -> bool {
    stored.is_none_or(|s| s > writer)
}

/// Whether a key row at `stored` version (`None`: no row) is replaced by a write at `incoming`.
pub fn replaces(stored: Option<i64>, incoming: i64) -> bool {
    stored.is_none_or(|s| s < incoming)
}

/// Whether a key row is read: a value (not a tombstone) at or above the cleared watermark.
pub fn is_live(has_value: bool, version: i64, cleared: i64) -> bool {
    has_value && version >= cleared
}

/// A session row's epochs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Epochs {
    /// The highest epoch that took the session: writes below it are fenced.
    pub epoch: i64,
    /// The highest epoch handed out for the session.
    pub seq: i64,
}

/// The next epoch to hand out: above every epoch the session has seen (and above `floor`, what
/// the caller saw elsewhere, e.g. a Redis that holds a higher one).
pub fn allocate(epochs: Epochs, floor: i64) -> i64 {
    epochs.seq.max(epochs.epoch).max(floor) + 1
}

/// Whether a holder whose lease of epoch `since` lapsed may take the session again: the
/// session's row is still there (`epochs`; a purge removes it) and no writer took an epoch
/// above `since` meanwhile. Otherwise the lease is lost.
pub fn may_reacquire(epochs: Option<Epochs>, since: i64) -> bool {
    epochs.is_some_and(|e| e.epoch <= since)
}

/// How a lease is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TakeMode {
    /// Become the session's holder (`force`: even while another holder's lease is live, which
    /// ends it).
    Acquire { force: bool },
    /// Take an epoch to write under without holding the session: refused while another
    /// holder's lease is live, unless `force` or `!check_live` (leases off), which end it.
    Claim { force: bool, check_live: bool },
    /// This holder's lease of epoch `since` expired: take the session again under a new epoch,
    /// unless another writer took an epoch meanwhile (then the lease is lost).
    Reacquire { since: i64 },
}

/// What an acquirer asks for.
#[derive(Clone, Copy, Debug)]
pub struct LeaseRequest<'a> {
    pub sid: &'a SessionId,
    pub token: &'a str,
    pub holder: &'a str,
    pub ttl_ms: i64,
    pub mode: TakeMode,
    /// The lowest epoch to hand out (what the caller saw elsewhere).
    pub floor: i64,
    /// The taker seals what it writes (it has the encryption key).
    pub seal: bool,
}

/// A lease as the durable tier stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredLease {
    pub token: String,
    pub holder: String,
    pub epoch: i64,
    pub expires_at: i64,
    pub acquired_at: i64,
}

/// What happens to the lease row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseWrite {
    Keep,
    Put(StoredLease),
    Delete,
}

/// The decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Taken {
    /// Taken under `epoch`; the lease row and the session's epochs are written as given.
    Granted {
        epoch: i64,
        acquired_at: i64,
        expires_at: i64,
        lease: LeaseWrite,
        epochs: Epochs,
    },
    /// Another holder's live lease.
    Held(StoredLease),
    /// Another writer took an epoch after `since` (a reacquisition is refused: the lease is lost).
    Moved { epoch: i64 },
}

/// Whether a writer may write values to a session: one that seals (`seal`: it has the
/// encryption key) always; one that does not, only while the session's data is not sealed
/// (`sealed`: a writer with a key took the session). Sealed data never gets plain values beside
/// it; clears and deletes, which write no value, are not values.
pub fn may_write(sealed: bool, seal: bool) -> bool {
    seal || !sealed
}

/// The lease decision of a durable tier that holds the lease itself: `current` is the lease row
/// (if any), `epochs` the session row's, `missing` whether the session row had to be created
/// (it was purged, or never written), `now` the tier's clock. (A grant also marks the session
/// sealed when the taker seals: see [`may_write`].)
pub fn take_lease(
    req: &LeaseRequest<'_>,
    current: Option<&StoredLease>,
    epochs: Epochs,
    missing: bool,
    now: i64,
) -> Taken {
    let live = current.filter(|l| l.expires_at > now);
    let mine = live.filter(|l| l.token == req.token);
    let other = live.filter(|l| l.token != req.token);
    let extend = |l: &StoredLease| Taken::Granted {
        epoch: l.epoch,
        acquired_at: l.acquired_at,
        expires_at: now + req.ttl_ms,
        lease: LeaseWrite::Put(StoredLease {
            expires_at: now + req.ttl_ms,
            ..l.clone()
        }),
        epochs,
    };
    match req.mode {
        TakeMode::Reacquire { since } => {
            if !may_reacquire((!missing).then_some(epochs), since) {
                return Taken::Moved {
                    epoch: epochs.epoch,
                };
            }
            if let Some(l) = mine {
                return extend(l);
            }
            if let Some(l) = other {
                return Taken::Held(l.clone());
            }
        }
        TakeMode::Acquire { force } => {
            if let Some(l) = mine {
                return extend(l);
            }
            if let (Some(l), false) = (other, force) {
                return Taken::Held(l.clone());
            }
        }
        TakeMode::Claim { force, check_live } => {
            if let (Some(l), true, false) = (other, check_live, force) {
                return Taken::Held(l.clone());
            }
        }
    }
    let floor = req.floor.max(current.map_or(0, |l| l.epoch));
    let epoch = allocate(epochs, floor);
    let lease = match req.mode {
        TakeMode::Claim { .. } if other.is_some() => LeaseWrite::Delete,
        TakeMode::Claim { .. } => LeaseWrite::Keep,
        _ => LeaseWrite::Put(StoredLease {
            token: req.token.to_string(),
            holder: req.holder.to_string(),
            epoch,
            expires_at: now + req.ttl_ms,
            acquired_at: now,
        }),
    };
    Taken::Granted {
        epoch,
        acquired_at: now,
        expires_at: now + req.ttl_ms,
        lease,
        epochs: Epochs { epoch, seq: epoch },
    }
}

/// What a renewal of a lease the durable tier holds does: `Some(expires_at)` extends it (the
/// token holds it and it has not expired); `None` means it expired or is another's, and the
/// holder must reacquire ([`TakeMode::Reacquire`]).
pub fn renew(current: Option<&StoredLease>, token: &str, ttl_ms: i64, now: i64) -> Option<i64> {
    current
        .filter(|l| l.token == token && l.expires_at > now)
        .map(|_| now + ttl_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(token: &str, epoch: i64, expires_at: i64) -> StoredLease {
        StoredLease {
            token: token.into(),
            holder: format!("holder-{token}"),
            epoch,
            expires_at,
            acquired_at: 0,
        }
    }

    fn req(sid: &SessionId, token: &'static str, mode: TakeMode) -> LeaseRequest<'static> {
        // the tests keep `sid` alive for their whole body
        let sid: &'static SessionId = Box::leak(Box::new(sid.clone()));
        LeaseRequest {
            sid,
            token,
            holder: token,
            ttl_ms: 1000,
            mode,
            floor: 0,
            seal: false,
        }
    }

    fn granted_epoch(t: &Taken) -> i64 {
        match t {
            Taken::Granted { epoch, .. } => *epoch,
            other => panic!("not granted: {other:?}"),
        }
    }

    #[test]
    fn fencing_refuses_lower_epochs_and_purged_sessions() {
        assert!(!is_fenced(Some(3), 3));
        assert!(!is_fenced(Some(3), 4));
        assert!(is_fenced(Some(4), 3));
        assert!(is_fenced(None, 9));
    }

    #[test]
    fn rows_are_replaced_by_higher_versions_only() {
        assert!(replaces(None, 1));
        assert!(replaces(Some(1), 2));
        assert!(!replaces(Some(2), 2), "a tie is never applied");
        assert!(!replaces(Some(3), 2));
        assert!(is_live(true, 5, 5) && !is_live(true, 4, 5) && !is_live(false, 9, 0));
    }

    #[test]
    fn every_grant_is_above_every_epoch_seen() {
        let sid = SessionId::new("s").unwrap();
        let e = Epochs { epoch: 4, seq: 7 };
        let t = take_lease(
            &req(&sid, "a", TakeMode::Acquire { force: false }),
            None,
            e,
            false,
            10,
        );
        assert_eq!(granted_epoch(&t), 8);
        let old = lease("z", 12, 5); // an expired lease of a higher epoch
        let t = take_lease(
            &req(&sid, "a", TakeMode::Acquire { force: false }),
            Some(&old),
            e,
            false,
            10,
        );
        assert_eq!(granted_epoch(&t), 13);
        let mut r = req(
            &sid,
            "a",
            TakeMode::Claim {
                force: false,
                check_live: true,
            },
        );
        r.floor = 40;
        assert_eq!(granted_epoch(&take_lease(&r, None, e, false, 10)), 41);
    }

    #[test]
    fn a_live_lease_of_another_is_refused_unless_forced_and_a_forced_take_ends_it() {
        let sid = SessionId::new("s").unwrap();
        let e = Epochs { epoch: 2, seq: 2 };
        let live = lease("b", 2, 100);
        for mode in [
            TakeMode::Acquire { force: false },
            TakeMode::Claim {
                force: false,
                check_live: true,
            },
            TakeMode::Reacquire { since: 2 },
        ] {
            let t = take_lease(&req(&sid, "a", mode), Some(&live), e, false, 10);
            assert_eq!(t, Taken::Held(live.clone()), "{mode:?}");
        }
        let t = take_lease(
            &req(
                &sid,
                "a",
                TakeMode::Claim {
                    force: true,
                    check_live: true,
                },
            ),
            Some(&live),
            e,
            false,
            10,
        );
        assert!(
            matches!(
                t,
                Taken::Granted {
                    epoch: 3,
                    lease: LeaseWrite::Delete,
                    ..
                }
            ),
            "{t:?}"
        );
        let t = take_lease(
            &req(
                &sid,
                "a",
                TakeMode::Claim {
                    force: false,
                    check_live: false,
                },
            ),
            Some(&live),
            e,
            false,
            10,
        );
        assert!(
            matches!(
                t,
                Taken::Granted {
                    epoch: 3,
                    lease: LeaseWrite::Delete,
                    ..
                }
            ),
            "{t:?}"
        );
        let t = take_lease(
            &req(&sid, "a", TakeMode::Acquire { force: true }),
            Some(&live),
            e,
            false,
            10,
        );
        assert!(
            matches!(&t, Taken::Granted { epoch: 3, lease: LeaseWrite::Put(l), .. } if l.token == "a"),
            "{t:?}"
        );
    }

    #[test]
    fn the_same_holder_keeps_its_epoch_while_its_lease_lives() {
        let sid = SessionId::new("s").unwrap();
        let e = Epochs { epoch: 5, seq: 6 };
        let mine = lease("a", 5, 100);
        let t = take_lease(
            &req(&sid, "a", TakeMode::Acquire { force: false }),
            Some(&mine),
            e,
            false,
            10,
        );
        assert!(
            matches!(&t, Taken::Granted { epoch: 5, expires_at: 1010, epochs, .. } if *epochs == e),
            "{t:?}"
        );
        // once it expired, taking it again is a new acquisition with a new epoch
        let t = take_lease(
            &req(&sid, "a", TakeMode::Acquire { force: false }),
            Some(&mine),
            e,
            false,
            200,
        );
        assert_eq!(granted_epoch(&t), 7);
    }

    #[test]
    fn a_reacquisition_is_lost_once_another_writer_took_an_epoch() {
        let sid = SessionId::new("s").unwrap();
        let expired = lease("a", 5, 5);
        let quiet = Epochs { epoch: 5, seq: 5 };
        let t = take_lease(
            &req(&sid, "a", TakeMode::Reacquire { since: 5 }),
            Some(&expired),
            quiet,
            false,
            10,
        );
        assert_eq!(granted_epoch(&t), 6);
        let moved = Epochs { epoch: 6, seq: 6 };
        let t = take_lease(
            &req(&sid, "a", TakeMode::Reacquire { since: 5 }),
            Some(&expired),
            moved,
            false,
            10,
        );
        assert_eq!(t, Taken::Moved { epoch: 6 });
        // a purged session row is gone with its fence: the holder lost it too
        let t = take_lease(
            &req(&sid, "a", TakeMode::Reacquire { since: 5 }),
            None,
            Epochs::default(),
            true,
            10,
        );
        assert_eq!(t, Taken::Moved { epoch: 0 });
    }

    #[test]
    fn a_renewal_extends_only_a_live_lease_of_the_same_token() {
        let l = lease("a", 1, 100);
        assert_eq!(renew(Some(&l), "a", 50, 60), Some(110));
        assert_eq!(
            renew(Some(&l), "a", 50, 100),
            None,
            "expired: a renewal is a reacquisition"
        );
        assert_eq!(renew(Some(&l), "b", 50, 60), None);
        assert_eq!(renew(None, "a", 50, 60), None);
    }

    #[test]
    fn plain_values_never_go_beside_sealed_ones() {
        assert!(may_write(false, false) && may_write(true, true) && may_write(false, true));
        assert!(!may_write(true, false));
    }
}
