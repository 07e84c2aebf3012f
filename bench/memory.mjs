// Issue 3 benchmark: N sessions of realistic size (800 pre-keys, 50 Signal sessions, 3 sender
// keys) written through Redis + SQL with the memory manager holding Redis to a 64 MB budget.
// Reports peak and steady Redis usage against the budget, eviction throughput, and the time to
// read an evicted session back compared with a session still in Redis and with a cold open.
//   BENCH_SESSIONS (default 10000), BENCH_BUDGET_MB (default 64), DATABASE_URL (default SQLite file)
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Redis from 'ioredis'
import { BaileysAuthStore, BaileysOrmAdapter, BaileysRedisAdapter } from '../index.js'
import { OwnRedis, fmt, machine, median, mib, now, pairedSession, percentile } from './lib.mjs'

const N = Number(process.env.BENCH_SESSIONS ?? 10000)
const BUDGET = Number(process.env.BENCH_BUDGET_MB ?? 64) * 2 ** 20
const database = process.env.DATABASE_URL ?? `sqlite://${join(mkdtempSync(join(tmpdir(), 'wa-bench-mem-')), 'auth.db')}`

export async function runMemoryBench(print = console.log) {
  const own = await OwnRedis.start()
  const raw = new Redis(own.url)
  const baseline = Number(/used_memory:(\d+)/.exec(await raw.info('memory'))[1])
  const open = () =>
    new BaileysAuthStore(new BaileysRedisAdapter(own.url), new BaileysOrmAdapter(database), { cache: false })
  const store = new BaileysAuthStore(new BaileysRedisAdapter(own.url), new BaileysOrmAdapter(database), {
    cache: false,
    memoryManager: { maxMemoryBytes: BUDGET, checkIntervalMs: 100, measure: 'server', logger: { warn: print } },
  })
  const sample = { peak: 0, series: [] }
  let sampling = true
  const sampler = (async () => {
    while (sampling) {
      const used = Number(/used_memory:(\d+)/.exec(await raw.info('memory'))[1])
      sample.peak = Math.max(sample.peak, used)
      sample.series.push(used)
      await new Promise((r) => setTimeout(r, 20))
    }
  })()

  print(`memory bench: ${N} sessions, budget ${mib(BUDGET)}, SQL ${database.split(':')[0]}, Redis baseline ${mib(baseline)}`)
  const t0 = now()
  const one = pairedSession(0)
  const bytesPerSession = Buffer.byteLength(JSON.stringify(one))
  let next = 0
  const worker = async () => {
    while (next < N) {
      const i = next++
      await store.saveCreds(`bench-${i}`, pairedSession(i))
      if (i % 1000 === 999) print(`  ${i + 1} sessions written, Redis ${mib(sample.series.at(-1) ?? 0)}`)
    }
  }
  await Promise.all([worker(), worker(), worker(), worker()])
  const loadMs = now() - t0
  // let the manager settle, then measure the steady state
  await new Promise((r) => setTimeout(r, 1000))
  const steadyFrom = sample.series.length
  await new Promise((r) => setTimeout(r, 1000))
  sampling = false
  await sampler
  const steady = median(sample.series.slice(steadyFrom))
  const mm = await store.memoryManager.getStats()
  // eviction throughput on its own: halve the budget and time one check
  const { RedisMemoryManager } = await import('../index.js')
  const squeeze = new RedisMemoryManager(store._redis.redis, { maxMemoryBytes: steady / 2, evictionThreshold: 80, measure: 'server' })
  const tq = now()
  const squeezed = await squeeze.check()
  const squeezeMs = now() - tq

  // reads: in Redis vs evicted (SQL + warm) vs a cold open of a new store
  const ids = Object.keys(one.keys.session)
  const read = async (s, sid) => {
    const t = now()
    await s.getCreds(sid)
    await s.getKeys(sid, 'session', ids)
    await s.getKeys(sid, 'pre-key', ['1', '2', '3'])
    return now() - t
  }
  const inRedis = mm.sessionMetadata.slice(0, 20).map((m) => m.sessionId)
  const evicted = []
  for (let i = 0; i < N && evicted.length < 20; i++) if (!(await raw.exists(`wa:{s:bench-${i}}:c`))) evicted.push(`bench-${i}`)
  const hot = []
  for (const sid of inRedis) hot.push(await read(store, sid))
  const warm = []
  for (const sid of evicted) warm.push(await read(store, sid))
  const cold = []
  for (const sid of inRedis.slice(0, 10)) {
    const t = now()
    const s = open()
    await read(s, sid)
    cold.push(now() - t)
    await s.close()
  }
  await store.close()
  raw.disconnect()
  await own.kill()

  const evictionRate = mm.evictions / (loadMs / 1000)
  const rows = [
    ['sessions written', fmt(N, 0), `${fmt(N / (loadMs / 1000))} sessions/s, ${mib(bytesPerSession)} of JSON each`],
    ['budget', mib(BUDGET), ''],
    ['peak Redis used_memory', mib(sample.peak), `${fmt((100 * sample.peak) / BUDGET)} % of budget`],
    ['steady Redis used_memory', mib(steady), `${fmt((100 * steady) / BUDGET)} % of budget`],
    ['evictions during the load', fmt(mm.evictions, 0), `${fmt(evictionRate)} sessions/s, paced by the load`],
    ['eviction pass (budget halved)', `${fmt(squeezed.evictedForMemory, 0)} sessions in ${fmt(squeezeMs, 0)} ms`, `${fmt(squeezed.evictedForMemory / (squeezeMs / 1000))} sessions/s, ${mib((squeezed.usedBefore - squeezed.usedAfter) / (squeezeMs / 1000))}/s`],
    ['read of a session in Redis (p50)', `${fmt(median(hot), 2)} ms`, '1.00x'],
    ['read of an evicted session (p50)', `${fmt(median(warm), 2)} ms`, `${fmt(median(warm) / median(hot), 2)}x of in-Redis`],
    ['cold open: new store + read (p50)', `${fmt(median(cold), 2)} ms`, `${fmt(median(cold) / median(hot), 2)}x of in-Redis`],
    ['evicted read p99', `${fmt(percentile(warm, 99), 2)} ms`, ''],
  ]
  print('')
  print('| figure | value | ratio / note |')
  print('| --- | --- | --- |')
  for (const r of rows) print(`| ${r.join(' | ')} |`)
  return { rows, machine: machine() }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await runMemoryBench()
}
