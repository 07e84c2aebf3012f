//! A lane's jobs: writes, clears, flushes, rebuilds and barriers, and what a write carries.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::Slot;
use crate::crypto::{Keyring, Record};
use crate::error::Result;
use crate::lease::Fence;
use crate::model::{SessionId, Value, WriteBatch};
use crate::redis::Durability;

pub(super) enum Op {
    Write(Box<WriteJob>),
    Clear {
        keep_creds: bool,
        fence: Fence,
    },
    Flush,
    Rebuild,
    /// Answers once every job queued before it went through both stages (see
    /// [`super::AuthStore::rekey_session`]).
    Barrier,
}

pub(super) struct WriteJob {
    /// Values in their stored form, not sealed yet: a seal binds the version, which the lane
    /// gives the write ([`seal`]).
    pub(super) form: Arc<WriteBatch>,
    /// `form` sealed at the write's version, when the store encrypts.
    pub(super) sealed: Option<WriteBatch>,
    /// The epoch the write carries, and whether it is a claim.
    pub(super) fence: Fence,
    /// The JSON text the cache keeps (when there is a cache).
    pub(super) plain: Option<Arc<WriteBatch>>,
    pub(super) to_sql: bool,
    /// How Redis takes it (`None`: no Redis tier).
    pub(super) redis: Option<Durability>,
    pub(super) ttl: Option<Duration>,
}

impl WriteJob {
    /// Whether the write puts values (creds or a record), not only deletes.
    pub(super) fn puts_values(&self) -> bool {
        self.form.creds.is_some() || self.form.keys.iter().any(|k| k.value.is_some())
    }

    /// What the tiers store: the sealed form when the store encrypts.
    pub(super) fn stored(&self) -> &WriteBatch {
        self.sealed.as_ref().unwrap_or(&self.form)
    }
}

pub(super) struct Job {
    pub(super) sid: SessionId,
    pub(super) slot: Arc<Slot>,
    pub(super) op: Op,
    pub(super) done: oneshot::Sender<Result<u64>>,
}

impl Job {
    pub(super) fn answer(self, r: Result<u64>) {
        let _ = self.done.send(r);
    }

    pub(super) fn write(&self) -> Option<&WriteJob> {
        match &self.op {
            Op::Write(w) => Some(w),
            _ => None,
        }
    }

    /// The epoch a write or clear carries (`None`: a flush, rebuild or barrier, which write no
    /// version of their own).
    pub(super) fn fence(&self) -> Option<Fence> {
        match &self.op {
            Op::Write(w) => Some(w.fence),
            Op::Clear { fence, .. } => Some(*fence),
            _ => None,
        }
    }

    /// Whether the job puts values (see [`WriteJob::puts_values`]).
    pub(super) fn puts_values(&self) -> bool {
        self.write().is_some_and(WriteJob::puts_values)
    }

    /// Carries `epoch` from now on (a claim taken again after the old one was overtaken).
    pub(super) fn set_epoch(&mut self, epoch: u64) {
        match &mut self.op {
            Op::Write(w) => w.fence.epoch = epoch,
            Op::Clear { fence, .. } => fence.epoch = epoch,
            _ => {}
        }
    }

    /// Gives the job `version`: a write's values are sealed at it (a seal binds the version).
    pub(super) fn seal(&mut self, keyring: Option<&Keyring>, version: u64) -> Result<()> {
        let (Op::Write(w), Some(k)) = (&mut self.op, keyring) else {
            return Ok(());
        };
        w.sealed = Some(seal(&w.form, k, &self.sid, version)?);
        Ok(())
    }
}

/// `batch` with every value sealed for `sid` at `version`.
pub(super) fn seal(batch: &WriteBatch, k: &Keyring, sid: &str, version: u64) -> Result<WriteBatch> {
    let mut out = batch.clone();
    if let Some(c) = out.creds.as_mut() {
        *c = Value::from(k.seal(sid, Record::Creds, version, c)?);
    }
    for key in &mut out.keys {
        if let Some(v) = key.value.as_mut() {
            let record = Record::Key {
                kind: &key.kind,
                id: &key.id,
            };
            *v = Value::from(k.seal(sid, record, version, v)?);
        }
    }
    Ok(out)
}
