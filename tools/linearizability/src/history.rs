//! A recorded history: one operation on one record per line (JSON lines), or one JSON file holding
//! an array of them (or `{ "ops": [...] }`).
//!
//! ```json
//! {"proc":"holder","record":"s1/session/0","op":"write","value":"holder:7","invoke":"81234000","return":"81240000","outcome":"ok"}
//! {"proc":"reader-1","record":"s1/session/0","op":"read","value":null,"invoke":81250000,"return":81251000,"outcome":"ok"}
//! ```
//!
//! - `op`: `write` (`value` a string, unique per record), `delete` (a write of "absent"; `value`
//!   null or left out), `read` (`value`: what it returned, null for absent).
//! - `invoke`, `return`: nanoseconds of one monotonic clock (CLOCK_MONOTONIC is comparable across
//!   the processes of one machine), as integers or decimal strings. `return` null or left out: the
//!   call never returned (the process died or the history ended).
//! - `outcome`: `ok`, or the error code the call rejected with.
//!
//! What each outcome means for the register:
//! - a write answered `ok` happened, between its invocation and its return;
//! - a write rejected with `ERR_SESSION_LOCKED` was fenced and must not have happened: it is left
//!   out of the register, and no read may return its value;
//! - any other write that did not answer `ok` (a backend error, a timeout, no return) may or may
//!   not have happened: it is pending until the end of the history;
//! - a read answered `ok` returned its value; a read that failed observed nothing and is dropped.
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;

/// The error code of a write refused by a lease's fence.
pub const FENCED: &str = "ERR_SESSION_LOCKED";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Write,
    Delete,
    Read,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Write => "write",
            Kind::Delete => "delete",
            Kind::Read => "read",
        }
    }

    pub fn writes(self) -> bool {
        self != Kind::Read
    }
}

/// What the history says happened to an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// answered ok: took effect between invoke and return
    Done,
    /// a write with an unknown outcome: may take effect at any time after its invocation
    Pending,
    /// a write fenced with ERR_SESSION_LOCKED: must not take effect
    Fenced,
    /// a read that failed: observed nothing
    Ignored,
}

#[derive(Clone, Debug)]
pub struct Op {
    /// 1-based line (or array index) in its file, for messages
    pub line: usize,
    pub file: usize,
    pub proc: String,
    pub record: String,
    pub kind: Kind,
    /// written or read value; None is "absent"
    pub value: Option<String>,
    pub invoke: u64,
    pub ret: Option<u64>,
    pub outcome: String,
    pub status: Status,
}

impl Op {
    /// Return time for the checker: pending writes return at "infinity".
    pub fn end(&self) -> u64 {
        match self.status {
            Status::Done => self.ret.unwrap_or(u64::MAX),
            _ => u64::MAX,
        }
    }
}

#[derive(Debug)]
pub struct InputError(pub String);

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub struct History {
    pub files: Vec<String>,
    pub ops: Vec<Op>,
}

impl History {
    pub fn new() -> Self {
        History {
            files: Vec::new(),
            ops: Vec::new(),
        }
    }

