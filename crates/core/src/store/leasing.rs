//! The store's side of session leases: the lease itself (its state machine, every fencing
//! verdict) is `crate::lease`; the store gives it the tiers and forgets what it holds of a
//! session when the lease says another holder may have written.

use crate::error::Result;
use crate::lease::{Fence, Forget, LeaseInfo, LeaseOptions, LeaseOutcome, LeaseTiers};
use crate::model::SessionId;

use super::AuthStore;

impl Forget for AuthStore {
    fn forget(&self, sid: &SessionId) {
        self.forget_session(sid);
    }
}

impl AuthStore {
    fn lease_tiers(&self) -> LeaseTiers<'_> {
        let t = self.tiers();
        LeaseTiers {
            redis: t.redis.as_deref(),
            sql: t.sql.as_deref(),
            events: &t.events,
            forget: self,
            leases_on: t.leases_on,
            sealing: t.keyring.is_some(),
        }
    }

    /// Takes the session's lease, or says who holds it.
    pub async fn acquire_lease(
        &self,
        sid: &SessionId,
        opts: &LeaseOptions,
    ) -> Result<LeaseOutcome> {
        self.check_open()?;
        self.tiers()
            .leases
            .acquire(&self.lease_tiers(), sid, opts)
            .await
    }

    /// Extends this store's lease of the session. `false`: it was lost (another holder took
    /// over, or it was forced away); the session then leaves the cache.
    pub async fn renew_lease(&self, sid: &SessionId) -> Result<bool> {
        self.check_open()?;
        self.tiers().leases.renew(&self.lease_tiers(), sid).await
    }

    /// Gives the lease up (idempotent).
    pub async fn release_lease(&self, sid: &SessionId) -> Result<()> {
        self.tiers().leases.release(&self.lease_tiers(), sid).await
    }

    /// Who holds the session's lease (`None`: nobody, or it expired), and the session's epoch.
    pub async fn lease_state(&self, sid: &SessionId) -> Result<(Option<LeaseInfo>, u64)> {
        self.check_open()?;
        self.tiers().leases.state(&self.lease_tiers(), sid).await
    }

    /// Whether this store holds the session's lease.
    pub fn holds_lease(&self, sid: &SessionId) -> bool {
        self.tiers().leases.holds(sid)
    }

    /// The epoch a write or clear of `sid` carries (see `crate::lease`).
    pub(super) async fn fence(&self, sid: &SessionId, force: bool) -> Result<Fence> {
        self.tiers()
            .leases
            .fence(&self.lease_tiers(), sid, force)
            .await
    }
}
