//! A lane's first stage: groups queued writes, gives each its version (its epoch's next, see
//! `crate::version`), commits their SQL part, and hands the survivors to the second stage
//! (`apply`) in order.
//!
//! A write whose epoch SQL refused (fenced) is never acknowledged. If it was a claim (this store
//! does not hold the session: a tool, `lease: false`), it is claimed again and committed anew
//! here, before any later job of the lane, so its session's call order holds; otherwise this
//! store lost the session and the write fails with `ERR_SESSION_LOCKED`. A commit whose outcome
//! is unknown (it failed or timed out after it may have reached SQL) leaves the session suspect:
//! its Redis copy is rebuilt from SQL before it is used again, and the cache forgets the
//! records, so no tier that lacks (or has) the write is trusted by the next read.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{suspect, Job, Op, Tiers};
use crate::error::Error;
use crate::sql::VersionedWrite;

/// Most writes one group transaction takes, and about how many value bytes.
pub(super) const MAX_GROUP_JOBS: usize = 256;
pub(super) const MAX_GROUP_BYTES: usize = 16 * 1024 * 1024;
/// How often the writes of a session whose claim was overtaken are claimed again and committed
/// anew before they fail.
const CLAIM_ROUNDS: usize = 3;

/// The jobs of the next group: the first job queued (or held back), then, if it is a write,
/// the writes queued behind it up to the group's limits; a non-write job after them is held
/// back for the next group.
pub(super) fn take_group(
    first: Job,
    held: &mut Option<Job>,
    mut more: impl FnMut() -> Option<Job>,
) -> Vec<Job> {
    let size = |j: &Job| j.write().map_or(0, |w| w.form.byte_size());
    let mut group = vec![first];
    if group[0].write().is_none() {
        return group;
    }
    let mut bytes = size(&group[0]);
    while group.len() < MAX_GROUP_JOBS && bytes < MAX_GROUP_BYTES {
        match more() {
            Some(j) if j.write().is_some() => {
                bytes += size(&j);
                group.push(j);
            }
            Some(j) => {
                *held = Some(j);
                break;
            }
            None => break,
        }
    }
    group
}

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
        let mut group = take_group(first, &mut held, || rx.try_recv().ok());
        // callers that gave up: skip what has not started
        group.retain(|j| !j.done.is_closed());
        let mut pending = stamp_all(&tiers, group).await;
        for round in 0.. {
            if pending.is_empty() {
                break;
            }
            let (survivors, again) = commit_sql(&tiers, lane, pending).await;
            if !survivors.is_empty() && next.send(survivors).await.is_err() {
                return;
            }
            if round + 1 >= CLAIM_ROUNDS {
                for j in again {
                    j.answer(Err(super::tiers::stale()));
                }
                break;
            }
            pending = stamp_all(&tiers, again).await;
        }
    }
}

/// Gives each job its version (sealing a write's values at it). A job whose epoch is behind a
/// version this process saw is handled like one a tier refused ([`Tiers::refused`]).
async fn stamp_all(tiers: &Tiers, jobs: Vec<Job>) -> Vec<(Job, u64)> {
    let mut out = Vec::with_capacity(jobs.len());
    for j in jobs {
        if let Some(stamped) = stamp(tiers, j).await {
            out.push(stamped);
        }
    }
    out
}

async fn stamp(tiers: &Tiers, mut job: Job) -> Option<(Job, u64)> {
    for _ in 0..CLAIM_ROUNDS {
        let Some(fence) = job.fence() else {
            return Some((job, 0));
        };
        match job.slot.next_version(fence.epoch) {
            Some(v) => {
                return match job.seal(tiers.keyring.as_deref(), v) {
                    Ok(()) => Some((job, v)),
                    Err(e) => {
                        job.answer(Err(e));
                        None
                    }
                };
            }
            None => match tiers
                .refused(
                    &job.sid,
                    &job.slot,
                    fence.epoch,
                    fence.claimed,
                    job.puts_values(),
                )
                .await
            {
                Ok(epoch) => job.set_epoch(epoch),
                Err(e) => {
                    job.answer(Err(e));
                    return None;
                }
            },
        }
    }
    job.answer(Err(super::tiers::stale()));
    None
}

