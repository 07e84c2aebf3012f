//! Times a cold `SqlStore::connect` plus one query, each run in a fresh process.
//!
//! `cargo run -p wa-auth-core --example connect_timing -- [runs] [url...]`
//! (defaults: 20 runs of the local PostgreSQL with sslmode prefer, disable and require, and of
//! the local MariaDB). Prints the median, minimum and maximum of each URL in milliseconds.

use std::process::Command;
use std::time::Instant;

use wa_auth_core::{SqlOptions, SqlStore};

const DEFAULT_URLS: &[&str] = &[
    "postgres://postgres@127.0.0.1:5432/test",
    "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
    "postgres://postgres@127.0.0.1:5432/test?sslmode=require",
    "mysql://wa:wa@127.0.0.1:3306/test",
];

fn main() {
    if let Ok(url) = std::env::var("CONNECT_TIMING_ONE") {
        println!("{:.2}", once(&url));
        return;
    }
    let mut args = std::env::args().skip(1).peekable();
    let runs: usize = match args.peek().and_then(|a| a.parse().ok()) {
        Some(n) => {
            args.next();
            n
        }
        None => 20,
    };
    let mut urls: Vec<String> = args.collect();
    if urls.is_empty() {
        urls = DEFAULT_URLS.iter().map(|u| u.to_string()).collect();
    }
    let me = std::env::current_exe().expect("own path");
    for url in &urls {
        let mut ms: Vec<f64> = (0..runs)
            .map(|_| {
                let out = Command::new(&me)
                    .env("CONNECT_TIMING_ONE", url)
                    .output()
                    .expect("run child");
                let text = String::from_utf8_lossy(&out.stdout);
                text.trim().parse().unwrap_or_else(|_| {
                    panic!("{url}: {text} {}", String::from_utf8_lossy(&out.stderr))
                })
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        println!(
            "{url:<60} median {:7.2} ms  min {:7.2}  max {:7.2}  (n={runs})",
            ms[ms.len() / 2],
            ms[0],
            ms[ms.len() - 1]
        );
    }
}

/// Milliseconds of one connect (with migrations) and one query, in a runtime of its own.
fn once(url: &str) -> f64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let start = Instant::now();
        let store = SqlStore::connect(SqlOptions::new(url))
            .await
            .expect("connect");
        store.schema_version().await.expect("query");
        let elapsed = start.elapsed().as_secs_f64() * 1000.0;
        store.close().await;
        elapsed
    })
}
