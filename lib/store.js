'use strict'
// BaileysAuthStore: the seed's API over the native store. Values are encoded here (lib/codec.js);
// one native call per batch.

const { NativeAuthStore } = require('../binding.js')
const { BaileysRedisAdapter, BaileysOrmAdapter } = require('./adapters.js')
const { resolveBaileys } = require('./baileys.js')
const { RedisMemoryManager } = require('./memory-manager.js')
const { encodeValue, decodeValue } = require('./codec.js')
const { WaAuthStoreError, call, convertError, invalid } = require('./errors.js')
const { wellFormed } = require('./validate.js')

/** Key types Baileys writes, longest first, for parsing the seed's 'type-id' field names. */
const KNOWN_TYPES = [
  'app-state-sync-version',
  'app-state-sync-key',
  'sender-key-memory',
  'identity-key',
  'lid-mapping',
  'device-list',
  'sender-key',
  'pre-key',
  'session',
  'tctoken',
].sort((a, b) => b.length - a.length)

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

function writeOptions(options) {
  if (options == null) return undefined
  if (typeof options !== 'object') throw invalid('write options must be an object')
  const { syncToDatabase, ttl } = options
  if (syncToDatabase !== undefined && typeof syncToDatabase !== 'boolean') throw invalid('syncToDatabase must be a boolean')
  if (ttl != null && !(typeof ttl === 'number' && ttl > 0 && Number.isFinite(ttl))) {
    throw invalid('ttl must be a positive number of seconds')
  }
  return { syncToDatabase, ttlMs: ttl != null ? ttl * 1000 : undefined }
}

/** Flattens {type: {id: value|null}} into the parallel arrays the native write takes. */
function flattenKeys(data) {
  const types = []
  const ids = []
  const values = []
  if (data == null) return { types, ids, values }
  if (typeof data !== 'object') throw invalid('keys must be an object of { [type]: { [id]: value | null } }')
  for (const type of Object.keys(data)) {
    const entries = data[type]
    if (entries == null) continue
    if (typeof entries !== 'object') throw invalid(`keys.${type} must be an object of { [id]: value | null }`)
    wellFormed(type, 'key type')
    for (const id of Object.keys(entries)) {
      const value = entries[id]
      wellFormed(id, 'key id')
      types.push(type)
      ids.push(id)
      values.push(value == null ? null : encodeValue(value))
    }
  }
  return { types, ids, values }
}

