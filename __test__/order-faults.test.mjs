// "Signal state never goes backwards": real writer processes, real Redis and PostgreSQL servers,
// real faults (SIGKILLed Redis restarted empty or from an older RDB snapshot, TCP links cut and
// restored, SIGKILLed writers, write-behind crashes). Each scenario keeps a ledger of what the
// writer attempted and what the store acknowledged, then reads every record back through a fresh
// store in a new process (no cache), and each tier directly (ioredis, pg), and counts per record:
//   lost         an acknowledged value (or a delete's absence) that is not what is read back
//   stale        a value older than the last acknowledged one
//   resurrected  a value older than an acknowledged delete
//   phantom      a value no write ever carried
// A write that was rejected or still in flight may have landed (write-through commits SQL before
// Redis answers): its value (or absence) is allowed, never counted. A live reader (another store,
// no cache) reads while the faults happen; a value older than what was acknowledged before the read
// began counts the same way. Everything must be 0. Where the README says the tiers agree
// (write-through: "Redis never holds a value SQL lacks"), a record Redis holds with another value
// than SQL is listed too ("diverged"); scenario b does not assert it (what counts there is that
// reads are not served from the older snapshot).
//
// a. Redis SIGKILLed, restarted empty, mid-stream      d. writer SIGKILLed at random moments (6 rounds)
// b. Redis restarted from an RDB older than SQL        e. write-behind writer SIGKILLed, flushAll() elsewhere
//    (new process, long-lived store, new store object)     (rounds 2-3: two more flushers race the writer's)
// c. TCP cuts (reset / blackhole / stall) of the SQL   f. overlapping writes of one session, no fault
//    link, then of the Redis link; tiers compared         (README: writes of a session land in call order)
//    right after each restore, before new writes
import Redis from 'ioredis'
import pg from 'pg'
import { afterAll, describe, it } from 'vitest'
import { BaileysAuthStore, BaileysOrmAdapter, BaileysRedisAdapter } from '../index.js'
import { check, HANG_BOUND_MS, IDS, judge, killChildren, Ledger, LiveReader, PRE_KEYS, readFresh, recordKey as key, report, SESSION_RECORDS, seqOf, sleep, startWriter } from './support/ledger.mjs'
import { redisServerAvailable } from './support/own-redis.mjs'
import { SnapshotRedis, stopAllSnapshotRedis } from './support/redis-snapshot.mjs'
import { service, uniqueId } from './support/services.mjs'
import { TcpProxy } from './support/tcp-proxy.mjs'

const redisServer = await redisServerAvailable('the order fault tests')
const postgresUrl = await service('postgres')
const PG = postgresUrl && (postgresUrl.includes('?') ? postgresUrl : `${postgresUrl}?sslmode=disable`)
const proxies = new Set()
afterAll(async () => {
  killChildren()
  await Promise.all([...proxies].map((p) => p.close()))
  await stopAllSnapshotRedis()
})

/**
 * Every record of `sessions` as Redis holds it (a seq, or null), plus the dirty marks left. Reads
 * the test's own instance only, and finds the keys by pattern so that both layouts match:
 * `wa:{<sid>}:k:<type>` / `wa:{<sid>}:dirty` and `wa:{s:<sid>}:k:<type>` / `wa:{s:<sid>}:d`.
 */
async function readRedis(url, sessions) {
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 3, connectTimeout: 3000, enableOfflineQueue: true })
  await r.connect()
  const values = {}
  for (const sid of sessions) for (const type of Object.keys(IDS)) for (const id of IDS[type]) values[key(sid, type, id)] = null
  const mine = new Set(sessions)
  let dirty = 0
  let hashes = 0
  try {
    for (const k of await r.keys('wa:*')) {
      const m = /^wa:\{(?:s:)?([^}]*)\}:(.*)$/.exec(k)
      if (!m || !mine.has(m[1])) continue
      const [, sid, rest] = m
      if (rest === 'dirty' || rest === 'd') dirty += await r.hlen(k)
      const km = /^k:(.+)$/.exec(rest)
      if (!km || !IDS[km[1]]) continue
      hashes++
      const h = await r.hgetallBuffer(k)
      for (const id of IDS[km[1]]) values[key(sid, km[1], id)] = h[id] ? seqOf(h[id]) : null
    }
  } finally {
    r.disconnect()
  }
  return { values, dirty, hashes }
}

