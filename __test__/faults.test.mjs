// Backend failures are errors, never "missing"; the store recovers when the backend returns; a
// script that closes its store exits.
import { execFile } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { afterAll, describe, expect, it } from 'vitest'
import { BaileysAuthStore, BaileysOrmAdapter, BaileysRedisAdapter, openAuthStore } from '../index.js'
import { OwnRedis, redisServerAvailable } from './support/own-redis.mjs'
import { service, TEST_PREFIX, uniqueId } from './support/services.mjs'

const run = promisify(execFile)
const redisServer = await redisServerAvailable('the fault tests')

describe.skipIf(!redisServer)('a Redis server that dies mid-run', () => {
  let own
  afterAll(() => own?.kill())

  it('rejects with ERR_REDIS/ERR_TIMEOUT while down, and serves again (from SQL) once back', async () => {
    own = await OwnRedis.start()
    const db = `sqlite://${join(mkdtempSync(join(tmpdir(), 'wa-fault-')), 'auth.db')}`
    // lease: false: a store without leases writes SQL first whatever Redis does (a leased store that
    // does not hold the session must read the lease in Redis first, and is refused while it is down)
    const store = new BaileysAuthStore(new BaileysRedisAdapter({ url: own.url, timeoutMs: 500 }), new BaileysOrmAdapter(db), { cache: false, lease: false })
    try {
      const sid = uniqueId('fault')
      await store.setKeys(sid, { session: { a: { v: 1 } } })
      await own.kill()
      const err = await store.getKeys(sid, 'session', ['a']).catch((e) => e)
      expect(err).toBeInstanceOf(Error)
      expect(['ERR_REDIS', 'ERR_TIMEOUT']).toContain(err.code)
      expect(err.cause).toBeDefined()
      const werr = await store.setKeys(sid, { session: { b: { v: 2 } } }).catch((e) => e)
      expect(['ERR_REDIS', 'ERR_TIMEOUT']).toContain(werr.code)
      // an empty set and an empty get do no I/O: they succeed while Redis is down
      await expect(store.setKeys(sid, { 'pre-key': {} })).resolves.toBeUndefined()
      await expect(store.getKeys(sid, 'pre-key', [])).resolves.toEqual({})

      await own.start() // empty: Redis keeps nothing on disk here
      let got
      for (let i = 0; i < 50 && !got; i++) {
        got = await store.getKeys(sid, 'session', ['a', 'b']).catch(() => null)
        if (!got) await new Promise((r) => setTimeout(r, 100))
      }
      // 'a' comes back from SQL; 'b' was committed to SQL before the Redis step failed
      expect(got).toEqual({ a: { v: 1 }, b: { v: 2 } })
    } finally {
      await store.close()
    }
  })
})

describe('lifecycle', () => {
  it('lets a script that closes its store exit by itself', async () => {
    const redis = await service('redis')
    const postgres = await service('postgres')
    const script = fileURLToPath(new URL('./fixtures/open-write-close.mjs', import.meta.url))
    const db = `sqlite://${join(mkdtempSync(join(tmpdir(), 'wa-exit-')), 'auth.db')}`
    for (const cfg of [{ database: db }, redis && postgres ? { redis, database: postgres } : null].filter(Boolean)) {
      const { stdout } = await run(process.execPath, [script, JSON.stringify({ ...cfg, prefix: TEST_PREFIX })])
      expect(stdout.trim()).toBe('closed')
    }
  })

  it('opens the embedded default with no arguments', async () => {
    const cwd = process.cwd()
    const dir = mkdtempSync(join(tmpdir(), 'wa-default-'))
    process.chdir(dir)
    const saved = { r: process.env.REDIS_URL, d: process.env.DATABASE_URL }
    delete process.env.REDIS_URL
    delete process.env.DATABASE_URL
    try {
      const store = await openAuthStore()
      await store.saveCreds('s', { creds: { ok: true } })
      await store.close()
      const again = await openAuthStore()
      expect((await again.getCreds('s')).creds).toEqual({ ok: true })
      await again.close()
      const { existsSync } = await import('node:fs')
      expect(existsSync(join(dir, 'wa-auth-store.db'))).toBe(true)
    } finally {
      process.chdir(cwd)
      if (saved.r !== undefined) process.env.REDIS_URL = saved.r
      if (saved.d !== undefined) process.env.DATABASE_URL = saved.d
    }
  })

  it('keeps passwords out of error messages', async () => {
    const err = await openAuthStore({ redis: 'redis://user:hunter2secret@127.0.0.1:1', database: null }).catch((e) => e)
    expect(err.code).toMatch(/^ERR_(REDIS|TIMEOUT)$/)
    expect(String(err.message)).not.toContain('hunter2secret')
    expect(String(err.cause?.message)).not.toContain('hunter2secret')
    const err2 = await openAuthStore({ database: { url: 'postgres://u:hunter2secret@127.0.0.1:1/db', timeoutMs: 500 } }).catch((e) => e)
    expect(err2.code).toMatch(/^ERR_(DATABASE|TIMEOUT)$/)
    expect(String(err2.message)).not.toContain('hunter2secret')
  })

  it('explains the move from the seed\'s MikroORM adapter', () => {
    expect(() => new BaileysOrmAdapter({ find() {} }, class Entity {})).toThrow(/database URL/)
  })
})
