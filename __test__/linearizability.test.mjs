// Linearizability of every record under faults, checked by a real checker: real processes (a lease
// holder through useBaileysAuthState, readers holding no lease, tools writing with leases off or
// with { force: true }) operate on 2 sessions x 3 records while one fault runs (Redis SIGKILLed
// and restarted empty, the Redis or SQL link cut, the holder SIGSTOPped past its lease while
// another process takes the session or writes it, a tool writing with `lease: false`, two writers
// of a session nobody holds, a forced takeover, write-behind). Each process records every
// operation (invoke and return times of CLOCK_MONOTONIC, value, outcome) in a file of its own;
// the files are merged and checked by tools/linearizability (todc-utils' WGL checker): each
// record's history must be linearizable as a register, a write of unknown outcome may or may not
// have happened, a write refused with ERR_SESSION_LOCKED must never be read. A failure prints the
// checker's counterexample and the path of its HTML timeline.
//
// The checker itself is tested first on hand-made histories (one linearizable, a stale read after
// an acknowledged write, a read of a fenced write's value, bad input); its Rust tests
// (`cargo test --manifest-path tools/linearizability/Cargo.toml`) add more, and compare its
// verdicts with stateright's LinearizabilityTester on random histories.
// `npm run check:history` runs the same scenarios longer and more often.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { SCENARIOS, check, checkerBinary, effects, historyToolsAvailable, ownDatabase, postgresServer, runScenario, scenarioRuns, workerNotes } from './support/history.mjs'

const available = await historyToolsAvailable()
const postgres = available ? await postgresServer() : null
const dir = mkdtempSync(join(tmpdir(), 'wa-history-'))
let bin = null
let db = null
let failed = 0 // runs that have not passed (yet)

beforeAll(async () => {
  if (!available) return
  bin = await checkerBinary() // a cold release build takes a minute or two
  if (postgres) db = await ownDatabase(postgres)
}, 600_000)

afterAll(async () => {
  await db?.drop()
  if (failed) console.warn(`the histories of the failed runs are in ${dir}`)
  else rmSync(dir, { recursive: true, force: true })
})

const op = (proc, record, kind, value, invoke, ret, outcome = 'ok') => ({ proc, record, op: kind, ...(kind === 'write' || (kind === 'read' && value !== undefined) ? { value } : {}), invoke: String(invoke), return: ret == null ? null : String(ret), outcome })
function historyFile(name, ops) {
  const f = join(dir, `${name}.jsonl`)
  writeFileSync(f, ops.map((o) => JSON.stringify(o)).join('\n'))
  return f
}

