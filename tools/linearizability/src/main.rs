//! wa-linearizability: checks recorded histories of wa-auth-store records for linearizability.
//!
//!   wa-linearizability [--html PATH] [--json PATH] HISTORY...
//!
//! Each HISTORY file holds operations (see history.rs for the format); the files are checked as
//! one history. Every record is checked as a register (check.rs). Prints a summary, and for each
//! violating record the record, the failing operation and the operations around it; writes an
//! HTML timeline of the violations (default: the first file's path + `.html`) and prints its path.
//! `--json PATH` writes the result as JSON too.
//!
//! Exit codes: 0 every record linearizable and no fenced write visible, 1 a violation, 2 bad
//! input (unreadable file, malformed operation, a value written twice to one record).
mod check;
mod history;
mod html;

use check::{show, Violation};
use history::{History, Kind, Status};
use serde_json::json;
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

struct Args {
    html: Option<String>,
    json: Option<String>,
    files: Vec<String>,
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("wa-linearizability: {msg}\nusage: wa-linearizability [--html PATH] [--json PATH] HISTORY...");
    ExitCode::from(2)
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        html: None,
        json: None,
        files: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--html" => args.html = Some(it.next().ok_or("--html needs a path")?),
            "--json" => args.json = Some(it.next().ok_or("--json needs a path")?),
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            _ => args.files.push(a),
        }
    }
    if args.files.is_empty() {
        return Err("no history file given".into());
    }
    Ok(args)
}

fn main() -> ExitCode {
    let mut out = String::new();
    let code = run(&mut out);
    // a reader that went away (a pipe closed early) is not our failure
    let _ = std::io::stdout().write_all(out.as_bytes());
    code
}

fn run(out: &mut String) -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(m) => return usage(&m),
    };
    let mut h = History::new();
    for f in &args.files {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => return usage(&format!("cannot read {f}: {e}")),
        };
        if let Err(e) = h.add_text(f, &text) {
            return usage(&format!("bad input: {e}"));
        }
    }
    if let Err(e) = h.validate() {
        return usage(&format!("bad input: {e}"));
    }
    let results = check::check(&h);
    let origin = h.origin();
    let count = |k: fn(Kind) -> bool, s: Status| {
        h.ops.iter().filter(|o| k(o.kind) && o.status == s).count()
    };
    let writes = |k: Kind| k.writes();
    let reads = |k: Kind| k == Kind::Read;
    let _ = writeln!(
        out,
        "checked {} records, {} operations: writes {} acknowledged, {} of unknown outcome, {} fenced; reads {} answered, {} failed",
        results.len(),
        h.ops.len(),
        count(writes, Status::Done),
        count(writes, Status::Pending),
        count(writes, Status::Fenced),
        count(reads, Status::Done),
        count(reads, Status::Ignored)
    );
    let line = |i: usize, mark: bool| {
        let op = &h.ops[i];
        let ms = |t: u64| format!("{:.3}", t.saturating_sub(origin) as f64 / 1e6);
        format!(
            "  {} {:<6} {:<28} by {:<14} invoke {:>10} return {:>10}  {:<18} {}",
            if mark { ">" } else { " " },
            op.kind.name(),
            show(&op.value),
            op.proc,
            ms(op.invoke),
            op.ret.map(ms).unwrap_or_else(|| "-".into()),
            op.outcome,
            h.place(i)
        )
    };
    let mut report = Vec::new();
    let mut bad_records = 0;
    for r in &results {
        if r.violations.is_empty() {
            continue;
        }
        bad_records += 1;
        for v in &r.violations {
            match v {
                Violation::FencedVisible { write, reads } => {
                    let first = reads[0];
                    let _ = writeln!(
                        out,
                        "VIOLATION record {}: fenced write visible: the value {} of a write {} was refused with {}, yet it was read {} time(s), first by {}",
                        r.record,
                        show(&h.ops[*write].value),
                        h.ops[*write].proc,
                        h.ops[*write].outcome,
                        reads.len(),
                        h.ops[first].proc
                    );
                    let _ = writeln!(out, "{}", line(*write, false));
                    for &rd in reads.iter().take(3) {
                        let _ = writeln!(out, "{}", line(rd, rd == first));
                    }
                    report.push(json!({ "record": r.record, "kind": "fenced-visible", "write": h.place(*write), "value": h.ops[*write].value, "reads": reads.iter().map(|&i| h.place(i)).collect::<Vec<_>>() }));
                }
                Violation::NotLinearizable {
                    failing,
                    why,
                    context,
                } => {
                    let _ = writeln!(
                        out,
                        "VIOLATION record {}: not linearizable: {why}",
                        r.record
                    );
                    let _ = writeln!(out, "  ops by invocation, ms since the first invocation (> the first one no legal order explains):");
                    for &i in context {
                        let _ = writeln!(out, "{}", line(i, i == *failing));
                    }
                    report.push(json!({
                        "record": r.record,
                        "kind": "not-linearizable",
                        "why": why,
                        "failing": h.place(*failing),
                        "ops": context.iter().map(|&i| {
                            let op = &h.ops[i];
                            json!({ "proc": op.proc, "op": op.kind.name(), "value": op.value, "invokeMs": op.invoke.saturating_sub(origin) as f64 / 1e6, "returnMs": op.ret.map(|t| t.saturating_sub(origin) as f64 / 1e6), "outcome": op.outcome, "at": h.place(i) })
                        }).collect::<Vec<_>>(),
                    }));
                }
            }
        }
    }
    if let Some(path) = &args.json {
        let doc = json!({ "ok": bad_records == 0, "records": results.len(), "operations": h.ops.len(), "violatingRecords": bad_records, "violations": report });
        if let Err(e) = std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap_or_default())
        {
            return usage(&format!("cannot write {path}: {e}"));
        }
    }
    if bad_records == 0 {
        let _ = writeln!(
            out,
            "OK: every record's history is linearizable and no fenced write was read"
        );
        return ExitCode::SUCCESS;
    }
    let path = args
        .html
        .clone()
        .unwrap_or_else(|| format!("{}.html", args.files[0]));
    match std::fs::write(&path, html::render(&h, &results)) {
        Ok(()) => {
            let _ = writeln!(
                out,
                "visualisation: {}",
                std::fs::canonicalize(&path)
                    .map(|p| p.display().to_string())
                    .unwrap_or(path)
            );
        }
        Err(e) => eprintln!("could not write the visualisation to {path}: {e}"),
    }
    let _ = writeln!(
        out,
        "FAILED: {bad_records} of {} records violate",
        results.len()
    );
    ExitCode::from(1)
}
