// npm run bench: the workload suite (issue 4) and the memory-manager benchmark (issue 3).
// Figures are printed as Markdown and written to bench/RESULTS.md with the machine description.
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { BaileysOrmAdapter, BaileysRedisAdapter } from '../index.js'
import { machine } from './lib.mjs'
import { runMemoryBench } from './memory.mjs'
import { runProcessesBench } from './processes.mjs'
import { BENCH_PREFIX, runSuite } from './suite.mjs'
import { cleanShared } from '../__test__/support/cleanup.mjs'

async function reachable(Adapter, urls) {
  for (const url of urls) {
    const a = new Adapter(url)
    try {
      await a.connect()
      await a.disconnect()
      return url
    } catch {}
  }
  return null
}

const services = {
  redis: await reachable(BaileysRedisAdapter, [process.env.REDIS_URL ?? 'redis://127.0.0.1:6379']),
  // no TLS on loopback, for every system alike (sqlx's default sslmode=prefer costs ~85 ms a connection here)
  postgres: await reachable(
    BaileysOrmAdapter,
    process.env.POSTGRES_URL ? [process.env.POSTGRES_URL] : ['postgres://postgres@127.0.0.1:5432/test?sslmode=disable', 'postgres://root@127.0.0.1:5432/test?sslmode=disable'],
  ),
  mysql: await reachable(BaileysOrmAdapter, process.env.MYSQL_URL ? [process.env.MYSQL_URL] : ['mysql://root@127.0.0.1:3306/test', 'mysql://wa:wa@127.0.0.1:3306/test']),
}
const lines = []
const print = (s) => {
  console.log(s)
  lines.push(s)
}
print(`# Benchmark results\n\nMachine: ${machine()}. Date: ${new Date().toISOString().slice(0, 10)}.`)
print(`Services: Redis ${services.redis ? 'yes' : 'no'}, PostgreSQL ${services.postgres ? 'yes' : 'no'}, MariaDB ${services.mysql ? 'yes' : 'no'}.`)
print('\n## Workloads\n')
if (!process.env.BENCH_ONLY || process.env.BENCH_ONLY === 'suite') await runSuite({ services, print })
print('\n## Many processes on a Redis Cluster\n')
if (!process.env.BENCH_ONLY || process.env.BENCH_ONLY === 'processes') await runProcessesBench({ services, print, prefix: BENCH_PREFIX })
print('\n## Memory manager\n')
if (!process.env.BENCH_ONLY || process.env.BENCH_ONLY === 'memory') await runMemoryBench(print)
// nothing of the benchmark stays in the shared services
await cleanShared([BENCH_PREFIX])
// the log of optimisation steps below KEPT stays as it is: each step's figures were measured then
const KEPT = '<!-- kept: npm run bench rewrites what is above this line, never what follows -->'
const results = new URL('./RESULTS.md', import.meta.url)
if (!process.env.BENCH_NO_WRITE) {
  const old = existsSync(results) ? readFileSync(results, 'utf8') : ''
  const kept = old.includes(KEPT) ? old.slice(old.indexOf(KEPT)) : ''
  writeFileSync(results, lines.join('\n') + '\n' + (kept ? `\n${kept}` : ''))
}
