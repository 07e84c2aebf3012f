//! The Redis tier: one fred client, one round trip per batch.
//!
//! Layout (v2), with `{s:<sid>}` as hash tag so a session lives in one cluster slot, and the
//! store's own keys under `{m}`, a tag no session can produce (session tags always begin `s:`):
//! - `<p>:{s:<sid>}:c` creds, `<p>:{s:<sid>}:k:<type>` hash id -> record: every record is an
//!   envelope (`crate::envelope`: the version that wrote it, then the value or a tombstone);
//! - `<p>:{s:<sid>}:t` set of the (escaped) type names the session has;
//! - `<p>:{s:<sid>}:d` dirty hash: records written to Redis only (`<type>\0<id>`, `\0c` for
//!   creds) -> the version that wrote them; `\0n` marks a session with no SQL copy;
//! - `<p>:{s:<sid>}:m` meta hash: `ver` (highest version applied), `clr` (cleared below this
//!   version), `gen` (bumped by deletes, clears, evictions and rebuilds: a warm from SQL that
//!   raced one of them is dropped), `ep` (the highest lease epoch seen);
//! - `<p>:{s:<sid>}:l` the session's lease;
//! - `<p>:{m}:lru` / `:count` / `:size` / `:dirty` / `:evictions`: the memory manager's shared
//!   LRU, access counts, sizes, the index of sessions with dirty records, the eviction counter.
//!
//! Session ids and type names are escaped ([`crate::ident::escape`]).
//!
//! Every script only moves a record forward: a write applies over an older version only, and
//! refuses to run on a session whose `ver` is below what the caller knows was applied (Redis
//! lost writes: restarted empty, restored from an older snapshot, failed over). Each script is a
//! file of `scripts/` whose header states its KEYS, ARGV, reply and the TTLs it sets or keeps.
//!
//! The rooms: [`keys`] (naming and escaping), `scripts` (the Lua), [`tier`] (the session data's
//! round trips), [`leasing`] (the lease's), [`scan`] (listing for tools), [`tracking`] (the memory
//! manager's bookkeeping), `reply` (reading replies).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use fred::prelude::*;
use parking_lot::Mutex;

use crate::cache::KeyCache;
use crate::config::{url_secrets, RedisOptions};
use crate::error::{scrub, with_timeout, Error, Result, Tier};
use crate::events::Events;

pub mod keys;
pub mod leasing;
mod reply;
pub mod scan;
mod scripts;
pub mod tier;
pub mod tracking;

pub use keys::{record_name, CREDS_RECORD, NOSQL_RECORD};
pub use leasing::RedisLease;
pub use tracking::TRACK_FLUSH;

use keys::escape_glob;
use reply::{array, meta_of, opened, used_memory_of};
use scripts::Scripts;
use tracking::PendingAccess;

/// How the SQL tier relates to a Redis write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// SQL committed the same records first: they are clean.
    Durable,
    /// There is a SQL tier but this write skipped it: the records are dirty until flushed.
    RedisOnly,
    /// There is no SQL tier: the session can never be evicted.
    NoSql,
}

/// What a write carries besides its records: its version, the version this process knows Redis
/// holds for the session (the floor), and the writer's lease epoch (`None`: not fenced).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteStamp {
    pub version: u64,
    pub floor: u64,
    pub epoch: Option<u64>,
}

/// What a write script did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Yes,
    /// The session's Redis copy is behind what the caller knows (lost writes): not applied.
    Stale,
    /// The version is at or below the session's cleared watermark: not applied.
    BelowClear,
    /// A later lease epoch fences the writer: not applied.
    Fenced,
}

/// What an eviction attempt did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evicted {
    /// The session's keys were dropped (this many type hashes).
    Keys(u64),
    /// Refused: the session holds records SQL lacks.
    Dirty,
}

/// A session's meta hash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// Highest version applied to this Redis.
    pub ver: u64,
    /// The generation (empty when never bumped), passed back to the warms.
    pub gen: String,
    /// SQL was found holding less than this Redis applied (see `RedisTier::mark_sql_behind`).
    pub sql_behind: bool,
}

pub struct RedisTier {
    client: Client,
    prefix: String,
    timeout: Duration,
    secrets: Vec<String>,
    closed: AtomicBool,
    scripts: Scripts,
    connection_task:
        Mutex<Option<tokio::task::JoinHandle<std::result::Result<(), fred::error::Error>>>>,
    /// Accesses not yet sent to the shared LRU (flushed every [`TRACK_FLUSH`]).
    pending: Mutex<HashMap<String, PendingAccess>>,
    tracking_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Caches of the stores built on this connection, told about evictions.
    caches: Mutex<Vec<Weak<KeyCache>>>,
    /// Where background failures of this connection go.
    pub events: Arc<Events>,
    /// Reconnections so far (a restarted or failed-over server may have lost writes: the
    /// stores check their sessions against SQL again after each).
    reconnects: Arc<std::sync::atomic::AtomicU64>,
    reconnect_task:
        Mutex<Option<tokio::task::JoinHandle<std::result::Result<(), fred::error::Error>>>>,
}

