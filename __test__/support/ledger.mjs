// The ledger of the "signal state never goes backwards" fault tests (order-faults, server-faults,
// disk-faults): what writer processes (fixtures/order-writer.mjs) attempted and what the store
// acknowledged, per record, and the judges that compare any view of the records with it:
//   lost         an acknowledged value (or a delete's absence) that is not what is read back
//   stale        a value older than the last acknowledged one
//   resurrected  a value older than an acknowledged delete
//   phantom      a value no write ever carried
// A write that was rejected or still in flight may have landed (write-through commits SQL before
// Redis answers): its value (or absence) is allowed, never counted.
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { expect } from 'vitest'

export const WRITER = fileURLToPath(new URL('../fixtures/order-writer.mjs', import.meta.url))
export const READER = fileURLToPath(new URL('../fixtures/order-reader.mjs', import.meta.url))

/** The records order-writer writes by default (its sessionRecords / preKeys). */
export const SESSION_RECORDS = 6
export const PRE_KEYS = 12
export const idsOf = (sessionRecords = SESSION_RECORDS, preKeys = PRE_KEYS) => ({
  session: Array.from({ length: sessionRecords }, (_, i) => String(i)),
  'pre-key': Array.from({ length: preKeys }, (_, i) => String(i + 1)),
})
export const IDS = idsOf()

/** No write may take longer than this (timeouts are 1 s per backend call; the SQL queue waits 2). */
export const HANG_BOUND_MS = 8000
export const BACKEND_ERRORS = new Set(['ERR_REDIS', 'ERR_TIMEOUT', 'ERR_DATABASE'])

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
export const recordKey = (sid, type, id) => `${sid}\u0000${type}\u0000${id}`

/**
 * The seq a stored value carries (its pad holds "#seq:<n>#", readable in every stored form),
 * null for a tombstone (a 9-byte Redis envelope flagged deleted, or a NULL SQL value), -1 for
 * bytes that are neither.
 */
export const seqOf = (bytes) => {
  if (bytes == null) return null
  const b = Buffer.from(bytes)
  const m = /#seq:(\d+)#/.exec(b.toString('latin1'))
  if (m) return Number(m[1])
  if (b.length === 9 && b[8] === 1) return null
  return -1
}

/** A logger (pino's shape) that keeps what it gets: { logs: [{ level, code, message }], logger }. */
export function collecting() {
  const logs = []
  const keep = (level) => (obj, message) => logs.push({ level, code: obj?.code, message: String(message) })
  return { logs, logger: { warn: keep('warn'), error: keep('error') } }
}

/** Every child process started here, for an afterAll(killChildren). */
const children = new Set()
export function killChildren() {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
}

export class Ledger {
  /**
   * @param sessions the session ids written
   * @param ids { [type]: [id] } the records written (the writer's sessionRecords / preKeys)
   * @param expectedErrors codes a rejected write may carry; others are listed in `unexpected`
   */
  constructor(sessions, { ids = IDS, expectedErrors = BACKEND_ERRORS } = {}) {
    this.sessions = sessions
    this.ids = ids
    this.expectedErrors = expectedErrors
    this.records = new Map() // key -> { acked: { seq, deleted, at } | null, attempts: Map<seq, deleted> }
    this.pending = new Map() // w -> { at, seq } (begun, not answered; per writer process)
    this.ackedWrites = 0
    this.rejectedWrites = 0
    this.errors = {}
    this.messages = {} // code -> first message
    this.maxMs = 0
    this.unexpected = []
    this.logs = [] // { log: level, code, message, proc } the writers' loggers got
    this.begunAt = new Map() // seq -> when its write began (ms)
  }

  rec(sid, type, id) {
    const k = recordKey(sid, type, id)
    let r = this.records.get(k)
    if (!r) this.records.set(k, (r = { acked: null, attempts: new Map() }))
    return r
  }

