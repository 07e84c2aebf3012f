//! The tiers together: read-through (cache -> Redis -> SQL, warming the tiers above on a lower
//! hit) and writes in one order through every tier.
//!
//! One order: every write, clear and flush of a session goes through the same *lane* (one per
//! session hash). A lane's first stage gives each write the session's next version and commits
//! the SQL part in group transactions (every row only over an older version); its second stage
//! then applies the Redis part and the in-process cache in that same order, and only then answers
//! the callers. Redis and the cache therefore reflect writes in SQL's commit order, whatever order
//! the callers wake up in.
//!
//! Versions: a session's counter is seeded, the first time this process touches the session,
//! from the highest version SQL and Redis hold for it. Redis keeps, per session, the highest
//! version applied (`ver`); this process remembers the highest version it knows Redis applied (the
//! *floor*). A Redis copy below the floor, or below SQL's version when first touched, lost writes
//! (restarted empty, restored from an older snapshot, failed over): it is rebuilt (its dirty
//! records flushed, everything else dropped) and reads go to SQL.
//!
//! Why SQL first: Redis then never holds a durable value SQL lacks, so evicting a session from
//! Redis never loses data. If the Redis step fails after the commit, the caller gets the error,
//! the session is re-validated on its next use (its Redis copy is then behind SQL and rebuilt).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::cache::{CacheStats, KeyCache};
use crate::codec;
use crate::config::StoreOptions;
use crate::crypto::{self, Keyring, Record};
use crate::envelope::Opened;
use crate::error::{Error, Result, Tier};
use crate::events::{EventSink, Events};
use crate::ident;
use crate::lease::{locked, Fence, Leases};
use crate::model::{KeyWrite, SessionId, Value, WriteBatch, WriteOptions};
use crate::redis::{Applied, Durability, RedisTier, WriteStamp, CREDS_RECORD, NOSQL_RECORD};
use crate::sql::{SqlStore, TypeSummary, VersionedWrite};

/// Most writes one group transaction takes, and about how many value bytes.
const MAX_GROUP_JOBS: usize = 256;
const MAX_GROUP_BYTES: usize = 16 * 1024 * 1024;
/// Jobs a lane queues before callers wait (back-pressure).
const LANE_QUEUE: usize = 1024;
/// Lanes of a store without SQL.
const REDIS_LANES: usize = 4;
/// Sessions flushed at once by a flush pass.
const FLUSH_PARALLEL: usize = 32;

/// Ids read per `get_keys` while a session is rekeyed.
const REKEY_CHUNK: usize = 500;

/// What [`AuthStore::rekey_session`] rewrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RekeyReport {
    /// The creds were rewritten.
    pub creds: bool,
    /// Records rewritten per key type, in type order.
    pub types: Vec<(String, u64)>,
    /// The version of the write (0: the session holds nothing).
    pub version: u64,
}

/// Which tiers answered reads, and how often.
/// A session as [`AuthStore::list_sessions`] finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: String,
    /// SQL has a row for it (possibly the tombstone of a deleted session).
    pub in_sql: bool,
    /// Redis has its meta hash.
    pub in_redis: bool,
    /// SQL's row holds creds.
    pub sql_has_creds: bool,
    /// The highest version SQL committed for it.
    pub version: u64,
    /// SQL's last write, epoch ms.
    pub updated_at_ms: Option<i64>,
}

#[derive(Clone, Debug, Default)]
pub struct StoreStats {
    pub cache: Option<CacheStats>,
    pub redis_hits: u64,
    pub redis_misses: u64,
    pub sql_hits: u64,
    pub sql_misses: u64,
    /// Sessions whose Redis copy was found behind and rebuilt.
    pub redis_rebuilds: u64,
    /// SQL group transactions and the writes they carried.
    pub sql_transactions: u64,
    pub sql_writes: u64,
    /// Background problems reported to the logger.
    pub warnings: u64,
    pub errors: u64,
    /// Sessions with records not yet in SQL when the last flush pass started (any process's).
    pub flush_dirty_sessions: u64,
    /// When the last flush pass (write-behind, flushAll) finished without a failure, epoch ms.
    pub last_flush_ms: Option<u64>,
}

#[derive(Default)]
struct Counters {
    redis_hits: AtomicU64,
    redis_misses: AtomicU64,
    sql_hits: AtomicU64,
    sql_misses: AtomicU64,
    rebuilds: AtomicU64,
    /// Sessions the dirty index held when the last flush pass started.
    flush_dirty: AtomicU64,
    /// When the last flush pass finished without a failure (epoch ms; 0: never).
    last_flush_ms: AtomicU64,
}

impl Counters {
    fn redis(&self, hits: usize, asked: usize) {
        self.redis_hits.fetch_add(hits as u64, Ordering::Relaxed);
        self.redis_misses
            .fetch_add((asked - hits) as u64, Ordering::Relaxed);
    }

    fn sql(&self, hits: usize, asked: usize) {
        self.sql_hits.fetch_add(hits as u64, Ordering::Relaxed);
        self.sql_misses
            .fetch_add((asked - hits) as u64, Ordering::Relaxed);
    }
}

/// What the lanes and the store share.
struct Tiers {
    cache: Option<Arc<KeyCache>>,
    redis: Option<Arc<RedisTier>>,
    sql: Option<Arc<SqlStore>>,
    events: Arc<Events>,
    counters: Counters,
    leases: Leases,
    /// Leases are on: the cache serves only sessions this store holds.
    leases_on: bool,
}

impl Tiers {
    /// The cache, for a session it may serve (see `crate::lease`).
    fn cache_for(&self, sid: &str) -> Option<&Arc<KeyCache>> {
        self.cache
            .as_ref()
            .filter(|_| !self.leases_on || self.leases.holds(sid))
    }

    /// A write of `sid` was fenced: this store lost the session's lease.
    fn fenced(&self, sid: &SessionId) -> Error {
        if self.leases.lose(sid) {
            if let Some(cache) = &self.cache {
                cache.remove_session(sid, false);
            }
            self.events.warn(
                "ERR_SESSION_LOCKED",
                "this process lost a session's lease to another process; its writes to it are refused",
            );
        }
        locked("another process holds the session's lease now (a later lease epoch fenced this write); close this socket")
    }
}

/// This process's view of one session.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    /// One validation at a time.
    gate: tokio::sync::Mutex<()>,
    /// Call-order tickets: writes enter the lane in the order they were called.
    tickets: AtomicU64,
    /// The ticket whose turn it is to enter the lane, and later tickets already done.
    turn: Mutex<(u64, std::collections::BTreeSet<u64>)>,
    turned: tokio::sync::Notify,
}

#[derive(Default)]
struct SlotState {
    validated: bool,
    /// The Redis connection's reconnect count at validation: a reconnection (restart, failover)
    /// means checking again.
    connection: u64,
    /// The last version given out.
    last: u64,
    /// The highest version this process knows Redis applied.
    floor: u64,
    /// A Redis step of this session failed after its SQL commit: Redis may lack that write even
    /// if later writes raised its version, so it is rebuilt before it is used again.
    suspect: bool,
}

impl Slot {
    fn validated(&self, connection: u64) -> bool {
        let s = self.state.lock();
        s.validated && s.connection == connection
    }

    /// Waits until it is `ticket`'s turn to enter the lane.
    async fn wait_turn(&self, ticket: u64) {
        loop {
            let turned = self.turned.notified();
            tokio::pin!(turned);
            turned.as_mut().enable();
            if self.turn.lock().0 >= ticket {
                return;
            }
            turned.await;
        }
    }