describe.skipIf(!available)('the history checker', () => {
  it('passes a linearizable history: concurrent writes in either order, a write of unknown outcome seen or not, a fenced write never seen', async () => {
    const f = historyFile('linearizable', [
      op('holder', 'A/0', 'write', 'holder:1', 100, 200),
      op('reader', 'A/0', 'read', null, 110, 150),
      op('tool', 'A/0', 'write', 'tool:1', 150, 260),
      op('reader', 'A/0', 'read', 'holder:1', 210, 220),
      op('reader', 'A/0', 'read', 'tool:1', 230, 240),
      op('holder', 'A/0', 'write', 'holder:2', 300, 400, 'ERR_TIMEOUT'),
      op('reader', 'A/0', 'read', 'tool:1', 410, 420),
      op('reader', 'A/0', 'read', 'holder:2', 430, 440),
      op('holder', 'A/0', 'delete', undefined, 500, 600),
      op('holder', 'A/0', 'write', 'holder:3', 700, 800, 'ERR_SESSION_LOCKED'),
      op('reader', 'A/0', 'read', null, 810, 820),
      op('reader', 'A/1', 'read', null, 810, 820),
    ])
    const r = await check(bin, [f])
    expect(r.code, r.output).toBe(0)
    expect(r.output).toMatch(/checked 2 records, 12 operations: writes 3 acknowledged, 1 of unknown outcome, 1 fenced; reads 7 answered/)
  })

  it('fails a stale read after an acknowledged write, naming the record, the ops and an HTML timeline', async () => {
    const f = historyFile('stale', [
      op('holder', 'A/0', 'write', 'holder:1', 100, 200),
      op('tool', 'A/0', 'write', 'tool:1', 300, 400),
      op('reader', 'A/0', 'read', 'holder:1', 500, 510),
      op('reader', 'B/0', 'read', null, 500, 510),
    ])
    const r = await check(bin, [f])
    expect(r.code, r.output).toBe(1)
    expect(r.output).toMatch(/VIOLATION record A\/0: not linearizable: stale read: it returned "holder:1", but write "tool:1" was acknowledged before the read began/)
    expect(r.output).toMatch(/> read +"holder:1" +by reader/)
    expect(r.output).toMatch(/FAILED: 1 of 2 records violate/)
    expect(r.report.violations).toEqual([expect.objectContaining({ record: 'A/0', kind: 'not-linearizable' })])
    expect(readFileSync(r.html, 'utf8')).toMatch(/record A\/0/)
  })

  it("fails a read of a fenced write's value", async () => {
    const f = historyFile('fenced', [
      op('holder', 'A/0', 'write', 'holder:1', 100, 200),
      op('holder', 'A/0', 'write', 'holder:2', 300, 400, 'ERR_SESSION_LOCKED'),
      op('taker', 'A/0', 'read', 'holder:2', 500, 510),
    ])
    const r = await check(bin, [f])
    expect(r.code, r.output).toBe(1)
    expect(r.output).toMatch(/VIOLATION record A\/0: fenced write visible: the value "holder:2" of a write holder was refused with ERR_SESSION_LOCKED, yet it was read 1 time\(s\), first by taker/)
    expect(existsSync(r.html)).toBe(true)
  })

  it('refuses bad input with exit code 2', async () => {
    for (const [name, text] of [
      ['not-json', 'nope'],
      ['no-invoke', JSON.stringify({ proc: 'p', record: 'A/0', op: 'read', value: null, outcome: 'ok' })],
      ['twice', [op('p', 'A/0', 'write', 'v', 1, 2), op('q', 'A/0', 'write', 'v', 3, 4)].map((o) => JSON.stringify(o)).join('\n')],
    ]) {
      const f = join(dir, `${name}.jsonl`)
      writeFileSync(f, text)
      const r = await check(bin, [f])
      expect(r.code, `${name}: ${r.output}`).toBe(2)
      expect(r.output).toMatch(/bad input/)
    }
  })
})

describe('what a scenario run must show besides a linearizable history', () => {
  const w = (proc, outcome, op = 'write') => ({ proc, record: 'A/0', op, outcome })
  it('an empty history, or one where the fault took no effect, shows nothing', () => {
    const forced = SCENARIOS.find((s) => s.name === 'forced-takeover')
    const cut = SCENARIOS.find((s) => s.name === 'redis-restart')
    expect(effects(forced, [])).toEqual(['no write was acknowledged', 'no read was answered', 'admin: no write acknowledged', 'holder-a: no write refused with ERR_SESSION_LOCKED'])
    const fine = [w('holder-a', 'ok'), w('reader-1', 'ok', 'read')]
    expect(effects(cut, fine)).toEqual(['no call failed or went unanswered: the fault took no effect'])
    expect(effects(cut, [...fine, w('holder', undefined)])).toEqual([])
    expect(effects(forced, [...fine, w('admin', 'ok'), w('holder-a', 'ERR_SESSION_LOCKED')])).toEqual([])
  })
})

describe.skipIf(!available)('linearizability under faults', () => {
  for (const { scenario, backend } of scenarioRuns()) {
    const skip = backend === 'redis+pg' && !postgres
    it.skipIf(skip)(`${scenario.name} (${backend}): ${scenario.about}`, async () => {
      failed++ // until the run passed: a run that throws keeps its histories too
      const r = await runScenario(scenario, { backend, bin, postgres: db?.url, durationMs: 2000, dir })
      const notes = workerNotes(r)
      expect(r.code, `${r.name}\n${r.output}\n${notes ? `what the processes reported:\n${notes}\n` : ''}history: ${r.history}`).toBe(0)
      // a history with nothing in it passes the checker: the run must show its fault happened
      expect(r.missing, `${r.name}: history ${r.history}\n${notes}`).toEqual([])
      failed--
    }, 60_000)
  }
})
