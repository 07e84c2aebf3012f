// Redis behind Sentinel (support/own-sentinel.mjs: master, replica, 3 sentinels) + PostgreSQL,
// write-through: SENTINEL FAILOVER in the middle of a stream of writes and reads. Every write that
// resolved is read back afterwards (same store, a fresh store, SQL alone); the store follows the
// new master and keeps serving; every call during the switch settles, resolved or rejected with
// ERR_REDIS / ERR_TIMEOUT, within a bound.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BaileysAuthStore, BaileysOrmAdapter, BaileysRedisAdapter } from '../index.js'
import { redisServerAvailable } from './support/own-redis.mjs'
import { redisCli } from './support/own-cluster.mjs'
import { OwnSentinel } from './support/own-sentinel.mjs'
import { service, uniqueId } from './support/services.mjs'

const available = await redisServerAvailable('the Sentinel tests')
const postgres = await service('postgres')
const TIMEOUT_MS = 2000 // the store's per-call deadline
const BOUND_MS = 15_000 // a call that has not settled by then hangs
const TYPED = ['ERR_REDIS', 'ERR_TIMEOUT']
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** `{ ok, value }`, `{ ok: false, err }`, or `{ hung: true }` after BOUND_MS. */
function settle(promise) {
  let timer
  const bound = new Promise((resolve) => (timer = setTimeout(() => resolve({ hung: true }), BOUND_MS)))
  return Promise.race([promise.then((value) => ({ ok: true, value }), (err) => ({ ok: false, err })), bound]).finally(() => clearTimeout(timer))
}

const open = (url) =>
  new BaileysAuthStore(new BaileysRedisAdapter({ url, timeoutMs: TIMEOUT_MS }), new BaileysOrmAdapter(postgres), { logger: { warn() {}, error() {} } })