    /// Lets the next ticket enter the lane.
    fn end_turn(&self, ticket: u64) {
        let mut guard = self.turn.lock();
        let (turn, done) = &mut *guard;
        done.insert(ticket);
        while done.remove(turn) {
            *turn += 1;
        }
        drop(guard);
        self.turned.notify_waiters();
    }

    fn next_version(&self) -> u64 {
        let mut s = self.state.lock();
        s.last += 1;
        s.last
    }

    fn floor(&self) -> u64 {
        self.state.lock().floor
    }

    fn raise_floor(&self, v: u64) {
        let mut s = self.state.lock();
        s.floor = s.floor.max(v);
    }

    /// Forgets what this process knew of the session's Redis copy: the next use checks it again.
    fn invalidate(&self) {
        self.state.lock().validated = false;
    }

    /// See [`SlotState::suspect`].
    fn suspect(&self) {
        let mut s = self.state.lock();
        s.validated = false;
        s.suspect = true;
    }

    fn is_suspect(&self) -> bool {
        self.state.lock().suspect
    }
}

/// A place in a session's call order, taken when a write or clear is called (synchronously, so
/// calls from one thread keep their order) and given up once the job entered its lane.
pub struct Ticket {
    slot: Arc<Slot>,
    n: u64,
    ended: bool,
}

impl Ticket {
    fn end(&mut self) {
        if !self.ended {
            self.ended = true;
            self.slot.end_turn(self.n);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.end();
    }
}

enum Op {
    Write(Box<WriteJob>),
    Clear {
        keep_creds: bool,
        epoch: Option<u64>,
    },
    Flush,
    Rebuild,
    /// Answers once every job queued before it went through both stages (see
    /// [`AuthStore::rekey_session`]).
    Barrier,
}

struct WriteJob {
    /// Values in their stored form.
    batch: WriteBatch,
    /// The lease epoch the write carries (`None`: not fenced).
    epoch: Option<u64>,
    /// The JSON text the cache keeps (when there is a cache).
    plain: Option<WriteBatch>,
    to_sql: bool,
    /// How Redis takes it (`None`: no Redis tier).
    redis: Option<Durability>,
    ttl: Option<Duration>,
}

struct Job {
    sid: SessionId,
    slot: Arc<Slot>,
    op: Op,
    done: oneshot::Sender<Result<u64>>,
}

impl Job {
    fn answer(self, r: Result<u64>) {
        let _ = self.done.send(r);
    }

    fn write(&self) -> Option<&WriteJob> {
        match &self.op {
            Op::Write(w) => Some(w),
            _ => None,
        }
    }
}

/// The lanes, the session slots and what they need: shared by the store and its flusher.
struct Pipeline {
    tiers: Arc<Tiers>,
    lanes: Mutex<Vec<mpsc::Sender<Job>>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    /// How long a caller waits for its job.
    deadline: Duration,
    /// Lanes to start on first use (they need the async runtime); 0 once closed.
    lane_count: Mutex<usize>,
}

pub struct AuthStore {
    pipeline: Arc<Pipeline>,
    closed: AtomicBool,
    write_behind: Option<Duration>,
    /// Store values in the compact form of `codec`.
    compact: bool,
    /// Seal every value before it reaches Redis or SQL (`crate::crypto`).
    keyring: Option<Arc<Keyring>>,
    /// Sessions this process wrote behind, flushed on close.
    behind: Mutex<HashSet<String>>,
    flusher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for AuthStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = &self.pipeline.tiers;
        f.debug_struct("AuthStore")
            .field("cache", &t.cache.is_some())
            .field("redis", &t.redis)
            .field("sql", &t.sql)
            .field("encryption", &self.keyring)
            .finish()
    }
}

impl AuthStore {
    pub fn new(
        redis: Option<Arc<RedisTier>>,
        sql: Option<Arc<SqlStore>>,
        options: StoreOptions,
    ) -> Result<Self> {
        if options.write_behind.is_some() && (redis.is_none() || sql.is_none()) {
            return Err(Error::Config(
                "write-behind needs both a Redis and a SQL tier".into(),
            ));
        }
        if options
            .write_behind
            .is_some_and(|d| d < Duration::from_millis(1))
        {
            return Err(Error::invalid("flushIntervalMs must be at least 1"));
        }
        if redis.is_none() && sql.is_none() {
            return Err(Error::Config(
                "a store needs a Redis or a SQL tier (openAuthStore() gives the embedded SQLite default)".into(),
            ));
        }
        let cache =
            (options.cache_max_bytes > 0).then(|| Arc::new(KeyCache::new(options.cache_max_bytes)));
        if let (Some(r), Some(c)) = (&redis, &cache) {
            r.register_cache(c);
        }
        let timeout = |d: Option<Duration>| d.unwrap_or(Duration::ZERO);
        let deadline = (timeout(sql.as_ref().map(|s| s.timeout()))
            + timeout(redis.as_ref().map(|r| r.timeout())))
            * 2;
        let lanes = sql.as_ref().map_or(REDIS_LANES, |s| s.parallel_commits());
        let tiers = Arc::new(Tiers {
            cache,
            redis,
            sql,
            events: Arc::new(Events::default()),
            counters: Counters::default(),
            leases: Leases::default(),
            leases_on: options.leases,
        });
        let pipeline = Arc::new(Pipeline {
            tiers: tiers.clone(),
            lanes: Mutex::new(Vec::new()),
            tasks: Mutex::new(Vec::new()),
            slots: Mutex::new(HashMap::new()),
            deadline,
            lane_count: Mutex::new(lanes),
        });
        Ok(AuthStore {
            pipeline,
            closed: AtomicBool::new(false),
            write_behind: options.write_behind,
            compact: options.compact_values,
            keyring: options.encryption,
            behind: Mutex::new(HashSet::new()),
            flusher: Mutex::new(None),
        })
    }

    fn tiers(&self) -> &Tiers {
        &self.pipeline.tiers
    }

    /// Stored bytes from Redis or SQL as the JSON text callers read: opened when sealed
    /// (`ERR_DECRYPT` when they do not open), then expanded.
    fn reveal(&self, sid: &SessionId, record: Record<'_>, stored: Value) -> Result<Value> {
        expand(crypto::reveal(
            self.keyring.as_deref(),
            sid,
            record,
            stored,
        )?)
    }

    /// Where background failures go (default: stderr). The Redis connection's too.
    pub fn set_event_sink(&self, sink: Option<Arc<dyn EventSink>>) {
        self.tiers().events.set_sink(sink.clone());
        if let Some(r) = &self.tiers().redis {
            r.events.set_sink(sink);
        }
    }

    pub fn events(&self) -> &Arc<Events> {
        &self.tiers().events
    }

    pub(crate) fn leases(&self) -> &Leases {
        &self.tiers().leases
    }

    pub(crate) fn leases_on(&self) -> bool {
        self.tiers().leases_on
    }

    /// Drops what this process holds of a session (cache, what it knew of Redis): the next use
    /// reads and checks every tier afresh.
    pub(crate) fn forget_session(&self, sid: &SessionId) {
        if let Some(cache) = &self.tiers().cache {
            cache.remove_session(sid, false);
        }
        self.pipeline.slot(sid).invalidate();
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        let t = self.tiers();
        let tier_closed = t.redis.as_ref().is_some_and(|r| r.is_closed())
            || t.sql.as_ref().is_some_and(|s| s.is_closed());
        if self.closed.load(Ordering::Acquire) || tier_closed {
            return Err(Error::StoreClosed);
        }
        Ok(())
    }

    /// Records an access for the shared LRU of the memory manager.
    fn touch(&self, sid: &SessionId) {
        if let Some(redis) = &self.tiers().redis {
            redis.track(sid, None);
            redis.start_tracking();
        }
    }

