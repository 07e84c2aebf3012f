// importSeedSessions against real data of the seed package (wa-auth-store@0.6.2): its Redis and
// MikroORM adapters, written by Baileys' real Signal code through the seed's useBaileysAuthState,
// then imported into this store and talked on through ours.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openParty, send, sendGroupStored } from '../demo/signal-party.mjs'
import { importSeedSessions, parseSeedField, repairValue } from '../lib/tools/import-seed.js'
import { buildSeedWorld, openSeed } from './fixtures/import/seed-world.mjs'
import { configurations } from './support/configs.mjs'
import { service, uniqueId } from './support/services.mjs'

const redisUrl = await service('redis')
const postgres = await service('postgres')
const mysql = await service('mysql')
const RUN = `${process.pid}_${Date.now().toString(36)}`
const GROUP = '120363000000000101@g.us'
const TARGETS = ['embedded SQLite', 'Redis + PostgreSQL', 'Redis + MariaDB', 'PostgreSQL only']
const targets = (await configurations()).filter((c) => TARGETS.includes(c.name))

/** The imported alice and bob talk on through this store: no new session, no decrypt failure. */
async function conversationContinues(store, ids, world, label) {
  const a = await openParty(store, ids.alice, world.jids.alice)
  const b = await openParty(store, ids.bob, world.jids.bob)
  try {
    expect(a.creds.registrationId).toBe(world.registrationIds.alice)
    expect(b.creds.registrationId).toBe(world.registrationIds.bob)
    // the session the seed held: a whisper message, not a new pre-key message
    expect(await send(a, b, `${label} 0`)).toEqual({ type: 'msg', text: `${label} 0` })
    for (let i = 1; i <= 3; i++) {
      expect(await send(b, a, `${label} reply ${i}`)).toEqual({ type: 'msg', text: `${label} reply ${i}` })
      expect(await send(a, b, `${label} ${i}`)).toEqual({ type: 'msg', text: `${label} ${i}` })
    }
    // bob decrypts alice's group message with the sender key imported from the seed
    expect(await sendGroupStored(GROUP, a, [b], `${label} group`)).toEqual([`${label} group`])
    // the session the seed kept after carol's identity changed is gone
    expect((await b.repo.validateSession(world.jids.carol)).exists).toBe(false)
    // app-state key: bytes again
    const appKey = (await b.state.keys.get('app-state-sync-key', [world.appKeyId]))[world.appKeyId]
    expect(Buffer.from(appKey.keyData)).toEqual(world.appKeyData)
  } finally {
    await Promise.all([a.close(), b.close()])
  }
}

async function purge(store, ids) {
  for (const sid of Object.values(ids)) await store.purgeSession(sid)
}

