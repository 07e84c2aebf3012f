use std::sync::Arc;

use napi::bindgen_prelude::{Buffer, FnArgs, PromiseRaw};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Env;
use napi_derive::napi;
use wa_auth_core::events::{EventSink, Level};
use wa_auth_core::model::Value;
use wa_auth_core::{AuthStore, KeyWrite, SessionId, StoreOptions, WriteBatch, WriteOptions};

use crate::completions::{Completions, DoneArgs};
use crate::error::{millis, to_napi, IntoNapi};
use crate::redis_connection::RedisConnection;
use crate::sql_connection::SqlConnection;

#[napi(object)]
pub struct NativeStoreOptions {
    /// Byte budget of the in-process cache; 0 turns it off.
    pub cache_max_bytes: Option<f64>,
    /// Write-behind: flush to SQL every this many milliseconds (absent: write-through).
    pub write_behind_ms: Option<f64>,
    /// Store values in the compact binary form (default true).
    pub compact_values: Option<bool>,
    /// Sessions have leases (writes to a session another process holds are refused; the cache
    /// serves only held sessions). Default false here; the JavaScript facade turns it on.
    pub leases: Option<bool>,
    /// Encryption at rest: the 32-byte AES-256 key every value is sealed under.
    pub encryption_key: Option<Buffer>,
    /// Older keys values may still be sealed under (they open, never seal).
    pub previous_keys: Option<Vec<Buffer>>,
}

#[napi(object)]
pub struct NativeTypeCount {
    #[napi(js_name = "type")]
    pub kind: String,
    pub count: f64,
}

#[napi(object)]
pub struct NativeRekeyReport {
    pub creds: bool,
    pub types: Vec<NativeTypeCount>,
    /// The write's version (0: the session holds nothing).
    pub version: f64,
}

#[napi(object)]
pub struct NativeWriteOptions {
    pub sync_to_database: Option<bool>,
    pub ttl_ms: Option<f64>,
    /// Write although another process holds the session's lease (fences it).
    pub force: Option<bool>,
}

#[napi(object)]
pub struct NativeLeaseOptions {
    pub ttl_ms: f64,
    pub holder_id: String,
    pub force: Option<bool>,
}

#[napi(object)]
pub struct NativeLeaseInfo {
    /// Whether the call took the lease (acquire) / this store holds it (info).
    pub acquired: bool,
    pub holder: String,
    pub epoch: f64,
    pub acquired_at: f64,
    pub expires_in_ms: f64,
    pub mine: bool,
}

fn lease_info(acquired: bool, i: wa_auth_core::lease::LeaseInfo) -> NativeLeaseInfo {
    NativeLeaseInfo {
        acquired,
        holder: i.holder,
        epoch: i.epoch as f64,
        acquired_at: i.acquired_at_ms as f64,
        expires_in_ms: i.expires_in_ms as f64,
        mine: i.mine,
    }
}

#[napi(object)]
pub struct NativeCacheStats {
    pub hits: f64,
    pub misses: f64,
    pub entries: f64,
    pub bytes: f64,
    pub max_bytes: f64,
}

#[napi(object)]
pub struct NativeTypeSummary {
    #[napi(js_name = "type")]
    pub kind: String,
    pub count: f64,
    pub bytes: f64,
}

#[napi(object)]
pub struct NativeStoreStats {
    pub cache: Option<NativeCacheStats>,
    pub redis_hits: f64,
    pub redis_misses: f64,
    pub sql_hits: f64,
    pub sql_misses: f64,
    /// Sessions whose Redis copy was found behind SQL and rebuilt.
    pub redis_rebuilds: f64,
    pub sql_transactions: f64,
    pub sql_writes: f64,
    /// Background problems reported to the logger.
    pub warnings: f64,
    pub errors: f64,
    /// Sessions with records not yet in SQL when the last flush pass started.
    pub flush_dirty_sessions: f64,
    /// When the last flush pass finished without a failure (epoch ms).
    pub last_flush_ms: Option<f64>,
    /// Records written to Redis only that were gone before a flush reached them.
    pub records_lost: f64,
    /// Sessions found with SQL behind Redis (refused with ERR_SQL_BEHIND).
    pub sql_behind: f64,
}

type LogArgs = FnArgs<(String, String, String)>;
/// `(level, code, message)`, called on the JavaScript thread; weak: never keeps Node alive.
type LogFn = ThreadsafeFunction<LogArgs, (), LogArgs, napi::Status, false, true>;

/// Forwards the core's background reports to a JavaScript function.
struct JsLogger(LogFn);