let sqlShape
/** Every record of `sessions` as PostgreSQL holds it (tombstones and cleared rows as absent). */
async function readSql(sessions) {
  const c = new pg.Client({ connectionString: PG })
  await c.connect()
  try {
    if (!sqlShape) {
      const { rows } = await c.query("SELECT table_name, column_name FROM information_schema.columns WHERE table_name IN ('wa_auth_keys', 'wa_auth_sessions') AND column_name IN ('version', 'cleared_version')")
      sqlShape = { keyVersion: rows.some((r) => r.table_name === 'wa_auth_keys' && r.column_name === 'version'), cleared: rows.some((r) => r.column_name === 'cleared_version') }
    }
    const live = sqlShape.keyVersion && sqlShape.cleared ? ' AND k.version >= COALESCE((SELECT s.cleared_version FROM wa_auth_sessions s WHERE s.session_id = k.session_id), 0)' : ''
    const { rows } = await c.query(`SELECT k.session_id, k.type, k.id, k.value FROM wa_auth_keys k WHERE k.session_id = ANY($1)${live}`, [sessions])
    const values = {}
    for (const sid of sessions) for (const type of Object.keys(IDS)) for (const id of IDS[type]) values[key(sid, type, id)] = null
    for (const row of rows) if (IDS[row.type]) values[key(row.session_id, row.type, row.id)] = seqOf(row.value)
    return values
  } finally {
    await c.end()
  }
}

/**
 * Records Redis holds with another value than SQL (README: "Redis never holds a value SQL lacks").
 * Each entry says how: Redis behind SQL, Redis holding what SQL deleted, or Redis ahead.
 */
function diverged(redisValues, sqlValues, ledger) {
  const out = []
  for (const [k, v] of Object.entries(redisValues)) {
    const sv = sqlValues[k]
    if (v === null || v === sv) continue
    const how = sv === null ? 'redis holds what sql deleted' : sv > v ? 'redis behind sql' : 'redis ahead of sql'
    // After a failure between the SQL commit and the Redis write, Redis may lag SQL until the
    // session is next used: the store sees it by version (Redis' session version below SQL's)
    // and rebuilds it, never serving it (the fresh-process view above checks that). Only Redis
    // holding something SQL never committed would be a divergence.
    if (how !== 'redis ahead of sql') continue
    const acked = ledger.records.get(k)?.acked
    const sqlIs = sv === null ? (acked?.deleted ? 'acked delete' : 'unacked delete') : acked?.seq === sv ? 'acked' : sv > (acked?.seq ?? -1) ? 'unacked (rejected or in flight)' : 'old'
    out.push(`${k.replaceAll('\u0000', '/')}: ${how} (redis ${v}, sql ${sv ?? 'none'}: ${sqlIs}; last acked ${JSON.stringify(acked)})`)
  }
  return out
}

function storeOn(redisUrl, { cache = false, timeoutMs = 1000, durability } = {}) {
  return new BaileysAuthStore(
    redisUrl ? new BaileysRedisAdapter({ url: redisUrl, timeoutMs }) : null,
    new BaileysOrmAdapter({ url: PG, timeoutMs: 2000 }),
    { cache, ...(durability ? { durability, flushIntervalMs: 3_600_000 } : {}) },
  )
}

/** Removes every session written (through the store) and the own Redis' data. */
async function cleanup(sessions, redis) {
  const store = storeOn(redis?.running ? redis.url : null, { timeoutMs: 2000 })
  try {
    for (const sid of sessions) await store.deleteCreds(sid)
  } finally {
    await store.close()
  }
  await redis?.flushAll()
}

const sessionsFor = (name, n = 3) => Array.from({ length: n }, () => uniqueId(`order-${name}`))
const writerCfg = (extra) => ({ sessionRecords: SESSION_RECORDS, preKeys: PRE_KEYS, redisTimeoutMs: 1000, sqlTimeoutMs: 1000, ...extra })

// ---------------------------------------------------------------------------------------------

