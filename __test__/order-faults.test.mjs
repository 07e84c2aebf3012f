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
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import Redis from 'ioredis'
import pg from 'pg'
import { afterAll, describe, expect, it } from 'vitest'
import { BaileysAuthStore, BaileysOrmAdapter, BaileysRedisAdapter } from '../index.js'
import { redisServerAvailable } from './support/own-redis.mjs'
import { SnapshotRedis, stopAllSnapshotRedis } from './support/redis-snapshot.mjs'
import { service, uniqueId } from './support/services.mjs'
import { TcpProxy } from './support/tcp-proxy.mjs'

const WRITER = fileURLToPath(new URL('./fixtures/order-writer.mjs', import.meta.url))
const READER = fileURLToPath(new URL('./fixtures/order-reader.mjs', import.meta.url))

const SESSION_RECORDS = 6
const PRE_KEYS = 12
const IDS = {
  session: Array.from({ length: SESSION_RECORDS }, (_, i) => String(i)),
  'pre-key': Array.from({ length: PRE_KEYS }, (_, i) => String(i + 1)),
}
/** No write may take longer than this (timeouts are 1 s per backend call; the SQL queue waits 2). */
const HANG_BOUND_MS = 8000
const BACKEND_ERRORS = new Set(['ERR_REDIS', 'ERR_TIMEOUT', 'ERR_DATABASE'])

const redisServer = await redisServerAvailable('the order fault tests')
const postgresUrl = await service('postgres')
const PG = postgresUrl && (postgresUrl.includes('?') ? postgresUrl : `${postgresUrl}?sslmode=disable`)
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const key = (sid, type, id) => `${sid}\u0000${type}\u0000${id}`
/**
 * The seq a stored value carries (its pad holds "#seq:<n>#", readable in every stored form),
 * null for a tombstone (a 9-byte Redis envelope flagged deleted, or a NULL SQL value), -1 for
 * bytes that are neither.
 */
const seqOf = (bytes) => {
  if (bytes == null) return null
  const b = Buffer.from(bytes)
  const m = /#seq:(\d+)#/.exec(b.toString('latin1'))
  if (m) return Number(m[1])
  if (b.length === 9 && b[8] === 1) return null
  return -1
}

const children = new Set()
const proxies = new Set()
afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
  await Promise.all([...proxies].map((p) => p.close()))
  await stopAllSnapshotRedis()
})

// ---------------------------------------------------------------------------------------------
// The ledger: what was attempted, what was acknowledged, per record.

class Ledger {
  constructor(sessions) {
    this.sessions = sessions
    this.records = new Map() // key -> { acked: { seq, deleted } | null, attempts: Map<seq, deleted> }
    this.pending = new Map() // w -> { at, seq } (begun, not answered; per writer process)
    this.ackedWrites = 0
    this.rejectedWrites = 0
    this.errors = {}
    this.maxMs = 0
    this.unexpected = []
  }

  rec(sid, type, id) {
    const k = key(sid, type, id)
    let r = this.records.get(k)
    if (!r) this.records.set(k, (r = { acked: null, attempts: new Map() }))
    return r
  }

  /** One stdout line of a writer; `proc` tells the writers of several rounds apart. */
  line(o, proc) {
    if (o.begin) {
      for (const r of o.records) this.rec(o.sid, r.type, r.id).attempts.set(o.seq, Boolean(r.deleted))
      this.pending.set(`${proc}:${o.w}`, { at: Date.now(), seq: o.seq })
    } else if (o.error) {
      if (this.pending.delete(`${proc}:${o.w}`)) this.rejectedWrites++
      this.errors[o.error] = (this.errors[o.error] ?? 0) + 1
      this.maxMs = Math.max(this.maxMs, o.ms ?? 0)
      if (!BACKEND_ERRORS.has(o.error)) this.unexpected.push(`${o.error}: ${o.message}`)
    } else if (o.type) {
      if (this.pending.delete(`${proc}:${o.w}`)) this.ackedWrites++
      this.maxMs = Math.max(this.maxMs, o.ms ?? 0)
      const r = this.rec(o.sid, o.type, o.id)
      if (!r.acked || o.seq > r.acked.seq) r.acked = { seq: o.seq, deleted: Boolean(o.deleted) }
    }
  }

  /** Writes begun more than `ms` ago with no answer (a killed writer's are forgotten by forget()). */
  hung(ms) {
    const now = Date.now()
    return [...this.pending.values()].filter((p) => now - p.at > ms).length
  }

  /** A killed writer's unanswered writes stay allowed outcomes, but are no longer pending. */
  forget(proc) {
    for (const k of [...this.pending.keys()]) if (k.startsWith(`${proc}:`)) this.pending.delete(k)
  }

