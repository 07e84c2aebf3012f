// Linearizability runs: real processes (fixtures/history-worker.mjs) operate on a few records
// through the public API while a fault runs, each recording its operations in a file of its own;
// the run merges the files into one history and checks it with the history checker
// (tools/linearizability, built once and cached under target/linearizability).
//
//   const bin = await checkerBinary()
//   const result = await runScenario(SCENARIOS.find((s) => s.name === 'forced-takeover'), { backend: 'redis+pg', bin, dir })
//   result.code      0 linearizable, 1 a violation (result.output says which record and ops), 2 bad input
//
// Records: 3 ids (key type 'session') of 2 sessions, named A/0 … B/2 in the history; session A is
// the one the faults are about, B is a control. Every scenario is bounded: it runs `durationMs`
// (default 2,500 ms) of operations plus what its fault needs, and every process exits by itself
// after `lifetimeMs`.
import { spawn, execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { OwnRedis } from './own-redis.mjs'
import { inCI, uniqueId } from './services.mjs'
import { TcpProxy } from './tcp-proxy.mjs'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const WORKER = fileURLToPath(new URL('../fixtures/history-worker.mjs', import.meta.url))
export const CHECKER_DIR = join(ROOT, 'tools', 'linearizability')
const CACHE = join(ROOT, 'target', 'linearizability')
const IDS = ['0', '1', '2']
/** How long a Redis outage or a cut link lasts: past the workers' 1 s call timeout. */
const FAULT_MS = 1500
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

function run(cmd, args, opts = {}) {
  return new Promise((resolve) => {
    execFile(cmd, args, { maxBuffer: 64 * 2 ** 20, ...opts }, (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, error: err, stdout, stderr }))
  })
}

/**
 * What a linearizability run needs on this machine: cargo (to build the checker) and a
 * redis-server binary (the runs' own Redis). Missing: throws under CI=true, else a SKIPPED line
 * and false.
 */
export async function historyToolsAvailable() {
  const missing = []
  if ((await run('cargo', ['--version'])).code !== 0) missing.push('cargo (the checker is built with it)')
  if ((await run('redis-server', ['--version'])).code !== 0) missing.push('redis-server (the runs start their own)')
  if (missing.length === 0) return true
  if (inCI) throw new Error(`the linearizability runs need ${missing.join(' and ')} under CI`)
  console.warn(`SKIPPED: no ${missing.join(', no ')}; the linearizability runs need them`)
  return false
}

/** A digest of the checker's sources: the cached binary is rebuilt only when it changes. */
function sourceDigest() {
  const h = createHash('sha256')
  const walk = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      if (e.name === 'target') continue
      const p = join(d, e.name)
      if (e.isDirectory()) walk(p)
      else h.update(`${p.slice(CHECKER_DIR.length)}\0`).update(readFileSync(p))
    }
  }
  walk(CHECKER_DIR)
  return h.digest('hex')
}

/** The checker binary, built (release) when its sources changed since the cached build. */
export async function checkerBinary() {
  const bin = join(CACHE, 'wa-linearizability')
  const stamp = `${bin}.sources`
  const digest = sourceDigest()
  if (existsSync(bin) && existsSync(stamp) && readFileSync(stamp, 'utf8') === digest) return bin
  mkdirSync(CACHE, { recursive: true })
  const built = await run('cargo', ['build', '--release', '--locked', '--manifest-path', join(CHECKER_DIR, 'Cargo.toml'), '--target-dir', join(CACHE, 'build'), '--message-format=json-render-diagnostics'], { cwd: ROOT })
  if (built.code !== 0) throw new Error(`building the history checker failed:\n${built.stderr.slice(-4000)}`)
  // where cargo put it (.cargo/config.toml names a target triple, which adds a folder)
  const exe = built.stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l))
    .find((m) => m.reason === 'compiler-artifact' && m.executable && m.target?.name === 'wa-linearizability')?.executable
  if (!exe) throw new Error('cargo built the history checker but named no executable')
  copyFileSync(exe, bin)
  writeFileSync(stamp, digest)
  return bin
}

