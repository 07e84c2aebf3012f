//! The write API: a write takes its place in the session's call order when it is called, is
//! validated, turned into its stored form (compacted, sealed), fenced by the session's lease,
//! and handed to its lane (`pipeline`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{AuthStore, Op, Ticket, WriteJob};
use crate::codec;
use crate::error::{Error, Result};
use crate::lease::{sealed_error, Fence};
use crate::model::{SessionId, Value, WriteBatch, WriteOptions};
use crate::redis::Durability;
use crate::sql::rules::may_write;

impl AuthStore {
    /// Writes a batch: atomically in each tier, in the session's one order (see the module docs).
    /// Resolves with the version the write got.
    pub async fn write(
        &self,
        sid: &SessionId,
        batch: WriteBatch,
        opts: &WriteOptions,
    ) -> Result<u64> {
        let ticket = self.ticket(sid);
        self.write_in_turn(sid, batch, opts, ticket).await
    }

    /// Takes the session's next place in call order (see [`Ticket`]): a synchronous call, so a
    /// binding can take it when JavaScript calls, before any async hop could reorder calls.
    pub fn ticket(&self, sid: &SessionId) -> Ticket {
        let slot = self.pipeline.slot(sid);
        let n = slot.tickets.fetch_add(1, Ordering::AcqRel);
        Ticket {
            slot,
            n,
            ended: false,
        }
    }

    /// [`Self::write`] at the place `ticket` holds in the session's call order.
    pub async fn write_in_turn(
        &self,
        sid: &SessionId,
        batch: WriteBatch,
        opts: &WriteOptions,
        ticket: Ticket,
    ) -> Result<u64> {
        self.write_fenced(sid, batch, opts, None, ticket).await
    }

    /// [`Self::write_in_turn`] carrying `fence` (taken earlier) when given: a rekey takes its
    /// fence before it reads what it rewrites, so a writer that came between fences it.
    pub(super) async fn write_fenced(
        &self,
        sid: &SessionId,
        mut batch: WriteBatch,
        opts: &WriteOptions,
        fence: Option<Fence>,
        mut ticket: Ticket,
    ) -> Result<u64> {
        self.check_open()?;
        batch.validate()?;
        if batch.is_empty() {
            return Ok(0);
        }
        let t = self.tiers();
        // Without Redis there is nowhere else to write: the SQL tier is always written then.
        // Write-behind leaves SQL to the flusher.
        let to_sql = t.sql.is_some()
            && (t.redis.is_none() || (opts.sync_to_database && self.write_behind.is_none()));
        if opts.ttl.is_some() && t.redis.is_some() && !to_sql {
            return Err(Error::invalid(
                "ttl on a write that goes to Redis only would expire the only copy of the keys; \
                 write to the database too (syncToDatabase, write-through) or drop the ttl",
            ));
        }
        // the tiers get the stored forms, the cache the JSON text callers read
        let plain = t.cache.is_some().then(|| Arc::new(batch.clone()));
        let form = Arc::new(store_forms(batch, self.compact).await?);
        let redis = t.redis.as_ref().map(|_| match (&t.sql, to_sql) {
            (Some(_), true) => Durability::Durable,
            (Some(_), false) => Durability::RedisOnly,
            (None, _) => Durability::NoSql,
        });
        if redis == Some(Durability::RedisOnly) && self.write_behind.is_some() {
            self.behind.lock().insert(sid.to_string());
            self.start_flusher();
        }
        let fence = match fence {
            Some(f) => f,
            None => self.fence(sid, opts.force).await?,
        };
        let puts = form.creds.is_some() || form.keys.iter().any(|k| k.value.is_some());
        if puts && !may_write(fence.sealed, self.keyring.is_some()) {
            return Err(sealed_error());
        }
        let slot = self.pipeline.session(sid).await?;
        self.touch(sid);
        let job = WriteJob {
            form,
            sealed: None,
            fence,
            plain,
            to_sql,
            redis,
            ttl: opts.ttl,
        };
        self.pipeline
            .submit_in_turn(sid, slot, Op::Write(Box::new(job)), &mut ticket)
            .await
    }

    /// Removes every key of a session; its creds too unless `keep_creds`. Nothing written
    /// before can come back: the clear has a version like any write.
    pub async fn delete_session(&self, sid: &SessionId, keep_creds: bool) -> Result<()> {
        let ticket = self.ticket(sid);
        self.delete_session_in_turn(sid, keep_creds, false, ticket)
            .await
    }

    /// [`Self::delete_session`] at the place `ticket` holds in the session's call order.
    pub async fn delete_session_in_turn(
        &self,
        sid: &SessionId,
        keep_creds: bool,
        force: bool,
        mut ticket: Ticket,
    ) -> Result<()> {
        self.check_open()?;
        let fence = self.fence(sid, force).await?;
        let slot = self.pipeline.session(sid).await?;
        let op = Op::Clear { keep_creds, fence };
        self.pipeline
            .submit_in_turn(sid, slot, op, &mut ticket)
            .await
            .map(|_| ())
    }
}

/// Values of a batch in their stored form (`codec::store_form`), large batches off the async
/// workers. Sealing (when the store encrypts) follows in the lane, at the write's version.
async fn store_forms(batch: WriteBatch, compact: bool) -> Result<WriteBatch> {
    fn run(mut batch: WriteBatch, compact: bool) -> WriteBatch {
        let squeeze = |v: &mut Value| {
            if let Some(c) = codec::store_form(v, compact) {
                *v = Value::from(c);
            }
        };
        if let Some(c) = batch.creds.as_mut() {
            squeeze(c);
        }
        for k in &mut batch.keys {
            if let Some(v) = k.value.as_mut() {
                squeeze(v);
            }
        }
        batch
    }
    if batch.keys.len() <= 64 || !compact {
        return Ok(run(batch, compact));
    }
    tokio::task::spawn_blocking(move || run(batch, compact))
        .await
        .map_err(|e| Error::invalid(format!("encoding the batch failed: {e}")))
}
