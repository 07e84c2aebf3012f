//! The write lanes: one order of writes per session through every tier.
//!
//! Every write, clear and flush of a session goes through the same *lane* (one per session
//! hash). A lane's first stage gives each write the session's next version and commits the SQL
//! part in group transactions (every row only over an older version); its second stage then
//! applies the Redis part and the in-process cache in that same order, and only then answers
//! the callers. Redis and the cache therefore reflect writes in SQL's commit order, whatever
//! order the callers wake up in.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::{flush_session, rebuild, recover_write, suspect, Slot, Ticket, Tiers};
use crate::error::{Error, Result, Tier};
use crate::model::{SessionId, WriteBatch};
use crate::redis::{Applied, Durability, WriteStamp};
use crate::sql::VersionedWrite;

/// Most writes one group transaction takes, and about how many value bytes.
pub(super) const MAX_GROUP_JOBS: usize = 256;
pub(super) const MAX_GROUP_BYTES: usize = 16 * 1024 * 1024;
/// Jobs a lane queues before callers wait (back-pressure).
pub(super) const LANE_QUEUE: usize = 1024;
/// Lanes of a store without SQL.
pub(super) const REDIS_LANES: usize = 4;

pub(super) enum Op {
    Write(Box<WriteJob>),
    Clear {
        keep_creds: bool,
        epoch: Option<u64>,
    },
    Flush,
    Rebuild,
    /// Answers once every job queued before it went through both stages (see
    /// [`AuthStore::rekey_session`]).
    Barrier,
}

pub(super) struct WriteJob {
    /// Values in their stored form.
    pub(super) batch: WriteBatch,
    /// The lease epoch the write carries (`None`: not fenced).
    pub(super) epoch: Option<u64>,
    /// The JSON text the cache keeps (when there is a cache).
    pub(super) plain: Option<WriteBatch>,
    pub(super) to_sql: bool,
    /// How Redis takes it (`None`: no Redis tier).
    pub(super) redis: Option<Durability>,
    pub(super) ttl: Option<Duration>,
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
}

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

