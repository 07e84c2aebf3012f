//! One error type for the whole core, each kind with a stable code that the JS facade exposes as
//! `err.code`. Messages never carry secrets: tier errors are scrubbed of passwords before they get here.

use std::fmt;

/// Which backend an error came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    Redis,
    Database,
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tier::Redis => "redis",
            Tier::Database => "database",
        })
    }
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    InvalidSessionId(String),
    #[error("redis: {0}")]
    Redis(String),
    #[error("database: {0}")]
    Database(String),
    #[error("{tier} did not answer within {millis} ms ({op})")]
    Timeout {
        tier: Tier,
        op: &'static str,
        millis: u128,
    },
    #[error("the store is closed")]
    StoreClosed,
    #[error("{0}")]
    CorruptValue(String),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    SessionLocked(String),
    /// A tier refused a write of this epoch: a later epoch took the session. The store turns it
    /// into [`Error::SessionLocked`] (or writes again under a new epoch) before callers see it.
    #[error("a later lease epoch fenced this write (it carried epoch {0})")]
    Fenced(u64),
    /// SQL holds less of a session than Redis applied (restored from an older backup): its
    /// reads and writes are refused until an operator accepts SQL's state.
    #[error("{0}")]
    SqlBehind(String),
    /// A sealed value did not open: wrong or missing key, altered, or copied from another record.
    #[error("{0}")]
    Decrypt(String),
}

impl Error {
    /// The stable, documented code of this kind of error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidArgument(_) => "ERR_INVALID_ARGUMENT",
            Error::InvalidSessionId(_) => "ERR_INVALID_SESSION_ID",
            Error::Redis(_) => "ERR_REDIS",
            Error::Database(_) => "ERR_DATABASE",
            Error::Timeout { .. } => "ERR_TIMEOUT",
            Error::StoreClosed => "ERR_STORE_CLOSED",
            Error::CorruptValue(_) => "ERR_CORRUPT_VALUE",
            Error::Config(_) => "ERR_CONFIG",
            Error::SessionLocked(_) | Error::Fenced(_) => "ERR_SESSION_LOCKED",
            Error::Decrypt(_) => "ERR_DECRYPT",
            Error::SqlBehind(_) => "ERR_SQL_BEHIND",
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Replaces every occurrence of each secret in `msg` with `***`.
pub(crate) fn scrub(msg: String, secrets: &[String]) -> String {
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(msg, |m, s| m.replace(s.as_str(), "***"))
}

/// Runs `fut` with a deadline; a late answer becomes [`Error::Timeout`].
pub(crate) async fn with_timeout<T>(
    tier: Tier,
    op: &'static str,
    limit: std::time::Duration,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout {
            tier,
            op,
            millis: limit.as_millis(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        assert_eq!(Error::StoreClosed.code(), "ERR_STORE_CLOSED");
        assert_eq!(Error::Redis("x".into()).code(), "ERR_REDIS");
        assert_eq!(Error::invalid("x").code(), "ERR_INVALID_ARGUMENT");
    }

    #[test]
    fn scrub_removes_secrets() {
        let m = scrub(
            "auth failed for p4ss at host".into(),
            &["p4ss".into(), String::new()],
        );
        assert_eq!(m, "auth failed for *** at host");
    }
}
