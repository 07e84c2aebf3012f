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