/// Commits the SQL part of a group. Answers the jobs that failed; returns the jobs that go on to
/// the second stage, and the jobs of sessions whose claim was overtaken, each carrying the epoch
/// claimed anew (to be versioned and committed again).
async fn commit_sql(
    tiers: &Tiers,
    lane: usize,
    group: Vec<(Job, u64)>,
) -> (Vec<(Job, u64)>, Vec<Job>) {
    let Some(sql) = &tiers.sql else {
        return (group, Vec::new());
    };
    if let [(job, v)] = group.as_slice() {
        if let Op::Clear { keep_creds, fence } = job.op {
            let r = sql.clear(&job.sid, *v, keep_creds, Some(fence.epoch)).await;
            return match r {
                Ok(true) => (group, Vec::new()),
                Ok(false) => refused(tiers, group).await,
                Err(e) => {
                    for (j, _) in group {
                        suspect(tiers, &j.slot);
                        j.answer(Err(e.clone()));
                    }
                    (Vec::new(), Vec::new())
                }
            };
        }
    }
    let writes: Vec<VersionedWrite<'_>> = group
        .iter()
        .filter_map(|(j, v)| {
            j.write().filter(|w| w.to_sql).map(|w| VersionedWrite {
                sid: &j.sid,
                batch: w.stored(),
                version: *v,
                epoch: Some(w.fence.epoch),
            })
        })
        .collect();
    if writes.is_empty() {
        return (group, Vec::new());
    }
    let outcome = sql.commit_in_lane(lane, &writes).await;
    drop(writes);
    match outcome {
        Ok(fenced) if fenced.is_empty() => (group, Vec::new()),
        Ok(fenced) => {
            let fenced: BTreeSet<String> = fenced.into_iter().collect();
            let (out, refused_jobs): (Vec<_>, Vec<_>) = group
                .into_iter()
                .partition(|(j, _)| !fenced.contains(&*j.sid));
            let (mut more, again) = refused(tiers, refused_jobs).await;
            let mut out = out;
            out.append(&mut more);
            (out, again)
        }
        Err(ce) if ce.statement_level && group.len() > 1 => {
            // one bad write must not fail the others: each alone
            let mut out = Vec::new();
            let mut again = Vec::new();
            for (j, v) in group {
                let (mut o, mut a) = Box::pin(commit_sql(tiers, lane, vec![(j, v)])).await;
                out.append(&mut o);
                again.append(&mut a);
            }
            (out, again)
        }
        // the outcome is unknown (it may have reached SQL): fail every write, trust no tier
        Err(ce) => {
            let mut out = Vec::new();
            for (j, v) in group {
                if j.write().is_some_and(|w| w.to_sql) {
                    forget_unsure(tiers, &j);
                    j.answer(Err(ce.error.clone()));
                } else {
                    out.push((j, v));
                }
            }
            (out, Vec::new())
        }
    }
}

/// A write whose outcome is unknown: its session is rebuilt from SQL before its next use, and
/// the cache forgets its records.
fn forget_unsure(tiers: &Tiers, job: &Job) {
    suspect(tiers, &job.slot);
    if let (Some(cache), Some(w)) = (&tiers.cache, job.write()) {
        cache.invalidate(&job.sid, w.form.creds.is_some(), &w.form.keys);
    }
}

/// The jobs of sessions SQL fenced: each session's verdict once ([`Tiers::refused`]); a claim
/// taken again moves every job of its session to be committed anew, under the new epoch.
async fn refused(tiers: &Tiers, jobs: Vec<(Job, u64)>) -> (Vec<(Job, u64)>, Vec<Job>) {
    let mut again = Vec::new();
    let mut verdicts: std::collections::HashMap<String, Result<u64, Error>> = Default::default();
    for (mut j, _) in jobs {
        let Some(fence) = j.fence() else {
            again.push(j);
            continue;
        };
        let verdict = match verdicts.get(&*j.sid) {
            Some(v) => v.clone(),
            None => {
                let v = tiers
                    .refused(&j.sid, &j.slot, fence.epoch, fence.claimed, j.puts_values())
                    .await;
                verdicts.insert(j.sid.to_string(), v.clone());
                v
            }
        };
        match verdict {
            Ok(epoch) => {
                j.set_epoch(epoch);
                again.push(j);
            }
            Err(e) => j.answer(Err(e)),
        }
    }
    (Vec::new(), again)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::Fence;
    use crate::model::{KeyWrite, SessionId, WriteBatch};
    use crate::store::job::WriteJob;

    fn job(op: Op) -> Job {
        let (done, _answer) = tokio::sync::oneshot::channel();
        Job {
            sid: SessionId::new("s").unwrap(),
            slot: Arc::new(super::super::Slot::default()),
            op,
            done,
        }
    }

    fn write(bytes: usize) -> Job {
        let batch = WriteBatch {
            creds: None,
            keys: vec![KeyWrite::put("session", "a", vec![b'x'; bytes])],
        };
        job(Op::Write(Box::new(WriteJob {
            form: Arc::new(batch),
            sealed: None,
            fence: Fence {
                epoch: 1,
                claimed: false,
                sealed: false,
            },
            plain: None,
            to_sql: true,
            redis: None,
            ttl: None,
        })))
    }

    #[test]
    fn a_group_takes_the_writes_behind_the_first_and_holds_back_the_next_other_job() {
        let mut queue: std::collections::VecDeque<Job> =
            [write(1), write(1), job(Op::Flush), write(1)].into();
        let mut held = None;
        let first = queue.pop_front().unwrap();
        let group = take_group(first, &mut held, || queue.pop_front());
        assert_eq!(group.len(), 2);
        assert!(matches!(held.as_ref().map(|j| &j.op), Some(Op::Flush)));
        assert_eq!(queue.len(), 1, "nothing behind the held job was taken");
        // a non-write job is a group of its own
        let flush = held.take().unwrap();
        let group = take_group(flush, &mut held, || queue.pop_front());
        assert_eq!(group.len(), 1);
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn a_group_stops_at_its_byte_budget() {
        let mut queue: std::collections::VecDeque<Job> =
            (0..4).map(|_| write(MAX_GROUP_BYTES / 2)).collect();
        let mut held = None;
        let first = queue.pop_front().unwrap();
        let group = take_group(first, &mut held, || queue.pop_front());
        assert_eq!(group.len(), 2);
        assert!(held.is_none());
        assert_eq!(queue.len(), 2);
    }
}
