//! The session data's round trips: reads, the write script, warms, drops, the write-behind
//! marks.

use std::collections::HashMap;
use std::time::Duration;

use fred::bytes::Bytes;
use fred::prelude::*;

/// The meta fields a read takes: the version applied, the generation, the SQL-behind mark.
const META_FIELDS: [&str; 3] = ["ver", "gen", "sb"];

use super::{array, meta_of, opened, Applied, Durability, Evicted, Meta, RedisTier, WriteStamp};
use crate::envelope::{self, Opened};
use crate::error::{Error, Result};
use crate::ident::escape;
use crate::model::{SessionId, Value, WriteBatch};

impl RedisTier {
    /// The session's meta: highest version applied, generation.
    pub async fn meta(&self, sid: &SessionId) -> Result<Meta> {
        let v: fred::types::Value = self
            .call(
                "hmget meta",
                self.client.hmget(self.meta_key(sid), META_FIELDS.to_vec()),
            )
            .await?;
        meta_of(v)
    }

    /// The creds record and the session's meta, in one round trip.
    pub async fn get_creds(&self, sid: &SessionId) -> Result<(Option<Opened>, Meta)> {
        let pipe = self.client.pipeline();
        self.queued(pipe.get(self.creds_key(sid)).await)?;
        self.queued(pipe.hmget(self.meta_key(sid), META_FIELDS.to_vec()).await)?;
        let mut replies: Vec<fred::types::Value> = self.call("get creds", pipe.all()).await?;
        if replies.len() != 2 {
            return Err(Error::Redis("unexpected pipeline reply".into()));
        }
        let meta = meta_of(replies.pop().unwrap_or(fred::types::Value::Null))?;
        let creds = opened(replies.pop().unwrap_or(fred::types::Value::Null))?;
        Ok((creds, meta))
    }

    /// HMGET of `ids` (aligned with `ids`) and the session's meta, in one round trip.
    pub async fn get_keys(
        &self,
        sid: &SessionId,
        kind: &str,
        ids: &[String],
    ) -> Result<(Vec<Option<Opened>>, Meta)> {
        let pipe = self.client.pipeline();
        self.queued(pipe.hmget(self.keys_key(sid, kind), ids.to_vec()).await)?;
        self.queued(pipe.hmget(self.meta_key(sid), META_FIELDS.to_vec()).await)?;
        let mut replies: Vec<fred::types::Value> = self.call("hmget", pipe.all()).await?;
        if replies.len() != 2 {
            return Err(Error::Redis("unexpected pipeline reply".into()));
        }
        let meta = meta_of(replies.pop().unwrap_or(fred::types::Value::Null))?;
        let values = array(
            replies.pop().unwrap_or(fred::types::Value::Null),
            ids.len(),
            "HMGET",
        )?;
        let values = values.into_iter().map(opened).collect::<Result<_>>()?;
        Ok((values, meta))
    }

    /// Applies a whole batch at `version` atomically with one script call (a single command that
    /// pipelines with everything else on the connection), unless the session's Redis copy is
    /// below `floor`.
    pub async fn write(
        &self,
        sid: &SessionId,
        batch: &WriteBatch,
        stamp: WriteStamp,
        ttl: Option<Duration>,
        durability: Durability,
    ) -> Result<Applied> {
        let WriteStamp {
            version,
            floor,
            epoch,
        } = stamp;
        let groups = batch.by_type();
        let mut keys = vec![
            self.creds_key(sid),
            self.types_key(sid),
            self.dirty_key(sid),
            self.meta_key(sid),
        ];
        let vb = envelope::version_bytes(version);
        let mut args: Vec<fred::types::Value> =
            Vec::with_capacity(9 + batch.keys.len() * 2 + groups.len() * 3);
        args.push((floor as i64).into());
        args.push(ttl.map_or(0, |t| t.as_millis().max(1) as i64).into());
        args.push(
            match durability {
                Durability::Durable => "d",
                Durability::RedisOnly => "r",
                Durability::NoSql => "n",
            }
            .into(),
        );
        args.push(fred::types::Value::Bytes(Bytes::copy_from_slice(&vb)));
        args.push((version as i64).into());
        match &batch.creds {
            Some(c) => {
                args.push("1".into());
                args.push(fred::types::Value::Bytes(
                    envelope::seal(version, Some(c)).into(),
                ));
            }
            None => {
                args.push("0".into());
                args.push("".into());
            }
        }
        args.push(fred::types::Value::Bytes(
            envelope::seal(version, None).into(),
        ));
        args.push(epoch.map_or(-1, |e| e as i64).into());
        // write-behind marks and the dirty index in one atomic step, so a crash between them
        // cannot leave dirty records no flush finds (see [`Self::index_dirty_after_write`])
        let index = durability == Durability::RedisOnly && !self.client.is_clustered();
        args.push(if index { (&**sid).into() } else { "".into() });
        for (kind, (puts, dels)) in &groups {
            keys.push(self.keys_key(sid, kind));
            args.push(escape(kind).into());
            args.push((puts.len() as i64).into());
            args.push((dels.len() as i64).into());
            for k in puts {
                args.push(k.id.as_str().into());
                args.push(fred::types::Value::Bytes(
                    envelope::seal(version, k.value.as_deref()).into(),
                ));
            }
            for k in dels {
                args.push(k.id.as_str().into());
            }
        }
        if index {
            keys.push(self.mm_key("dirty"));
        }
        let n: i64 = self
            .call(
                "write",
                self.scripts
                    .write
                    .evalsha_with_reload(&self.client, keys, args),
            )
            .await?;
        Ok(match n {
            -1 => Applied::Stale,
            -2 => Applied::BelowClear,
            -3 => Applied::Fenced,
            _ => Applied::Yes,
        })
    }

