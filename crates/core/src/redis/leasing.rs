//! The lease's round trips (the lease's rules are `crate::lease`; its scripts `scripts/lease_*.lua`).

use std::time::Duration;

use fred::prelude::*;

use super::{array, RedisTier};
use crate::error::{Error, Result};
use crate::model::SessionId;

/// A lease as Redis holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisLease {
    pub acquired: bool,
    pub holder: String,
    pub epoch: u64,
    pub acquired_at_ms: i64,
    /// Milliseconds until it expires.
    pub ttl_ms: i64,
}

impl RedisTier {
    fn lease_reply(v: fred::types::Value) -> Result<RedisLease> {
        let vs = array(v, 5, "lease")?;
        let text = |v: &fred::types::Value| v.as_string().unwrap_or_default();
        let num = |v: &fred::types::Value| text(v).parse::<i64>().unwrap_or(0);
        Ok(RedisLease {
            acquired: num(&vs[0]) == 1,
            holder: text(&vs[1]),
            epoch: num(&vs[2]).max(0) as u64,
            acquired_at_ms: num(&vs[3]),
            ttl_ms: num(&vs[4]),
        })
    }

    /// Takes the session's lease (see [`LEASE_ACQUIRE_LUA`]).
    pub async fn acquire_lease(
        &self,
        sid: &SessionId,
        token: &str,
        holder: &str,
        ttl: Duration,
        min_epoch: u64,
        force: bool,
    ) -> Result<RedisLease> {
        let keys = vec![self.lease_key(sid), self.meta_key(sid)];
        let args: Vec<fred::types::Value> = vec![
            token.into(),
            holder.into(),
            (ttl.as_millis().max(1) as i64).into(),
            (min_epoch as i64).into(),
            if force { "1" } else { "0" }.into(),
            crate::sql::now_ms().into(),
        ];
        let v: fred::types::Value = self
            .call(
                "acquire lease",
                self.scripts
                    .lease_acquire
                    .evalsha_with_reload(&self.client, keys, args),
            )
            .await?;
        Self::lease_reply(v)
    }

    /// Extends (or takes back, see [`LEASE_RENEW_LUA`]) a lease this token holds.
    pub async fn renew_lease(
        &self,
        sid: &SessionId,
        token: &str,
        holder: &str,
        ttl: Duration,
        epoch: u64,
    ) -> Result<bool> {
        let keys = vec![self.lease_key(sid), self.meta_key(sid)];
        let args: Vec<fred::types::Value> = vec![
            token.into(),
            (ttl.as_millis().max(1) as i64).into(),
            (epoch as i64).into(),
            holder.into(),
            crate::sql::now_ms().into(),
        ];
        let n: i64 = self
            .call(
                "renew lease",
                self.scripts
                    .lease_renew
                    .evalsha_with_reload(&self.client, keys, args),
            )
            .await?;
        Ok(n == 1)
    }

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

    /// The lease as Redis holds it, with the highest epoch the session has seen.
    pub async fn lease(&self, sid: &SessionId) -> Result<(Option<RedisLease>, u64)> {
        let pipe = self.client.pipeline();
        self.queued(
            pipe.hmget(self.lease_key(sid), vec!["token", "holder", "epoch", "at"])
                .await,
        )?;
        self.queued(pipe.pttl(self.lease_key(sid)).await)?;
        self.queued(pipe.hget(self.meta_key(sid), "ep").await)?;
        let mut r: Vec<fred::types::Value> = self.call("lease", pipe.all()).await?;
        if r.len() != 3 {
            return Err(Error::Redis("unexpected pipeline reply".into()));
        }
        let ep = r
            .pop()
            .and_then(|v| v.as_string())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let ttl = r.pop().and_then(|v| v.as_i64()).unwrap_or(-2);
        let fields = array(r.pop().unwrap_or(fred::types::Value::Null), 4, "lease")?;
        let text = |v: &fred::types::Value| v.as_string();
        let lease = text(&fields[0]).map(|_| RedisLease {
            acquired: false,
            holder: text(&fields[1]).unwrap_or_default(),
            epoch: text(&fields[2]).and_then(|s| s.parse().ok()).unwrap_or(0),
            acquired_at_ms: text(&fields[3]).and_then(|s| s.parse().ok()).unwrap_or(0),
            ttl_ms: ttl,
        });
        Ok((lease, ep))
    }

    /// The token that holds the lease, if any (for a holder to tell itself from others).
    pub async fn lease_token(&self, sid: &SessionId) -> Result<Option<String>> {
        self.call("hget", self.client.hget(self.lease_key(sid), "token"))
            .await
    }
}