impl EventSink for JsLogger {
    fn emit(&self, level: Level, code: &str, message: &str) {
        let args = (
            level.as_str().to_string(),
            code.to_string(),
            message.to_string(),
        );
        self.0
            .call(args.into(), ThreadsafeFunctionCallMode::NonBlocking);
    }
}

/// Opaque values keyed by `(session, type, id)` over the configured tiers. Values are bytes;
/// the JavaScript facade owns Baileys' value shapes.
/// A session as listSessions() finds it.
#[napi(object)]
pub struct NativeSessionInfo {
    pub id: String,
    /// SQL has a row for it (a deleted session keeps one, without creds).
    pub in_sql: bool,
    /// Redis holds its meta hash.
    pub in_redis: bool,
    pub sql_has_creds: bool,
    /// Highest version SQL committed.
    pub version: f64,
    /// SQL's last write, epoch ms.
    pub updated_at_ms: Option<f64>,
}

#[napi]
pub struct NativeAuthStore {
    inner: Arc<AuthStore>,
    /// Where [`NativeAuthStore::write`] answers (set once by the facade).
    completions: std::sync::OnceLock<Arc<Completions>>,
}

fn buffer(v: Value) -> Buffer {
    Buffer::from(v.to_vec())
}

/// Marks an absent record in [`packed`]'s lengths.
const ABSENT: u32 = u32::MAX;
/// Set in a length of [`packed`]'s when the value's JSON needs the JavaScript reviver.
const REVIVE: u32 = 1 << 31;

/// Whether JavaScript's reviver could change anything in this JSON: the test of `needsReviver`
/// in lib/codec.js (a "Buffer", a `"0"` key or a `\u` escape anywhere), on the bytes. Done here
/// with SIMD substring search it is a fraction of what `String#includes` cost on the JavaScript
/// thread (7 % of it in a group send's profile: base64 text is full of `B`s).
fn needs_reviver(json: &[u8]) -> bool {
    use memchr::memmem::Finder;
    static NEEDLES: std::sync::LazyLock<[Finder<'static>; 3]> = std::sync::LazyLock::new(|| {
        [
            Finder::new(b"Buffer"),
            Finder::new(b"\"0\""),
            Finder::new(b"\\u"),
        ]
    });
    NEEDLES.iter().any(|n| n.find(json).is_some())
}

/// The longest value [`packed`] hands over: V8's longest string (`String.prototype.length`'s
/// limit on 64-bit Node, 2^29 - 24 UTF-16 units), which JavaScript could not decode anyway.
const MAX_PACKED_VALUE: usize = (1 << 29) - 24;

/// Records packed into one Buffer: a little-endian u32 per record, [`ABSENT`] where a record
/// does not exist, else its length with [`REVIVE`] set when its JSON needs the reviver, then the
/// present values back to back. One Buffer rather than one per record: each Buffer Node makes is
/// an allocation, a finalizer and GC bookkeeping, and for 200 Signal sessions those cost more
/// than half as much as decoding their JSON (0.59 ms of a 1.7 ms read of 200 cached records,
/// measured with perf: malloc, free and the ArrayBuffer sweeper on top).
fn packed<'a>(
    values: impl ExactSizeIterator<Item = Option<&'a Value>> + Clone,
) -> napi::Result<Buffer> {
    let n = values.len();
    let bytes: usize = values.clone().flatten().map(|v| v.len()).sum();
    let mut out = Vec::with_capacity(4 * n + bytes);
    for v in values.clone() {
        let word = match v {
            Some(v) => {
                if v.len() > MAX_PACKED_VALUE {
                    return Err(to_napi(wa_auth_core::Error::CorruptValue(format!(
                        "a stored value of {} bytes is longer than JavaScript can read",
                        v.len()
                    ))));
                }
                let len = v.len() as u32; // < 2^29: REVIVE and ABSENT stay apart
                if needs_reviver(v) {
                    len | REVIVE
                } else {
                    len
                }
            }
            None => ABSENT,
        };
        out.extend_from_slice(&word.to_le_bytes());
    }
    for v in values.flatten() {
        out.extend_from_slice(v);
    }
    Ok(Buffer::from(out))
}

