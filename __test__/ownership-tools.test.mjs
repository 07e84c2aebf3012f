// Ownership at the edges of the admin tools (issue 21), with real processes and real servers, the
// public API only: a purge while a holder is SIGSTOPped (past its lease or within it) keeps that
// holder fenced; a store or a CLI run without the encryption key cannot write plain values into
// a sealed session; an older sealed copy of a record put back in place (SQL row, Redis value)
// does not open; `wa-auth-store rekey` run beside a writing bot (also while it is paused past its
// lease) loses none of its acknowledged writes.
import { execFile } from 'node:child_process'
import { createRequire } from 'node:module'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import Redis from 'ioredis'
import pg from 'pg'
import { afterAll, describe, expect, it } from 'vitest'
import { initAuthCreds } from 'baileys/lib/Utils/auth-utils.js'
import { useMultiFileAuthState } from 'baileys/lib/Utils/use-multi-file-auth-state.js'
import { BaileysAuthStore, BaileysOrmAdapter, BaileysRedisAdapter } from '../index.js'
import { service, uniqueId } from './support/services.mjs'
import { endAll, storeProcess } from './support/store-rpc.mjs'

const require = createRequire(import.meta.url)
const { SqlConnection } = require('../binding.js')
const run = promisify(execFile)
const bin = fileURLToPath(new URL('../bin/wa-auth-store.js', import.meta.url))
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const dir = mkdtempSync(join(tmpdir(), 'wa-auth-ownership-tools-'))
let files = 0
const sqliteFile = () => join(dir, `auth-${files++}.db`)

const redisUrl = await service('redis')
const postgresUrl = await service('postgres')

// Each configuration names the tiers a bot writes to, and the stores a reader opens to look at
// every tier: Redis + SQL (what Redis serves) and SQL alone (what SQL holds).
const configs = [
  {
    name: 'Redis + PostgreSQL',
    skip: !redisUrl || !postgresUrl,
    tiers: () => ({ redis: redisUrl, database: postgresUrl }),
    // a shared database: a rekey of "all sessions" would touch other runs' sessions
    shared: true,
  },
  {
    name: 'embedded SQLite',
    skip: false,
    // one file per test, shared by every process of the test
    tiers: () => ({ redis: null, database: `sqlite://${sqliteFile()}` }),
    shared: false,
  },
]

/** A store on the tiers; `sqlOnly` leaves Redis out (reads what SQL holds). */
function openStore({ redis, database }, options = {}, { sqlOnly = false } = {}) {
  return new BaileysAuthStore(redis && !sqlOnly ? new BaileysRedisAdapter(redis) : null, new BaileysOrmAdapter(database), options)
}

/** One fresh reader per tier (no cache): [name, store]. */
function readers(tiers, options = {}) {
  const list = [[tiers.redis ? 'Redis + SQL' : 'SQL', openStore(tiers, { cache: false, ...options })]]
  if (tiers.redis) list.push(['SQL alone', openStore(tiers, { cache: false, ...options }, { sqlOnly: true })])
  return list
}

async function closeAll(list) {
  await Promise.all(list.map(([, s]) => s.close()))
}

/** Runs the CLI as a user runs it; resolves to { code, stdout, stderr } whatever the exit code. */
async function cli(env, ...args) {
  const full = { ...process.env, REDIS_URL: '', DATABASE_URL: '', WA_AUTH_STORE_KEY: '', ...env }
  try {
    const { stdout, stderr } = await run(process.execPath, [bin, ...args], { env: full, cwd: dir, timeout: 30_000 })
    return { code: 0, stdout, stderr }
  } catch (err) {
    if (typeof err.code !== 'number') throw err
    return { code: err.code, stdout: err.stdout, stderr: err.stderr }
  }
}
const target = ({ redis, database }) => ['--database', database, ...(redis ? ['--redis', redis] : ['--no-redis'])]

/** A key of the session in Redis (Storage layout; test ids hold none of the escaped characters). */
const redisKey = (sid, suffix) => `wa:{s:${sid}}:${suffix}`

