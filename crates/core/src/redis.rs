//! The Redis tier: one fred client, one round trip per batch.
//!
//! Layout, with `{sid}` as hash tag so a session lives in one cluster slot:
//! `<prefix>:{sid}:creds` (string), `<prefix>:{sid}:k:<type>` (hash id -> value) and
//! `<prefix>:{sid}:types` (set of the type names the session has, so a session can be cleared
//! without a SCAN), `<prefix>:{sid}:dirty` (hash: records written to Redis only -> a version that
//! each such write bumps; a session with dirty records is never evicted) and `<prefix>:{sid}:gen`
//! (bumped by each eviction, so a warm from SQL that raced an eviction is dropped).
//! Session ids and type names are escaped ([`crate::ident::escape`]).
//!
//! Access tracking for the memory manager is shared by every process: `<prefix>:{mm}:lru` (sorted
//! set session -> last access ms), `<prefix>:{mm}:count` (hash session -> accesses),
//! `<prefix>:{mm}:size` (hash session -> bytes measured) and `<prefix>:{mm}:evictions`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use fred::bytes::Bytes;
use fred::prelude::*;
use fred::types::scripts::Script;
use parking_lot::Mutex;

use crate::cache::KeyCache;
use crate::config::{url_secrets, RedisOptions};
use crate::error::{scrub, with_timeout, Error, Result, Tier};
use crate::ident::escape;
use crate::model::{SessionId, Value, WriteBatch};
use crate::sql::TypeSummary;

