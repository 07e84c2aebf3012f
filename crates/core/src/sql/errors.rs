//! What the SQL tier reports: sqlx's errors mapped to the store's (secrets scrubbed), which
//! failures are worth running again, and a refused connection reported at once.

use std::time::Duration;

use crate::error::{scrub, Error, Result, Tier};

/// A server that refuses the TCP connection is reported at once (sqlx's pool would retry until
/// its deadline and then report a timeout). Anything else is left to sqlx.
pub(super) async fn refuse_fast(url: &str, timeout: Duration) -> Result<()> {
    let Ok(u) = url::Url::parse(&url.replacen("mariadb://", "mysql://", 1)) else {
        return Ok(());
    };
    let (Some(host), Some(port)) = (
        u.host_str(),
        u.port_or_known_default().or(match u.scheme() {
            "mysql" => Some(3306),
            _ => Some(5432),
        }),
    ) else {
        return Ok(());
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    match tokio::time::timeout(
        timeout,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Err(Error::Database(
            format!("connection refused by {host}:{port} (is the database server running?)"),
        )),
        _ => Ok(()),
    }
}

/// A transaction the database rolled back to break a deadlock or a serialization conflict (safe
/// to run again: nothing of it was applied).
pub(super) fn is_retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => matches!(
            d.code().as_deref(),
            Some("40001") | Some("40P01") | Some("1213")
        ),
        _ => false,
    }
}

pub(super) fn map_err(e: sqlx::Error, secrets: &[String], timeout: Duration) -> Error {
    match e {
        sqlx::Error::PoolTimedOut => Error::Timeout {
            tier: Tier::Database,
            op: "acquire connection",
            millis: timeout.as_millis(),
        },
        sqlx::Error::PoolClosed => Error::StoreClosed,
        sqlx::Error::Configuration(c) => {
            Error::Config(scrub(format!("invalid database url: {c}"), secrets))
        }
        // our own refusals (a schema too new, a plug-in's failure): the message is the news
        sqlx::Error::Protocol(m) => Error::Database(scrub(m, secrets)),
        other => Error::Database(scrub(other.to_string(), secrets)),
    }
}