    /// Stores records read from SQL, never over a newer record, and not at all if the
    /// generation moved since `gen` was read.
    pub async fn warm_keys(
        &self,
        sid: &SessionId,
        kind: &str,
        found: &[(&str, u64, &Value)],
        gen: &str,
    ) -> Result<()> {
        if found.is_empty() {
            return Ok(());
        }
        let mut args: Vec<fred::types::Value> = Vec::with_capacity(found.len() * 2 + 2);
        args.push(gen.into());
        args.push(escape(kind).into());
        for (id, version, v) in found {
            args.push((*id).into());
            args.push(fred::types::Value::Bytes(
                envelope::seal(*version, Some(v)).into(),
            ));
        }
        let keys = vec![
            self.keys_key(sid, kind),
            self.types_key(sid),
            self.meta_key(sid),
        ];
        let _: i64 = self
            .call(
                "warm",
                self.scripts
                    .warm_keys
                    .evalsha_with_reload(&self.client, keys, args),
            )
            .await?;
        Ok(())
    }

    pub async fn warm_creds(
        &self,
        sid: &SessionId,
        version: u64,
        creds: &Value,
        gen: &str,
    ) -> Result<()> {
        let args: Vec<fred::types::Value> = vec![
            gen.into(),
            fred::types::Value::Bytes(envelope::seal(version, Some(creds)).into()),
        ];
        let keys = vec![self.creds_key(sid), self.meta_key(sid)];
        let _: i64 = self
            .call(
                "warm",
                self.scripts
                    .warm_creds
                    .evalsha_with_reload(&self.client, keys, args),
            )
            .await?;
        Ok(())
    }

    async fn drop_session(
        &self,
        sid: &SessionId,
        mode: &str,
        version: u64,
        epoch: Option<u64>,
        extra: Vec<fred::types::Value>,
    ) -> Result<i64> {
        let keys = vec![
            self.meta_key(sid),
            self.types_key(sid),
            self.dirty_key(sid),
            self.creds_key(sid),
        ];
        let mut args: Vec<fred::types::Value> = vec![
            self.session_base(sid).into(),
            mode.into(),
            (version as i64).into(),
            epoch.map_or(-1, |e| e as i64).into(),
        ];
        args.extend(extra);
        self.call(
            "drop session",
            self.scripts
                .drop
                .evalsha_with_reload(&self.client, keys, args),
        )
        .await
    }

    /// Clears a session at `version`: its keys (and creds unless `keep_creds`) older than
    /// `version` go, and nothing at or below `version` can be written to it again; records of
    /// a later version (a later writer whose Redis step landed first) stay. `epoch`: the
    /// clearer's, checked here only for a clear SQL did not fence (`None`: SQL did). Returns
    /// [`Applied::Fenced`] (nothing done) when a later epoch fences it.
    pub async fn clear(
        &self,
        sid: &SessionId,
        version: u64,
        keep_creds: bool,
        epoch: Option<u64>,
    ) -> Result<Applied> {
        let mode = if keep_creds { "clear-keys" } else { "clear" };
        let vb = envelope::version_bytes(version);
        let extra = vec![fred::types::Value::Bytes(Bytes::copy_from_slice(&vb))];
        Ok(
            match self.drop_session(sid, mode, version, epoch, extra).await? {
                -3 => Applied::Fenced,
                _ => Applied::Yes,
            },
        )
    }