    pub fn redis(&self) -> Option<&Arc<RedisTier>> {
        self.tiers().redis.as_ref()
    }

    pub fn sql(&self) -> Option<&Arc<SqlStore>> {
        self.tiers().sql.as_ref()
    }

    /// The creds of a session, as JSON text (the cache holds the expanded form, so a hit costs no
    /// decoding; values from Redis and SQL are expanded as they arrive).
    pub async fn get_creds(&self, sid: &SessionId) -> Result<Option<Value>> {
        self.check_open()?;
        self.touch(sid);
        let t = self.tiers();
        let cache = t.cache_for(sid);
        if let Some(v) = cache.and_then(|c| c.get_creds(sid)) {
            return Ok(Some(v));
        }
        let epoch = cache.map(|c| c.epoch());
        let mut found: Option<Value> = None;
        let mut warm_gen = None;
        if let Some(redis) = &t.redis {
            let slot = self.pipeline.session(sid).await?;
            let (rec, meta) = redis.get_creds(sid).await?;
            if meta.ver < slot.floor() {
                self.pipeline.redis_behind(sid, &slot).await?;
            } else {
                // what this process has seen Redis hold: it must never go below that again
                slot.raise_floor(meta.ver);
                t.counters.redis(rec.is_some() as usize, 1);
                match rec {
                    Some(Opened { value: Some(v), .. }) => found = Some(v),
                    Some(Opened { value: None, .. }) => return Ok(None),
                    None => warm_gen = Some(meta.gen),
                }
            }
        }
        if found.is_none() {
            if let Some(sql) = &t.sql {
                let row = sql.get_creds(sid).await?;
                t.counters.sql(row.is_some() as usize, 1);
                if let Some((version, v)) = row {
                    if let (Some(redis), Some(gen)) = (&t.redis, &warm_gen) {
                        if let Err(e) = redis.warm_creds(sid, version, &v, gen).await {
                            t.events.warn(
                                e.code(),
                                &format!("could not warm Redis with creds read from SQL: {e}"),
                            );
                        }
                    }
                    found = Some(v);
                }
            }
        }
        let found = found
            .map(|v| self.reveal(sid, Record::Creds, v))
            .transpose()?;
        if let (Some(cache), Some(epoch), Some(v)) = (cache, epoch, &found) {
            cache.fill_creds(epoch, sid, v);
        }
        Ok(found)
    }

    /// Answers from the in-process cache alone, without I/O or an async hop: `Some` only when
    /// every id is cached (callers fall back to [`Self::get_keys`]).
    pub fn get_keys_cached(
        &self,
        sid: &SessionId,
        kind: &str,
        ids: &[String],
    ) -> Result<Option<Vec<Value>>> {
        self.check_open()?;
        ident::validate_type(kind)?;
        let t = self.tiers();
        let Some(cache) = t.cache_for(sid) else {
            return Ok(None);
        };
        let Some(found) = cache.get_all(sid, kind, ids) else {
            return Ok(None);
        };
        if let Some(redis) = &t.redis {
            redis.track(sid, None);
        }
        Ok(Some(found))
    }