/** Raw access to one record's row in wa_auth_keys, with a client of its own. */
function sqlRows(database) {
  if (database.startsWith('postgres')) {
    const client = new pg.Client({ connectionString: database })
    const ready = client.connect()
    return {
      async row(sid, type, id) {
        await ready
        const r = await client.query('SELECT value, version::text AS version FROM wa_auth_keys WHERE session_id = $1 AND type = $2 AND id = $3', [sid, type, id])
        return r.rows[0] ?? null
      },
      async setValue(sid, type, id, value) {
        await ready
        const r = await client.query('UPDATE wa_auth_keys SET value = $4 WHERE session_id = $1 AND type = $2 AND id = $3', [sid, type, id, value])
        return r.rowCount
      },
      close: () => client.end(),
    }
  }
  // SQLite: through the package's own binding (its own copy of SQLite: a second copy in this
  // process, such as the sqlite3 package's, would break the file's POSIX locks when either closes
  // the file), without migrations; its parameters are text, so bytes go in as a hex literal
  const conn = SqlConnection.connect({ url: database, migrate: false })
  return {
    async row(sid, type, id) {
      const [r] = await (await conn).query('SELECT value, CAST(version AS TEXT) AS version FROM wa_auth_keys WHERE session_id = ? AND type = ? AND id = ?', [sid, type, id])
      return r ? { value: r.value == null ? null : Buffer.from(r.value), version: String(r.version) } : null
    },
    async setValue(sid, type, id, value) {
      const c = await conn
      await c.query(`UPDATE wa_auth_keys SET value = x'${value.toString('hex')}' WHERE session_id = ? AND type = ? AND id = ?`, [sid, type, id])
      const [{ n }] = await c.query(`SELECT COUNT(*) AS n FROM wa_auth_keys WHERE session_id = ? AND type = ? AND id = ? AND value = x'${value.toString('hex')}'`, [sid, type, id])
      return n
    },
    close: async () => (await conn).close(),
  }
}

/**
 * Resolves once the holder of `sid` renewed its lease (its expiry moved): a holder SIGSTOPped
 * right after that is not frozen inside a renewal's transaction, which would hold the session's
 * rows (the SQLite file's write lock) until it resumes (README, Session leases).
 */
async function renewed(tiers, sid) {
  const watcher = openStore(tiers)
  try {
    const first = (await watcher.leaseInfo(sid))?.expiresAt
    for (let i = 0; i < 400 && (await watcher.leaseInfo(sid))?.expiresAt === first; i++) await sleep(5)
  } finally {
    await watcher.close()
  }
}

const SEALED = 0x03
const pk = (n) => ({ private: Buffer.alloc(32, n), public: Buffer.alloc(32, n + 1) })