    /// Resets a session whose Redis copy is behind SQL: every record goes (reads then come from
    /// SQL) except those marked dirty by writes `flushed` does not cover (name, version the flush
    /// wrote to SQL): a write to Redis only that landed after the flush began stays with its
    /// mark. Its `ver` rises to `sql_version`.
    pub async fn rebuild(
        &self,
        sid: &SessionId,
        sql_version: u64,
        flushed: &[(String, u64)],
    ) -> Result<()> {
        let mut extra: Vec<fred::types::Value> = Vec::with_capacity(flushed.len() * 2);
        for (name, v) in flushed {
            extra.push(name.as_str().into());
            extra.push((*v as i64).into());
        }
        self.drop_session(sid, "rebuild", sql_version, None, extra)
            .await
            .map(|_| ())
    }

    /// Drops a session's Redis data if SQL holds all of it (atomically against writers: a
    /// write that lands first makes the session dirty or brings its keys back, never lost).
    pub async fn evict_session(&self, sid: &SessionId) -> Result<Evicted> {
        match self.drop_session(sid, "evict", 0, None, Vec::new()).await? {
            -1 => Ok(Evicted::Dirty),
            n => {
                self.notify_evicted(sid);
                Ok(Evicted::Keys(n.max(0) as u64))
            }
        }
    }

    /// The dirty records of a session with the versions that wrote them.
    pub async fn dirty_records(&self, sid: &SessionId) -> Result<Vec<(String, u64)>> {
        let all: HashMap<String, String> = self
            .call("hgetall", self.client.hgetall(self.dirty_key(sid)))
            .await?;
        let mut out = Vec::with_capacity(all.len());
        for (name, v) in all {
            let v = v
                .parse::<u64>()
                .map_err(|_| Error::CorruptValue("a dirty mark is not a version".into()))?;
            out.push((name, v));
        }
        Ok(out)
    }

    /// Raw records of one type (the envelopes), aligned with `ids`.
    pub async fn records(
        &self,
        sid: &SessionId,
        kind_escaped: &str,
        ids: &[String],
    ) -> Result<Vec<Option<Opened>>> {
        let key = self.session_base(sid) + "k:" + kind_escaped;
        let reply: fred::types::Value = self
            .call("hmget", self.client.hmget(key, ids.to_vec()))
            .await?;
        array(reply, ids.len(), "HMGET")?
            .into_iter()
            .map(opened)
            .collect()
    }

    /// The creds record alone.
    pub async fn creds_record(&self, sid: &SessionId) -> Result<Option<Opened>> {
        let v: fred::types::Value = self
            .call("get", self.client.get(self.creds_key(sid)))
            .await?;
        opened(v)
    }

    /// Adds a session a Redis-only write marked dirty to the dirty index, where the write script
    /// could not: on a cluster the index lives in another slot than the session. (A process that
    /// dies between the two steps leaves dirty records unindexed there, which a flush only finds
    /// through `flush(sessionId)`.)
    pub async fn index_dirty_after_write(&self, sid: &SessionId) -> Result<()> {
        if !self.client.is_clustered() {
            return Ok(()); // the write script did it
        }
        let _: i64 = self
            .call("sadd", self.client.sadd(self.mm_key("dirty"), &**sid))
            .await?;
        Ok(())
    }

    /// Every session of the dirty index, any process's.
    pub async fn dirty_sessions(&self) -> Result<Vec<String>> {
        self.call("smembers", self.client.smembers(self.mm_key("dirty")))
            .await
    }

    /// Drops `sid` from the dirty index if it has no dirty record left (re-adding it when a
    /// write marked one meanwhile).
    pub async fn unindex_if_clean(&self, sid: &SessionId) -> Result<()> {
        let index = self.mm_key("dirty");
        let left: i64 = self
            .call("hlen", self.client.hlen(self.dirty_key(sid)))
            .await?;
        if left > 0 {
            return Ok(());
        }
        let _: i64 = self.call("srem", self.client.srem(&index, &**sid)).await?;
        let left: i64 = self
            .call("hlen", self.client.hlen(self.dirty_key(sid)))
            .await?;
        if left > 0 {
            let _: i64 = self.call("sadd", self.client.sadd(&index, &**sid)).await?;
        }
        Ok(())
    }

