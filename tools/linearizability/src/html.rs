//! A self-contained HTML page of the violating records: per record, a timeline of the operations
//! around the counterexample (one row per process, a bar from invocation to return, labelled),
//! the whole record's timeline below it, and the counterexample as a table. Pending writes run to
//! the right edge, dashed; fenced writes are grey; the failing operation is outlined in red.
use crate::check::{show, RecordResult, Violation};
use crate::history::{History, Kind, Status};
use std::fmt::Write;

const WIDTH: f64 = 1300.0;
const ROW: f64 = 26.0;
const LEFT: f64 = 150.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn ms(t: u64, origin: u64) -> f64 {
    t.saturating_sub(origin) as f64 / 1e6
}

/// One timeline of `ops` between `from` and `to` (ns, the window); `marked`: outlined ops, `failing` in red.
fn timeline(
    out: &mut String,
    h: &History,
    ops: &[usize],
    (from, to): (u64, u64),
    failing: Option<usize>,
    marked: &[usize],
    labels: bool,
) {
    let origin = h.origin();
    let mut procs: Vec<&str> = ops.iter().map(|&i| h.ops[i].proc.as_str()).collect();
    procs.sort_unstable();
    procs.dedup();
    let span = (to.saturating_sub(from)).max(1) as f64;
    let x = |t: u64| LEFT + (t.clamp(from, to) - from) as f64 / span * (WIDTH - LEFT - 10.0);
    let height = ROW * procs.len() as f64 + 30.0;
    let _ = writeln!(
        out,
        r#"<svg width="{WIDTH}" height="{height}" xmlns="http://www.w3.org/2000/svg" font-family="monospace" font-size="11">"#
    );
    for (row, p) in procs.iter().enumerate() {
        let y = 20.0 + ROW * row as f64;
        let _ = writeln!(
            out,
            r##"<text x="4" y="{:.1}">{}</text><line x1="{LEFT}" x2="{WIDTH}" y1="{:.1}" y2="{:.1}" stroke="#eee"/>"##,
            y + 15.0,
            esc(p),
            y + ROW - 2.0,
            y + ROW - 2.0
        );
    }
    // axis: ms since the history's first invocation
    for k in 0..=5 {
        let t = from + ((to - from) as f64 * k as f64 / 5.0) as u64;
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="12" fill="#888">{:.3} ms</text>"##,
            x(t),
            ms(t, origin)
        );
    }
    for &i in ops {
        let op = &h.ops[i];
        if op.end() < from || op.invoke > to {
            continue;
        }
        let row = procs.iter().position(|p| *p == op.proc).unwrap_or(0);
        let y = 20.0 + ROW * row as f64 + 2.0;
        let (x0, x1) = (x(op.invoke), x(op.end()));
        let fill = match (op.status, op.kind) {
            (Status::Fenced, _) => "#bbbbbb",
            (_, Kind::Read) => "#9fd89f",
            (_, Kind::Delete) => "#c9a8e8",
            (_, Kind::Write) => "#9cc3ef",
        };
        let dash = if op.status == Status::Pending {
            r#" stroke-dasharray="4 2""#
        } else {
            ""
        };
        let (stroke, sw) = if Some(i) == failing {
            ("#d00000", 3.0)
        } else if marked.contains(&i) {
            ("#000000", 1.5)
        } else {
            ("#555555", 0.5)
        };
        let ret = op
            .ret
            .map(|r| format!("{:.3} ms", ms(r, origin)))
            .unwrap_or_else(|| "never".into());
        let title = format!(
            "{} {} {} by {}\ninvoke {:.3} ms, return {}\noutcome {} ({})\n{}",
            op.kind.name(),
            show(&op.value),
            op.record,
            op.proc,
            ms(op.invoke, origin),
            ret,
            op.outcome,
            format!("{:?}", op.status).to_lowercase(),
            h.place(i)
        );
        let _ = writeln!(
            out,
            r#"<g><title>{}</title><rect x="{x0:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{fill}" stroke="{stroke}" stroke-width="{sw}"{dash}/>"#,
            esc(&title),
            (x1 - x0).max(2.0),
            ROW - 6.0
        );
        if labels {
            let label = match op.kind {
                Kind::Read => format!("r {}", show(&op.value)),
                Kind::Write => format!("w {}", show(&op.value)),
                Kind::Delete => "del".to_string(),
            };
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
                x0 + 2.0,
                y + 14.0,
                esc(&label)
            );
        }
        let _ = writeln!(out, "</g>");
    }
    let _ = writeln!(out, "</svg>");
}

