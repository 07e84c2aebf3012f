// Bad input through the public API, on every backend combination (see support/bad-inputs.mjs for
// the table). Each case either rejects with a WaAuthStoreError carrying the expected ERR_* code, or
// (a legitimately valid input) round-trips exactly. No rendering of an error (message, String(),
// stack, JSON, util.inspect with its cause) may carry a password or stored bytes, and a canary
// session written before the table reads back byte-identical after it.
import util from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import Redis from 'ioredis'
import { BaileysAuthStore, BaileysOrmAdapter, BaileysRedisAdapter, WaAuthStoreError, encodeValue } from '../index.js'
import { VALID, Mismatch, buildCases, exact, makeCanary, show } from './support/bad-inputs.mjs'
import { configurations } from './support/configs.mjs'
import * as servicesModule from './support/services.mjs'

// plug-ins are left out: what is checked here happens before the durable tier (lib/persistence has its own)
const configs = (await configurations()).filter((c) => !c.plugin)
const { service } = servicesModule
const services = { redis: await service('redis'), postgres: await service('postgres'), mysql: await service('mysql') }
const cases = buildCases()
// Test sessions carry the suite's prefix (so a global teardown can find them), then this run's tag.
const runTag = `${servicesModule.TEST_PREFIX ?? 'wa-test-'}bi${process.pid}x${Date.now().toString(36)}`
const CODES = new Set(['ERR_INVALID_ARGUMENT', 'ERR_INVALID_SESSION_ID', 'ERR_REDIS', 'ERR_DATABASE', 'ERR_TIMEOUT', 'ERR_STORE_CLOSED', 'ERR_CORRUPT_VALUE', 'ERR_CONFIG', 'ERR_SESSION_LOCKED', 'ERR_BAILEYS_NOT_FOUND'])

const redact = (s) => String(s).replace(/S3cret\S*/g, '<password>')
function describeError(err) {
  if (!(err instanceof Error)) return `a thrown ${typeof err} ${show(err)}`
  const code = err.code !== undefined ? ` ${err.code}` : ' (no code)'
  return `${err.constructor?.name ?? 'Error'}${code}: ${redact(err.message).slice(0, 200)}`
}

const PROTOTYPES = [
  ['Object.prototype', Object.prototype],
  ['Object', Object],
  ['Function.prototype', Function.prototype],
  ['Array.prototype', Array.prototype],
]
const snapshotPrototypes = () => PROTOTYPES.map(([, o]) => new Set(Reflect.ownKeys(o)))
/** Names added to the built-in prototypes since `before`; removed again. */
function pollution(before) {
  const found = []
  PROTOTYPES.forEach(([name, o], i) => {
    for (const k of Reflect.ownKeys(o)) {
      if (!before[i].has(k)) {
        found.push(`${name}.${String(k)} = ${show(o[k])}`)
        delete o[k]
      }
    }
  })
  return found
}

let contexts = 0

class Context {
  constructor(cfg) {
    this.cfg = cfg
    this.services = services
    this.sids = new Set()
    this.tracked = []
    this.n = 0
    this.tag = `c${contexts++}`
    this.secretForms = [{ label: 'the URL password', text: 'S3cret' }]
    // bytes written next to every bad input: no error may echo them
    this.secret = Buffer.from(Array.from({ length: 32 }, () => (Math.random() * 256) | 0))
    this.addSecretBytes('stored value bytes', this.secret)
  }

  async open() {
    this.store = await this.cfg.open()
    const { redis, database } = this.cfg
    this.readers = [
      { name: 'the shared store', store: this.store },
      { name: 'a fresh store without cache', store: this.mk(redis, database, { cache: false }) },
    ]
    if (redis && database) this.readers.push({ name: 'the SQL tier alone', store: this.mk(null, database, { cache: false }) })
  }

