//! Per-record checks: each record's operations, as a register (initially absent), must be
//! linearizable; no read may return the value of a fenced write.
//!
//! Linearizability is local (Herlihy & Wing): a history is linearizable iff each object's
//! sub-history is, so each record is checked on its own (Porcupine's partitioning). The decision
//! procedure is todc-utils' `WGLChecker`. A fenced write is left out of the register and checked
//! on its own: any read of its (unique) value is a violation. A fenced delete cannot be told apart
//! from other absences and is only left out.
//!
//! On a violation the counterexample is the shortest prefix of the record's history that is not
//! linearizable. A prefix up to time T keeps the operations invoked by T: those that returned
//! after T become pending writes, or are dropped when they are reads. Every prefix of a
//! linearizable history is linearizable, so the shortest failing prefix is found by a binary
//! search over the return times, and the operation that returns at its end is the first one no
//! legal order can explain.
use crate::history::{History, Kind, Op, Status};
use std::collections::{BTreeMap, HashMap, HashSet};
use todc_utils::linearizability::history::{Action, History as WglHistory};
use todc_utils::{Specification, WGLChecker};

/// Values as small integers: 0 is "absent".
pub type Val = u32;

#[derive(Clone, Copy, Debug)]
pub enum RegisterOp {
    Write(Val),
    Read(Val),
}

/// A register of interned values, initially absent.
pub struct Register;

impl Specification for Register {
    type State = Val;
    type Operation = RegisterOp;

    fn init() -> Val {
        0
    }

    fn apply(op: &RegisterOp, state: &Val) -> (bool, Val) {
        match *op {
            RegisterOp::Write(v) => (true, v),
            RegisterOp::Read(v) => (v == *state, *state),
        }
    }
}

/// One operation as the register checker sees it.
#[derive(Clone, Copy, Debug)]
pub struct Interval {
    pub op: RegisterOp,
    pub invoke: u64,
    /// u64::MAX: pending until the end of the history
    pub end: u64,
}

/// Whether the operations, each taking effect once between its invocation and its end, are
/// linearizable as a register. At equal times a call is ordered before a return (the two
/// operations count as concurrent).
///
/// A pending write of a value no read returned is left out first: that changes no verdict (in a
/// legal order with it, no read comes between it and the next write, or that read would return
/// its value, so the order without it is legal too; an order without it takes it at the end),
/// and every such write doubles the orders the search can try (30 writes cut off by an outage
/// took the search past 20 GB).
pub fn linearizable(ops: &[Interval]) -> bool {
    let read: HashSet<Val> = ops
        .iter()
        .filter_map(|o| {
            if let RegisterOp::Read(v) = o.op {
                Some(v)
            } else {
                None
            }
        })
        .collect();
    let ops: Vec<Interval> = ops.iter().copied().filter(|o| !matches!(o.op, RegisterOp::Write(v) if v != 0 && o.end == u64::MAX && !read.contains(&v))).collect();
    if ops.is_empty() {
        return true;
    }
    // (time, 0 call / 1 return, op)
    let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, o) in ops.iter().enumerate() {
        events.push((o.invoke, 0, i));
        events.push((o.end, 1, i));
    }
    events.sort_unstable();
    // each operation is its own process: the checker pairs a process's calls and returns in order
    let actions = events
        .into_iter()
        .map(|(_, kind, i)| {
            (
                i,
                if kind == 0 {
                    Action::Call(ops[i].op)
                } else {
                    Action::Response(ops[i].op)
                },
            )
        })
        .collect();
    WGLChecker::<Register>::is_linearizable(WglHistory::from_actions(actions))
}

#[derive(Debug)]
pub enum Violation {
    /// reads (by invocation) returned the value of a write that was fenced (ERR_SESSION_LOCKED)
    FencedVisible { write: usize, reads: Vec<usize> },
    /// no order of the record's operations explains what its reads returned
    NotLinearizable {
        /// the operation whose return ends the shortest failing prefix
        failing: usize,
        /// what the failing operation shows, in words
        why: String,
        /// the operations worth looking at, by invocation
        context: Vec<usize>,
    },
}

pub struct RecordResult {
    pub record: String,
    /// indices into History::ops, by invocation
    pub ops: Vec<usize>,
    pub violations: Vec<Violation>,
}

