//! napi-rs binding of wa-auth-store: the only crate that names napi types. The storage logic
//! lives in `crates/core` (wa-auth-core); each file here wraps one part of it for JavaScript.
#![deny(clippy::all)]

mod auth_store;
mod error;
mod memory_manager;
mod redis_connection;
mod sql_connection;

pub use auth_store::NativeAuthStore;
pub use memory_manager::NativeMemoryManager;
pub use redis_connection::RedisConnection;
pub use sql_connection::SqlConnection;
