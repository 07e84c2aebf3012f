'use strict'
// Connection holders with the seed's names: BaileysRedisAdapter (fred, in Rust) and
// BaileysOrmAdapter (sqlx, in Rust). connect() is idempotent and safe to call concurrently.

const { RedisConnection, SqlConnection } = require('../binding.js')
const { call, invalid } = require('./errors.js')

function redisUrlFromParts(o) {
  const host = o.host ?? '127.0.0.1'
  const port = o.port ?? 6379
  const scheme = o.tls ? 'rediss' : 'redis'
  const user = o.username ? encodeURIComponent(o.username) : ''
  const auth = o.password != null ? `${user}:${encodeURIComponent(o.password)}@` : user ? `${user}@` : ''
  const db = o.db != null ? `/${o.db}` : ''
  return `${scheme}://${auth}${host.includes(':') ? `[${host}]` : host}:${port}${db}`
}

function redisOptions(urlOrOptions) {
  if (typeof urlOrOptions === 'string') return { url: urlOrOptions }
  if (!urlOrOptions || typeof urlOrOptions !== 'object') throw invalid('BaileysRedisAdapter takes a URL string or an options object')
  const { url, keyPrefix, timeoutMs } = urlOrOptions
  return { url: url ?? redisUrlFromParts(urlOrOptions), keyPrefix, timeoutMs }
}

function sqlOptions(urlOrOptions, extra) {
  if (typeof urlOrOptions === 'string') return { url: urlOrOptions }
  if (urlOrOptions && typeof urlOrOptions === 'object' && typeof urlOrOptions.url === 'string') {
    const { url, maxConnections, timeoutMs } = urlOrOptions
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

class BaileysOrmAdapter extends Adapter {
  /** @param urlOrOptions 'postgres://…' | 'mysql://…' | 'sqlite://file' | 'sqlite::memory:' | { url, maxConnections, timeoutMs } */
  constructor(urlOrOptions, legacyEntity) {
    const options = sqlOptions(urlOrOptions, legacyEntity)
    super(() => SqlConnection.connect(options))
  }

  /** The native pool; null before connect(). */
  get connection() {
    return this._native
  }

  /** 'postgres' | 'mysql' | 'sqlite', once connected. */
  get dialect() {
    return this._native?.dialect ?? null
  }
}

module.exports = { BaileysRedisAdapter, BaileysOrmAdapter }