  mk(redis, database, options) {
    return new BaileysAuthStore(redis ? new BaileysRedisAdapter(redis) : null, database ? new BaileysOrmAdapter(database) : null, options)
  }

  uid(label) {
    // ids differ between configurations too: those that share the Redis server must not share
    // sessions (a session's Redis copy ahead of another configuration's SQL is SQL behind Redis)
    return this.reg(`${runTag}-${label}-${this.tag}-${this.n++}`)
  }

  /**
   * Deletes `sid` at the end. Within a case the id is kept aside: a case that rejected as
   * expected (and, where it says so, was shown to have written nothing) needs no cleanup, which
   * keeps the final deletes to the sessions that may exist.
   */
  reg(sid) {
    ;(this.caseSids ?? this.sids).add(sid)
    return sid
  }

  /** Deletes `sid` at the end, whatever the outcome of the case. */
  keep(sid) {
    this.sids.add(sid)
    return sid
  }

  track(x) {
    this.tracked.push(x)
    return x
  }

  async closeTracked() {
    const list = this.tracked.splice(0)
    for (const x of list.reverse()) {
      try {
        if (typeof x.stop === 'function') await x.stop()
        else if (typeof x.close === 'function') await x.close()
        else if (typeof x.disconnect === 'function') await x.disconnect()
      } catch {
        // a case may leave a half-built object behind; closing it is best effort
      }
    }
  }

  /** Adapters with the configuration's tier shape; SQL on sqlite::memory: (cheap to open). */
  tiers() {
    return [this.cfg.redis ? new BaileysRedisAdapter(this.cfg.redis) : null, this.cfg.database ? new BaileysOrmAdapter('sqlite::memory:') : null]
  }

  cheap(options) {
    const [r, q] = this.tiers()
    return this.track(new BaileysAuthStore(r, q, options))
  }

  real(options) {
    return this.track(this.mk(this.cfg.redis, this.cfg.database, options))
  }

  async redisAdapter() {
    if (!this.sharedRedis) {
      this.sharedRedis = new BaileysRedisAdapter(services.redis)
    }
    await this.sharedRedis.connect()
    return this.sharedRedis
  }

