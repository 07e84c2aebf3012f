//! The Redis tier: one fred client, one round trip per batch.
//!
//! Layout, with `{sid}` as hash tag so a session lives in one cluster slot:
//! `<prefix>:{sid}:creds` (string), `<prefix>:{sid}:k:<type>` (hash id -> value) and
//! `<prefix>:{sid}:types` (set of the type names the session has, so a session can be cleared
//! without a SCAN). Session ids and type names are escaped ([`crate::ident::escape`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fred::bytes::Bytes;
use fred::prelude::*;
use fred::types::scripts::Script;
use parking_lot::Mutex;

use crate::config::{url_secrets, RedisOptions};
use crate::error::{scrub, with_timeout, Error, Result, Tier};
use crate::ident::escape;
use crate::model::{SessionId, Value, WriteBatch};
use crate::sql::TypeSummary;

/// Fills hash fields read from SQL without overwriting anything a writer stored meanwhile.
/// KEYS[1] the type's hash, KEYS[2] the session's type set; ARGV[1] the type name, then pairs.
const WARM_KEYS_LUA: &str = r#"
local added = 0
for i = 2, #ARGV, 2 do
  added = added + redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
end
if added > 0 then redis.call('SADD', KEYS[2], ARGV[1]) end
return added
"#;

pub struct RedisTier {
    client: Client,
    prefix: String,
    timeout: Duration,
    secrets: Vec<String>,
    closed: AtomicBool,
    warm_keys: Script,
    connection_task:
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

fn to_bytes(v: &Value) -> Bytes {
    Bytes::from_owner(v.clone())
}

fn from_value(v: fred::types::Value) -> Result<Option<Value>> {
    match v {
        fred::types::Value::Null => Ok(None),
        fred::types::Value::Bytes(b) => Ok(Some(Value::from(&b[..]))),
        fred::types::Value::String(s) => Ok(Some(Value::from(s.as_bytes()))),
        other => Err(Error::Redis(format!(
            "unexpected reply of kind {}",
            other.kind()
        ))),
    }
}

impl RedisTier {
    /// Connects and checks the server answers.
    pub async fn connect(opts: RedisOptions) -> Result<Arc<Self>> {
        opts.validate()?;
        let secrets = url_secrets(&opts.url);
        let config = Config::from_url(&opts.url)
            .map_err(|e| Error::Config(scrub(format!("invalid redis url: {e}"), &secrets)))?;
        let timeout = opts.timeout;
        let client = Builder::from_config(config)
            .with_performance_config(|p| p.default_command_timeout = timeout)
            .with_connection_config(|c| {
                c.connection_timeout = timeout;
                c.internal_command_timeout = timeout;
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
            warm_keys: Script::from_lua(WARM_KEYS_LUA),
            connection_task: Mutex::new(None),
        };
        let handle = with_timeout(Tier::Redis, "connect", timeout, async {
            tier.client.init().await.map_err(|e| tier.err(e))
        })
        .await?;
        *tier.connection_task.lock() = Some(handle);
        let _: String = tier.call("ping", tier.client.ping(None)).await?;
        Ok(Arc::new(tier))
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
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

    /// Runs one command with the tier's deadline and error mapping.
    async fn call<T>(
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

    fn session_base(&self, sid: &SessionId) -> String {
        format!("{}:{{{}}}:", self.prefix, escape(sid))
    }

    pub fn creds_key(&self, sid: &SessionId) -> String {
        self.session_base(sid) + "creds"
    }

    pub fn keys_key(&self, sid: &SessionId, kind: &str) -> String {
        self.session_base(sid) + "k:" + &escape(kind)
    }

    pub fn types_key(&self, sid: &SessionId) -> String {
        self.session_base(sid) + "types"
    }

    pub async fn get_creds(&self, sid: &SessionId) -> Result<Option<Value>> {
        let v: fred::types::Value = self
            .call("get", self.client.get(self.creds_key(sid)))
            .await?;
        from_value(v)
    }

    /// HMGET of `ids`; the answer is aligned with `ids`.
    pub async fn get_keys(
        &self,
        sid: &SessionId,
        kind: &str,
        ids: &[String],
    ) -> Result<Vec<Option<Value>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let reply: fred::types::Value = self
            .call(
                "hmget",
                self.client.hmget(self.keys_key(sid, kind), ids.to_vec()),
            )
            .await?;
        let values = match reply {
            fred::types::Value::Array(values) => values,
            single if ids.len() == 1 => vec![single],
            other => {
                return Err(Error::Redis(format!(
                    "unexpected HMGET reply of kind {}",
                    other.kind()
                )))
            }
        };
        if values.len() != ids.len() {
            return Err(Error::Redis(format!(
                "HMGET answered {} values for {} fields",
                values.len(),
                ids.len()
            )));
        }
        values.into_iter().map(from_value).collect()
    }

    /// Applies a whole batch in one MULTI/EXEC.
    pub async fn write(
        &self,
        sid: &SessionId,
        batch: &WriteBatch,
        ttl: Option<Duration>,
    ) -> Result<()> {
        let tx = self.client.multi();
        let ttl_ms = ttl.map(|t| t.as_millis().max(1) as i64);
        let queue = |r: std::result::Result<(), fred::error::Error>| r.map_err(|e| self.err(e));
        if let Some(creds) = &batch.creds {
            let key = self.creds_key(sid);
            queue(tx.set(&key, to_bytes(creds), None, None, false).await)?;
            if let Some(ms) = ttl_ms {
                queue(tx.pexpire(&key, ms, None).await)?;
            }
        }
        let groups = batch.by_type();
        let mut stored_types = Vec::new();
        for (kind, (puts, dels)) in &groups {
            let key = self.keys_key(sid, kind);
            if !puts.is_empty() {
                let fields: Vec<(String, Bytes)> = puts
                    .iter()
                    .filter_map(|k| k.value.as_ref().map(|v| (k.id.clone(), to_bytes(v))))
                    .collect();
                queue(tx.hset(&key, fields).await)?;
                stored_types.push(kind.to_string());
            }
            if !dels.is_empty() {
                let fields: Vec<String> = dels.iter().map(|k| k.id.clone()).collect();
                queue(tx.hdel(&key, fields).await)?;
            }
            if let Some(ms) = ttl_ms {
                queue(tx.pexpire(&key, ms, None).await)?;
            }
        }
        if !stored_types.is_empty() {
            let key = self.types_key(sid);
            queue(tx.sadd(&key, stored_types).await)?;
            if let Some(ms) = ttl_ms {
                queue(tx.pexpire(&key, ms, None).await)?;
            }
        }
        let _: fred::types::Value = self.call("exec", tx.exec(true)).await?;
        Ok(())
    }

    /// Best-effort removal of the records a failed write named, so Redis cannot serve a value
    /// older than what SQL may now hold.
    pub async fn invalidate(&self, sid: &SessionId, batch: &WriteBatch) -> Result<()> {
        let tx = self.client.multi();
        let queue = |r: std::result::Result<(), fred::error::Error>| r.map_err(|e| self.err(e));
        if batch.creds.is_some() {
            queue(tx.del(self.creds_key(sid)).await)?;
        }
        for (kind, (puts, dels)) in batch.by_type() {
            let fields: Vec<String> = puts.iter().chain(&dels).map(|k| k.id.clone()).collect();
            queue(tx.hdel(self.keys_key(sid, kind), fields).await)?;
        }
        let _: fred::types::Value = self.call("exec", tx.exec(true)).await?;
        Ok(())
    }

    /// Stores values read from SQL, never over a value a writer stored meanwhile.
    pub async fn warm_keys(
        &self,
        sid: &SessionId,
        kind: &str,
        found: &[(&str, &Value)],
    ) -> Result<()> {
        if found.is_empty() {
            return Ok(());
        }
        let mut args: Vec<fred::types::Value> = Vec::with_capacity(found.len() * 2 + 1);
        args.push(kind.into());
        for (id, v) in found {
            args.push((*id).into());
            args.push(fred::types::Value::Bytes(to_bytes(v)));
        }
        let keys = vec![self.keys_key(sid, kind), self.types_key(sid)];
        let _: i64 = self
            .call(
                "warm",
                self.warm_keys.evalsha_with_reload(&self.client, keys, args),
            )
            .await?;
        Ok(())
    }

    pub async fn warm_creds(&self, sid: &SessionId, creds: &Value) -> Result<()> {
        let _: fred::types::Value = self
            .call(
                "warm",
                self.client.set(
                    self.creds_key(sid),
                    to_bytes(creds),
                    None,
                    Some(SetOptions::NX),
                    false,
                ),
            )
            .await?;
        Ok(())
    }

    /// Removes a session's keys, and its creds too unless `keep_creds`.
    pub async fn delete_session(&self, sid: &SessionId, keep_creds: bool) -> Result<()> {
        let types_key = self.types_key(sid);
        // A writer may add a type between SMEMBERS and the delete: go again until none is left.
        for _ in 0..8 {
            let types: Vec<String> = self
                .call("smembers", self.client.smembers(&types_key))
                .await?;
            let mut keys: Vec<String> = types.iter().map(|t| self.keys_key(sid, t)).collect();
            let tx = self.client.multi();
            let queue = |r: std::result::Result<(), fred::error::Error>| r.map_err(|e| self.err(e));
            if !keep_creds {
                keys.push(self.creds_key(sid));
            }
            if !keys.is_empty() {
                queue(tx.del(keys).await)?;
            }
            if !types.is_empty() {
                queue(tx.srem(&types_key, types).await)?;
            }
            queue(tx.scard(&types_key).await)?;
            let reply: Vec<fred::types::Value> = self.call("exec", tx.exec(true)).await?;
            let left = reply.last().and_then(|v| v.as_i64()).unwrap_or(0);
            if left == 0 {
                return Ok(());
            }
        }
        Err(Error::Redis(
            "session kept gaining key types while it was being deleted".into(),
        ))
    }

    /// Records and value bytes per key type of one session (reads every value: for tools, not
    /// for hot paths).
    pub async fn summary(&self, sid: &SessionId) -> Result<Vec<TypeSummary>> {
        let mut types: Vec<String> = self
            .call("smembers", self.client.smembers(self.types_key(sid)))
            .await?;
        types.sort();
        let mut out = Vec::with_capacity(types.len());
        for kind in types {
            let all: std::collections::HashMap<String, Bytes> = self
                .call("hgetall", self.client.hgetall(self.keys_key(sid, &kind)))
                .await?;
            if !all.is_empty() {
                out.push(TypeSummary {
                    count: all.len() as u64,
                    bytes: all.values().map(|v| v.len() as u64).sum(),
                    kind,
                });
            }
        }
        Ok(out)
    }

    pub async fn list_ids(&self, sid: &SessionId, kind: &str) -> Result<Vec<String>> {
        let mut ids: Vec<String> = self
            .call("hkeys", self.client.hkeys(self.keys_key(sid, kind)))
            .await?;
        ids.sort();
        Ok(ids)
    }

    pub async fn ping(&self) -> Result<()> {
        let _: String = self.call("ping", self.client.ping(None)).await?;
        Ok(())
    }

    /// Quits the connection and ends its background task. Idempotent.
    pub async fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = tokio::time::timeout(self.timeout, self.client.quit()).await;
        let task = self.connection_task.lock().take();
        if let Some(task) = task {
            task.abort();
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}