impl std::fmt::Debug for RedisTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTier")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// With no `sentinelUsername` / `sentinelPassword`, the sentinels get the URL's own user and
/// password, as they do without fred's `sentinel-auth` feature: sentinels that share the
/// servers' password (a common deployment) and sentinels without one (which accept it) both keep
/// working; sentinels with a password of their own take it from `sentinelPassword`.
fn sentinels_default_to_server_credentials(config: &mut Config) {
    if let fred::types::config::ServerConfig::Sentinel {
        username, password, ..
    } = &mut config.server
    {
        if username.is_none() && password.is_none() {
            username.clone_from(&config.username);
            password.clone_from(&config.password);
        }
    }
}

impl RedisTier {
    /// Connects and checks the server answers.
    pub async fn connect(opts: RedisOptions) -> Result<Arc<Self>> {
        opts.validate()?;
        let secrets = url_secrets(&opts.url);
        let mut config = Config::from_url(&opts.url)
            .map_err(|e| Error::Config(scrub(format!("invalid redis url: {e}"), &secrets)))?;
        sentinels_default_to_server_credentials(&mut config);
        let timeout = opts.timeout;
        let client = Builder::from_config(config)
            .with_performance_config(|p| p.default_command_timeout = timeout)
            .with_connection_config(|c| {
                c.connection_timeout = timeout;
                c.internal_command_timeout = timeout;
                // a script replayed after a reconnect is harmless: records only move forward
                c.max_command_attempts = 3;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2))
            .build()
            .map_err(|e| Error::Config(scrub(e.to_string(), &secrets)))?;
        let tier = RedisTier {
            client,
            prefix: opts.key_prefix.clone(),
            timeout,
            secrets,
            closed: AtomicBool::new(false),
            scripts: Scripts::new(),
            connection_task: Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
            tracking_task: Mutex::new(None),
            caches: Mutex::new(Vec::new()),
            events: Arc::new(Events::default()),
            reconnects: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            reconnect_task: Mutex::new(None),
        };
        let counter = tier.reconnects.clone();
        *tier.reconnect_task.lock() = Some(tier.client.on_reconnect(move |_| {
            counter.fetch_add(1, Ordering::AcqRel);
            async { Ok(()) }
        }));
        let handle = with_timeout(Tier::Redis, "connect", timeout, async {
            tier.client.init().await.map_err(|e| tier.err(e))
        })
        .await?;
        *tier.connection_task.lock() = Some(handle);
        // together: one round trip for both (fred pipelines), on every open
        let (ping, policy) = futures::join!(
            tier.call::<String>("ping", tier.client.ping(None)),
            tier.check_eviction_policy()
        );
        ping?;
        policy?;
        Ok(Arc::new(tier))
    }

    /// `maxmemory_policy` of an `INFO memory` reply of `node` (the one server when `None`).
    async fn info_policy(&self, node: Option<&fred::types::config::Server>) -> Option<String> {
        let kind = Some(fred::types::InfoKind::Memory);
        let info: Result<String> = match node {
            Some(n) => {
                let on = self.client.with_cluster_node(n.clone());
                self.call("info", on.info::<String>(kind)).await
            }
            None => self.call("info", self.client.info::<String>(kind)).await,
        };
        info.ok()?
            .lines()
            .find_map(|l| l.strip_prefix("maxmemory_policy:"))
            .map(|p| p.trim().to_string())
    }