    /// Adds the operations of one file's text.
    pub fn add_text(&mut self, name: &str, text: &str) -> Result<(), InputError> {
        let file = self.files.len();
        self.files.push(name.to_string());
        let trimmed = text.trim_start();
        // one JSON document (an array, or { ops: [...] }), else JSON lines
        let whole = if trimmed.starts_with('[') || trimmed.starts_with('{') {
            serde_json::from_str::<Value>(text).ok()
        } else {
            None
        };
        let items: Vec<(usize, Value)> = match whole {
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (i + 1, v))
                .collect(),
            Some(Value::Object(mut o)) if o.contains_key("ops") => match o.remove("ops") {
                Some(Value::Array(items)) => items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| (i + 1, v))
                    .collect(),
                _ => return Err(InputError(format!("{name}: \"ops\" must be an array"))),
            },
            _ => {
                let mut out = Vec::new();
                for (i, l) in text.lines().enumerate() {
                    if l.trim().is_empty() {
                        continue;
                    }
                    let v = serde_json::from_str::<Value>(l)
                        .map_err(|e| InputError(format!("{name}:{}: not JSON: {e}", i + 1)))?;
                    out.push((i + 1, v));
                }
                out
            }
        };
        for (line, v) in items {
            let op =
                parse_op(&v, file, line).map_err(|m| InputError(format!("{name}:{line}: {m}")))?;
            self.ops.push(op);
        }
        Ok(())
    }

    /// Checks what the format requires across lines: one write per value per record.
    pub fn validate(&self) -> Result<(), InputError> {
        let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
        for (i, op) in self.ops.iter().enumerate() {
            if op.kind != Kind::Write {
                continue;
            }
            let v = op.value.as_deref().unwrap_or_default();
            if let Some(&j) = seen.get(&(op.record.as_str(), v)) {
                return Err(InputError(format!(
                    "{}: record {} has two writes of the value {:?} (the other at {}); values must be unique per record",
                    self.place(i),
                    op.record,
                    v,
                    self.place(j)
                )));
            }
            seen.insert((op.record.as_str(), v), i);
        }
        Ok(())
    }

    /// `file:line` of an operation.
    pub fn place(&self, i: usize) -> String {
        let op = &self.ops[i];
        format!("{}:{}", self.files[op.file], op.line)
    }

    /// The earliest invocation: the zero of the times printed.
    pub fn origin(&self) -> u64 {
        self.ops.iter().map(|o| o.invoke).min().unwrap_or(0)
    }
}

fn time(v: Option<&Value>, what: &str) -> Result<Option<u64>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("{what} must be a non-negative integer of nanoseconds")),
        Some(Value::String(s)) => s.trim().parse::<u64>().map(Some).map_err(|_| {
            format!("{what} must be a non-negative integer of nanoseconds, got {s:?}")
        }),
        Some(_) => Err(format!(
            "{what} must be an integer (or a decimal string) of nanoseconds"
        )),
    }
}

fn parse_op(v: &Value, file: usize, line: usize) -> Result<Op, String> {
    let o = v.as_object().ok_or("an operation must be a JSON object")?;
    let text = |k: &str| -> Result<String, String> {
        match o.get(k) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            _ => Err(format!("\"{k}\" must be a non-empty string")),
        }
    };
    let proc = text("proc")?;
    let record = text("record")?;
    let kind = match text("op")?.as_str() {
        "write" => Kind::Write,
        "delete" => Kind::Delete,
        "read" => Kind::Read,
        other => return Err(format!("unknown op {other:?} (write, delete or read)")),
    };
    let value = match (kind, o.get("value")) {
        (Kind::Write, Some(Value::String(s))) => Some(s.clone()),
        (Kind::Write, _) => {
            return Err("a write needs a string \"value\" (a delete is op \"delete\")".into())
        }
        (Kind::Delete, None | Some(Value::Null)) => None,
        (Kind::Delete, Some(_)) => return Err("a delete has no value (null or left out)".into()),
        (Kind::Read, None | Some(Value::Null)) => None,
        (Kind::Read, Some(Value::String(s))) => Some(s.clone()),
        (Kind::Read, Some(_)) => {
            return Err("a read's \"value\" is the string it returned, or null for absent".into())
        }
    };
    let invoke = time(o.get("invoke"), "\"invoke\"")?.ok_or("\"invoke\" is required")?;
    let ret = time(o.get("return"), "\"return\"")?;
    if let Some(r) = ret {
        if r < invoke {
            return Err(format!("\"return\" ({r}) is before \"invoke\" ({invoke})"));
        }
    }
    let outcome = match o.get("outcome") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        None | Some(Value::Null) if ret.is_none() => "none".to_string(),
        _ => return Err("\"outcome\" must be \"ok\" or an error code (it may be left out only without a return)".into()),
    };
    let ok = outcome == "ok";
    if ok && ret.is_none() {
        return Err("an operation answered \"ok\" needs its \"return\" time".into());
    }
    let status = match (kind.writes(), ok) {
        (_, true) => Status::Done,
        (true, false) if outcome == FENCED => Status::Fenced,
        (true, false) => Status::Pending,
        (false, false) => Status::Ignored,
    };
    Ok(Op {
        line,
        file,
        proc,
        record,
        kind,
        value,
        invoke,
        ret,
        outcome,
        status,
    })
}
