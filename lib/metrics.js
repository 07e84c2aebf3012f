'use strict'
// The store's metrics in Prometheus' terms, kept with prom-client (its own Registry, so nothing
// lands in the application's default one unless it merges them). Latencies, bytes, queued
// writes and errors are counted here as calls pass through the facade; tier hits, group commits,
// rebuilds, the memory manager and the write-behind backlog are read from the store when scraped.

const client = require('prom-client')

/** Latency buckets, seconds: a cache hit is tens of microseconds, a durable write milliseconds. */
const BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]

/**
 * A metric of `Kind` (Counter or Gauge) whose values are read at scrape time: `read()` answers
 * [[labels, value], ...] (cumulative figures for a counter), or null when there is nothing.
 */
function readMetric(Kind, registry, name, help, labelNames, read) {
  return new Kind({
    name,
    help,
    labelNames,
    registers: [registry],
    async collect() {
      const values = await read()
      if (values == null) return
      this.reset()
      for (const [labels, v] of values) {
        if (Kind === client.Gauge) this.set(labels, v)
        else if (v > 0) this.inc(labels, v)
      }
    },
  })
}
const readCounter = (...args) => readMetric(client.Counter, ...args)
const readGauge = (...args) => readMetric(client.Gauge, ...args)

/**
 * `read` shared by the collectors of one scrape: while a read is in flight, and until the turn of
 * the event loop it settled in ends, callers get the same promise; the next scrape reads anew.
 */
function perScrape(read) {
  let pending
  return () => {
    if (pending === undefined) {
      pending = Promise.resolve(read())
      pending.finally(() => setImmediate(() => (pending = undefined)))
    }
    return pending
  }
}

/** `fn()` as a promise: a throw becomes a rejection, a plain value a resolved promise (as an async function would). */
function settled(fn) {
  try {
    const p = fn()
    return typeof p?.then === 'function' ? p : Promise.resolve(p)
  } catch (err) {
    return Promise.reject(err)
  }
}