    /// Refuses a server whose `maxmemory-policy` may evict any key (`allkeys-*`): evicting a
    /// session's meta hash (its versions and epoch), its types set, its lease or a record
    /// written to Redis only would let reads go backwards, a fenced writer through, or an
    /// acknowledged write vanish. `volatile-*` evicts only keys with a TTL, which here are the
    /// data keys of `ttl` writes (SQL holds them): harmless. A server that does not answer
    /// `CONFIG GET` (a managed Redis that renamed it) is reported to the logger and accepted.
    async fn check_eviction_policy(&self) -> Result<()> {
        let nodes: Vec<Option<fred::types::config::Server>> = if self.client.is_clustered() {
            self.client
                .cached_cluster_state()
                .map(|s| s.unique_primary_nodes())
                .unwrap_or_default()
                .into_iter()
                .map(Some)
                .collect()
        } else {
            vec![None]
        };
        for node in nodes {
            let cmd =
                fred::types::CustomCommand::new("CONFIG", fred::types::ClusterHash::Random, false);
            let args = vec!["GET", "maxmemory-policy"];
            let reply = match &node {
                Some(n) => {
                    let on = self.client.with_cluster_node(n.clone());
                    self.call("config get", on.custom::<fred::types::Value, _>(cmd, args))
                        .await
                }
                None => {
                    self.call(
                        "config get",
                        self.client.custom::<fred::types::Value, _>(cmd, args),
                    )
                    .await
                }
            };
            let policy = match reply {
                Ok(fred::types::Value::Array(v)) => v.get(1).and_then(|p| p.as_string()),
                Ok(fred::types::Value::Map(m)) => m.values().next().and_then(|p| p.as_string()),
                Ok(_) => None,
                // a managed Redis may disable CONFIG: INFO memory tells the policy too
                Err(e) => match self.info_policy(node.as_ref()).await {
                    Some(p) => Some(p),
                    None => {
                        self.events.warn(
                            "WARN_REDIS_POLICY_UNKNOWN",
                            &format!("could not read the Redis server's maxmemory-policy (CONFIG GET: {e}; INFO memory has none); make sure it is noeviction or volatile-*: an allkeys-* policy can evict keys this store needs to keep writes in order"),
                        );
                        continue;
                    }
                },
            };
            if let Some(p) = policy.filter(|p| p.starts_with("allkeys-")) {
                return Err(Error::Config(format!(
                    "the Redis server's maxmemory-policy is {p}: it may evict any key, including the ones this store needs to keep writes in order and leases honest (a session's versions and epoch, write-behind records not yet in SQL); set it to noeviction (or volatile-lru, which evicts only keys with a TTL), e.g. CONFIG SET maxmemory-policy noeviction, and let the memory manager (RedisMemoryManager) bound Redis"
                )));
            }
        }
        Ok(())
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Deadline of one command.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How often the connection was re-established (see the field).
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Acquire)
    }

    fn err(&self, e: fred::error::Error) -> Error {
        if *e.kind() == fred::error::ErrorKind::Timeout {
            return Error::Timeout {
                tier: Tier::Redis,
                op: "command",
                millis: self.timeout.as_millis(),
            };
        }
        Error::Redis(scrub(e.to_string(), &self.secrets))
    }

    /// The result of queueing a command in a pipeline or transaction (its answer comes later).
    pub(crate) fn queued(&self, r: std::result::Result<(), fred::error::Error>) -> Result<()> {
        r.map_err(|e| self.err(e))
    }

    /// Runs one command with the tier's deadline and error mapping.
    pub(crate) async fn call<T>(
        &self,
        op: &'static str,
        fut: impl std::future::Future<Output = std::result::Result<T, fred::error::Error>>,
    ) -> Result<T> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::StoreClosed);
        }
        let fut = Box::pin(fut);
        with_timeout(Tier::Redis, op, self.timeout, async {
            fut.await.map_err(|e| self.err(e))
        })
        .await
    }

    pub async fn ping(&self) -> Result<()> {
        let _: String = self.call("ping", self.client.ping(None)).await?;
        Ok(())
    }

    /// Quits the connection and ends its background task. Idempotent.
    pub async fn close(&self) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let tracker = self.tracking_task.lock().take();
        if let Some(t) = tracker {
            t.abort();
        }
        if let Err(e) = self.flush_tracking().await {
            self.events.warn(
                "WARN_TRACKING",
                &format!("could not record the last session accesses: {e}"),
            );
        }
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = tokio::time::timeout(self.timeout, self.client.quit()).await;
        let task = self.connection_task.lock().take();
        if let Some(task) = task {
            task.abort();
        }
        let task = self.reconnect_task.lock().take();
        if let Some(task) = task {
            task.abort();
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fred::types::config::ServerConfig;

    fn sentinel_credentials(url: &str) -> (Option<String>, Option<String>) {
        let mut config = Config::from_url(url).unwrap();
        sentinels_default_to_server_credentials(&mut config);
        match config.server {
            ServerConfig::Sentinel {
                username, password, ..
            } => (username, password),
            _ => panic!("not a sentinel config: {url}"),
        }
    }

    #[test]
    fn sentinels_get_their_own_credentials_else_the_servers() {
        let own = "redis-sentinel://u:srv@h:26379/0?sentinelServiceName=m&sentinelUsername=su&sentinelPassword=sp";
        assert_eq!(
            sentinel_credentials(own),
            (Some("su".into()), Some("sp".into()))
        );
        let shared = "redis-sentinel://u:srv@h:26379/0?sentinelServiceName=m";
        assert_eq!(
            sentinel_credentials(shared),
            (Some("u".into()), Some("srv".into()))
        );
        let none = "redis-sentinel://h:26379/0?sentinelServiceName=m";
        assert_eq!(sentinel_credentials(none), (None, None));
    }
}
