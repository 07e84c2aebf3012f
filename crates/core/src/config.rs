//! Connection and store options. URLs may carry passwords, so every type here has a `Debug` that
//! redacts them.

use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};

/// Default deadline for one backend call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default byte budget of the in-process cache.
pub const DEFAULT_CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Query parameters whose value is a credential. Names are compared after form-decoding,
/// lowercasing and dropping everything but ASCII letters and digits, so `ssl_password`,
/// `sentinelPassword`, `SSLPASSWORD` and `pass%77ord` all match.
const SECRET_PARAMS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "pwd",
    "auth",
    "authtoken",
    "token",
    "accesstoken",
    "secret",
    "clientsecret",
    "apikey",
];
/// Name endings that mark a credential as well (`sentinelpassword`, `sslpassword`, `redispwd`…).
const SECRET_SUFFIXES: &[&str] = &["password", "passwd", "passphrase", "pwd", "secret", "token"];
/// Parameter separators: `&`, and `;` inside a piece (some parsers split on it too).
const PARAM_SEPARATORS: &[char] = &['&', ';'];

fn is_secret_param(raw_name: &str) -> bool {
    let name: String = form_decode(raw_name)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    SECRET_PARAMS.contains(&name.as_str()) || SECRET_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// Percent-decodes `s`; malformed escapes stay as written (so, unlike
/// [`crate::ident::unescape`], a stray `%` cannot make a secret undecodable).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `application/x-www-form-urlencoded` decoding (what `Url::query_pairs` does): `+` is a space.
fn form_decode(s: &str) -> String {
    percent_decode(&s.replace('+', " "))
}

/// Calls `f` with the raw value of every credential parameter of `query`; pieces that are not
/// credentials are searched again split on the next separator.
fn each_secret_param<'a>(query: &'a str, seps: &[char], f: &mut impl FnMut(&'a str)) {
    let Some((&sep, rest)) = seps.split_first() else {
        return;
    };
    for piece in query.split(sep) {
        match piece.split_once('=') {
            Some((name, value)) if is_secret_param(name) => f(value),
            _ => each_secret_param(piece, rest, f),
        }
    }
}

/// `query` with the value of every credential parameter replaced by `***`, and whether any was.
fn redact_query(query: &str, seps: &[char]) -> (String, bool) {
    let Some((&sep, rest)) = seps.split_first() else {
        return (query.to_string(), false);
    };
    let mut changed = false;
    let pieces: Vec<String> = query
        .split(sep)
        .map(|piece| match piece.split_once('=') {
            Some((name, value)) if is_secret_param(name) && !value.is_empty() => {
                changed = true;
                format!("{name}=***")
            }
            _ => {
                let (piece, c) = redact_query(piece, rest);
                changed |= c;
                piece
            }
        })
        .collect();
    (pieces.join(sep.encode_utf8(&mut [0; 4])), changed)
}

/// The query of `url` as written: after the first `?`, up to the `#`.
fn raw_query(url: &str) -> Option<&str> {
    let q = &url[url.find('?')? + 1..];
    Some(q.split('#').next().unwrap_or(q))
}

/// The password of a URL `url::Url` cannot parse, found by hand: `scheme://user:password@host…`.
fn raw_password(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    Some(&userinfo[userinfo.find(':')? + 1..])
}

/// Returns `url` with its password (if any) and the values of its credential query parameters
/// (`password=`, `sslpassword=`, `sentinelPassword=`, `token=`…) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return "<unparsable url>".to_string();
    };
    let mut changed = false;
    if u.password().is_some() {
        changed |= u.set_password(Some("***")).is_ok();
    }
    if let Some((query, true)) = u.query().map(|q| redact_query(q, PARAM_SEPARATORS)) {
        u.set_query(Some(&query));
        changed = true;
    }
    if changed {
        u.to_string()
    } else {
        url.to_string()
    }
}

