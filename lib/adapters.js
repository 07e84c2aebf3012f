'use strict'
// Connection holders with the seed's names: BaileysRedisAdapter (fred, in Rust) and
// BaileysOrmAdapter (sqlx, in Rust). connect() is idempotent and safe to call concurrently.

const { RedisConnection, SqlConnection } = require('../binding.js')
const { call, configError, invalid, reading } = require('./errors.js')
const { isPlainObject, wellFormed } = require('./validate.js')

// The schemes the Redis client understands (README), with the TLS forms of cluster and sentinel.
// Anything else (http://, a bare host:port) is refused before a connection is tried.
const REDIS_SCHEME = /^rediss?(-cluster|-sentinel)?:\/\//i

function redisUrlFromParts(o) {
  const host = o.host ?? '127.0.0.1'
  if (typeof host !== 'string') throw invalid('host must be a string')
  const port = o.port ?? 6379
  const scheme = o.tls ? 'rediss' : 'redis'
  const user = o.username ? encodeURIComponent(o.username) : ''
  const auth = o.password != null ? `${user}:${encodeURIComponent(o.password)}@` : user ? `${user}@` : ''
  const db = o.db != null ? `/${o.db}` : ''
  return `${scheme}://${auth}${host.includes(':') ? `[${host}]` : host}:${port}${db}`
}

/**
 * Options cross into napi only with the types it expects: napi quotes a value of the wrong type
 * in its error message, and that value may hold a password or key bytes.
 */
function optionalMillis(timeoutMs) {
  if (timeoutMs != null && typeof timeoutMs !== 'number') throw invalid('timeoutMs must be a number of milliseconds')
}

function redisOptions(urlOrOptions) {
  const { url, keyPrefix, timeoutMs } = reading('Redis options', () => {
    if (typeof urlOrOptions === 'string') return { url: urlOrOptions }
    if (!isPlainObject(urlOrOptions)) throw invalid('BaileysRedisAdapter takes a URL string or an options object')
    const { url, keyPrefix, timeoutMs } = urlOrOptions
    if (url != null && typeof url !== 'string') throw invalid('url must be a string')
    return { url: url ?? redisUrlFromParts(urlOrOptions), keyPrefix, timeoutMs }
  })
  if (!REDIS_SCHEME.test(url)) throw configError('a Redis URL starts with redis://, rediss://, redis-cluster:// or redis-sentinel://')
  if (keyPrefix != null && typeof keyPrefix !== 'string') throw invalid('keyPrefix must be a string')
  wellFormed(keyPrefix, 'keyPrefix', 'ERR_CONFIG')
  optionalMillis(timeoutMs)
  return { url, keyPrefix, timeoutMs }
}

function sqlOptions(urlOrOptions, extra) {
  if (typeof urlOrOptions === 'string') return { url: urlOrOptions }
  if (isPlainObject(urlOrOptions) && typeof urlOrOptions.url === 'string') {
    const { url, maxConnections, timeoutMs } = urlOrOptions
    if (maxConnections != null) {
      if (typeof maxConnections !== 'number') throw invalid('maxConnections must be a number')
      if (!(Number.isInteger(maxConnections) && maxConnections >= 1 && maxConnections <= 2 ** 32 - 1)) throw configError('maxConnections must be an integer >= 1')
    }
    optionalMillis(timeoutMs)
    return { url, maxConnections, timeoutMs }
  }
  if (urlOrOptions && typeof urlOrOptions === 'object' && extra !== undefined) {
    throw invalid(
      'BaileysOrmAdapter no longer takes (entityManager, Entity): pass the database URL the ORM uses, ' +
        'e.g. new BaileysOrmAdapter("postgres://user@host/db"); see "Migrating from the seed" in the README',
    )
  }
  throw invalid('BaileysOrmAdapter takes a database URL (postgres://, mysql://, sqlite://path, sqlite::memory:) or { url }')
}

/** Shared connect/disconnect bookkeeping of both adapters. */
class Adapter {
  constructor(connect) {
    this._connectNative = connect
    this._native = null
    this._pending = null
  }

  async connect() {
    if (this._native && !this._native.closed) return
    this._pending ??= call(this._connectNative).then(
      (native) => {
        this._native = native
        this._pending = null
      },
      (err) => {
        this._pending = null
        throw err
      },
    )
    await this._pending
  }

  async disconnect() {
    const native = this._native
    this._native = null
    if (native) await call(() => native.close())
  }

  get connected() {
    return Boolean(this._native && !this._native.closed)
  }
}

class BaileysRedisAdapter extends Adapter {
  /** @param urlOrOptions 'redis://…' | 'rediss://…' | 'redis-cluster://…' | { url } | { host, port, password, … } */
  constructor(urlOrOptions = 'redis://localhost:6379') {
    const options = redisOptions(urlOrOptions)
    super(() => RedisConnection.connect(options))
  }

  /** The native connection (for RedisMemoryManager); null before connect(). */
  get redis() {
    return this._native
  }
}

/** The methods every persistence plug-in has (lib/persistence/driver.js documents them). */
const PERSISTENCE_METHODS = ['transaction', 'getSession', 'getKeys', 'listKeys', 'listSessions', 'deleteSession']

/** `{ persistence, timeoutMs, parallel }` checked; null when the options name no plug-in. */
function pluginOptions(o) {
  if (!isPlainObject(o) || o.persistence === undefined) return null
  const { persistence, timeoutMs, parallel } = o
  if (persistence === null || typeof persistence !== 'object') throw invalid('persistence must be an object implementing the Persistence interface')
  const missing = PERSISTENCE_METHODS.filter((m) => typeof persistence[m] !== 'function')
  if (missing.length) throw invalid(`persistence is missing ${missing.join(', ')} (see "Persistence of your own" in the README)`)
  optionalMillis(timeoutMs)
  if (parallel != null && !(Number.isInteger(parallel) && parallel >= 1 && parallel <= 64)) throw configError('parallel must be an integer from 1 to 64')
  return { persistence, timeoutMs, parallel }
}

class BaileysOrmAdapter extends Adapter {
  /**
   * @param urlOrOptions 'postgres://…' | 'mysql://…' | 'sqlite://file' | 'sqlite::memory:' |
   *   { url, maxConnections, timeoutMs } | { persistence, timeoutMs, parallel } (a plug-in)
   */
  constructor(urlOrOptions, legacyEntity) {
    const plugin = reading('database options', () => pluginOptions(urlOrOptions))
    if (plugin) {
      // required here, not at the top: the driver needs nothing of this module
      const { PersistenceDriver } = require('./persistence/driver.js')
      const driver = new PersistenceDriver(plugin.persistence)
      super(() => SqlConnection.fromPlugin((request) => driver.handle(request), { timeoutMs: plugin.timeoutMs, parallel: plugin.parallel }))
      return
    }
    const options = reading('database options', () => sqlOptions(urlOrOptions, legacyEntity))
    super(() => SqlConnection.connect(options))
  }

  /** The native pool; null before connect(). */
  get connection() {
    return this._native
  }

  /** 'postgres' | 'mysql' | 'sqlite' | 'plugin', once connected. */
  get dialect() {
    return this._native?.dialect ?? null
  }
}

module.exports = { BaileysRedisAdapter, BaileysOrmAdapter, PERSISTENCE_METHODS }
