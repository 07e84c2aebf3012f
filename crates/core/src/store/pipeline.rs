//! The write lanes: one order of writes per session through every tier.
//!
//! Every write, clear and flush of a session goes through the same *lane* (one per session
//! hash). A lane's first stage (`commit`) gives each write its version and commits the SQL part
//! in group transactions; its second stage (`apply`) then applies the Redis part and the
//! in-process cache in that same order, and only then answers the callers.
//!
//! The invariants this order rests on (each also tested where it is enforced):
//! - **Call order.** A write takes its place in its session's call order when it is called
//!   (a [`Ticket`], synchronously), and enters the lane in that order; the lane keeps it.
//! - **One order in every tier.** Versions rise in lane order (`Slot::next_version`), every
//!   tier applies a record only over an older version, and Redis and the cache are written
//!   after SQL in the same order: they reflect writes in SQL's commit order.
//! - **Versions never tie.** A version is `epoch << 32 | count` (`crate::version`) and every
//!   writer has an epoch of its own (`crate::lease`): two acknowledged writes of one record
//!   never carry the same version, whoever wrote them.
//! - **Nothing acknowledged is dropped.** A tier that meets a write whose epoch is behind the
//!   session's refuses it (fenced): the write is claimed again in its place in the lane (a
//!   writer without the session's lease) or fails with `ERR_SESSION_LOCKED` (a holder that lost
//!   it). A write SQL committed is never refused by Redis.
//! - **SQL first.** Redis never holds a durable value SQL lacks, so Redis may be emptied or
//!   evicted without losing anything; when its step fails after the commit, or a commit's
//!   outcome is unknown, the session is rebuilt from SQL before it is used again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::apply::apply_stage;
use super::commit::commit_stage;
use super::{Job, Op, Slot, Ticket, Tiers};
use crate::error::{Error, Result, Tier};
use crate::model::SessionId;

/// Jobs a lane queues before callers wait (back-pressure).
pub(super) const LANE_QUEUE: usize = 1024;
/// Lanes of a store without SQL.
pub(super) const REDIS_LANES: usize = 4;

/// The lanes, the session slots and what they need: shared by the store and its flusher.
pub(super) struct Pipeline {
    pub(super) tiers: Arc<Tiers>,
    pub(super) lanes: Mutex<Vec<mpsc::Sender<Job>>>,
    pub(super) tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    pub(super) slots: Mutex<HashMap<String, Arc<Slot>>>,
    /// How long a caller waits for its job.
    pub(super) deadline: Duration,
    /// Lanes to start on first use (they need the async runtime); 0 once closed.
    pub(super) lane_count: Mutex<usize>,
}

impl Pipeline {
    pub(super) fn tiers_closed(&self) -> bool {
        self.tiers.redis.as_ref().is_some_and(|r| r.is_closed())
            || self.tiers.sql.as_ref().is_some_and(|s| s.is_closed())
    }

    pub(super) fn slot(&self, sid: &SessionId) -> Arc<Slot> {
        let mut slots = self.slots.lock();
        if let Some(s) = slots.get(&**sid) {
            return s.clone();
        }
        let s = Arc::new(Slot::default());
        slots.insert(sid.to_string(), s.clone());
        s
    }

    pub(super) fn lane(&self, sid: &SessionId) -> Result<mpsc::Sender<Job>> {
        let mut lanes = self.lanes.lock();
        if lanes.is_empty() {
            // first use: start the lanes (in the async runtime, which the constructor may lack)
            let count = std::mem::take(&mut *self.lane_count.lock());
            if count == 0 {
                return Err(Error::StoreClosed);
            }
            let mut tasks = self.tasks.lock();
            for lane in 0..count {
                let (tx, rx) = mpsc::channel(LANE_QUEUE);
                let (tx2, rx2) = mpsc::channel(4);
                lanes.push(tx);
                tasks.push(tokio::spawn(commit_stage(
                    self.tiers.clone(),
                    lane,
                    rx,
                    tx2,
                )));
                tasks.push(tokio::spawn(apply_stage(self.tiers.clone(), rx2)));
            }
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&**sid, &mut h);
        Ok(lanes[std::hash::Hasher::finish(&h) as usize % lanes.len()].clone())
    }

    /// Queues a job on the session's lane and waits for its answer. A caller that gives up
    /// (deadline) leaves a job the lane skips if it has not started it.
    pub(super) async fn submit(&self, sid: &SessionId, slot: Arc<Slot>, op: Op) -> Result<u64> {
        self.submit_with(sid, slot, op, None).await
    }

    /// [`Self::submit`] once it is `ticket`'s turn; the turn passes on once the job is queued.
    pub(super) async fn submit_in_turn(
        &self,
        sid: &SessionId,
        slot: Arc<Slot>,
        op: Op,
        ticket: &mut Ticket,
    ) -> Result<u64> {
        self.submit_with(sid, slot, op, Some(ticket)).await
    }

    pub(super) async fn submit_with(
        &self,
        sid: &SessionId,
        slot: Arc<Slot>,
        op: Op,
        ticket: Option<&mut Ticket>,
    ) -> Result<u64> {
        let sender = self.lane(sid)?;
        let (done, answer) = oneshot::channel();
        let job = Job {
            sid: sid.clone(),
            slot,
            op,
            done,
        };
        let waited = tokio::time::timeout(self.deadline, async move {
            if let Some(t) = ticket {
                t.slot.wait_turn(t.n).await;
                let sent = sender.send(job).await;
                t.end();
                sent.map_err(|_| Error::StoreClosed)?;
            } else {
                sender.send(job).await.map_err(|_| Error::StoreClosed)?;
            }
            answer.await.map_err(|_| Error::StoreClosed)?
        })
        .await;
        waited.unwrap_or_else(|_| {
            Err(Error::Timeout {
                tier: if self.tiers.sql.is_some() {
                    Tier::Database
                } else {
                    Tier::Redis
                },
                op: "write",
                millis: self.deadline.as_millis(),
            })
        })
    }
}
