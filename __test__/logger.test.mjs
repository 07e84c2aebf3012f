// Background failures reach the user's logger (pino's shape) and are counted; nothing fails silently.
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Redis from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BaileysAuthStore, BaileysOrmAdapter, BaileysRedisAdapter } from '../index.js'
import { OwnRedis, redisServerAvailable } from './support/own-redis.mjs'

const available = await redisServerAvailable('the logger tests')
const sqliteUrl = () => `sqlite://${join(mkdtempSync(join(tmpdir(), 'wa-log-')), 'auth.db')}`

function recordingLogger() {
  const lines = []
  return {
    lines,
    warn: (obj, msg) => lines.push({ level: 'warn', ...obj, msg }),
    error: (obj, msg) => lines.push({ level: 'error', ...obj, msg }),
  }
}

async function until(check, what) {
  for (let i = 0; i < 100; i++) {
    if (check()) return
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`timed out waiting for ${what}`)
}

describe.skipIf(!available)('the logger option', () => {
  let own
  beforeAll(async () => {
    own = await OwnRedis.start()
  })
  afterAll(() => own?.kill())

  it('gets a record that Redis lost before it was flushed, with a code, and stats count it', async () => {
    const logger = recordingLogger()
    const store = new BaileysAuthStore(new BaileysRedisAdapter(own.url), new BaileysOrmAdapter(sqliteUrl()), { cache: false, logger })
    const raw = new Redis(own.url)
    try {
      await store.setKeys('lost', { session: { a: { v: 1 } } }, { syncToDatabase: false })
      await raw.del('wa:{s:lost}:k:session') // as a maxmemory-policy eviction would
      expect(await store.flush('lost')).toBe(0)
      await until(() => logger.lines.length > 0, 'the warning')
      expect(logger.lines[0]).toMatchObject({ level: 'warn', code: 'WARN_RECORD_LOST', component: 'wa-auth-store' })
      expect((await store.stats()).warnings).toBeGreaterThanOrEqual(1)
    } finally {
      raw.disconnect()
      await store.close()
    }
  })

  it('gets the failures of the write-behind flusher while Redis is down', async () => {
    const logger = recordingLogger()
    const mine = await OwnRedis.start()
    const store = new BaileysAuthStore(new BaileysRedisAdapter({ url: mine.url, timeoutMs: 300 }), new BaileysOrmAdapter(sqliteUrl()), {
      durability: 'write-behind',
      flushIntervalMs: 50,
      logger,
    })
    try {
      await store.setKeys('wb', { session: { a: { v: 1 } } })
      await mine.kill()
      await until(() => logger.lines.some((l) => ['ERR_REDIS', 'ERR_TIMEOUT'].includes(l.code)), 'a flusher failure')
      const line = logger.lines.find((l) => ['ERR_REDIS', 'ERR_TIMEOUT'].includes(l.code))
      expect(line.msg).toMatch(/flush/)
    } finally {
      await store.close()
    }
  })

  it('refuses a logger without warn()', () => {
    expect(() => new BaileysAuthStore(null, new BaileysOrmAdapter('sqlite::memory:'), { logger: {} })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }))
  })
})