/// The lane's first stage: groups queued writes, gives each the session's next version, commits
/// their SQL part, hands the survivors to the second stage in order.
pub(super) async fn commit_stage(
    tiers: Arc<Tiers>,
    lane: usize,
    mut rx: mpsc::Receiver<Job>,
    next: mpsc::Sender<Vec<(Job, u64)>>,
) {
    let mut held: Option<Job> = None;
    loop {
        let first = match held.take() {
            Some(j) => j,
            None => match rx.recv().await {
                Some(j) => j,
                None => break,
            },
        };
        let mut group = vec![first];
        if group[0].write().is_some() {
            let mut bytes = group[0].write().map_or(0, |w| w.batch.byte_size());
            while group.len() < MAX_GROUP_JOBS && bytes < MAX_GROUP_BYTES {
                match rx.try_recv() {
                    Ok(j) if j.write().is_some() => {
                        bytes += j.write().map_or(0, |w| w.batch.byte_size());
                        group.push(j);
                    }
                    Ok(j) => {
                        held = Some(j);
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        // callers that gave up: skip what has not started
        group.retain(|j| !j.done.is_closed());
        if group.is_empty() {
            continue;
        }
        let versioned: Vec<(Job, u64)> = group
            .into_iter()
            .map(|j| {
                let v = match j.op {
                    Op::Write(_) | Op::Clear { .. } => j.slot.next_version(),
                    Op::Flush | Op::Rebuild | Op::Barrier => 0,
                };
                (j, v)
            })
            .collect();
        let survivors = commit_sql(&tiers, lane, versioned).await;
        if !survivors.is_empty() && next.send(survivors).await.is_err() {
            break;
        }
    }
}

/// Commits the SQL part of a group; answers the jobs that failed, returns the others.
pub(super) async fn commit_sql(
    tiers: &Tiers,
    lane: usize,
    group: Vec<(Job, u64)>,
) -> Vec<(Job, u64)> {
    let Some(sql) = &tiers.sql else {
        return group;
    };
    if let [(job, v)] = group.as_slice() {
        if let Op::Clear { keep_creds, epoch } = job.op {
            let r = sql.clear(&job.sid, *v, keep_creds, epoch).await;
            return match r {
                Ok(true) => group,
                Ok(false) => {
                    let e = tiers.fenced(&job.sid);
                    group
                        .into_iter()
                        .for_each(|(j, _)| j.answer(Err(e.clone())));
                    Vec::new()
                }
                Err(e) => {
                    group
                        .into_iter()
                        .for_each(|(j, _)| j.answer(Err(e.clone())));
                    Vec::new()
                }
            };
        }
    }
    let writes: Vec<VersionedWrite<'_>> = group
        .iter()
        .filter_map(|(j, v)| {
            j.write().filter(|w| w.to_sql).map(|w| VersionedWrite {
                sid: &j.sid,
                batch: &w.batch,
                version: *v,
                epoch: w.epoch,
            })
        })
        .collect();
    if writes.is_empty() {
        return group;
    }
    let mut fenced: Vec<String> = Vec::new();
    let failed: Option<(Error, bool)> = match sql.commit_in_lane(lane, &writes).await {
        Ok(f) => {
            fenced = f;
            None
        }
        Err(ce) => Some((ce.error, ce.statement_level && writes.len() > 1)),
    };
    drop(writes);
    match failed {
        None if fenced.is_empty() => group,
        None => {
            let mut out = Vec::new();
            for (j, v) in group {
                if j.write().is_some_and(|w| w.to_sql) && fenced.iter().any(|f| *f == *j.sid) {
                    let e = tiers.fenced(&j.sid);
                    j.answer(Err(e));
                } else {
                    out.push((j, v));
                }
            }
            out
        }
        // a connection-level failure would fail every write the same way: fail them all now
        Some((e, false)) => {
            let mut out = Vec::new();
            for (j, v) in group {
                if j.write().is_some_and(|w| w.to_sql) {
                    j.answer(Err(e.clone()));
                } else {
                    out.push((j, v));
                }
            }
            out
        }
        // one bad write must not fail the others: each alone
        Some((_, true)) => {
            let mut out = Vec::new();
            for (j, v) in group {
                let alone = j.write().filter(|w| w.to_sql).map(|w| VersionedWrite {
                    sid: &j.sid,
                    batch: &w.batch,
                    version: v,
                    epoch: w.epoch,
                });
                let r = match alone {
                    Some(w) => match sql.commit_in_lane(lane, &[w]).await {
                        Ok(f) if f.is_empty() => Ok(()),
                        Ok(_) => Err(tiers.fenced(&j.sid)),
                        Err(ce) => Err(ce.error),
                    },
                    None => Ok(()),
                };
                match r {
                    Ok(()) => out.push((j, v)),
                    Err(e) => j.answer(Err(e)),
                }
            }
            out
        }
    }
}

/// The lane's second stage: applies each job's Redis part and the cache in commit order, then
/// answers.
pub(super) async fn apply_stage(tiers: Arc<Tiers>, mut rx: mpsc::Receiver<Vec<(Job, u64)>>) {
    while let Some(group) = rx.recv().await {
        if group.iter().all(|(j, _)| j.write().is_some()) {
            apply_writes(&tiers, group).await;
            continue;
        }
        for (job, v) in group {
            let r = match &job.op {
                Op::Write(_) => {
                    apply_writes(&tiers, vec![(job, v)]).await;
                    continue;
                }
                Op::Clear { keep_creds, epoch } => {
                    clear_tiers(&tiers, &job, v, *keep_creds, *epoch).await
                }
                Op::Flush => flush_session(&tiers, &job.sid).await,
                Op::Rebuild => rebuild(&tiers, &job.sid, &job.slot).await.map(|_| 0),
                Op::Barrier => Ok(0),
            };
            job.answer(r);
        }
    }
}

pub(super) async fn clear_tiers(
    tiers: &Tiers,
    job: &Job,
    v: u64,
    keep_creds: bool,
    epoch: Option<u64>,
) -> Result<u64> {
    if let Some(redis) = &tiers.redis {
        match redis.clear(&job.sid, v, keep_creds, epoch).await {
            Ok(Applied::Fenced) => return Err(tiers.fenced(&job.sid)),
            Ok(_) => job.slot.raise_floor(v),
            Err(e) => {
                suspect(tiers, &job.slot);
                if let Some(cache) = &tiers.cache {
                    cache.remove_session(&job.sid, keep_creds);
                }
                return Err(e);
            }
        }
    }
    if let Some(cache) = &tiers.cache {
        cache.remove_session(&job.sid, keep_creds);
    }
    Ok(v)
}

/// Sends the Redis scripts of consecutive writes together (one pipelined burst, in order), then
/// settles each: cache, answer.
pub(super) async fn apply_writes(tiers: &Tiers, group: Vec<(Job, u64)>) {
    // a session whose Redis step failed before is rebuilt from SQL before it gets more writes
    let mut unusable: HashMap<String, Error> = HashMap::new();
    if tiers.redis.is_some() {
        for (j, _) in &group {
            if j.slot.is_suspect() && !unusable.contains_key(&*j.sid) {
                if let Err(e) = rebuild(tiers, &j.sid, &j.slot).await {
                    unusable.insert(j.sid.to_string(), e);
                }
            }
        }
    }
    let results: Vec<Option<Result<Applied>>> = match &tiers.redis {
        None => group.iter().map(|_| None).collect(),
        Some(redis) => {
            let futs = group.iter().map(|(j, v)| {
                let w = j.write();
                let floor = j.slot.floor();
                let skip = unusable.get(&*j.sid).cloned();
                async move {
                    if let Some(e) = skip {
                        return Some(Err(e));
                    }
                    let w = w?;
                    let durability = w.redis?;
                    let stamp = WriteStamp {
                        version: *v,
                        floor,
                        epoch: w.epoch,
                    };
                    let r = redis
                        .write(&j.sid, &w.batch, stamp, w.ttl, durability)
                        .await;
                    if r.is_ok() && durability == Durability::RedisOnly {
                        if let Err(e) = redis.index_dirty_after_write(&j.sid).await {
                            return Some(Err(e));
                        }
                    }
                    Some(r)
                }
            });
            futures::future::join_all(futs).await
        }
    };
    for ((job, v), r) in group.into_iter().zip(results) {
        let Some(w) = job.write() else {
            continue;
        };
        let outcome = match r {
            None | Some(Ok(Applied::Yes)) => Ok(()),
            Some(Ok(Applied::Stale)) => recover_write(tiers, &job, v).await,
            Some(Ok(Applied::Fenced)) => Err(tiers.fenced(&job.sid)),
            Some(Ok(Applied::BelowClear)) => {
                job.slot.invalidate();
                Err(Error::SessionLocked(
                    "another process cleared this session after this write was versioned; the write is void"
                        .into(),
                ))
            }
            Some(Err(e)) => Err(e),
        };
        match outcome {
            Ok(()) => {
                if w.redis.is_some() {
                    job.slot.raise_floor(v);
                }
                if let (Some(cache), Some(plain)) = (&tiers.cache, &w.plain) {
                    cache.apply_write(&job.sid, plain.creds.as_ref(), &plain.keys);
                }
                job.answer(Ok(v));
            }
            Err(e) => {
                // SQL may hold the write and Redis lack it: rebuild Redis before its next use
                suspect(tiers, &job.slot);
                if let Some(cache) = &tiers.cache {
                    cache.invalidate(&job.sid, w.batch.creds.is_some(), &w.batch.keys);
                }
                job.answer(Err(e));
            }
        }
    }
}
