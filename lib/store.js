'use strict'
// BaileysAuthStore: the seed's API over the native store. Values are encoded here (lib/codec.js);
// one native call per batch.

const { NativeAuthStore } = require('../binding.js')
const { BaileysRedisAdapter, BaileysOrmAdapter } = require('./adapters.js')
const { resolveBaileys } = require('./baileys.js')
const { RedisMemoryManager, managerOptions } = require('./memory-manager.js')
const { encodeValue, decodeValue, decodePacked } = require('./codec.js')
const { WaAuthStoreError, call, convertError, invalid, reading } = require('./errors.js')
const { checkSessionId, checkType, isPlainObject, wellFormed } = require('./validate.js')
const { SessionLease, leaseOptions } = require('./lease.js')
const { StoreMetrics } = require('./metrics.js')
const { Completions } = require('./completions.js')

const { KNOWN_TYPES } = require('./key-types.js')

function parseField(field) {
  if (field && typeof field === 'object' && typeof field.type === 'string' && typeof field.id === 'string') {
    return field
  }
  if (typeof field !== 'string') throw invalid('deleteKeys takes "type-id" strings or { type, id } objects')
  const type = KNOWN_TYPES.find((t) => field.startsWith(`${t}-`))
  if (!type) {
    throw invalid(`"${field}" does not start with a known key type; pass { type, id } for other types`)
  }
  return { type, id: field.slice(type.length + 1) }
}

/** Bytes of an AES-256 key. */
const KEY_BYTES = 32

/** Each store's encryption keys, out of sight of util.inspect and JSON.stringify. */
const ENCRYPTION = new WeakMap()

/** One encryption key (Buffer, Uint8Array, or base64 text) as a Buffer of our own; never quoted. */
function encryptionKey(value, name) {
  let bytes
  if (typeof value === 'string') {
    // 32 bytes are 43 base64 characters and one '=' (standard or URL alphabet)
    if (!/^(?:[A-Za-z0-9+/]{43}|[A-Za-z0-9_-]{43})=?$/.test(value.trim())) throw invalid(`${name} must be 32 bytes as a Buffer, a Uint8Array or base64 text (44 characters)`)
    bytes = Buffer.from(value.trim(), 'base64')
  } else if (value instanceof Uint8Array) {
    bytes = Buffer.from(value) // a copy: the caller may reuse theirs
  } else {
    throw invalid(`${name} must be 32 bytes as a Buffer, a Uint8Array or base64 text`)
  }
  if (bytes.length !== KEY_BYTES) throw invalid(`${name} must be ${KEY_BYTES} bytes (AES-256); it is ${bytes.length}`)
  return bytes
}

/** `encryption: { key, previousKeys? }`, checked: `{ key, previousKeys }` as Buffers, or null. */
function encryptionOptions(encryption) {
  if (encryption == null) return null
  if (!isPlainObject(encryption)) throw invalid('encryption must be an object { key, previousKeys? }')
  for (const k of Object.keys(encryption)) if (k !== 'key' && k !== 'previousKeys') throw invalid(`unknown encryption option "${k}"`)
  const key = encryptionKey(encryption.key, 'encryption.key')
  const { previousKeys = [] } = encryption
  if (!Array.isArray(previousKeys)) throw invalid('encryption.previousKeys must be an array of keys')
  return { key, previousKeys: previousKeys.map((k, i) => encryptionKey(k, `encryption.previousKeys[${i}]`)) }
}

function optionalBoolean(value, name) {
  if (value != null && typeof value !== 'boolean') throw invalid(`${name} must be a boolean`)
}

/** Write options ({ syncToDatabase, ttl } in seconds, force) in the native form. */
function writeOptions(options) {
  if (options == null) return undefined
  return reading('write options', () => {
    if (!isPlainObject(options)) throw invalid('write options must be an object')
    const { syncToDatabase, ttl, force } = options
    optionalBoolean(syncToDatabase, 'syncToDatabase')
    optionalBoolean(force, 'force')
    if (ttl != null && !(typeof ttl === 'number' && ttl > 0 && Number.isFinite(ttl))) {
      throw invalid('ttl must be a positive number of seconds')
    }
    return { syncToDatabase, ttlMs: ttl != null ? ttl * 1000 : undefined, force }
  })
}

