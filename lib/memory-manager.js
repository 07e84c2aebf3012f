'use strict'
// RedisMemoryManager: the seed's API over the Rust memory manager. The decisions (what to evict,
// atomically against writers) are made in Rust; this class schedules the checks with an unref'd
// timer (it never keeps Node alive) and logs what the core reports.

const { NativeMemoryManager } = require('../binding.js')
const { BaileysRedisAdapter } = require('./adapters.js')
const { call, invalid, reading } = require('./errors.js')
const { checkSessionId, isPlainObject } = require('./validate.js')

const DEFAULTS = {
  maxMemoryBytes: 1024 ** 3,
  evictionThreshold: 80,
  ttlInactivity: 7 * 24 * 60 * 60,
  checkIntervalMs: 5 * 60 * 1000,
  measure: 'server',
}

// Node's timers hold at most 2^31-1 ms; setInterval turns a longer interval into 1 ms.
const MAX_TIMER_MS = 2 ** 31 - 1

/**
 * The manager's options over the defaults, with what JavaScript alone decides (the check
 * interval) checked; the core checks the budget, thresholds, ttlInactivity and measure.
 */
function managerOptions(options) {
  return reading('memory manager options', () => {
    if (options != null && !isPlainObject(options)) throw invalid('RedisMemoryManager options must be an object')
    const o = { ...DEFAULTS, ...options }
    o.checkIntervalMs ??= DEFAULTS.checkIntervalMs
    const ms = o.checkIntervalMs
    if (!(typeof ms === 'number' && ms >= 1 && ms <= MAX_TIMER_MS)) {
      throw invalid(`checkIntervalMs must be a number of milliseconds from 1 to ${MAX_TIMER_MS}`)
    }
    return o
  })
}

class RedisMemoryManager {
  /**
   * @param redis `redisAdapter.redis` (or the BaileysRedisAdapter itself)
   * @param options { maxMemoryBytes, evictionThreshold, evictionTarget, ttlInactivity (s),
   *   checkIntervalMs, measure: 'server' | 'store', logger }
   */
  constructor(redis, options = {}) {
    if (!redis) throw invalid('RedisMemoryManager needs a connected Redis: pass redisAdapter.redis after connect()')
    this._redis = redis
    this._options = managerOptions(options)
    this._logger = this._options.logger ?? console
    this._native = null
    this._timer = null
    this._running = null
    this._lastCheck = null
    this._lastReport = null
    this._lastError = null
  }

  async _get() {
    if (this._native) return this._native
    let conn = this._redis
    if (conn instanceof BaileysRedisAdapter) {
      await conn.connect()
      conn = conn.redis
    }
    const { maxMemoryBytes, evictionThreshold, evictionTarget, ttlInactivity, measure } = this._options
    this._native = await call(() => new NativeMemoryManager(conn, { maxMemoryBytes, evictionThreshold, evictionTarget, ttlInactivity, measure }))
    return this._native
  }

  /** Starts the periodic checks (the first one after checkIntervalMs). */
  async start() {
    await this._get()
    if (this._timer) return
    this._timer = setInterval(() => {
      this.check().catch((err) => {
        this._lastError = err
        this._logger.warn?.(`wa-auth-store memory manager: check failed: ${err.message}`)
      })
    }, this._options.checkIntervalMs)
    this._timer.unref?.()
  }

  /** Stops the periodic checks and waits for one in flight. */
  async stop() {
    if (this._timer) clearInterval(this._timer)
    this._timer = null
    await this._running?.catch(() => {})
  }

  /** One check now: idle sessions out, LRU eviction while over the threshold. */
  async check() {
    if (this._running) return this._running
    this._running = (async () => {
      const native = await this._get()
      const report = await call(() => native.check())
      this._lastCheck = Date.now()
      this._lastReport = report
      this._lastError = null
      if (report.refused > 0) {
        this._logger.warn?.(
          `wa-auth-store memory manager: ${report.refused} session(s) due for eviction hold data that is not in SQL ` +
            `(no SQL tier, or syncToDatabase: false writes not yet flushed); they stay in Redis: ${report.refusedSessions.join(', ')}`,
        )
      }
      return report
    })().finally(() => {
      this._running = null
    })
    return this._running
  }

  /** Whether periodic checks are scheduled. */
  get running() {
    return Boolean(this._timer)
  }

  /** Records an access (the store does this itself on every get/set). */
  async trackAccess(sessionId, estimatedSize) {
    checkSessionId(sessionId)
    if (estimatedSize != null && typeof estimatedSize !== 'number') throw invalid('estimatedSize must be a number of bytes')
    const native = await this._get()
    await call(() => native.trackAccess(sessionId, estimatedSize ?? null))
  }

  async getStats() {
    const native = await this._get()
    const s = await call(() => native.stats())
    return {
      memoryUsage: {
        usedBytes: s.usedBytes,
        maxBytes: s.maxBytes,
        percentUsed: (100 * s.usedBytes) / s.maxBytes,
        measure: s.measure,
        // 'server': what each server reported (every primary of a cluster), summed into usedBytes
        nodes: s.nodes.map((n) => ({ node: n.node, usedBytes: n.usedBytes })),
      },
      totalSessions: s.totalSessions,
      sessionMetadata: s.sessionMetadata.map((m) => ({ sessionId: m.sessionId, lastAccess: m.lastAccess, accessCount: m.accessCount, sizeBytes: m.sizeBytes })),
      evictions: s.evictions,
      evictionsAllProcesses: s.evictionsAllProcesses,
      refusedEvictions: s.refusedEvictions,
      checks: s.checks,
      lastCheck: this._lastCheck,
      lastReport: this._lastReport,
      lastError: this._lastError?.message ?? null,
      running: this.running,
      // hits and misses per tier, when the manager belongs to a store (the memoryManager option)
      tiers: this._store ? await this._store.stats() : undefined,
    }
  }
}

module.exports = { RedisMemoryManager, managerOptions }
