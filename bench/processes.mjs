// Many processes on one Redis Cluster and one PostgreSQL (issue 10): 1,000 sessions in all, served
// by 1 process and then by 4 (each its own share of the sessions, the memory manager on in every
// one), the message loop (get + durable set) on every session. Reports throughput and the
// cluster's memory (summed over the primaries) for both, in the same run.
//   BENCH_PROC_SESSIONS (default 1000), BENCH_PROC_SECONDS (default 8), BENCH_PROC_COUNTS (default 1,4)
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { OwnCluster, infoFields, redisCli } from '../__test__/support/own-cluster.mjs'
import { fmt, mib } from './lib.mjs'

const run = promisify(execFile)
const worker = fileURLToPath(new URL('./processes-worker.mjs', import.meta.url))

export async function runProcessesBench({ services, print, prefix }) {
  if (!services.postgres) {
    print('(skipped: needs PostgreSQL)')
    return null
  }
  const sessions = Number(process.env.BENCH_PROC_SESSIONS ?? 1000)
  const seconds = Number(process.env.BENCH_PROC_SECONDS ?? 8)
  const counts = (process.env.BENCH_PROC_COUNTS ?? '1,4').split(',').map(Number)
  const cluster = await OwnCluster.start({ masters: 3, replicas: 0 })
  const rows = []
  try {
    for (const n of counts) {
      await Promise.all(cluster.masterPorts.map((p) => redisCli(p, 'flushall')))
      const share = Math.ceil(sessions / n)
      const tag = `${prefix}proc${n}-`
      const started = Date.now()
      const outs = await Promise.all(
        Array.from({ length: n }, (_, w) =>
          run(process.execPath, [worker, JSON.stringify({ redis: cluster.url, database: services.postgres, prefix: `${tag}w${w}-`, sessions: Math.min(share, sessions - w * share), seconds })], { maxBuffer: 1 << 24 }).then((r) => JSON.parse(r.stdout)),
        ),
      )
      const memory = (await Promise.all(cluster.masterPorts.map(async (p) => Number(infoFields(await redisCli(p, 'info', 'memory')).used_memory)))).reduce((a, b) => a + b, 0)
      rows.push({ n, ops: outs.reduce((a, o) => a + o.ops, 0), seconds: Math.max(...outs.map((o) => o.seconds)), p50: Math.max(...outs.map((o) => o.p50)), memory, wall: (Date.now() - started) / 1000 })
    }
  } finally {
    await cluster.stop()
  }
  const base = rows[0]
  print(`\n### ${sessions} sessions on a 3-primary Redis Cluster + PostgreSQL, message loop (get + durable set), memory manager on\n`)
  print('| processes | ops/s (all processes) | vs 1 process | worst p50 ms | cluster memory (sum of primaries) |')
  print('| --- | --- | --- | --- | --- |')
  for (const r of rows) {
    const opsPerSec = r.ops / r.seconds
    print(`| ${r.n} | ${fmt(opsPerSec, 0)} | ${fmt(opsPerSec / (base.ops / base.seconds), 2)}x | ${fmt(r.p50, 2)} | ${mib(r.memory)} |`)
  }
  return rows
}