for (const cfg of configs) {
  describe.skipIf(cfg.skip)(`ownership and the tools: ${cfg.name}`, () => {
    // every session a test made, with the tiers it lives in: purged at the end
    const made = []
    const sid = (name, tiers) => {
      const id = uniqueId(`own-tools-${name}`)
      made.push({ id, tiers })
      return id
    }
    afterAll(async () => {
      endAll()
      for (const { id, tiers } of made) {
        const cleaner = openStore(tiers, { lease: false })
        try {
          await cleaner.purgeSession(id)
        } finally {
          await cleaner.close()
        }
      }
    })

    // paused past its lease (it lapsed before the purge), and paused within it (the purge removed
    // a live lease): either way the holder resumes fenced
    for (const pause of [
      { name: 'past its lease', ms: 1300 },
      { name: 'within its lease', ms: 300 },
    ]) {
      it(`a purge keeps a holder paused ${pause.name} fenced: its writes are refused, onLeaseLost fires, nothing of it is visible`, async () => {
        const tiers = cfg.tiers()
        const S = sid('purge', tiers)
        const holder = storeProcess(tiers)
        const { epoch } = await holder.call('auth', S, { ttlMs: 1000, holderId: 'paused-holder' })
        expect(epoch).toBeGreaterThan(0)
        await holder.call('keys.set', S, { session: { r: { v: 'h1' } } })
        // the acknowledged write is there before the purge (a control for the reads below)
        let rs = readers(tiers)
        for (const [tier, store] of rs) expect(await store.getKeys(S, 'session', ['r']), tier).toEqual({ r: { v: 'h1' } })
        await closeAll(rs)

        // stopped just after a renewal: frozen inside one, it would hold the session's rows (the
        // SQLite file's write lock) and the purge would wait for it (README, Session leases)
        await renewed(tiers, S)
        holder.stop()
        try {
          await sleep(pause.ms) // the holder's lease is 1 s
          const admin = openStore(tiers, { lease: false })
          await admin.purgeSession(S)
          await admin.close()
        } finally {
          holder.cont()
        }
        const rewrite = await holder.settle('keys.set', S, { session: { r: { v: 'h2' } } })
        const fresh = await holder.settle('keys.set', S, { session: { n: { v: 'new' } } })
        expect(rewrite, 'the paused holder rewrote r after the purge').toEqual({ ok: false, code: 'ERR_SESSION_LOCKED' })
        expect(fresh, 'the paused holder wrote a new record after the purge').toEqual({ ok: false, code: 'ERR_SESSION_LOCKED' })
        for (let i = 0; i < 100 && holder.lost(S).length === 0; i++) await sleep(50)
        expect(holder.lost(S).length, `onLeaseLost was not called; events ${JSON.stringify(holder.events)}`).toBeGreaterThan(0)
        expect(holder.lost(S)[0].code).toBe('ERR_SESSION_LOCKED')

        rs = readers(tiers)
        for (const [tier, store] of rs) {
          expect(await store.getKeys(S, 'session', ['r', 'n']), tier).toEqual({})
          expect(await store.getCreds(S), tier).toBeNull()
          expect(await store.listTypes(S), tier).toEqual([])
        }
        await closeAll(rs)
        await holder.end()
      })
    }

    /** A sealed session written by a keyed store: creds, two pre-keys and a session record. */
    async function sealedSession(tiers, key, S) {
      const enc = openStore(tiers, { encryption: { key } })
      const creds = initAuthCreds()
      await enc.saveCreds(S, { creds, keys: { 'pre-key': { 1: pk(1), 2: pk(2) }, session: { '5511999990001.0': { v: 'open' } } } })
      await enc.close()
      return snapshot(tiers, key, S)
    }
    /** What fresh keyed readers return of the session, per tier (they must agree). */
    async function snapshot(tiers, key, S) {
      const rs = readers(tiers, { encryption: { key } })
      const seen = []
      for (const [tier, store] of rs) {
        seen.push({
          tier,
          creds: await store.getCreds(S),
          preKeys: await store.getKeys(S, 'pre-key', ['1', '2', '3']),
          sessions: await store.getKeys(S, 'session', ['5511999990001.0']),
        })
      }
      await closeAll(rs)
      for (const s of seen.slice(1)) expect({ ...s, tier: null }, `${s.tier} differs from ${seen[0].tier}`).toEqual({ ...seen[0], tier: null })
      return { ...seen[0], tier: undefined }
    }

    it('a store without the key cannot write values into a sealed session (ERR_CONFIG); it may still delete and clear', async () => {
      const tiers = cfg.tiers()
      const key = randomBytes(32).toString('base64')
      const S = sid('keyless', tiers)
      const before = await sealedSession(tiers, key, S)
      expect(before.creds).not.toBeNull()
      expect(Object.keys(before.preKeys)).toEqual(['1', '2'])

      const keyless = openStore(tiers)
      const refusals = {
        'setKeys a new record': await keyless.setKeys(S, { 'pre-key': { 3: pk(3) } }).then(() => 'written', (e) => e.code),
        'setKeys over a sealed record': await keyless.setKeys(S, { 'pre-key': { 1: pk(9) } }).then(() => 'written', (e) => e.code),
        'saveCreds with creds': await keyless.saveCreds(S, { creds: initAuthCreds() }).then(() => 'written', (e) => e.code),
        'saveCreds with keys': await keyless.saveCreds(S, { keys: { session: { '5511999990001.0': { v: 'plain' } } } }).then(() => 'written', (e) => e.code),
        'a delete and a value in one write': await keyless.setKeys(S, { 'pre-key': { 2: null, 4: pk(4) } }).then(() => 'written', (e) => e.code),
      }
      expect(refusals).toEqual({
        'setKeys a new record': 'ERR_CONFIG',
        'setKeys over a sealed record': 'ERR_CONFIG',
        'saveCreds with creds': 'ERR_CONFIG',
        'saveCreds with keys': 'ERR_CONFIG',
        'a delete and a value in one write': 'ERR_CONFIG',
      })
      await keyless.close()
      // nothing of it landed, in any tier: the keyed store reads the session as it was
      expect(await snapshot(tiers, key, S)).toEqual(before)
      const raw = sqlRows(tiers.database)
      try {
        for (const id of ['1', '2']) expect((await raw.row(S, 'pre-key', id)).value[0], `pre-key ${id} in SQL`).toBe(SEALED)
        expect(await raw.row(S, 'pre-key', '3')).toBeNull()
        expect(await raw.row(S, 'pre-key', '4')).toBeNull()
      } finally {
        await raw.close()
      }

      // deletes and clears are allowed (README, Encryption at rest: "it may still clear or delete it")
      const deleter = openStore(tiers)
      await deleter.deleteKeys(S, ['pre-key-2'])
      await deleter.setKeys(S, { 'pre-key': { 1: null } })
      await deleter.close()
      const afterDeletes = await snapshot(tiers, key, S)
      expect(afterDeletes.preKeys).toEqual({})
      expect(afterDeletes.sessions).toEqual(before.sessions)
      expect(afterDeletes.creds).toEqual(before.creds)
      const clearer = openStore(tiers)
      await clearer.clearSession(S)
      await clearer.close()
      const afterClear = await snapshot(tiers, key, S)
      expect(afterClear).toMatchObject({ preKeys: {}, sessions: {} })
      expect(afterClear.creds).toEqual(before.creds)
      const logout = openStore(tiers)
      await logout.deleteCreds(S)
      await logout.close()
      expect((await snapshot(tiers, key, S)).creds).toBeNull()
    })

    it('the CLI without --key-env cannot import plain values into a sealed session: it exits non-zero naming ERR_CONFIG and the session reads intact', async () => {
      const tiers = cfg.tiers()
      const key = randomBytes(32).toString('base64')
      const S = sid('cli-keyless', tiers)
      const before = await sealedSession(tiers, key, S)
      // a folder as Baileys' useMultiFileAuthState writes it, with other values
      const folder = mkdtempSync(join(dir, 'multi-'))
      const multi = await useMultiFileAuthState(folder)
      await multi.saveCreds()
      await multi.state.keys.set({ 'pre-key': { 1: pk(21), 5: pk(25) }, session: { '5511999990001.0': { v: 'from the folder' } } })

      const r = await cli({}, 'import', 'multifile', folder, '--session', S, '--overwrite', ...target(tiers))
      expect(r.code, `the keyless import exited ${r.code}: ${r.stdout}${r.stderr}`).not.toBe(0)
      expect(r.stderr).toMatch(/ERR_CONFIG/)
      // the keyed store reads the session intact, in every tier: not emptied, nothing plain beside it
      expect(await snapshot(tiers, key, S), 'the sealed session after the refused keyless import').toEqual(before)
      const raw = sqlRows(tiers.database)
      try {
        expect((await raw.row(S, 'pre-key', '1')).value[0]).toBe(SEALED)
        expect(await raw.row(S, 'pre-key', '5')).toBeNull()
      } finally {
        await raw.close()
      }
      rmSync(folder, { recursive: true, force: true })
    })

    it('refuses an older sealed copy of a record put back in place with the newer version (ERR_DECRYPT), in SQL and in Redis', async () => {
      const tiers = cfg.tiers()
      const key = randomBytes(32).toString('base64')
      const S = sid('replay', tiers)
      const writer = openStore(tiers, { encryption: { key } })
      await writer.setKeys(S, { 'pre-key': { 1: pk(1), 9: pk(9) } })
      const raw = sqlRows(tiers.database)
      const redis = tiers.redis ? new Redis(tiers.redis) : null
      try {
        const v1 = await raw.row(S, 'pre-key', '1')
        const v1Redis = redis ? await redis.hgetBuffer(redisKey(S, 'k:pre-key'), '1') : null
        await writer.setKeys(S, { 'pre-key': { 1: pk(2) } })
        await writer.close()
        const v2 = await raw.row(S, 'pre-key', '1')
        expect(v1.value[0]).toBe(SEALED)
        expect(BigInt(v2.version)).toBeGreaterThan(BigInt(v1.version))
        // a control: fresh readers read v2 before the replay
        let rs = readers(tiers, { encryption: { key } })
        for (const [tier, store] of rs) expect(Buffer.from((await store.getKeys(S, 'pre-key', ['1']))['1'].private), tier).toEqual(pk(2).private)
        await closeAll(rs)

        // v1's sealed bytes back in the row, keeping v2's version
        expect(await raw.setValue(S, 'pre-key', '1', v1.value)).toBe(1)
        expect(await raw.row(S, 'pre-key', '1')).toEqual({ value: v1.value, version: v2.version })
        if (redis) {
          // the Redis record: an 8-byte version and a flag byte, then the value; keep v2's head
          const v2Redis = await redis.hgetBuffer(redisKey(S, 'k:pre-key'), '1')
          expect(v2Redis.readBigUInt64BE(0)).toBe(BigInt(v2.version))
          await redis.hset(redisKey(S, 'k:pre-key'), '1', Buffer.concat([v2Redis.subarray(0, 9), v1Redis.subarray(9)]))
        }
        rs = readers(tiers, { encryption: { key } })
        for (const [tier, store] of rs) {
          const got = await store.getKeys(S, 'pre-key', ['1']).then(
            (v) => ({ returned: v['1'] ? (Buffer.from(v['1'].private).equals(pk(1).private) ? 'v1' : 'other') : 'absent' }),
            (e) => ({ code: e.code }),
          )
          expect(got, `${tier} read the replayed record`).toEqual({ code: 'ERR_DECRYPT' })
          // the record beside it still opens
          expect(Buffer.from((await store.getKeys(S, 'pre-key', ['9']))['9'].private), tier).toEqual(pk(9).private)
        }
        await closeAll(rs)
      } finally {
        await raw.close()
        redis?.disconnect()
      }
    })

    it('`wa-auth-store rekey` run beside a writing bot, also while the bot is paused past its lease, loses none of its acknowledged writes, in any tier', async () => {
      const tiers = cfg.tiers()
      const [oldKey, newKey] = [randomBytes(32).toString('base64'), randomBytes(32).toString('base64')]
      const S = sid('rekey', tiers)
      // records sealed under the old key, then a bot rotated to the new one (the old one previous)
      const before = openStore(tiers, { encryption: { key: oldKey } })
      await before.setKeys(S, { session: Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`old${i}`, { old: i }])) })
      await before.close()
      const encryption = { key: newKey, previousKeys: [oldKey] }
      const bot = storeProcess({ ...tiers, store: { encryption } })
      await bot.call('auth', S, { ttlMs: 1000, holderId: 'writing-bot' })

      // each write creates r<n> and updates r<n-5>, as a bot creates records and rewrites its
      // ratchets: what the last acknowledged write of each record left is what must be read
      const LAG = 5
      const acked = new Map()
      const refused = []
      let n = 0
      let writing = null
      const startWriting = () => {
        const w = { on: true }
        w.done = (async () => {
          while (w.on) {
            const data = { [`r${n}`]: { n, gen: 1 } }
            if (n >= LAG) data[`r${n - LAG}`] = { n: n - LAG, gen: 2 }
            n++
            const r = await bot.settle('keys.set', S, { session: data })
            if (r.ok) for (const [id, v] of Object.entries(data)) acked.set(id, v)
            else refused.push({ data, code: r.code })
            await sleep(2)
          }
        })()
        writing = w
      }
      const stopWriting = async () => {
        writing.on = false
        await writing.done
      }
      const runs = []
      const rekey = async (phase, all) => {
        const ackedBefore = acked.size
        const r = await cli({ NEW_KEY: newKey, OLD_KEY: oldKey }, 'rekey', ...(all ? [] : ['--session', S]), '--key-env', 'NEW_KEY', '--previous-key-env', 'OLD_KEY', ...target(tiers), '--json')
        runs.push({ phase, all, code: r.code, out: r.code === 0 ? JSON.parse(r.stdout).records : r.stderr.trim().split('\n').pop(), ackedMeanwhile: acked.size - ackedBefore })
      }
      // on a database of its own, some runs rekey all sessions (a shared one holds other runs')
      const all = !cfg.shared
      try {
        // while the bot holds the session and writes
        startWriting()
        await rekey('bot writing', false)
        await rekey('bot writing', all)
        // while the bot is paused (a GC pause, SIGSTOP) past its lease, between two writes and
        // just after a renewal (see renewed())
        await stopWriting()
        await renewed(tiers, S)
        bot.stop()
        try {
          await sleep(1300)
          await rekey('bot paused past its lease', false)
        } finally {
          bot.cont()
        }
        // the bot writes on
        startWriting()
        await rekey('bot resumed', all)
      } finally {
        await stopWriting()
      }
      const trace = `rekey runs ${JSON.stringify(runs)}; ${acked.size} records acknowledged, ${refused.length} writes refused (${[...new Set(refused.map((r) => r.code))]})`
      // each run rekeyed the session or was refused because the bot held it
      for (const r of runs) expect(r.code === 0 || /ERR_SESSION_LOCKED/.test(r.out), `rekey ${JSON.stringify(r)}`).toBe(true)
      // the bot wrote while the first runs went on (else they prove nothing)
      for (const r of runs.filter((x) => x.phase === 'bot writing')) expect(r.ackedMeanwhile, `no acknowledged write beside a rekey run; ${trace}`).toBeGreaterThan(0)
      // a refused write is refused as the lease's: the bot lost the session to the rekey
      expect(refused.filter((r) => r.code !== 'ERR_SESSION_LOCKED'), trace).toEqual([])

      const ids = [...Array(n).keys()].map((i) => `r${i}`)
      const olds = Array.from({ length: 20 }, (_, i) => `old${i}`)
      const rs = readers(tiers, { encryption })
      for (const [tier, store] of rs) {
        const got = await store.getKeys(S, 'session', [...ids, ...olds])
        const wrong = [...acked].filter(([id, v]) => JSON.stringify(got[id]) !== JSON.stringify(v)).map(([id, v]) => `${id}: acknowledged ${JSON.stringify(v)}, read ${JSON.stringify(got[id] ?? null)}`)
        expect(wrong, `${tier}: acknowledged writes lost (${wrong.length} of ${acked.size}); ${trace}`).toEqual([])
        // nothing a refused write carried is visible
        const visible = refused.flatMap((r) => Object.entries(r.data)).filter(([id, v]) => JSON.stringify(got[id]) === JSON.stringify(v)).map(([id]) => id)
        expect(visible, `${tier}: refused writes visible; ${trace}`).toEqual([])
        expect(olds.filter((id) => got[id]?.old === undefined), `${tier}: records from before the bot`).toEqual([])
      }
      await closeAll(rs)
      await bot.end()
    })
  })
}

afterAll(() => rmSync(dir, { recursive: true, force: true }))
