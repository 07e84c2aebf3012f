// A persistence of your own (issue 9): PersistenceDriver.handle, the one function the core calls,
// driven with the core's JSON requests over every shipped adapter (MemoryPersistence, and
// MikroOrmPersistence on PostgreSQL with two MikroORM instances standing for two processes).
// Each rule of the SQL tier (crates/core/src/sql) is checked on the rows the adapter stores.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MikroORM, PostgreSqlDriver } from '@mikro-orm/postgresql'
import { PersistenceDriver } from '../lib/persistence/driver.js'
import { MemoryPersistence } from '../lib/persistence/memory.js'
import { MikroOrmPersistence } from '../lib/persistence/mikro-orm.js'
import { service, uniqueId } from './support/services.mjs'

const pgUrl = await service('postgres')

const b64 = (s) => Buffer.from(s).toString('base64')
const utf8 = (b) => Buffer.from(b, 'base64').toString()
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** A commit request of one session at `version`: keys as [type, id, value|null]. */
function commitReq(sid, version, { creds, credsVersion, cleared = 0, keys = [], fence } = {}) {
  return {
    op: 'commit',
    sessions: [{ sid, version, creds: creds == null ? null : b64(creds), credsVersion: credsVersion ?? (creds === undefined ? 0 : version), cleared }],
    keys: keys.map(([type, id, value]) => ({ sid, type, id, value: value === null ? null : b64(value), version })),
    fences: fence === undefined ? [] : [{ sid, epoch: fence }],
  }
}

/** Replaces some methods of a Persistence (a class with private fields: the rest stay bound). */
function override(p, methods) {
  return new Proxy(p, {
    get(target, key) {
      if (Object.hasOwn(methods, key)) return methods[key]
      const v = target[key]
      return typeof v === 'function' ? v.bind(target) : v
    },
  })
}

/** Holds each transaction for `ms` once the adapter has it (the session locked), then runs it. */
function held(p, ms, onLocked = () => {}, onWritten = () => {}) {
  return override(p, {
    transaction: (sid, fn) =>
      p.transaction(sid, async (tx) => {
        onLocked()
        await sleep(ms)
        const r = await fn(tx)
        onWritten() // still inside the transaction: before it commits and lets go of the session
        return r
      }),
  })
}

let orms = []
async function openOrm() {
  const orm = await MikroORM.init({ driver: PostgreSqlDriver, clientUrl: pgUrl, entities: MikroOrmPersistence.entities, debug: false, pool: { min: 0, max: 6 } })
  orms.push(orm)
  return orm
}

const backends = [
  {
    name: 'MemoryPersistence',
    available: true,
    // one object stands for both "processes": they share its data and its locks
    open: async () => {
      const p = new MemoryPersistence()
      return { first: p, second: p }
    },
  },
  {
    name: 'MikroOrmPersistence (PostgreSQL, two MikroORM instances)',
    available: Boolean(pgUrl),
    open: async () => {
      const [a, b] = [await openOrm(), await openOrm()]
      await MikroOrmPersistence.ensureSchema(a)
      return { first: new MikroOrmPersistence(a), second: new MikroOrmPersistence(b) }
    },
  },
]

afterAll(async () => {
  await Promise.all(orms.map((o) => o.close()))
  orms = []
})

