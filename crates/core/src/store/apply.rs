//! A lane's second stage: applies each job's Redis part and the cache in commit order, then
//! answers. The Redis part of a write SQL committed is never refused for its epoch (SQL fenced
//! it already); a write to Redis only is fenced here, and, when it was a claim, claimed again
//! and applied anew in its place in the lane.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{flush_session, rebuild, recover_write, suspect, Job, Op, Tiers};
use crate::error::{Error, Result};
use crate::redis::{Applied, Durability, RedisTier, WriteStamp};

/// How often a write to Redis only whose claim was overtaken is claimed again.
const CLAIM_ROUNDS: usize = 3;

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
                Op::Clear { keep_creds, .. } => {
                    let keep = *keep_creds;
                    let (job, r) = clear_tiers(&tiers, job, v, keep).await;
                    job.answer(r);
                    continue;
                }
                Op::Flush => flush_session(&tiers, &job.sid).await,
                Op::Rebuild => rebuild(&tiers, &job.sid, &job.slot).await.map(|_| 0),
                Op::Barrier => Ok(0),
            };
            job.answer(r);
        }
    }
}

/// The Redis part of a clear, then the cache. Without SQL the clear is fenced here (its epoch
/// checked by the script) and, as a claim, claimed again.
async fn clear_tiers(
    tiers: &Tiers,
    mut job: Job,
    mut v: u64,
    keep_creds: bool,
) -> (Job, Result<u64>) {
    if let Some(redis) = &tiers.redis {
        for round in 0..CLAIM_ROUNDS {
            let Some(fence) = job.fence() else { break };
            let epoch = tiers.sql.is_none().then_some(fence.epoch);
            match redis.clear(&job.sid, v, keep_creds, epoch).await {
                Ok(Applied::Fenced) if round + 1 < CLAIM_ROUNDS => {
                    match restamp(tiers, &mut job, fence.epoch, fence.claimed).await {
                        Ok(nv) => v = nv,
                        Err(e) => return (job, Err(e)),
                    }
                }
                Ok(Applied::Fenced) => return (job, Err(super::tiers::stale())),
                Ok(_) => {
                    job.slot.raise_floor(v);
                    break;
                }
                Err(e) => {
                    suspect(tiers, &job.slot);
                    if let Some(cache) = &tiers.cache {
                        cache.remove_session(&job.sid, keep_creds);
                    }
                    return (job, Err(e));
                }
            }
        }
    }
    if let Some(cache) = &tiers.cache {
        cache.remove_session(&job.sid, keep_creds);
    }
    (job, Ok(v))
}

/// A job a tier refused for its epoch, claimed again: its new epoch and version.
async fn restamp(tiers: &Tiers, job: &mut Job, epoch: u64, claimed: bool) -> Result<u64> {
    let new = tiers
        .refused(&job.sid, &job.slot, epoch, claimed, job.puts_values())
        .await?;
    job.set_epoch(new);
    let v = job.slot.next_version(new).ok_or_else(super::tiers::stale)?;
    job.seal(tiers.keyring.as_deref(), v)?;
    Ok(v)
}

/// One write's Redis script (and, on a cluster, its dirty index entry).
async fn write_redis(redis: &RedisTier, job: &Job, v: u64) -> Option<Result<Applied>> {
    let w = job.write()?;
    let durability = w.redis?;
    let stamp = WriteStamp {
        version: v,
        floor: job.slot.floor(),
        epoch: Some(w.fence.epoch),
    };
    let r = redis
        .write(&job.sid, w.stored(), stamp, w.ttl, durability)
        .await;
    if r.is_ok() && durability == Durability::RedisOnly {
        if let Err(e) = redis.index_dirty_after_write(&job.sid).await {
            return Some(Err(e));
        }
    }
    Some(r)
}

/// Sends the Redis scripts of consecutive writes together (one pipelined burst, in order), then
/// settles each in order: cache, answer.
async fn apply_writes(tiers: &Tiers, group: Vec<(Job, u64)>) {
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
                let skip = unusable.get(&*j.sid).cloned();
                async move {
                    match skip {
                        Some(e) => Some(Err(e)),
                        None => write_redis(redis, j, *v).await,
                    }
                }
            });
            futures::future::join_all(futs).await
        }
    };
    for ((job, v), r) in group.into_iter().zip(results) {
        settle(tiers, job, v, r).await;
    }
}

/// What a write's Redis step did, turned into its answer.
async fn settle(tiers: &Tiers, mut job: Job, mut v: u64, mut r: Option<Result<Applied>>) {
    let Some(durable) = job.write().map(|w| w.to_sql) else {
        return;
    };
    let mut rounds = 0;
    let outcome = loop {
        match r {
            None | Some(Ok(Applied::Yes)) => break Ok(()),
            Some(Ok(Applied::Stale)) => break recover_write(tiers, &job, v).await,
            Some(Ok(Applied::Fenced)) => {
                // only a write to Redis only is fenced here: nothing of it was applied
                rounds += 1;
                let Some(fence) = job.fence() else {
                    break Err(super::tiers::stale());
                };
                if rounds >= CLAIM_ROUNDS {
                    return job.answer(Err(super::tiers::stale()));
                }
                match restamp(tiers, &mut job, fence.epoch, fence.claimed).await {
                    Ok(nv) => v = nv,
                    Err(e) => return job.answer(Err(e)),
                }
                r = match &tiers.redis {
                    Some(redis) => write_redis(redis, &job, v).await,
                    None => None,
                };
            }
            // a clear of a later version reached Redis first: a committed write was cleared
            // (it happened, then the clear); a write to Redis only never applied
            Some(Ok(Applied::BelowClear)) if durable => {
                job.slot.invalidate();
                if let (Some(cache), Some(w)) = (&tiers.cache, job.write()) {
                    cache.invalidate(&job.sid, w.form.creds.is_some(), &w.form.keys);
                }
                return job.answer(Ok(v));
            }
            Some(Ok(Applied::BelowClear)) => {
                job.slot.invalidate();
                return job.answer(Err(Error::SessionLocked(
                    "another writer cleared this session after this write was versioned; the write is void"
                        .into(),
                )));
            }
            Some(Err(e)) => break Err(e),
        }
    };
    let Some(w) = job.write() else { return };
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
                cache.invalidate(&job.sid, w.form.creds.is_some(), &w.form.keys);
            }
            job.answer(Err(e));
        }
    }
}