  async withEnv(fn) {
    const saved = { REDIS_URL: process.env.REDIS_URL, DATABASE_URL: process.env.DATABASE_URL }
    delete process.env.REDIS_URL
    process.env.DATABASE_URL = 'sqlite::memory:'
    try {
      return await fn()
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k]
        else process.env[k] = v
      }
    }
  }

  readerStores() {
    return this.readers.map((r) => r.store)
  }

  /** want: { [type]: { [id]: value | undefined (absent) } }, checked through every reader. */
  async expectKeys(sid, want) {
    await Promise.all(this.readers.map(async ({ name, store }) => {
      for (const type of Object.keys(want)) {
        const ids = Object.keys(want[type])
        const present = ids.filter((id) => want[type][id] !== undefined).sort()
        const got = await store.getKeys(sid, type, ids)
        if (Object.getPrototypeOf(got) !== Object.prototype) throw new Mismatch(`${name}: getKeys(${show(type)}) returned an object whose prototype was replaced`)
        const gotIds = Object.keys(got).sort()
        if (gotIds.join('\0') !== present.join('\0')) throw new Mismatch(`${name}: getKeys(${show(type)}) returned ids ${show(gotIds)}, expected ${show(present)}`)
        for (const id of present) exact(got[id], want[type][id], `${name}: ${show(type)}/${show(id)}`)
        const listed = (await store.listIds(sid, type)).sort()
        if (listed.join('\0') !== present.join('\0')) throw new Mismatch(`${name}: listIds(${show(type)}) returned ${show(listed)}, expected ${show(present)}`)
      }
    }))
  }

  async expectCreds(sid, want) {
    await Promise.all(this.readers.map(async ({ name, store }) => {
      const got = await store.getCreds(sid)
      if (want === null) {
        if (got !== null) throw new Mismatch(`${name}: getCreds returned ${show(got)}, expected null`)
      } else {
        if (got === null || typeof got !== 'object') throw new Mismatch(`${name}: getCreds returned ${show(got)}`)
        exact(got.creds, want, `${name}: creds`)
      }
    }))
  }

  /**
   * Nothing of `sid` in any tier: no creds, no records of `types`, no type at all. Read by the
   * stores without a cache (what the shared store cached is what it wrote to the tiers).
   */
  async nothingStored(sid, types) {
    await Promise.all(this.readers.slice(1).map(async ({ name, store }) => {
      const [creds, d, ...lists] = await Promise.all([store.getCreds(sid), store.describeSession(sid), ...types.map((type) => store.listIds(sid, type))])
      if (creds !== null) throw new Mismatch(`${name}: creds were written (${show(creds)})`)
      lists.forEach((ids, i) => {
        if (ids.length) throw new Mismatch(`${name}: records of ${show(types[i])} were written: ${show(ids)}`)
      })
      if (d.creds || d.types.length) throw new Mismatch(`${name}: describeSession shows ${show(d)}`)
    }))
  }

  /** Texts an error renders to, and which secret each one holds. */
  leaks(err) {
    const texts = {}
    const grab = (where, f) => {
      try {
        texts[where] = String(f())
      } catch {
        // a rendering that throws shows nothing
      }
    }
    grab('err.message', () => err?.message)
    grab('String(err)', () => String(err))
    grab('err.stack', () => err?.stack)
    grab('JSON.stringify(err)', () => JSON.stringify(err))
    grab('util.inspect(err) (with its cause)', () => util.inspect(err, { depth: 8 }))
    const found = []
    for (const { label, text } of this.secretForms) {
      for (const [where, s] of Object.entries(texts)) if (s.includes(text)) found.push(`${label} in ${where}`)
    }
    return [...new Set(found)]
  }

  addSecretBytes(label, b) {
    const dec = Array.from(b.subarray(0, 12))
    this.secretForms.push(
      { label: `${label} (base64)`, text: b.toString('base64').replace(/=+$/, '') },
      { label: `${label} (hex)`, text: b.toString('hex') },
      { label: `${label} (decimal list)`, text: dec.join(',') },
      { label: `${label} (decimal list)`, text: dec.join(', ') },
    )
  }

  async runCase(c) {
    const expected = [].concat(typeof c.expect === 'function' ? c.expect(this.cfg) : c.expect)
    const scratch = {}
    this.caseSids = new Set()
    let written = true
    const before = snapshotPrototypes()
    let outcome
    try {
      outcome = { value: await c.run(this, scratch) }
    } catch (err) {
      outcome = { err }
    }
    await this.closeTracked()
    const problems = pollution(before).map((p) => `polluted ${p}`)
    const want = expected.map((e) => (e === VALID ? 'a valid round trip' : e)).join(' or ')
    if ('err' in outcome) {
      const { err } = outcome
      if (err instanceof Mismatch) {
        problems.push(`accepted but did not round-trip: ${err.message}`)
      } else {
        for (const leak of this.leaks(err)) problems.push(`leaks ${leak}`)
        const ok = err instanceof WaAuthStoreError && err.name === 'WaAuthStoreError' && CODES.has(err.code) && expected.includes(err.code)
        if (!ok) problems.push(`rejected with ${describeError(err)} instead of ${want}`)
        else if (typeof err.message !== 'string' || !err.message) problems.push('rejected with an empty message')
        else if (c.after) {
          try {
            await c.after(this, scratch)
            written = false
          } catch (e) {
            problems.push(`rejected as expected, but ${e instanceof Mismatch ? e.message : describeError(e)}`)
          }
        } else written = false
      }
    } else if (!expected.includes(VALID)) {
      problems.push(`resolved instead of ${want}`)
    }
    await this.closeTracked()
    if (written || problems.length) for (const sid of this.caseSids) this.sids.add(sid)
    this.caseSids = null
    if (problems.length) throw new Error(problems.join('\n'))
  }

  // ---------------------------------------------------------------- canary
  async writeCanary() {
    this.canary = makeCanary(this)
    this.canary.secrets.forEach((b, i) => this.addSecretBytes(`canary key bytes #${i}`, b))
    for (const [sid, { creds, keys }] of this.canary.sessions) await this.store.saveCreds(sid, { creds, keys })
    const problems = await this.compareCanary()
    if (problems.length) throw new Error(`the canary did not read back right after writing it:\n${problems.join('\n')}`)
  }

  /** Differences between what every reader returns and the canary as written (encoded bytes). */
  async compareCanary() {
    const problems = []
    for (const { name, store } of this.readers) {
      for (const [sid, { creds, keys }] of this.canary.sessions) {
        const who = sid === this.canary.sid ? 'canary' : 'canary twin'
        const got = await store.getCreds(sid)
        if (!got) problems.push(`${name}: ${who} creds are gone`)
        else if (!encodeValue(got.creds).equals(encodeValue(creds))) problems.push(`${name}: ${who} creds changed`)
        for (const [type, records] of Object.entries(keys)) {
          const ids = Object.keys(records)
          const values = await store.getKeys(sid, type, ids)
          for (const id of ids) {
            if (!Object.hasOwn(values, id)) problems.push(`${name}: ${who} ${show(type)}/${show(id)} is gone`)
            else if (!encodeValue(values[id]).equals(encodeValue(records[id]))) problems.push(`${name}: ${who} ${show(type)}/${show(id)} changed to ${show(values[id])}`)
          }
          const listed = (await store.listIds(sid, type)).sort()
          if (listed.join('\0') !== [...ids].sort().join('\0')) problems.push(`${name}: ${who} listIds(${show(type)}) is ${show(listed)}, expected ${show(ids.sort())}`)
        }
        const d = await store.describeSession(sid)
        const types = d.types.map((x) => x.type).sort()
        if (types.join('\0') !== Object.keys(keys).sort().join('\0')) problems.push(`${name}: ${who} has types ${show(types)}, expected ${show(Object.keys(keys).sort())}`)
      }
    }
    return problems
  }

  // ---------------------------------------------------------------- cleanup
  async cleanup() {
    const problems = []
    const sids = [...this.sids]
    const inBatches = async (fn) => {
      for (let i = 0; i < sids.length; i += 100) await Promise.all(sids.slice(i, i + 100).map(fn))
    }
    await inBatches(async (sid) => {
      try {
        // the constructor cases pair this Redis with a SQLite of their own: their sessions' Redis
        // copies are ahead of this configuration's SQL, which refuses them (ERR_SQL_BEHIND)
        // until they are purged
        await this.store.deleteCreds(sid).catch((err) => {
          if (err?.code !== 'ERR_SQL_BEHIND') throw err
        })
        // Where deletes leave a tombstone (so a stale tier cannot resurrect the session), the
        // store offers purgeSession to drop that too: a test run should leave nothing behind.
        if (typeof this.store.purgeSession === 'function') await this.store.purgeSession(sid)
      } catch (err) {
        problems.push(`deleteCreds(${show(sid)}) failed: ${describeError(err)}`)
      }
    })
    const check = this.mk(this.cfg.redis, this.cfg.database, { cache: false })
    try {
      await inBatches(async (sid) => {
        try {
          const d = await check.describeSession(sid)
          if (d.creds || d.types.length) problems.push(`${show(sid)} is still stored: ${show(d)}`)
        } catch (err) {
          problems.push(`describeSession(${show(sid)}) after its deleteCreds failed: ${describeError(err)}`)
        }
      })
    } finally {
      await check.close()
    }
    if (this.cfg.redis) {
      const redis = new Redis(this.cfg.redis, { lazyConnect: true, maxRetriesPerRequest: 1 })
      await redis.connect()
      try {
        const keys = await scanAll(redis, `*${runTag}*`)
        if (keys.length) problems.push(`Redis still holds ${keys.length} key(s) of this run's sessions, e.g. ${show(keys.slice(0, 3))}`)
      } finally {
        redis.disconnect()
      }
    }
    return problems
  }

  async close() {
    await this.closeTracked()
    await Promise.all([...(this.readers ?? []).map((r) => r.store.close().catch(() => {})), this.sharedRedis?.disconnect().catch(() => {})])
  }
}

