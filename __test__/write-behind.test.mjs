// Write-behind: Redis now, SQL later; close() flushes; after a crash any process flushes. On one
// Redis server and on a Redis Cluster of the test's own.
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BaileysAuthStore, BaileysOrmAdapter, BaileysRedisAdapter } from '../index.js'
import { redisServerAvailable } from './support/own-redis.mjs'
import { TOPOLOGIES } from './support/topologies.mjs'

const available = await redisServerAvailable('the write-behind tests')
// each SQLite file in a folder of its own, removed after the file's tests
const tmpDirs = []
afterAll(() => {
  for (const dir of tmpDirs) rmSync(dir, { recursive: true, force: true })
})
const sqliteUrl = () => {
  const dir = mkdtempSync(join(tmpdir(), 'wa-wb-'))
  tmpDirs.push(dir)
  return `sqlite://${join(dir, 'auth.db')}`
}
const sqlOnly = (db) => new BaileysAuthStore(null, new BaileysOrmAdapter(db), { cache: false })

for (const topology of TOPOLOGIES) {
describe.skipIf(!available)(`write-behind: ${topology.name}`, () => {
  let own
  beforeAll(async () => {
    own = await topology.start()
  })
  afterAll(() => own?.stop())

  it('answers from Redis at once and lands everything in SQL by close()', async () => {
    const db = sqliteUrl()
    const store = new BaileysAuthStore(new BaileysRedisAdapter(own.url), new BaileysOrmAdapter(db), { durability: 'write-behind', flushIntervalMs: 3_600_000 })
    await store.setKeys('wb', { session: { a: { v: 1 } }, 'pre-key': { 1: { p: 1 }, 2: { p: 2 } } })
    await store.setKeys('wb', { 'pre-key': { 1: null } })
    expect(await store.getKeys('wb', 'pre-key', ['1', '2'])).toEqual({ 2: { p: 2 } })
    const before = sqlOnly(db)
    expect(await before.getKeys('wb', 'session', ['a'])).toEqual({})
    await before.close()
    await store.close()
    const after = sqlOnly(db)
    expect(await after.getKeys('wb', 'session', ['a'])).toEqual({ a: { v: 1 } })
    expect(await after.getKeys('wb', 'pre-key', ['1', '2'])).toEqual({ 2: { p: 2 } })
    await after.close()
  })

  it('lets another process flush what a SIGKILLed one wrote behind', async () => {
    const db = sqliteUrl()
    const script = fileURLToPath(new URL('./fixtures/write-behind-crash.mjs', import.meta.url))
    const child = spawn(process.execPath, [script, JSON.stringify({ redis: own.url, database: db, sid: 'crashed' })], { stdio: ['ignore', 'pipe', 'inherit'] })
    await new Promise((resolve, reject) => {
      child.stdout.on('data', (d) => String(d).includes('written') && resolve())
      child.once('exit', (code) => reject(new Error(`child exited early (${code})`)))
    })
    const exited = new Promise((r) => child.once('exit', r))
    child.kill('SIGKILL')
    await exited
    const check = sqlOnly(db)
    expect(await check.getCreds('crashed')).toBeNull()
    const rescuer = new BaileysAuthStore(new BaileysRedisAdapter(own.url), new BaileysOrmAdapter(db), { durability: 'write-behind', flushIntervalMs: 50 })
    expect(await rescuer.flushAll()).toBe(3)
    expect((await check.getCreds('crashed')).creds).toEqual({ me: 'crash' })
    expect(await check.getKeys('crashed', 'session', ['a'])).toEqual({ a: { v: 'written behind' } })
    await Promise.all([check.close(), rescuer.close()])
  })

  it('refuses write-behind without both tiers', () => {
    expect(() => new BaileysAuthStore(new BaileysRedisAdapter(own.url), null, { durability: 'write-behind' })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }))
    expect(() => new BaileysAuthStore(null, new BaileysOrmAdapter('sqlite::memory:'), { durability: 'sometimes' })).toThrow(/durability/)
  })
})
}