/// Checks every record of the history.
pub fn check(history: &History) -> Vec<RecordResult> {
    let mut by_record: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, op) in history.ops.iter().enumerate() {
        by_record.entry(op.record.as_str()).or_default().push(i);
    }
    by_record
        .into_iter()
        .map(|(record, mut ops)| {
            ops.sort_by_key(|&i| (history.ops[i].invoke, i));
            let violations = check_record(&history.ops, &ops);
            RecordResult {
                record: record.to_string(),
                ops,
                violations,
            }
        })
        .collect()
}

fn check_record(all: &[Op], ops: &[usize]) -> Vec<Violation> {
    let mut violations = Vec::new();
    // fenced writes: no read may return their values
    let fenced: HashMap<&str, usize> = ops
        .iter()
        .filter(|&&i| all[i].status == Status::Fenced && all[i].kind == Kind::Write)
        .map(|&i| (all[i].value.as_deref().unwrap_or_default(), i))
        .collect();
    let mut register: Vec<usize> = Vec::new();
    for &i in ops {
        let op = &all[i];
        match (op.kind, op.status) {
            (_, Status::Fenced | Status::Ignored) => {}
            (Kind::Read, Status::Done) => match op.value.as_deref().and_then(|v| fenced.get(v)) {
                // reported here; left out of the register so that it reports what else is wrong
                Some(&w) => match violations
                    .iter_mut()
                    .find(|v| matches!(v, Violation::FencedVisible { write, .. } if *write == w))
                {
                    Some(Violation::FencedVisible { reads, .. }) => reads.push(i),
                    _ => violations.push(Violation::FencedVisible {
                        write: w,
                        reads: vec![i],
                    }),
                },
                None => register.push(i),
            },
            _ => register.push(i),
        }
    }
    // intern: 0 absent, 1.. the written values, then values no write carried
    let mut ids: HashMap<&str, Val> = HashMap::new();
    for &i in &register {
        if all[i].kind == Kind::Write {
            let n = ids.len() as Val + 1;
            ids.insert(all[i].value.as_deref().unwrap_or_default(), n);
        }
    }
    let mut phantom = ids.len() as Val + 1;
    let intervals: Vec<Interval> = register
        .iter()
        .map(|&i| {
            let op = &all[i];
            let v = match &op.value {
                None => 0,
                Some(s) => match ids.get(s.as_str()) {
                    Some(&n) => n,
                    None => {
                        phantom += 1;
                        phantom
                    }
                },
            };
            let rop = if op.kind == Kind::Read {
                RegisterOp::Read(v)
            } else {
                RegisterOp::Write(v)
            };
            Interval {
                op: rop,
                invoke: op.invoke,
                end: op.end(),
            }
        })
        .collect();
    if linearizable(&intervals) {
        return violations;
    }
    let failing = register[shortest_failing_prefix(&intervals)];
    let (why, context) = explain(all, ops, &register, failing);
    violations.push(Violation::NotLinearizable {
        failing,
        why,
        context,
    });
    violations
}

/// The prefix of `ops` up to time `t`.
fn prefix(ops: &[Interval], t: u64) -> Vec<Interval> {
    ops.iter()
        .filter(|o| o.invoke <= t)
        .filter_map(|o| match (o.op, o.end <= t) {
            (_, true) => Some(*o),
            (RegisterOp::Write(_), false) => Some(Interval {
                end: u64::MAX,
                ..*o
            }),
            (RegisterOp::Read(_), false) => None,
        })
        .collect()
}

/// The index of the operation whose return ends the shortest non-linearizable prefix (the
/// history itself is not linearizable).
fn shortest_failing_prefix(ops: &[Interval]) -> usize {
    let mut ends: Vec<(u64, usize)> = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| o.end != u64::MAX)
        .map(|(i, o)| (o.end, i))
        .collect();
    ends.sort_unstable();
    // invariant: prefix(ends[lo - 1]) linearizable (or lo = 0), prefix(ends[hi]) not
    let (mut lo, mut hi) = (0usize, ends.len() - 1);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if linearizable(&prefix(ops, ends[mid].0)) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    ends[hi].1
}