async function scanAll(redis, pattern) {
  const out = []
  let cursor = '0'
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000)
    cursor = next
    out.push(...keys)
  } while (cursor !== '0')
  return out
}

/**
 * Memory-manager bookkeeping (shared LRU, counts, sizes, dirty index) still naming this run's
 * sessions after they were deleted; removed so nothing of the run stays behind.
 */
async function scrubTracking(url) {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 })
  await redis.connect()
  const left = []
  try {
    const keys = [...(await scanAll(redis, '*{m}:*')), ...(await scanAll(redis, '*{mm}:*'))]
    for (const key of keys) {
      const type = await redis.type(key)
      const matching = []
      if (type === 'zset' || type === 'set' || type === 'hash') {
        let cursor = '0'
        const cmd = { zset: 'zscan', set: 'sscan', hash: 'hscan' }[type]
        do {
          const [next, items] = await redis[cmd](key, cursor, 'MATCH', `*${runTag}*`, 'COUNT', 1000)
          cursor = next
          const step = type === 'set' ? 1 : 2
          for (let i = 0; i < items.length; i += step) matching.push(items[i])
        } while (cursor !== '0')
        if (matching.length) {
          left.push(`${key}: ${matching.length}, e.g. ${show(matching.slice(0, 3))}`)
          if (type === 'zset') await redis.zrem(key, ...matching)
          else if (type === 'set') await redis.srem(key, ...matching)
          else await redis.hdel(key, ...matching)
        }
      }
    }
  } finally {
    redis.disconnect()
  }
  return left
}