class StoreMetrics {
  /** @param store the BaileysAuthStore measured */
  constructor(store) {
    this._store = store
    this.registry = new client.Registry()
    const registers = [this.registry]
    this._duration = new client.Histogram({ name: 'wa_auth_operation_duration_seconds', help: 'Time from a call to its answer, by operation (reads and durable writes included)', labelNames: ['op'], buckets: BUCKETS, registers })
    this._timers = new Map() // op -> the histogram's child for that label
    this._bytes = new client.Counter({ name: 'wa_auth_written_bytes_total', help: 'Value bytes handed to the store to write (creds and keys, before compaction)', registers })
    this._records = new client.Counter({ name: 'wa_auth_written_records_total', help: 'Records written or deleted', registers })
    this._queued = new client.Gauge({ name: 'wa_auth_queued_writes', help: 'Writes accepted and not yet answered', registers })
    this._errors = new client.Counter({ name: 'wa_auth_errors_total', help: 'Calls that rejected, by error code', labelNames: ['code'], registers })
    this._reports = new client.Counter({ name: 'wa_auth_background_reports_total', help: 'Background failures reported to the logger, by level and code', labelNames: ['level', 'code'], registers })
    this._leasesLost = new client.Counter({ name: 'wa_auth_leases_lost_total', help: 'Session leases this process lost to another one', registers })
    this._leases = new Set()

    // one read of the store's figures per scrape, shared by every collector below
    const stats = perScrape(() => (store._ready ? store.stats().catch(() => null) : null))
    readCounter(this.registry, 'wa_auth_reads_total', 'Records asked of each tier, by result', ['tier', 'result'], async () => {
      const s = await stats()
      if (!s) return null
      return [
        [{ tier: 'cache', result: 'hit' }, s.cache?.hits ?? 0],
        [{ tier: 'cache', result: 'miss' }, s.cache?.misses ?? 0],
        [{ tier: 'redis', result: 'hit' }, s.redisHits],
        [{ tier: 'redis', result: 'miss' }, s.redisMisses],
        [{ tier: 'sql', result: 'hit' }, s.sqlHits],
        [{ tier: 'sql', result: 'miss' }, s.sqlMisses],
      ]
    })
    readCounter(this.registry, 'wa_auth_sql_group_commits_total', 'SQL transactions (group commits) made', [], async () => {
      const s = await stats()
      return s && [[{}, s.sqlTransactions]]
    })
    readCounter(this.registry, 'wa_auth_sql_group_commit_writes_total', 'Writes carried by the SQL group commits (divided by wa_auth_sql_group_commits_total: the mean batch size)', [], async () => {
      const s = await stats()
      return s && [[{}, s.sqlWrites]]
    })
    readCounter(this.registry, 'wa_auth_redis_rebuilds_total', "Sessions whose Redis copy was found behind SQL and rebuilt", [], async () => {
      const s = await stats()
      return s && [[{}, s.redisRebuilds]]
    })
    readCounter(this.registry, 'wa_auth_records_lost_total', 'Records written to Redis only (write-behind) that Redis no longer held when a flush came for them', [], async () => {
      const s = await stats()
      return s && [[{}, s.recordsLost]]
    })
    readCounter(this.registry, 'wa_auth_sql_behind_total', 'Sessions found with SQL holding less than Redis applied (SQL restored from an older backup), refused with ERR_SQL_BEHIND', [], async () => {
      const s = await stats()
      return s && [[{}, s.sqlBehind]]
    })
    readGauge(this.registry, 'wa_auth_cache_bytes', 'Bytes held by the in-process cache', [], async () => {
      const s = await stats()
      return s?.cache ? [[{}, s.cache.bytes]] : null
    })
    readGauge(this.registry, 'wa_auth_cache_entries', 'Records held by the in-process cache', [], async () => {
      const s = await stats()
      return s?.cache ? [[{}, s.cache.entries]] : null
    })
    readGauge(this.registry, 'wa_auth_leases_held', 'Session leases this process holds', [], async () => {
      for (const l of this._leases) if (!l.held) this._leases.delete(l)
      return [[{}, this._leases.size]]
    })
    readGauge(this.registry, 'wa_auth_write_behind_dirty_sessions', 'Sessions with records in Redis not yet in SQL (any process), when the last flush pass started', [], async () => {
      const s = store._writeBehindMs === undefined ? null : await stats()
      return s && [[{}, s.flushDirtySessions]]
    })
    readGauge(this.registry, 'wa_auth_write_behind_lag_seconds', "Time since this process's flusher last finished a pass without a failure (write-behind)", [], async () => {
      const s = store._writeBehindMs === undefined ? null : await stats()
      return s?.lastFlushMs != null ? [[{}, (Date.now() - s.lastFlushMs) / 1000]] : null
    })
    const memory = perScrape(() => store.memoryManager?.getStats().catch(() => null) ?? null)
    readGauge(this.registry, 'wa_auth_redis_memory_bytes', 'Redis memory the memory manager measures, and its budget', ['kind'], async () => {
      const m = await memory()
      return m && [
        [{ kind: 'used' }, m.memoryUsage.usedBytes],
        [{ kind: 'max' }, m.memoryUsage.maxBytes],
      ]
    })
    readCounter(this.registry, 'wa_auth_memory_evictions_total', 'Sessions the memory manager evicted from Redis (this process)', [], async () => {
      const m = await memory()
      return m && [[{}, m.evictions]]
    })
    readCounter(this.registry, 'wa_auth_memory_refused_evictions_total', 'Evictions refused because the session held data not yet in SQL', [], async () => {
      const m = await memory()
      return m && [[{}, m.refusedEvictions]]
    })
  }

  /**
   * Times `fn()` (which returns a promise) as operation `op`, counting a rejection under its
   * code. Promise callbacks rather than an async function: one promise less per call on every
   * read and write.
   */
  time(op, fn) {
    let timer = this._timers.get(op)
    if (!timer) this._timers.set(op, (timer = this._duration.labels({ op })))
    const start = performance.now()
    return settled(fn).then(
      (value) => {
        timer.observe((performance.now() - start) / 1000)
        return value
      },
      (err) => {
        timer.observe((performance.now() - start) / 1000)
        this._errors.inc({ code: typeof err?.code === 'string' ? err.code : 'ERR_UNEXPECTED' })
        throw err
      },
    )
  }

  /** A write of `records` records and `bytes` value bytes, counted queued while it is in flight. */
  inFlight(records, bytes, fn) {
    this._records.inc(records)
    if (bytes > 0) this._bytes.inc(bytes)
    this._queued.inc()
    return settled(fn).then(
      (value) => {
        this._queued.dec()
        return value
      },
      (err) => {
        this._queued.dec()
        throw err
      },
    )
  }

  report(level, code) {
    this._reports.inc({ level, code })
  }

  /** Counts a lease while it is held, and its loss; returns it. */
  lease(lease) {
    // released and lost leases go here too, not only when scraped: a process that never scrapes
    // must not keep every lease it ever took
    for (const l of this._leases) if (!l.held) this._leases.delete(l)
    this._leases.add(lease)
    lease.lost.then((err) => {
      if (err) this._leasesLost.inc()
    })
    return lease
  }
}

module.exports = { StoreMetrics }
