// The edges of ownership (issue 21), with real processes on real servers: two writers taking
// turns on a session nobody holds, a holder paused past its lease, a forced takeover, a close
// racing a renew, re-acquiring after a takeover, and writes with mixed TTLs. Every process is a
// store of its own (support/store-rpc.mjs) doing exactly what the test says, when it says it.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Redis from 'ioredis'
import { afterAll, describe, expect, it } from 'vitest'
import { BaileysAuthStore, BaileysOrmAdapter, BaileysRedisAdapter, useBaileysAuthState } from '../index.js'
import { service, uniqueId } from './support/services.mjs'
import { endAll, storeProcess } from './support/store-rpc.mjs'

const redis = await service('redis')
const postgres = await service('postgres')
const folder = mkdtempSync(join(tmpdir(), 'wa-auth-store-own-'))
const configs = [
  { name: 'Redis + PostgreSQL', redis, database: postgres, skip: !redis || !postgres },
  // one file that every process opens
  { name: 'embedded SQLite', redis: null, database: `sqlite://${join(folder, 'auth.db')}` },
]
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const quiet = { logger: { warn() {}, error() {} } }
// a new session's creds without loading Baileys
const baileys = { initAuthCreds: () => ({ registrationId: 1 }) }

const opened = []
const sessions = []
/** A store in this process; `tiers`: 'both', 'sql' (SQL alone) or 'redis' (Redis alone). */
function openStore(cfg, tiers = 'both', options = {}) {
  const r = tiers !== 'sql' && cfg.redis ? new BaileysRedisAdapter(cfg.redis) : null
  const d = tiers !== 'redis' && cfg.database ? new BaileysOrmAdapter(cfg.database) : null
  const store = new BaileysAuthStore(r, d, { ...quiet, ...options })
  opened.push(store)
  return store
}
function session(name) {
  const sid = uniqueId(name)
  sessions.push(sid)
  return sid
}

/**
 * Readers holding no lease (their reads bypass their caches), one per tier: what every tier
 * answers for `ids` of type 'session', as { tier: { id: value | null } }.
 */
function readers(cfg) {
  const tiers = cfg.redis ? ['both', 'sql', 'redis'] : ['both']
  const stores = tiers.map((t) => [t, openStore(cfg, t)])
  return async (sid, ids) => {
    const out = {}
    for (const [t, s] of stores) {
      const got = await s.getKeys(sid, 'session', ids)
      out[t] = Object.fromEntries(ids.map((id) => [id, got[id] ?? null]))
    }
    return out
  }
}
/** `expected` ({ id: value | null }) as every tier should answer it. */
const everywhere = (cfg, expected) => Object.fromEntries((cfg.redis ? ['both', 'sql', 'redis'] : ['both']).map((t) => [t, expected]))

async function until(check, what, ms = 10_000) {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(20)
  }
}

afterAll(async () => {
  endAll()
  const admins = configs.filter((c) => !c.skip).map((c) => openStore(c))
  for (const a of admins) for (const sid of sessions) await a.purgeSession(sid).catch(() => {})
  await Promise.allSettled(opened.map((s) => s.close()))
  rmSync(folder, { recursive: true, force: true })
})

