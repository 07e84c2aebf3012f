//! Connection and store options. URLs may carry passwords, so every type here has a `Debug` that
//! redacts them.

use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};

/// Default deadline for one backend call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default byte budget of the in-process cache.
pub const DEFAULT_CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Returns `url` with its password (if any) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(_) => url.to_string(),
        Err(_) => "<unparsable url>".to_string(),
    }
}

/// The password of `url`, percent-decoded, for scrubbing error messages.
pub(crate) fn url_secrets(url: &str) -> Vec<String> {
    let Ok(u) = url::Url::parse(url) else {
        return Vec::new();
    };
    let Some(p) = u.password() else {
        return Vec::new();
    };
    let mut out = vec![p.to_string()];
    if let Some(decoded) = crate::ident::unescape(p) {
        if decoded != p {
            out.push(decoded);
        }
    }
    out
}

#[derive(Clone)]
pub struct RedisOptions {
    /// `redis://`, `rediss://`, `redis-cluster://host:port?node=host:port`,
    /// `redis-sentinel://host:port/db?sentinelServiceName=name`.
    pub url: String,
    /// Prefix of every key this store writes (default `wa`).
    pub key_prefix: String,
    /// Deadline of one command.
    pub timeout: Duration,
}

impl RedisOptions {
    pub fn new(url: impl Into<String>) -> Self {
        RedisOptions {
            url: url.into(),
            key_prefix: "wa".into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.key_prefix.is_empty()
            || self
                .key_prefix
                .chars()
                .any(|c| c.is_control() || "{}*?[]\\ ".contains(c))
        {
            return Err(Error::Config(
                "keyPrefix must be non-empty and free of braces, glob characters, spaces and control characters".into(),
            ));
        }
        if self.timeout.is_zero() {
            return Err(Error::Config("timeout must be greater than zero".into()));
        }
        Ok(())
    }
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &redact_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Clone)]
pub struct SqlOptions {
    /// `postgres://…`, `mysql://…` (MariaDB too), `sqlite://path`, `sqlite::memory:`.
    pub url: String,
    /// Pool size (SQLite in memory always uses one connection).
    pub max_connections: u32,
    /// Deadline of one statement or transaction, and of acquiring a connection.
    pub timeout: Duration,
}

impl SqlOptions {
    pub fn new(url: impl Into<String>) -> Self {
        SqlOptions {
            url: url.into(),
            max_connections: 10,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl fmt::Debug for SqlOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlOptions")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Options of the combined store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Byte budget of the in-process cache; 0 turns the cache off.
    pub cache_max_bytes: usize,
    /// Write-behind: writes go to Redis (marked dirty) and reach SQL in batches this often.
    /// `None` is write-through: SQL commits before a write resolves.
    pub write_behind: Option<std::time::Duration>,
    /// Store values in the compact binary form (`codec`); `false` stores the JSON text as given.
    pub compact_values: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_max_bytes: DEFAULT_CACHE_BYTES,
            write_behind: None,
            compact_values: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_passwords() {
        let r = RedisOptions::new("redis://user:s3cret@localhost:6379/0");
        let s = format!("{r:?}");
        assert!(!s.contains("s3cret"), "{s}");
        assert!(s.contains("***"));
        let q = SqlOptions::new("postgres://u:p%40ss@h/db");
        let s = format!("{q:?}");
        assert!(!s.contains("p%40ss") && !s.contains("p@ss"), "{s}");
    }

    #[test]
    fn url_secrets_include_decoded_form() {
        let s = url_secrets("postgres://u:p%40ss@h/db");
        assert!(s.contains(&"p%40ss".to_string()) && s.contains(&"p@ss".to_string()));
        assert!(url_secrets("redis://localhost").is_empty());
    }
}
