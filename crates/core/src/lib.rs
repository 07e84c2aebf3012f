//! Storage core of wa-auth-store: opaque values keyed by `(session, type, id)` kept in an
//! in-process cache, Redis and a SQL database. Knows nothing of Node or napi.

pub mod cache;
pub mod codec;
pub mod config;
pub mod crypto;
pub mod envelope;
pub mod error;
pub mod events;
pub mod ident;
pub mod lease;
pub mod memory;
pub mod model;
pub mod redis;
pub mod sql;
pub mod store;
pub mod version;

pub use config::{RedisOptions, SqlOptions, StoreOptions};
pub use error::{Error, Result};
pub use model::{KeyWrite, SessionId, Value, WriteBatch, WriteOptions};
pub use redis::RedisTier;
pub use sql::SqlStore;
pub use store::AuthStore;