/// Every secret `url` carries, for scrubbing error messages: the password and the values of the
/// credential query parameters, each as written, as the URL parser normalises it, percent-decoded
/// and form-decoded. Longest first, so a secret that contains another is scrubbed whole.
pub(crate) fn url_secrets(url: &str) -> Vec<String> {
    let mut raw: Vec<&str> = Vec::new();
    let parsed = url::Url::parse(url).ok();
    match &parsed {
        Some(u) => raw.extend(u.password()),
        None => raw.extend(raw_password(url)),
    }
    for query in [raw_query(url), parsed.as_ref().and_then(|u| u.query())]
        .into_iter()
        .flatten()
    {
        each_secret_param(query, PARAM_SEPARATORS, &mut |v| raw.push(v));
    }
    let mut out: Vec<String> = Vec::new();
    for r in raw {
        for s in [r.to_string(), percent_decode(r), form_decode(r)] {
            if !s.is_empty() && !out.contains(&s) {
                out.push(s);
            }
        }
    }
    out.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    out
}

#[derive(Clone)]
pub struct RedisOptions {
    /// `redis://`, `rediss://`, `redis-cluster://host:port?node=host:port` (any nodes of the
    /// cluster), `redis-sentinel://[user:pass@]host:port/db?sentinelServiceName=name&node=host:port`
    /// (the host and every `node` are sentinels; user and password go to sentinels and servers).
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
    /// Create or upgrade the store's schema on connect (false: a database the tools only read,
    /// such as another package's tables being imported).
    pub migrate: bool,
    /// Open a SQLite file read-only, unchanged (no journal mode switch, never created).
    pub read_only: bool,
}

impl SqlOptions {
    pub fn new(url: impl Into<String>) -> Self {
        SqlOptions {
            url: url.into(),
            max_connections: 10,
            timeout: DEFAULT_TIMEOUT,
            migrate: true,
            read_only: false,
        }
    }
}

