//! The lease's round trips. The lease's rules are `crate::lease` and `crate::sql::rules`; its
//! scripts are `scripts/lease_*.lua`.

use std::time::Duration;

use super::RedisTier;
use crate::error::{Error, Result};
use crate::model::SessionId;
use crate::sql::{StoredLease, TakeMode, Taken};

/// A lease as Redis holds it, by this server's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisLease {
    pub token: String,
    pub holder: String,
    pub epoch: u64,
    pub acquired_at_ms: i64,
    /// Milliseconds until it lapses (<= 0: lapsed).
    pub ttl_ms: i64,
}

/// What [`RedisTier::take_lease`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisTake {
    /// Granted (a lease, or, for a claim, only the epoch), held by another, or moved; and, for a
    /// store without SQL, whether the session's data was sealed before.
    Taken(Taken, bool),
    /// The epoch handed out was not above what this Redis saw (`ep`): the durable tier is
    /// behind it. Hand out another above `seen`.
    Behind { seen: u64 },
}

fn text(v: &fred::types::Value) -> String {
    v.as_string().unwrap_or_default()
}

fn num(v: &fred::types::Value) -> i64 {
    text(v).parse::<i64>().unwrap_or(0)
}

fn values(v: fred::types::Value, what: &str) -> Result<Vec<fred::types::Value>> {
    match v {
        fred::types::Value::Array(vs) if !vs.is_empty() => Ok(vs),
        other => Err(Error::Redis(format!(
            "unexpected {what} reply of kind {}",
            other.kind()
        ))),
    }
}

impl RedisTier {
    /// Takes the session's lease, or claims an epoch (see `scripts/lease_take.lua`). `epoch`:
    /// the epoch the durable tier handed out, 0 without one (this Redis hands it out above
    /// `floor`).
    #[allow(clippy::too_many_arguments)]
    pub async fn take_lease(
        &self,
        sid: &SessionId,
        token: &str,
        holder: &str,
        ttl: Duration,
        mode: TakeMode,
        epoch: u64,
        floor: u64,
        seal: bool,
    ) -> Result<RedisTake> {
        let (name, force, check, since) = match mode {
            TakeMode::Acquire { force } => ("acquire", force, true, 0),
            TakeMode::Claim { force, check_live } => ("claim", force, check_live, 0),
            TakeMode::Reacquire { since } => ("reacquire", false, true, since),
        };
        let flag = |b: bool| if b { "1" } else { "0" };
        let keys = vec![self.lease_key(sid), self.meta_key(sid)];
        let ttl_ms = ttl.as_millis().clamp(1, i64::MAX as u128) as i64;
        let args: Vec<fred::types::Value> = vec![
            name.into(),
            token.into(),
            holder.into(),
            ttl_ms.into(),
            (epoch as i64).into(),
            flag(force).into(),
            flag(check).into(),
            since.into(),
            (floor as i64).into(),
            flag(seal).into(),
        ];
        let v: fred::types::Value = self
            .call(
                "take lease",
                self.scripts
                    .lease_take
                    .evalsha_with_reload(&self.client, keys, args),
            )
            .await?;
        let vs = values(v, "take lease")?;
        let at = |i: usize| vs.get(i).map_or(0, num);
        let sealed = at(5) == 1;
        Ok(match at(0) {
            1 => RedisTake::Taken(
                Taken::Granted {
                    epoch: at(1),
                    acquired_at: at(2),
                    expires_at: at(2) + at(3),
                    lease: crate::sql::rules::LeaseWrite::Keep,
                    epochs: crate::sql::Epochs {
                        epoch: at(1),
                        seq: at(1),
                    },
                },
                sealed,
            ),
            0 => RedisTake::Taken(
                Taken::Held(StoredLease {
                    token: String::new(),
                    holder: vs.get(1).map(text).unwrap_or_default(),
                    epoch: at(2),
                    acquired_at: at(3),
                    // ms left, kept relative: the caller's clock is not this server's
                    expires_at: at(4),
                }),
                sealed,
            ),
            -1 => RedisTake::Behind {
                seen: at(1).max(0) as u64,
            },
            -2 => RedisTake::Taken(Taken::Moved { epoch: at(1) }, sealed),
            n => return Err(Error::Redis(format!("take lease answered {n}"))),
        })
    }

    /// Extends a live lease this token holds (`scripts/lease_renew.lua`); false when it lapsed,
    /// is gone or is another's.
    pub async fn renew_lease(&self, sid: &SessionId, token: &str, ttl: Duration) -> Result<bool> {
        let args: Vec<fred::types::Value> = vec![
            token.into(),
            (ttl.as_millis().clamp(1, i64::MAX as u128) as i64).into(),
        ];
        let n: i64 = self
            .call(
                "renew lease",
                self.scripts.lease_renew.evalsha_with_reload(
                    &self.client,
                    vec![self.lease_key(sid)],
                    args,
                ),
            )
            .await?;
        Ok(n == 1)
    }

    /// Drops the lease if this token holds it.
    pub async fn release_lease(&self, sid: &SessionId, token: &str) -> Result<()> {
        let _: i64 = self
            .call(
                "release lease",
                self.scripts.lease_release.evalsha_with_reload(
                    &self.client,
                    vec![self.lease_key(sid)],
                    vec![token],
                ),
            )
            .await?;
        Ok(())
    }

    /// The lease as Redis holds it (by this server's clock), and the highest epoch the session
    /// has seen.
    pub async fn lease(&self, sid: &SessionId) -> Result<(Option<RedisLease>, u64)> {
        let keys = vec![self.lease_key(sid), self.meta_key(sid)];
        let v: fred::types::Value = self
            .call(
                "lease",
                self.scripts.lease_state.evalsha_with_reload(
                    &self.client,
                    keys,
                    Vec::<fred::types::Value>::new(),
                ),
            )
            .await?;
        let vs = values(v, "lease")?;
        if vs.len() != 6 {
            return Err(Error::Redis("unexpected lease reply".into()));
        }
        let ep = num(&vs[5]).max(0) as u64;
        let token = text(&vs[0]);
        if token.is_empty() {
            return Ok((None, ep));
        }
        Ok((
            Some(RedisLease {
                token,
                holder: text(&vs[1]),
                epoch: num(&vs[2]).max(0) as u64,
                acquired_at_ms: num(&vs[3]),
                ttl_ms: num(&vs[4]),
            }),
            ep,
        ))
    }
}