/** `{ force }` of clearSession / deleteCreds. */
function forceOption(options) {
  if (options == null) return false
  if (typeof options !== 'object' || (options.force !== undefined && typeof options.force !== 'boolean')) throw invalid('options must be { force?: boolean }')
  return options.force === true
}

/** Flattens {type: {id: value|null}} into the parallel arrays the native write takes. */
function flattenKeys(data) {
  const types = []
  const ids = []
  const values = []
  if (data == null) return { types, ids, values }
  reading('keys', () => {
    if (!isPlainObject(data)) throw invalid('keys must be an object of { [type]: { [id]: value | null } }')
    for (const type of Object.keys(data)) {
      checkType(type)
      const entries = data[type]
      if (entries == null) continue
      if (!isPlainObject(entries)) throw invalid('the records of a key type must be an object of { [id]: value | null }')
      for (const id of Object.keys(entries)) {
        const value = entries[id]
        wellFormed(id, 'key id')
        types.push(type)
        ids.push(id)
        values.push(value == null ? null : encodeValue(value))
      }
    }
  })
  return { types, ids, values }
}

/** Creds as stored bytes: Baileys' AuthenticationCreds is an object, never a primitive or an array. */
function encodeCreds(creds) {
  if (!isPlainObject(creds)) throw invalid("creds must be an object (Baileys' AuthenticationCreds)")
  return encodeValue(creds)
}

/** `obj[key] = value` as an own property, also for the key '__proto__' (which would set the prototype). */
function setOwn(obj, key, value) {
  if (key === '__proto__') Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true })
  else obj[key] = value
}

/** The store's options, checked (`memory`: RedisMemoryManager options, or null for none). */
function storeOptions(options) {
  return reading('store options', () => {
    if (options != null && !isPlainObject(options)) throw invalid('store options must be an object')
    const { cache, cacheMaxBytes, baileys, memoryManager, durability = 'write-through', flushIntervalMs = 1000, compactValues, logger, lease, encryption } = options ?? {}
    optionalBoolean(cache, 'cache')
    optionalBoolean(compactValues, 'compactValues')
    if (logger != null && (typeof logger !== 'object' || typeof logger.warn !== 'function')) {
      throw invalid('logger must have warn(obj, msg) and error(obj, msg) methods (pino\'s shape)')
    }
    if (durability !== 'write-through' && durability !== 'write-behind') throw invalid("durability must be 'write-through' or 'write-behind'")
    if (!(Number.isFinite(flushIntervalMs) && flushIntervalMs >= 1)) throw invalid('flushIntervalMs must be a number of milliseconds >= 1')
    if (memoryManager != null && typeof memoryManager !== 'boolean' && !isPlainObject(memoryManager)) {
      throw invalid('memoryManager must be true, false or an object of RedisMemoryManager options')
    }
    const memory = memoryManager === true ? {} : memoryManager ? managerOptions(memoryManager) : null
    return { cache, cacheMaxBytes, baileys, memory, durability, flushIntervalMs, compactValues, logger, lease: leaseOptions(lease), encryption: encryptionOptions(encryption) }
  })
}

