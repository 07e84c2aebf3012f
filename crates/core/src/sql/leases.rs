//! Lease rows and the lease decision every dialect makes inside its transaction (and a
//! persistence plug-in's driver, through the same function).

use crate::model::SessionId;

/// What an acquirer asks for.
pub struct LeaseRequest<'a> {
    pub sid: &'a SessionId,
    pub token: &'a str,
    pub holder: &'a str,
    pub ttl_ms: i64,
    pub force: bool,
}

/// A lease row as the database has it: `acquired` tells whether the request got it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRow {
    pub acquired: bool,
    pub token: String,
    pub holder: String,
    pub epoch: i64,
    pub expires_at: i64,
    pub acquired_at: i64,
    /// The database's clock when read (ms).
    pub now: i64,
}

/// The lease decision every dialect makes inside its transaction: `current` is the lease row
/// (if any), `session_epoch` the session's recorded epoch.
pub(crate) fn decide_lease(
    req: &LeaseRequest<'_>,
    current: Option<(String, String, i64, i64, i64)>,
    session_epoch: i64,
    now: i64,
) -> LeaseRow {
    if let Some((token, holder, epoch, expires_at, acquired_at)) = &current {
        let live = *expires_at > now;
        if live && token != req.token && !req.force {
            return LeaseRow {
                acquired: false,
                token: String::new(),
                holder: holder.clone(),
                epoch: *epoch,
                expires_at: *expires_at,
                acquired_at: *acquired_at,
                now,
            };
        }
    }
    let same = current.as_ref().is_some_and(|c| c.0 == req.token);
    let prior = current.as_ref().map_or(0, |c| c.2);
    let epoch = if same {
        prior.max(session_epoch)
    } else {
        prior.max(session_epoch) + 1
    };
    LeaseRow {
        acquired: true,
        token: req.token.to_string(),
        holder: req.holder.to_string(),
        epoch,
        expires_at: now + req.ttl_ms,
        acquired_at: if same {
            current.as_ref().map_or(now, |c| c.4)
        } else {
            now
        },
        now,
    }
}
