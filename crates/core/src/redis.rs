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
//!   raced one of them is dropped).
//! - `<p>:{m}:lru` / `:count` / `:size` / `:dirty` / `:evictions`: the memory manager's shared
//!   LRU, access counts, sizes, the index of sessions with dirty records, the eviction counter.
//!
//! Session ids and type names are escaped ([`crate::ident::escape`]).
//!
//! Every script only moves a record forward: a write applies over an older version only, and
//! refuses to run on a session whose `ver` is below what the caller knows was applied (Redis
//! lost writes: restarted empty, restored from an older snapshot, failed over).

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
use crate::envelope::{self, Opened};
use crate::error::{scrub, with_timeout, Error, Result, Tier};
use crate::events::Events;
use crate::ident::escape;
use crate::model::{SessionId, Value, WriteBatch};
use crate::sql::TypeSummary;

/// Applies one write batch at one version. KEYS: creds, types, dirty, meta, then one hash per
/// type in ARGV order, then the dirty index when ARGV[10] names the session. ARGV: floor, ttl ms (0: none), mode ('d' durable: the records become
/// clean; 'r' Redis only: they are marked dirty, deletes leave tombstones; 'n' no SQL tier),
/// version as 8 bytes, version as a number, has-creds flag, creds envelope, tombstone envelope,
/// the writer's lease epoch (-1: none), the session id to add to the dirty index (the last KEY)
/// or '' (a cluster: the index lives in another slot), then per type: escaped name, number of
/// puts, number of deletes, the puts as id/envelope pairs, the deleted ids. Returns 1, -1 when
/// the session's `ver` is below the floor (Redis lost writes), -2 when the version is not above
/// the session's cleared watermark, -3 when a later lease epoch fences the writer.
const WRITE_LUA: &str = r#"
local floor, ttl, mode = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local vb, vnum, tomb, epoch = ARGV[4], tonumber(ARGV[5]), ARGV[8], tonumber(ARGV[9])
local m = redis.call('HMGET', KEYS[4], 'ver', 'clr', 'ep')
if epoch >= 0 and epoch < (tonumber(m[3]) or 0) then return -3 end
local ver = tonumber(m[1]) or 0
if ver < floor then return -1 end
if vnum <= (tonumber(m[2]) or 0) then return -2 end
local function newer(old) return (not old) or string.sub(old, 1, 8) < vb end
local function chunked(cmd, key, list)
  for s = 1, #list, 1000 do
    redis.call(cmd, key, unpack(list, s, math.min(s + 999, #list)))
  end
end
local function hmget(key, ids)
  local out = {}
  for s = 1, #ids, 1000 do
    local got = redis.call('HMGET', key, unpack(ids, s, math.min(s + 999, #ids)))
    for j = 1, #got do out[s + j - 1] = got[j] end
  end
  return out
end
local names, touched, stored, deleted = {}, {}, {}, false
if ARGV[6] == '1' then
  if newer(redis.call('GET', KEYS[1])) then redis.call('SET', KEYS[1], ARGV[7]) end
  names[#names + 1] = '\0c'
  touched[#touched + 1] = KEYS[1]
end
local i, k = 11, 5
while i <= #ARGV do
  local t, np, nd = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local key = KEYS[k]
  i, k = i + 3, k + 1
  local ids, envs = {}, {}
  for _ = 1, np do
    ids[#ids + 1] = ARGV[i]
    envs[#envs + 1] = ARGV[i + 1]
    i = i + 2
  end
  for _ = 1, nd do
    ids[#ids + 1] = ARGV[i]
    envs[#envs + 1] = false
    i = i + 1
  end
  local old = hmget(key, ids)
  local sets, dels = {}, {}
  for j = 1, #ids do
    names[#names + 1] = t .. '\0' .. ids[j]
    if not envs[j] then deleted = true end
    if newer(old[j]) then
      if envs[j] then
        sets[#sets + 1] = ids[j]
        sets[#sets + 1] = envs[j]
      elseif mode == 'r' then
        sets[#sets + 1] = ids[j]
        sets[#sets + 1] = tomb
      elseif old[j] then
        dels[#dels + 1] = ids[j]
      end
    end
  end
  if #sets > 0 then
    chunked('HSET', key, sets)
    stored[#stored + 1] = t
  end
  if #dels > 0 then chunked('HDEL', key, dels) end
  touched[#touched + 1] = key
end
if #stored > 0 then
  redis.call('SADD', KEYS[2], unpack(stored))
  touched[#touched + 1] = KEYS[2]
end
if mode == 'd' then
  local marks = hmget(KEYS[3], names)
  local clean = {}
  for j = 1, #names do
    if marks[j] and tonumber(marks[j]) <= vnum then clean[#clean + 1] = names[j] end
  end
  if #clean > 0 then chunked('HDEL', KEYS[3], clean) end
  if deleted then redis.call('HINCRBY', KEYS[4], 'gen', 1) end
elseif mode == 'r' then
  local fv = {}
  for _, n in ipairs(names) do
    fv[#fv + 1] = n
    fv[#fv + 1] = vnum
  end
  if #fv > 0 then chunked('HSET', KEYS[3], fv) end
  if ARGV[10] ~= '' then redis.call('SADD', KEYS[k], ARGV[10]) end
else
  redis.call('HSET', KEYS[3], '\0n', 1)
end
if vnum > ver then redis.call('HSET', KEYS[4], 'ver', vnum) end
if ttl > 0 and redis.call('HLEN', KEYS[3]) == 0 then
  for _, key in ipairs(touched) do redis.call('PEXPIRE', key, ttl) end
end
return 1
"#;

/// Fills hash fields read from SQL, never over a newer record, and not at all when the session's
/// generation moved since the read began. KEYS: hash, types, meta; ARGV: generation seen, escaped
/// type, then id/envelope pairs.
const WARM_KEYS_LUA: &str = r#"
if (redis.call('HGET', KEYS[3], 'gen') or '') ~= ARGV[1] then return -1 end
local ids, envs = {}, {}
for i = 3, #ARGV, 2 do
  ids[#ids + 1] = ARGV[i]
  envs[#envs + 1] = ARGV[i + 1]
end
local sets = {}
for s = 1, #ids, 1000 do
  local e = math.min(s + 999, #ids)
  local old = redis.call('HMGET', KEYS[1], unpack(ids, s, e))
  for j = 1, #old do
    local n = s + j - 1
    if (not old[j]) or string.sub(old[j], 1, 8) < string.sub(envs[n], 1, 8) then
      sets[#sets + 1] = ids[n]
      sets[#sets + 1] = envs[n]
    end
  end
end
for s = 1, #sets, 1000 do
  redis.call('HSET', KEYS[1], unpack(sets, s, math.min(s + 999, #sets)))
end
if #sets > 0 then redis.call('SADD', KEYS[2], ARGV[2]) end
return #sets / 2
"#;

/// KEYS: creds, meta; ARGV: generation seen, creds envelope.
const WARM_CREDS_LUA: &str = r#"
if (redis.call('HGET', KEYS[2], 'gen') or '') ~= ARGV[1] then return -1 end
local old = redis.call('GET', KEYS[1])
if (not old) or string.sub(old, 1, 8) < string.sub(ARGV[2], 1, 8) then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// Drops every record of the session (its type hashes are named from the types set, in the
/// session's slot). KEYS: meta, types, dirty, creds; ARGV: key base, mode ('clear-keys' keeps the
/// creds and their mark, 'clear' drops everything, 'rebuild' drops everything and the marks,
/// 'evict' refuses a session with dirty records), version (raises `ver`; for clears also `clr`),
/// lease epoch of the caller (-1: none). Bumps the generation. Returns the type hashes dropped,
/// -1 when an eviction is refused, -3 when a later lease epoch fences the caller.
const DROP_LUA: &str = r#"
local mode, v, epoch = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if epoch >= 0 and epoch < (tonumber(redis.call('HGET', KEYS[1], 'ep')) or 0) then return -3 end
if mode == 'evict' and redis.call('HLEN', KEYS[3]) > 0 then return -1 end
local types = redis.call('SMEMBERS', KEYS[2])
for _, t in ipairs(types) do redis.call('DEL', ARGV[1] .. 'k:' .. t) end
redis.call('DEL', KEYS[2])
if mode == 'clear-keys' then
  local c = redis.call('HMGET', KEYS[3], '\0c', '\0n')
  redis.call('DEL', KEYS[3])
  if c[1] then redis.call('HSET', KEYS[3], '\0c', c[1]) end
  if c[2] then redis.call('HSET', KEYS[3], '\0n', c[2]) end
else
  redis.call('DEL', KEYS[3], KEYS[4])
end
if v > (tonumber(redis.call('HGET', KEYS[1], 'ver')) or 0) then redis.call('HSET', KEYS[1], 'ver', v) end
if (mode == 'clear' or mode == 'clear-keys') and v > (tonumber(redis.call('HGET', KEYS[1], 'clr')) or 0) then
  redis.call('HSET', KEYS[1], 'clr', v)
end
redis.call('HINCRBY', KEYS[1], 'gen', 1)
return #types
"#;

/// After a flush: removes the dirty marks at or below the version flushed, and the tombstones
/// SQL now holds. KEYS: dirty, meta; ARGV: key base, then name/version/tombstone-envelope-or-''.
const CLEAN_LUA: &str = r#"
local n, tombs = 0, false
for i = 2, #ARGV, 3 do
  local name, v, tomb = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local mark = redis.call('HGET', KEYS[1], name)
  if mark and tonumber(mark) <= v then
    n = n + redis.call('HDEL', KEYS[1], name)
    if tomb ~= '' then
      local sep = string.find(name, '\0', 1, true)
      local key = ARGV[1] .. 'k:' .. string.sub(name, 1, sep - 1)
      local id = string.sub(name, sep + 1)
      if redis.call('HGET', key, id) == tomb then
        redis.call('HDEL', key, id)
        tombs = true
      end
    end
  end
end
if tombs then redis.call('HINCRBY', KEYS[2], 'gen', 1) end
return n
"#;

/// Takes a session's lease. KEYS: lease hash, meta; ARGV: token, holder, ttl ms, lowest epoch
/// (SQL's), force flag, now (ms, for the record). The epoch goes above every epoch seen (meta,
/// SQL, the lease), unless the same token takes it again. Returns {1|0, holder, epoch, acquired
/// at, ms left}: 0 (with the holder's fields) when another token holds it.
const LEASE_ACQUIRE_LUA: &str = r#"
local cur = redis.call('HMGET', KEYS[1], 'token', 'holder', 'epoch', 'at')
if cur[1] and cur[1] ~= ARGV[1] and ARGV[5] ~= '1' then
  return {0, cur[2], cur[3], cur[4], redis.call('PTTL', KEYS[1])}
end
local seen = math.max(tonumber(redis.call('HGET', KEYS[2], 'ep')) or 0, tonumber(ARGV[4]), tonumber(cur[3]) or 0)
local ep, at = seen + 1, ARGV[6]
if cur[1] == ARGV[1] then
  ep, at = tonumber(cur[3]), cur[4]
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'holder', ARGV[2], 'epoch', ep, 'at', at)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if ep > (tonumber(redis.call('HGET', KEYS[2], 'ep')) or 0) then redis.call('HSET', KEYS[2], 'ep', ep) end
return {1, ARGV[2], tostring(ep), at, tonumber(ARGV[3])}
"#;

/// Extends a lease this token holds; takes it back if it expired and no later epoch exists.
/// KEYS: lease hash, meta; ARGV: token, ttl ms, epoch, holder, now. Returns 1 or 0 (lost).
const LEASE_RENEW_LUA: &str = r#"
local t = redis.call('HGET', KEYS[1], 'token')
if t == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
local ep = tonumber(ARGV[3])
if (not t) and (tonumber(redis.call('HGET', KEYS[2], 'ep')) or 0) <= ep then
  redis.call('HSET', KEYS[1], 'token', ARGV[1], 'holder', ARGV[4], 'epoch', ep, 'at', ARGV[5])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('HSET', KEYS[2], 'ep', ep)
  return 1
end
return 0
"#;

/// KEYS: lease hash; ARGV: token. Drops the lease if this token holds it.
const LEASE_RELEASE_LUA: &str = r#"
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// A lease as Redis holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisLease {
    pub acquired: bool,
    pub holder: String,
    pub epoch: u64,
    pub acquired_at_ms: i64,
    /// Milliseconds until it expires.
    pub ttl_ms: i64,
}

/// The dirty-hash name of the creds record (no escaped type is empty).
pub const CREDS_RECORD: &str = "\0c";

/// The dirty-hash mark of a session written by a store without a SQL tier.
pub const NOSQL_RECORD: &str = "\0n";

/// The dirty-hash name of one record.
pub fn record_name(kind: &str, id: &str) -> String {
    format!("{}\0{id}", escape(kind))
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
    lease_acquire: Script,
    lease_renew: Script,
    lease_release: Script,
    warm_keys: Script,
    warm_creds: Script,
    drop_script: Script,
    clean: Script,
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

/// `text` with the glob characters of `SCAN MATCH` escaped (a key prefix may hold them).
fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

fn bytes_of(v: fred::types::Value) -> Result<Option<Bytes>> {
    match v {
        fred::types::Value::Null => Ok(None),
        fred::types::Value::Bytes(b) => Ok(Some(b)),
        fred::types::Value::String(s) => Ok(Some(s.into_inner())),
        other => Err(Error::Redis(format!(
            "unexpected reply of kind {}",
            other.kind()
        ))),
    }
}

fn opened(v: fred::types::Value) -> Result<Option<Opened>> {
    bytes_of(v)?.map(|b| envelope::open(&b)).transpose()
}

fn array(v: fred::types::Value, n: usize, what: &str) -> Result<Vec<fred::types::Value>> {
    let values = match v {
        fred::types::Value::Array(values) => values,
        single if n == 1 => vec![single],
        other => {
            return Err(Error::Redis(format!(
                "unexpected {what} reply of kind {}",
                other.kind()
            )))
        }
    };
    if values.len() != n {
        return Err(Error::Redis(format!(
            "{what} answered {} values for {n} fields",
            values.len()
        )));
    }
    Ok(values)
}

/// `used_memory` of an `INFO memory` reply.
fn used_memory_of(info: &str) -> Result<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| Error::Redis("INFO memory has no used_memory".into()))
}

fn meta_of(v: fred::types::Value) -> Result<Meta> {
    let mut vs = array(v, 2, "HMGET meta")?.into_iter();
    let ver = vs
        .next()
        .and_then(|v| v.as_string())
        .map(|s| s.parse::<u64>())
        .transpose()
        .map_err(|_| Error::CorruptValue("a session's Redis version is not a number".into()))?
        .unwrap_or(0);
    let gen = vs.next().and_then(|v| v.as_string()).unwrap_or_default();
    Ok(Meta { ver, gen })
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
            write_script: Script::from_lua(WRITE_LUA),
            lease_acquire: Script::from_lua(LEASE_ACQUIRE_LUA),
            lease_renew: Script::from_lua(LEASE_RENEW_LUA),
            lease_release: Script::from_lua(LEASE_RELEASE_LUA),
            warm_keys: Script::from_lua(WARM_KEYS_LUA),
            warm_creds: Script::from_lua(WARM_CREDS_LUA),
            drop_script: Script::from_lua(DROP_LUA),
            clean: Script::from_lua(CLEAN_LUA),
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
        let _: String = tier.call("ping", tier.client.ping(None)).await?;
        Ok(Arc::new(tier))
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

    /// The prefix of every key of a session (ends with `:`).
    pub fn session_base(&self, sid: &SessionId) -> String {
        format!("{}:{{s:{}}}:", self.prefix, escape(sid))
    }

    pub fn creds_key(&self, sid: &SessionId) -> String {
        self.session_base(sid) + "c"
    }

    pub fn keys_key(&self, sid: &SessionId, kind: &str) -> String {
        self.session_base(sid) + "k:" + &escape(kind)
    }

    pub fn types_key(&self, sid: &SessionId) -> String {
        self.session_base(sid) + "t"
    }

    pub fn dirty_key(&self, sid: &SessionId) -> String {
        self.session_base(sid) + "d"
    }

    pub fn meta_key(&self, sid: &SessionId) -> String {
        self.session_base(sid) + "m"
    }

    pub fn lease_key(&self, sid: &SessionId) -> String {
        self.session_base(sid) + "l"
    }

    fn lease_reply(v: fred::types::Value) -> Result<RedisLease> {
        let vs = array(v, 5, "lease")?;
        let text = |v: &fred::types::Value| v.as_string().unwrap_or_default();
        let num = |v: &fred::types::Value| text(v).parse::<i64>().unwrap_or(0);
        Ok(RedisLease {
            acquired: num(&vs[0]) == 1,
            holder: text(&vs[1]),
            epoch: num(&vs[2]).max(0) as u64,
            acquired_at_ms: num(&vs[3]),
            ttl_ms: num(&vs[4]),
        })
    }

    /// Takes the session's lease (see [`LEASE_ACQUIRE_LUA`]).
    pub async fn acquire_lease(
        &self,
        sid: &SessionId,
        token: &str,
        holder: &str,
        ttl: Duration,
        min_epoch: u64,
        force: bool,
    ) -> Result<RedisLease> {
        let keys = vec![self.lease_key(sid), self.meta_key(sid)];
        let args: Vec<fred::types::Value> = vec![
            token.into(),
            holder.into(),
            (ttl.as_millis().max(1) as i64).into(),
            (min_epoch as i64).into(),
            if force { "1" } else { "0" }.into(),
            crate::sql::now_ms().into(),
        ];
        let v: fred::types::Value = self
            .call(
                "acquire lease",
                self.lease_acquire
                    .evalsha_with_reload(&self.client, keys, args),
            )
            .await?;
        Self::lease_reply(v)
    }

    /// Extends (or takes back, see [`LEASE_RENEW_LUA`]) a lease this token holds.
    pub async fn renew_lease(
        &self,
        sid: &SessionId,
        token: &str,
        holder: &str,
        ttl: Duration,
        epoch: u64,
    ) -> Result<bool> {
        let keys = vec![self.lease_key(sid), self.meta_key(sid)];
        let args: Vec<fred::types::Value> = vec![
            token.into(),
            (ttl.as_millis().max(1) as i64).into(),
            (epoch as i64).into(),
            holder.into(),
            crate::sql::now_ms().into(),
        ];
        let n: i64 = self
            .call(
                "renew lease",
                self.lease_renew
                    .evalsha_with_reload(&self.client, keys, args),
            )
            .await?;
        Ok(n == 1)
    }

    pub async fn release_lease(&self, sid: &SessionId, token: &str) -> Result<()> {
        let _: i64 = self
            .call(
                "release lease",
                self.lease_release.evalsha_with_reload(
                    &self.client,
                    vec![self.lease_key(sid)],
                    vec![token],
                ),
            )
            .await?;
        Ok(())
    }

    /// The lease as Redis holds it, with the highest epoch the session has seen.
    pub async fn lease(&self, sid: &SessionId) -> Result<(Option<RedisLease>, u64)> {
        let pipe = self.client.pipeline();
        self.queued(
            pipe.hmget(self.lease_key(sid), vec!["token", "holder", "epoch", "at"])
                .await,
        )?;
        self.queued(pipe.pttl(self.lease_key(sid)).await)?;
        self.queued(pipe.hget(self.meta_key(sid), "ep").await)?;
        let mut r: Vec<fred::types::Value> = self.call("lease", pipe.all()).await?;
        if r.len() != 3 {
            return Err(Error::Redis("unexpected pipeline reply".into()));
        }
        let ep = r
            .pop()
            .and_then(|v| v.as_string())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let ttl = r.pop().and_then(|v| v.as_i64()).unwrap_or(-2);
        let fields = array(r.pop().unwrap_or(fred::types::Value::Null), 4, "lease")?;
        let text = |v: &fred::types::Value| v.as_string();
        let lease = text(&fields[0]).map(|_| RedisLease {
            acquired: false,
            holder: text(&fields[1]).unwrap_or_default(),
            epoch: text(&fields[2]).and_then(|s| s.parse().ok()).unwrap_or(0),
            acquired_at_ms: text(&fields[3]).and_then(|s| s.parse().ok()).unwrap_or(0),
            ttl_ms: ttl,
        });
        Ok((lease, ep))
    }

    /// The token that holds the lease, if any (for a holder to tell itself from others).
    pub async fn lease_token(&self, sid: &SessionId) -> Result<Option<String>> {
        self.call("hget", self.client.hget(self.lease_key(sid), "token"))
            .await
    }

    /// A key of the store's own bookkeeping (memory manager, dirty index).
    pub fn mm_key(&self, name: &str) -> String {
        format!("{}:{{m}}:{name}", self.prefix)
    }

    /// The session's meta: highest version applied, generation.
    pub async fn meta(&self, sid: &SessionId) -> Result<Meta> {
        let v: fred::types::Value = self
            .call(
                "hmget meta",
                self.client.hmget(self.meta_key(sid), vec!["ver", "gen"]),
            )
            .await?;
        meta_of(v)
    }

    /// The creds record and the session's meta, in one round trip.
    pub async fn get_creds(&self, sid: &SessionId) -> Result<(Option<Opened>, Meta)> {
        let pipe = self.client.pipeline();
        self.queued(pipe.get(self.creds_key(sid)).await)?;
        self.queued(pipe.hmget(self.meta_key(sid), vec!["ver", "gen"]).await)?;
        let mut replies: Vec<fred::types::Value> = self.call("get creds", pipe.all()).await?;
        if replies.len() != 2 {
            return Err(Error::Redis("unexpected pipeline reply".into()));
        }
        let meta = meta_of(replies.pop().unwrap_or(fred::types::Value::Null))?;
        let creds = opened(replies.pop().unwrap_or(fred::types::Value::Null))?;
        Ok((creds, meta))
    }

    /// HMGET of `ids` (aligned with `ids`) and the session's meta, in one round trip.
    pub async fn get_keys(
        &self,
        sid: &SessionId,
        kind: &str,
        ids: &[String],
    ) -> Result<(Vec<Option<Opened>>, Meta)> {
        let pipe = self.client.pipeline();
        self.queued(pipe.hmget(self.keys_key(sid, kind), ids.to_vec()).await)?;
        self.queued(pipe.hmget(self.meta_key(sid), vec!["ver", "gen"]).await)?;
        let mut replies: Vec<fred::types::Value> = self.call("hmget", pipe.all()).await?;
        if replies.len() != 2 {
            return Err(Error::Redis("unexpected pipeline reply".into()));
        }
        let meta = meta_of(replies.pop().unwrap_or(fred::types::Value::Null))?;
        let values = array(
            replies.pop().unwrap_or(fred::types::Value::Null),
            ids.len(),
            "HMGET",
        )?;
        let values = values.into_iter().map(opened).collect::<Result<_>>()?;
        Ok((values, meta))
    }

    /// Applies a whole batch at `version` atomically with one script call (a single command that
    /// pipelines with everything else on the connection), unless the session's Redis copy is
    /// below `floor`.
    pub async fn write(
        &self,
        sid: &SessionId,
        batch: &WriteBatch,
        stamp: WriteStamp,
        ttl: Option<Duration>,
        durability: Durability,
    ) -> Result<Applied> {
        let WriteStamp {
            version,
            floor,
            epoch,
        } = stamp;
        let groups = batch.by_type();
        let mut keys = vec![
            self.creds_key(sid),
            self.types_key(sid),
            self.dirty_key(sid),
            self.meta_key(sid),
        ];
        let vb = envelope::version_bytes(version);
        let mut args: Vec<fred::types::Value> =
            Vec::with_capacity(9 + batch.keys.len() * 2 + groups.len() * 3);
        args.push((floor as i64).into());
        args.push(ttl.map_or(0, |t| t.as_millis().max(1) as i64).into());
        args.push(
            match durability {
                Durability::Durable => "d",
                Durability::RedisOnly => "r",
                Durability::NoSql => "n",
            }
            .into(),
        );
        args.push(fred::types::Value::Bytes(Bytes::copy_from_slice(&vb)));
        args.push((version as i64).into());
        match &batch.creds {
            Some(c) => {
                args.push("1".into());
                args.push(fred::types::Value::Bytes(
                    envelope::seal(version, Some(c)).into(),
                ));
            }
            None => {
                args.push("0".into());
                args.push("".into());
            }
        }
        args.push(fred::types::Value::Bytes(
            envelope::seal(version, None).into(),
        ));
        args.push(epoch.map_or(-1, |e| e as i64).into());
        // write-behind marks and the dirty index in one atomic step, so a crash between them
        // cannot leave dirty records no flush finds (see [`Self::index_dirty_after_write`])
        let index = durability == Durability::RedisOnly && !self.client.is_clustered();
        args.push(if index { (&**sid).into() } else { "".into() });
        for (kind, (puts, dels)) in &groups {
            keys.push(self.keys_key(sid, kind));
            args.push(escape(kind).into());
            args.push((puts.len() as i64).into());
            args.push((dels.len() as i64).into());
            for k in puts {
                args.push(k.id.as_str().into());
                args.push(fred::types::Value::Bytes(
                    envelope::seal(version, k.value.as_deref()).into(),
                ));
            }
            for k in dels {
                args.push(k.id.as_str().into());
            }
        }
        if index {
            keys.push(self.mm_key("dirty"));
        }
        let n: i64 = self
            .call(
                "write",
                self.write_script
                    .evalsha_with_reload(&self.client, keys, args),
            )
            .await?;
        Ok(match n {
            -1 => Applied::Stale,
            -2 => Applied::BelowClear,
            -3 => Applied::Fenced,
            _ => Applied::Yes,
        })
    }

    /// Stores records read from SQL, never over a newer record, and not at all if the
    /// generation moved since `gen` was read.
    pub async fn warm_keys(
        &self,
        sid: &SessionId,
        kind: &str,
        found: &[(&str, u64, &Value)],
        gen: &str,
    ) -> Result<()> {
        if found.is_empty() {
            return Ok(());
        }
        let mut args: Vec<fred::types::Value> = Vec::with_capacity(found.len() * 2 + 2);
        args.push(gen.into());
        args.push(escape(kind).into());
        for (id, version, v) in found {
            args.push((*id).into());
            args.push(fred::types::Value::Bytes(
                envelope::seal(*version, Some(v)).into(),
            ));
        }
        let keys = vec![
            self.keys_key(sid, kind),
            self.types_key(sid),
            self.meta_key(sid),
        ];
        let _: i64 = self
            .call(
                "warm",
                self.warm_keys.evalsha_with_reload(&self.client, keys, args),
            )
            .await?;
        Ok(())
    }

    pub async fn warm_creds(
        &self,
        sid: &SessionId,
        version: u64,
        creds: &Value,
        gen: &str,
    ) -> Result<()> {
        let args: Vec<fred::types::Value> = vec![
            gen.into(),
            fred::types::Value::Bytes(envelope::seal(version, Some(creds)).into()),
        ];
        let keys = vec![self.creds_key(sid), self.meta_key(sid)];
        let _: i64 = self
            .call(
                "warm",
                self.warm_creds
                    .evalsha_with_reload(&self.client, keys, args),
            )
            .await?;
        Ok(())
    }

    async fn drop_session(
        &self,
        sid: &SessionId,
        mode: &str,
        version: u64,
        epoch: Option<u64>,
    ) -> Result<i64> {
        let keys = vec![
            self.meta_key(sid),
            self.types_key(sid),
            self.dirty_key(sid),
            self.creds_key(sid),
        ];
        let args: Vec<fred::types::Value> = vec![
            self.session_base(sid).into(),
            mode.into(),
            (version as i64).into(),
            epoch.map_or(-1, |e| e as i64).into(),
        ];
        self.call(
            "drop session",
            self.drop_script
                .evalsha_with_reload(&self.client, keys, args),
        )
        .await
    }

    /// Clears a session at `version`: its keys (and creds unless `keep_creds`) go, and nothing
    /// older than `version` can be written to it again.
    /// Returns [`Applied::Fenced`] (nothing done) when a later lease epoch fences `epoch`.
    pub async fn clear(
        &self,
        sid: &SessionId,
        version: u64,
        keep_creds: bool,
        epoch: Option<u64>,
    ) -> Result<Applied> {
        let mode = if keep_creds { "clear-keys" } else { "clear" };
        Ok(match self.drop_session(sid, mode, version, epoch).await? {
            -3 => Applied::Fenced,
            _ => Applied::Yes,
        })
    }

    /// Resets a session whose Redis copy is behind SQL: every record goes (reads then come from
    /// SQL), its version becomes `sql_version`. Flush its dirty records first.
    pub async fn rebuild(&self, sid: &SessionId, sql_version: u64) -> Result<()> {
        self.drop_session(sid, "rebuild", sql_version, None)
            .await
            .map(|_| ())
    }

    /// Drops a session's Redis data if SQL holds all of it (atomically against writers: a
    /// write that lands first makes the session dirty or brings its keys back, never lost).
    pub async fn evict_session(&self, sid: &SessionId) -> Result<Evicted> {
        match self.drop_session(sid, "evict", 0, None).await? {
            -1 => Ok(Evicted::Dirty),
            n => {
                self.notify_evicted(sid);
                Ok(Evicted::Keys(n.max(0) as u64))
            }
        }
    }

    /// The dirty records of a session with the versions that wrote them.
    pub async fn dirty_records(&self, sid: &SessionId) -> Result<Vec<(String, u64)>> {
        let all: HashMap<String, String> = self
            .call("hgetall", self.client.hgetall(self.dirty_key(sid)))
            .await?;
        let mut out = Vec::with_capacity(all.len());
        for (name, v) in all {
            let v = v
                .parse::<u64>()
                .map_err(|_| Error::CorruptValue("a dirty mark is not a version".into()))?;
            out.push((name, v));
        }
        Ok(out)
    }

    /// Raw records of one type (the envelopes), aligned with `ids`.
    pub async fn records(
        &self,
        sid: &SessionId,
        kind_escaped: &str,
        ids: &[String],
    ) -> Result<Vec<Option<Opened>>> {
        let key = self.session_base(sid) + "k:" + kind_escaped;
        let reply: fred::types::Value = self
            .call("hmget", self.client.hmget(key, ids.to_vec()))
            .await?;
        array(reply, ids.len(), "HMGET")?
            .into_iter()
            .map(opened)
            .collect()
    }

    /// The creds record alone.
    pub async fn creds_record(&self, sid: &SessionId) -> Result<Option<Opened>> {
        let v: fred::types::Value = self
            .call("get", self.client.get(self.creds_key(sid)))
            .await?;
        opened(v)
    }

    /// Adds a session a Redis-only write marked dirty to the dirty index, where the write script
    /// could not: on a cluster the index lives in another slot than the session. (A process that
    /// dies between the two steps leaves dirty records unindexed there, which a flush only finds
    /// through `flush(sessionId)`.)
    pub async fn index_dirty_after_write(&self, sid: &SessionId) -> Result<()> {
        if !self.client.is_clustered() {
            return Ok(()); // the write script did it
        }
        let _: i64 = self
            .call("sadd", self.client.sadd(self.mm_key("dirty"), &**sid))
            .await?;
        Ok(())
    }

    /// Every key matching the glob `pattern`, raw names (no prefix added), from every primary
    /// of a cluster. For tools: a full scan of the keyspace, in pages of 1,000.
    pub async fn scan_raw(&self, pattern: &str) -> Result<Vec<String>> {
        use futures::TryStreamExt;
        if self.is_closed() {
            return Err(Error::StoreClosed);
        }
        let keys = if self.client.is_clustered() {
            self.client
                .scan_cluster_buffered(pattern.to_string(), Some(1000), None)
                .try_collect::<Vec<_>>()
                .await
        } else {
            self.client
                .scan_buffered(pattern.to_string(), Some(1000), None)
                .try_collect::<Vec<_>>()
                .await
        }
        .map_err(|e| self.err(e))?;
        Ok(keys.into_iter().filter_map(|k| k.into_string()).collect())
    }

    /// The bytes of a string key, raw (no prefix added).
    pub async fn get_raw(&self, key: &str) -> Result<Option<Bytes>> {
        self.call("get", self.client.get(key)).await
    }

    /// Every field of a hash key, raw (no prefix added).
    pub async fn hgetall_raw(&self, key: &str) -> Result<HashMap<String, Bytes>> {
        self.call("hgetall", self.client.hgetall(key)).await
    }

    /// The sessions that have a meta hash in Redis (every session written through this
    /// layout has one), found by scanning.
    pub async fn list_sessions(&self) -> Result<Vec<String>> {
        let head = format!("{}:{{s:", self.prefix);
        let pattern = format!("{}*}}:m", escape_glob(&head));
        let mut out: Vec<String> = self
            .scan_raw(&pattern)
            .await?
            .into_iter()
            .filter_map(|k| {
                let inner = k.strip_prefix(&head)?.strip_suffix("}:m")?;
                crate::ident::unescape(inner)
            })
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Every session of the dirty index, any process's.
    pub async fn dirty_sessions(&self) -> Result<Vec<String>> {
        self.call("smembers", self.client.smembers(self.mm_key("dirty")))
            .await
    }

    /// Drops `sid` from the dirty index if it has no dirty record left (re-adding it when a
    /// write marked one meanwhile).
    pub async fn unindex_if_clean(&self, sid: &SessionId) -> Result<()> {
        let index = self.mm_key("dirty");
        let left: i64 = self
            .call("hlen", self.client.hlen(self.dirty_key(sid)))
            .await?;
        if left > 0 {
            return Ok(());
        }
        let _: i64 = self.call("srem", self.client.srem(&index, &**sid)).await?;
        let left: i64 = self
            .call("hlen", self.client.hlen(self.dirty_key(sid)))
            .await?;
        if left > 0 {
            let _: i64 = self.call("sadd", self.client.sadd(&index, &**sid)).await?;
        }
        Ok(())
    }

    /// After a flush: clears the marks at or below the versions SQL now holds, and the
    /// tombstones it holds too. `done`: (mark name, version flushed, was a tombstone).
    pub async fn clean(&self, sid: &SessionId, done: &[(String, u64, bool)]) -> Result<u64> {
        if done.is_empty() {
            return Ok(0);
        }
        let mut args: Vec<fred::types::Value> = Vec::with_capacity(done.len() * 3 + 1);
        args.push(self.session_base(sid).into());
        for (name, v, tomb) in done {
            args.push(name.as_str().into());
            args.push((*v as i64).into());
            args.push(if *tomb {
                fred::types::Value::Bytes(envelope::seal(*v, None).into())
            } else {
                "".into()
            });
        }
        let keys = vec![self.dirty_key(sid), self.meta_key(sid)];
        self.call(
            "clean",
            self.clean.evalsha_with_reload(&self.client, keys, args),
        )
        .await
    }

    /// Removes every key of a session, its meta too (see [`crate::AuthStore::purge_session`]).
    pub async fn purge(&self, sid: &SessionId) -> Result<()> {
        self.drop_session(sid, "clear", 0, None).await?;
        let _: i64 = self
            .call(
                "del",
                self.client.del(vec![
                    self.meta_key(sid),
                    self.dirty_key(sid),
                    self.lease_key(sid),
                ]),
            )
            .await?;
        // and the memory manager's bookkeeping (store-wide keys, another hash slot: one command
        // each), so the shared LRU does not keep naming a session that is gone
        self.pending.lock().remove(&**sid);
        let _: i64 = self
            .call("zrem", self.client.zrem(self.mm_key("lru"), &**sid))
            .await?;
        for name in ["count", "size"] {
            let _: i64 = self
                .call("hdel", self.client.hdel(self.mm_key(name), &**sid))
                .await?;
        }
        let _: i64 = self
            .call("srem", self.client.srem(self.mm_key("dirty"), &**sid))
            .await?;
        Ok(())
    }

    /// The key types the session has in Redis (its `t` set), unescaped.
    pub async fn types(&self, sid: &SessionId) -> Result<Vec<String>> {
        let types: Vec<String> = self
            .call("smembers", self.client.smembers(self.types_key(sid)))
            .await?;
        Ok(types
            .into_iter()
            .filter_map(|t| crate::ident::unescape(&t))
            .collect())
    }

    /// Records and value bytes per key type of one session (reads every value: for tools, not
    /// for hot paths). Tombstones are not counted.
    pub async fn summary(&self, sid: &SessionId) -> Result<Vec<TypeSummary>> {
        let mut types: Vec<String> = self
            .call("smembers", self.client.smembers(self.types_key(sid)))
            .await?;
        types.sort();
        let mut out = Vec::with_capacity(types.len());
        for escaped in types {
            let key = self.session_base(sid) + "k:" + &escaped;
            let all: HashMap<String, Bytes> =
                self.call("hgetall", self.client.hgetall(key)).await?;
            let live: Vec<u64> = all
                .values()
                .filter_map(|v| envelope::open(v).ok()?.value.map(|v| v.len() as u64))
                .collect();
            if !live.is_empty() {
                out.push(TypeSummary {
                    count: live.len() as u64,
                    bytes: live.iter().sum(),
                    kind: crate::ident::unescape(&escaped).unwrap_or(escaped),
                });
            }
        }
        Ok(out)
    }

    /// Ids of one type: those with a value, and those Redis holds a tombstone for.
    pub async fn list_ids(
        &self,
        sid: &SessionId,
        kind: &str,
    ) -> Result<(Vec<String>, Vec<String>)> {
        let all: HashMap<String, Bytes> = self
            .call("hgetall", self.client.hgetall(self.keys_key(sid, kind)))
            .await?;
        let (mut live, mut dead) = (Vec::new(), Vec::new());
        for (id, v) in all {
            match envelope::open(&v)?.value {
                Some(_) => live.push(id),
                None => dead.push(id),
            }
        }
        live.sort();
        Ok((live, dead))
    }

    /// Bytes Redis reports for all of a session's keys (`MEMORY USAGE`).
    pub async fn session_memory(&self, sid: &SessionId) -> Result<u64> {
        let types: Vec<String> = self
            .call("smembers", self.client.smembers(self.types_key(sid)))
            .await?;
        let base = self.session_base(sid);
        let mut keys = vec![
            self.creds_key(sid),
            self.types_key(sid),
            self.dirty_key(sid),
            self.meta_key(sid),
        ];
        keys.extend(types.iter().map(|t| format!("{base}k:{t}")));
        let pipe = self.client.pipeline();
        for k in &keys {
            self.queued(pipe.memory_usage(k, Some(0)).await)?;
        }
        let sizes: Vec<Option<i64>> = self.call("memory usage", pipe.all()).await?;
        Ok(sizes.into_iter().flatten().map(|n| n.max(0) as u64).sum())
    }

    /// `used_memory` from `INFO memory`: of the server, or summed over every primary of a
    /// cluster (see [`Self::used_memory_by_node`]).
    pub async fn used_memory(&self) -> Result<u64> {
        Ok(self
            .used_memory_by_node()
            .await?
            .iter()
            .map(|(_, b)| b)
            .sum())
    }

    /// `used_memory` of each server that holds sessions: the one server, or every primary of a
    /// cluster (each holds the sessions of its slots; replicas hold copies and are left out).
    /// INFO is a per-node command: sent without a node, a cluster client asks just one.
    pub async fn used_memory_by_node(&self) -> Result<Vec<(String, u64)>> {
        if !self.client.is_clustered() {
            let info: String = self
                .call(
                    "info",
                    self.client.info(Some(fred::types::InfoKind::Memory)),
                )
                .await?;
            let name = self
                .client
                .active_connections()
                .first()
                .map_or_else(String::new, ToString::to_string);
            return Ok(vec![(name, used_memory_of(&info)?)]);
        }
        let primaries = self
            .client
            .cached_cluster_state()
            .map(|s| s.unique_primary_nodes())
            .unwrap_or_default();
        if primaries.is_empty() {
            return Err(Error::Redis("the cluster's primaries are not known".into()));
        }
        let infos = futures::future::join_all(primaries.iter().map(|node| async move {
            let on_node = self.client.with_cluster_node(node.clone());
            self.call(
                "info",
                on_node.info::<String>(Some(fred::types::InfoKind::Memory)),
            )
            .await
        }))
        .await;
        primaries
            .iter()
            .zip(infos)
            .map(|(node, info)| Ok((node.to_string(), used_memory_of(&info?)?)))
            .collect()
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
                    tier.events.warn(
                        "WARN_TRACKING",
                        &format!("could not record session accesses: {e}"),
                    );
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