describe.skipIf(!available || !postgres)('Redis Sentinel + PostgreSQL', () => {
  let set
  const stores = []
  beforeAll(async () => {
    set = await OwnSentinel.start()
  })
  afterAll(async () => {
    await Promise.all(stores.map((s) => s.close().catch(() => {})))
    await set?.stop()
  })

  it('takes the URL form redis-sentinel://sentinel/0?sentinelServiceName=…&node=… and talks to the master', async () => {
    const store = open(set.url)
    stores.push(store)
    const sid = uniqueId('sentinel-url')
    await store.saveCreds(sid, { creds: { me: 'x' } })
    const master = await set.masterPort()
    expect(Number(await redisCli(master, 'exists', `wa:{s:${sid}}:c`))).toBe(1)
    await store.purgeSession(sid)
  })

  /** A Sentinel set of its own for `fn(set)`, stopped afterwards. */
  async function withOwnSet(options, fn) {
    const own = await OwnSentinel.start(options)
    try {
      await fn(own)
    } finally {
      await own.stop()
    }
  }

  /** Writes creds through `url`, checks they landed on `own`'s master and read back, and removes them. */
  async function roundTrip(own, url, tag) {
    const store = open(url)
    try {
      const sid = uniqueId(tag)
      await store.saveCreds(sid, { creds: { me: tag } })
      expect(Number(await own.cli(await own.masterPort(), 'exists', `wa:{s:${sid}}:c`))).toBe(1)
      expect((await store.getCreds(sid)).creds).toEqual({ me: tag })
      await store.purgeSession(sid)
    } finally {
      await store.close()
    }
  }

  it('authenticates to a password-protected master with the URL password, not to the sentinels (which have none)', () =>
    withOwnSet({ password: 'S3cret%pw' }, async (own) => {
      expect(own.url).toMatch(/^redis-sentinel:\/\/:S3cret%25pw@127\.0\.0\.1:\d+\/0\?sentinelServiceName=mymaster&node=/)
      await roundTrip(own, own.url, 'sentinel-auth')
    }))

  it('authenticates to sentinels with a password of their own from sentinelPassword, and says so without the secret when it is missing or wrong', () =>
    withOwnSet({ password: 'S3cret-srv', sentinelPassword: 'S3cret-snt' }, async (own) => {
      expect(own.url).toMatch(/&sentinelPassword=S3cret-snt$/)
      await roundTrip(own, own.url, 'sentinel-own-auth')
      // the servers' password alone does not open the sentinels; a wrong sentinel password neither
      for (const url of [own.url.replace(/&sentinelPassword=[^&]*/, ''), own.url.replace('sentinelPassword=S3cret-snt', 'sentinelPassword=wr0ng-pw')]) {
        const adapter = new BaileysRedisAdapter({ url, timeoutMs: TIMEOUT_MS })
        const err = await adapter.connect().then(() => null, (e) => e)
        await adapter.disconnect().catch(() => {})
        expect(err).toMatchObject({ code: expect.stringMatching(/^ERR_(REDIS|TIMEOUT)$/) })
        expect(err.message).not.toMatch(/S3cret|wr0ng/)
      }
    }))

  it("gives sentinels that share the servers' password that password when the URL names no sentinelPassword", () =>
    withOwnSet({ password: 'S3cret-both', sentinelPassword: 'S3cret-both' }, async (own) => {
      const url = own.url.replace(/&sentinelPassword=[^&]*/, '')
      expect(url).not.toMatch(/sentinelPassword/)
      await roundTrip(own, url, 'sentinel-shared-auth')
    }))

  it('loses no acknowledged write across SENTINEL FAILOVER, follows the new master, and every call settles typed', async () => {
    const store = open(set.url)
    stores.push(store)
    const sids = Array.from({ length: 4 }, (_, i) => uniqueId(`failover-${i}`))
    const acked = new Map(sids.map((sid) => [sid, []])) // n of every write that resolved
    // the last acknowledged write of the 'window' record, written only while the switch runs: the
    // old master takes writes until Sentinel demotes it, and the new one never saw them
    const windowAcked = new Map()
    const outcomes = { ok: 0, rejected: {}, hung: 0, staleReads: [] }
    let phase = 'before'
    const okAfter = { before: 0, during: 0, after: 0 }
    const note = (r) => {
      if (r.hung) outcomes.hung++
      else if (r.ok) (outcomes.ok++, okAfter[phase]++)
      else outcomes.rejected[r.err.code] = (outcomes.rejected[r.err.code] ?? 0) + 1
      return r
    }
    let stop = false
    const writer = async (sid) => {
      for (let n = 1; !stop; n++) {
        const phaseAtCall = phase
        const session = { [`r${n}`]: { n, sid }, ...(phaseAtCall === 'during' ? { window: { n } } : {}) }
        const w = note(await settle(store.setKeys(sid, { session, 'pre-key': { counter: { n } } })))
        if (w.ok) acked.get(sid).push(n)
        if (w.ok && phaseAtCall === 'during') windowAcked.set(sid, n)
        // a read never goes back behind an acknowledged write
        const r = note(await settle(store.getKeys(sid, 'pre-key', ['counter'])))
        const last = acked.get(sid).at(-1) ?? 0
        if (r.ok && (r.value.counter?.n ?? 0) < last) outcomes.staleReads.push({ sid, got: r.value.counter?.n, last, phase: phaseAtCall })
        if (!w.ok) await sleep(50)
      }
    }
    const writers = sids.map(writer)
    await sleep(500)
    phase = 'during'
    const started = Date.now()
    const { from, to } = await set.sentinelFailover()
    const switchMs = Date.now() - started
    phase = 'after'
    // keeps serving on the new master: wait for writes of every session after the switch
    const afterStart = Object.fromEntries(sids.map((sid) => [sid, acked.get(sid).length]))
    const deadline = Date.now() + 20_000
    while (Date.now() < deadline && sids.some((sid) => acked.get(sid).length < afterStart[sid] + 5)) await sleep(100)
    stop = true
    await Promise.all(writers)

    expect(outcomes.hung).toBe(0)
    for (const code of Object.keys(outcomes.rejected)) expect(TYPED).toContain(code)
    expect(outcomes.staleReads).toEqual([])
    expect(okAfter.before).toBeGreaterThan(0)
    for (const sid of sids) expect(acked.get(sid).length).toBeGreaterThanOrEqual(afterStart[sid] + 5)
    const { redisRebuilds } = await store.stats()
    console.log(`sentinel failover ${from} -> ${to} in ${switchMs} ms; calls ok ${outcomes.ok} (before ${okAfter.before}, during ${okAfter.during}, after ${okAfter.after}), rejected ${JSON.stringify(outcomes.rejected)}, Redis copies rebuilt from SQL ${redisRebuilds}`)
    for (const sid of sids) expect(windowAcked.has(sid)).toBe(true)

    // the writes after the switch are on the new master
    const lastSid = sids[0]
    const lastN = acked.get(lastSid).at(-1)
    expect(await redisCli(to, 'hexists', `wa:{s:${lastSid}}:k:session`, `r${lastN}`)).toMatch(/^1/)

    // every acknowledged write reads back: here, from a fresh store, and from SQL alone
    const fresh = open(set.url)
    stores.push(fresh)
    const sqlOnly = new BaileysAuthStore(null, new BaileysOrmAdapter(postgres))
    stores.push(sqlOnly)
    for (const reader of [store, fresh, sqlOnly]) {
      for (const sid of sids) {
        const ns = acked.get(sid)
        const got = await reader.getKeys(sid, 'session', ns.map((n) => `r${n}`))
        expect(Object.keys(got).length).toBe(ns.length)
        for (const n of ns) expect(got[`r${n}`]).toEqual({ n, sid })
        expect((await reader.getKeys(sid, 'pre-key', ['counter'])).counter.n).toBeGreaterThanOrEqual(ns.at(-1))
        expect((await reader.getKeys(sid, 'session', ['window'])).window).toEqual({ n: windowAcked.get(sid) })
      }
    }
    for (const sid of sids) await store.purgeSession(sid)
  }, 90_000)
})