#[napi]
impl NativeAuthStore {
    #[napi(constructor)]
    pub fn new(
        redis: Option<&RedisConnection>,
        sql: Option<&SqlConnection>,
        options: Option<NativeStoreOptions>,
    ) -> napi::Result<Self> {
        let mut o = StoreOptions::default();
        let options = options.unwrap_or(NativeStoreOptions {
            cache_max_bytes: None,
            write_behind_ms: None,
            compact_values: None,
            leases: None,
            encryption_key: None,
            previous_keys: None,
        });
        o.compact_values = options.compact_values.unwrap_or(true);
        o.leases = options.leases.unwrap_or(false);
        match (&options.encryption_key, &options.previous_keys) {
            (Some(key), previous) => {
                let previous: Vec<&[u8]> =
                    previous.iter().flatten().map(|b| -> &[u8] { b }).collect();
                let ring = wa_auth_core::crypto::Keyring::new(key, &previous).napi()?;
                o.encryption = Some(Arc::new(ring));
            }
            (None, Some(_)) => {
                return Err(to_napi(wa_auth_core::Error::Config(
                    "previousKeys need the encryption key too".into(),
                )))
            }
            (None, None) => {}
        }
        if options.write_behind_ms.is_some() {
            o.write_behind = Some(millis(options.write_behind_ms, std::time::Duration::ZERO)?);
        }
        if let Some(bytes) = options.cache_max_bytes {
            if !(bytes.is_finite() && bytes >= 0.0) {
                return Err(to_napi(wa_auth_core::Error::invalid(
                    "cacheMaxBytes must be a non-negative number",
                )));
            }
            o.cache_max_bytes = bytes as usize;
        }
        let store = AuthStore::new(
            redis.map(|r| r.inner.clone()),
            sql.map(|s| s.inner.clone()),
            o,
        )
        .napi()?;
        Ok(NativeAuthStore {
            inner: Arc::new(store),
            completions: std::sync::OnceLock::new(),
        })
    }

    #[napi]
    pub async fn get_creds(&self, session_id: String) -> napi::Result<Option<Buffer>> {
        let sid = SessionId::new(session_id).napi()?;
        Ok(self.inner.get_creds(&sid).await.napi()?.map(buffer))
    }

    /// The values of `ids` in one Buffer: a little-endian u32 per id, `0xffffffff` where the
    /// record does not exist, else its length in bytes (`word & 0x7fffffff`) with bit 31 set when
    /// its JSON needs BufferJSON's reviver; then the present values back to back, in the order of
    /// `ids` (lib/codec.js `decodePacked` reads it).
    #[napi]
    pub async fn get_keys(
        &self,
        session_id: String,
        kind: String,
        ids: Vec<String>,
    ) -> napi::Result<Buffer> {
        let sid = SessionId::new(session_id).napi()?;
        let got = self.inner.get_keys(&sid, &kind, &ids).await.napi()?;
        packed(got.iter().map(Option::as_ref))
    }

    /// The values of `ids` if every one is in the in-process cache, else `null` (no I/O; a sync
    /// call, cheaper than an async one when the answer is in memory), packed as `getKeys` packs
    /// them.
    #[napi]
    pub fn get_keys_cached(
        &self,
        session_id: String,
        kind: String,
        ids: Vec<String>,
    ) -> napi::Result<Option<Buffer>> {
        let sid = SessionId::new(session_id).napi()?;
        let got = self.inner.get_keys_cached(&sid, &kind, &ids).napi()?;
        got.map(|values| packed(values.iter().map(Some)))
            .transpose()
    }

