// A longer linearizability run than CI's (__test__/linearizability.test.mjs): the same scenarios,
// each for longer and several times, then a table of how often each one violated and the first
// counterexample of each. Needs cargo, redis-server, and PostgreSQL for the redis+pg runs (a
// database of the run's own on that server, dropped at the end).
//
//   npm run check:history -- [--duration MS] [--rounds N] [--readers N] [--scenarios a,b]
//                            [--backends redis+pg,sqlite] [--out DIR]
//
//   --duration   ms of operations per scenario run (default 10000; CI runs 2000)
//   --rounds     runs of each scenario on each backend (default 3)
//   --readers    reader processes per run (default 2)
//   --scenarios  names of __test__/support/history.mjs SCENARIOS (default all)
//   --backends   redis+pg and/or sqlite (default both)
//   --out        where the failed runs' histories, reports and HTML timelines stay (default target/linearizability/runs/<time>)
// Exits 1 when any run violated, 2 when a run could not be checked, showed no effect of its
// fault (see effects in __test__/support/history.mjs), or nothing ran at all.
import { mkdirSync, rmSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

// the sessions of this run carry a prefix of their own, removed from the shared services at the end
process.env.WA_TEST_RUN ??= `hist${Date.now().toString(36)}`
const { checkerBinary, historyToolsAvailable, ownDatabase, postgresServer, runScenario, scenarioRuns, workerNotes } = await import('../__test__/support/history.mjs')
const { cleanShared } = await import('../__test__/support/cleanup.mjs')

const { values: opt } = parseArgs({
  options: {
    duration: { type: 'string', default: '10000' },
    rounds: { type: 'string', default: '3' },
    readers: { type: 'string', default: '2' },
    scenarios: { type: 'string' },
    backends: { type: 'string', default: 'redis+pg,sqlite' },
    out: { type: 'string' },
  },
})
const durationMs = Number(opt.duration)
const rounds = Number(opt.rounds)
const readers = Number(opt.readers)
const backends = opt.backends.split(',')
const runs = scenarioRuns(opt.scenarios?.split(',')).filter((r) => backends.includes(r.backend))
if (!(durationMs > 0 && rounds > 0 && readers >= 0) || runs.length === 0) {
  console.error('check-history: nothing to run (see the knobs at the top of scripts/check-history.mjs)')
  process.exit(2)
}
if (!(await historyToolsAvailable())) process.exit(2)
const root = fileURLToPath(new URL('..', import.meta.url))
const out = opt.out ?? join(root, 'target', 'linearizability', 'runs', new Date().toISOString().replace(/[:.]/g, '-'))
mkdirSync(out, { recursive: true })

const bin = await checkerBinary()
const postgres = runs.some((r) => r.backend === 'redis+pg') ? await postgresServer() : null
const db = postgres ? await ownDatabase(postgres) : null
const table = new Map() // name -> { runs, violated, broken, records, first }
let exit = 0
try {
  for (let round = 1; round <= rounds; round++) {
    for (const { scenario, backend } of runs) {
      const name = `${scenario.name} (${backend})`
      const row = table.get(name) ?? { runs: 0, violated: 0, broken: 0, records: 0, first: null }
      table.set(name, row)
      if (backend === 'redis+pg' && !db) continue
      const started = Date.now()
      const r = await runScenario(scenario, { backend, bin, postgres: db?.url, durationMs, readers, dir: out })
      row.runs++
      const summary = r.output.split('\n')[0]
      if (r.code === 0 && r.missing.length > 0) {
        // a history that shows no effect of its fault proves nothing
        row.broken++
        exit = 2
        console.log(`round ${round} ${name}: NOT SHOWN (${r.missing.join('; ')}); history ${r.history}`)
        continue
      }
      if (r.code === 0) {
        rmSync(dirname(r.history), { recursive: true, force: true }) // only failed runs' histories stay
        console.log(`round ${round} ${name}: ok in ${Date.now() - started} ms; ${summary}`)
        continue
      }
      if (r.code === 1) {
        row.violated++
        row.records += r.report?.violatingRecords ?? 0
        row.first ??= r
        exit = Math.max(exit, 1)
        console.log(`round ${round} ${name}: VIOLATION (${r.report?.violatingRecords} of ${r.report?.records} records) in ${Date.now() - started} ms; ${summary}; ${r.html}`)
      } else {
        row.broken++
        exit = 2
        console.log(`round ${round} ${name}: NOT CHECKED (${r.code}): ${r.output.slice(0, 400)}`)
      }
    }
  }
} finally {
  await db?.drop().catch((err) => console.error(`could not drop ${db.url}: ${err.message}`))
  await cleanShared([`wa-test-js-${process.env.WA_TEST_RUN}-`])
}

// every run skipped (no PostgreSQL for the redis+pg ones): nothing was checked
if ([...table.values()].every((row) => row.runs === 0)) exit = 2
console.log(`\n${durationMs} ms per run, ${rounds} round(s), ${readers} reader(s); histories in ${out}\n`)
console.log('| scenario | runs violated | records violated | not checked |')
console.log('| --- | --- | --- | --- |')
for (const [name, row] of table) console.log(`| ${name} | ${row.violated} of ${row.runs} | ${row.records} | ${row.broken} |`)
for (const [name, row] of table) {
  if (!row.first) continue
  const r = row.first
  console.log(`\n== ${name}: first counterexample (sessions ${JSON.stringify(r.sessions)})`)
  console.log(r.output.split('\n').slice(1, 40).join('\n'))
  const notes = workerNotes(r)
  if (notes) console.log(`what the processes reported:\n${notes}`)
}
process.exit(exit)
