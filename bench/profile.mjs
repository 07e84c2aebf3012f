// A workload in a loop, for a profiler to sample (`perf record -g -p <pid>`), or for a quick
// before/after of one change:
//
//   node bench/profile.mjs <workload> [seconds] [system]
//
// workload: saveCreds (sequential, ~2 KB creds), loop (100 sessions: get + durable set of a
// Signal session), group (10 accounts: get 200 sessions + sender key, durable set of the key).
// system: ours (Redis + PostgreSQL, default), community, behind (write-behind), sqlite.
// Prints ops/s and the CPU per op of this process, Redis and PostgreSQL.
import { mkdtempSync } from 'node:fs'
import Redis from 'ioredis'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { cleanShared } from '../__test__/support/cleanup.mjs'
import { CommunityStore } from './community-baseline.mjs'
import { cpuPerOp, cpuSnapshot, creds, now, senderKey, signalSession } from './lib.mjs'
import { oursFrom } from './systems.mjs'

const [workload = 'saveCreds', seconds = '10', system = 'ours'] = process.argv.slice(2)
const redis = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const postgres = process.env.POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test?sslmode=disable'
const prefix = `wa-profile-${process.pid}-`
let uniq = 0
const id = (w) => `${prefix}${w}-${uniq++}`

const open = {
  ours: () => oursFrom({ redis, database: postgres }),
  behind: () => oursFrom({ redis, database: postgres, durability: 'write-behind', flushIntervalMs: 200 }),
  sqlite: () => oursFrom({ redis: null, database: `sqlite://${join(mkdtempSync(join(tmpdir(), 'wa-profile-')), 'auth.db')}` }),
  community: () => CommunityStore.open({ redisUrl: redis, pgUrl: postgres }),
}[system]
if (!open) throw new Error(`unknown system ${system}`)

/** Runs `step(i)` from `workers` loops until the time is up; returns how many steps ran. */
async function during(ms, workers, step) {
  const end = now() + ms
  let n = 0
  await Promise.all(
    Array.from({ length: workers }, async (_, w) => {
      for (let i = 0; now() < end; i++) {
        await step(w, i)
        n++
      }
    }),
  )
  return n
}

const setups = {
  async saveCreds(sys) {
    const sid = id('creds')
    const c = creds(1)
    await sys.saveCreds(sid, c)
    return { workers: 1, step: (_, i) => sys.saveCreds(sid, { ...c, nextPreKeyId: i }) }
  },
  async loop(sys) {
    const jid = '5511999999999.0'
    const sids = Array.from({ length: 100 }, () => id('loop'))
    await Promise.all(sids.map((sid) => sys.set(sid, { session: { [jid]: signalSession(0) } })))
    return {
      workers: sids.length,
      async step(w, i) {
        const got = await sys.get(sids[w], 'session', [jid])
        if (!got[jid]) throw new Error('session vanished')
        await sys.set(sids[w], { session: { [jid]: signalSession(i + 1) } })
      },
    }
  },
  async group(sys) {
    const ids = Array.from({ length: 200 }, (_, i) => `55119${String(i).padStart(8, '0')}.0`)
    const sk = '120363000000001@g.us::5511999::0'
    const sids = Array.from({ length: 10 }, () => id('group'))
    for (const sid of sids) await sys.set(sid, { session: Object.fromEntries(ids.map((j, i) => [j, signalSession(i)])), 'sender-key': { [sk]: senderKey(1) } })
    return {
      workers: sids.length,
      async step(w, i) {
        const got = await sys.get(sids[w], 'session', ids)
        if (Object.keys(got).length !== 200) throw new Error('group send lost sessions')
        await sys.get(sids[w], 'sender-key', [sk])
        await sys.set(sids[w], { 'sender-key': { [sk]: senderKey(i + 2) } })
      },
    }
  },
}

const setup = setups[workload]
if (!setup) throw new Error(`unknown workload ${workload}`)
const sys = await open()
try {
  const { workers, step } = await setup(sys)
  await during(1000, workers, step) // warm up
  const info = new Redis(redis)
  const redisPid = Number(/process_id:(\d+)/.exec(await info.info('server'))?.[1]) || null
  info.disconnect()
  const cpu0 = cpuSnapshot(redisPid)
  const t0 = now()
  const n = await during(Number(seconds) * 1000, workers, step)
  const ms = now() - t0
  const cpu = cpuPerOp(cpu0, cpuSnapshot(redisPid), n)
  console.log(
    `${workload} on ${system}: ${Math.round(n / (ms / 1000))} ops/s, ${(ms / n).toFixed(3)} ms each; CPU per op µs: node ${cpu.node.toFixed(0)}, redis ${cpu.redis.toFixed(0)}, postgres ${cpu.postgres.toFixed(0)}, total ${cpu.total.toFixed(0)}; RSS ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB`,
  )
} finally {
  await sys.close()
  await cleanShared([prefix])
}
