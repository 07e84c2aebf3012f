// RedisMemoryManager against a Redis server of the test's own, with small budgets.
import { execFile } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import Redis from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BaileysAuthStore, BaileysOrmAdapter, BaileysRedisAdapter, RedisMemoryManager } from '../index.js'
import { introduce, openParty, send } from '../demo/signal-party.mjs'
import { OwnRedis, redisServerAvailable } from './support/own-redis.mjs'

const run = promisify(execFile)
const hasRedisServer = await redisServerAvailable('the memory manager tests')
const sqliteUrl = () => `sqlite://${join(mkdtempSync(join(tmpdir(), 'wa-mm-')), 'auth.db')}`
const sessionData = (i) => {
  const preKeys = {}
  for (let k = 0; k < 40; k++) preKeys[k] = { public: Buffer.alloc(32, k), private: Buffer.alloc(32, i % 256), pad: 'x'.repeat(200) }
  return { creds: { owner: `s${i}` }, keys: { 'pre-key': preKeys, session: { a: { owner: `s${i}`, blob: 'y'.repeat(900) } } } }
}

describe.skipIf(!hasRedisServer)('RedisMemoryManager', () => {
  let own
  let raw
  beforeAll(async () => {
    own = await OwnRedis.start()
    raw = new Redis(own.url)
  })
  afterAll(async () => {
    raw?.disconnect()
    await own?.kill()
  })

  it('keeps Redis under the budget, loses nothing, and warms evicted sessions back', async () => {
    await raw.flushall()
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
      expect(await raw.exists('wa:{s:s1}:c')).toBe(0)
      expect(await raw.exists('wa:{s:s0}:c')).toBe(1)
      for (let i = 0; i < 30; i++) {
        const want = sessionData(i)
        expect((await store.getCreds(`s${i}`)).creds).toEqual(want.creds)
        const got = await store.getKeys(`s${i}`, 'pre-key', Object.keys(want.keys['pre-key']))
        expect(got).toEqual(want.keys['pre-key'])
      }
      expect(await raw.exists('wa:{s:s1}:c')).toBe(1) // warmed back
      const tiers = await store.stats()
      expect(tiers.sqlHits).toBeGreaterThan(0)
      expect(warnings).toEqual([])
    } finally {
      await store.close()
    }
  })

  it('refuses to evict without SQL, and says so', async () => {
    await raw.flushall()
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
    await raw.flushall()
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
      expect(await raw.exists('wa:{s:idle}:c')).toBe(0)
      expect((await store.getCreds('idle')).creds).toEqual({ owner: 's2' })
    } finally {
      await store.close()
    }
    expect(store.memoryManager.running).toBe(false)
  })

  it('shares one LRU order between processes', async () => {
    await raw.flushall()
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
    await raw.flushall()
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
      const left = await raw.keys('*')
      expect(left.filter((k) => !/:(m|l)$/.test(k) && !k.startsWith('wa:{m}:'))).toEqual([])
      expect((await send(b, a, 'after eviction')).text).toBe('after eviction')
      expect((await send(a, b, 'and again')).text).toBe('and again')
    } finally {
      await store.close()
    }
  })
})