  /** The acknowledged state of every record now (for the live reader). */
  ackedNow(sid, type, ids) {
    return ids.map((id) => this.records.get(key(sid, type, id))?.acked ?? null)
  }

  allKeys() {
    const out = []
    for (const sid of this.sessions) for (const [type, ids] of Object.entries(IDS)) for (const id of ids) out.push(key(sid, type, id))
    return out
  }
}

/**
 * Judges one observed value (seq, null for absent) of a record against what was acknowledged
 * (`acked`, the last acknowledged state, possibly from before the read) and what was attempted.
 * Returns null (fine) or the kind of violation.
 */
function verdict(r, acked, v) {
  if (v === undefined) return 'unread'
  const attempts = r?.attempts ?? new Map()
  const laterDelete = () => [...attempts].some(([s, d]) => d && s > (acked?.seq ?? -1))
  if (v === null) {
    if (acked && !acked.deleted && !laterDelete()) return 'lost'
    return null
  }
  if (attempts.get(v) !== false) return 'phantom' // no put carried this seq
  if (!acked) return null
  if (v < acked.seq) return acked.deleted ? 'resurrected' : 'stale'
  return null
}

function emptyCounts() {
  return { lost: 0, stale: 0, resurrected: 0, phantom: 0, unread: 0 }
}

/** Counts the violations of one view ({ key: seq | null }) of every record. */
function judge(ledger, observed) {
  const counts = emptyCounts()
  const examples = []
  let landedUnacked = 0
  for (const k of ledger.allKeys()) {
    const r = ledger.records.get(k)
    const v = observed[k]
    const bad = verdict(r, r?.acked ?? null, v)
    if (bad) {
      counts[bad]++
      if (examples.length < 4) examples.push(`${bad} ${k.replaceAll('\u0000', '/')}: read ${v} acked ${JSON.stringify(r?.acked)}`)
    } else if (v != null && r?.acked && v > r.acked.seq) landedUnacked++
  }
  return { counts, examples, landedUnacked }
}

const zero = (c) => Object.values(c).every((n) => n === 0)

// ---------------------------------------------------------------------------------------------
// Processes and views.

function startWriter(cfg, ledger, proc = 'w0') {
  const child = spawn(process.execPath, [WRITER, JSON.stringify(cfg)], { stdio: ['pipe', 'pipe', 'pipe'] })
  children.add(child)
  let stderr = ''
  child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-4000)))
  // 'close': the process exited and its stdout is read to the end (every ack line is in)
  const exited = new Promise((resolve) => child.once('close', (code, signal) => resolve({ code, signal })))
  let fatal = null
  let pausedWaiters = []
  const ready = new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).on('line', (l) => {
      let o
      try {
        o = JSON.parse(l)
      } catch {
        return
      }
      if (o.ready) resolve()
      else if (o.paused) (pausedWaiters.forEach((r) => r()), (pausedWaiters = []))
      else if (o.fatal) fatal = o
      else ledger.line(o, proc)
    })
    exited.then(({ code, signal }) => reject(new Error(`writer exited before ready (${code ?? signal}) ${JSON.stringify(fatal)} ${stderr}`)))
  })
  ready.catch(() => {})
  return {
    child,
    ready,
    exited,
    get stderr() {
      return stderr
    },
    /** Waits until `n` more writes were acknowledged (fails after `ms`, never hangs). */
    async acked(n, ms = 15_000) {
      const target = ledger.ackedWrites + n
      const until = Date.now() + ms
      while (ledger.ackedWrites < target) {
        if (child.exitCode !== null || child.signalCode !== null) throw new Error(`writer died: ${stderr}`)
        if (Date.now() > until) throw new Error(`only ${ledger.ackedWrites}/${target} writes acknowledged in ${ms} ms (errors ${JSON.stringify(ledger.errors)})`)
        await sleep(20)
      }
    },
    /** No new write begins; resolves once the writes in flight were answered (bounded). */
    async pause(ms = HANG_BOUND_MS + 2000) {
      const paused = new Promise((r) => pausedWaiters.push(r))
      child.stdin.write('pause\n')
      let t
      await Promise.race([paused, new Promise((_, reject) => (t = setTimeout(() => reject(new Error(`writer did not pause in ${ms} ms: a write hangs`)), ms)))])
      clearTimeout(t)
    },
    resume() {
      child.stdin.write('resume\n')
    },
    /** Lets the writes in flight finish, closes the store, exits (SIGKILL after 15 s). */
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return exited
      child.stdin.write('stop\n')
      const t = setTimeout(() => child.kill('SIGKILL'), 15_000)
      const r = await exited
      clearTimeout(t)
      ledger.forget(proc)
      return r
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
      const r = await exited
      ledger.forget(proc)
      return r
    },
  }
}