/// Words for the failing operation and the operations around it (`ops`: all of the record's,
/// fenced ones included; `register`: those the register check used).
fn explain(all: &[Op], ops: &[usize], register: &[usize], failing: usize) -> (String, Vec<usize>) {
    let f = &all[failing];
    let f_end = f.end();
    let done_write = |i: usize| all[i].kind.writes() && all[i].status == Status::Done;
    // acknowledged writes that returned before the failing operation began
    let mut before: Vec<usize> = register
        .iter()
        .copied()
        .filter(|&i| done_write(i) && all[i].end() < f.invoke)
        .collect();
    before.sort_by_key(|&i| all[i].end());
    // the write whose value a failing read returned
    let source = match (f.kind, &f.value) {
        (Kind::Read, Some(v)) => register
            .iter()
            .copied()
            .find(|&i| all[i].kind == Kind::Write && all[i].value.as_deref() == Some(v)),
        _ => None,
    };
    let why = match (f.kind, &f.value, source) {
        (Kind::Read, Some(_), None) => {
            "the read returned a value no write of this record carried".to_string()
        }
        (Kind::Read, Some(_), Some(s)) => {
            // a write acknowledged before the read began, itself begun after the source returned
            let newer = before
                .iter()
                .rev()
                .copied()
                .find(|&w| all[w].invoke > all[s].end());
            match newer {
                Some(w) => format!(
                    "stale read: it returned {}, but {} was acknowledged before the read began, and began after {} had returned",
                    show(&f.value),
                    match all[w].kind {
                        Kind::Delete => "a delete".to_string(),
                        _ => format!("write {}", show(&all[w].value)),
                    },
                    show(&all[s].value)
                ),
                None => "the read's value cannot be ordered with the reads and writes around it".to_string(),
            }
        }
        (Kind::Read, None, _) => match before.last() {
            Some(&w) if all[w].kind == Kind::Write => {
                // a delete refused by the fence, begun after that write and before the read returned
                let fenced_delete = ops.iter().copied().find(|&d| {
                    all[d].kind == Kind::Delete
                        && all[d].status == Status::Fenced
                        && all[d].invoke > all[w].invoke
                        && all[d].invoke <= f_end
                });
                match fenced_delete {
                    Some(d) => format!(
                        "the read returned absent after write {} was acknowledged; the only delete that could explain it is {}'s, which was refused with {}: a fenced delete became visible",
                        show(&all[w].value),
                        all[d].proc,
                        all[d].outcome
                    ),
                    None => format!(
                        "the read returned absent, but write {} was acknowledged before the read began and no delete could have come between",
                        show(&all[w].value)
                    ),
                }
            }
            _ => "the read returned absent, which no order of the writes around it explains"
                .to_string(),
        },
        _ => "no order of this record's operations explains the reads up to this write's return"
            .to_string(),
    };
    let mut context: Vec<usize> = Vec::new();
    context.push(failing);
    if let Some(s) = source {
        context.push(s);
    }
    context.extend(before.iter().rev().take(3));
    // operations overlapping the failing one
    let overlapping = register
        .iter()
        .copied()
        .filter(|&i| i != failing && all[i].invoke <= f_end && all[i].end() >= f.invoke);
    context.extend(overlapping.take(8));
    // fenced writes and deletes since the last acknowledged write (they must not have landed)
    let since = before.last().map(|&w| all[w].invoke).unwrap_or(0);
    context.extend(
        ops.iter()
            .copied()
            .filter(|&i| {
                all[i].status == Status::Fenced && all[i].invoke >= since && all[i].invoke <= f_end
            })
            .take(4),
    );
    context.sort_by_key(|&i| (all[i].invoke, i));
    context.dedup();
    (why, context)
}

