// RedisMemoryManager against a Redis server of the test's own and a Redis Cluster of the test's
// own (support/topologies.mjs), with small budgets.
import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BaileysAuthStore, BaileysOrmAdapter, BaileysRedisAdapter, RedisMemoryManager } from '../index.js'
import { introduce, openParty, send } from '../demo/signal-party.mjs'
import { redisServerAvailable } from './support/own-redis.mjs'
import { TOPOLOGIES } from './support/topologies.mjs'

const run = promisify(execFile)
const hasRedisServer = await redisServerAvailable('the memory manager tests')
// each SQLite file in a folder of its own, removed after the file's tests
const tmpDirs = []
afterAll(() => {
  for (const dir of tmpDirs) rmSync(dir, { recursive: true, force: true })
})
const sqliteUrl = () => {
  const dir = mkdtempSync(join(tmpdir(), 'wa-mm-'))
  tmpDirs.push(dir)
  return `sqlite://${join(dir, 'auth.db')}`
}
const sessionData = (i) => {
  const preKeys = {}
  for (let k = 0; k < 40; k++) preKeys[k] = { public: Buffer.alloc(32, k), private: Buffer.alloc(32, i % 256), pad: 'x'.repeat(200) }
  return { creds: { owner: `s${i}` }, keys: { 'pre-key': preKeys, session: { a: { owner: `s${i}`, blob: 'y'.repeat(900) } } } }
}