/** Reads every record through a fresh store (no cache) in a new process. */
async function readFresh(cfg) {
  const child = spawn(process.execPath, [READER, JSON.stringify({ ids: IDS, ...cfg })], { stdio: ['ignore', 'pipe', 'pipe'] })
  children.add(child)
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d) => (stdout += d))
  child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-4000)))
  const t = setTimeout(() => child.kill('SIGKILL'), 60_000)
  const code = await new Promise((r) => child.once('close', r))
  clearTimeout(t)
  const line = stdout.trim().split('\n').pop()
  if (code !== 0 || !line) throw new Error(`reader failed (${code}): ${stderr}`)
  const res = JSON.parse(line)
  if (res.fatal) throw new Error(`reader could not read: ${res.fatal} (${res.errors.slice(-3).join('; ')})`)
  return res
}

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

/**
 * Reads every record again and again through its own store while the faults happen. A value
 * older than what was acknowledged before the read began is counted; errors are recorded by code.
 * An absent record or an unknown value is judged in stop(), once the writer's lines are all in
 * (a delete or put may land before its "begin" line has been parsed here).
 */
class LiveReader {
  constructor(store, ledger) {
    this.store = store
    this.ledger = ledger
    this.counts = emptyCounts()
    this.examples = []
    this.reads = 0
    this.errors = {}
    this.running = false
  }

  start() {
    this.running = true
    this.done = (async () => {
      while (this.running) {
        for (const sid of this.ledger.sessions) {
          for (const [type, ids] of Object.entries(IDS)) {
            if (!this.running) return
            await this.readOnce(sid, type, ids)
          }
        }
        await sleep(5)
      }
    })()
    return this
  }

  async readOnce(sid, type, ids) {
    const before = this.ledger.ackedNow(sid, type, ids)
    let got
    try {
      got = await this.store.getKeys(sid, type, ids)
    } catch (err) {
      this.errors[err.code ?? err.name] = (this.errors[err.code ?? err.name] ?? 0) + 1
      await sleep(50)
      return
    }
    this.reads++
    ids.forEach((id, i) => {
      const v = got[id] == null ? null : got[id].seq
      const k = key(sid, type, id)
      const r = this.ledger.records.get(k)
      if (v === null || r?.attempts.get(v) !== false) (this.later ??= []).push([k, before[i], v])
      else this.judge(k, before[i], v)
    })
  }

  judge(k, before, v) {
    const bad = verdict(this.ledger.records.get(k), before, v)
    if (bad && bad !== 'unread') {
      this.counts[bad]++
      if (this.examples.length < 4) this.examples.push(`${bad} ${k.replaceAll('\u0000', '/')}: read ${v}, acked before the read ${JSON.stringify(before)}`)
    }
  }

  /** Stops reading; call once the writer's lines are all in (after it exited). */
  async stop() {
    this.running = false
    await this.done
    for (const [k, before, v] of this.later ?? []) this.judge(k, before, v)
    this.later = []
    return this
  }
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

/** One summary line, and the counts that must all be 0. */
function report(name, ledger, views, extra = {}) {
  const total = emptyCounts()
  for (const v of Object.values(views)) for (const k of Object.keys(total)) total[k] += v.counts[k]
  const detail = Object.entries(views)
    .map(([n, v]) => `${n} ${Object.entries(v.counts).filter(([, c]) => c).map(([k, c]) => `${k} ${c}`).join(' ') || 'ok'}`)
    .join('; ')
  const errors = Object.entries(ledger.errors).map(([k, n]) => `${k}×${n}`).join(' ') || 'none'
  const extras = Object.entries(extra).map(([k, v]) => `${k} ${typeof v === 'object' ? JSON.stringify(v) : v}`).join(', ')
  console.log(
    `[order ${name}] writes checked ${ledger.ackedWrites}, lost ${total.lost}, stale ${total.stale}, resurrected ${total.resurrected}` +
      `${total.phantom ? `, phantom ${total.phantom}` : ''} | rejected ${ledger.rejectedWrites} (${errors}), slowest ${ledger.maxMs} ms | ${detail}${extras ? ` | ${extras}` : ''}`,
  )
  for (const [n, v] of Object.entries(views)) for (const e of v.examples ?? []) console.log(`[order ${name}]   ${n}: ${e}`)
  return total
}

/**
 * The assertions of a scenario, soft so that each is reported: the counts over every view, the
 * tier agreement the README promises, and the scenario's own checks.
 */
function check(total, div, own = {}, expected = {}) {
  expect.soft(total, 'lost / stale / resurrected / phantom / unread, summed over every view').toEqual(emptyCounts())
  if (div) expect.soft(div, 'records Redis holds with a value SQL lacks (write-through: Redis never holds what SQL lacks)').toEqual([])
  expect.soft(own, 'scenario checks').toEqual({ ...own, ...expected })
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
