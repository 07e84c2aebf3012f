// Encryption at rest (issue 10): what Redis and SQL hold of a session is read raw, with plain
// clients, and searched for the private keys of its creds and pre-keys; wrong, missing, rotated
// and dropped keys; legacy plain values; a sealed value moved to another record.
import { randomBytes } from 'node:crypto'
import { mkdtempSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { inspect } from 'node:util'
import Redis from 'ioredis'
import mysql from 'mysql2/promise'
import pg from 'pg'
import { afterAll, describe, expect, it } from 'vitest'
import { initAuthCreds } from 'baileys/lib/Utils/auth-utils.js'
import { getNextPreKeys } from 'baileys/lib/Utils/signal.js'
import { BaileysAuthStore, BaileysOrmAdapter, BaileysRedisAdapter, openAuthStore, rekeySessions, useBaileysAuthState } from '../index.js'
import { openParty, introduce, send } from '../demo/signal-party.mjs'
import { service, uniqueId } from './support/services.mjs'

const require = createRequire(import.meta.url)
const { SqlConnection } = require('../binding.js')

const K1 = randomBytes(32)
const K2 = randomBytes(32)
const SEALED = 0x03

/** Raw access to what a SQL database holds of a session, by a client of its own. */
function sqlReader(url) {
  if (url.startsWith('postgres')) {
    const client = new pg.Client({ connectionString: url })
    const ready = client.connect()
    return {
      async rows(sid) {
        await ready
        const s = await client.query('SELECT creds FROM wa_auth_sessions WHERE session_id = $1', [sid])
        const k = await client.query('SELECT type, id, value FROM wa_auth_keys WHERE session_id = $1', [sid])
        return { creds: s.rows[0]?.creds ?? null, keys: k.rows }
      },
      async setValue(sid, type, id, value) {
        await ready
        await client.query('UPDATE wa_auth_keys SET value = $4 WHERE session_id = $1 AND type = $2 AND id = $3', [sid, type, id, value])
      },
      close: () => client.end(),
    }
  }
  if (url.startsWith('mysql')) {
    const conn = mysql.createConnection(url)
    return {
      async rows(sid) {
        const c = await conn
        const [s] = await c.query('SELECT creds FROM wa_auth_sessions WHERE session_id = ?', [sid])
        const [k] = await c.query('SELECT CAST(type AS CHAR) AS type, CAST(id AS CHAR) AS id, value FROM wa_auth_keys WHERE session_id = ?', [sid])
        return { creds: s[0]?.creds ?? null, keys: k }
      },
      async setValue(sid, type, id, value) {
        await (await conn).query('UPDATE wa_auth_keys SET value = ? WHERE session_id = ? AND type = ? AND id = ?', [value, sid, type, id])
      },
      close: async () => (await conn).end(),
    }
  }
  // SQLite: through the package's own binding, without migrations
  const conn = SqlConnection.connect({ url, migrate: false })
  const bytes = (v) => (v == null ? null : Buffer.from(v))
  return {
    async rows(sid) {
      const c = await conn
      const s = await c.query('SELECT creds FROM wa_auth_sessions WHERE session_id = ?', [sid])
      const k = await c.query('SELECT type, id, value FROM wa_auth_keys WHERE session_id = ?', [sid])
      return { creds: bytes(s[0]?.creds), keys: k.map((r) => ({ ...r, value: bytes(r.value) })) }
    },
    async copyValue(sid, type, from, to) {
      await (await conn).query('UPDATE wa_auth_keys SET value = (SELECT value FROM wa_auth_keys WHERE session_id = ? AND type = ? AND id = ?) WHERE session_id = ? AND type = ? AND id = ?', [sid, type, from, sid, type, to])
    },
    close: async () => (await conn).close(),
  }
}

/** Copies one record's stored value over another's row (a client with byte parameters does it by hand). */
async function copySqlValue(reader, sid, type, from, to) {
  if (reader.copyValue) return reader.copyValue(sid, type, from, to)
  const { keys } = await reader.rows(sid)
  const value = keys.find((k) => k.type === type && k.id === from).value
  return reader.setValue(sid, type, to, value)
}

/** Every byte Redis holds under the session's keys: strings, hash fields and values, set members. */
async function redisBytes(redis, sid) {
  const out = []
  const keys = []
  let cursor = '0'
  do {
    const [next, found] = await redis.scanBuffer(cursor, 'MATCH', `wa:{s:${sid}}:*`, 'COUNT', 1000)
    cursor = String(next)
    keys.push(...found)
  } while (cursor !== '0')
  for (const key of keys) {
    const type = await redis.type(key)
    if (type === 'string') out.push(await redis.getBuffer(key))
    else if (type === 'hash') for (const [f, v] of Object.entries(await redis.hgetallBuffer(key))) out.push(Buffer.from(f), v)
    else if (type === 'set') out.push(...(await redis.smembersBuffer(key)))
  }
  return { keys, values: out }
}

/** Raw, base64, base64url and hex forms of each secret. */
function forms(secrets) {
  return secrets.flatMap((s) => [s, Buffer.from(s.toString('base64')), Buffer.from(s.toString('base64url')), Buffer.from(s.toString('hex'))])
}

/** The secrets of `creds` and `preKeys` found in `blobs` (as their index in `secrets`). */
function leaks(blobs, secrets) {
  const found = new Set()
  secrets.forEach((s, i) => {
    for (const form of forms([s])) if (blobs.some((b) => b && b.indexOf(form) !== -1)) found.add(i)
  })
  return [...found]
}

function secretsOf(creds, preKeys) {
  return [
    creds.noiseKey.private,
    creds.pairingEphemeralKeyPair.private,
    creds.signedIdentityKey.private,
    creds.signedPreKey.keyPair.private,
    Buffer.from(creds.advSecretKey, 'base64'),
    ...Object.values(preKeys).map((p) => p.private),
  ].map((b) => Buffer.from(b))
}

const redisUrl = await service('redis')
const postgresUrl = await service('postgres')
const mysqlUrl = await service('mysql')
const sqliteUrl = () => `sqlite://${join(mkdtempSync(join(tmpdir(), 'wa-auth-enc-')), 'auth.db')}`

const configs = [
  { name: 'embedded SQLite', redis: null, database: sqliteUrl() },
  { name: 'Redis + PostgreSQL', redis: redisUrl, database: postgresUrl, skip: !redisUrl || !postgresUrl },
  { name: 'Redis + MariaDB', redis: redisUrl, database: mysqlUrl, skip: !redisUrl || !mysqlUrl },
]

for (const cfg of configs) {
  describe.skipIf(cfg.skip)(`encryption at rest: ${cfg.name}`, () => {
    const stores = []
    const sessions = new Set()
    let redis = null
    let sql = null
    const raw = () => {
      redis ??= cfg.redis ? new Redis(cfg.redis) : null
      sql ??= sqlReader(cfg.database)
      return { redis, sql }
    }
    afterAll(async () => {
      const cleaner = await open({ encryption: null, lease: false })
      for (const sid of sessions) await cleaner.purgeSession(sid)
      await Promise.all(stores.map((s) => s.close()))
      await sql?.close()
      redis?.disconnect()
    })
    const open = async (options = {}) => {
      const s = cfg.redis
        ? new BaileysAuthStore(new BaileysRedisAdapter(cfg.redis), new BaileysOrmAdapter(cfg.database), options)
        : await openAuthStore({ redis: null, database: cfg.database, ...options })
      stores.push(s)
      return s
    }
    const sid = (name) => {
      const id = uniqueId(`enc-${name}`)
      sessions.add(id)
      return id
    }
    /** Everything the tiers hold of a session, as bytes. */
    const stored = async (id) => {
      const { redis, sql } = raw()
      const rows = await sql.rows(id)
      const r = redis ? await redisBytes(redis, id) : { keys: [], values: [] }
      return { rows, blobs: [rows.creds, ...rows.keys.map((k) => k.value), ...r.values], redisKeys: r.keys }
    }
    /** A session with Baileys' own creds and 40 pre-keys, written through useBaileysAuthState. */
    const pairing = async (store, id) => {
      const auth = await useBaileysAuthState(store, id)
      const { update, preKeys } = await getNextPreKeys({ creds: auth.state.creds, keys: auth.state.keys }, 40)
      Object.assign(auth.state.creds, update)
      await auth.saveCreds()
      await auth.close()
      return { creds: auth.state.creds, preKeys }
    }

    it('keeps every private key of the creds and the pre-keys out of Redis and SQL (raw, base64, hex)', async () => {
      const id = sid('grep')
      const store = await open({ encryption: { key: K1 } })
      const { creds, preKeys } = await pairing(store, id)
      const secrets = secretsOf(creds, preKeys)
      expect(secrets).toHaveLength(45)
      const { rows, blobs, redisKeys } = await stored(id)
      expect(rows.keys.filter((k) => k.type === 'pre-key')).toHaveLength(40)
      if (cfg.redis) expect(redisKeys.length).toBeGreaterThan(2)
      expect(leaks(blobs, secrets)).toEqual([])
      // every value is sealed, under K1's key id
      const values = [rows.creds, ...rows.keys.map((k) => k.value)]
      for (const v of values) expect(v[0]).toBe(SEALED)
      expect(new Set(values.map((v) => v.subarray(2, 6).toString('hex'))).size).toBe(1)
      // the store reads it back
      const again = await open({ encryption: { key: K1 } })
      expect((await again.getCreds(id)).creds.noiseKey.private.equals(creds.noiseKey.private)).toBe(true)
      const got = await again.getKeys(id, 'pre-key', Object.keys(preKeys))
      expect(Object.keys(got)).toHaveLength(40)
      expect(Buffer.from(got[Object.keys(preKeys)[0]].private).equals(Buffer.from(Object.values(preKeys)[0].private))).toBe(true)

      // the search itself finds them when values are not encrypted (a control for the grep)
      const plainId = sid('grep-plain')
      const plain = await pairing(await open(), plainId)
      const plainSecrets = secretsOf(plain.creds, plain.preKeys)
      expect(leaks((await stored(plainId)).blobs, plainSecrets).length).toBe(plainSecrets.length)
    })

    it('runs a real Baileys Signal exchange on encrypted stores, also after they reopen', async () => {
      const [ida, idb] = [sid('alice'), sid('bob')]
      const [jidA, jidB] = ['5511000000101@s.whatsapp.net', '5511000000102@s.whatsapp.net']
      const sa = await open({ encryption: { key: K1 } })
      const sb = await open({ encryption: { key: K1 } })
      let a = await openParty(sa, ida, jidA)
      let b = await openParty(sb, idb, jidB)
      await a.saveCreds()
      expect(await introduce(a, b, 20)).toBe(20)
      expect(await send(a, b, 'hello')).toEqual({ type: 'pkmsg', text: 'hello' })
      for (let i = 0; i < 5; i++) {
        expect((await send(b, a, `reply ${i}`)).text).toBe(`reply ${i}`)
        expect((await send(a, b, `more ${i}`)).text).toBe(`more ${i}`)
      }
      await Promise.all([a.saveCreds(), b.saveCreds()])
      await Promise.all([a.close(), b.close()])
      const { rows } = await stored(idb)
      expect(rows.keys.some((k) => k.type === 'session')).toBe(true)
      for (const k of rows.keys) if (k.value) expect(k.value[0]).toBe(SEALED)
      // new stores (empty caches) read the sealed state and go on
      a = await openParty(await open({ encryption: { key: K1 } }), ida, jidA)
      b = await openParty(await open({ encryption: { key: K1 } }), idb, jidB)
      expect((await send(a, b, 'after reopen')).text).toBe('after reopen')
      expect((await send(b, a, 'and back')).text).toBe('and back')
      await Promise.all([a.close(), b.close()])
    })

    it('rejects with ERR_DECRYPT under a wrong key or no key, for creds, one key and a batch', async () => {
      const id = sid('wrong')
      const store = await open({ encryption: { key: K1 } })
      await store.saveCreds(id, { creds: initAuthCreds(), keys: { 'pre-key': { 1: { private: randomBytes(32), public: randomBytes(32) } } } })
      for (const options of [{ encryption: { key: K2 } }, {}]) {
        const other = await open({ ...options, lease: false })
        const err = await other.getCreds(id).catch((e) => e)
        expect(err.code).toBe('ERR_DECRYPT')
        expect(err.message).not.toContain(K1.toString('hex'))
        expect(err.message).not.toContain(K1.toString('base64'))
        await expect(other.getKeys(id, 'pre-key', ['1'])).rejects.toMatchObject({ code: 'ERR_DECRYPT' })
        // a batch with one record that does not open rejects (never "missing")
        await expect(other.getKeys(id, 'pre-key', ['0', '1', '2'])).rejects.toMatchObject({ code: 'ERR_DECRYPT' })
      }
      // the right key still reads it
      expect(Object.keys(await (await open({ encryption: { key: K1.toString('base64') } })).getKeys(id, 'pre-key', ['1']))).toEqual(['1'])
    })

    it('rotates: previousKeys open old values, new writes and rekeySessions seal under the new key, then the old key can go', async () => {
      const id = sid('rotate')
      const v1 = await open({ encryption: { key: K1 } })
      const { creds, preKeys } = await pairing(v1, id)
      const ids = Object.keys(preKeys)
      const before = await stored(id)
      const keyIdOf = (v) => v.subarray(2, 6).toString('hex')
      const k1Id = keyIdOf(before.rows.creds)

      const v2 = await open({ encryption: { key: K2, previousKeys: [K1] } })
      expect(Object.keys(await v2.getKeys(id, 'pre-key', ids))).toHaveLength(40)
      await v2.setKeys(id, { 'pre-key': { [ids[0]]: preKeys[ids[0]] } })
      const mid = await stored(id)
      const k2Id = keyIdOf(mid.rows.keys.find((k) => k.id === ids[0]).value)
      expect(k2Id).not.toBe(k1Id)
      expect(keyIdOf(mid.rows.keys.find((k) => k.id === ids[1]).value)).toBe(k1Id)

      const progress = []
      const r = await rekeySessions(v2, { sessions: [id], onProgress: (done, total, s) => progress.push([done, total, s]) })
      expect(r.sessions).toEqual([{ sessionId: id, creds: true, counts: { 'pre-key': 40 }, records: 41 }])
      expect(r.records).toBe(41)
      expect(progress).toEqual([[1, 1, id]])
      const after = await stored(id)
      for (const v of [after.rows.creds, ...after.rows.keys.map((k) => k.value)]) expect(keyIdOf(v)).toBe(k2Id)
      expect(leaks(after.blobs, secretsOf(creds, preKeys))).toEqual([])

      // previousKeys dropped: everything still reads; the old key alone no longer does
      const v3 = await open({ encryption: { key: K2 } })
      expect((await v3.getCreds(id)).creds.noiseKey.private.equals(creds.noiseKey.private)).toBe(true)
      expect(Object.keys(await v3.getKeys(id, 'pre-key', ids))).toHaveLength(40)
      await expect((await open({ encryption: { key: K1 }, lease: false })).getCreds(id)).rejects.toMatchObject({ code: 'ERR_DECRYPT' })
    })

    it('rekeys in the call order of the session: a write called before it is never rolled back, one called after lands last', async () => {
      const id = sid('rekey-order')
      const store = await open({ encryption: { key: K2, previousKeys: [K1] } })
      const pk = (n) => ({ private: Buffer.alloc(32, n), public: Buffer.alloc(32, n + 1) })
      await (await open({ encryption: { key: K1 } })).setKeys(id, { 'pre-key': { 1: pk(1), 2: pk(2) } })
      for (let round = 0; round < 5; round++) {
        const before = store.setKeys(id, { 'pre-key': { 1: pk(10 + round) } })
        const rekey = store.rekeySession(id)
        const after = store.setKeys(id, { 'pre-key': { 2: pk(20 + round) } })
        await Promise.all([before, rekey, after])
        const got = await (await open({ encryption: { key: K2 }, cache: false, lease: false })).getKeys(id, 'pre-key', ['1', '2'])
        expect(Buffer.from(got['1'].private)).toEqual(pk(10 + round).private)
        expect(Buffer.from(got['2'].private)).toEqual(pk(20 + round).private)
      }
    })

    it('reads values written before encryption was on, seals them when rewritten or rekeyed', async () => {
      const id = sid('legacy')
      const { creds, preKeys } = await pairing(await open(), id)
      const ids = Object.keys(preKeys)
      const before = await stored(id)
      for (const v of [before.rows.creds, ...before.rows.keys.map((k) => k.value)]) expect(v[0]).not.toBe(SEALED)

      const enc = await open({ encryption: { key: K1 } })
      expect((await enc.getCreds(id)).creds.signedIdentityKey.private.equals(creds.signedIdentityKey.private)).toBe(true)
      expect(Object.keys(await enc.getKeys(id, 'pre-key', ids))).toHaveLength(40)
      await enc.setKeys(id, { 'pre-key': { [ids[0]]: preKeys[ids[0]] } })
      const mid = await stored(id)
      expect(mid.rows.keys.find((k) => k.id === ids[0]).value[0]).toBe(SEALED)
      expect(mid.rows.keys.find((k) => k.id === ids[1]).value[0]).not.toBe(SEALED)

      const r = await enc.rekeySession(id)
      expect(r).toEqual({ creds: true, counts: { 'pre-key': 40 }, records: 41 })
      const after = await stored(id)
      for (const v of [after.rows.creds, ...after.rows.keys.map((k) => k.value)]) expect(v[0]).toBe(SEALED)
      expect(leaks(after.blobs, secretsOf(creds, preKeys))).toEqual([])
      expect(Object.keys(await (await open({ encryption: { key: K1 } })).getKeys(id, 'pre-key', ids))).toHaveLength(40)
    })

    it.skipIf(!cfg.redis)('moves sealed bytes, sealed once, through write-behind flushes and warms', async () => {
      const id = sid('behind')
      const store = await open({ encryption: { key: K1 }, durability: 'write-behind', flushIntervalMs: 3_600_000 })
      const keys = { 'pre-key': { 7: { private: randomBytes(32), public: randomBytes(32) } } }
      await store.saveCreds(id, { creds: initAuthCreds(), keys })
      expect((await stored(id)).rows.keys).toHaveLength(0) // not flushed yet
      await store.close() // flushes
      const { rows, redisKeys } = await stored(id)
      expect(rows.keys).toHaveLength(1)
      const redisValue = (await redis.hgetBuffer(`wa:{s:${id}}:k:pre-key`, '7')).subarray(9) // after the version and flag
      expect(redisValue.equals(rows.keys[0].value)).toBe(true) // the flush moved Redis' sealed bytes as they were
      expect(rows.keys[0].value.length).toBe(redisValue.length)
      // Redis emptied: the next read warms it from SQL with SQL's sealed bytes
      await redis.del(...redisKeys)
      const reader = await open({ encryption: { key: K1 }, cache: false })
      expect(Buffer.from((await reader.getKeys(id, 'pre-key', ['7']))['7'].private)).toEqual(keys['pre-key'][7].private)
      const warmed = await redis.hgetBuffer(`wa:{s:${id}}:k:pre-key`, '7')
      expect(warmed.subarray(9).equals(rows.keys[0].value)).toBe(true)
    })

    it('refuses a sealed value copied to another record (ERR_DECRYPT), in SQL and in Redis', async () => {
      const id = sid('moved')
      const store = await open({ encryption: { key: K1 }, cache: false })
      const pk = (n) => ({ private: Buffer.alloc(32, n), public: Buffer.alloc(32, n + 1) })
      await store.setKeys(id, { 'pre-key': { 1: pk(1), 2: pk(2), 3: pk(3) } })
      await store.close()
      const { redis, sql } = raw()
      await copySqlValue(sql, id, 'pre-key', '2', '1')
      if (redis) {
        // Redis copy of record 3 moved onto 2 as well; SQL's rows are what the rebuilt session reads
        const key = `wa:{s:${id}}:k:pre-key`
        await redis.hset(key, '2', await redis.hgetBuffer(key, '3'))
      }
      const reader = await open({ encryption: { key: K1 }, cache: false })
      if (redis) {
        await expect(reader.getKeys(id, 'pre-key', ['2'])).rejects.toMatchObject({ code: 'ERR_DECRYPT' })
        // drop the Redis copy: reads go to SQL, where record 1 holds record 2's value
        const { redisKeys } = await stored(id)
        await redis.del(...redisKeys)
      }
      const fresh = await open({ encryption: { key: K1 }, cache: false })
      await expect(fresh.getKeys(id, 'pre-key', ['1'])).rejects.toMatchObject({ code: 'ERR_DECRYPT' })
      await expect(fresh.getKeys(id, 'pre-key', ['1', '3'])).rejects.toMatchObject({ code: 'ERR_DECRYPT' })
      expect(Buffer.from((await fresh.getKeys(id, 'pre-key', ['3']))['3'].private)).toEqual(Buffer.alloc(32, 3))
    })
  })
}

describe('encryption options', () => {
  it('takes 32-byte Buffers, Uint8Arrays and base64 text, refuses anything else without quoting it', async () => {
    const bad = [{ key: randomBytes(16) }, { key: 'not base64' }, { key: K1.toString('hex') }, { key: 42 }, {}, { key: K1, previousKeys: [randomBytes(31)] }, { key: K1, previousKeys: K2 }, { key: K1, other: 1 }]
    for (const encryption of bad) {
      let err = null
      try {
        new BaileysAuthStore(null, new BaileysOrmAdapter('sqlite::memory:'), { encryption })
      } catch (e) {
        err = e
      }
      expect(err?.code, inspect(encryption)).toBe('ERR_INVALID_ARGUMENT')
      expect(err.message).not.toContain(K1.toString('hex'))
    }
    for (const key of [K1, new Uint8Array(K1), K1.toString('base64'), K1.toString('base64url')]) {
      const s = new BaileysAuthStore(null, new BaileysOrmAdapter('sqlite::memory:'), { encryption: { key, previousKeys: [K2.toString('base64')] } })
      const shown = inspect(s, { depth: 10, showHidden: true }) + JSON.stringify(Object.keys(s))
      for (const k of [K1, K2]) {
        expect(shown).not.toContain(k.toString('hex'))
        expect(shown).not.toContain(k.toString('base64'))
        expect(shown).not.toContain(inspect(k).slice(8, 40))
      }
      await s.saveCreds(uniqueId('opts'), { creds: initAuthCreds() })
      await s.close()
    }
  })

  it('rekey needs the encryption option', async () => {
    const s = await openAuthStore({ redis: null, database: 'sqlite::memory:' })
    await s.saveCreds('plain-only', { creds: initAuthCreds() })
    await expect(s.rekeySession('plain-only')).rejects.toMatchObject({ code: 'ERR_CONFIG' })
    await expect(rekeySessions(s)).rejects.toMatchObject({ code: 'ERR_CONFIG' })
    await s.close()
  })
})