it(`the table has at least 200 distinct cases (${cases.length})`, () => {
  const names = cases.map((c) => c.name)
  expect(new Set(names).size).toBe(names.length)
  expect(cases.length).toBeGreaterThanOrEqual(200)
})

for (const cfg of configs) {
  describe.skipIf(cfg.skip)(`bad input: ${cfg.name}`, () => {
    const t = new Context(cfg)
    beforeAll(() => t.open())
    afterAll(() => t.close())

    it('writes the canary session (creds and keys of several types, and a U+FFFD twin)', () => t.writeCanary())

    for (const c of cases) {
      const missing = (c.needs ?? []).filter((n) => !services[n])
      it.skipIf(missing.length > 0)(c.name, () => t.runCase(c))
    }

    it('the canary reads back byte-identical after the table', async () => {
      expect(t.canary, 'the canary was not written').toBeTruthy()
      const problems = await t.compareCanary()
      expect(problems, problems.join('\n')).toEqual([])
    })

    it('deleteCreds removes every session the table created, from every tier', async () => {
      const problems = await t.cleanup()
      expect(problems, problems.join('\n')).toEqual([])
    })
  })
}

// The memory manager's shared bookkeeping (LRU, access counts) keeps naming sessions after
// deleteCreds; it is not session data, but this run should leave nothing behind, so it goes too.
afterAll(async () => {
  if (!services.redis) return
  // Stores batch their access tracking once a second: let the last batches land first.
  await new Promise((r) => setTimeout(r, 1200))
  const left = await scrubTracking(services.redis)
  if (left.length) console.info(`bad-input: removed memory-manager bookkeeping of deleted sessions: ${left.join('; ')}`)
})