    /// After a flush: clears the marks at or below the versions SQL now holds, and the
    /// tombstones it holds too. `done`: (mark name, version flushed, was a tombstone).
    pub async fn clean(&self, sid: &SessionId, done: &[(String, u64, bool)]) -> Result<u64> {
        if done.is_empty() {
            return Ok(0);
        }
        let mut args: Vec<fred::types::Value> = Vec::with_capacity(done.len() * 3 + 1);
        args.push(self.session_base(sid).into());
        for (name, v, tomb) in done {
            args.push(name.as_str().into());
            args.push((*v as i64).into());
            args.push(if *tomb {
                fred::types::Value::Bytes(envelope::seal(*v, None).into())
            } else {
                "".into()
            });
        }
        let keys = vec![self.dirty_key(sid), self.meta_key(sid)];
        self.call(
            "clean",
            self.scripts
                .clean
                .evalsha_with_reload(&self.client, keys, args),
        )
        .await
    }

    /// Removes every key of a session, its meta and lease too (see
    /// [`crate::AuthStore::purge_session`]); the epoch floor of new sessions (for a store without
    /// SQL) rises above the session's epoch first, so a holder paused across the purge stays
    /// fenced.
    pub async fn purge(&self, sid: &SessionId) -> Result<()> {
        let ep: Option<i64> = self
            .call("hget", self.client.hget(self.meta_key(sid), "ep"))
            .await?;
        if let Some(ep) = ep.filter(|e| *e > 0) {
            self.raise_counter("epoch-floor", ep).await?;
        }
        let top = i64::MAX as u64;
        let vb = Bytes::copy_from_slice(&envelope::version_bytes(top));
        self.drop_session(sid, "clear", top, None, vec![fred::types::Value::Bytes(vb)])
            .await?;
        let _: i64 = self
            .call(
                "del",
                self.client.del(vec![
                    self.meta_key(sid),
                    self.dirty_key(sid),
                    self.lease_key(sid),
                ]),
            )
            .await?;
        // and the memory manager's bookkeeping (store-wide keys, another hash slot: one command
        // each), so the shared LRU does not keep naming a session that is gone
        self.pending.lock().remove(&**sid);
        let _: i64 = self
            .call("zrem", self.client.zrem(self.mm_key("lru"), &**sid))
            .await?;
        for name in ["count", "size"] {
            let _: i64 = self
                .call("hdel", self.client.hdel(self.mm_key(name), &**sid))
                .await?;
        }
        let _: i64 = self
            .call("srem", self.client.srem(self.mm_key("dirty"), &**sid))
            .await?;
        Ok(())
    }

    /// Raises a counter of the store's own (`{m}:<name>`) to at least `value`; its value.
    pub async fn raise_counter(&self, name: &str, value: i64) -> Result<i64> {
        self.call(
            "raise counter",
            self.scripts.raise.evalsha_with_reload(
                &self.client,
                vec![self.mm_key(name)],
                vec![value],
            ),
        )
        .await
    }

    /// A counter of the store's own (`{m}:<name>`), 0 when unset.
    pub async fn counter(&self, name: &str) -> Result<i64> {
        let v: Option<i64> = self.call("get", self.client.get(self.mm_key(name))).await?;
        Ok(v.unwrap_or(0))
    }

    /// Records in the session's meta that SQL was found holding less than this Redis applied
    /// (restored from an older backup): every store then refuses the session with
    /// `ERR_SQL_BEHIND` until an operator accepts SQL's state ([`Self::accept_sql`]).
    pub async fn mark_sql_behind(&self, sid: &SessionId) -> Result<()> {
        let _: i64 = self
            .call("hset", self.client.hset(self.meta_key(sid), ("sb", 1)))
            .await?;
        Ok(())
    }

    /// How many dirty marks the session has, and its meta (one round trip).
    pub async fn meta_and_dirty(&self, sid: &SessionId) -> Result<(Meta, u64)> {
        let pipe = self.client.pipeline();
        self.queued(pipe.hmget(self.meta_key(sid), META_FIELDS.to_vec()).await)?;
        self.queued(pipe.hlen(self.dirty_key(sid)).await)?;
        let mut replies: Vec<fred::types::Value> = self.call("meta", pipe.all()).await?;
        if replies.len() != 2 {
            return Err(Error::Redis("unexpected pipeline reply".into()));
        }
        let dirty = replies.pop().and_then(|v| v.as_u64()).unwrap_or(0);
        let meta = meta_of(replies.pop().unwrap_or(fred::types::Value::Null))?;
        Ok((meta, dirty))
    }

    /// Accepts SQL's state of a session found behind Redis: every record of Redis goes, its
    /// version becomes `sql_version` (lower than before), the SQL-behind mark goes.
    pub async fn accept_sql(&self, sid: &SessionId, sql_version: u64) -> Result<()> {
        self.drop_session(sid, "accept", sql_version, None, Vec::new())
            .await
            .map(|_| ())
    }
}
