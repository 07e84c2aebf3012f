// The command line, run as a user runs it (a child process of bin/wa-auth-store.js), on real
// stores: sessions, describe, stats, verify (with a record corrupted behind the store's back),
// delete, copy from the embedded SQLite file to Redis + PostgreSQL and back, exit codes.
import { execFile } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BufferJSON, initAuthCreds, useMultiFileAuthState } from 'baileys'
import { BaileysAuthStore, BaileysOrmAdapter, BaileysRedisAdapter, copySessions, openAuthStore } from '../index.js'
import { SqlConnection } from '../binding.js'
import { service, uniqueId } from './support/services.mjs'

const run = promisify(execFile)
const bin = fileURLToPath(new URL('../bin/wa-auth-store.js', import.meta.url))
const dir = mkdtempSync(join(tmpdir(), 'wa-auth-store-cli-'))
const sqlite = `sqlite://${join(dir, 'auth.db')}`
const redis = await service('redis')
const postgres = await service('postgres')

/** Runs the CLI; resolves to { code, stdout, stderr } whatever the exit code. */
const cli = (...args) => cliWith({}, ...args)
async function cliWith(extraEnv, ...args) {
  const env = { ...process.env, REDIS_URL: '', DATABASE_URL: '', WA_AUTH_STORE_KEY: '', ...extraEnv }
  try {
    const { stdout, stderr } = await run(process.execPath, [bin, ...args], { env, cwd: dir, timeout: 60_000 })
    return { code: 0, stdout, stderr }
  } catch (err) {
    if (typeof err.code !== 'number') throw err
    return { code: err.code, stdout: err.stdout, stderr: err.stderr }
  }
}
const json = async (...args) => {
  const r = await cli(...args, '--json')
  expect(r.code, r.stderr).toBe(0)
  return JSON.parse(r.stdout)
}

const registered = uniqueId('cli-registered')
const fresh = uniqueId('cli-fresh')
const preKeys = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [String(i + 1), { public: Buffer.alloc(32, i), private: Buffer.alloc(32, i + 1) }]))

beforeAll(async () => {
  const store = await openAuthStore({ redis: null, database: sqlite })
  const creds = initAuthCreds()
  creds.registered = true
  creds.me = { id: '5511999990000:3@s.whatsapp.net', name: 'cli' }
  await store.saveCreds(registered, { creds, keys: { 'pre-key': preKeys, session: { '5511999990001.0': { _sessions: {}, version: 'v1' } } } })
  await store.saveCreds(fresh, { creds: initAuthCreds() })
  await store.close()
})

afterAll(() => rmSync(dir, { recursive: true, force: true }))