/** Bounds of one checker run: it is killed past them (and the run fails, saying so). */
const CHECK_MEMORY_BYTES = 4 * 2 ** 30
const CHECK_TIMEOUT_MS = 120_000
let prlimit = null

/**
 * Runs the checker on history files: { code, output, report (its --json), html }. Codes: 0 ok,
 * 1 a violation, 2 bad input; anything else is the checker past its memory or time bound.
 */
export async function check(bin, files, { html, json } = {}) {
  const jsonPath = json ?? `${files[0]}.report.json`
  const htmlPath = html ?? `${files[0]}.html`
  // a report an earlier run left must not pass for this one's (bad input writes none)
  rmSync(jsonPath, { force: true })
  prlimit ??= (await run('prlimit', ['--version'])).code === 0
  const args = ['--json', jsonPath, '--html', htmlPath, ...files]
  const r = prlimit
    ? await run('prlimit', [`--as=${CHECK_MEMORY_BYTES}`, '--', bin, ...args], { timeout: CHECK_TIMEOUT_MS, killSignal: 'SIGKILL' })
    : await run(bin, args, { timeout: CHECK_TIMEOUT_MS, killSignal: 'SIGKILL' })
  if (![0, 1, 2].includes(r.code)) {
    return { code: r.code, output: `the checker gave up (past ${CHECK_MEMORY_BYTES / 2 ** 30} GiB or ${CHECK_TIMEOUT_MS / 1000} s, or it crashed: ${r.error?.signal ?? r.code}): ${r.stdout}${r.stderr}`.slice(0, 8000), report: null, html: null }
  }
  let report = null
  try {
    report = JSON.parse(readFileSync(jsonPath, 'utf8'))
  } catch {
    // bad input writes no report
  }
  return { code: r.code, output: `${r.stdout}${r.stderr}`, report, html: r.code === 1 ? htmlPath : null }
}

/**
 * Merges the workers' files (an invocation line, then an answer line per operation) into one
 * history of operations, written to `out`. An invocation without an answer stays: the call never
 * returned (a write of unknown outcome).
 */
export function mergeHistory(files, out) {
  const ops = []
  for (const f of files) {
    if (!existsSync(f)) continue
    const open = new Map()
    for (const l of readFileSync(f, 'utf8').split('\n')) {
      if (!l) continue
      let o
      try {
        o = JSON.parse(l)
      } catch {
        continue // a line cut by a kill
      }
      if (o.t === 'i') {
        const op = { proc: o.proc, record: o.record, op: o.op, ...(o.op === 'write' ? { value: o.value } : {}), invoke: o.invoke }
        open.set(o.n, op)
        ops.push(op)
      } else if (o.t === 'r') {
        const op = open.get(o.n)
        if (!op) continue
        open.delete(o.n)
        op.return = o.return
        op.outcome = o.outcome
        if (op.op === 'read' && o.outcome === 'ok') op.value = o.value
      }
    }
  }
  writeFileSync(out, ops.map((o) => JSON.stringify(o)).join('\n') + '\n')
  return ops
}