pub fn render(h: &History, results: &[RecordResult]) -> String {
    let origin = h.origin();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>linearizability violations</title><style>body{{font-family:sans-serif;margin:16px}} td,th{{font-family:monospace;font-size:12px;padding:2px 8px;text-align:left}} tr.f td{{color:#d00000;font-weight:bold}} h2{{font-size:16px}}</style></head><body>"
    );
    let _ = writeln!(out, "<h1>Linearizability violations</h1><p>History: {}. Times are ms since the first invocation. Hover a bar for its details. Blue: write, purple: delete, green: read, grey: fenced write (ERR_SESSION_LOCKED), dashed: unknown outcome (pending to the end), red outline: the first operation no legal order explains.</p>", esc(&h.files.join(", ")));
    for r in results.iter().filter(|r| !r.violations.is_empty()) {
        let _ = writeln!(out, "<h2>record {}</h2>", esc(&r.record));
        for v in &r.violations {
            match v {
                Violation::FencedVisible { write, reads } => {
                    let read = &reads[0];
                    let (rd, wr) = (&h.ops[*read], &h.ops[*write]);
                    let _ = writeln!(
                        out,
                        "<p><b>fenced write visible</b>: read {} time(s), first by {}: {} at {:.3} ms, the value of a write {} rejected with {} ({:.3} ms).</p>",
                        reads.len(),
                        esc(&rd.proc),
                        esc(&show(&rd.value)),
                        ms(rd.invoke, origin),
                        esc(&wr.proc),
                        esc(&wr.outcome),
                        ms(wr.invoke, origin)
                    );
                    let from = wr.invoke.min(rd.invoke);
                    let to = rd.end().max(wr.end().min(rd.end()));
                    let pad = (to - from) / 10 + 1;
                    timeline(
                        &mut out,
                        h,
                        &r.ops,
                        (from.saturating_sub(pad), to.saturating_add(pad)),
                        Some(*read),
                        &[*write],
                        true,
                    );
                }
                Violation::NotLinearizable {
                    failing,
                    why,
                    context,
                } => {
                    let _ = writeln!(out, "<p><b>not linearizable</b>: {}</p>", esc(why));
                    let from = context.iter().map(|&i| h.ops[i].invoke).min().unwrap_or(0);
                    let to = context
                        .iter()
                        .map(|&i| h.ops[i].end())
                        .filter(|&e| e != u64::MAX)
                        .max()
                        .unwrap_or(from + 1);
                    let pad = (to - from) / 10 + 1;
                    timeline(
                        &mut out,
                        h,
                        &r.ops,
                        (from.saturating_sub(pad), to.saturating_add(pad)),
                        Some(*failing),
                        context,
                        true,
                    );
                    let _ = writeln!(out, "<table><tr><th>proc</th><th>op</th><th>value</th><th>invoke ms</th><th>return ms</th><th>outcome</th><th>line</th></tr>");
                    for &i in context {
                        let op = &h.ops[i];
                        let _ = writeln!(
                            out,
                            "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                            if i == *failing { " class=\"f\"" } else { "" },
                            esc(&op.proc),
                            op.kind.name(),
                            esc(&show(&op.value)),
                            ms(op.invoke, origin),
                            op.ret.map(|t| format!("{:.3}", ms(t, origin))).unwrap_or_else(|| "-".into()),
                            esc(&op.outcome),
                            esc(&h.place(i))
                        );
                    }
                    let _ = writeln!(out, "</table>");
                }
            }
        }
        let from = r.ops.iter().map(|&i| h.ops[i].invoke).min().unwrap_or(0);
        let to = r
            .ops
            .iter()
            .map(|&i| h.ops[i].end())
            .filter(|&e| e != u64::MAX)
            .max()
            .unwrap_or(from + 1);
        let _ = writeln!(out, "<p>The whole record ({} operations):</p>", r.ops.len());
        timeline(&mut out, h, &r.ops, (from, to), None, &[], false);
    }
    let _ = writeln!(out, "</body></html>");
    out
}