    /// Where answers of [`Self::write`] go: `handler(ids, versions, errors)`, called on the
    /// JavaScript thread with every write answered since its last call (see `completions.rs`).
    /// Set once.
    #[napi(
        ts_args_type = "handler: (ids: number[], versions: number[], errors: Array<string | null>) => void"
    )]
    pub fn set_completion_handler(
        &self,
        handler: napi::bindgen_prelude::Function<DoneArgs, ()>,
    ) -> napi::Result<()> {
        let c = Arc::new(Completions::new(handler)?);
        self.completions.set(c).map_err(|_| {
            to_napi(wa_auth_core::Error::invalid(
                "the completion handler is set already",
            ))
        })
    }

    /// One atomic write: optional creds plus records given as parallel arrays (`null` deletes).
    /// Takes its place in the session's order now, on the JavaScript thread: writes of one
    /// session land in the order they were called. Answers request `id` through the completion
    /// handler with the write's version; bad arguments throw here.
    #[napi]
    #[allow(clippy::too_many_arguments)] // the JavaScript signature
    pub fn write(
        &self,
        id: u32,
        session_id: String,
        creds: Option<Buffer>,
        types: Vec<String>,
        ids: Vec<String>,
        #[napi(ts_arg_type = "Array<Buffer | null>")] values: Vec<Option<Buffer>>,
        options: Option<NativeWriteOptions>,
    ) -> napi::Result<()> {
        let Some(completions) = self.completions.get() else {
            return Err(to_napi(wa_auth_core::Error::invalid(
                "write before setCompletionHandler",
            )));
        };
        // Copy the bytes now: JavaScript may reuse the memory once we yield.
        let creds = creds.map(|b| Value::from(&b[..]));
        if types.len() != ids.len() || ids.len() != values.len() {
            return Err(to_napi(wa_auth_core::Error::invalid(
                "types, ids and values must have the same length",
            )));
        }
        let keys: Vec<KeyWrite> = types
            .into_iter()
            .zip(ids)
            .zip(values)
            .map(|((kind, id), v)| KeyWrite {
                kind,
                id,
                value: v.map(|b| Value::from(&b[..])),
            })
            .collect();
        let sid = SessionId::new(session_id).napi()?;
        let mut opts = WriteOptions::default();
        if let Some(o) = options {
            opts.sync_to_database = o.sync_to_database.unwrap_or(true);
            opts.force = o.force.unwrap_or(false);
            if o.ttl_ms.is_some() {
                opts.ttl = Some(millis(o.ttl_ms, std::time::Duration::ZERO)?);
            }
        }
        let ticket = self.inner.ticket(&sid);
        let inner = self.inner.clone();
        let pending = completions.pending(id);
        napi::bindgen_prelude::spawn(async move {
            let batch = WriteBatch { creds, keys };
            let v = inner.write_in_turn(&sid, batch, &opts, ticket).await;
            pending.answer(v.map(|v| v as f64).napi());
        });
        Ok(())
    }

    /// Sends background warnings and errors to `log(level, code, message)`.
    #[napi(ts_args_type = "log: (level: string, code: string, message: string) => void")]
    pub fn set_logger(&self, log: LogFn) {
        self.inner.set_event_sink(Some(Arc::new(JsLogger(log))));
    }

    /// Removes a session and the record of its deletion (tests and tools).
    #[napi]
    pub async fn purge_session(&self, session_id: String) -> napi::Result<()> {
        let sid = SessionId::new(session_id).napi()?;
        self.inner.purge_session(&sid).await.napi()
    }

    /// Accepts SQL's state of a session refused with ERR_SQL_BEHIND (SQL restored from an older
    /// backup): Redis drops its newer copy. Resolves with whether the session was refused.
    #[napi]
    pub async fn accept_sql_state(&self, session_id: String) -> napi::Result<bool> {
        let sid = SessionId::new(session_id).napi()?;
        self.inner.accept_sql_state(&sid).await.napi()
    }

    /// Re-seals every record of the session under the current encryption key (one write, in the
    /// session's call order).
    #[napi]
    pub async fn rekey_session(
        &self,
        session_id: String,
        force: Option<bool>,
    ) -> napi::Result<NativeRekeyReport> {
        let sid = SessionId::new(session_id).napi()?;
        let r = self
            .inner
            .rekey_session(&sid, force.unwrap_or(false))
            .await
            .napi()?;
        Ok(NativeRekeyReport {
            creds: r.creds,
            types: r
                .types
                .into_iter()
                .map(|(kind, count)| NativeTypeCount {
                    kind,
                    count: count as f64,
                })
                .collect(),
            version: r.version as f64,
        })
    }

    /// Copies records written with `syncToDatabase: false` to SQL; returns how many.
    #[napi]
    pub async fn flush(&self, session_id: String) -> napi::Result<f64> {
        let sid = SessionId::new(session_id).napi()?;
        Ok(self.inner.flush(&sid).await.napi()? as f64)
    }

    /// Flushes every session marked dirty, by any process; returns the records flushed.
    #[napi]
    pub async fn flush_all(&self) -> napi::Result<f64> {
        Ok(self.inner.flush_all().await.napi()? as f64)
    }

    /// Removes the session's keys, and its creds too unless `keepCreds`.
    /// In the session's call order, like `write`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn delete_session<'env>(
        &self,
        env: &'env Env,
        session_id: String,
        keep_creds: bool,
        force: Option<bool>,
    ) -> napi::Result<PromiseRaw<'env, ()>> {
        let sid = SessionId::new(session_id).napi()?;
        let ticket = self.inner.ticket(&sid);
        let inner = self.inner.clone();
        let force = force.unwrap_or(false);
        env.spawn_future(async move {
            let r = inner
                .delete_session_in_turn(&sid, keep_creds, force, ticket)
                .await;
            r.napi()
        })
    }

    /// Takes the session's lease; `acquired: false` with the holder's details when another
    /// process holds it.
    #[napi]
    pub async fn acquire_lease(
        &self,
        session_id: String,
        options: NativeLeaseOptions,
    ) -> napi::Result<NativeLeaseInfo> {
        let sid = SessionId::new(session_id).napi()?;
        let opts = wa_auth_core::lease::LeaseOptions {
            ttl: millis(Some(options.ttl_ms), std::time::Duration::ZERO)?,
            holder: options.holder_id,
            force: options.force.unwrap_or(false),
        };
        Ok(match self.inner.acquire_lease(&sid, &opts).await.napi()? {
            wa_auth_core::lease::LeaseOutcome::Acquired(i) => lease_info(true, i),
            wa_auth_core::lease::LeaseOutcome::Held(i) => lease_info(false, i),
        })
    }

    /// Extends this store's lease; false when it was lost.
    #[napi]
    pub async fn renew_lease(&self, session_id: String) -> napi::Result<bool> {
        let sid = SessionId::new(session_id).napi()?;
        self.inner.renew_lease(&sid).await.napi()
    }

    #[napi]
    pub async fn release_lease(&self, session_id: String) -> napi::Result<()> {
        let sid = SessionId::new(session_id).napi()?;
        self.inner.release_lease(&sid).await.napi()
    }

    /// Who holds the session's lease (null: nobody), and the session's lease epoch.
    #[napi]
    pub async fn lease_info(&self, session_id: String) -> napi::Result<Option<NativeLeaseInfo>> {
        let sid = SessionId::new(session_id).napi()?;
        let (info, _) = self.inner.lease_state(&sid).await.napi()?;
        Ok(info.map(|i| lease_info(i.mine, i)))
    }

    #[napi]
    pub fn holds_lease(&self, session_id: String) -> napi::Result<bool> {
        let sid = SessionId::new(session_id).napi()?;
        Ok(self.inner.holds_lease(&sid))
    }

    /// Records and value bytes per key type (from SQL when there is a SQL tier).
    #[napi]
    pub async fn summary(&self, session_id: String) -> napi::Result<Vec<NativeTypeSummary>> {
        let sid = SessionId::new(session_id).napi()?;
        let rows = self.inner.summary(&sid).await.napi()?;
        Ok(rows
            .into_iter()
            .map(|t| NativeTypeSummary {
                kind: t.kind,
                count: t.count as f64,
                bytes: t.bytes as f64,
            })
            .collect())
    }

    /// Every key type the session has records of, in either tier.
    #[napi]
    pub async fn list_types(&self, session_id: String) -> napi::Result<Vec<String>> {
        let sid = SessionId::new(session_id).napi()?;
        self.inner.list_types(&sid).await.napi()
    }

    /// Every session SQL or Redis knows, in id order.
    #[napi]
    pub async fn list_sessions(&self) -> napi::Result<Vec<NativeSessionInfo>> {
        let rows = self.inner.list_sessions().await.napi()?;
        Ok(rows
            .into_iter()
            .map(|r| NativeSessionInfo {
                id: r.id,
                in_sql: r.in_sql,
                in_redis: r.in_redis,
                sql_has_creds: r.sql_has_creds,
                version: r.version as f64,
                updated_at_ms: r.updated_at_ms.map(|t| t as f64),
            })
            .collect())
    }

    /// Every id of one key type in the session.
    #[napi]
    pub async fn list_ids(&self, session_id: String, kind: String) -> napi::Result<Vec<String>> {
        let sid = SessionId::new(session_id).napi()?;
        self.inner.list_ids(&sid, &kind).await.napi()
    }

    #[napi]
    pub fn stats(&self) -> NativeStoreStats {
        let s = self.inner.stats();
        NativeStoreStats {
            cache: s.cache.map(|c| NativeCacheStats {
                hits: c.hits as f64,
                misses: c.misses as f64,
                entries: c.entries as f64,
                bytes: c.bytes as f64,
                max_bytes: c.max_bytes as f64,
            }),
            redis_hits: s.redis_hits as f64,
            redis_misses: s.redis_misses as f64,
            sql_hits: s.sql_hits as f64,
            sql_misses: s.sql_misses as f64,
            redis_rebuilds: s.redis_rebuilds as f64,
            sql_transactions: s.sql_transactions as f64,
            sql_writes: s.sql_writes as f64,
            warnings: s.warnings as f64,
            errors: s.errors as f64,
            flush_dirty_sessions: s.flush_dirty_sessions as f64,
            last_flush_ms: s.last_flush_ms.map(|ms| ms as f64),
            records_lost: s.records_lost as f64,
            sql_behind: s.sql_behind as f64,
        }
    }

    /// Closes the store and the connections it was built on.
    #[napi]
    pub async fn close(&self) -> napi::Result<()> {
        self.inner.close().await;
        Ok(())
    }
}