/** A worker process; `events` are its stdout lines. */
function startWorker(cfg, children) {
  const child = spawn(process.execPath, [WORKER, JSON.stringify(cfg)], { stdio: ['pipe', 'pipe', 'pipe'] })
  children.add(child)
  const events = []
  const waiters = []
  let stderr = ''
  child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-3000)))
  createInterface({ input: child.stdout }).on('line', (l) => {
    try {
      events.push(JSON.parse(l))
    } catch {
      return
    }
    for (const w of [...waiters]) if (w.check()) (waiters.splice(waiters.indexOf(w), 1), w.resolve())
  })
  const exited = new Promise((r) => child.once('close', (code, signal) => r({ code, signal })))
  exited.then(() => {
    children.delete(child)
    for (const w of [...waiters]) w.fail()
  })
  const until = (pred, what, ms = 15_000) =>
    new Promise((resolve, reject) => {
      const check = () => events.some(pred)
      if (check()) return resolve(events.find(pred))
      const fail = () => (clearTimeout(t), reject(new Error(`${cfg.proc}: ${what}: exited or timed out; last events ${JSON.stringify(events.slice(-4))}; stderr ${stderr.slice(-600)}`)))
      const t = setTimeout(fail, ms)
      waiters.push({ check, resolve: () => (clearTimeout(t), resolve(events.find(pred))), fail })
    })
  return {
    cfg,
    child,
    events,
    until,
    exited,
    stopped: false,
    send: (c) => child.stdin.writable && child.stdin.write(`${c}\n`),
    signal: (s) => child.exitCode === null && child.signalCode === null && child.kill(s),
  }
}

/** A proxy cutting one link of the redis+pg runs (`proxy`: 'redis' or 'sql'). */
function linkCut(proxy, label) {
  return {
    name: `${proxy}-link-cut`,
    about: `a proxy cuts the ${label} link (connections reset, then a partition that delivers late)`,
    backends: ['redis+pg'],
    proxy,
    faulty: true,
    async run(x) {
      await x.holder('holder', ['A', 'B'], { ttlMs: 3000 })
      await x.readers(['A', 'B'])
      x.go()
      await x.at(0.25)
      x.proxy.cut({ mode: 'reset' })
      await sleep(FAULT_MS)
      x.proxy.restore()
      await x.after(0.25)
      x.proxy.cut({ mode: 'blackhole', existing: 'stall' })
      await sleep(FAULT_MS)
      x.proxy.restore()
      await x.after(0.4)
    },
  }
}

/**
 * The scenarios. `backends`: where each runs ('redis+pg': a Redis of the run's own and the shared
 * PostgreSQL; 'sqlite': one SQLite file). `run(x)` starts workers, says 'go', and drives the fault
 * with `x.at(fraction of durationMs)`. Besides what the checker checks, a run must show that its
 * fault took effect (see `effects`): `faulty` (some call failed or never returned), `acked` (these
 * processes had a write acknowledged), `fenced` (these had a write refused with ERR_SESSION_LOCKED).
 */