class BaileysAuthStore {
  /**
   * @param redisAdapter BaileysRedisAdapter or null
   * @param ormAdapter BaileysOrmAdapter or null
   * @param options { cache?: boolean, cacheMaxBytes?: number, baileys?: module }
   */
  constructor(redisAdapter = null, ormAdapter = null, options = {}) {
    if (redisAdapter != null && !(redisAdapter instanceof BaileysRedisAdapter)) {
      throw invalid('the first argument must be a BaileysRedisAdapter or null')
    }
    // a Persistence plug-in stands in for the SQL tier
    if (ormAdapter != null && !(ormAdapter instanceof BaileysOrmAdapter) && typeof ormAdapter.transaction === 'function') {
      ormAdapter = new BaileysOrmAdapter({ persistence: ormAdapter })
    }
    if (ormAdapter != null && !(ormAdapter instanceof BaileysOrmAdapter)) {
      throw invalid('the second argument must be a BaileysOrmAdapter, a Persistence plug-in or null')
    }
    if (!redisAdapter && !ormAdapter) {
      throw invalid('a store needs a Redis adapter, a SQL adapter or both; openAuthStore() opens the embedded SQLite default')
    }
    const { cache, cacheMaxBytes, baileys, memory, durability, flushIntervalMs, compactValues, logger, lease, encryption } = storeOptions(options)
    if (durability === 'write-behind' && (!redisAdapter || !ormAdapter)) throw invalid('write-behind needs a Redis adapter and a SQL adapter')
    if (memory && !redisAdapter) throw invalid('memoryManager needs a Redis adapter')
    this._logger = logger ?? CONSOLE_LOGGER
    this._compactValues = compactValues !== false
    // sessions have leases unless `lease: false` (one process per session, nothing checked)
    this._lease = lease
    this._writeBehindMs = durability === 'write-behind' ? flushIntervalMs : undefined
    this._redis = redisAdapter
    this._orm = ormAdapter
    this._cacheMaxBytes = cache === false ? 0 : cacheMaxBytes
    this._baileys = baileys
    this._proto = undefined // Baileys' proto, loaded the first time an app-state-sync-key is read
    this._ready = null
    this._closed = false
    this._memoryOptions = memory
    this.memoryManager = null
    this._metrics = new StoreMetrics(this)
    if (encryption) ENCRYPTION.set(this, encryption)
    // a retried open must never go on without the keys (they are wiped once used)
    this._encrypted = Boolean(encryption)
  }

  /** Throws ERR_STORE_CLOSED once close() was called (calls that need no I/O included). */
  _assertOpen() {
    if (this._closed) throw new WaAuthStoreError('ERR_STORE_CLOSED', 'the store is closed')
  }

  /** Connects the adapters (if they are not yet) and builds the native store, once. */
  _native() {
    if (this._closed) return Promise.reject(new WaAuthStoreError('ERR_STORE_CLOSED', 'the store is closed'))
    this._ready ??= (async () => {
      await Promise.all([this._redis?.connect(), this._orm?.connect()])
      const keys = ENCRYPTION.get(this)
      if (this._encrypted && !keys) throw new WaAuthStoreError('ERR_CONFIG', 'this store was opened with encryption keys, which are wiped once its native store holds them; open a new store')
      const native = await call(() => new NativeAuthStore(this._redis?.redis ?? null, this._orm?.connection ?? null, { cacheMaxBytes: this._cacheMaxBytes, writeBehindMs: this._writeBehindMs, compactValues: this._compactValues, leases: this._lease !== false, encryptionKey: keys?.key, previousKeys: keys?.previousKeys }))
      if (keys) {
        // the native store holds them now: wipe our copies
        keys.key.fill(0)
        for (const k of keys.previousKeys) k.fill(0)
        ENCRYPTION.delete(this)
      }
      this._completions = new Completions()
      native.setCompletionHandler(this._completions.handler())
      native.setLogger((level, code, message) => {
        this._metrics.report(level, code)
        report(this._logger, level, code, message)
      })
      if (this._memoryOptions) {
        this.memoryManager = new RedisMemoryManager(this._redis.redis, this._memoryOptions)
        this.memoryManager._store = { stats: () => native.stats() }
        await this.memoryManager.start()
      }
      return native
    })().catch((err) => {
      this._ready = null
      throw err
    })
    return this._ready
  }

  /** @returns {Promise<{ creds } | null>} */
  async getCreds(sessionId) {
    checkSessionId(sessionId)
    const native = await this._native()
    const bytes = await call(() => native.getCreds(sessionId))
    return bytes ? { creds: decodeValue('creds', bytes) } : null
  }

  async _loadProto() {
    if (this._proto === undefined) {
      const baileys = await resolveBaileys(this._baileys).catch(() => null)
      this._proto = baileys?.proto ?? null
    }
    return this._proto
  }

  /** Writes creds and/or keys as one atomic unit. */
  async saveCreds(sessionId, data = {}, options) {
    checkSessionId(sessionId)
    const { creds, keys } = reading('saveCreds data', () => {
      if (!isPlainObject(data)) throw invalid('saveCreds takes { creds?, keys? }')
      return { creds: data.creds, keys: data.keys }
    })
    return this._write(sessionId, creds == null ? null : encodeCreds(creds), keys, options)
  }

  /** Creds already serialised (useBaileysAuthState snapshots them synchronously). */
  async _writeCredsBytes(sessionId, credsBytes, options) {
    return this._write(sessionId, credsBytes, null, options)
  }

