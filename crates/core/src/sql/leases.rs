//! The SQL tier's side of epochs and leases: epochs handed out and raised, and the lease row of
//! a store without Redis (the decisions are `rules`).

use super::{is_retryable, mysql, now_ms, on_dialect, plugin, postgres, sqlite, Pool, SqlStore};
use super::{LeaseRequest, StoredLease, Taken};
use crate::error::{Error, Result};
use crate::model::SessionId;

impl SqlStore {
    /// The session's lease epoch as SQL records it (0 for a session SQL does not know).
    pub async fn session_epoch(&self, sid: &SessionId) -> Result<u64> {
        self.call("select epoch", async {
            on_dialect!(&self.pool, session_epoch(sid))
        })
        .await
    }

    /// Hands out the session's next epoch (`rules::allocate`), above `floor` too, creating the
    /// session's row. Handing out does not fence anyone: [`Self::raise_epoch`] does, once the
    /// epoch is granted.
    /// Also says whether the session's data was sealed before; `seal` marks it sealed (the
    /// caller seals what it writes). For a reacquisition of a lapsed lease of epoch `since`,
    /// None when the session no longer allows it (`rules::may_reacquire`: purged, or another
    /// writer took an epoch meanwhile); no row is created then.
    pub async fn allocate_epoch(
        &self,
        sid: &SessionId,
        floor: u64,
        seal: bool,
        since: Option<u64>,
    ) -> Result<Option<(u64, bool)>> {
        let now = now_ms();
        let floor = floor.min(crate::version::MAX_EPOCH) as i64;
        let since = since.map(|s| s.min(crate::version::MAX_EPOCH) as i64);
        let got: Option<(i64, bool)> = self
            .call("allocate epoch", async {
                let mut tries = 0;
                loop {
                    match on_dialect!(&self.pool, allocate_epoch(sid, floor, seal, now, since)) {
                        Err(e) if tries < 3 && is_retryable(&e) => tries += 1,
                        r => return r,
                    }
                }
            })
            .await?;
        got.map(|(e, sealed)| Ok((Self::epoch_in_range(e)?, sealed)))
            .transpose()
    }

    /// Raises the session's fence to `epoch`: writes of lower epochs are refused from now on.
    /// False when the session's row is gone (purged since the epoch was handed out).
    pub async fn raise_epoch(&self, sid: &SessionId, epoch: u64) -> Result<bool> {
        self.call("raise epoch", async {
            on_dialect!(&self.pool, raise_epoch(sid, epoch as i64))
        })
        .await
    }

    /// Takes the session's lease row (a store without Redis; see `crate::lease`), in one
    /// transaction with the session's epochs. Returns the decision, the database's clock, and
    /// whether the session's data was sealed before (a grant to a taker that seals marks it).
    pub async fn lease_take(&self, req: &LeaseRequest<'_>) -> Result<(Taken, i64, bool)> {
        let out = self
            .call("take lease", async {
                let mut tries = 0;
                loop {
                    match on_dialect!(&self.pool, lease_take(req)) {
                        Err(e) if tries < 3 && is_retryable(&e) => tries += 1,
                        r => return r,
                    }
                }
            })
            .await?;
        if let Taken::Granted { epoch, .. } = out.0 {
            Self::epoch_in_range(epoch)?;
        }
        Ok(out)
    }

    /// Extends the lease if `token` holds it and it has not expired.
    pub async fn lease_renew(&self, sid: &SessionId, token: &str, ttl_ms: i64) -> Result<bool> {
        self.call("renew lease", async {
            on_dialect!(&self.pool, lease_renew(sid, token, ttl_ms))
        })
        .await
    }

    pub async fn lease_release(&self, sid: &SessionId, token: &str) -> Result<()> {
        self.call("release lease", async {
            on_dialect!(&self.pool, lease_release(sid, token))
        })
        .await
    }

    /// The lease row, with the database's clock.
    pub async fn lease_info(&self, sid: &SessionId) -> Result<Option<(StoredLease, i64)>> {
        self.call("lease info", async {
            on_dialect!(&self.pool, lease_info(sid))
        })
        .await
    }

    /// An epoch the tier handed out, checked against what a version can carry.
    fn epoch_in_range(e: i64) -> Result<u64> {
        u64::try_from(e)
            .ok()
            .filter(|e| *e <= crate::version::MAX_EPOCH)
            .ok_or_else(|| Error::Database(format!("the session's epoch {e} is out of range")))
    }
}