impl fmt::Debug for SqlOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlOptions")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("timeout", &self.timeout)
            .field("migrate", &self.migrate)
            .field("read_only", &self.read_only)
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
    /// Sessions have leases (`crate::lease`): writes to a session another process holds are
    /// refused, and the cache serves only sessions this store holds. `false`: one process per
    /// session is assumed and nothing is checked.
    pub leases: bool,
    /// Encryption at rest (`crate::crypto`): every value sealed before it reaches Redis or SQL.
    /// `None`: values are stored plain (sealed ones then fail to read with `ERR_DECRYPT`).
    /// Its `Debug` shows key ids only.
    pub encryption: Option<std::sync::Arc<crate::crypto::Keyring>>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_max_bytes: DEFAULT_CACHE_BYTES,
            write_behind: None,
            compact_values: true,
            leases: false,
            encryption: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_credentials_in_the_query_are_accepted() {
        for url in [
            "redis-sentinel://h:26379/0?sentinelServiceName=m&sentinelPassword=s3cret",
            "redis-sentinel://h:26379/0?sentinelUsername=u&sentinelServiceName=m",
            "redis-sentinel://:p@h:26379/0?sentinelServiceName=m&node=h2:26379",
        ] {
            assert!(RedisOptions::new(url).validate().is_ok(), "{url}");
        }
    }

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

    fn has(secrets: &[String], s: &str) -> bool {
        secrets.iter().any(|x| x == s)
    }

    /// Every URL here carries the secret `s3cret` (some percent-encoded) in its query.
    const QUERY_SECRET_URLS: &[&str] = &[
        "redis-sentinel://host:26379/0?sentinelServiceName=m&sentinelPassword=s3cret",
        "postgres://u@h/db?password=s3cret",
        "postgres://u@h/db?sslmode=require&sslpassword=s3cret",
        "mysql://u@h/db?pass=s3cret",
        "mysql://u@h/db?pwd=s3cret",
        "redis://h:6379?auth=s3cret",
        "redis://h:6379/0?token=s3cret&x=1",
        "redis://h:6379/0?secret=s3cret#frag",
        "postgres://u@h/db?PASSWORD=s3cret",
        "postgres://u@h/db?ssl_password=s3cret",
        "postgres://u@h/db?pass%77ord=s3cret",
        "postgres://u@h/db?%70assword=%733cret",
        "postgres://u@h/db?application_name=x;password=s3cret",
    ];

    #[test]
    fn url_secrets_include_query_credentials() {
        for url in QUERY_SECRET_URLS {
            let s = url_secrets(url);
            assert!(has(&s, "s3cret"), "{url}: {s:?}");
        }
        // The non-secret parameters are left alone.
        let s = url_secrets(QUERY_SECRET_URLS[0]);
        assert_eq!(s, vec!["s3cret".to_string()]);
        assert!(url_secrets("postgres://u@h/db?sslmode=require&application_name=app").is_empty());
        assert!(url_secrets("redis://h/0?authSource=admin&bypass=1").is_empty());
    }

    #[test]
    fn url_secrets_include_raw_and_decoded_forms() {
        let s = url_secrets("postgres://u@h/db?password=p%40ss%2Bw+rd");
        for form in ["p%40ss%2Bw+rd", "p@ss+w+rd", "p@ss+w rd"] {
            assert!(has(&s, form), "{form}: {s:?}");
        }
        // As the URL parser normalises it (a raw space becomes %20) and as written.
        let s = url_secrets("postgres://u@h/db?password=a b");
        assert!(has(&s, "a b") && has(&s, "a%20b"), "{s:?}");
        // Malformed escapes do not hide the secret.
        let s = url_secrets("postgres://u@h/db?password=100%zz%41");
        assert!(has(&s, "100%zz%41") && has(&s, "100%zzA"), "{s:?}");
        // Userinfo password and query password together.
        let s = url_secrets("redis-sentinel://:p%40ss@h:26379/0?sentinelPassword=other");
        assert!(
            has(&s, "p%40ss") && has(&s, "p@ss") && has(&s, "other"),
            "{s:?}"
        );
    }

    #[test]
    fn url_secrets_are_longest_first() {
        let s = url_secrets("postgres://u:ab@h/db?password=xab%21");
        let lens: Vec<usize> = s.iter().map(String::len).collect();
        assert!(lens.windows(2).all(|w| w[0] >= w[1]), "{s:?}");
        let scrubbed = crate::error::scrub("bad password xab%21 / xab!".into(), &s);
        assert_eq!(scrubbed, "bad password *** / ***");
    }

    #[test]
    fn url_secrets_of_an_unparsable_url() {
        let s = url_secrets("redis://user:s3cret@[bad-host/0?password=q%21");
        assert!(
            has(&s, "s3cret") && has(&s, "q%21") && has(&s, "q!"),
            "{s:?}"
        );
        assert!(url_secrets("not a url").is_empty());
    }

    #[test]
    fn redact_url_redacts_query_credentials() {
        for url in QUERY_SECRET_URLS {
            let r = redact_url(url);
            assert!(
                !r.contains("s3cret") && !r.contains("%733cret"),
                "{url} -> {r}"
            );
            assert!(r.contains("***"), "{url} -> {r}");
        }
        assert_eq!(
            redact_url(QUERY_SECRET_URLS[0]),
            "redis-sentinel://host:26379/0?sentinelServiceName=m&sentinelPassword=***"
        );
        assert_eq!(
            redact_url("postgres://u:pw@h/db?sslmode=require&password=p%40ss&application_name=a"),
            "postgres://u:***@h/db?sslmode=require&password=***&application_name=a"
        );
        // Nothing secret: the URL is returned exactly as given.
        let plain = "postgres://u@h/db?sslmode=require&application_name=app";
        assert_eq!(redact_url(plain), plain);
        assert_eq!(redact_url("redis://localhost"), "redis://localhost");
        assert_eq!(
            redact_url("postgres://u@h/db?password="),
            "postgres://u@h/db?password="
        );
        assert_eq!(redact_url("redis://[bad"), "<unparsable url>");
    }

    #[test]
    fn debug_redacts_query_credentials() {
        let r = RedisOptions::new(
            "redis-sentinel://:p4ss@host:26379/0?sentinelServiceName=m&sentinelPassword=s3cret",
        );
        let s = format!("{r:?}");
        assert!(!s.contains("s3cret") && !s.contains("p4ss"), "{s}");
        assert!(s.contains("sentinelServiceName=m"), "{s}");
        let q = SqlOptions::new("postgres://u@h/db?sslpassword=s%40cret&password=s3cret");
        let s = format!("{q:?}");
        assert!(
            !s.contains("s3cret") && !s.contains("s%40cret") && !s.contains("s@cret"),
            "{s}"
        );
    }
}
