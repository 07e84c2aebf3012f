//! napi-rs binding of wa-auth-store: the only crate that names napi types. The storage logic
//! lives in `crates/core` (wa-auth-core); each file here wraps one part of it for JavaScript.
#![deny(clippy::all)]

mod auth_store;
mod completions;
mod error;
mod memory_manager;
mod redis_connection;
mod sql_connection;

pub use auth_store::NativeAuthStore;
pub use memory_manager::NativeMemoryManager;
pub use redis_connection::RedisConnection;
pub use sql_connection::SqlConnection;

use napi_derive::napi;

/// Every allocation of the addon (its Rust code, tokio, fred, sqlx) goes through mimalloc:
/// per-thread free lists make the allocations a write makes on one thread and frees on another
/// cheap, where glibc's arenas lock and consolidate (see bench/RESULTS.md, round three).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The addon's tokio runtime: one worker thread, unless `TOKIO_WORKER_THREADS` says otherwise.
/// One Node process has one JavaScript thread feeding the store, and the store's own work per
/// call is a few tens of microseconds: a second worker did not add throughput, only wakeups and
/// migrations between the two (measured with bench/profile.mjs, three alternated runs each: the
/// durable message loop 2.7-3.4 % faster and ~10 % less CPU in the Node process with one;
/// bench/RESULTS.md, round three, step 5). Large encodes still go to tokio's blocking pool.
#[napi_derive::module_init]
fn init() {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(1);
    }
    match builder.build() {
        Ok(rt) => napi::bindgen_prelude::create_custom_tokio_runtime(rt),
        // napi-rs makes its default runtime on first use instead
        Err(e) => eprintln!(
            "wa-auth-store: could not build its tokio runtime ({e}); using napi-rs's default"
        ),
    }
}

/// The shortest lease ttl in milliseconds (the facade validates `lease.ttlMs` against it).
#[napi]
pub const LEASE_MIN_TTL_MS: u32 = wa_auth_core::lease::MIN_TTL.as_millis() as u32;

/// Runs a rule of the durable tier for a persistence plug-in's driver (`lib/persistence/
/// driver.js`): JSON in, JSON out (see `wa_auth_core::sql::rules_json`).
#[napi]
pub fn persistence_rule(name: String, input: String) -> napi::Result<String> {
    wa_auth_core::sql::rules_json::run(&name, &input)
        .map_err(|e| napi::Error::from_reason(format!("ERR_DATABASE: {e}")))
}