  async _write(sessionId, credsBytes, keys, options) {
    const { types, ids, values } = flattenKeys(keys)
    const opts = writeOptions(options)
    if (credsBytes == null && ids.length === 0) return this._assertOpen() // nothing to write: no I/O
    const native = await this._native()
    const bytes = values.reduce((n, v) => n + (v?.length ?? 0), credsBytes?.length ?? 0)
    await this._metrics.inFlight(ids.length + (credsBytes ? 1 : 0), bytes, () => call(() => this._completions.call((id) => native.write(id, sessionId, credsBytes, types, ids, values, opts))))
  }

  /** Removes the session entirely: creds and every key. */
  async deleteCreds(sessionId, options) {
    checkSessionId(sessionId)
    const force = forceOption(options)
    const native = await this._native()
    await call(() => native.deleteSession(sessionId, false, force))
  }

  /** Removes every key of the session and keeps its creds (Baileys' keys.clear()). */
  async clearSession(sessionId, options) {
    checkSessionId(sessionId)
    const force = forceOption(options)
    const native = await this._native()
    await call(() => native.deleteSession(sessionId, true, force))
  }

  /**
   * Takes the session's lease for this process (useBaileysAuthState does this itself): waits up
   * to `waitMs` for another holder to let go, renews in the background, rejects with
   * ERR_SESSION_LOCKED naming the holder. Returns the lease: `epoch`, `held`, `lost` (a Promise),
   * `renew()`, `release()`.
   */
  async acquireLease(sessionId, options) {
    checkSessionId(sessionId)
    const opts = this._lease === false ? false : leaseOptions(this._lease, options)
    if (!opts) throw invalid('this store has no leases (lease: false)')
    const native = await this._native()
    return this._metrics.lease(await SessionLease.acquire(native, sessionId, opts, this._logger))
  }

  /**
   * The store's metrics: `await metrics()` is the Prometheus text exposition format;
   * `metrics({ format: 'json' })` the same figures structured (prom-client's JSON form). The
   * prom-client Registry is `metricsRegistry` (merge it into yours with `Registry.merge`).
   */
  async metrics(options) {
    const format = reading('metrics options', () => {
      if (options != null && !isPlainObject(options)) throw invalid('metrics takes { format?: "text" | "json" }')
      const f = options?.format ?? 'text'
      if (f !== 'text' && f !== 'json') throw invalid('format must be "text" or "json"')
      return f
    })
    this._assertOpen()
    return format === 'json' ? this._metrics.registry.getMetricsAsJSON() : this._metrics.registry.metrics()
  }

  /** prom-client's Registry of this store's metrics. */
  get metricsRegistry() {
    return this._metrics.registry
  }

  /**
   * Who holds the session's lease: `{ holder, epoch, acquiredAt, expiresAt, mine }` (times as
   * epoch ms), or null when nobody does.
   */
  async leaseInfo(sessionId) {
    checkSessionId(sessionId)
    const native = await this._native()
    const info = await call(() => native.leaseInfo(sessionId))
    if (!info) return null
    return { holder: info.holder, epoch: info.epoch, acquiredAt: info.acquiredAt, expiresAt: Date.now() + info.expiresInMs, mine: info.mine }
  }

  /** @returns {Promise<{ [id: string]: value }>} missing ids are left out */
  async getKeys(sessionId, type, ids) {
    checkSessionId(sessionId)
    checkType(type)
    if (!Array.isArray(ids)) throw invalid('ids must be an array of strings')
    for (const id of ids) {
      if (typeof id !== 'string') throw invalid('ids must be an array of strings')
      wellFormed(id, 'key id')
    }
    const out = {}
    if (ids.length === 0) {
      this._assertOpen() // nothing to read: no I/O
      return out
    }
    const native = await this._native()
    let packed = null
    try {
      packed = native.getKeysCached(sessionId, type, ids) // sync: no hop to the runtime on a full hit
    } catch (err) {
      throw convertError(err)
    }
    packed ??= await call(() => native.getKeys(sessionId, type, ids))
    const proto = type === 'app-state-sync-key' ? await this._loadProto() : undefined
    decodePacked(type, packed, ids.length, proto, (i, value) => setOwn(out, ids[i], value))
    return out
  }