for (const backend of backends) {
  describe.skipIf(!backend.available)(`PersistenceDriver over ${backend.name}`, () => {
    const clock = { now: 1_700_000_000_000 }
    const sids = []
    let p, p2, driver, call, call2
    const sid = (name) => {
      const s = uniqueId(`persist-${name}`)
      sids.push(s)
      return s
    }
    const tick = (ms = 1) => (clock.now += ms)

    beforeAll(async () => {
      ;({ first: p, second: p2 } = await backend.open())
      driver = new PersistenceDriver(p, { now: () => clock.now })
      const driver2 = new PersistenceDriver(p2, { now: () => clock.now })
      call = async (req) => JSON.parse(await driver.handle(JSON.stringify(req)))
      call2 = async (req) => JSON.parse(await driver2.handle(JSON.stringify(req)))
    })

    afterAll(async () => {
      if (!p) return
      for (const s of sids) await p.deleteSession(s)
      const left = (await p.listSessions()).filter((r) => sids.includes(r.sessionId))
      expect(left).toEqual([])
    })

    it('an unknown session has no creds, version 0, epoch 0, no keys', async () => {
      const s = sid('unknown')
      expect(await call({ op: 'getCreds', sid: s })).toBe(null)
      expect(await call({ op: 'sessionVersion', sid: s })).toBe(0)
      expect(await call({ op: 'sessionEpoch', sid: s })).toBe(0)
      expect(await call({ op: 'getKeys', sid: s, type: 'pre-key', ids: ['1'] })).toEqual([])
      expect(await call({ op: 'summary', sid: s })).toEqual([])
      expect(await call({ op: 'listIds', sid: s, type: 'pre-key' })).toEqual([])
      expect(await call({ op: 'leaseInfo', sid: s })).toBe(null)
      // nothing of the reads (not even leaseInfo's transaction) left a row behind
      expect((await call({ op: 'listSessions' })).some((r) => r.sid === s)).toBe(false)
    })

    it('creds are replaced only by a higher creds version; versions only rise', async () => {
      const s = sid('creds')
      const created = tick()
      expect(await call(commitReq(s, 2, { creds: 'creds-2' }))).toEqual({ fenced: [] })
      expect(await call({ op: 'getCreds', sid: s })).toEqual({ value: b64('creds-2'), version: 2 })
      // an older write arriving late changes nothing but updatedAt
      const late = tick()
      await call(commitReq(s, 1, { creds: 'creds-1' }))
      expect(await call({ op: 'getCreds', sid: s })).toEqual({ value: b64('creds-2'), version: 2 })
      expect(await call({ op: 'sessionVersion', sid: s })).toBe(2)
      // equal creds version: kept (only strictly higher replaces)
      await call(commitReq(s, 2, { creds: 'creds-2b' }))
      expect(utf8((await call({ op: 'getCreds', sid: s })).value)).toBe('creds-2')
      // a keys-only write (creds null, creds version 0) keeps the creds, raises the version
      const later = tick()
      await call(commitReq(s, 5, { keys: [['pre-key', '1', 'k']] }))
      expect(await call({ op: 'getCreds', sid: s })).toEqual({ value: b64('creds-2'), version: 2 })
      expect(await call({ op: 'sessionVersion', sid: s })).toBe(5)
      const row = await p.getSession(s)
      expect(row).toMatchObject({ credsVersion: 2, version: 5, clearedVersion: 0, epoch: 0, createdAt: created })
      expect(row.updatedAt).toBe(later)
      expect(later).toBeGreaterThan(late)
      expect(Buffer.isBuffer(row.creds)).toBe(true)
      // creds null at a higher creds version: deleted; the session row stays
      await call(commitReq(s, 6, { creds: null, credsVersion: 6 }))
      expect(await call({ op: 'getCreds', sid: s })).toBe(null)
      expect(await call({ op: 'sessionVersion', sid: s })).toBe(6)
      expect(await p.getSession(s)).toMatchObject({ creds: null, credsVersion: 6, version: 6 })
      expect((await call({ op: 'listSessions' })).find((r) => r.sid === s)).toEqual({ sid: s, hasCreds: false, version: 6, updatedAt: clock.now })
      // creds older than the delete do not come back
      await call(commitReq(s, 4, { creds: 'creds-4' }))
      expect(await call({ op: 'getCreds', sid: s })).toBe(null)
    })

    it('a key row is replaced only by a higher version; tombstones stay and hide older writes', async () => {
      const s = sid('keys')
      await call(commitReq(s, 3, { keys: [['session', 'a', 'v3'], ['session', 'b', 'b3']] }))
      await call(commitReq(s, 2, { keys: [['session', 'a', 'v2']] }))
      await call(commitReq(s, 3, { keys: [['session', 'a', 'v3-again']] }))
      expect(await call({ op: 'getKeys', sid: s, type: 'session', ids: ['a'] })).toEqual([{ id: 'a', value: b64('v3'), version: 3 }])
      await call(commitReq(s, 4, { keys: [['session', 'a', 'v4']] }))
      await call(commitReq(s, 5, { keys: [['session', 'b', null]] }))
      await call(commitReq(s, 4, { keys: [['session', 'b', 'b4-late']] }))
      const got = await call({ op: 'getKeys', sid: s, type: 'session', ids: ['a', 'b', 'missing', 'a'] })
      expect(got).toEqual([{ id: 'a', value: b64('v4'), version: 4 }])
      // the tombstone is a row: version 5, value null
      expect(await p.getKeys(s, 'session', ['b'])).toEqual([expect.objectContaining({ id: 'b', value: null, version: 5 })])
      // another type with the same id is another record
      expect(await call({ op: 'getKeys', sid: s, type: 'pre-key', ids: ['a'] })).toEqual([])
      // the highest version of a record wins within one commit too, whatever the order
      const req = commitReq(s, 9, { keys: [['pre-key', '7', 'v9']] })
      req.keys.push({ sid: s, type: 'pre-key', id: '7', value: b64('v8'), version: 8 })
      await call(req)
      expect(await call({ op: 'getKeys', sid: s, type: 'pre-key', ids: ['7'] })).toEqual([{ id: '7', value: b64('v9'), version: 9 }])
      // values come back byte for byte
      const bin = Buffer.from([0, 255, 1, 254, 0x7b, 0x22])
      await call({ op: 'commit', sessions: [{ sid: s, version: 10, creds: null, credsVersion: 0, cleared: 0 }], keys: [{ sid: s, type: 'pre-key', id: 'bin', value: bin.toString('base64'), version: 10 }], fences: [] })
      const [row] = await call({ op: 'getKeys', sid: s, type: 'pre-key', ids: ['bin'] })
      expect(Buffer.from(row.value, 'base64').equals(bin)).toBe(true)
    })

    it('a retried commit is harmless (versions only rise)', async () => {
      const s = sid('retry')
      const req = commitReq(s, 4, { creds: 'c4', keys: [['pre-key', '1', 'x'], ['pre-key', '2', null]] })
      await call(req)
      const before = await p.getSession(s)
      tick()
      await call(req)
      expect({ ...(await p.getSession(s)), updatedAt: 0 }).toEqual({ ...before, updatedAt: 0 })
      expect(await call({ op: 'getKeys', sid: s, type: 'pre-key', ids: ['1', '2'] })).toEqual([{ id: '1', value: b64('x'), version: 4 }])
    })

    it('clear raises the watermark: rows below it are gone or hidden, whatever raced it', async () => {
      const s = sid('clear')
      await call(commitReq(s, 3, { creds: 'c3', keys: [['pre-key', '1', 'p1'], ['session', 'x', 'sx']] }))
      await call(commitReq(s, 4, { keys: [['pre-key', '2', 'p2']] }))
      expect(await call({ op: 'clear', sid: s, version: 5, keepCreds: true, epoch: null })).toBe(true)
      expect(await call({ op: 'getKeys', sid: s, type: 'pre-key', ids: ['1', '2'] })).toEqual([])
      expect(await p.listKeys(s)).toEqual([]) // deleted, not just hidden
      expect(await call({ op: 'getCreds', sid: s })).toEqual({ value: b64('c3'), version: 3 })
      expect(await p.getSession(s)).toMatchObject({ version: 5, clearedVersion: 5, credsVersion: 3 })
      // a write given version 4 before the clear, committed after it: stored, never visible
      await call(commitReq(s, 4, { keys: [['pre-key', 'late', 'old']] }))
      expect((await p.listKeys(s)).map((r) => r.id)).toEqual(['late'])
      expect(await call({ op: 'getKeys', sid: s, type: 'pre-key', ids: ['late'] })).toEqual([])
      expect(await call({ op: 'listIds', sid: s, type: 'pre-key' })).toEqual([])
      expect(await call({ op: 'summary', sid: s })).toEqual([])
      // at the watermark and above: live
      await call(commitReq(s, 5, { keys: [['pre-key', 'at', 'v5']] }))
      await call(commitReq(s, 6, { keys: [['pre-key', 'new', 'v6']] }))
      expect(await call({ op: 'listIds', sid: s, type: 'pre-key' })).toEqual(['at', 'new'])
      // clearing without keepCreds deletes the creds at that version; older creds stay out
      expect(await call({ op: 'clear', sid: s, version: 7, keepCreds: false, epoch: null })).toBe(true)
      expect(await call({ op: 'getCreds', sid: s })).toBe(null)
      expect(await p.getSession(s)).toMatchObject({ creds: null, credsVersion: 7, version: 7, clearedVersion: 7 })
      await call(commitReq(s, 6, { creds: 'c6' }))
      expect(await call({ op: 'getCreds', sid: s })).toBe(null)
      // a clear at an older version lowers nothing
      expect(await call({ op: 'clear', sid: s, version: 2, keepCreds: true, epoch: null })).toBe(true)
      expect(await p.getSession(s)).toMatchObject({ version: 7, clearedVersion: 7, credsVersion: 7 })
      // a clear of a session nobody wrote records it
      const fresh = sid('clear-fresh')
      expect(await call({ op: 'clear', sid: fresh, version: 3, keepCreds: false, epoch: null })).toBe(true)
      expect(await p.getSession(fresh)).toMatchObject({ creds: null, credsVersion: 3, version: 3, clearedVersion: 3, epoch: 0 })
    })

    it('a commit or clear under an older lease epoch is fenced: nothing of it is applied', async () => {
      const s = sid('fence')
      const other = sid('fence-other')
      await call(commitReq(s, 1, { creds: 'c1', keys: [['pre-key', '1', 'one']] }))
      expect(await call({ op: 'raiseEpoch', sid: s, epoch: 3 })).toBe(true)
      expect(await call({ op: 'sessionEpoch', sid: s })).toBe(3)
      await call({ op: 'raiseEpoch', sid: s, epoch: 2 })
      expect(await call({ op: 'sessionEpoch', sid: s })).toBe(3)
      // one group with a fenced session and a free one
      const group = commitReq(s, 2, { creds: 'c2', keys: [['pre-key', '1', 'two']], fence: 2 })
      await call({ op: 'allocateEpoch', sid: other, floor: 0, seal: false })
      const free = commitReq(other, 2, { keys: [['pre-key', '1', 'free']], fence: 0 })
      const req = { op: 'commit', sessions: [...group.sessions, ...free.sessions], keys: [...group.keys, ...free.keys], fences: [...group.fences, ...free.fences] }
      expect(await call(req)).toEqual({ fenced: [s] })
      expect(await call({ op: 'getCreds', sid: s })).toEqual({ value: b64('c1'), version: 1 })
      expect(await call({ op: 'sessionVersion', sid: s })).toBe(1)
      expect(await call({ op: 'getKeys', sid: s, type: 'pre-key', ids: ['1'] })).toEqual([{ id: '1', value: b64('one'), version: 1 }])
      expect(await call({ op: 'getKeys', sid: other, type: 'pre-key', ids: ['1'] })).toEqual([{ id: '1', value: b64('free'), version: 2 }])
      // the lowest fence of a session counts; at the stored epoch the write goes through
      const twice = commitReq(s, 3, { keys: [['pre-key', '1', 'three']], fence: 3 })
      twice.fences.push({ sid: s, epoch: 1 })
      expect(await call(twice)).toEqual({ fenced: [s] })
      expect(await call(commitReq(s, 3, { keys: [['pre-key', '1', 'three']], fence: 3 }))).toEqual({ fenced: [] })
      expect(await call(commitReq(s, 4, { keys: [['pre-key', '1', 'four']], fence: 9 }))).toEqual({ fenced: [] })
      expect((await call({ op: 'getKeys', sid: s, type: 'pre-key', ids: ['1'] }))[0].value).toBe(b64('four'))
      // a commit without a fence is not fenced; a write never changes the epoch
      expect(await call(commitReq(s, 5, { keys: [['pre-key', '2', 'x']] }))).toEqual({ fenced: [] })
      expect(await call({ op: 'sessionEpoch', sid: s })).toBe(3)
      // clear: fenced below the stored epoch, applied at it or without a fence
      expect(await call({ op: 'clear', sid: s, version: 6, keepCreds: true, epoch: 2 })).toBe(false)
      expect(await p.getSession(s)).toMatchObject({ version: 5, clearedVersion: 0 })
      expect(await call({ op: 'listIds', sid: s, type: 'pre-key' })).toEqual(['1', '2'])
      expect(await call({ op: 'clear', sid: s, version: 6, keepCreds: true, epoch: 3 })).toBe(true)
      expect(await call({ op: 'listIds', sid: s, type: 'pre-key' })).toEqual([])
      // raiseEpoch only raises the fence of a session that has a row (an epoch handed out
      // made it); allocateEpoch hands one out (above every epoch seen) and creates the row
      const fresh = sid('fence-fresh')
      expect(await call({ op: 'raiseEpoch', sid: fresh, epoch: 4 })).toBe(false)
      expect(await p.getSession(fresh)).toBe(null)
      tick()
      // a new session's epochs start above the floor purges left (shared databases have one)
      const first = await call({ op: 'allocateEpoch', sid: fresh, floor: 0, seal: false })
      const base = first.epoch - 1
      expect(first).toEqual({ epoch: base + 1, sealed: false })
      expect(await p.getSession(fresh)).toEqual({ creds: null, credsVersion: 0, version: 0, clearedVersion: 0, epoch: 0, epochSeq: base + 1, sealed: 0, createdAt: clock.now, updatedAt: clock.now })
      expect(await call({ op: 'allocateEpoch', sid: fresh, floor: base + 6, seal: true })).toEqual({ epoch: base + 7, sealed: false })
      expect(await call({ op: 'allocateEpoch', sid: fresh, floor: 0, seal: false })).toEqual({ epoch: base + 8, sealed: true })
      expect(await call({ op: 'raiseEpoch', sid: fresh, epoch: base + 8 })).toBe(true)
      expect(await call(commitReq(fresh, 1, { keys: [['pre-key', '1', 'x']], fence: base + 7 }))).toEqual({ fenced: [fresh] })
      expect(await call(commitReq(fresh, 1, { keys: [['pre-key', '1', 'x']], fence: base + 8 }))).toEqual({ fenced: [] })
      // a fenced write to a session without a row (purged) is fenced too
      const gone = sid('fence-gone')
      expect(await call(commitReq(gone, 1, { keys: [['pre-key', '1', 'x']], fence: 1 }))).toEqual({ fenced: [gone] })
      expect(await p.getSession(gone)).toBe(null)
    })

    it('leases: taken, kept by the same token, refused while another holds it, taken when lapsed or forced, claims and reacquisitions', async () => {
      const s = sid('lease')
      const take = (token, { ttlMs = 1000, mode = 'acquire', force = false, checkLive = true, since = 0, floor = 0, seal = false } = {}) =>
        call({ op: 'leaseTake', sid: s, token, holder: `holder-${token}`, ttlMs, mode, force, checkLive, since, floor, seal })
      const t0 = tick()
      const first = await take('A')
      // epochs start above the floor purges left (shared databases have one)
      const b = first.epoch - 1
      expect(first).toEqual({ taken: 'granted', epoch: b + 1, acquiredAt: t0, expiresAt: t0 + 1000, sealed: false, now: t0 })
      // the session row exists now and carries the epoch
      expect(await p.getSession(s)).toMatchObject({ creds: null, version: 0, epoch: b + 1, epochSeq: b + 1 })
      // the same token while it lives: same epoch, acquiredAt kept, expiry moved
      const t1 = tick(100)
      expect(await take('A', { ttlMs: 2000 })).toMatchObject({ taken: 'granted', epoch: b + 1, acquiredAt: t0, expiresAt: t1 + 2000 })
      // another token while it lives: refused, told who holds it
      tick(100)
      expect(await take('B')).toMatchObject({ taken: 'held', lease: { holder: 'holder-A', epoch: b + 1, expiresAt: t1 + 2000 } })
      expect(await take('B', { mode: 'claim' })).toMatchObject({ taken: 'held' })
      const info = await call({ op: 'leaseInfo', sid: s })
      expect(info).toMatchObject({ token: 'A', holder: 'holder-A', epoch: b + 1, expiresAt: t1 + 2000, acquiredAt: t0 })
      // renew: only the token that holds it, only while it lives
      expect(await call({ op: 'leaseRenew', sid: s, token: 'B', ttlMs: 5000 })).toBe(false)
      const t3 = tick(100)
      expect(await call({ op: 'leaseRenew', sid: s, token: 'A', ttlMs: 500 })).toBe(true)
      expect((await call({ op: 'leaseInfo', sid: s })).expiresAt).toBe(t3 + 500)
      clock.now = t3 + 500
      expect(await call({ op: 'leaseRenew', sid: s, token: 'A', ttlMs: 500 })).toBe(false) // lapsed: never extended
      // a lapsed holder takes it again under a new epoch while nobody took one meanwhile
      expect(await take('A', { mode: 'reacquire', since: b + 1 })).toMatchObject({ taken: 'granted', epoch: b + 2 })
      clock.now += 1000
      // another token takes the lapsed lease at the next epoch; the old holder's writes are fenced
      expect(await take('B')).toMatchObject({ taken: 'granted', epoch: b + 3 })
      expect(await call(commitReq(s, 1, { keys: [['pre-key', '1', 'x']], fence: b + 2 }))).toEqual({ fenced: [s] })
      // and its reacquisition is refused: another writer took an epoch since
      expect(await take('A', { mode: 'reacquire', since: b + 2 })).toMatchObject({ taken: 'moved', epoch: b + 3 })
      // force takes a live lease, at the next epoch; a forced claim ends it without taking one
      expect(await take('A', { force: true })).toMatchObject({ taken: 'granted', epoch: b + 4 })
      expect(await take('W', { mode: 'claim', force: true })).toMatchObject({ taken: 'granted', epoch: b + 5 })
      expect(await call({ op: 'leaseInfo', sid: s })).toBe(null)
      // an epoch handed out elsewhere counts
      await call({ op: 'allocateEpoch', sid: s, floor: b + 9, seal: false })
      expect(await take('C')).toMatchObject({ taken: 'granted', epoch: b + 11 })
      // release: only by its token
      expect(await call({ op: 'leaseRelease', sid: s, token: 'A' })).toBe(null)
      expect((await call({ op: 'leaseInfo', sid: s })).token).toBe('C')
      await call({ op: 'leaseRelease', sid: s, token: 'C' })
      expect(await call({ op: 'leaseInfo', sid: s })).toBe(null)
      expect(await call({ op: 'leaseRenew', sid: s, token: 'C', ttlMs: 1000 })).toBe(false)
      // after a release the next epoch still rises from the session's
      expect(await take('D')).toMatchObject({ taken: 'granted', epoch: b + 12 })
      expect(await call({ op: 'sessionEpoch', sid: s })).toBe(b + 12)
      // a refused take on a session nobody wrote leaves no row; renew and release neither
      const none = sid('lease-none')
      expect(await call({ op: 'leaseRenew', sid: none, token: 'x', ttlMs: 1000 })).toBe(false)
      await call({ op: 'leaseRelease', sid: none, token: 'x' })
      expect(await p.getSession(none)).toBe(null)
      expect(await call({ op: 'leaseTake', sid: none, token: 'x', holder: 'x', ttlMs: 1, mode: 'reacquire', force: false, checkLive: true, since: 1, floor: 0, seal: false })).toMatchObject({ taken: 'moved' })
      expect(await p.getSession(none)).toBe(null)
    })

    it('two acquirers racing on one session: exactly one gets it (through two instances)', async () => {
      for (let round = 0; round < 8; round++) {
        const s = sid(`lease-race-${round}`)
        const req = (token) => ({ op: 'leaseTake', sid: s, token, holder: token, ttlMs: 10_000, mode: 'acquire', force: false, checkLive: true, since: 0, floor: 0, seal: false })
        const [a, b] = round % 2 ? await Promise.all([call(req('A')), call2(req('B'))]) : (await Promise.all([call2(req('B')), call(req('A'))])).reverse()
        const won = [a, b].filter((r) => r.taken === 'granted')
        expect(won).toHaveLength(1)
        expect(won[0].epoch).toBeGreaterThan(0)
        expect((await call({ op: 'leaseInfo', sid: s })).token).toBe(a.taken === 'granted' ? 'A' : 'B')
      }
    })

    it('summary, listIds and listSessions report live rows, sorted by UTF-8 bytes', async () => {
      const s = sid('listing')
      const ids = ['2', '10', '1', 'z', 'é', '\u{1F600}', '\uFFFD']
      await call(commitReq(s, 1, { creds: 'creds', keys: [...ids.map((id) => ['pre-key', id, `value-${id}`]), ['session', 'b', 'bb'], ['app-state-sync-key', 'k', 'kkk']] }))
      await call(commitReq(s, 2, { keys: [['app-state-sync-key', 'k', null], ['pre-key', 'gone', null]] }))
      // code point order ('\uFFFD' before the emoji), not UTF-16 code unit order
      expect(await call({ op: 'listIds', sid: s, type: 'pre-key' })).toEqual(['1', '10', '2', 'z', 'é', '\uFFFD', '\u{1F600}'])
      expect(await call({ op: 'listIds', sid: s, type: 'app-state-sync-key' })).toEqual([])
      const bytes = ids.reduce((n, id) => n + Buffer.byteLength(`value-${id}`), 0)
      expect(await call({ op: 'summary', sid: s })).toEqual([
        { type: 'pre-key', count: ids.length, bytes },
        { type: 'session', count: 1, bytes: 2 },
      ])
      const t = clock.now
      const mine = (await call({ op: 'listSessions' })).filter((r) => sids.includes(r.sid))
      expect(mine.find((r) => r.sid === s)).toEqual({ sid: s, hasCreds: true, version: 2, updatedAt: t })
      const order = mine.map((r) => r.sid)
      expect(order).toEqual([...order].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))))
    })

    it('purge removes the session row, its keys and its lease, and keeps a paused holder fenced', async () => {
      const s = sid('purge')
      await call(commitReq(s, 1, { creds: 'c', keys: [['pre-key', '1', 'x'], ['pre-key', '2', null]] }))
      const taken = await call({ op: 'leaseTake', sid: s, token: 't', holder: 'h', ttlMs: 60_000, mode: 'acquire', force: false, checkLive: true, since: 0, floor: 0, seal: false })
      expect(await call({ op: 'purge', sid: s })).toBe(null)
      expect(await call({ op: 'getCreds', sid: s })).toBe(null)
      expect(await call({ op: 'sessionVersion', sid: s })).toBe(0)
      expect(await call({ op: 'sessionEpoch', sid: s })).toBe(0)
      expect(await call({ op: 'leaseInfo', sid: s })).toBe(null)
      expect(await p.listKeys(s)).toEqual([])
      expect(await p.getSession(s)).toBe(null)
      expect((await call({ op: 'listSessions' })).some((r) => r.sid === s || r.sid.startsWith('\u0001'))).toBe(false)
      // the old holder's writes stay fenced, before and after the session starts over
      expect(await call(commitReq(s, 2, { keys: [['pre-key', '1', 'zombie']], fence: taken.epoch }))).toEqual({ fenced: [s] })
      const next = await call({ op: 'allocateEpoch', sid: s, floor: 0, seal: false })
      expect(next.epoch).toBeGreaterThan(taken.epoch)
      await call({ op: 'raiseEpoch', sid: s, epoch: next.epoch })
      expect(await call(commitReq(s, 2, { keys: [['pre-key', '1', 'zombie']], fence: taken.epoch }))).toEqual({ fenced: [s] })
      // a purged session starts over: old versions are accepted again
      await call(commitReq(s, 1, { creds: 'again' }))
      expect(await call({ op: 'getCreds', sid: s })).toEqual({ value: b64('again'), version: 1 })
    })

    it('two commits of one session racing through two instances: the higher version wins, whatever the order', async () => {
      for (let round = 0; round < 6; round++) {
        const s = sid(`race-${round}`)
        if (round % 3 === 2) await call(commitReq(s, 1, { creds: 'c1', keys: [['session', 'x', 'v1']] })) // an existing row too
        const high = commitReq(s, 8, { creds: 'c8', keys: [['session', 'x', 'v8'], ['pre-key', '1', 'p8']] })
        const low = commitReq(s, 5, { creds: 'c5', keys: [['session', 'x', 'v5'], ['pre-key', '1', 'p5'], ['pre-key', '2', 'p5']] })
        const runs = round % 2 ? [call(high), call2(low)] : [call2(low), call(high)]
        expect(await Promise.all(runs)).toEqual([{ fenced: [] }, { fenced: [] }])
        expect(await call({ op: 'getCreds', sid: s })).toEqual({ value: b64('c8'), version: 8 })
        expect(await call({ op: 'sessionVersion', sid: s })).toBe(8)
        expect(await call({ op: 'getKeys', sid: s, type: 'session', ids: ['x'] })).toEqual([{ id: 'x', value: b64('v8'), version: 8 }])
        expect(await call({ op: 'listIds', sid: s, type: 'pre-key' })).toEqual(['1', '2'])
        expect((await call({ op: 'getKeys', sid: s, type: 'pre-key', ids: ['1'] }))[0].version).toBe(8)
      }
    })

    it('a transaction that holds the session makes the other instance wait, on a new and an existing session', async () => {
      for (const existing of [false, true]) {
        const s = sid(`held-${existing}`)
        if (existing) await call(commitReq(s, 1, { keys: [['session', 'x', 'v1']] }))
        let locked
        const isLocked = new Promise((r) => (locked = r))
        const done = []
        const slow = new PersistenceDriver(
          held(p, 300, locked, () => done.push('high written')),
          { now: () => clock.now },
        )
        const high = slow.handle(JSON.stringify(commitReq(s, 9, { keys: [['session', 'x', 'v9']] })))
        await isLocked
        // the low write gets the session only after the high one's transaction wrote (and then
        // committed): without the lock it would finish during the 300 ms the high one holds it
        const low = call2(commitReq(s, 4, { keys: [['session', 'x', 'v4']] })).then(() => done.push('low'))
        await Promise.all([high, low])
        expect(done).toEqual(['high written', 'low'])
        expect(await call({ op: 'getKeys', sid: s, type: 'session', ids: ['x'] })).toEqual([{ id: 'x', value: b64('v9'), version: 9 }])
        expect(await call({ op: 'sessionVersion', sid: s })).toBe(9)
      }
    })

    it('many concurrent commits over both instances end at the highest version of every record', async () => {
      const s = sid('many')
      const versions = Array.from({ length: 16 }, (_, i) => i + 1).sort(() => Math.random() - 0.5)
      await Promise.all(versions.map((v, i) => (i % 2 ? call : call2)(commitReq(s, v, { creds: `c${v}`, keys: [['pre-key', String(v % 3), `p${v}`], ['session', 'x', `s${v}`]] }))))
      expect(await call({ op: 'getCreds', sid: s })).toEqual({ value: b64('c16'), version: 16 })
      const got = await call({ op: 'getKeys', sid: s, type: 'pre-key', ids: ['0', '1', '2'] })
      expect(Object.fromEntries(got.map((r) => [r.id, r.version]))).toEqual({ 0: 15, 1: 16, 2: 14 })
      expect((await call({ op: 'getKeys', sid: s, type: 'session', ids: ['x'] }))[0].value).toBe(b64('s16'))
    })

    it('a transaction that throws leaves nothing', async () => {
      const s = sid('throws')
      const boom = new Error('the callback failed')
      await expect(
        p.transaction(s, async (tx) => {
          await tx.putSession({ sessionId: s, creds: Buffer.from('c'), credsVersion: 1, version: 1, clearedVersion: 0, epoch: 5, createdAt: 1, updatedAt: 1 })
          await tx.putKeys([{ sessionId: s, type: 'pre-key', id: '1', value: Buffer.from('x'), version: 1, updatedAt: 1 }])
          await tx.putLease({ sessionId: s, token: 't', holder: 'h', epoch: 5, expiresAt: 9e12, acquiredAt: 1 })
          expect(await tx.getSession()).toMatchObject({ version: 1 }) // it sees its own writes
          expect(await tx.getKeys([{ type: 'pre-key', id: '1' }])).toHaveLength(1)
          throw boom
        }),
      ).rejects.toBe(boom)
      expect(await p.getSession(s)).toBe(null)
      expect(await p.listKeys(s)).toEqual([])
      expect(await call({ op: 'leaseInfo', sid: s })).toBe(null)
      // through the driver: a putKeys that fails after putSession leaves the earlier state whole
      await call(commitReq(s, 2, { creds: 'c2', keys: [['pre-key', '1', 'v2']] }))
      const failing = override(p, {
        transaction: (sid, fn) =>
          p.transaction(sid, (tx) =>
            fn(
              override(tx, {
                putKeys: async () => {
                  throw new Error('disk full')
                },
              }),
            ),
          ),
      })
      const broken = new PersistenceDriver(failing, { now: () => clock.now })
      const err = await broken.handle(JSON.stringify(commitReq(s, 3, { creds: 'c3', keys: [['pre-key', '1', 'v3']] }))).catch((e) => e)
      expect(err).toBeInstanceOf(Error)
      expect(err.message).toContain('disk full')
      expect(err.message).toContain(s)
      expect(await call({ op: 'getCreds', sid: s })).toEqual({ value: b64('c2'), version: 2 })
      expect(await call({ op: 'sessionVersion', sid: s })).toBe(2)
      expect((await call({ op: 'getKeys', sid: s, type: 'pre-key', ids: ['1'] }))[0].value).toBe(b64('v2'))
      // the tx object is dead once its transaction ended
      let kept
      await p.transaction(s, async (tx) => {
        kept = tx
      })
      await expect(kept.getSession()).rejects.toThrow(/over/)
    })

    it("the persistence's own failures reach the core with the op and session in the message", async () => {
      const s = sid('fails')
      const failing = override(p, {
        getSession: async () => {
          throw new Error('connection reset')
        },
      })
      const d = new PersistenceDriver(failing)
      await expect(d.handle(JSON.stringify({ op: 'getCreds', sid: s }))).rejects.toThrow(`Persistence.getSession of session '${s}' failed: connection reset`)
      // a row of the wrong shape is reported, not taken as missing
      const wrong = new PersistenceDriver(override(p, { getSession: async () => ({ creds: 'not bytes', credsVersion: 1, version: 1, clearedVersion: 0, epoch: 0, createdAt: 0, updatedAt: 0 }) }))
      await expect(wrong.handle(JSON.stringify({ op: 'getCreds', sid: s }))).rejects.toThrow(/Persistence.getSession: creds must be a Buffer or null/)
      // a row without its creds column is not a session without creds (Baileys would pair anew)
      const unselected = new PersistenceDriver(override(p, { getSession: async () => ({ credsVersion: 1, version: 1, clearedVersion: 0, epoch: 0, createdAt: 0, updatedAt: 0 }) }))
      await expect(unselected.handle(JSON.stringify({ op: 'getCreds', sid: s }))).rejects.toThrow(/Persistence.getSession: creds is missing/)
      const noValue = new PersistenceDriver(override(p, { getKeys: async () => [{ type: 'pre-key', id: '1', version: 1 }] }))
      await expect(noValue.handle(JSON.stringify({ op: 'getKeys', sid: s, type: 'pre-key', ids: ['1'] }))).rejects.toThrow(/value of 'pre-key' '1' is missing/)
      const noRun = new PersistenceDriver(override(p, { transaction: async () => undefined }))
      await expect(noRun.handle(JSON.stringify({ op: 'raiseEpoch', sid: s, epoch: 1 }))).rejects.toThrow(/without running its callback/)
    })
  })
}