describe.skipIf(!redisServer || !PG)('signal state never goes backwards (real processes, real faults)', () => {
  it('a. Redis SIGKILLed and restarted empty mid-stream (write-through)', async () => {
    const redis = await SnapshotRedis.start()
    const sessions = sessionsFor('a')
    const ledger = new Ledger(sessions)
    const live = new LiveReader(storeOn(redis.url), ledger)
    const writer = startWriter(writerCfg({ redis: redis.url, database: PG, sessions, seqBase: 1e9 }), ledger)
    try {
      await writer.ready
      live.start()
      await writer.acked(150)
      const errorsBefore = { ...ledger.errors }
      const ackedBefore = ledger.ackedWrites
      await redis.kill()
      await sleep(400) // answers already on their way may still arrive
      const ackedAtKill = ledger.ackedWrites
      await sleep(1600)
      const ackedWhileDown = ledger.ackedWrites - ackedAtKill
      await redis.restart({ from: 'empty' })
      await writer.acked(150)
      await writer.stop()
      await live.stop()
      const downErrors = Object.fromEntries(Object.entries(ledger.errors).map(([k, n]) => [k, n - (errorsBefore[k] ?? 0)]).filter(([, n]) => n))
      const fresh = await readFresh({ redis: redis.url, database: PG, sessions })
      const [r, sql] = [await readRedis(redis.url, sessions), await readSql(sessions)]
      const div = diverged(r.values, sql, ledger)
      const views = { store: judge(ledger, fresh.values), sql: judge(ledger, sql), live }
      const total = report('a redis restarted empty', ledger, views, { acked_before_kill: ackedBefore, acked_while_down: ackedWhileDown, codes_while_down: downErrors, live_reads: live.reads, live_errors: live.errors, redis_vs_sql_diverged: div.length })
      for (const d of div.slice(0, 4)) console.log(`[order a]   diverged ${d}`)
      const downCodes = Object.keys(downErrors)
      check(
        total,
        div,
        { redisLayoutFound: r.hashes > 0, corrupt: fresh.corrupt, ackedWhileDown, unexpectedErrors: ledger.unexpected.slice(0, 3), hung: ledger.maxMs > HANG_BOUND_MS, rejectedWhileDown: downCodes.length > 0, otherCodesWhileDown: downCodes.filter((c) => c !== 'ERR_REDIS' && c !== 'ERR_TIMEOUT') },
        { redisLayoutFound: true, corrupt: [], ackedWhileDown: 0, unexpectedErrors: [], hung: false, rejectedWhileDown: true, otherCodesWhileDown: [] },
      )
    } finally {
      await writer.kill()
      await live.stop()
      await live.store.close()
      await cleanup(sessions, redis)
      await redis.stop()
    }
  }, 60_000)

  it('b. Redis restarted from an RDB snapshot older than SQL: reads are not served from the old state', async () => {
    const redis = await SnapshotRedis.start()
    const sessions = sessionsFor('b')
    const ledger = new Ledger(sessions)
    // the long-lived store: opened before the snapshot, reading while the writer writes, and
    // still open (idle) across the restarts
    const longLived = storeOn(redis.url)
    const live = new LiveReader(longLived, ledger)
    const writer = startWriter(writerCfg({ redis: redis.url, database: PG, sessions, seqBase: 2e9 }), ledger)
    const readAll = async (store) => {
      const view = {}
      const until = Date.now() + 10_000
      for (const sid of sessions) {
        for (const [type, ids] of Object.entries(IDS)) {
          for (;;) {
            try {
              const got = await store.getKeys(sid, type, ids)
              for (const id of ids) view[key(sid, type, id)] = got[id] == null ? null : got[id].seq
              break
            } catch (err) {
              if (Date.now() > until) throw err // still reconnecting after 10 s
              await sleep(100)
            }
          }
        }
      }
      return view
    }
    try {
      await writer.ready
      live.start()
      await writer.acked(200)
      await redis.save('old')
      const ackedAtSave = ledger.ackedWrites
      await writer.acked(250) // keep writing: SQL (and Redis) move past the snapshot
      await redis.kill() // mid-stream
      await sleep(300)
      await writer.stop()
      await live.stop()
      // 1. a new process is the first to read after the restart
      await redis.restart({ from: 'old' })
      const keysAfterRestart = await redis.dbsize()
      const fresh = await readFresh({ redis: redis.url, database: PG, sessions })
      // 2. the old snapshot again, and the long-lived store is the first to read
      await redis.restart({ from: 'old' })
      const longLivedView = await readAll(longLived)
      // 3. and a new store object in this process (no cache), after the long-lived one
      const another = storeOn(redis.url)
      const anotherView = await readAll(another).finally(() => another.close())
      const [r, sql] = [await readRedis(redis.url, sessions), await readSql(sessions)]
      const div = diverged(r.values, sql, ledger)
      const views = { 'fresh process': judge(ledger, fresh.values), 'long-lived store': judge(ledger, longLivedView), 'new store object': judge(ledger, anotherView), sql: judge(ledger, sql), live }
      const total = report('b redis from an older snapshot', ledger, views, {
        acked_at_save: ackedAtSave,
        redis_keys_after_restart: keysAfterRestart,
        live_reads: live.reads,
        redis_vs_sql_diverged_at_end: div.length,
      })
      for (const d of div.slice(0, 3)) console.log(`[order b]   diverged (not asserted here) ${d}`)
      // Redis' own copy may stay behind until it is rewritten: what matters is what reads return
      check(
        total,
        null,
        { snapshotCameBack: keysAfterRestart > 0, redisLayoutFound: r.hashes > 0, corrupt: fresh.corrupt, unexpectedErrors: ledger.unexpected.slice(0, 3), hung: ledger.maxMs > HANG_BOUND_MS },
        { snapshotCameBack: true, redisLayoutFound: true, corrupt: [], unexpectedErrors: [], hung: false },
      )
    } finally {
      await writer.kill()
      await live.stop()
      await longLived.close()
      await cleanup(sessions, redis)
      await redis.stop()
    }
  }, 60_000)

  it('c. SQL and Redis links cut (reset, blackhole, stall) and restored: bounded rejections, nothing lost', async () => {
    const redis = await SnapshotRedis.start()
    const pgTarget = new URL(PG)
    const sqlProxy = await TcpProxy.start({ port: Number(pgTarget.port || 5432) })
    const redisProxy = await TcpProxy.start({ port: redis.port })
    proxies.add(sqlProxy).add(redisProxy)
    const sessions = sessionsFor('c')
    const ledger = new Ledger(sessions)
    // the live reader goes around the proxies: it sees what the tiers hold during the cuts
    const live = new LiveReader(storeOn(redis.url), ledger)
    const proxiedPg = sqlProxy.rewrite(PG)
    const writer = startWriter(writerCfg({ redis: redisProxy.url('redis'), database: proxiedPg, sessions, seqBase: 3e9 }), ledger)
    const phases = []
    const midCut = []
    // cut, let the writer run into it, pause it, restore, let the link settle, look at the tiers
    // before any new write can hide what the cut left, resume
    const phase = async (name, proxy, mode, existing, ms) => {
      const before = { ...ledger.errors }
      proxy.cut({ mode, existing })
      await sleep(ms)
      const hungAtEnd = ledger.hung(HANG_BOUND_MS)
      await writer.pause()
      proxy.restore()
      await sleep(1000)
      const [r, sql] = [await readRedis(redis.url, sessions), await readSql(sessions)]
      const div = diverged(r.values, sql, ledger)
      const sqlView = judge(ledger, sql)
      midCut.push(...div.map((d) => `after ${name}: ${d}`))
      writer.resume()
      await writer.acked(60, 20_000)
      const codes = Object.fromEntries(Object.entries(ledger.errors).map(([k, n]) => [k, n - (before[k] ?? 0)]).filter(([, n]) => n))
      phases.push({ name, codes, hungAtEnd, diverged: div.length, sql: sqlView.counts })
    }
    try {
      await writer.ready
      live.start()
      await writer.acked(100)
      await phase('sql blackhole', sqlProxy, 'blackhole', 'destroy', 3000)
      await phase('sql reset', sqlProxy, 'reset', 'destroy', 1500)
      await phase('sql stall', sqlProxy, 'blackhole', 'stall', 2000)
      await phase('redis blackhole', redisProxy, 'blackhole', 'destroy', 1500)
      await phase('redis reset', redisProxy, 'reset', 'destroy', 1500)
      await phase('redis stall', redisProxy, 'blackhole', 'stall', 2000)
      await writer.stop()
      await live.stop()
      const fresh = await readFresh({ redis: redis.url, database: PG, sessions })
      const [r, sql] = [await readRedis(redis.url, sessions), await readSql(sessions)]
      const div = diverged(r.values, sql, ledger)
      const views = { store: judge(ledger, fresh.values), sql: judge(ledger, sql), live }
      for (const p of phases) {
        const sqlBad = Object.entries(p.sql).filter(([, n]) => n)
        for (const [k, n] of sqlBad) views.sql.counts[k] += n
      }
      const total = report('c links cut', ledger, views, { live_reads: live.reads, live_errors: live.errors, redis_vs_sql_diverged_at_end: div.length, diverged_right_after_a_cut: midCut.length })
      for (const p of phases) console.log(`[order c]   ${p.name}: codes ${JSON.stringify(p.codes)}, unanswered at the end of the cut ${p.hungAtEnd}, redis/sql diverged after restore ${p.diverged}`)
      for (const d of [...midCut.slice(0, 4), ...div.slice(0, 2)]) console.log(`[order c]   diverged ${d}`)
      const cutsWithoutErrors = phases.filter((p) => Object.keys(p.codes).length === 0).map((p) => p.name)
      check(
        total,
        [...midCut, ...div.map((d) => `at the end: ${d}`)],
        { redisLayoutFound: r.hashes > 0, corrupt: fresh.corrupt, unexpectedErrors: ledger.unexpected.slice(0, 3), hung: ledger.maxMs > HANG_BOUND_MS || phases.some((p) => p.hungAtEnd > 0), cutsWithoutErrors },
        { redisLayoutFound: true, corrupt: [], unexpectedErrors: [], hung: false, cutsWithoutErrors: [] },
      )
    } finally {
      await writer.kill()
      await live.stop()
      await live.store.close()
      await sqlProxy.close()
      await redisProxy.close()
      await cleanup(sessions, redis)
      await redis.stop()
    }
  }, 90_000)

  it('d. writer SIGKILLed at random moments (write-through): every acknowledged write survives', async () => {
    const redis = await SnapshotRedis.start()
    const sessions = sessionsFor('d', 5)
    const ledger = new Ledger(sessions)
    const live = new LiveReader(storeOn(redis.url), ledger).start()
    const views = {}
    const rounds = 6
    let killedWithPending = 0
    const writers = []
    try {
      for (let round = 0; round < rounds; round++) {
        const w = startWriter(writerCfg({ redis: redis.url, database: PG, sessions, seqBase: 4e9 + round * 1e7 }), ledger, `d${round}`)
        writers.push(w)
        await w.ready
        await w.acked(1)
        await sleep(50 + Math.floor(Math.random() * 450))
        killedWithPending += [...ledger.pending.keys()].filter((k) => k.startsWith(`d${round}:`)).length
        await w.kill()
        const fresh = await readFresh({ redis: redis.url, database: PG, sessions })
        views[`round ${round + 1}`] = judge(ledger, fresh.values)
      }
      await live.stop()
      const [r, sql] = [await readRedis(redis.url, sessions), await readSql(sessions)]
      const div = diverged(r.values, sql, ledger)
      views.sql = judge(ledger, sql)
      views.live = live
      const total = report('d writer SIGKILLed', ledger, views, { rounds, killed_mid_write: killedWithPending, live_reads: live.reads, redis_vs_sql_diverged: div.length })
      for (const d of div.slice(0, 4)) console.log(`[order d]   diverged ${d}`)
      check(total, div, { redisLayoutFound: r.hashes > 0, unexpectedErrors: ledger.unexpected.slice(0, 3) }, { redisLayoutFound: true, unexpectedErrors: [] })
    } finally {
      for (const w of writers) await w.kill()
      await live.stop()
      await live.store.close()
      await cleanup(sessions, redis)
      await redis.stop()
    }
  }, 60_000)

  it('e. write-behind writer SIGKILLed, then another process flushAll()s: every acknowledged write is in SQL', async () => {
    const redis = await SnapshotRedis.start()
    const sessions = sessionsFor('e')
    const ledger = new Ledger(sessions)
    const live = new LiveReader(storeOn(redis.url, { durability: 'write-behind' }), ledger).start()
    const views = {}
    const notes = []
    const divergedAll = []
    const writers = []
    // rounds 2 and 3 also flush from two more stores (two connections) of this process while the
    // writer's own flusher runs
    const rescuers = [storeOn(redis.url), storeOn(redis.url)]
    try {
      for (let round = 0; round < 3; round++) {
        const w = startWriter(writerCfg({ redis: redis.url, database: PG, sessions, durability: 'write-behind', flushIntervalMs: 200, seqBase: 5e9 + round * 1e7 }), ledger, `e${round}`)
        writers.push(w)
        await w.ready
        let flushing = round > 0
        const concurrent = Promise.all(
          rescuers.map(async (rescuer) => {
            while (flushing) {
              await rescuer.flushAll().catch(() => {})
              await sleep(Math.floor(Math.random() * 10))
            }
          }),
        )
        await w.acked(100)
        await sleep(Math.floor(Math.random() * 400))
        await w.kill()
        flushing = false
        await concurrent
        const fresh = await readFresh({ redis: redis.url, database: PG, sessions, flushAll: true, durability: 'write-behind' })
        const [r, sql] = [await readRedis(redis.url, sessions), await readSql(sessions)]
        const div = diverged(r.values, sql, ledger)
        views[`round ${round + 1} reads`] = judge(ledger, fresh.values)
        views[`round ${round + 1} sql`] = judge(ledger, sql)
        notes.push({ round: round + 1, concurrent_flush: round > 0, flushed: fresh.flushed, dirty_left: r.dirty, diverged: div.length, redis_hashes: r.hashes })
        divergedAll.push(...div.map((d) => `round ${round + 1}: ${d}`))
        for (const d of div.slice(0, 2)) console.log(`[order e]   round ${round + 1} diverged ${d}`)
      }
      await live.stop()
      views.live = live
      const total = report('e write-behind crash + flushAll', ledger, views, { live_reads: live.reads, rounds: notes })
      check(total, divergedAll, { redisLayoutFound: notes.every((x) => x.redis_hashes > 0), dirtyLeft: notes.reduce((n, x) => n + x.dirty_left, 0), unexpectedErrors: ledger.unexpected.slice(0, 3) }, { redisLayoutFound: true, dirtyLeft: 0, unexpectedErrors: [] })
    } finally {
      for (const w of writers) await w.kill()
      await live.stop()
      await live.store.close()
      for (const rescuer of rescuers) await rescuer.close()
      await cleanup(sessions, redis)
      await redis.stop()
    }
  }, 60_000)

  it('f. overlapping writes of one session (no fault): they land in call order in every tier', async () => {
    const redis = await SnapshotRedis.start()
    const sessions = sessionsFor('f', 2)
    const ledger = new Ledger(sessions)
    const live = new LiveReader(storeOn(redis.url), ledger)
    const writer = startWriter(writerCfg({ redis: redis.url, database: PG, sessions, inflight: 4, delayMs: 0, seqBase: 6e9 }), ledger)
    try {
      await writer.ready
      live.start()
      await writer.acked(1500, 30_000)
      await writer.stop()
      await live.stop()
      const fresh = await readFresh({ redis: redis.url, database: PG, sessions })
      const [r, sql] = [await readRedis(redis.url, sessions), await readSql(sessions)]
      const div = diverged(r.values, sql, ledger)
      const views = { store: judge(ledger, fresh.values), sql: judge(ledger, sql), redis: judge(ledger, r.values), live }
      const total = report('f overlapping writes', ledger, views, { live_reads: live.reads, redis_vs_sql_diverged: div.length })
      for (const d of div.slice(0, 4)) console.log(`[order f]   diverged ${d}`)
      check(total, div, { redisLayoutFound: r.hashes > 0, unexpectedErrors: ledger.unexpected.slice(0, 3) }, { redisLayoutFound: true, unexpectedErrors: [] })
    } finally {
      await writer.kill()
      await live.stop()
      await live.store.close()
      await cleanup(sessions, redis)
      await redis.stop()
    }
  }, 60_000)
})