  /** data: { [type]: { [id]: value | null } }; null or undefined deletes. One atomic write. */
  async setKeys(sessionId, data, options) {
    checkSessionId(sessionId)
    return this._write(sessionId, null, data, options)
  }

  /** fields: the seed's 'type-id' strings (longest known type wins) or { type, id } objects. */
  async deleteKeys(sessionId, fields) {
    checkSessionId(sessionId)
    if (!Array.isArray(fields)) throw invalid('fields must be an array')
    // Null-prototype objects: a type or id named '__proto__' or 'constructor' is an ordinary key.
    const data = Object.create(null)
    reading('fields', () => {
      for (const f of fields) {
        const { type, id } = parseField(f)
        wellFormed(type, 'key type')
        wellFormed(id, 'key id')
        ;(data[type] ??= Object.create(null))[id] = null
      }
    })
    return this._write(sessionId, null, data)
  }

  /** Every key type the session has records of, in Redis or SQL (name order). */
  async listTypes(sessionId) {
    checkSessionId(sessionId)
    const native = await this._native()
    return call(() => native.listTypes(sessionId))
  }

  /** Every id of one key type in the session (union of Redis and SQL). */
  async listIds(sessionId, type) {
    checkSessionId(sessionId)
    checkType(type)
    const native = await this._native()
    return call(() => native.listIds(sessionId, type))
  }

  /**
   * Every session either tier knows, in id order: `{ id, inSql, inRedis, version, updatedAt }`
   * (`updatedAt` epoch ms of SQL's last write, or null). A deleted session may still be listed
   * (SQL keeps the record of its deletion); describeSession() tells what it holds.
   */
  async listSessions() {
    const native = await this._native()
    const rows = await call(() => native.listSessions())
    return rows.map((r) => ({ id: r.id, inSql: r.inSql, inRedis: r.inRedis, version: r.version, updatedAt: r.updatedAtMs ?? null }))
  }

  /** { creds: boolean, types: [{ type, count, bytes }] }, from SQL when there is a SQL tier. */
  async describeSession(sessionId) {
    checkSessionId(sessionId)
    const native = await this._native()
    // creds that cannot be opened (no key, another key, damage) still exist: say so, with why
    let unreadable
    const [creds, types] = await Promise.all([
      call(() => native.getCreds(sessionId)).catch((err) => {
        if (err?.code !== 'ERR_DECRYPT' && err?.code !== 'ERR_CORRUPT_VALUE') throw err
        unreadable = err.code
        return Buffer.alloc(0)
      }),
      call(() => native.summary(sessionId)),
    ])
    return { creds: creds != null, credsBytes: creds?.length ?? 0, types, ...(unreadable ? { credsUnreadable: unreadable } : {}) }
  }

  /**
   * Re-seals every record of the session (creds and keys) under the current encryption key, as
   * one write in the session's call order (versions rise like any write's). Returns `{ creds,
   * counts: { type: n }, records }`. Needs the `encryption` option; ERR_SESSION_LOCKED while
   * another process holds the session (unless `force`).
   */
  async rekeySession(sessionId, options) {
    checkSessionId(sessionId)
    const force = forceOption(options)
    const native = await this._native()
    const r = await call(() => native.rekeySession(sessionId, force))
    const counts = {}
    for (const t of r.types) counts[t.type] = t.count
    return { creds: r.creds, counts, records: r.types.reduce((n, t) => n + t.count, r.creds ? 1 : 0) }
  }

  /**
   * Copies records written with syncToDatabase: false to SQL (so the memory manager may evict
   * the session). Returns how many records were flushed.
   */
  async flush(sessionId) {
    checkSessionId(sessionId)
    const native = await this._native()
    return call(() => native.flush(sessionId))
  }

  /**
   * Flushes every session marked dirty in Redis, by any process: what a crashed write-behind
   * process left, or syncToDatabase: false writes. Returns how many records were flushed.
   */
  async flushAll() {
    const native = await this._native()
    return call(() => native.flushAll())
  }

  /**
   * Removes a session and the record of its deletion (its SQL tombstone row and Redis meta).
   * For tests and tools that own the deployment: deleteCreds() is what a bot calls.
   */
  async purgeSession(sessionId) {
    checkSessionId(sessionId)
    const native = await this._native()
    await call(() => native.purgeSession(sessionId))
  }