    /// Values of `ids`, aligned with `ids` (`None` where a record does not exist), as JSON text
    /// (expanded from the stored form as they arrive from Redis or SQL; the cache holds them
    /// expanded).
    pub async fn get_keys(
        &self,
        sid: &SessionId,
        kind: &str,
        ids: &[String],
    ) -> Result<Vec<Option<Value>>> {
        self.check_open()?;
        ident::validate_type(kind)?;
        for id in ids {
            ident::validate_key_id(id)?;
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.touch(sid);
        let t = self.tiers();
        let cache = t.cache_for(sid);
        let mut out: Vec<Option<Value>> = match cache {
            Some(c) => c.get_keys(sid, kind, ids),
            None => vec![None; ids.len()],
        };
        let epoch = cache.map(|c| c.epoch());
        let mut todo: Vec<usize> = (0..ids.len()).filter(|&i| out[i].is_none()).collect();
        if todo.is_empty() {
            return Ok(out);
        }
        let mut filled: Vec<usize> = Vec::new();
        let mut warm_gen = None;
        if let Some(redis) = &t.redis {
            let slot = self.pipeline.session(sid).await?;
            let want: Vec<String> = todo.iter().map(|&i| ids[i].clone()).collect();
            let (got, meta) = redis.get_keys(sid, kind, &want).await?;
            if meta.ver < slot.floor() {
                // Redis lost writes since we last looked: rebuild it, read everything from SQL
                self.pipeline.redis_behind(sid, &slot).await?;
            } else {
                slot.raise_floor(meta.ver);
                let mut missing = Vec::new();
                let asked = todo.len();
                for (&i, rec) in todo.iter().zip(got) {
                    match rec {
                        Some(Opened { value: Some(v), .. }) => {
                            let record = Record::Key { kind, id: &ids[i] };
                            out[i] = Some(self.reveal(sid, record, v)?);
                            filled.push(i);
                        }
                        // deleted in Redis only (write-behind): SQL's copy is older
                        Some(Opened { value: None, .. }) => {}
                        None => missing.push(i),
                    }
                }
                t.counters.redis(asked - missing.len(), asked);
                todo = missing;
                warm_gen = Some(meta.gen);
            }
        }
        if !todo.is_empty() {
            if let Some(sql) = &t.sql {
                let want: Vec<String> = todo.iter().map(|&i| ids[i].clone()).collect();
                let rows = sql.get_keys(sid, kind, &want).await?;
                t.counters.sql(rows.len(), todo.len());
                if !rows.is_empty() {
                    let by_id: HashMap<&str, &Value> =
                        rows.iter().map(|r| (r.id.as_str(), &r.value)).collect();
                    for &i in &todo {
                        if let Some(v) = by_id.get(ids[i].as_str()) {
                            let record = Record::Key { kind, id: &ids[i] };
                            out[i] = Some(self.reveal(sid, record, (*v).clone())?);
                            filled.push(i);
                        }
                    }
                    if let (Some(redis), Some(gen)) = (&t.redis, &warm_gen) {
                        let found: Vec<(&str, u64, &Value)> = rows
                            .iter()
                            .map(|r| (r.id.as_str(), r.version, &r.value))
                            .collect();
                        if let Err(e) = redis.warm_keys(sid, kind, &found, gen).await {
                            t.events.warn(
                                e.code(),
                                &format!("could not warm Redis with keys read from SQL: {e}"),
                            );
                        }
                    }
                }
            }
        }
        if let (Some(cache), Some(epoch)) = (cache, epoch) {
            cache.fill_keys(
                epoch,
                sid,
                kind,
                filled
                    .iter()
                    .filter_map(|&i| out[i].as_ref().map(|v| (ids[i].as_str(), v))),
            );
        }
        Ok(out)
    }

    /// Writes a batch: atomically in each tier, in the session's one order (see the module docs).
    /// Resolves with the version the write got.
    pub async fn write(
        &self,
        sid: &SessionId,
        batch: WriteBatch,
        opts: &WriteOptions,
    ) -> Result<u64> {
        let ticket = self.ticket(sid);
        self.write_in_turn(sid, batch, opts, ticket).await
    }

    /// Takes the session's next place in call order (see [`Ticket`]): a synchronous call, so a
    /// binding can take it when JavaScript calls, before any async hop could reorder calls.
    pub fn ticket(&self, sid: &SessionId) -> Ticket {
        let slot = self.pipeline.slot(sid);
        let n = slot.tickets.fetch_add(1, Ordering::AcqRel);
        Ticket {
            slot,
            n,
            ended: false,
        }
    }

    /// [`Self::write`] at the place `ticket` holds in the session's call order.
    pub async fn write_in_turn(
        &self,
        sid: &SessionId,
        batch: WriteBatch,
        opts: &WriteOptions,
        ticket: Ticket,
    ) -> Result<u64> {
        self.write_fenced(sid, batch, opts, None, ticket).await
    }

    /// [`Self::write_in_turn`] carrying `fence` (taken earlier) when given.
    async fn write_fenced(
        &self,
        sid: &SessionId,
        mut batch: WriteBatch,
        opts: &WriteOptions,
        fence: Option<Fence>,
        mut ticket: Ticket,
    ) -> Result<u64> {
        self.check_open()?;
        batch.validate()?;
        if batch.is_empty() {
            return Ok(0);
        }
        let t = self.tiers();
        // Without Redis there is nowhere else to write: the SQL tier is always written then.
        // Write-behind leaves SQL to the flusher.
        let to_sql = t.sql.is_some()
            && (t.redis.is_none() || (opts.sync_to_database && self.write_behind.is_none()));
        if opts.ttl.is_some() && t.redis.is_some() && !to_sql {
            return Err(Error::invalid(
                "ttl on a write that goes to Redis only would expire the only copy of the keys; \
                 write to the database too (syncToDatabase, write-through) or drop the ttl",
            ));
        }
        // the tiers get the stored forms, the cache the JSON text callers read
        let plain = t.cache.is_some().then(|| batch.clone());
        let batch = store_forms(batch, self.compact, sid, self.keyring.clone()).await?;
        let redis = t.redis.as_ref().map(|_| match (&t.sql, to_sql) {
            (Some(_), true) => Durability::Durable,
            (Some(_), false) => Durability::RedisOnly,
            (None, _) => Durability::NoSql,
        });
        if redis == Some(Durability::RedisOnly) && self.write_behind.is_some() {
            self.behind.lock().insert(sid.to_string());
            self.start_flusher();
        }
        let fence = match fence {
            Some(f) => f,
            None => self.fence(sid, opts.force).await?,
        };
        let slot = self.pipeline.session(sid).await?;
        self.touch(sid);
        let job = WriteJob {
            batch,
            epoch: fence.epoch,
            plain,
            to_sql,
            redis,
            ttl: opts.ttl,
        };
        let r = self
            .pipeline
            .submit_in_turn(sid, slot, Op::Write(Box::new(job)), &mut ticket)
            .await;
        if fence.release {
            self.release_lease(sid).await?;
        }
        r
    }

    /// Re-seals every record of a session (its creds and every key) under the current
    /// encryption key, through the normal write path: one atomic write at the session's next
    /// version, in its call order. Writes called before it land first (and are what it
    /// rewrites); writes called after it wait until it is queued. Plain records (written before
    /// encryption was turned on) are sealed too. Once every session was rekeyed, `previousKeys`
    /// can be dropped. The write carries the lease epoch taken before the records are read, so a
    /// process that took the session meanwhile fences it instead of being rolled back.
    pub async fn rekey_session(&self, sid: &SessionId, force: bool) -> Result<RekeyReport> {
        self.check_open()?;
        if self.keyring.is_none() {
            return Err(Error::Config(
                "rekey needs the store's encryption option (the key to seal under)".into(),
            ));
        }
        let ticket = self.ticket(sid);
        ticket.slot.wait_turn(ticket.n).await;
        let fence = self.fence(sid, force).await?;
        let r = self.rekey_in_turn(sid, fence, ticket).await;
        if fence.release {
            self.release_lease(sid).await?;
        }
        r
    }

    async fn rekey_in_turn(
        &self,
        sid: &SessionId,
        fence: Fence,
        ticket: Ticket,
    ) -> Result<RekeyReport> {
        // every write queued before this one has gone through both stages
        let slot = self.pipeline.session(sid).await?;
        self.pipeline.submit(sid, slot, Op::Barrier).await?;
        let kinds = self.list_types(sid).await?;
        let mut batch = WriteBatch {
            creds: self.get_creds(sid).await?,
            keys: Vec::new(),
        };
        let mut report = RekeyReport {
            creds: batch.creds.is_some(),
            ..Default::default()
        };
        for kind in kinds {
            let ids = self.list_ids(sid, &kind).await?;
            let mut count = 0;
            for chunk in ids.chunks(REKEY_CHUNK) {
                let got = self.get_keys(sid, &kind, chunk).await?;
                for (id, value) in chunk.iter().zip(got) {
                    if let Some(v) = value {
                        count += 1;
                        batch.keys.push(KeyWrite {
                            kind: kind.clone(),
                            id: id.clone(),
                            value: Some(v),
                        });
                    }
                }
            }
            if count > 0 {
                report.types.push((kind, count));
            }
        }
        if batch.is_empty() {
            return Ok(report);
        }
        let unfenced = Fence {
            release: false,
            ..fence
        };
        report.version = self
            .write_fenced(sid, batch, &WriteOptions::default(), Some(unfenced), ticket)
            .await?;
        Ok(report)
    }

    /// Copies a session's records that were written to Redis only (`syncToDatabase: false`,
    /// write-behind) to SQL and marks them clean, so the memory manager may evict the session.
    /// Returns how many records were flushed. A record written again meanwhile stays dirty for
    /// the next flush.
    pub async fn flush(&self, sid: &SessionId) -> Result<u64> {
        self.check_open()?;
        let t = self.tiers();
        if t.redis.is_none() || t.sql.is_none() {
            return Ok(0);
        }
        let slot = self.pipeline.session(sid).await?;
        self.pipeline.submit(sid, slot, Op::Flush).await
    }

    /// Flushes every session of the dirty index (any process's: what a crashed write-behind
    /// process left), each once. Returns the records flushed; if some sessions failed, the
    /// others are still flushed and the first failure is returned (every one is reported).
    pub async fn flush_all(&self) -> Result<u64> {
        self.check_open()?;
        self.pipeline.flush_pass().await
    }

    /// Starts the write-behind flusher (idempotent; needs the async runtime).
    fn start_flusher(&self) {
        let Some(every) = self.write_behind else {
            return;
        };
        let mut slot = self.flusher.lock();
        if slot.is_some() {
            return;
        }
        let pipeline = self.pipeline.clone();
        *slot = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if pipeline.tiers_closed() {
                    return;
                }
                // failures were reported one by one already
                let _ = pipeline.flush_pass().await;
            }
        }));
    }

    /// Removes every key of a session; its creds too unless `keep_creds`. Nothing written
    /// before can come back: the clear has a version like any write.
    pub async fn delete_session(&self, sid: &SessionId, keep_creds: bool) -> Result<()> {
        let ticket = self.ticket(sid);
        self.delete_session_in_turn(sid, keep_creds, false, ticket)
            .await
    }

    /// [`Self::delete_session`] at the place `ticket` holds in the session's call order.
    pub async fn delete_session_in_turn(
        &self,
        sid: &SessionId,
        keep_creds: bool,
        force: bool,
        mut ticket: Ticket,
    ) -> Result<()> {
        self.check_open()?;
        let fence = self.fence(sid, force).await?;
        let slot = self.pipeline.session(sid).await?;
        let op = Op::Clear {
            keep_creds,
            epoch: fence.epoch,
        };
        let r = self
            .pipeline
            .submit_in_turn(sid, slot, op, &mut ticket)
            .await;
        if fence.release {
            self.release_lease(sid).await?;
        }
        r.map(|_| ())
    }

    /// Removes a deleted session's last traces (its SQL tombstone row and Redis meta), for tools
    /// and tests that own the whole deployment.
    pub async fn purge_session(&self, sid: &SessionId) -> Result<()> {
        self.delete_session(sid, false).await?;
        let t = self.tiers();
        if let Some(sql) = &t.sql {
            sql.purge(sid).await?;
        }
        if let Some(redis) = &t.redis {
            redis.purge(sid).await?;
        }
        self.pipeline.slots.lock().remove(&**sid);
        Ok(())
    }

    /// Records and bytes per type of one session, from the durable tier when there is one.
    pub async fn summary(&self, sid: &SessionId) -> Result<Vec<TypeSummary>> {
        self.check_open()?;
        let t = self.tiers();
        match (&t.sql, &t.redis) {
            (Some(sql), _) => sql.summary(sid).await,
            (None, Some(redis)) => redis.summary(sid).await,
            (None, None) => Ok(Vec::new()),
        }
    }

    /// Every key type the session has records of in either tier (Redis may hold types SQL has
    /// not got yet: write-behind, `syncToDatabase: false`), in name order.
    pub async fn list_types(&self, sid: &SessionId) -> Result<Vec<String>> {
        self.check_open()?;
        let t = self.tiers();
        let mut kinds: std::collections::BTreeSet<String> = Default::default();
        if let Some(sql) = &t.sql {
            kinds.extend(sql.summary(sid).await?.into_iter().map(|s| s.kind));
        }
        if let Some(redis) = &t.redis {
            kinds.extend(redis.types(sid).await?);
        }
        Ok(kinds.into_iter().collect())
    }

    /// Every session either tier knows, in id order: SQL's rows (deleted sessions keep one,
    /// without creds) and the sessions Redis holds a meta hash for.
    pub async fn list_sessions(&self) -> Result<Vec<SessionInfo>> {
        self.check_open()?;
        let t = self.tiers();
        let mut out: BTreeMap<String, SessionInfo> = BTreeMap::new();
        if let Some(sql) = &t.sql {
            for row in sql.list_sessions().await? {
                out.insert(
                    row.id.clone(),
                    SessionInfo {
                        id: row.id,
                        in_sql: true,
                        in_redis: false,
                        sql_has_creds: row.has_creds,
                        version: row.version,
                        updated_at_ms: Some(row.updated_at_ms),
                    },
                );
            }
        }
        if let Some(redis) = &t.redis {
            for id in redis.list_sessions().await? {
                out.entry(id.clone())
                    .or_insert_with(|| SessionInfo {
                        id,
                        in_sql: false,
                        in_redis: false,
                        sql_has_creds: false,
                        version: 0,
                        updated_at_ms: None,
                    })
                    .in_redis = true;
            }
        }
        Ok(out.into_values().collect())
    }

    /// Every id of one type in one session: what SQL and Redis hold, less what Redis holds
    /// deleted but not yet flushed.
    pub async fn list_ids(&self, sid: &SessionId, kind: &str) -> Result<Vec<String>> {
        self.check_open()?;
        ident::validate_type(kind)?;
        let t = self.tiers();
        let mut ids = Vec::new();
        let mut dead = HashSet::new();
        if let Some(redis) = &t.redis {
            self.pipeline.session(sid).await?;
            let (live, tombs) = redis.list_ids(sid, kind).await?;
            ids.extend(live);
            dead.extend(tombs);
        }
        if let Some(sql) = &t.sql {
            ids.extend(sql.list_ids(sid, kind).await?);
        }
        ids.retain(|id| !dead.contains(id));
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    pub fn stats(&self) -> StoreStats {
        let t = self.tiers();
        let c = &t.counters;
        let (transactions, writes) = t.sql.as_ref().map_or((0, 0), |s| s.group_stats());
        let (warnings, errors) = t.events.counts();
        StoreStats {
            cache: t.cache.as_deref().map(KeyCache::stats),
            redis_hits: c.redis_hits.load(Ordering::Relaxed),
            redis_misses: c.redis_misses.load(Ordering::Relaxed),
            sql_hits: c.sql_hits.load(Ordering::Relaxed),
            sql_misses: c.sql_misses.load(Ordering::Relaxed),
            redis_rebuilds: c.rebuilds.load(Ordering::Relaxed),
            sql_transactions: transactions,
            sql_writes: writes,
            warnings,
            errors,
            flush_dirty_sessions: c.flush_dirty.load(Ordering::Relaxed),
            last_flush_ms: Some(c.last_flush_ms.load(Ordering::Relaxed)).filter(|ms| *ms > 0),
        }
    }

    /// Closes the store: flushes what this process wrote behind, lets the lanes finish every
    /// queued write (SQL, then Redis), then closes SQL, then Redis. Later calls fail with
    /// `ERR_STORE_CLOSED`.
    pub async fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let flusher = self.flusher.lock().take();
        if let Some(task) = flusher {
            task.abort();
        }
        let t = self.tiers();
        let pending: Vec<String> = self.behind.lock().drain().collect();
        for name in pending {
            let Ok(sid) = SessionId::new(name) else {
                continue;
            };
            let slot = self.pipeline.slot(&sid);
            if let Err(e) = self.pipeline.submit(&sid, slot, Op::Flush).await {
                t.events.error(
                    e.code(),
                    &format!("could not flush a written-behind session on close; it stays marked dirty in Redis for any process's flushAll(): {e}"),
                );
            }
        }
        // the lanes end once their queues are drained
        *self.pipeline.lane_count.lock() = 0;
        self.pipeline.lanes.lock().clear();
        let tasks = std::mem::take(&mut *self.pipeline.tasks.lock());
        for task in tasks {
            if tokio::time::timeout(self.pipeline.deadline * 2, task)
                .await
                .is_err()
            {
                t.events.error(
                    "ERR_TIMEOUT",
                    "a write lane did not finish its queue in time",
                );
            }
        }
        // the writes landed under the leases: now let the next owners in
        for name in self.leases().sessions() {
            if let Ok(sid) = SessionId::new(name) {
                if let Err(e) = self.release_lease(&sid).await {
                    t.events.warn(
                        e.code(),
                        &format!("could not release a session lease on close (it expires by itself): {e}"),
                    );
                }
            }
        }
        if let Some(cache) = &t.cache {
            cache.clear();
        }
        if let Some(sql) = &t.sql {
            sql.close().await;
        }
        if let Some(redis) = &t.redis {
            redis.close().await;
        }
    }
}