describe('PersistenceDriver requests', () => {
  const driver = new PersistenceDriver(new MemoryPersistence())
  const sid = 'wa-test-requests'
  it.each([
    ['not JSON', '{op:', /not valid JSON/],
    ['not an object', '[1]', /object with a string op/],
    ['an unknown op', JSON.stringify({ op: 'dropEverything' }), /unknown persistence op 'dropEverything'/],
    ['an op inherited from Object', JSON.stringify({ op: 'toString' }), /unknown persistence op/],
    ['no sid', JSON.stringify({ op: 'getCreds' }), /op getCreds\): sid must be a non-empty string/],
    ['a negative version', JSON.stringify(commitReq(sid, -1)), /sessions\[0\]\): version must be a non-negative integer/],
    ['an unsafe version', JSON.stringify(commitReq(sid, 2 ** 53)), /version must be a non-negative integer below 2\^53/],
    ['bad base64', JSON.stringify({ ...commitReq(sid, 1), keys: [{ sid, type: 't', id: 'i', value: 'no!', version: 1 }] }), /keys\[0\]\): value must be base64 or null/],
    ['a key of a session not in sessions', JSON.stringify({ ...commitReq(sid, 1), keys: [{ sid: 'other', type: 't', id: 'i', value: null, version: 1 }] }), /names session 'other', which is not in sessions/],
    ['a session listed twice', JSON.stringify({ ...commitReq(sid, 1), sessions: [...commitReq(sid, 1).sessions, ...commitReq(sid, 2).sessions] }), /listed twice/],
    ['ids not an array', JSON.stringify({ op: 'getKeys', sid, type: 'pre-key', ids: 'x' }), /ids must be an array/],
    ['a lease without force', JSON.stringify({ op: 'leaseTake', sid, token: 't', holder: 'h', ttlMs: 1, mode: 'acquire' }), /force must be a boolean/],
  ])('rejects %s with a clear Error', async (_, json, message) => {
    const err = await driver.handle(json).catch((e) => e)
    expect(err).toBeInstanceOf(Error)
    expect(err.message).toMatch(message)
  })

  it('rejects a Persistence that lacks methods, naming them', () => {
    expect(() => new PersistenceDriver({ transaction() {}, getSession() {} })).toThrow(/lacks getKeys\(\), listKeys\(\), listSessions\(\), deleteSession\(\)/)
    expect(() => new PersistenceDriver(null)).toThrow(TypeError)
  })

  it('close() calls the persistence close (optional) and answers null', async () => {
    let closed = 0
    const p = override(new MemoryPersistence(), { close: async () => void closed++ })
    expect(await new PersistenceDriver(p).handle('{"op":"close"}')).toBe('null')
    expect(closed).toBe(1)
  })
})