describe('wa-auth-store CLI', () => {
  it('prints usage for --help (exit 0) and refuses unknown commands and missing flags (exit 2)', async () => {
    const help = await cli('--help')
    expect(help.code).toBe(0)
    expect(help.stdout).toMatch(/import/)
    expect(help.stdout).toMatch(/sessions/)
    expect((await cli('no-such-command')).code).toBe(2)
    const missing = await cli('import', 'multifile', dir, '--database', sqlite)
    expect(missing.code).toBe(2)
    expect(missing.stderr).toMatch(/--session/)
    expect((await cli('copy', '--database', sqlite)).code).toBe(2)
  })

  it('lists sessions with registration, me.id, key counts and bytes', async () => {
    const list = await json('sessions', '--database', sqlite)
    const mine = Object.fromEntries(list.map((s) => [s.id, s]))
    expect(mine[registered]).toMatchObject({ registered: true, me: '5511999990000:3@s.whatsapp.net', keys: 41 })
    expect(mine[registered].bytes).toBeGreaterThan(40 * 64)
    expect(mine[registered].updatedAt).toBeGreaterThan(Date.now() - 600_000)
    expect(mine[fresh]).toMatchObject({ registered: false, me: null, keys: 0 })
    const text = await cli('sessions', '--database', sqlite)
    expect(text.stdout).toContain(registered)
    expect(text.stdout).toMatch(/SESSION\s+REGISTERED/)
  })

  it('describes one session, and fails with exit 1 for a session it does not hold', async () => {
    const d = await json('describe', registered, '--database', sqlite)
    expect(d.types.map((t) => [t.type, t.count])).toEqual([
      ['pre-key', 40],
      ['session', 1],
    ])
    const missing = await cli('describe', 'no-such-session', '--database', sqlite)
    expect(missing.code).toBe(1)
    expect(missing.stderr).toMatch(/ERR_SESSION_NOT_FOUND/)
  })

  it('stats counts the sessions and keys', async () => {
    const s = await json('stats', '--database', sqlite)
    expect(s.sessions).toBe(2)
    expect(s.registered).toBe(1)
    expect(s.keys).toBe(41)
    expect(s.tiers).toEqual({ redis: null, database: sqlite })
  })

  it('verify passes a sound store and names a record corrupted behind its back (exit 1)', async () => {
    const ok = await json('verify', '--database', sqlite)
    expect(ok.map((r) => r.corrupt.length)).toEqual([0, 0])
    expect(ok.find((r) => r.id === registered).records).toBe(42)
    const db = await SqlConnection.connect({ url: sqlite, migrate: false })
    await db.query("UPDATE wa_auth_keys SET value = x'7b6e6f7420'  WHERE session_id = ? AND type = 'pre-key' AND id = '7'", [registered])
    await db.close()
    const bad = await cli('verify', registered, '--database', sqlite, '--json')
    expect(bad.code).toBe(1)
    const [report] = JSON.parse(bad.stdout)
    expect(report.corrupt).toHaveLength(1)
    expect(report.corrupt[0]).toMatchObject({ type: 'pre-key', id: '7' })
    expect(report.corrupt[0].problem).toMatch(/not valid JSON/)
    // put it back for the other tests
    const store = await openAuthStore({ redis: null, database: sqlite })
    await store.setKeys(registered, { 'pre-key': { 7: preKeys['7'] } })
    await store.close()
  })

  describe.skipIf(!redis || !postgres)('copy to Redis + PostgreSQL', () => {
    const target = ['--redis', redis ?? '', '--database', postgres ?? '']
    let targetStore
    beforeAll(async () => {
      targetStore = await openAuthStore({ redis, database: postgres })
    })
    afterAll(async () => {
      for (const id of [registered, fresh]) await targetStore.purgeSession(id)
      await targetStore.close()
    })

    it('copies every session, verified, and a second run skips them (resumable)', async () => {
      const first = await json('copy', '--from-database', sqlite, '--session', registered, '--session', fresh, ...target)
      expect(first).toMatchObject({ written: 2, skipped: 0, records: 43 })
      const d = await targetStore.describeSession(registered)
      expect(d.types.find((t) => t.type === 'pre-key').count).toBe(40)
      const got = await targetStore.getKeys(registered, 'pre-key', ['7'])
      expect(Buffer.compare(got['7'].private, preKeys['7'].private)).toBe(0)
      const again = await json('copy', '--from-database', sqlite, '--session', registered, '--session', fresh, ...target)
      expect(again).toMatchObject({ written: 0, skipped: 2 })
    })

    it('lists the sessions of a Redis-only store from their meta hashes', async () => {
      const redisOnly = await openAuthStore({ redis, database: null })
      try {
        const listed = await redisOnly.listSessions()
        const mine = listed.filter((s) => s.id === registered || s.id === fresh)
        expect(mine.map((s) => [s.id, s.inRedis, s.inSql]).sort()).toEqual([
          [fresh, true, false],
          [registered, true, false],
        ].sort())
      } finally {
        await redisOnly.close()
      }
    })

    it('refuses to overwrite a session that differs unless --overwrite', async () => {
      await targetStore.setKeys(registered, { 'pre-key': { 99: preKeys['1'] } })
      const refused = await cli('copy', '--from-database', sqlite, '--session', registered, ...target)
      expect(refused.code).toBe(1)
      expect(refused.stderr).toMatch(/ERR_SESSION_EXISTS/)
      const forced = await json('copy', '--from-database', sqlite, '--session', registered, '--overwrite', ...target)
      expect(forced.written).toBe(1)
      expect(await targetStore.getKeys(registered, 'pre-key', ['99'])).toEqual({})
    })

    it('copySessions() takes what a write-behind store holds only in Redis yet', async () => {
      const behind = new BaileysAuthStore(new BaileysRedisAdapter(redis), new BaileysOrmAdapter(postgres), { durability: 'write-behind', flushIntervalMs: 600_000 })
      const target = await openAuthStore({ redis: null, database: `sqlite://${join(dir, 'behind.db')}` })
      const sid = uniqueId('cli-behind')
      try {
        await behind.saveCreds(sid, { creds: initAuthCreds(), keys: { 'sender-key': { 'g@g.us::1::0': { k: 1 } } } })
        const r = await copySessions(behind, target, { sessions: [sid] })
        expect(r.sessions[0].counts).toEqual({ 'sender-key': 1 })
        expect(await target.getKeys(sid, 'sender-key', ['g@g.us::1::0'])).toEqual({ 'g@g.us::1::0': { k: 1 } })
      } finally {
        await behind.purgeSession(sid)
        await behind.close()
        await target.close()
      }
    })

    it('copySessions() copies back the other way through the JavaScript API', async () => {
      const back = await openAuthStore({ redis: null, database: `sqlite://${join(dir, 'back.db')}` })
      try {
        const seen = []
        const r = await copySessions(targetStore, back, { sessions: [registered], onProgress: (done, total) => seen.push([done, total]) })
        expect(r.written).toBe(1)
        expect(seen).toEqual([[1, 1]])
        expect((await back.describeSession(registered)).types.find((t) => t.type === 'pre-key').count).toBe(40)
        await expect(copySessions(targetStore, back, { sessions: [uniqueId('nobody')] })).rejects.toMatchObject({ code: 'ERR_SESSION_NOT_FOUND' })
      } finally {
        await back.close()
      }
    })
  })

  it('imports a useMultiFileAuthState folder and exports it back file for file', async () => {
    const folder = join(dir, 'multi')
    const { state, saveCreds } = await useMultiFileAuthState(folder)
    await saveCreds()
    await state.keys.set({ 'pre-key': { 1: preKeys['1'], 2: preKeys['2'] }, 'sender-key': { '120363000000000001@g.us::5511999990001::0': Buffer.from('sk') } })
    const sid = uniqueId('cli-multifile')
    const imported = await json('import', 'multifile', folder, '--session', sid, '--verify', '--database', sqlite)
    expect(imported).toMatchObject({ sessionId: sid, written: true, counts: { 'pre-key': 2, 'sender-key': 1 }, verified: { mismatches: 0 } })
    const text = await cli('import', 'multifile', folder, '--session', sid, '--database', sqlite)
    expect(text.code).toBe(0)
    expect(text.stdout).toMatch(/already imported, unchanged/)
    const out = join(dir, 'multi-out')
    const exported = await json('export', 'multifile', out, '--session', sid, '--verify', '--database', sqlite)
    expect(exported.files).toBe(4)
    expect(readdirSync(out).sort()).toEqual(readdirSync(folder).sort())
    for (const f of readdirSync(folder)) expect(readFileSync(join(out, f), 'utf8')).toBe(readFileSync(join(folder, f), 'utf8'))
    expect((await json('delete', sid, '--database', sqlite)).deleted).toBe(sid)
  })

  it('prune --dry-run reports per session and deletes nothing; a real prune keeps what Baileys needs', async () => {
    const dry = await json('prune', '--dry-run', '--database', sqlite)
    expect(dry.dryRun).toBe(true)
    expect(dry.sessions.map((s) => s.sessionId).sort()).toEqual([fresh, registered].sort())
    // pre-keys and sessions with no lid-mapping are never pruned
    expect(dry.totals.records).toBe(0)
    const real = await json('prune', registered, '--database', sqlite)
    expect(real).toMatchObject({ dryRun: false, totals: { records: 0, skipped: 0 } })
    expect((await json('describe', registered, '--database', sqlite)).keys).toBe(41)
    expect((await cli('prune', '--rule', 'no-such-rule', '--database', sqlite)).code).toBe(2)
    expect((await cli('verify', uniqueId('nobody'), '--database', sqlite)).code).toBe(1)
    expect((await cli()).code).toBe(2)
    expect((await cli('import')).code).toBe(2)
  })

  it.skipIf(!existsSync('/usr/bin/script'))('draws a progress bar on a terminal and plain lines elsewhere', async () => {
    // script(1) gives the command a pseudo-terminal, as a user's shell would
    const env = { ...process.env, REDIS_URL: '', DATABASE_URL: '' }
    const { stdout } = await run('script', ['-qec', `${process.execPath} ${bin} verify --database ${sqlite}`, '/dev/null'], { env, cwd: dir, timeout: 60_000 })
    expect(stdout).toMatch(/verify \[[\u2588\u2591]+\] (\d+)\/\1 /)
    const piped = await cli('verify', '--database', sqlite)
    expect(piped.stderr).toMatch(/^verify: (\d+)\/\1$/m)
    expect(piped.stderr).not.toMatch(/\u2588/)
  })

  it.skipIf(!redis)('imports wa-auth-store 0.6 sessions from its Redis layout', async () => {
    // the seed's layout written raw: wa:auth:<sid>:creds (BufferJSON text) and a hash of type-id fields
    const Redis = (await import('ioredis')).default
    const raw = new Redis(redis)
    const sid = uniqueId('cli-seed')
    const prefix = `${uniqueId('seedapp')}:`
    try {
      const creds = initAuthCreds()
      await raw.set(`${prefix}wa:auth:${sid}:creds`, JSON.stringify(creds, BufferJSON.replacer))
      await raw.hset(`${prefix}wa:auth:${sid}:keys`, { 'pre-key-1': JSON.stringify(preKeys['1'], BufferJSON.replacer), 'session-5511999990001.0': JSON.stringify({ _sessions: {}, version: 'v1' }) })
      expect((await cli('import', 'wa-auth-store-0.6', '--session', sid, '--database', sqlite)).code).toBe(2)
      const r = await json('import', 'wa-auth-store-0.6', '--from-redis', redis, '--from-redis-prefix', prefix, '--session', sid, '--verify', '--database', sqlite)
      expect(r.sessions).toHaveLength(1)
      expect(r.sessions[0]).toMatchObject({ sessionId: sid, source: 'redis', written: true, counts: { 'pre-key': 1, session: 1 } })
      const d = await json('describe', sid, '--database', sqlite)
      expect(d.keys).toBe(2)
      expect((await json('delete', sid, '--database', sqlite)).deleted).toBe(sid)
    } finally {
      await raw.del(`${prefix}wa:auth:${sid}:creds`, `${prefix}wa:auth:${sid}:keys`)
      raw.disconnect()
    }
  })

  it('imports a useSqliteAuthState file', async () => {
    const { useSqliteAuthFile } = await import('./fixtures/import/sqlite-auth-state.mjs')
    const file = join(dir, 'baileys-sqlite.db')
    const auth = await useSqliteAuthFile(file)
    await auth.saveCreds()
    await auth.state.keys.set({ 'pre-key': { 1: preKeys['1'], 2: preKeys['2'] } })
    await auth.close()
    const sid = uniqueId('cli-bsqlite')
    const r = await json('import', 'baileys-sqlite', file, '--session', sid, '--database', sqlite)
    expect(r).toMatchObject({ sessionId: sid, written: true, counts: { 'pre-key': 2 } })
    expect((await json('delete', sid, '--database', sqlite)).deleted).toBe(sid)
  })

  it('reads an encrypted store with the key from the environment, and rekeys it', async () => {
    const file = `sqlite://${join(dir, 'sealed.db')}`
    const keyA = randomBytes(32).toString('base64')
    const keyB = randomBytes(32).toString('base64')
    const sid = uniqueId('cli-sealed')
    const store = await openAuthStore({ redis: null, database: file, encryption: { key: keyA } })
    await store.saveCreds(sid, { creds: initAuthCreds(), keys: { 'pre-key': { 1: preKeys['1'] } } })
    await store.close()
    // without the key nothing reads, and the error says why
    const locked = await cli('verify', sid, '--database', file, '--json')
    expect(locked.code).toBe(1)
    expect(JSON.parse(locked.stdout)[0].corrupt.map((c) => c.code)).toEqual(['ERR_DECRYPT', 'ERR_DECRYPT'])
    expect((await cliWith({ WA_AUTH_STORE_KEY: keyA }, 'verify', sid, '--database', file, '--json')).code).toBe(0)
    expect((await cliWith({ OTHER_KEY: keyA }, 'describe', sid, '--key-env', 'OTHER_KEY', '--database', file)).code).toBe(0)
    expect((await cliWith({}, 'describe', sid, '--key-env', 'UNSET_KEY_VARIABLE', '--database', file)).code).toBe(2)
    // rotate: B is the key, A a previous one; rekey; then B alone reads everything
    const rekeyed = await cliWith({ WA_AUTH_STORE_KEY: keyB, OLD_KEY: keyA }, 'rekey', '--previous-key-env', 'OLD_KEY', '--database', file, '--json')
    expect(rekeyed.code, rekeyed.stderr).toBe(0)
    expect(JSON.parse(rekeyed.stdout).records).toBe(2)
    expect((await cliWith({ WA_AUTH_STORE_KEY: keyB }, 'verify', sid, '--database', file)).code).toBe(0)
    expect((await cliWith({ WA_AUTH_STORE_KEY: keyA }, 'verify', sid, '--database', file)).code).toBe(1)
    expect((await cli('rekey', '--database', file)).code).toBe(2)
    // no key material in what the CLI printed
    expect(rekeyed.stdout + rekeyed.stderr).not.toContain(keyA)
    expect(rekeyed.stdout + rekeyed.stderr).not.toContain(keyB)
  })

  it('deletes a session', async () => {
    const r = await json('delete', fresh, '--database', sqlite)
    expect(r).toEqual({ deleted: fresh })
    const list = await json('sessions', '--database', sqlite)
    expect(list.map((s) => s.id)).not.toContain(fresh)
    expect((await cli('delete', fresh, '--database', sqlite)).code).toBe(1)
  })
})