export const SCENARIOS = [
  {
    name: 'redis-restart',
    about: 'Redis SIGKILLed and restarted empty while a holder writes and readers read',
    backends: ['redis+pg'],
    faulty: true,
    async run(x) {
      await x.holder('holder', ['A', 'B'], { ttlMs: 3000 })
      await x.readers(['A', 'B'])
      x.go()
      await x.at(0.3)
      await x.redis.kill()
      await sleep(FAULT_MS) // longer than a call's timeout: calls fail
      await x.redis.start()
      await x.after(0.5)
    },
  },
  linkCut('redis', 'Redis'),
  linkCut('sql', 'SQL'),
  {
    name: 'paused-holder',
    about: 'the holder of A (1 s lease) SIGSTOPped 1.7 s while another process takes A (waitMs) and writes, then SIGCONT',
    backends: ['redis+pg', 'sqlite'],
    acked: ['taker'],
    fenced: ['holder-a'],
    async run(x) {
      const a = await x.holder('holder-a', ['A'], { ttlMs: 1000 })
      await x.holder('holder-b', ['B'], { ttlMs: 3000 })
      await x.readers(['A', 'B'])
      x.go()
      await x.at(0.25)
      await x.freeze(a)
      const stoppedAt = Date.now()
      const taker = await x.holder('taker', ['A'], { ttlMs: 1000, waitMs: 6000 }, { readyMs: 10_000 })
      taker.send('go')
      await sleep(Math.max(0, 1700 - (Date.now() - stoppedAt)))
      x.thaw(a)
      await x.after(0.5)
    },
  },
  {
    name: 'paused-holder-tool-writes',
    about: 'the holder of A (1 s lease) SIGSTOPped 1.7 s while a tool writes A with BaileysAuthStore.setKeys (nobody holds A then), then SIGCONT',
    backends: ['redis+pg', 'sqlite'],
    acked: ['tool'],
    fenced: ['holder-a'],
    async run(x) {
      const a = await x.holder('holder-a', ['A'], { ttlMs: 1000 })
      await x.holder('holder-b', ['B'], { ttlMs: 3000 })
      const tool = await x.worker('tool', 'tool', ['A'], { everyMs: 30 })
      await x.readers(['A', 'B'])
      x.go(tool)
      await x.at(0.25)
      await x.freeze(a)
      await sleep(1200) // past the lease
      tool.send('go')
      await sleep(500)
      await x.stopWorker(tool)
      x.thaw(a)
      await x.after(0.5)
    },
  },
  {
    name: 'tool-lease-off',
    about: 'a tool with `lease: false` reads and writes the records of A while its holder writes',
    backends: ['redis+pg', 'sqlite'],
    acked: ['tool'],
    async run(x) {
      await x.holder('holder-a', ['A'], { ttlMs: 3000 })
      await x.holder('holder-b', ['B'], { ttlMs: 3000 })
      await x.worker('tool', 'tool', ['A'], { storeLease: false, everyMs: 15 })
      await x.readers(['A', 'B'])
      x.go()
      await x.at(1)
    },
  },
  {
    name: 'unheld-writers',
    about: 'two processes write session B, which nobody holds, with BaileysAuthStore.setKeys (default lease setting), each reading first',
    backends: ['redis+pg', 'sqlite'],
    acked: ['tool-1', 'tool-2'],
    async run(x) {
      await x.holder('holder-a', ['A'], { ttlMs: 3000 })
      await x.worker('tool', 'tool-1', ['B'], { everyMs: 15 })
      await x.worker('tool', 'tool-2', ['B'], { everyMs: 15 })
      await x.readers(['A', 'B'])
      x.go()
      await x.at(1)
    },
  },
  {
    name: 'forced-takeover',
    about: 'an admin process writes A with { force: true } while its holder keeps writing',
    backends: ['redis+pg', 'sqlite'],
    acked: ['admin'],
    fenced: ['holder-a'],
    async run(x) {
      await x.holder('holder-a', ['A'], { ttlMs: 3000 })
      await x.holder('holder-b', ['B'], { ttlMs: 3000 })
      const admin = await x.worker('tool', 'admin', ['A'], { force: true, everyMs: 40 })
      await x.readers(['A', 'B'])
      x.go(admin)
      await x.at(0.3)
      admin.send('go')
      await x.at(0.55)
      await x.stopWorker(admin)
      await x.at(1)
    },
  },
  {
    name: 'write-behind',
    about: 'every process in write-behind (flush every 100 ms): a holder writes, readers read',
    backends: ['redis+pg'],
    durability: 'write-behind',
    async run(x) {
      await x.holder('holder', ['A', 'B'], { ttlMs: 3000 })
      await x.readers(['A', 'B'])
      x.go()
      await x.at(1)
    },
  },
]

/**
 * The PostgreSQL server for the redis+pg runs (POSTGRES_URL, or the local defaults), probed with
 * `pg` (the store would refuse a database another build migrated further), or null after a
 * SKIPPED line; under CI=true an unreachable server throws.
 */
export async function postgresServer() {
  const candidates = process.env.POSTGRES_URL ? [process.env.POSTGRES_URL] : ['postgres://postgres@127.0.0.1:5432/test', 'postgres://root@127.0.0.1:5432/test']
  const errors = []
  for (const url of candidates) {
    const c = new pg.Client({ connectionString: url })
    try {
      await c.connect()
      await c.query('SELECT 1')
      return url
    } catch (err) {
      errors.push(err.message)
    } finally {
      await c.end().catch(() => {})
    }
  }
  if (inCI) throw new Error(`PostgreSQL is required under CI but unreachable: ${errors.join('; ')}`)
  console.warn(`SKIPPED: PostgreSQL unreachable (${errors.join('; ')}); the redis+pg linearizability runs need it`)
  return null
}