impl Pipeline {
    fn tiers_closed(&self) -> bool {
        self.tiers.redis.as_ref().is_some_and(|r| r.is_closed())
            || self.tiers.sql.as_ref().is_some_and(|s| s.is_closed())
    }

    fn slot(&self, sid: &SessionId) -> Arc<Slot> {
        let mut slots = self.slots.lock();
        if let Some(s) = slots.get(&**sid) {
            return s.clone();
        }
        let s = Arc::new(Slot::default());
        slots.insert(sid.to_string(), s.clone());
        s
    }

    /// The session's slot, validated: its version counter seeded from what the tiers hold, its
    /// Redis copy checked against SQL (and rebuilt when behind).
    async fn session(&self, sid: &SessionId) -> Result<Arc<Slot>> {
        let slot = self.slot(sid);
        let connection = self.tiers.redis.as_ref().map_or(0, |r| r.reconnects());
        if slot.validated(connection) {
            return Ok(slot);
        }
        let gate = slot.clone();
        let _one = gate.gate.lock().await;
        if slot.validated(connection) {
            return Ok(slot);
        }
        let t = &self.tiers;
        let (rv, sv) = match (&t.redis, &t.sql) {
            (Some(r), Some(s)) => {
                let (meta, sv) = tokio::join!(r.meta(sid), s.session_version(sid));
                (meta?.ver, sv?)
            }
            (Some(r), None) => (r.meta(sid).await?.ver, 0),
            (None, Some(s)) => (0, s.session_version(sid).await?),
            (None, None) => (0, 0),
        };
        let mut floor = rv;
        if t.redis.is_some() && t.sql.is_some() && (rv < sv || slot.is_suspect()) {
            self.submit(sid, slot.clone(), Op::Rebuild).await?;
            floor = sv;
        }
        let mut s = slot.state.lock();
        s.last = s.last.max(rv).max(sv);
        s.floor = s.floor.max(floor);
        s.validated = true;
        s.connection = connection;
        drop(s);
        Ok(slot)
    }