  /**
   * Accepts SQL's state of a session refused with ERR_SQL_BEHIND (SQL was restored from a backup
   * older than what Redis had applied): Redis drops its newer copy and the session is served from
   * SQL again. An operator's decision (the newer state is gone). Resolves with whether the session
   * was refused.
   */
  async acceptSqlState(sessionId) {
    checkSessionId(sessionId)
    const native = await this._native()
    return call(() => native.acceptSqlState(sessionId))
  }

  /** Hits and misses per tier, cache bytes. */
  async stats() {
    const native = await this._native()
    return native.stats()
  }

  /** Quits Redis, closes the SQL pool; later calls reject with ERR_STORE_CLOSED. */
  async close() {
    if (this._closed) return
    this._closed = true
    await this.memoryManager?.stop()
    const ready = this._ready
    this._ready = null
    const native = ready ? await ready.catch(() => null) : null
    if (native) await call(() => native.close())
    await Promise.all([this._redis?.disconnect(), this._orm?.disconnect()])
  }
}

// Every call's latency and every rejection's code go to the store's metrics (lib/metrics.js).
for (const [method, op] of [
  ['getCreds', 'get_creds'],
  ['getKeys', 'get_keys'],
  ['saveCreds', 'write'],
  ['_writeCredsBytes', 'write'],
  ['setKeys', 'write'],
  ['deleteKeys', 'write'],
  ['deleteCreds', 'delete_session'],
  ['clearSession', 'clear_session'],
  ['listIds', 'list_ids'],
  ['flush', 'flush'],
  ['flushAll', 'flush_all'],
]) {
  const f = BaileysAuthStore.prototype[method]
  BaileysAuthStore.prototype[method] = function (...args) {
    return this._metrics.time(op, () => f.apply(this, args))
  }
}

/** Default logger: warnings and errors to the console. */
const CONSOLE_LOGGER = {
  warn: (obj, msg) => console.warn(`wa-auth-store: ${msg} (${obj.code})`),
  error: (obj, msg) => console.error(`wa-auth-store: ${msg} (${obj.code})`),
}

/** Hands a background report to a pino-shaped logger; a logger that throws is not our failure. */
function report(logger, level, code, message) {
  try {
    const fn = typeof logger[level] === 'function' ? logger[level] : logger.warn
    fn.call(logger, { code, component: 'wa-auth-store' }, message)
  } catch {
    // the logger itself failed: nothing better to do than to keep going
  }
}

/** The embedded default: a SQLite file beside the process, with the in-process cache. */
const DEFAULT_DATABASE = 'sqlite://./wa-auth-store.db'

/**
 * Opens a store from URLs. With no arguments (and no REDIS_URL / DATABASE_URL in the environment)
 * it is the embedded default: SQLite file ./wa-auth-store.db plus the in-process cache.
 * Pass `redis: null` or `database: null` to leave a tier out even when the environment names it.
 * `persistence` (a Persistence plug-in) stands in for the database.
 */
async function openAuthStore(options) {
  const { redis, database, rest } = reading('openAuthStore options', () => {
    if (options != null && !isPlainObject(options)) throw invalid('openAuthStore takes an options object')
    const { redis = process.env.REDIS_URL || null, persistence, ...others } = options ?? {}
    if (persistence !== undefined) {
      // a plug-in is the durable tier: a database URL beside it would be a second one
      if (others.database !== undefined) throw invalid('pass either database or persistence, not both')
      return { redis, database: { persistence }, rest: others }
    }
    const { database = process.env.DATABASE_URL || DEFAULT_DATABASE, ...rest } = others
    return { redis, database, rest }
  })
  // Only null leaves a tier out: '', 0 or false is a mistake, which the adapter refuses.
  const redisAdapter = redis === null ? null : new BaileysRedisAdapter(redis)
  const ormAdapter = database === null ? null : new BaileysOrmAdapter(database)
  const store = new BaileysAuthStore(redisAdapter, ormAdapter, rest)
  try {
    await store._native()
  } catch (err) {
    await store.close().catch(() => {})
    throw err
  }
  return store
}

module.exports = { BaileysAuthStore, openAuthStore, encodeCreds, writeOptions, DEFAULT_DATABASE, KNOWN_TYPES }