/**
 * A database of the runs' own on the shared PostgreSQL server (the shared `test` database may
 * hold another build's schema, and other suites' sessions): { url, drop() }.
 */
export async function ownDatabase(postgres) {
  const name = `wa_history_${process.pid}_${Date.now().toString(36)}`
  const admin = new pg.Client({ connectionString: postgres })
  await admin.connect()
  try {
    await admin.query(`CREATE DATABASE ${name}`)
  } finally {
    await admin.end()
  }
  const u = new URL(postgres)
  u.pathname = `/${name}`
  if (!u.searchParams.has('sslmode')) u.searchParams.set('sslmode', 'disable')
  return {
    url: u.toString(),
    async drop() {
      const c = new pg.Client({ connectionString: postgres })
      await c.connect()
      try {
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
      } finally {
        await c.end()
      }
    },
  }
}

/** The (scenario, backend) pairs to run, in order. */
export function scenarioRuns(names) {
  const out = []
  for (const s of SCENARIOS) if (!names || names.includes(s.name)) for (const b of s.backends) out.push({ scenario: s, backend: b })
  return out
}

/**
 * Runs one scenario on one backend and checks its history. `postgres`: a PostgreSQL URL (redis+pg;
 * ownDatabase()); `readers`: reader processes. The history and the checker's report stay in a folder
 * of `dir`. Returns { name, code, output, report, html, history, sessions, workers: { proc: events } }.
 */
export async function runScenario(scenario, { backend, bin, postgres, durationMs = 2500, readers = 2, dir: parent }) {
  const name = `${scenario.name} (${backend})`
  const dir = mkdtempSync(join(parent ?? tmpdir(), `${scenario.name}-${backend.replace(/\W/g, '')}-`))
  const children = new Set()
  const workers = []
  let redis = null
  let proxy = null
  const sessions = Object.fromEntries(['A', 'B'].map((label) => [label, { label, sid: uniqueId(`hist-${scenario.name}-${label}`) }]))
  try {
    let redisUrl = null
    let database
    if (backend === 'redis+pg') {
      redis = await OwnRedis.start()
      redisUrl = redis.url
      database = postgres
      if (scenario.proxy === 'redis') {
        proxy = await TcpProxy.start({ port: redis.port })
        redisUrl = proxy.rewrite(redis.url)
      } else if (scenario.proxy === 'sql') {
        proxy = await TcpProxy.start({ port: Number(new URL(database).port || 5432) })
        database = proxy.rewrite(database)
      }
    } else {
      database = `sqlite://${join(dir, 'auth.db')}`
    }
    let t0 = null
    const pending = new Set() // workers told to wait for their own 'go'
    const x = {
      backend,
      redis,
      proxy,
      durationMs,
      async worker(role, proc, labels, opts = {}, { readyMs = 15_000 } = {}) {
        const cfg = {
          role,
          proc,
          out: join(dir, `${proc}.jsonl`),
          redis: redisUrl,
          database,
          durability: scenario.durability ?? 'write-through',
          sessions: labels.map((l) => sessions[l]),
          ids: IDS,
          ...opts,
        }
        const w = startWorker(cfg, children)
        workers.push(w)
        const first = await w.until((e) => e.ready || e.refused, 'ready', readyMs)
        if (first.refused) throw new Error(`${proc} could not start: ${first.code} ${first.message}`)
        return w
      },
      holder(proc, labels, opts, more) {
        return x.worker('holder', proc, labels, opts, more)
      },
      async readers(labels, count = readers) {
        for (let i = 1; i <= count; i++) await x.worker('reader', `reader-${i}`, labels, { everyMs: 15 })
      },
      /** Every worker operates from now on, but those named (they wait for their own 'go'). */
      go(...held) {
        for (const h of held) pending.add(h)
        for (const w of workers) if (!pending.has(w)) w.send('go')
        t0 = Date.now()
      },
      at(fraction) {
        return sleep(Math.max(0, t0 + fraction * durationMs - Date.now()))
      },
      after(fraction) {
        return sleep(fraction * durationMs)
      },
      /** SIGSTOP `w` (on SQLite between operations: a process frozen inside its transaction
       * holds the file's one write lock, README; a GC pause there). */
      async freeze(w) {
        if (backend === 'sqlite') {
          w.send('pause')
          await w.until((e) => e.paused, 'paused between operations')
        }
        w.signal('SIGSTOP')
      },
      thaw(w) {
        w.signal('SIGCONT')
        w.send('resume')
      },
      async stopWorker(w) {
        w.stopped = true
        w.send('stop')
        await Promise.race([w.exited, sleep(8000)])
      },
    }
    await scenario.run(x)
    // stop everything (a stopped process is continued first), then wait for the files
    for (const w of workers) {
      w.signal('SIGCONT')
      if (w.stopped) continue
      w.send('resume')
      w.send('stop')
    }
    proxy?.restore()
    if (redis && !redis.child) await redis.start()
    const deadline = sleep(15_000)
    await Promise.race([Promise.all(workers.map((w) => w.exited)), deadline])
    for (const w of workers) w.signal('SIGKILL')
    await Promise.all(workers.map((w) => w.exited))
    const history = join(dir, 'history.jsonl')
    const ops = mergeHistory(
      workers.map((w) => w.cfg.out),
      history,
    )
    const result = await check(bin, [history])
    return {
      name,
      scenario: scenario.name,
      backend,
      ...result,
      history,
      missing: effects(scenario, ops),
      sessions: Object.fromEntries(Object.values(sessions).map((s) => [s.label, s.sid])),
      workers: Object.fromEntries(workers.map((w) => [w.cfg.proc, w.events.filter((e) => !e.ready)])),
    }
  } finally {
    for (const c of children) c.kill('SIGKILL')
    await proxy?.close()
    await redis?.kill()
  }
}

