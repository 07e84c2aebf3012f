// The embedded SQLite file under faults of its disk (issue 20, faults 4 and 5), on real files:
// 4. the disk fills up (a small tmpfs holding the database, a filler file taking the rest): writes
//    are refused with a typed error, the file stays intact, and once the filler is deleted the SAME
//    store accepts writes again by itself;
// 5. the file (and its -wal/-shm) is unlinked while the store writes: the store must notice that the
//    path no longer names the file it holds open and refuse writes with a typed error, so that no
//    write is acknowledged into a file no process can open again.
// A bot's store: SQLite alone, the session's lease held (in SQL), the default cache.
import { execFile } from 'node:child_process'
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, describe, expect, it } from 'vitest'
import { BaileysAuthStore, BaileysOrmAdapter } from '../index.js'
import { collecting, InProcessWriter, judge, killChildren, Ledger, readFresh, recordKey, report, sleep } from './support/ledger.mjs'
import { inCI, uniqueId } from './support/services.mjs'

const run = promisify(execFile)
afterAll(killChildren)

/** Whether this process may mount a tmpfs (root, no seccomp/namespace refusal); fails under CI. */
async function tmpfsAvailable() {
  const dir = mkdtempSync(join(tmpdir(), 'wa-tmpfs-probe-'))
  try {
    await run('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir])
    await run('umount', [dir])
    return true
  } catch (err) {
    if (inCI) throw new Error(`the disk-full test needs to mount a tmpfs under CI: ${err.message}`)
    console.warn(`SKIPPED: cannot mount a tmpfs here (${String(err.stderr || err.message).trim()}); the disk-full test needs one (run as root)`)
    return false
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

const canMount = await tmpfsAvailable()

/** Fills the file system of `dir` with one file until it refuses another byte; returns its path. */
function fill(dir) {
  const path = join(dir, 'filler')
  const fd = openSync(path, 'w')
  try {
    for (const size of [1 << 16, 4096, 512, 1]) {
      const chunk = Buffer.alloc(size, 0x5a)
      try {
        for (;;) writeSync(fd, chunk)
      } catch (err) {
        if (err.code !== 'ENOSPC') throw err
      }
    }
  } finally {
    closeSync(fd)
  }
  return path
}

const sqliteStore = (path, logger) => new BaileysAuthStore(null, new BaileysOrmAdapter({ url: `sqlite://${path}`, timeoutMs: 2000 }), { logger })

/** Counts by code, and the first message of each. */
function tally(results) {
  const codes = {}
  for (const r of results.filter((x) => !x.ok)) {
    const c = r.error.code ?? r.error.name
    codes[c] ??= { n: 0, message: String(r.error.message).slice(0, 160) }
    codes[c].n++
  }
  return codes
}

describe('the SQLite file under disk faults (issue 20)', () => {
  it.skipIf(!canMount)('4. disk full: writes refused with a typed error, the file intact, the same store writes again once space is freed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'wa-full-'))
    await run('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', dir])
    const path = join(dir, 'auth.db')
    const { logger, logs } = collecting()
    const store = sqliteStore(path, logger)
    const sid = uniqueId('disk-full')
    const ledger = new Ledger([sid])
    const writer = new InProcessWriter(store, ledger, { padBytes: 2000 })
    let filler = null
    try {
      await store.acquireLease(sid)
      for (let i = 0; i < 50; i++) expect((await writer.write()).ok, 'writes before the disk fills').toBe(true)
      filler = fill(dir)
      // write until the full disk refuses one (SQLite's WAL may still take a few)
      const whileFull = []
      for (let i = 0; i < 2000 && !whileFull.some((r) => !r.ok); i++) whileFull.push(await writer.write())
      for (let i = 0; i < 20; i++) whileFull.push(await writer.write())
      const refused = whileFull.find((r) => !r.ok)?.error
      rmSync(filler)
      filler = null
      // the same store, by itself: a write every 20 ms, at most 100
      const afterFree = []
      while (afterFree.length < 100 && !afterFree.at(-1)?.ok) {
        afterFree.push(await writer.write())
        if (!afterFree.at(-1).ok) await sleep(20)
      }
      const recoveredAfter = afterFree.at(-1)?.ok ? afterFree.length : null
      const then = []
      for (let i = 0; i < 20 && recoveredAfter; i++) then.push(await writer.write())
      await store.close()
      const integrity = await run('sqlite3', [path, 'PRAGMA integrity_check']).then((r) => r.stdout.trim(), (err) => `sqlite3 failed: ${err.message}`)
      const fresh = await readFresh({ database: `sqlite://${path}`, sessions: [sid] })
      const views = { 'fresh process': judge(ledger, fresh.values) }
      const total = report('4 disk full', ledger, views, {
        acked_while_full: whileFull.filter((r) => r.ok).length,
        refused_while_full: tally(whileFull),
        after_the_filler_was_deleted: recoveredAfter ? `write ${recoveredAfter} was the first acknowledged` : `all ${afterFree.length} writes refused`,
        refused_after_free: tally(afterFree),
        later_writes_refused: then.filter((r) => !r.ok).length,
        integrity,
        logger: logs.map((l) => l.code).join(' ') || 'nothing',
      }, 'disk-faults')
      expect(refused, 'a write refused on the full disk').toBeDefined()
      expect.soft(refused?.code, `the refusal on a full disk (${refused?.message})`).toBe('ERR_DATABASE')
      expect.soft(integrity, 'PRAGMA integrity_check of the file afterwards').toBe('ok')
      expect.soft(recoveredAfter, 'the same store acknowledged a write again (within 100 tries, 20 ms apart) once space was freed').not.toBeNull()
      expect.soft(then.filter((r) => !r.ok).map((r) => r.error.code), 'writes refused after it recovered').toEqual([])
      expect.soft(total, 'acknowledged writes missing for a new process').toMatchObject({ lost: 0, stale: 0, resurrected: 0, phantom: 0 })
    } finally {
      await store.close().catch(() => {})
      if (filler) rmSync(filler, { force: true })
      await run('umount', ['-l', dir]).catch(() => {})
      rmSync(dir, { recursive: true, force: true })
    }
  }, 60_000)

  it('5. the file unlinked under a running store: writes refused with a typed error, none acknowledged into the unlinked file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'wa-unlink-'))
    const path = join(dir, 'auth.db')
    const { logger, logs } = collecting()
    const store = sqliteStore(path, logger)
    const sid = uniqueId('unlinked')
    const ledger = new Ledger([sid])
    const writer = new InProcessWriter(store, ledger, { padBytes: 200 })
    try {
      await store.acquireLease(sid)
      for (let i = 0; i < 100; i++) expect((await writer.write()).ok, 'writes before the unlink').toBe(true)
      for (const f of [path, `${path}-wal`, `${path}-shm`]) rmSync(f, { force: true })
      const firstAfter = writer.seq + 1 // writes from this seq on began after the unlink
      const after = []
      for (let i = 0; i < 300; i++) after.push(await writer.write())
      await store.close()
      // a new process on the path: what it reads is all a restarted bot would have
      const fresh = await readFresh({ database: `sqlite://${path}`, sessions: [sid] })
      const ackedAfter = after.filter((r) => r.ok).length
      const missing = []
      for (const [k, r] of ledger.records) {
        if (!r.acked || r.acked.seq < firstAfter) continue
        const v = fresh.values[k]
        if (v == null || v < r.acked.seq) missing.push(`${k.split('\u0000').slice(1).join('/')}: acked ${r.acked.seq}, a new process reads ${v}`)
      }
      const seen = after.filter((r) => r.ok && Object.values(fresh.values).includes(r.seq)).length
      console.log(
        `[disk-faults 5 unlinked] after the unlink: ${ackedAfter} of ${after.length} writes acknowledged, ${seen} of them seen by a new process; ` +
          `refused: ${JSON.stringify(tally(after))}; records whose acknowledged value is missing: ${missing.length}; logger: ${logs.map((l) => l.code).join(' ') || 'nothing'}`,
      )
      for (const m of missing.slice(0, 3)) console.log(`[disk-faults 5 unlinked]   ${m}`)
      const refusals = after.filter((r) => !r.ok)
      expect.soft(refusals.length, 'writes refused once the file was unlinked (expected ERR_DATABASE: the file was deleted or replaced)').toBeGreaterThan(0)
      expect.soft(refusals.filter((r) => !/^ERR_[A-Z_]+$/.test(r.error.code ?? '')).map((r) => String(r.error)), 'refusals without a typed code').toEqual([])
      expect.soft(missing, 'writes acknowledged after the unlink that a new process does not see').toEqual([])
      expect.soft(recordKey(sid, 'session', '0') in fresh.values, 'the new process read the records').toBe(true)
    } finally {
      await store.close().catch(() => {})
      rmSync(dir, { recursive: true, force: true })
    }
  }, 60_000)
})