describe.skipIf(!redisUrl || !postgres)('importSeedSessions: the seed on Redis + PostgreSQL', () => {
  const table = `seed_pg_${RUN}`
  const ids = { alice: uniqueId('seed-alice'), bob: uniqueId('seed-bob'), carol: uniqueId('seed-carol') }
  let seed
  let world
  beforeAll(async () => {
    seed = await openSeed({ redisUrl, databaseUrl: postgres, table })
    world = await buildSeedWorld(seed, ids, { group: GROUP })
    expect(world.texts).toEqual(['seed hello', 'seed reply 0', 'seed hello 0', 'seed reply 1', 'seed hello 1', 'seed reply 2', 'seed hello 2', 'seed group', 'carol here'])
  })
  afterAll(() => seed?.close(Object.values(ids)))
  const from = (extra = {}) => ({ fromRedis: redisUrl, fromDatabase: postgres, fromTable: table, sessions: [ids.alice, ids.bob], ...extra })

  it("holds what the repairs are for (the seed's real bytes)", async () => {
    // Redis, after the seed's cache warming from SQL: base64 text where the key bytes were
    const bobPreKey = JSON.parse(await seed.redis.hget(`wa:auth:${ids.bob}:keys`, 'pre-key-2'))
    const stored = Buffer.from(bobPreKey.public.data, 'base64')
    expect(stored).toHaveLength(44)
    expect(Buffer.from(stored.toString('latin1'), 'base64')).toHaveLength(32)
    // alice's sender key (a Buffer of JSON), warmed by getKeys: the array form, of base64 text
    const aliceSenderKey = JSON.parse(await seed.redis.hget(`wa:auth:${ids.alice}:keys`, `sender-key-${world.aliceSenderKey}`))
    expect(Array.isArray(aliceSenderKey.data)).toBe(true)
    const senderKeyText = Buffer.from(aliceSenderKey.data).toString('latin1')
    expect(senderKeyText).toMatch(/^[A-Za-z0-9+/]+=*$/)
    expect(JSON.parse(Buffer.from(senderKeyText, 'base64').toString('utf8'))).toBeTypeOf('object')
    expect(await seed.redis.exists(`wa:auth:${ids.alice}:creds`)).toBe(0)
    // SQL: creds with Buffers as number arrays, keyData a base64 string
    const conn = seed.orm.em.getConnection()
    const [row] = await conn.execute(`SELECT creds::text AS creds, keys::text AS keys FROM "${table}" WHERE session_id = ?`, [ids.bob])
    expect(Array.isArray(JSON.parse(row.creds).noiseKey.public.data)).toBe(true)
    const keys = JSON.parse(row.keys)
    expect(typeof keys[`app-state-sync-key-${world.appKeyId}`].keyData).toBe('string')
    // the deletes the seed dropped: the consumed pre-key and carol's replaced session
    expect(keys[`pre-key-${world.consumedPreKey}`]).toBeDefined()
    expect(keys[`session-${world.carolAddr}`]).toBeDefined()
  })

  for (const cfg of targets) {
    it.skipIf(cfg.skip)(`into ${cfg.name}: repairs and counts every kind, the conversation continues`, async () => {
      const store = await cfg.open()
      try {
        const progress = []
        const out = await importSeedSessions(store, from({ verify: true, onProgress: (done, total, sessionId) => progress.push({ done, total, sessionId }) }))
        expect(out.total).toBe(2)
        expect(out.written).toBe(2)
        expect(progress.map((p) => p.done)).toEqual([1, 2])
        const [alice, bob] = [ids.alice, ids.bob].map((sid) => out.sessions.find((s) => s.sessionId === sid))
        // bob: everything in Redis (warmed back from SQL by the seed), Buffers as base64 text
        expect(bob).toMatchObject({ source: 'redis', written: true, verified: true, creds: true, sqlOnly: 0, skipped: [] })
        expect(bob.repaired['app-state-key-data']).toBe(1)
        expect(bob.repaired['stale-sessions']).toBe(1)
        // every key that holds Buffers: 31 pre-keys, the identity keys of alice and carol, alice's sender key
        expect(bob.repaired['base64-text-buffers']).toBe(34)
        expect(bob.repaired['buffer-arrays']).toBeUndefined()
        // the two consumed pre-keys kept (see import-seed.js), carol's stale session left out
        expect(bob.counts['pre-key']).toBe(31)
        expect(bob.counts['identity-key']).toBe(2)
        expect(bob.counts.session).toBe(1)
        // alice: creds only in SQL (array form), one key warmed into Redis, the rest from SQL
        expect(alice).toMatchObject({ source: 'both', written: true, creds: true })
        expect(alice.records.redis).toBe(1)
        expect(alice.sqlOnly).toBe(alice.records.sql - 1)
        expect(alice.repaired['buffer-arrays']).toBe(2)
        expect(alice.repaired['base64-text-buffers']).toBe(1)
        // the repaired bytes
        expect((await store.getKeys(ids.bob, 'pre-key', ['2']))['2'].public).toHaveLength(32)
        expect(JSON.parse((await store.getKeys(ids.alice, 'sender-key', [world.aliceSenderKey]))[world.aliceSenderKey].toString('utf8'))).toBeTypeOf('object')
        await conversationContinues(store, ids, world, `after import into ${cfg.name}`)
      } finally {
        await purge(store, ids).catch(() => {})
        await store.close()
      }
    })
  }

  it('from SQL alone (no Redis): the repaired SQL copy carries the conversation', async () => {
    const store = await (await configurations())[0].open()
    try {
      const out = await importSeedSessions(store, { fromDatabase: postgres, fromTable: table, sessions: [ids.alice, ids.bob] })
      const bob = out.sessions.find((s) => s.sessionId === ids.bob)
      expect(bob).toMatchObject({ source: 'sql', written: true, sqlOnly: 0 })
      // MikroORM's copy: creds with number arrays; keys in Baileys' base64 form (never re-encoded)
      expect(bob.repaired).toEqual({ 'buffer-arrays': 1, 'app-state-key-data': 1, 'stale-sessions': 1 })
      expect(out.sessions.find((s) => s.sessionId === ids.alice)).toMatchObject({ source: 'sql', repaired: { 'buffer-arrays': 1 } })
      await conversationContinues(store, ids, world, 'after SQL-only import')
    } finally {
      await purge(store, ids).catch(() => {})
      await store.close()
    }
  })

  it("keySet: 'redis' takes the keys only from Redis where Redis has the hash", async () => {
    const store = await (await configurations())[0].open()
    try {
      const out = await importSeedSessions(store, { ...from(), keySet: 'redis', dryRun: true })
      const alice = out.sessions.find((s) => s.sessionId === ids.alice)
      expect(alice).toMatchObject({ written: false, sqlOnly: 0, records: { redis: 1, sql: 1 } }) // creds from SQL, one key from Redis
      expect(await store.getCreds(ids.alice)).toBeNull() // dry run
    } finally {
      await store.close()
    }
  })

  it('is idempotent, refuses to overwrite a session that moved on, replaces it with overwrite', async () => {
    const store = await (await configurations())[0].open()
    try {
      const first = await importSeedSessions(store, from())
      expect(first.sessions.map((s) => s.written)).toEqual([true, true])
      const again = await importSeedSessions(store, from({ verify: true }))
      expect(again.sessions.map((s) => [s.written, s.verified])).toEqual([[false, true], [false, true]])
      expect(again.written).toBe(0)
      await conversationContinues(store, ids, world, 'before re-import')
      await expect(importSeedSessions(store, from())).rejects.toMatchObject({ code: 'ERR_SESSION_EXISTS' })
      const replaced = await importSeedSessions(store, from({ overwrite: true, verify: true }))
      expect(replaced.written).toBe(2)
      // back at the seed's state: the conversation continues from there (its own fork)
      await conversationContinues(store, ids, world, 'after overwrite')
    } finally {
      await purge(store, ids).catch(() => {})
      await store.close()
    }
  })

  it('refuses bad options and unknown sessions before writing anything', async () => {
    const store = await (await configurations())[0].open()
    try {
      await expect(importSeedSessions(store, {})).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
      await expect(importSeedSessions(store, { fromDatabase: postgres, fromTable: 'x; DROP TABLE y' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
      await expect(importSeedSessions(store, { fromDatabase: postgres, keySet: 'sql' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
      const ghost = uniqueId('seed-ghost')
      await expect(importSeedSessions(store, { ...from(), sessions: [ids.alice, ghost] })).rejects.toMatchObject({ code: 'ERR_SESSION_NOT_FOUND' })
      expect(await store.getCreds(ids.alice)).toBeNull() // every name is checked before the first write
    } finally {
      await purge(store, ids).catch(() => {})
      await store.close()
    }
  })
})

describe.skipIf(!redisUrl || !mysql)('importSeedSessions: the seed on Redis behind an ioredis keyPrefix + MariaDB', () => {
  const table = `seed_my_${RUN}`
  const keyPrefix = `seedtest_${RUN}:`
  const ids = { alice: uniqueId('seedp-alice'), bob: uniqueId('seedp-bob'), carol: uniqueId('seedp-carol') }
  let seed
  let world
  beforeAll(async () => {
    seed = await openSeed({ redisUrl, keyPrefix, databaseUrl: mysql, table })
    world = await buildSeedWorld(seed, ids, { group: GROUP })
  })
  afterAll(() => seed?.close(Object.values(ids)))

  it('imports every session when none are named, and only the named ones otherwise', async () => {
    // the keys really are behind the prefix
    expect(await seed.redis.exists(`wa:auth:${ids.bob}:creds`)).toBe(1) // ioredis adds the prefix
    const store = await (await configurations())[0].open()
    try {
      const all = await importSeedSessions(store, { fromRedis: redisUrl, fromRedisPrefix: keyPrefix, fromDatabase: mysql, fromTable: table })
      expect(all.sessions.map((s) => s.sessionId)).toEqual(Object.values(ids).sort())
      expect(all.written).toBe(3)
      const bob = all.sessions.find((s) => s.sessionId === ids.bob)
      expect(bob.source).toBe('redis')
      expect(bob.repaired).toMatchObject({ 'app-state-key-data': 1, 'stale-sessions': 1 })
      await conversationContinues(store, ids, world, 'after prefixed import')
      await purge(store, ids)

      const named = await importSeedSessions(store, { fromRedis: redisUrl, fromRedisPrefix: keyPrefix, fromDatabase: mysql, fromTable: table, sessions: [ids.bob] })
      expect(named.sessions.map((s) => s.sessionId)).toEqual([ids.bob])
      expect(await store.getCreds(ids.alice)).toBeNull()
      // without the prefix the seed's Redis keys are not found: alice comes from MariaDB alone
      const noPrefix = await importSeedSessions(store, { fromRedis: redisUrl, fromDatabase: mysql, fromTable: table, sessions: [ids.alice], dryRun: true })
      expect(noPrefix.sessions[0]).toMatchObject({ source: 'sql', repaired: { 'buffer-arrays': 1 } })
    } finally {
      await purge(store, ids).catch(() => {})
      await store.close()
    }
  })
})

describe('the repair rules on their own', () => {
  const b64 = (buf) => ({ type: 'Buffer', data: buf.toString('base64') })
  const key = Buffer.from('8a1f3c77e0d94b25a6c1f0e2d3b4a5968778695a4b3c2d1e0f1e2d3c4b5a6978', 'hex')

  it('decodes a value whose Buffers all hold base64 text, once or nested, and nothing else', () => {
    const once = Buffer.from(key.toString('base64'))
    expect(repairValue('pre-key', JSON.stringify({ public: b64(once), private: b64(once) }), 'x').value.public).toEqual(key)
    const twice = Buffer.from(once.toString('base64'))
    expect(repairValue('pre-key', JSON.stringify({ public: b64(twice), private: b64(twice) }), 'x')).toMatchObject({ value: { public: key }, repairs: ['base64-text-buffers'] })
    // real bytes, text that is not base64, and a mix stay as they are
    expect(repairValue('pre-key', JSON.stringify({ public: b64(key), private: b64(key) }), 'x').repairs).toEqual([])
    const senderKey = Buffer.from(JSON.stringify([{ senderKeyId: 1 }]))
    expect(repairValue('sender-key', JSON.stringify(b64(senderKey)), 'x')).toMatchObject({ value: senderKey, repairs: [] })
    expect(repairValue('pre-key', JSON.stringify({ public: b64(once), private: b64(key) }), 'x').repairs).toEqual([])
    // too little text to tell from random bytes
    expect(repairValue('x', JSON.stringify(b64(Buffer.from('QUJD'))), 'x').repairs).toEqual([])
  })

  it('reads the array and index-object forms, keyData strings, and leaves JSON strings alone', () => {
    expect(repairValue('identity-key', JSON.stringify({ type: 'Buffer', data: [...key] }), 'x')).toMatchObject({ value: key, repairs: ['buffer-arrays'] })
    expect(repairValue('identity-key', JSON.stringify({ ...key }), 'x')).toMatchObject({ value: key, repairs: ['buffer-arrays'] })
    const app = repairValue('app-state-sync-key', JSON.stringify({ keyData: key.toString('base64'), timestamp: '1700000000000' }), 'x')
    expect(app.repairs).toEqual(['app-state-key-data'])
    expect(Buffer.from(app.value.keyData)).toEqual(key)
    expect(repairValue('lid-mapping', '12345', 'x', true).value).toBe('12345') // a parsed SQL member: not parsed again
    expect(() => repairValue('session', '{', 'the field')).toThrow(expect.objectContaining({ code: 'ERR_CORRUPT_VALUE' }))
  })

  it("splits the seed's type-id fields with the longest known type first", () => {
    expect(parseSeedField('sender-key-memory-120363@g.us')).toEqual({ type: 'sender-key-memory', id: '120363@g.us' })
    expect(parseSeedField('sender-key-120363@g.us::5511::0')).toEqual({ type: 'sender-key', id: '120363@g.us::5511::0' })
    expect(parseSeedField('app-state-sync-key-AAAAAQ==')).toEqual({ type: 'app-state-sync-key', id: 'AAAAAQ==' })
    expect(parseSeedField('app-state-sync-version-regular_high')).toEqual({ type: 'app-state-sync-version', id: 'regular_high' })
    expect(parseSeedField('pre-key-1')).toEqual({ type: 'pre-key', id: '1' })
    expect(parseSeedField('future-type-1')).toBeNull()
  })
})