/**
 * What a run's history lacks to show its scenario happened: every run has an acknowledged write
 * and an answered read; see SCENARIOS for `faulty`, `acked` and `fenced`. [] when nothing.
 */
export function effects(scenario, ops) {
  const has = (pred) => ops.some(pred)
  const missing = []
  if (!has((o) => o.op !== 'read' && o.outcome === 'ok')) missing.push('no write was acknowledged')
  if (!has((o) => o.op === 'read' && o.outcome === 'ok')) missing.push('no read was answered')
  if (scenario.faulty && !has((o) => o.outcome !== 'ok')) missing.push('no call failed or went unanswered: the fault took no effect')
  for (const p of scenario.acked ?? []) if (!has((o) => o.proc === p && o.op !== 'read' && o.outcome === 'ok')) missing.push(`${p}: no write acknowledged`)
  for (const p of scenario.fenced ?? []) if (!has((o) => o.proc === p && o.outcome === 'ERR_SESSION_LOCKED')) missing.push(`${p}: no write refused with ERR_SESSION_LOCKED`)
  return missing
}

/** One line per worker of what it said besides its operations (lost leases, warnings, refusals). */
export function workerNotes(result) {
  const lines = []
  for (const [proc, events] of Object.entries(result.workers)) {
    const counts = {}
    for (const e of events) {
      const k = e.lost ? `lost lease ${e.label}` : e.log ? `${e.level} ${e.log}` : e.refused ? `refused ${e.code}` : e.stopped ? null : e.paused ? null : JSON.stringify(e)
      if (k) counts[k] = (counts[k] ?? 0) + 1
    }
    if (Object.keys(counts).length) lines.push(`  ${proc}: ${Object.entries(counts).map(([k, n]) => (n > 1 ? `${k} x${n}` : k)).join(', ')}`)
  }
  return lines.join('\n')
}