    /// A read found the session's Redis copy below the floor: rebuild it (through the lane) so
    /// the next reads come from SQL.
    async fn redis_behind(&self, sid: &SessionId, slot: &Arc<Slot>) -> Result<()> {
        self.tiers.events.warn(
            "WARN_REDIS_BEHIND",
            "a session's Redis copy is older than what this process wrote or read (Redis restarted, was restored from an older snapshot or failed over): rebuilding it from SQL",
        );
        slot.invalidate();
        self.session(sid).await.map(|_| ())
    }

    fn lane(&self, sid: &SessionId) -> Result<mpsc::Sender<Job>> {
        let mut lanes = self.lanes.lock();
        if lanes.is_empty() {
            // first use: start the lanes (in the async runtime, which the constructor may lack)
            let count = std::mem::take(&mut *self.lane_count.lock());
            if count == 0 {
                return Err(Error::StoreClosed);
            }
            let mut tasks = self.tasks.lock();
            for lane in 0..count {
                let (tx, rx) = mpsc::channel(LANE_QUEUE);
                let (tx2, rx2) = mpsc::channel(4);
                lanes.push(tx);
                tasks.push(tokio::spawn(commit_stage(
                    self.tiers.clone(),
                    lane,
                    rx,
                    tx2,
                )));
                tasks.push(tokio::spawn(apply_stage(self.tiers.clone(), rx2)));
            }
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&**sid, &mut h);
        Ok(lanes[std::hash::Hasher::finish(&h) as usize % lanes.len()].clone())
    }

    /// Queues a job on the session's lane and waits for its answer. A caller that gives up
    /// (deadline) leaves a job the lane skips if it has not started it.
    async fn submit(&self, sid: &SessionId, slot: Arc<Slot>, op: Op) -> Result<u64> {
        self.submit_with(sid, slot, op, None).await
    }

    /// [`Self::submit`] once it is `ticket`'s turn; the turn passes on once the job is queued.
    async fn submit_in_turn(
        &self,
        sid: &SessionId,
        slot: Arc<Slot>,
        op: Op,
        ticket: &mut Ticket,
    ) -> Result<u64> {
        self.submit_with(sid, slot, op, Some(ticket)).await
    }

    async fn submit_with(
        &self,
        sid: &SessionId,
        slot: Arc<Slot>,
        op: Op,
        ticket: Option<&mut Ticket>,
    ) -> Result<u64> {
        let sender = self.lane(sid)?;
        let (done, answer) = oneshot::channel();
        let job = Job {
            sid: sid.clone(),
            slot,
            op,
            done,
        };
        let waited = tokio::time::timeout(self.deadline, async move {
            if let Some(t) = ticket {
                t.slot.wait_turn(t.n).await;
                let sent = sender.send(job).await;
                t.end();
                sent.map_err(|_| Error::StoreClosed)?;
            } else {
                sender.send(job).await.map_err(|_| Error::StoreClosed)?;
            }
            answer.await.map_err(|_| Error::StoreClosed)?
        })
        .await;
        waited.unwrap_or_else(|_| {
            Err(Error::Timeout {
                tier: if self.tiers.sql.is_some() {
                    Tier::Database
                } else {
                    Tier::Redis
                },
                op: "write",
                millis: self.deadline.as_millis(),
            })
        })
    }