/// A value for messages: "absent" or the quoted string.
pub fn show(v: &Option<String>) -> String {
    match v {
        None => "absent".to_string(),
        Some(s) => format!("{s:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(v: Val, invoke: u64, end: u64) -> Interval {
        Interval {
            op: RegisterOp::Write(v),
            invoke,
            end,
        }
    }
    fn r(v: Val, invoke: u64, end: u64) -> Interval {
        Interval {
            op: RegisterOp::Read(v),
            invoke,
            end,
        }
    }
    const PENDING: u64 = u64::MAX;

    #[test]
    fn sequential_history_is_linearizable() {
        assert!(linearizable(&[
            r(0, 0, 1),
            w(1, 2, 3),
            r(1, 4, 5),
            w(0, 6, 7),
            r(0, 8, 9)
        ]));
    }

    #[test]
    fn concurrent_writes_may_take_either_order() {
        assert!(linearizable(&[w(1, 0, 10), w(2, 1, 9), r(2, 11, 12)]));
        assert!(linearizable(&[w(1, 0, 10), w(2, 1, 9), r(1, 11, 12)]));
        // but both later reads must agree
        assert!(!linearizable(&[
            w(1, 0, 10),
            w(2, 1, 9),
            r(1, 11, 12),
            r(2, 13, 14)
        ]));
    }

    #[test]
    fn stale_read_after_an_acknowledged_write_is_a_violation() {
        assert!(!linearizable(&[w(1, 0, 1), w(2, 2, 3), r(1, 4, 5)]));
    }

    #[test]
    fn a_pending_write_may_or_may_not_happen() {
        assert!(linearizable(&[w(1, 0, 1), w(2, 2, PENDING), r(1, 4, 5)]));
        assert!(linearizable(&[w(1, 0, 1), w(2, 2, PENDING), r(2, 4, 5)]));
        // but not before it was invoked, and not undone once seen
        assert!(!linearizable(&[w(1, 0, 1), r(2, 2, 3), w(2, 4, PENDING)]));
        assert!(!linearizable(&[
            w(1, 0, 1),
            w(2, 2, PENDING),
            r(2, 4, 5),
            r(1, 6, 7)
        ]));
    }

    #[test]
    fn many_unread_pending_writes_stay_cheap() {
        // an outage: 200 writes of unknown outcome nobody read, around reads of one value
        let mut ops = vec![w(1, 0, 1)];
        for i in 0..200 {
            ops.push(w(2 + i, 2 + i as u64, PENDING));
            ops.push(r(1, 3 + i as u64, 4 + i as u64));
        }
        assert!(linearizable(&ops));
        ops.push(r(7, 1000, 1001)); // one of them was read: it landed
        assert!(linearizable(&ops));
        ops.push(r(1, 1002, 1003)); // and cannot be undone
        assert!(!linearizable(&ops));
    }

    #[test]
    fn shortest_prefix_points_at_the_first_unexplained_read() {
        let ops = [
            w(1, 0, 1),
            w(2, 2, 3),
            r(2, 4, 5),
            r(1, 6, 7),
            r(2, 8, 9),
            r(1, 10, 11),
        ];
        assert_eq!(shortest_failing_prefix(&ops), 3);
    }
}

#[cfg(test)]
mod record_tests {
    //! Hand-made histories through the parser and the record checks.
    use super::*;

    fn run(lines: &[&str]) -> Vec<RecordResult> {
        let mut h = History::new();
        h.add_text("t.jsonl", &lines.join("\n")).expect("parses");
        h.validate().expect("valid");
        check(&h)
    }

    fn violations(results: &[RecordResult]) -> Vec<&Violation> {
        results.iter().flat_map(|r| r.violations.iter()).collect()
    }

    #[test]
    fn a_linearizable_history_passes() {
        let results = run(&[
            r#"{"proc":"holder","record":"a","op":"write","value":"h:1","invoke":100,"return":200,"outcome":"ok"}"#,
            r#"{"proc":"reader","record":"a","op":"read","value":null,"invoke":110,"return":150,"outcome":"ok"}"#,
            r#"{"proc":"reader","record":"a","op":"read","value":"h:1","invoke":160,"return":190,"outcome":"ok"}"#,
            r#"{"proc":"tool","record":"a","op":"write","value":"t:1","invoke":300,"return":400,"outcome":"ERR_REDIS"}"#,
            r#"{"proc":"reader","record":"a","op":"read","value":"h:1","invoke":410,"return":420,"outcome":"ok"}"#,
            r#"{"proc":"reader","record":"a","op":"read","value":"t:1","invoke":430,"return":440,"outcome":"ok"}"#,
            r#"{"proc":"holder","record":"a","op":"delete","invoke":500,"return":600,"outcome":"ok"}"#,
            r#"{"proc":"reader","record":"a","op":"read","value":null,"invoke":610,"return":620,"outcome":"ok"}"#,
            r#"{"proc":"holder","record":"a","op":"write","value":"h:2","invoke":700,"return":800,"outcome":"ERR_SESSION_LOCKED"}"#,
            r#"{"proc":"reader","record":"a","op":"read","invoke":900,"return":910,"outcome":"ERR_TIMEOUT"}"#,
            r#"{"proc":"holder","record":"b","op":"write","value":"h:3","invoke":700}"#,
            r#"{"proc":"reader","record":"b","op":"read","value":null,"invoke":"710","return":"720","outcome":"ok"}"#,
        ]);
        assert_eq!(results.len(), 2);
        assert!(
            violations(&results).is_empty(),
            "{:?}",
            violations(&results)
        );
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_write_fails() {
        let results = run(&[
            r#"{"proc":"holder","record":"a","op":"write","value":"h:1","invoke":100,"return":200,"outcome":"ok"}"#,
            r#"{"proc":"tool","record":"a","op":"write","value":"t:1","invoke":300,"return":400,"outcome":"ok"}"#,
            r#"{"proc":"reader","record":"a","op":"read","value":"t:1","invoke":410,"return":420,"outcome":"ok"}"#,
            r#"{"proc":"reader","record":"a","op":"read","value":"h:1","invoke":500,"return":510,"outcome":"ok"}"#,
            r#"{"proc":"reader","record":"a","op":"read","value":"h:1","invoke":600,"return":610,"outcome":"ok"}"#,
        ]);
        let v = violations(&results);
        assert_eq!(v.len(), 1, "{v:?}");
        match v[0] {
            Violation::NotLinearizable {
                failing,
                why,
                context,
            } => {
                assert_eq!(*failing, 3, "the first read of h:1 after t:1 was read");
                assert!(why.starts_with("stale read"), "{why}");
                assert!(context.contains(&1) && context.contains(&0), "{context:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_read_of_a_fenced_writes_value_fails() {
        let results = run(&[
            r#"{"proc":"holder","record":"a","op":"write","value":"h:1","invoke":100,"return":200,"outcome":"ok"}"#,
            r#"{"proc":"holder","record":"a","op":"write","value":"h:2","invoke":300,"return":400,"outcome":"ERR_SESSION_LOCKED"}"#,
            r#"{"proc":"taker","record":"a","op":"read","value":"h:2","invoke":500,"return":510,"outcome":"ok"}"#,
        ]);
        let v = violations(&results);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            matches!(v[0], Violation::FencedVisible { write: 1, reads } if reads == &vec![2]),
            "{v:?}"
        );
    }

    #[test]
    fn a_lost_acknowledged_write_fails() {
        // acknowledged, then absent with no delete
        let results = run(&[
            r#"{"proc":"holder","record":"a","op":"write","value":"h:1","invoke":100,"return":200,"outcome":"ok"}"#,
            r#"{"proc":"reader","record":"a","op":"read","value":null,"invoke":300,"return":310,"outcome":"ok"}"#,
        ]);
        match violations(&results)[..] {
            [Violation::NotLinearizable {
                failing: 1, why, ..
            }] => assert!(why.contains("absent"), "{why}"),
            ref v => panic!("{v:?}"),
        }
    }

    #[test]
    fn a_visible_fenced_delete_is_named() {
        let results = run(&[
            r#"{"proc":"holder","record":"a","op":"write","value":"h:1","invoke":100,"return":200,"outcome":"ok"}"#,
            r#"{"proc":"holder","record":"a","op":"delete","invoke":300,"return":400,"outcome":"ERR_SESSION_LOCKED"}"#,
            r#"{"proc":"reader","record":"a","op":"read","value":null,"invoke":500,"return":510,"outcome":"ok"}"#,
        ]);
        match violations(&results)[..] {
            [Violation::NotLinearizable {
                failing: 2,
                why,
                context,
            }] => {
                assert!(why.contains("fenced delete became visible"), "{why}");
                assert!(context.contains(&1), "{context:?}");
            }
            ref v => panic!("{v:?}"),
        }
    }

    #[test]
    fn a_value_nobody_wrote_fails() {
        let results = run(&[
            r#"{"proc":"reader","record":"a","op":"read","value":"x","invoke":1,"return":2,"outcome":"ok"}"#,
        ]);
        match violations(&results)[..] {
            [Violation::NotLinearizable { why, .. }] => assert!(why.contains("no write"), "{why}"),
            ref v => panic!("{v:?}"),
        }
    }

    #[test]
    fn bad_input_is_refused() {
        let bad = [
            r#"{"proc":"p","record":"a","op":"write","invoke":1,"return":2,"outcome":"ok"}"#,
            r#"{"proc":"p","record":"a","op":"read","value":null,"invoke":5,"return":2,"outcome":"ok"}"#,
            r#"{"proc":"p","record":"a","op":"read","value":null,"invoke":5,"outcome":"ok"}"#,
            r#"{"proc":"p","record":"a","op":"put","value":"v","invoke":1,"return":2,"outcome":"ok"}"#,
            r#"{"proc":"p","record":"a","op":"read","value":null,"invoke":-1,"return":2,"outcome":"ok"}"#,
            "not json",
        ];
        for b in bad {
            assert!(History::new().add_text("t", b).is_err(), "{b}");
        }
        let mut h = History::new();
        h.add_text(
            "t",
            "{\"proc\":\"p\",\"record\":\"a\",\"op\":\"write\",\"value\":\"v\",\"invoke\":1,\"return\":2,\"outcome\":\"ok\"}\n{\"proc\":\"q\",\"record\":\"a\",\"op\":\"write\",\"value\":\"v\",\"invoke\":3,\"return\":4,\"outcome\":\"ok\"}",
        )
        .unwrap();
        assert!(h.validate().is_err(), "a value written twice to one record");
        // one JSON document works too
        let mut h = History::new();
        h.add_text("t", r#"{"ops":[{"proc":"p","record":"a","op":"delete","invoke":1,"return":2,"outcome":"ok"}]}"#).unwrap();
        assert_eq!(h.ops.len(), 1);
    }
}

#[cfg(test)]
mod agree_with_stateright {
    //! Differential test: on random small histories, the checker's verdict equals stateright's
    //! LinearizabilityTester's (a second, independent implementation), pending writes included
    //! (stateright: an operation still in flight may or may not have taken effect).
    use super::*;
    use stateright::semantics::register::{
        Register as SrRegister, RegisterOp as SrOp, RegisterRet as SrRet,
    };
    use stateright::semantics::{ConsistencyTester, LinearizabilityTester};

    struct Rng(u64);
    impl Rng {
        fn next(&mut self, n: u64) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) % n
        }
    }

    fn stateright_says(ops: &[Interval]) -> bool {
        let mut events: Vec<(u64, u8, usize)> = Vec::new();
        for (i, o) in ops.iter().enumerate() {
            events.push((o.invoke, 0, i));
            if o.end != u64::MAX {
                events.push((o.end, 1, i));
            }
        }
        events.sort_unstable();
        let mut t = LinearizabilityTester::new(SrRegister(0u32));
        for (_, kind, i) in events {
            let res = match (kind, ops[i].op) {
                (0, RegisterOp::Write(v)) => t.on_invoke(i, SrOp::Write(v)).map(|_| ()),
                (0, RegisterOp::Read(_)) => t.on_invoke(i, SrOp::Read).map(|_| ()),
                (_, RegisterOp::Write(_)) => t.on_return(i, SrRet::WriteOk).map(|_| ()),
                (_, RegisterOp::Read(v)) => t.on_return(i, SrRet::ReadOk(v)).map(|_| ()),
            };
            res.expect("a well-formed history");
        }
        t.is_consistent()
    }

    #[test]
    fn verdicts_agree_on_random_histories() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut yes, mut no) = (0, 0);
        for _ in 0..4000 {
            let n = 1 + rng.next(8) as usize;
            let mut next_value = 1;
            let ops: Vec<Interval> = (0..n)
                .map(|_| {
                    let invoke = rng.next(30);
                    let end = if rng.next(8) == 0 {
                        u64::MAX
                    } else {
                        invoke + rng.next(10)
                    };
                    let op = if rng.next(2) == 0 {
                        // writes of unique values, a few deletes (0)
                        let v = if rng.next(5) == 0 { 0 } else { next_value };
                        next_value += 1;
                        RegisterOp::Write(v)
                    } else {
                        RegisterOp::Read(rng.next(4) as Val)
                    };
                    // only writes may stay pending
                    let end = if matches!(op, RegisterOp::Read(_)) && end == u64::MAX {
                        invoke + 1
                    } else {
                        end
                    };
                    Interval { op, invoke, end }
                })
                .collect();
            let ours = linearizable(&ops);
            assert_eq!(ours, stateright_says(&ops), "{ops:?}");
            if ours {
                yes += 1
            } else {
                no += 1
            }
        }
        // both verdicts were exercised
        assert!(yes > 500 && no > 500, "{yes} linearizable, {no} not");
    }
}