/// Fills hash fields read from SQL without overwriting anything a writer stored meanwhile.
/// KEYS[1] the type's hash, KEYS[2] the session's type set; ARGV[1] the type name, then pairs.
/// Applies one write batch. KEYS: creds, types set, dirty hash, then one hash per type in ARGV
/// order. ARGV: ttl ms (0: none), durability ('d' clean the records' dirty marks, 'r' bump them,
/// 'n' mark the session as having no SQL copy), has-creds flag, creds, then per type: name,
/// number of puts, number of deletes, the puts as id/value pairs, the deleted ids.
const WRITE_LUA: &str = r#"
local function chunked(cmd, key, list)
  for s = 1, #list, 1000 do
    redis.call(cmd, key, unpack(list, s, math.min(s + 999, #list)))
  end
end
local ttl = tonumber(ARGV[1])
local mode = ARGV[2]
local names = {}
if ARGV[3] == '1' then
  redis.call('SET', KEYS[1], ARGV[4])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
  names[#names + 1] = '\0creds'
end
local i, k, stored = 5, 4, {}
while i <= #ARGV do
  local t, np, nd = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local key = KEYS[k]
  i, k = i + 3, k + 1
  if np > 0 then
    local fv = {}
    for _ = 1, np do
      fv[#fv + 1] = ARGV[i]
      fv[#fv + 1] = ARGV[i + 1]
      names[#names + 1] = t .. '\0' .. ARGV[i]
      i = i + 2
    end
    chunked('HSET', key, fv)
    stored[#stored + 1] = t
  end
  if nd > 0 then
    local ids = {}
    for _ = 1, nd do
      ids[#ids + 1] = ARGV[i]
      names[#names + 1] = t .. '\0' .. ARGV[i]
      i = i + 1
    end
    chunked('HDEL', key, ids)
  end
  if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
end
if #stored > 0 then
  redis.call('SADD', KEYS[2], unpack(stored))
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
end
if mode == 'd' then
  if #names > 0 then chunked('HDEL', KEYS[3], names) end
elseif mode == 'r' then
  for _, n in ipairs(names) do redis.call('HINCRBY', KEYS[3], n, 1) end
else
  redis.call('HSET', KEYS[3], '\0nosql', 1)
end
return 1
"#;

/// KEYS[3] the session's eviction generation; ARGV[1] the generation seen before the SQL read.
const WARM_KEYS_LUA: &str = r#"
if (redis.call('GET', KEYS[3]) or '') ~= ARGV[1] then return -1 end
local added = 0
for i = 3, #ARGV, 2 do
  added = added + redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
end
if added > 0 then redis.call('SADD', KEYS[2], ARGV[2]) end
return added
"#;

/// KEYS[1] creds, KEYS[2] generation; ARGV[1] generation seen, ARGV[2] creds.
const WARM_CREDS_LUA: &str = r#"
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[1] then return -1 end
if redis.call('SET', KEYS[1], ARGV[2], 'NX') then return 1 end
return 0
"#;

/// Drops a session's Redis data unless it holds records SQL lacks.
/// KEYS: dirty, generation, types set, creds, then the type hashes; ARGV[1] the number of types seen.
/// Returns the keys deleted, -1 when the session is dirty, -2 when its types changed meanwhile.
const EVICT_LUA: &str = r#"
if redis.call('HLEN', KEYS[1]) > 0 then return -1 end
if redis.call('SCARD', KEYS[3]) ~= tonumber(ARGV[1]) then return -2 end
local n = 0
for i = 3, #KEYS do n = n + redis.call('DEL', KEYS[i]) end
redis.call('INCR', KEYS[2])
return n
"#;

/// Removes dirty marks whose version did not change since the flush read them.
/// KEYS[1] dirty; ARGV name/version pairs.
const CLEAN_LUA: &str = r#"
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    n = n + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return n
"#;

/// The dirty-hash name of the creds record (no key type can start with NUL).
pub const CREDS_RECORD: &str = "\0creds";

/// The dirty-hash mark of a session written by a store without a SQL tier.
pub const NOSQL_RECORD: &str = "\0nosql";

/// The dirty-hash name of one record.
pub fn record_name(kind: &str, id: &str) -> String {
    format!("{kind}\0{id}")
}

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

/// What an eviction attempt did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evicted {
    /// The session's keys were dropped (this many keys).
    Keys(u64),
    /// Refused: the session holds records SQL lacks.
    Dirty,
}

#[derive(Default)]
struct PendingAccess {
    last_ms: i64,
    count: i64,
    size: Option<u64>,
}

pub struct RedisTier {
    client: Client,
    prefix: String,
    timeout: Duration,
    secrets: Vec<String>,
    closed: AtomicBool,
    write_script: Script,
    warm_keys: Script,
    warm_creds: Script,
    evict: Script,
    clean: Script,
    connection_task:
        Mutex<Option<tokio::task::JoinHandle<std::result::Result<(), fred::error::Error>>>>,
    /// Accesses not yet sent to the shared LRU (flushed every [`TRACK_FLUSH`]).
    pending: Mutex<HashMap<String, PendingAccess>>,
    tracking_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Caches of the stores built on this connection, told about evictions.
    caches: Mutex<Vec<Weak<KeyCache>>>,
}

/// How often recorded accesses are sent to the shared LRU.
pub const TRACK_FLUSH: Duration = Duration::from_millis(1000);

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
            write_script: Script::from_lua(WRITE_LUA),
            warm_keys: Script::from_lua(WARM_KEYS_LUA),
            warm_creds: Script::from_lua(WARM_CREDS_LUA),
            evict: Script::from_lua(EVICT_LUA),
            clean: Script::from_lua(CLEAN_LUA),
            connection_task: Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
            tracking_task: Mutex::new(None),
            caches: Mutex::new(Vec::new()),
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

    pub fn dirty_key(&self, sid: &SessionId) -> String {
        self.session_base(sid) + "dirty"
    }

    pub fn gen_key(&self, sid: &SessionId) -> String {
        self.session_base(sid) + "gen"
    }

    /// A key of the shared memory-manager bookkeeping.
    pub fn mm_key(&self, name: &str) -> String {
        format!("{}:{{mm}}:{name}", self.prefix)
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

    /// Applies a whole batch atomically with one script call: a single command that pipelines
    /// with everything else on the connection.
    pub async fn write(
        &self,
        sid: &SessionId,
        batch: &WriteBatch,
        ttl: Option<Duration>,
        durability: Durability,
    ) -> Result<()> {
        let groups = batch.by_type();
        let mut keys = vec![
            self.creds_key(sid),
            self.types_key(sid),
            self.dirty_key(sid),
        ];
        let mut args: Vec<fred::types::Value> =
            Vec::with_capacity(6 + batch.keys.len() * 2 + groups.len() * 3);
        args.push(ttl.map_or(0, |t| t.as_millis().max(1) as i64).into());
        args.push(
            match durability {
                Durability::Durable => "d",
                Durability::RedisOnly => "r",
                Durability::NoSql => "n",
            }
            .into(),
        );
        match &batch.creds {
            Some(c) => {
                args.push("1".into());
                args.push(fred::types::Value::Bytes(to_bytes(c)));
            }
            None => {
                args.push("0".into());
                args.push("".into());
            }
        }
        for (kind, (puts, dels)) in &groups {
            keys.push(self.keys_key(sid, kind));
            args.push((*kind).into());
            args.push((puts.len() as i64).into());
            args.push((dels.len() as i64).into());
            for k in puts {
                args.push(k.id.as_str().into());
                args.push(fred::types::Value::Bytes(
                    k.value.as_ref().map(to_bytes).unwrap_or_default(),
                ));
            }
            for k in dels {
                args.push(k.id.as_str().into());
            }
        }
        let _: i64 = self
            .call(
                "write",
                self.write_script
                    .evalsha_with_reload(&self.client, keys, args),
            )
            .await?;
        Ok(())
    }

    /// Before a SQL read of records Redis lacks: the eviction generation, and which of `names`
    /// are dirty (changed in Redis only, so SQL's copy is stale: a dirty record Redis lacks was
    /// deleted). One round trip.
    pub async fn miss_info(
        &self,
        sid: &SessionId,
        names: &[String],
    ) -> Result<(String, Vec<bool>)> {
        let pipe = self.client.pipeline();
        self.queued(pipe.get(self.gen_key(sid)).await)?;
        self.queued(pipe.hmget(self.dirty_key(sid), names.to_vec()).await)?;
        let mut replies: Vec<fred::types::Value> = self.call("miss info", pipe.all()).await?;
        let dirty = match replies.pop() {
            Some(fred::types::Value::Array(vs)) => vs.into_iter().map(|v| !v.is_null()).collect(),
            Some(v) if names.len() == 1 => vec![!v.is_null()],
            _ => vec![false; names.len()],
        };
        let generation = replies
            .pop()
            .and_then(|v| v.as_string())
            .unwrap_or_default();
        Ok((generation, dirty))
    }

    /// The dirty records of a session with their versions.
    pub async fn dirty_records(&self, sid: &SessionId) -> Result<Vec<(String, String)>> {
        let all: HashMap<String, String> = self
            .call("hgetall", self.client.hgetall(self.dirty_key(sid)))
            .await?;
        Ok(all.into_iter().collect())
    }

    /// Notes that `sid` holds records SQL lacks (before they are written, so a crash in between
    /// leaves at worst an index entry with nothing to flush).
    pub async fn index_dirty(&self, sid: &SessionId) -> Result<()> {
        let _: i64 = self
            .call("sadd", self.client.sadd(self.mm_key("dirty"), &**sid))
            .await?;
        Ok(())
    }

    /// Up to `count` sessions of the dirty index, any process's.
    pub async fn dirty_sessions(&self, count: usize) -> Result<Vec<String>> {
        self.call(
            "srandmember",
            self.client.srandmember(self.mm_key("dirty"), Some(count)),
        )
        .await
    }

    /// Drops `sid` from the dirty index if it has no dirty record left (re-adding it when a
    /// write marked one meanwhile).
    pub async fn unindex_if_clean(&self, sid: &SessionId) -> Result<()> {
        let index = self.mm_key("dirty");
        let _: i64 = self.call("srem", self.client.srem(&index, &**sid)).await?;
        let left: i64 = self
            .call("hlen", self.client.hlen(self.dirty_key(sid)))
            .await?;
        if left > 0 {
            let _: i64 = self.call("sadd", self.client.sadd(&index, &**sid)).await?;
        }
        Ok(())
    }

    /// Clears the dirty marks whose version is still the one read (see [`Self::dirty_records`]).
    pub async fn clean(&self, sid: &SessionId, marks: &[(String, String)]) -> Result<u64> {
        if marks.is_empty() {
            return Ok(0);
        }
        let args: Vec<&str> = marks
            .iter()
            .flat_map(|(n, v)| [n.as_str(), v.as_str()])
            .collect();
        self.call(
            "clean",
            self.clean
                .evalsha_with_reload(&self.client, vec![self.dirty_key(sid)], args),
        )
        .await
    }

    /// Best-effort removal of the records a failed write named, so Redis cannot serve a value
    /// older than what SQL may now hold.
    pub async fn invalidate(&self, sid: &SessionId, batch: &WriteBatch) -> Result<()> {
        let tx = self.client.multi();
        if batch.creds.is_some() {
            self.queued(tx.del(self.creds_key(sid)).await)?;
        }
        for (kind, (puts, dels)) in batch.by_type() {
            let fields: Vec<String> = puts.iter().chain(&dels).map(|k| k.id.clone()).collect();
            self.queued(tx.hdel(self.keys_key(sid, kind), fields).await)?;
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
        generation: &str,
    ) -> Result<()> {
        if found.is_empty() {
            return Ok(());
        }
        let mut args: Vec<fred::types::Value> = Vec::with_capacity(found.len() * 2 + 2);
        args.push(generation.into());
        args.push(kind.into());
        for (id, v) in found {
            args.push((*id).into());
            args.push(fred::types::Value::Bytes(to_bytes(v)));
        }
        let keys = vec![
            self.keys_key(sid, kind),
            self.types_key(sid),
            self.gen_key(sid),
        ];
        let _: i64 = self
            .call(
                "warm",
                self.warm_keys.evalsha_with_reload(&self.client, keys, args),
            )
            .await?;
        Ok(())
    }

    pub async fn warm_creds(&self, sid: &SessionId, creds: &Value, generation: &str) -> Result<()> {
        let args: Vec<fred::types::Value> = vec![
            generation.into(),
            fred::types::Value::Bytes(to_bytes(creds)),
        ];
        let keys = vec![self.creds_key(sid), self.gen_key(sid)];
        let _: i64 = self
            .call(
                "warm",
                self.warm_creds
                    .evalsha_with_reload(&self.client, keys, args),
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
            if !keep_creds {
                keys.push(self.creds_key(sid));
                keys.push(self.dirty_key(sid));
            }
            if !keys.is_empty() {
                self.queued(tx.del(keys).await)?;
            }
            if !types.is_empty() {
                self.queued(tx.srem(&types_key, types).await)?;
            }
            self.queued(tx.scard(&types_key).await)?;
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

    /// Drops a session's Redis data if SQL holds all of it (atomically against writers: a
    /// write that lands first makes the session dirty or brings its keys back, never lost).
    pub async fn evict_session(&self, sid: &SessionId) -> Result<Evicted> {
        for _ in 0..5 {
            let types: Vec<String> = self
                .call("smembers", self.client.smembers(self.types_key(sid)))
                .await?;
            let mut keys = vec![
                self.dirty_key(sid),
                self.gen_key(sid),
                self.types_key(sid),
                self.creds_key(sid),
            ];
            keys.extend(types.iter().map(|t| self.keys_key(sid, t)));
            let n: i64 = self
                .call(
                    "evict",
                    self.evict
                        .evalsha_with_reload(&self.client, keys, vec![types.len() as i64]),
                )
                .await?;
            match n {
                -1 => return Ok(Evicted::Dirty),
                -2 => continue,
                n => {
                    self.notify_evicted(sid);
                    return Ok(Evicted::Keys(n.max(0) as u64));
                }
            }
        }
        Err(Error::Redis(
            "session kept changing its key types during eviction".into(),
        ))
    }

    /// Bytes Redis reports for all of a session's keys (`MEMORY USAGE`).
    pub async fn session_memory(&self, sid: &SessionId) -> Result<u64> {
        let types: Vec<String> = self
            .call("smembers", self.client.smembers(self.types_key(sid)))
            .await?;
        let mut keys = vec![
            self.creds_key(sid),
            self.types_key(sid),
            self.dirty_key(sid),
        ];
        keys.extend(types.iter().map(|t| self.keys_key(sid, t)));
        let pipe = self.client.pipeline();
        for k in &keys {
            self.queued(pipe.memory_usage(k, Some(0)).await)?;
        }
        let sizes: Vec<Option<i64>> = self.call("memory usage", pipe.all()).await?;
        Ok(sizes.into_iter().flatten().map(|n| n.max(0) as u64).sum())
    }

    /// `used_memory` from `INFO memory` of the server this client talks to.
    pub async fn used_memory(&self) -> Result<u64> {
        let info: String = self
            .call(
                "info",
                self.client.info(Some(fred::types::InfoKind::Memory)),
            )
            .await?;
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| Error::Redis("INFO memory has no used_memory".into()))
    }

    /// Records an access of `sid` for the shared LRU; sent in batches every [`TRACK_FLUSH`].
    pub fn track(&self, sid: &str, size: Option<u64>) {
        if self.is_closed() {
            return;
        }
        let mut pending = self.pending.lock();
        if !pending.contains_key(sid) {
            pending.insert(sid.to_string(), PendingAccess::default());
        }
        let Some(p) = pending.get_mut(sid) else {
            return;
        };
        p.last_ms = crate::sql::now_ms();
        p.count += 1;
        if size.is_some() {
            p.size = size;
        }
    }

    /// Starts the task that sends recorded accesses to Redis (idempotent).
    pub fn start_tracking(self: &Arc<Self>) {
        let mut task = self.tracking_task.lock();
        if task.is_some() || self.is_closed() {
            return;
        }
        let weak = Arc::downgrade(self);
        *task = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(TRACK_FLUSH).await;
                let Some(tier) = weak.upgrade() else { return };
                if tier.is_closed() {
                    return;
                }
                if let Err(e) = tier.flush_tracking().await {
                    log::warn!("could not record session accesses: {e}");
                }
            }
        }));
    }

    /// Sends the recorded accesses now: one pipeline.
    pub async fn flush_tracking(&self) -> Result<()> {
        let pending = std::mem::take(&mut *self.pending.lock());
        if pending.is_empty() {
            return Ok(());
        }
        let pipe = self.client.pipeline();
        let (lru, count, size) = (
            self.mm_key("lru"),
            self.mm_key("count"),
            self.mm_key("size"),
        );
        let scores: Vec<(f64, &str)> = pending
            .iter()
            .map(|(s, p)| (p.last_ms as f64, s.as_str()))
            .collect();
        self.queued(
            pipe.zadd(
                &lru,
                None,
                Some(fred::types::sorted_sets::Ordering::GreaterThan),
                false,
                false,
                scores,
            )
            .await,
        )?;
        for (sid, p) in &pending {
            self.queued(pipe.hincrby(&count, sid.as_str(), p.count).await)?;
            if let Some(bytes) = p.size {
                self.queued(pipe.hset(&size, (sid.as_str(), bytes as i64)).await)?;
            }
        }
        let _: Vec<fred::types::Value> = self.call("track", pipe.all()).await?;
        Ok(())
    }

    pub(crate) fn register_cache(&self, cache: &Arc<KeyCache>) {
        let mut caches = self.caches.lock();
        caches.retain(|c| c.strong_count() > 0);
        caches.push(Arc::downgrade(cache));
    }

    fn notify_evicted(&self, sid: &SessionId) {
        for cache in self.caches.lock().iter().filter_map(Weak::upgrade) {
            cache.remove_session(sid, false);
        }
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
            log::warn!("could not record the last session accesses: {e}");
        }
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