    /// Flushes every session of the dirty index once; reports each failure, returns the first.
    async fn flush_pass(&self) -> Result<u64> {
        let t = &self.tiers;
        let (Some(redis), Some(_)) = (&t.redis, &t.sql) else {
            return Ok(0);
        };
        let sessions = redis.dirty_sessions().await.inspect_err(|e| {
            t.events.warn(
                e.code(),
                &format!("write-behind flush could not read the dirty index: {e}"),
            )
        })?;
        t.counters
            .flush_dirty
            .store(sessions.len() as u64, Ordering::Relaxed);
        let mut total = 0;
        let mut first_error = None;
        for chunk in sessions.chunks(FLUSH_PARALLEL) {
            let flushes = chunk.iter().filter_map(|name| {
                let sid = SessionId::new(name.clone()).ok()?;
                let slot = self.slot(&sid);
                // a flush needs no validation: it writes SQL only over older versions
                Some(async move { self.submit(&sid, slot, Op::Flush).await })
            });
            for r in futures::future::join_all(flushes).await {
                match r {
                    Ok(n) => total += n,
                    Err(e) => {
                        t.events.warn(
                            e.code(),
                            &format!("write-behind flush of a session failed (it stays dirty for the next pass): {e}"),
                        );
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        if first_error.is_none() {
            t.counters
                .last_flush_ms
                .store(crate::sql::now_ms().max(0) as u64, Ordering::Relaxed);
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }
}

/// The lane's first stage: groups queued writes, gives each the session's next version, commits
/// their SQL part, hands the survivors to the second stage in order.
async fn commit_stage(
    tiers: Arc<Tiers>,
    lane: usize,
    mut rx: mpsc::Receiver<Job>,
    next: mpsc::Sender<Vec<(Job, u64)>>,
) {
    let mut held: Option<Job> = None;
    loop {
        let first = match held.take() {
            Some(j) => j,
            None => match rx.recv().await {
                Some(j) => j,
                None => break,
            },
        };
        let mut group = vec![first];
        if group[0].write().is_some() {
            let mut bytes = group[0].write().map_or(0, |w| w.batch.byte_size());
            while group.len() < MAX_GROUP_JOBS && bytes < MAX_GROUP_BYTES {
                match rx.try_recv() {
                    Ok(j) if j.write().is_some() => {
                        bytes += j.write().map_or(0, |w| w.batch.byte_size());
                        group.push(j);
                    }
                    Ok(j) => {
                        held = Some(j);
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        // callers that gave up: skip what has not started
        group.retain(|j| !j.done.is_closed());
        if group.is_empty() {
            continue;
        }
        let versioned: Vec<(Job, u64)> = group
            .into_iter()
            .map(|j| {
                let v = match j.op {
                    Op::Write(_) | Op::Clear { .. } => j.slot.next_version(),
                    Op::Flush | Op::Rebuild | Op::Barrier => 0,
                };
                (j, v)
            })
            .collect();
        let survivors = commit_sql(&tiers, lane, versioned).await;
        if !survivors.is_empty() && next.send(survivors).await.is_err() {
            break;
        }
    }
}

/// Commits the SQL part of a group; answers the jobs that failed, returns the others.
async fn commit_sql(tiers: &Tiers, lane: usize, group: Vec<(Job, u64)>) -> Vec<(Job, u64)> {
    let Some(sql) = &tiers.sql else {
        return group;
    };
    if let [(job, v)] = group.as_slice() {
        if let Op::Clear { keep_creds, epoch } = job.op {
            let r = sql.clear(&job.sid, *v, keep_creds, epoch).await;
            return match r {
                Ok(true) => group,
                Ok(false) => {
                    let e = tiers.fenced(&job.sid);
                    group
                        .into_iter()
                        .for_each(|(j, _)| j.answer(Err(e.clone())));
                    Vec::new()
                }
                Err(e) => {
                    group
                        .into_iter()
                        .for_each(|(j, _)| j.answer(Err(e.clone())));
                    Vec::new()
                }
            };
        }
    }
    let writes: Vec<VersionedWrite<'_>> = group
        .iter()
        .filter_map(|(j, v)| {
            j.write().filter(|w| w.to_sql).map(|w| VersionedWrite {
                sid: &j.sid,
                batch: &w.batch,
                version: *v,
                epoch: w.epoch,
            })
        })
        .collect();
    if writes.is_empty() {
        return group;
    }
    let mut fenced: Vec<String> = Vec::new();
    let failed: Option<(Error, bool)> = match sql.commit_in_lane(lane, &writes).await {
        Ok(f) => {
            fenced = f;
            None
        }
        Err(ce) => Some((ce.error, ce.statement_level && writes.len() > 1)),
    };
    drop(writes);
    match failed {
        None if fenced.is_empty() => group,
        None => {
            let mut out = Vec::new();
            for (j, v) in group {
                if j.write().is_some_and(|w| w.to_sql) && fenced.iter().any(|f| *f == *j.sid) {
                    let e = tiers.fenced(&j.sid);
                    j.answer(Err(e));
                } else {
                    out.push((j, v));
                }
            }
            out
        }
        // a connection-level failure would fail every write the same way: fail them all now
        Some((e, false)) => {
            let mut out = Vec::new();
            for (j, v) in group {
                if j.write().is_some_and(|w| w.to_sql) {
                    j.answer(Err(e.clone()));
                } else {
                    out.push((j, v));
                }
            }
            out
        }
        // one bad write must not fail the others: each alone
        Some((_, true)) => {
            let mut out = Vec::new();
            for (j, v) in group {
                let alone = j.write().filter(|w| w.to_sql).map(|w| VersionedWrite {
                    sid: &j.sid,
                    batch: &w.batch,
                    version: v,
                    epoch: w.epoch,
                });
                let r = match alone {
                    Some(w) => match sql.commit_in_lane(lane, &[w]).await {
                        Ok(f) if f.is_empty() => Ok(()),
                        Ok(_) => Err(tiers.fenced(&j.sid)),
                        Err(ce) => Err(ce.error),
                    },
                    None => Ok(()),
                };
                match r {
                    Ok(()) => out.push((j, v)),
                    Err(e) => j.answer(Err(e)),
                }
            }
            out
        }
    }
}

/// The lane's second stage: applies each job's Redis part and the cache in commit order, then
/// answers.
async fn apply_stage(tiers: Arc<Tiers>, mut rx: mpsc::Receiver<Vec<(Job, u64)>>) {
    while let Some(group) = rx.recv().await {
        if group.iter().all(|(j, _)| j.write().is_some()) {
            apply_writes(&tiers, group).await;
            continue;
        }
        for (job, v) in group {
            let r = match &job.op {
                Op::Write(_) => {
                    apply_writes(&tiers, vec![(job, v)]).await;
                    continue;
                }
                Op::Clear { keep_creds, epoch } => {
                    clear_tiers(&tiers, &job, v, *keep_creds, *epoch).await
                }
                Op::Flush => flush_session(&tiers, &job.sid).await,
                Op::Rebuild => rebuild(&tiers, &job.sid, &job.slot).await.map(|_| 0),
                Op::Barrier => Ok(0),
            };
            job.answer(r);
        }
    }
}

async fn clear_tiers(
    tiers: &Tiers,
    job: &Job,
    v: u64,
    keep_creds: bool,
    epoch: Option<u64>,
) -> Result<u64> {
    if let Some(redis) = &tiers.redis {
        match redis.clear(&job.sid, v, keep_creds, epoch).await {
            Ok(Applied::Fenced) => return Err(tiers.fenced(&job.sid)),
            Ok(_) => job.slot.raise_floor(v),
            Err(e) => {
                suspect(tiers, &job.slot);
                if let Some(cache) = &tiers.cache {
                    cache.remove_session(&job.sid, keep_creds);
                }
                return Err(e);
            }
        }
    }
    if let Some(cache) = &tiers.cache {
        cache.remove_session(&job.sid, keep_creds);
    }
    Ok(v)
}

/// Sends the Redis scripts of consecutive writes together (one pipelined burst, in order), then
/// settles each: cache, answer.
async fn apply_writes(tiers: &Tiers, group: Vec<(Job, u64)>) {
    // a session whose Redis step failed before is rebuilt from SQL before it gets more writes
    let mut unusable: HashMap<String, Error> = HashMap::new();
    if tiers.redis.is_some() {
        for (j, _) in &group {
            if j.slot.is_suspect() && !unusable.contains_key(&*j.sid) {
                if let Err(e) = rebuild(tiers, &j.sid, &j.slot).await {
                    unusable.insert(j.sid.to_string(), e);
                }
            }
        }
    }
    let results: Vec<Option<Result<Applied>>> = match &tiers.redis {
        None => group.iter().map(|_| None).collect(),
        Some(redis) => {
            let futs = group.iter().map(|(j, v)| {
                let w = j.write();
                let floor = j.slot.floor();
                let skip = unusable.get(&*j.sid).cloned();
                async move {
                    if let Some(e) = skip {
                        return Some(Err(e));
                    }
                    let w = w?;
                    let durability = w.redis?;
                    let stamp = WriteStamp {
                        version: *v,
                        floor,
                        epoch: w.epoch,
                    };
                    let r = redis
                        .write(&j.sid, &w.batch, stamp, w.ttl, durability)
                        .await;
                    if r.is_ok() && durability == Durability::RedisOnly {
                        if let Err(e) = redis.index_dirty_after_write(&j.sid).await {
                            return Some(Err(e));
                        }
                    }
                    Some(r)
                }
            });
            futures::future::join_all(futs).await
        }
    };
    for ((job, v), r) in group.into_iter().zip(results) {
        let Some(w) = job.write() else {
            continue;
        };
        let outcome = match r {
            None | Some(Ok(Applied::Yes)) => Ok(()),
            Some(Ok(Applied::Stale)) => recover_write(tiers, &job, v).await,
            Some(Ok(Applied::Fenced)) => Err(tiers.fenced(&job.sid)),
            Some(Ok(Applied::BelowClear)) => {
                job.slot.invalidate();
                Err(Error::SessionLocked(
                    "another process cleared this session after this write was versioned; the write is void"
                        .into(),
                ))
            }
            Some(Err(e)) => Err(e),
        };
        match outcome {
            Ok(()) => {
                if w.redis.is_some() {
                    job.slot.raise_floor(v);
                }
                if let (Some(cache), Some(plain)) = (&tiers.cache, &w.plain) {
                    cache.apply_write(&job.sid, plain.creds.as_ref(), &plain.keys);
                }
                job.answer(Ok(v));
            }
            Err(e) => {
                // SQL may hold the write and Redis lack it: rebuild Redis before its next use
                suspect(tiers, &job.slot);
                if let Some(cache) = &tiers.cache {
                    cache.invalidate(&job.sid, w.batch.creds.is_some(), &w.batch.keys);
                }
                job.answer(Err(e));
            }
        }
    }
}

/// A Redis step failed after the SQL commit: with SQL to rebuild from, rebuild before the next use;
/// without, just check Redis again.
fn suspect(tiers: &Tiers, slot: &Slot) {
    if tiers.sql.is_some() {
        slot.suspect();
    } else {
        slot.invalidate();
    }
}

/// A write script found the session's Redis copy behind: rebuild it from SQL, then apply the
/// write again if only Redis holds it.
async fn recover_write(tiers: &Tiers, job: &Job, v: u64) -> Result<()> {
    tiers.events.warn(
        "WARN_REDIS_BEHIND",
        "a session's Redis copy is older than what this process wrote (Redis restarted, was restored from an older snapshot or failed over): rebuilding it from SQL",
    );
    let floor = rebuild(tiers, &job.sid, &job.slot).await?;
    let (Some(redis), Some(w)) = (&tiers.redis, job.write()) else {
        return Ok(());
    };
    let Some(durability) = w.redis.filter(|d| *d != Durability::Durable) else {
        return Ok(()); // SQL holds it; reads now come from SQL
    };
    let stamp = WriteStamp {
        version: v,
        floor,
        epoch: w.epoch,
    };
    match redis
        .write(&job.sid, &w.batch, stamp, w.ttl, durability)
        .await?
    {
        Applied::Yes => {
            if durability == Durability::RedisOnly {
                redis.index_dirty_after_write(&job.sid).await?;
            }
            Ok(())
        }
        _ => Err(Error::Redis(
            "the session's Redis copy kept moving backwards while it was rebuilt".into(),
        )),
    }
}

/// Makes a session's Redis copy consistent with SQL again: flushes its dirty records (only over
/// older SQL rows), then drops everything else and sets its version to SQL's. Without SQL,
/// accepts what Redis has. Returns the new floor.
async fn rebuild(tiers: &Tiers, sid: &SessionId, slot: &Slot) -> Result<u64> {
    let Some(redis) = &tiers.redis else {
        return Ok(0);
    };
    let floor = match &tiers.sql {
        Some(sql) => {
            flush_session(tiers, sid).await?;
            let sv = sql.session_version(sid).await?;
            redis.rebuild(sid, sv).await?;
            tiers.counters.rebuilds.fetch_add(1, Ordering::Relaxed);
            // the cache stays: it holds what was acknowledged, or read after a check of Redis
            sv
        }
        None => {
            tiers.events.error(
                "ERR_REDIS",
                "a session's Redis copy lost writes and there is no SQL tier to rebuild it from",
            );
            redis.meta(sid).await?.ver
        }
    };
    let mut s = slot.state.lock();
    s.floor = floor;
    s.last = s.last.max(floor);
    s.suspect = false;
    Ok(floor)
}

/// Copies a session's dirty records from Redis to SQL (each at the version that wrote it, so
/// only over older rows) and clears their marks. A mark whose record Redis no longer holds
/// (expired, evicted by a Redis `maxmemory-policy`) is reported and dropped: SQL's older copy is
/// all that is left.
async fn flush_session(tiers: &Tiers, sid: &SessionId) -> Result<u64> {
    let (Some(redis), Some(sql)) = (&tiers.redis, &tiers.sql) else {
        return Ok(0);
    };
    let marks = redis.dirty_records(sid).await?;
    if marks.is_empty() {
        redis.unindex_if_clean(sid).await?;
        return Ok(0);
    }
    let mut by_version: BTreeMap<u64, WriteBatch> = BTreeMap::new();
    let mut done: Vec<(String, u64, bool)> = Vec::with_capacity(marks.len());
    let mut lost = 0u64;
    let mut by_type: BTreeMap<String, Vec<(String, String, u64)>> = BTreeMap::new();
    for (name, mark) in marks {
        if name == NOSQL_RECORD {
            continue; // written by a store without SQL: never flushed
        }
        if name == CREDS_RECORD {
            match redis.creds_record(sid).await? {
                Some(Opened {
                    version,
                    value: Some(c),
                }) if version >= mark => {
                    by_version.entry(version).or_default().creds = Some(c);
                    done.push((name, version, false));
                }
                _ => {
                    lost += 1;
                    done.push((name, mark, false));
                }
            }
            continue;
        }
        let Some((escaped, id)) = name.split_once('\0') else {
            continue;
        };
        let (escaped, id) = (escaped.to_string(), id.to_string());
        by_type
            .entry(escaped)
            .or_default()
            .push((id, name.clone(), mark));
    }
    for (escaped, entries) in by_type {
        let Some(kind) = ident::unescape(&escaped) else {
            continue;
        };
        let ids: Vec<String> = entries.iter().map(|(id, _, _)| id.clone()).collect();
        let records = redis.records(sid, &escaped, &ids).await?;
        for ((id, name, mark), rec) in entries.into_iter().zip(records) {
            match rec {
                // older than the mark: the dirty record was lost and an older copy warmed back
                Some(Opened { version, value }) if version >= mark => {
                    let tomb = value.is_none();
                    by_version.entry(version).or_default().keys.push(KeyWrite {
                        kind: kind.clone(),
                        id,
                        value,
                    });
                    done.push((name, version, tomb));
                }
                _ => {
                    lost += 1;
                    done.push((name, mark, false));
                }
            }
        }
    }
    if lost > 0 {
        tiers.events.warn(
            "WARN_RECORD_LOST",
            &format!("{lost} record(s) written to Redis only were gone from Redis before they were flushed (expired, or evicted by Redis' maxmemory-policy); SQL keeps its older copy"),
        );
    }
    let writes: Vec<VersionedWrite<'_>> = by_version
        .iter()
        .map(|(v, batch)| VersionedWrite {
            sid,
            batch,
            version: *v,
            epoch: None,
        })
        .collect();
    let flushed = by_version
        .values()
        .map(|b| b.keys.len() + b.creds.is_some() as usize)
        .sum::<usize>() as u64;
    if !writes.is_empty() {
        sql.commit(&writes).await.map_err(|ce| ce.error)?;
    }
    redis.clean(sid, &done).await?;
    redis.unindex_if_clean(sid).await?;
    Ok(flushed)
}

/// The stored form as the JSON text it encodes (compact values expanded, others as they are).
fn expand(v: Value) -> Result<Value> {
    match v.first() {
        Some(&codec::COMPACT) | Some(&codec::VERBATIM) => Ok(Value::from(codec::decode(&v)?)),
        _ => Ok(v),
    }
}

/// Values of a batch in their stored form (`codec::store_form`), then sealed when the store
/// encrypts (`crypto`: bound to the session, type and id); large batches off the async workers.
/// The one place values are sealed: every tier gets these bytes, and flushes, warms and
/// rebuilds move them between tiers as they are.
async fn store_forms(
    batch: WriteBatch,
    compact: bool,
    sid: &SessionId,
    keyring: Option<Arc<Keyring>>,
) -> Result<WriteBatch> {
    fn run(
        mut batch: WriteBatch,
        compact: bool,
        sid: &str,
        keyring: Option<&Keyring>,
    ) -> Result<WriteBatch> {
        let squeeze = |v: &mut Value, record: Record<'_>| -> Result<()> {
            if let Some(c) = codec::store_form(v, compact) {
                *v = Value::from(c);
            }
            if let Some(k) = keyring {
                *v = Value::from(k.seal(sid, record, v)?);
            }
            Ok(())
        };
        if let Some(c) = batch.creds.as_mut() {
            squeeze(c, Record::Creds)?;
        }
        for k in &mut batch.keys {
            if let Some(v) = k.value.as_mut() {
                squeeze(
                    v,
                    Record::Key {
                        kind: &k.kind,
                        id: &k.id,
                    },
                )?;
            }
        }
        Ok(batch)
    }
    if batch.keys.len() <= 64 || !(compact || keyring.is_some()) {
        return run(batch, compact, sid, keyring.as_deref());
    }
    let sid = sid.to_string();
    tokio::task::spawn_blocking(move || run(batch, compact, &sid, keyring.as_deref()))
        .await
        .map_err(|e| Error::invalid(format!("encoding the batch failed: {e}")))?
}