for (const topology of TOPOLOGIES) {
describe.skipIf(!hasRedisServer)(`RedisMemoryManager: ${topology.name}`, () => {
  let own
  beforeAll(async () => {
    own = await topology.start()
  })
  afterAll(async () => {
    await own?.stop()
  })

  it('keeps Redis under the budget, loses nothing, and warms evicted sessions back', async () => {
    await own.flushall()
    const db = sqliteUrl()
    const warnings = []
    const store = new BaileysAuthStore(new BaileysRedisAdapter(own.url), new BaileysOrmAdapter(db), { cache: false })
    try {
      for (let i = 0; i < 30; i++) await store.saveCreds(`s${i}`, sessionData(i))
      const manager = new RedisMemoryManager(store._redis.redis, { maxMemoryBytes: 1e12, measure: 'store', logger: { warn: (m) => warnings.push(m) } })
      await store.getCreds('s0') // s0 most recent
      await manager.trackAccess('s0')
      const full = (await manager.check()).usedBefore
      const budget = new RedisMemoryManager(store._redis.redis, { maxMemoryBytes: full, evictionThreshold: 80, measure: 'store' })
      const report = await budget.check()
      expect(report.usedAfter).toBeLessThanOrEqual(full * 0.7)
      expect(report.evictedForMemory).toBeGreaterThan(0)
      expect(report.refused).toBe(0)
      const stats = await budget.getStats()
      expect(stats.memoryUsage.percentUsed).toBeLessThanOrEqual(70)
      expect(stats.evictions).toBe(report.evictedForMemory)
      expect(stats.totalSessions).toBe(30 - report.evictedForMemory)
      expect(stats.sessionMetadata[0].sessionId).toBe('s0')
      expect(await own.raw.exists('wa:{s:s1}:c')).toBe(0)
      expect(await own.raw.exists('wa:{s:s0}:c')).toBe(1)
      for (let i = 0; i < 30; i++) {
        const want = sessionData(i)
        expect((await store.getCreds(`s${i}`)).creds).toEqual(want.creds)
        const got = await store.getKeys(`s${i}`, 'pre-key', Object.keys(want.keys['pre-key']))
        expect(got).toEqual(want.keys['pre-key'])
      }
      expect(await own.raw.exists('wa:{s:s1}:c')).toBe(1) // warmed back
      const tiers = await store.stats()
      expect(tiers.sqlHits).toBeGreaterThan(0)
      expect(warnings).toEqual([])
    } finally {
      await store.close()
    }
  })

  it('refuses to evict without SQL, and says so', async () => {
    await own.flushall()
    const warnings = []
    const store = new BaileysAuthStore(new BaileysRedisAdapter(own.url), null, { cache: false })
    try {
      await store.saveCreds('only-redis', sessionData(1))
      const manager = new RedisMemoryManager(new BaileysRedisAdapter(own.url), { maxMemoryBytes: 1, measure: 'store', logger: { warn: (m) => warnings.push(m) } })
      await manager.trackAccess('only-redis')
      const report = await manager.check()
      expect(report).toMatchObject({ evictedForMemory: 0, refused: 1, refusedSessions: ['only-redis'] })
      expect((await manager.getStats()).refusedEvictions).toBe(1)
      expect(warnings.join('\n')).toMatch(/not in SQL/)
      expect((await store.getCreds('only-redis')).creds).toEqual({ owner: 's1' })
    } finally {
      await store.close()
    }
  })

  it('evicts idle sessions after ttlInactivity, from the store option, and stops cleanly', async () => {
    await own.flushall()
    const store = new BaileysAuthStore(new BaileysRedisAdapter(own.url), new BaileysOrmAdapter(sqliteUrl()), {
      memoryManager: { ttlInactivity: 0.2, checkIntervalMs: 100 },
    })
    try {
      await store.saveCreds('idle', sessionData(2))
      await store.memoryManager.trackAccess('idle')
      let stats
      for (let i = 0; i < 50; i++) {
        await new Promise((r) => setTimeout(r, 100))
        stats = await store.memoryManager.getStats()
        if (stats.evictions > 0) break
      }
      expect(stats.evictions).toBe(1)
      expect(stats.running).toBe(true)
      expect(stats.tiers).toMatchObject({ redisHits: expect.any(Number), sqlHits: expect.any(Number) })
      expect(await own.raw.exists('wa:{s:idle}:c')).toBe(0)
      expect((await store.getCreds('idle')).creds).toEqual({ owner: 's2' })
    } finally {
      await store.close()
    }
    expect(store.memoryManager.running).toBe(false)
  })

  it('shares one LRU order between processes', async () => {
    await own.flushall()
    const db = sqliteUrl()
    const store = new BaileysAuthStore(new BaileysRedisAdapter(own.url), new BaileysOrmAdapter(db))
    try {
      for (const s of ['p1', 'p2', 'p3']) await store.saveCreds(s, sessionData(3))
      await store.close()
      const script = fileURLToPath(new URL('./fixtures/touch-sessions.mjs', import.meta.url))
      await run(process.execPath, [script, JSON.stringify({ redis: own.url, database: db, sessions: ['p3', 'p1'] })])
      await run(process.execPath, [script, JSON.stringify({ redis: own.url, database: db, sessions: ['p2'] })])
      const manager = new RedisMemoryManager(new BaileysRedisAdapter(own.url))
      const stats = await manager.getStats()
      expect(stats.sessionMetadata.map((m) => m.sessionId)).toEqual(['p2', 'p1', 'p3'])
      expect(stats.sessionMetadata.find((m) => m.sessionId === 'p1').accessCount).toBe(2)
    } finally {
      await store.close()
    }
  })

  it('lets Baileys keep talking after both parties were evicted from Redis', async () => {
    await own.flushall()
    const store = new BaileysAuthStore(new BaileysRedisAdapter(own.url), new BaileysOrmAdapter(sqliteUrl()), { cache: false })
    try {
      const a = await openParty(store, 'alice', '5511000000001@s.whatsapp.net')
      const b = await openParty(store, 'bob', '5511000000002@s.whatsapp.net')
      await Promise.all([a.saveCreds(), b.saveCreds()])
      await introduce(a, b, 10)
      expect((await send(a, b, 'before')).text).toBe('before')
      const manager = new RedisMemoryManager(store._redis.redis, { maxMemoryBytes: 1, measure: 'store' })
      await manager.trackAccess('alice')
      await manager.trackAccess('bob')
      const report = await manager.check()
      expect(report.evictedForMemory).toBe(2)
      // only bookkeeping is left: the sessions' meta (versions) and leases, the manager's keys
      const left = await own.keys()
      expect(left.filter((k) => !/:(m|l)$/.test(k) && !k.startsWith('wa:{m}:'))).toEqual([])
      expect((await send(b, a, 'after eviction')).text).toBe('after eviction')
      expect((await send(a, b, 'and again')).text).toBe('and again')
    } finally {
      await store.close()
    }
  })

  // A cluster: each primary holds the sessions of its slots, and the manager's own keys ({m}) sit
  // on the one primary of their slot, which every client reaches from any seed node.
  const onCluster = topology.name === 'Redis Cluster'
  /** sid -> port of the primary holding its keys (from each primary's own KEYS, no redirection). */
  const holders = async (sids) => {
    const out = {}
    await own.cluster.eachMaster(async (node, port) => {
      for (const sid of sids) if ((await node.keys(`wa:{s:${sid}}:*`)).length) out[sid] = port
    })
    return out
  }
  /** The cluster's URL with `port` as the first (seed) node. */
  const seededAt = (port) => {
    const others = own.cluster.masterPorts.filter((p) => p !== port)
    return `redis-cluster://127.0.0.1:${port}?${others.map((p) => `node=127.0.0.1:${p}`).join('&')}`
  }
  const usedMemory = async () => Object.fromEntries(await own.cluster.eachMaster(async (node, port) => [`127.0.0.1:${port}`, Number(/used_memory:(\d+)/.exec(await node.info('memory'))[1])]))

  it.runIf(onCluster)("measures used_memory on every primary and sums it, and evicts by the sum ('server')", async () => {
    await own.flushall()
    const store = new BaileysAuthStore(new BaileysRedisAdapter(own.url), new BaileysOrmAdapter(sqliteUrl()), { cache: false })
    try {
      const big = (i) => ({ creds: { owner: `b${i}` }, keys: { session: Object.fromEntries(Array.from({ length: 30 }, (_, k) => [k, { blob: `${i}`.padEnd(2000, 'z') }])) } })
      const sids = Array.from({ length: 60 }, (_, i) => `big${i}`)
      for (const [i, sid] of sids.entries()) await store.saveCreds(sid, big(i))
      const where = await holders(sids)
      expect(new Set(Object.values(where)).size).toBe(3) // spread over every primary
      const probe = new RedisMemoryManager(store._redis.redis, { maxMemoryBytes: 1e12 })
      const before = await usedMemory()
      const { memoryUsage } = await probe.getStats()
      const after = await usedMemory()
      expect(memoryUsage.nodes.map((n) => n.node).sort()).toEqual(Object.keys(before).sort())
      expect(memoryUsage.usedBytes).toBe(memoryUsage.nodes.reduce((a, n) => a + n.usedBytes, 0))
      for (const n of memoryUsage.nodes) {
        expect(n.usedBytes).toBeGreaterThanOrEqual(Math.min(before[n.node], after[n.node]) * 0.95)
        expect(n.usedBytes).toBeLessThanOrEqual(Math.max(before[n.node], after[n.node]) * 1.05)
      }
      // one node's figure would be about a third: a budget of the sum must still trigger eviction
      const total = memoryUsage.usedBytes
      expect(total).toBeGreaterThan(Math.max(...Object.values(before)) * 2)
      for (const sid of sids) await probe.trackAccess(sid)
      const manager = new RedisMemoryManager(store._redis.redis, { maxMemoryBytes: total, evictionThreshold: 90, evictionTarget: 80 })
      const report = await manager.check()
      expect(report.usedBefore).toBeGreaterThan(total * 0.9)
      expect(report.evictedForMemory).toBeGreaterThan(0)
      expect(report.usedAfter).toBeLessThanOrEqual(total * 0.8)
      const sum = Object.values(await usedMemory()).reduce((a, b) => a + b, 0)
      expect(sum).toBeLessThanOrEqual(total * 0.8 * 1.02)
      // the evicted sessions (oldest first) left the primaries that held them, and read back from SQL
      const evicted = sids.slice(0, report.evictedForMemory)
      expect(new Set(evicted.map((sid) => where[sid])).size).toBeGreaterThan(1)
      await own.cluster.eachMaster(async (node, port) => {
        for (const sid of evicted) if (where[sid] === port) expect((await node.keys(`wa:{s:${sid}}:*`)).sort()).toEqual([`wa:{s:${sid}}:m`])
      })
      expect((await store.getCreds(evicted[0])).creds).toEqual({ owner: 'b0' })
    } finally {
      await store.close()
    }
  })

  it.runIf(onCluster)('evicts each session on the primary that holds it, from a store seeded at another node', async () => {
    await own.flushall()
    const db = sqliteUrl()
    const writer = new BaileysAuthStore(new BaileysRedisAdapter(own.url), new BaileysOrmAdapter(db), { cache: false })
    const sids = Array.from({ length: 12 }, (_, i) => `spread${i}`)
    try {
      for (const [i, sid] of sids.entries()) await writer.saveCreds(sid, sessionData(i))
    } finally {
      await writer.close() // sends the accesses it recorded to the shared LRU
    }
    const where = await holders(sids)
    expect(new Set(Object.values(where)).size).toBe(3)
    const seed = own.cluster.masterPorts.at(-1)
    const store = new BaileysAuthStore(new BaileysRedisAdapter(seededAt(seed)), new BaileysOrmAdapter(db), { cache: false })
    try {
      // a scan covers every primary (and no replica twice): all 12 are listed as in Redis
      const listed = (await store.listSessions()).filter((s) => s.inRedis).map((s) => s.id)
      expect(listed).toEqual([...sids].sort())
      const manager = new RedisMemoryManager(store._redis, { maxMemoryBytes: 1, measure: 'store' })
      const report = await manager.check()
      expect(report).toMatchObject({ evictedForMemory: sids.length, refused: 0 })
      await own.cluster.eachMaster(async (node, port) => {
        for (const sid of sids) expect((await node.keys(`wa:{s:${sid}}:*`)).sort()).toEqual(port === where[sid] ? [`wa:{s:${sid}}:m`] : [])
      })
      for (const [i, sid] of sids.entries()) {
        const want = sessionData(i)
        expect(await store.getKeys(sid, 'pre-key', Object.keys(want.keys['pre-key']))).toEqual(want.keys['pre-key'])
      }
      const back = await holders(sids)
      expect(sids.map((sid) => back[sid])).toEqual(sids.map((sid) => where[sid])) // warmed back where they were
    } finally {
      await store.close()
    }
  })

  it.runIf(onCluster)('shares one LRU order and one dirty index between stores seeded at different nodes; flushAll takes every session', async () => {
    await own.flushall()
    const db = sqliteUrl()
    const [p1, p2, p3] = own.cluster.masterPorts
    const opts = { durability: 'write-behind', flushIntervalMs: 3_600_000, cache: false }
    const stores = [p1, p2, p3].map((p) => new BaileysAuthStore(new BaileysRedisAdapter(seededAt(p)), new BaileysOrmAdapter(db), opts))
    try {
      const sids = ['lru-a', 'lru-b', 'lru-c', 'lru-d', 'lru-e', 'lru-f']
      for (const [i, sid] of sids.entries()) {
        await stores[i % 3].setKeys(sid, { session: { a: { n: i } } })
        await new RedisMemoryManager(stores[i % 3]._redis.redis).trackAccess(sid)
        await new Promise((r) => setTimeout(r, 5))
      }
      expect(new Set(Object.values(await holders(sids))).size).toBeGreaterThan(1)
      // the bookkeeping keys live on one primary, whatever node a store was seeded at
      const mKeys = await own.cluster.eachMaster(async (node) => (await node.keys('wa:{m}:*')).sort())
      expect(mKeys.filter((k) => k.length)).toHaveLength(1)
      expect(mKeys.flat()).toEqual(expect.arrayContaining(['wa:{m}:lru', 'wa:{m}:dirty']))
      for (const s of stores) {
        const stats = await new RedisMemoryManager(s._redis.redis).getStats()
        expect(stats.sessionMetadata.map((m) => m.sessionId)).toEqual([...sids].reverse())
      }
      const sqlOnly = new BaileysAuthStore(null, new BaileysOrmAdapter(db), { cache: false })
      try {
        expect(await sqlOnly.getKeys('lru-a', 'session', ['a'])).toEqual({})
        expect(await stores[2].flushAll()).toBe(sids.length)
        for (const [i, sid] of sids.entries()) expect(await sqlOnly.getKeys(sid, 'session', ['a'])).toEqual({ a: { n: i } })
        expect(await own.raw.smembers('wa:{m}:dirty')).toEqual([])
      } finally {
        await sqlOnly.close()
      }
    } finally {
      await Promise.all(stores.map((s) => s.close()))
    }
  })
})
}