function checkSessionId(sessionId) {
  if (typeof sessionId !== 'string') {
    throw new WaAuthStoreError('ERR_INVALID_SESSION_ID', `session id must be a string, got ${typeof sessionId}`)
  }
  wellFormed(sessionId, 'session id')
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
    if (ormAdapter != null && !(ormAdapter instanceof BaileysOrmAdapter)) {
      throw invalid('the second argument must be a BaileysOrmAdapter or null')
    }
    if (!redisAdapter && !ormAdapter) {
      throw invalid('a store needs a Redis adapter, a SQL adapter or both; openAuthStore() opens the embedded SQLite default')
    }
    const { cache = true, cacheMaxBytes, baileys, memoryManager, durability = 'write-through', flushIntervalMs = 1000, compactValues = true, logger } = options ?? {}
    if (logger != null && (typeof logger !== 'object' || typeof logger.warn !== 'function')) {
      throw invalid('logger must have warn(obj, msg) and error(obj, msg) methods (pino\'s shape)')
    }
    this._logger = logger ?? CONSOLE_LOGGER
    this._compactValues = compactValues !== false
    if (durability !== 'write-through' && durability !== 'write-behind') throw invalid("durability must be 'write-through' or 'write-behind'")
    if (durability === 'write-behind' && (!redisAdapter || !ormAdapter)) throw invalid('write-behind needs a Redis adapter and a SQL adapter')
    if (!(Number.isFinite(flushIntervalMs) && flushIntervalMs >= 1)) throw invalid('flushIntervalMs must be a number of milliseconds >= 1')
    this._writeBehindMs = durability === 'write-behind' ? flushIntervalMs : undefined
    if (memoryManager && !redisAdapter) throw invalid('memoryManager needs a Redis adapter')
    this._redis = redisAdapter
    this._orm = ormAdapter
    this._cacheMaxBytes = cache === false ? 0 : cacheMaxBytes
    this._baileys = baileys
    this._proto = undefined // Baileys' proto, loaded the first time an app-state-sync-key is read
    this._ready = null
    this._closed = false
    this._memoryOptions = memoryManager === true ? {} : memoryManager || null
    this.memoryManager = null
  }

  /** Connects the adapters (if they are not yet) and builds the native store, once. */
  _native() {
    if (this._closed) return Promise.reject(new WaAuthStoreError('ERR_STORE_CLOSED', 'the store is closed'))
    this._ready ??= (async () => {
      await Promise.all([this._redis?.connect(), this._orm?.connect()])
      const native = await call(() => new NativeAuthStore(this._redis?.redis ?? null, this._orm?.connection ?? null, { cacheMaxBytes: this._cacheMaxBytes, writeBehindMs: this._writeBehindMs, compactValues: this._compactValues }))
      native.setLogger((level, code, message) => report(this._logger, level, code, message))
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
  async saveCreds(sessionId, { creds, keys } = {}, options) {
    checkSessionId(sessionId)
    const credsBytes = creds == null ? null : encodeValue(creds)
    return this._write(sessionId, credsBytes, keys, options)
  }

  /** Creds already serialised (useBaileysAuthState snapshots them synchronously). */
  async _writeCredsBytes(sessionId, credsBytes, options) {
    return this._write(sessionId, credsBytes, null, options)
  }

  async _write(sessionId, credsBytes, keys, options) {
    const { types, ids, values } = flattenKeys(keys)
    const opts = writeOptions(options)
    if (credsBytes == null && ids.length === 0) return
    const native = await this._native()
    await call(() => native.write(sessionId, credsBytes, types, ids, values, opts))
  }

  /** Removes the session entirely: creds and every key. */
  async deleteCreds(sessionId) {
    checkSessionId(sessionId)
    const native = await this._native()
    await call(() => native.deleteSession(sessionId, false))
  }

  /** Removes every key of the session and keeps its creds (Baileys' keys.clear()). */
  async clearSession(sessionId) {
    checkSessionId(sessionId)
    const native = await this._native()
    await call(() => native.deleteSession(sessionId, true))
  }

  /** @returns {Promise<{ [id: string]: value }>} missing ids are left out */
  async getKeys(sessionId, type, ids) {
    checkSessionId(sessionId)
    if (typeof type !== 'string') throw invalid('key type must be a string')
    if (!Array.isArray(ids)) throw invalid('ids must be an array of strings')
    wellFormed(type, 'key type')
    for (const id of ids) {
      if (typeof id !== 'string') throw invalid('ids must be an array of strings')
      wellFormed(id, 'key id')
    }
    const out = {}
    if (ids.length === 0) return out
    const native = await this._native()
    let values = null
    try {
      values = native.getKeysCached(sessionId, type, ids) // sync: no hop to the runtime on a full hit
    } catch (err) {
      throw convertError(err)
    }
    values ??= await call(() => native.getKeys(sessionId, type, ids))
    const proto = type === 'app-state-sync-key' ? await this._loadProto() : undefined
    for (let i = 0; i < ids.length; i++) {
      if (values[i]) out[ids[i]] = decodeValue(type, values[i], proto)
    }
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
    const data = {}
    for (const f of fields) {
      const { type, id } = parseField(f)
      wellFormed(type, 'key type')
      wellFormed(id, 'key id')
      ;(data[type] ??= {})[id] = null
    }
    return this._write(sessionId, null, data)
  }

  /** Every id of one key type in the session (union of Redis and SQL). */
  async listIds(sessionId, type) {
    checkSessionId(sessionId)
    if (typeof type !== 'string') throw invalid('key type must be a string')
    wellFormed(type, 'key type')
    const native = await this._native()
    return call(() => native.listIds(sessionId, type))
  }

  /** { creds: boolean, types: [{ type, count, bytes }] }, from SQL when there is a SQL tier. */
  async describeSession(sessionId) {
    checkSessionId(sessionId)
    const native = await this._native()
    const [creds, types] = await Promise.all([call(() => native.getCreds(sessionId)), call(() => native.summary(sessionId))])
    return { creds: creds != null, credsBytes: creds?.length ?? 0, types }
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
 */
async function openAuthStore(options = {}) {
  const { redis = process.env.REDIS_URL || null, database = process.env.DATABASE_URL || DEFAULT_DATABASE, ...rest } = options ?? {}
  const redisAdapter = redis ? new BaileysRedisAdapter(redis) : null
  const ormAdapter = database ? new BaileysOrmAdapter(database) : null
  const store = new BaileysAuthStore(redisAdapter, ormAdapter, rest)
  try {
    await store._native()
  } catch (err) {
    await store.close().catch(() => {})
    throw err
  }
  return store
}

module.exports = { BaileysAuthStore, openAuthStore, DEFAULT_DATABASE, KNOWN_TYPES }