describe.skipIf(!pgUrl)('MikroOrmPersistence', () => {
  let orm
  const sids = []
  beforeAll(async () => {
    orm = await openOrm()
  })
  afterAll(async () => {
    const p = new MikroOrmPersistence(orm)
    for (const s of sids) await p.deleteSession(s)
  })

  it('ensureSchema is idempotent and matches the EntitySchemas (a schema update finds nothing to do)', async () => {
    await MikroOrmPersistence.ensureSchema(orm)
    await Promise.all([MikroOrmPersistence.ensureSchema(orm), MikroOrmPersistence.ensureSchema(orm)])
    const diff = await orm.schema.getUpdateSchemaSQL({ wrap: false, safe: true, dropTables: false })
    expect(diff).not.toMatch(/wa_orm_auth/)
    const columns = await orm.em.fork().execute(`select table_name, column_name, data_type, is_nullable from information_schema.columns where table_name like 'wa_orm_auth_%' order by table_name, ordinal_position`)
    expect(columns.filter((c) => c.table_name === 'wa_orm_auth_keys').map((c) => `${c.column_name} ${c.data_type} ${c.is_nullable}`)).toEqual([
      'session_id text NO',
      'type text NO',
      'id text NO',
      'value bytea YES',
      'version bigint NO',
      'updated_at bigint NO',
    ])
  })

  it('takes only an initialised MikroORM that knows its entities', () => {
    expect(() => new MikroOrmPersistence({})).toThrow(/initialised MikroORM/)
    const stranger = { em: { fork() {} }, getMetadata: () => ({ find: () => undefined }) }
    expect(() => new MikroOrmPersistence(stranger)).toThrow(/add \.\.\.MikroOrmPersistence\.entities/)
  })

  it('stores values as bytea and never puts value bytes in an error message', async () => {
    const s = uniqueId('persist-orm-error')
    sids.push(s)
    const driver = new PersistenceDriver(new MikroOrmPersistence(orm))
    const secret = 'SECRET-VALUE-BYTES-0123456789'
    await driver.handle(JSON.stringify(commitReq(s, 1, { creds: 'c', keys: [['pre-key', '1', secret]] })))
    const [row] = await orm.em.fork().execute(`select value, pg_typeof(value)::text as t from wa_orm_auth_keys where session_id = ?`, [s])
    expect(row.t).toBe('bytea')
    expect(Buffer.isBuffer(row.value) && row.value.toString()).toBe(secret)
    // PostgreSQL refuses a NUL in text: the statement (values inlined as hex) must not leak
    const err = await driver.handle(JSON.stringify(commitReq(s, 2, { creds: secret, keys: [['bad\u0000type', '1', secret]] }))).catch((e) => e)
    expect(err).toBeInstanceOf(Error)
    expect(err.message).toContain(s)
    expect(err.message).toMatch(/MikroORM/)
    for (const leak of [secret, Buffer.from(secret).toString('hex'), b64(secret)]) expect(err.message.toLowerCase()).not.toContain(leak.toLowerCase())
    // nothing of the failed commit was applied, and the ORM still works
    expect(JSON.parse(await driver.handle(JSON.stringify({ op: 'sessionVersion', sid: s })))).toBe(1)
  })
})