for (const cfg of configs) {
  const proc = (options = {}) => storeProcess({ redis: cfg.redis, database: cfg.database, ...options })

  describe.skipIf(cfg.skip)(`ownership: ${cfg.name}`, () => {
    for (const mode of [
      { name: 'the default lease setting (BaileysAuthStore.setKeys on a session nobody holds)', store: {}, readsSeeTheOther: true },
      { name: 'lease: false', store: { lease: false }, readsSeeTheOther: false },
    ]) {
      it(`two processes writing one record in turn, ${mode.name}: the write acknowledged last is what every tier holds, every round`, async () => {
        const sid = session('own-turns')
        const writers = [
          ['p', proc({ store: mode.store })],
          ['q', proc({ store: mode.store })],
        ]
        const read = readers(cfg)
        let last = null
        const rounds = []
        for (let r = 0; r < 12; r++) {
          for (const [name, w] of writers) {
            // as a tool does: read the session first, then write
            const seen = (await w.call('store', 'getKeys', sid, 'session', ['rec'])).rec ?? null
            // a reader without the lease bypasses its cache; a lease: false store trusts its cache
            if (mode.readsSeeTheOther) expect(seen, `${name}'s read in round ${r}`).toEqual(last)
            const value = { by: name, r }
            await w.call('store', 'setKeys', sid, { session: { rec: value } })
            last = value
            await sleep(35)
            rounds.push({ r, name, got: await read(sid, ['rec']) })
          }
        }
        // every round, not just the last: a tie drops the later write and the next one hides it
        expect(rounds.filter((x) => JSON.stringify(x.got) !== JSON.stringify(everywhere(cfg, { rec: { by: x.name, r: x.r } })))).toEqual([])
        await Promise.all(writers.map(([, w]) => w.end()))
      }, 60_000)
    }

    it('a holder paused past its lease while a tool wrote: resumed, it neither reads its stale value nor writes; onLeaseLost fires; the tool wins in every tier', async () => {
      const sid = session('own-paused')
      const h = proc()
      await h.call('auth', sid, { ttlMs: 1000, holderId: 'h' })
      await h.call('keys.set', sid, { session: { rec: { by: 'h', n: 1 } } })
      expect((await h.call('keys.get', sid, 'session', ['rec'])).rec).toEqual({ by: 'h', n: 1 })
      h.stop()
      await sleep(1700)
      const tool = openStore(cfg)
      await tool.setKeys(sid, { session: { rec: { by: 'tool' } } })
      h.cont()
      const got = await h.settle('keys.get', sid, 'session', ['rec'])
      // an error is allowed (the lease is lost); its own older value is not
      if (got.ok) expect(got.value.rec).toEqual({ by: 'tool' })
      expect(await h.settle('keys.set', sid, { session: { rec: { by: 'h', n: 2 }, other: { by: 'h' } } })).toEqual({ ok: false, code: 'ERR_SESSION_LOCKED' })
      await until(() => h.lost(sid).length > 0, 'onLeaseLost')
      expect(await readers(cfg)(sid, ['rec', 'other'])).toEqual(everywhere(cfg, { rec: { by: 'tool' }, other: null }))
      await h.end()
    }, 30_000)

    it('a holder paused past its lease while nobody wrote takes the session again under a higher epoch: its writes land, and others are refused', async () => {
      const sid = session('own-retake')
      const h = proc()
      await h.call('auth', sid, { ttlMs: 1000, holderId: 'h' })
      await h.call('keys.set', sid, { session: { rec: { n: 1 } } })
      const before = (await openStore(cfg).leaseInfo(sid)).epoch
      h.stop()
      await sleep(1700)
      h.cont()
      expect((await h.call('keys.get', sid, 'session', ['rec'])).rec).toEqual({ n: 1 })
      await h.call('keys.set', sid, { session: { rec: { n: 2 } } })
      const info = await openStore(cfg).leaseInfo(sid)
      expect(info.holder).toBe('h')
      expect(info.epoch).toBeGreaterThan(before)
      expect(h.lost(sid)).toEqual([])
      await expect(useBaileysAuthState(openStore(cfg), sid, { baileys, lease: { waitMs: 0 } })).rejects.toMatchObject({ code: 'ERR_SESSION_LOCKED' })
      expect(await readers(cfg)(sid, ['rec'])).toEqual(everywhere(cfg, { rec: { n: 2 } }))
      await h.end()
    }, 30_000)

    it('a forced takeover while the holder writes: every write refused with ERR_SESSION_LOCKED stays invisible, every acknowledged one is there', async () => {
      // the refused write that lands anyway is one in the middle of its commit when the takeover
      // comes: a few takeovers, each into a stream of concurrent writes
      const h = proc()
      const admin = openStore(cfg)
      for (let take = 0; take < 4; take++) {
        const sid = session('own-force')
        await h.call('auth', sid, { ttlMs: 1000, holderId: 'h' })
        const results = []
        let done = false
        const writing = (async () => {
          for (let k = 0; !done; k++) results.push(...(await h.call('burst', sid, { count: 20, prefix: `h${k}-` })))
        })()
        await sleep(100)
        await admin.setKeys(sid, { session: { admin: { x: 1 } } }, { force: true })
        await sleep(200)
        done = true
        await writing
        const refused = results.filter((x) => !x.ok)
        expect(refused.length, 'writes refused after the takeover').toBeGreaterThan(0)
        expect(results.filter((x) => x.ok).length, 'writes acknowledged before it').toBeGreaterThan(0)
        expect([...new Set(refused.map((x) => x.code))]).toEqual(['ERR_SESSION_LOCKED'])
        const ids = results.map((x) => x.id)
        const expected = Object.fromEntries(results.map((x) => [x.id, x.ok ? { n: Number(x.id.split('-')[1]) } : null]))
        expect(await readers(cfg)(sid, ids), `takeover ${take}`).toEqual(everywhere(cfg, expected))
        await until(() => h.lost(sid).length > 0, 'onLeaseLost')
      }
      await h.end()
    }, 60_000)

    it('re-acquiring after a forced takeover: refusals of the earlier epoch\'s writes in flight do not lose the new lease', async () => {
      const sid = session('own-reacquire')
      const h = proc()
      await h.call('auth', sid, { ttlMs: 1000, holderId: 'h' })
      await h.call('keys.set', sid, { session: { before: { n: 0 } } })
      await openStore(cfg).setKeys(sid, { session: { admin: { x: 1 } } }, { force: true })
      // the old lease's writes are queued, then the same process takes the session again while
      // they are being refused
      const old = h.call('burst', sid, { count: 300, prefix: 'old-' })
      const again = await h.call('auth', sid, { ttlMs: 1000, holderId: 'h' })
      const oldResults = await old
      expect(oldResults.some((x) => !x.ok && x.code === 'ERR_SESSION_LOCKED'), 'the old epoch\'s writes were refused').toBe(true)
      await h.call('keys.set', sid, { session: { after: { n: 1 } } })
      await sleep(800) // two renewals of the new lease
      await h.call('keys.set', sid, { session: { later: { n: 2 } } })
      expect(h.lost(sid).filter((e) => e.epoch === again.epoch)).toEqual([])
      const info = await openStore(cfg).leaseInfo(sid)
      expect(info).toMatchObject({ holder: 'h', epoch: again.epoch })
      await expect(useBaileysAuthState(openStore(cfg), sid, { baileys, lease: { waitMs: 0 } })).rejects.toMatchObject({ code: 'ERR_SESSION_LOCKED' })
      const got = await readers(cfg)(sid, ['after', 'later', 'admin'])
      expect(got).toEqual(everywhere(cfg, { after: { n: 1 }, later: { n: 2 }, admin: { x: 1 } }))
      await h.end()
    }, 30_000)

    it('a close racing a renew hands the session over at once: after close() resolves, the next open (waitMs 0) gets it, every round', async () => {
      const sid = session('own-close')
      const a = proc()
      const next = openStore(cfg)
      const ttlMs = 300 // renewed every 100 ms
      const failures = []
      for (let round = 0; round < 60; round++) {
        // close at a renewal: its timer is due a few ms before the close's (the lease is made
        // inside useBaileysAuthState), so a sweep of a few ms lands the close on a renew in flight
        const holdMs = round % 4 === 3 ? Math.floor(Math.random() * ttlMs) : Math.max(0, (1 + (round % 2)) * Math.floor(ttlMs / 3) - (round % 12))
        await a.call('authHold', sid, { ttlMs, holderId: 'a' }, holdMs)
        try {
          const auth = await useBaileysAuthState(next, sid, { baileys, lease: { ttlMs, waitMs: 0, holderId: 'next' } })
          await auth.close()
        } catch (err) {
          failures.push({ round, holdMs, code: err.code, message: err.message })
        }
      }
      expect(failures).toEqual([])
      await a.end()
    }, 60_000)

    it.skipIf(!cfg.redis)('writes with mixed TTLs, then clearSession, deleteCreds and purgeSession: nothing comes back, no data key is left', async () => {
      const raw = new Redis(cfg.redis)
      const store = openStore(cfg)
      try {
        for (const remove of ['clearSession', 'deleteCreds', 'purgeSession']) {
          const sid = session(`own-ttl-${remove}`)
          await store.saveCreds(sid, { creds: { registrationId: 7 } }, { ttl: 10 })
          await store.setKeys(sid, { 'pre-key': { 1: { k: 1 } }, session: { long: { n: 1 } } }, { ttl: 10 })
          // a later write with a shorter TTL: the keys it touches expire first
          await store.setKeys(sid, { 'sender-key': { g: { n: 1 } }, session: { short: { n: 1 } } }, { ttl: 1 })
          await sleep(1400)
          await store[remove](sid)
          const left = await raw.keys(`wa:{s:${sid}}:*`)
          // the meta hash (the session's epochs and watermark) and the lease may stay, and the creds
          // a clearSession keeps; no other key
          const kept = remove === 'clearSession' ? /:(m|l|c)$/ : /:(m|l)$/
          expect(left.filter((k) => !kept.test(k)), `${remove}: keys left`).toEqual([])
          const fresh = openStore(cfg)
          const got = {
            preKey: await fresh.getKeys(sid, 'pre-key', ['1']),
            session: await fresh.getKeys(sid, 'session', ['long', 'short']),
            senderKey: await fresh.getKeys(sid, 'sender-key', ['g']),
          }
          expect(got, remove).toEqual({ preKey: {}, session: {}, senderKey: {} })
          if (remove === 'clearSession') expect(await fresh.getCreds(sid)).toEqual({ creds: { registrationId: 7 } })
          else expect(await fresh.getCreds(sid)).toBeNull()
        }
      } finally {
        raw.disconnect()
      }
    }, 30_000)

    it.skipIf(!cfg.redis)('a delete written to Redis only (syncToDatabase: false) outlives the TTL of the record it deletes: the SQL row never comes back', async () => {
      const sid = session('own-ttl-tombstone')
      const w = openStore(cfg) // write-through: nothing flushes the Redis-only delete until flushAll
      await w.setKeys(sid, { session: { rec: { n: 1 } } }, { ttl: 1 })
      await w.setKeys(sid, { session: { rec: null } }, { syncToDatabase: false })
      await sleep(1400)
      expect(await openStore(cfg).getKeys(sid, 'session', ['rec'])).toEqual({})
      // and once flushed, SQL agrees
      await w.flushAll()
      expect(await openStore(cfg, 'sql').getKeys(sid, 'session', ['rec'])).toEqual({})
    }, 30_000)
  })
}