  /** One stdout line of a writer; `proc` tells the writers of several rounds apart. */
  line(o, proc) {
    if (o.log) {
      this.logs.push({ ...o, proc })
    } else if (o.begin) {
      this.begunAt.set(o.seq, Date.now())
      for (const r of o.records) this.rec(o.sid, r.type, r.id).attempts.set(o.seq, Boolean(r.deleted))
      this.pending.set(`${proc}:${o.w}`, { at: Date.now(), seq: o.seq })
    } else if (o.error) {
      if (this.pending.delete(`${proc}:${o.w}`)) this.rejectedWrites++
      this.errors[o.error] = (this.errors[o.error] ?? 0) + 1
      this.messages[o.error] ??= o.message
      this.maxMs = Math.max(this.maxMs, o.ms ?? 0)
      if (!this.expectedErrors.has(o.error)) this.unexpected.push(`${o.error}: ${o.message}`)
    } else if (o.type) {
      if (this.pending.delete(`${proc}:${o.w}`)) this.ackedWrites++
      this.maxMs = Math.max(this.maxMs, o.ms ?? 0)
      const r = this.rec(o.sid, o.type, o.id)
      if (!r.acked || o.seq > r.acked.seq) r.acked = { seq: o.seq, deleted: Boolean(o.deleted), at: Date.now() }
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
    return ids.map((id) => this.records.get(recordKey(sid, type, id))?.acked ?? null)
  }

  allKeys() {
    const out = []
    for (const sid of this.sessions) for (const [type, ids] of Object.entries(this.ids)) for (const id of ids) out.push(recordKey(sid, type, id))
    return out
  }
}

/**
 * Judges one observed value (seq, null for absent) of a record against what was acknowledged
 * (`acked`, the last acknowledged state, possibly from before the read) and what was attempted.
 * Returns null (fine) or the kind of violation.
 */
export function verdict(r, acked, v) {
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

export function emptyCounts() {
  return { lost: 0, stale: 0, resurrected: 0, phantom: 0, unread: 0 }
}

/** Counts the violations of one view ({ key: seq | null }) of every record. */
export function judge(ledger, observed) {
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

/** A writer process (fixtures/order-writer.mjs) whose lines go into `ledger`. */
export function startWriter(cfg, ledger, proc = 'w0') {
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

/** Reads every record through a fresh store (no cache) in a new process (fixtures/order-reader.mjs). */
export async function readFresh(cfg) {
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
 * Reads every record again and again through its own store while the faults happen. A value
 * older than what was acknowledged before the read began is counted; errors are recorded by code.
 * An absent record or an unknown value is judged in stop(), once the writer's lines are all in
 * (a delete or put may land before its "begin" line has been parsed here). `onStale(k, before,
 * v, at)` is told of each stale or resurrected read, with the time the read began.
 */
export class LiveReader {
  constructor(store, ledger, { onStale } = {}) {
    this.store = store
    this.ledger = ledger
    this.onStale = onStale
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
          for (const [type, ids] of Object.entries(this.ledger.ids)) {
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
    const at = Date.now()
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
      const k = recordKey(sid, type, id)
      const r = this.ledger.records.get(k)
      if (v === null || r?.attempts.get(v) !== false) (this.later ??= []).push([k, before[i], v, at])
      else this.judge(k, before[i], v, at)
    })
  }

  judge(k, before, v, at) {
    const bad = verdict(this.ledger.records.get(k), before, v)
    if (bad && bad !== 'unread') {
      this.counts[bad]++
      if (this.examples.length < 4) this.examples.push(`${bad} ${k.replaceAll('\u0000', '/')}: read ${v}, acked before the read ${JSON.stringify(before)}`)
      if (bad === 'stale' || bad === 'resurrected') this.onStale?.(k, before, v, at)
    }
  }

  /** Stops reading; call once the writer's lines are all in (after it exited). */
  async stop() {
    this.running = false
    await this.done
    for (const [k, before, v, at] of this.later ?? []) this.judge(k, before, v, at)
    this.later = []
    return this
  }
}

/** One summary line (tagged `[label name]`), and the counts summed over every view. */
export function report(name, ledger, views, extra = {}, label = 'order') {
  const total = emptyCounts()
  for (const v of Object.values(views)) for (const k of Object.keys(total)) total[k] += v.counts[k]
  const detail = Object.entries(views)
    .map(([n, v]) => `${n} ${Object.entries(v.counts).filter(([, c]) => c).map(([k, c]) => `${k} ${c}`).join(' ') || 'ok'}`)
    .join('; ')
  const errors = Object.entries(ledger.errors).map(([k, n]) => `${k}×${n}`).join(' ') || 'none'
  const extras = Object.entries(extra).map(([k, v]) => `${k} ${typeof v === 'object' ? JSON.stringify(v) : v}`).join(', ')
  console.log(
    `[${label} ${name}] writes checked ${ledger.ackedWrites}, lost ${total.lost}, stale ${total.stale}, resurrected ${total.resurrected}` +
      `${total.phantom ? `, phantom ${total.phantom}` : ''} | rejected ${ledger.rejectedWrites} (${errors}), slowest ${ledger.maxMs} ms | ${detail}${extras ? ` | ${extras}` : ''}`,
  )
  for (const [n, v] of Object.entries(views)) for (const e of v.examples ?? []) console.log(`[${label} ${name}]   ${n}: ${e}`)
  return total
}

/**
 * The assertions of a scenario, soft so that each is reported: the counts over every view, the
 * tier agreement the README promises, and the scenario's own checks.
 */
export function check(total, div, own = {}, expected = {}) {
  expect.soft(total, 'lost / stale / resurrected / phantom / unread, summed over every view').toEqual(emptyCounts())
  if (div) expect.soft(div, 'records Redis holds with a value SQL lacks (write-through: Redis never holds what SQL lacks)').toEqual([])
  expect.soft(own, 'scenario checks').toEqual({ ...own, ...expected })
}

/**
 * Writes order-writer's records through a store of this process, one write at a time, into
 * `ledger` (the same lines a writer process prints): { seq, pad: "#seq:<n>#…" } values of one
 * `session` and one `pre-key` record per write.
 */
export class InProcessWriter {
  constructor(store, ledger, { seqBase = 0, padBytes = 96 } = {}) {
    this.store = store
    this.ledger = ledger
    this.seq = seqBase
    this.w = 0
    this.filler = '-~'.repeat(Math.ceil(padBytes / 2)).slice(0, padBytes)
  }

  /** One write; resolves with { seq, ok, error } (never rejects). */
  async write(sid = this.ledger.sessions[0]) {
    const seq = ++this.seq
    const w = ++this.w
    const ids = this.ledger.ids
    const pick = (list) => list[Math.floor(Math.random() * list.length)]
    const records = [{ type: 'session', id: pick(ids.session) }, { type: 'pre-key', id: pick(ids['pre-key']) }]
    const data = {}
    for (const r of records) data[r.type] = { [r.id]: { seq, pad: `#seq:${seq}#${this.filler}` } }
    this.ledger.line({ w, begin: true, sid, seq, records }, 'in-process')
    const t0 = performance.now()
    try {
      await this.store.setKeys(sid, data)
      const ms = Math.round(performance.now() - t0)
      for (const r of records) this.ledger.line({ w, sid, type: r.type, id: r.id, seq, ms }, 'in-process')
      return { seq, ok: true }
    } catch (err) {
      this.ledger.line({ w, error: err.code ?? err.name ?? 'UNKNOWN', sid, seq, ms: Math.round(performance.now() - t0), message: String(err.message).slice(0, 300) }, 'in-process')
      return { seq, ok: false, error: err }
    }
  }
}
