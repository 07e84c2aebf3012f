// One behaviour suite, run against every backend combination (see support/configs.mjs).
import { afterAll, describe, expect, it } from 'vitest'
import * as baileys from 'baileys'
import { useBaileysAuthState, WaAuthStoreError } from '../index.js'
import { configurations, rawRedis } from './support/configs.mjs'
import { uniqueId } from './support/services.mjs'

const { proto, initAuthCreds } = baileys
const configs = await configurations({ cluster: true })

/** A realistic value of every key type Baileys v7 stores, plus one it does not know yet. */
function sampleKeys() {
  return {
    'pre-key': { 1: { public: Buffer.alloc(32, 1), private: Buffer.alloc(32, 2) } },
    session: { '5511999999999.0': { _sessions: { abc: { registrationId: 7, currentRatchet: { rootKey: 'AAEC' } } }, version: 'v1' } },
    'sender-key': { '1203@g.us::5511999_1::0': Buffer.from(JSON.stringify([{ senderKeyId: 1 }])) },
    'sender-key-memory': { '1203@g.us': { '5511999@s.whatsapp.net': true } },
    'app-state-sync-key': {
      'AAAAAB/+Zw==': proto.Message.AppStateSyncKeyData.fromObject({
        keyData: Buffer.alloc(32, 9),
        fingerprint: { rawId: 5, currentIndex: 2, deviceIndexes: [0, 1] },
        timestamp: 1700000000000,
      }),
    },
    'app-state-sync-version': { regular_high: { version: 12, hash: Buffer.alloc(128, 3), indexValueMap: { 'aGk=': { valueMac: Buffer.alloc(32, 4) } } } },
    'lid-mapping': { '5511999': '123456789012345', '123456789012345_reverse': '5511999' },
    'device-list': { '5511999': ['0', '12'] },
    tctoken: { '5511999@s.whatsapp.net': { token: Buffer.from('tok'), timestamp: '1700000000' } },
    'identity-key': { '5511999.0': Buffer.concat([Buffer.from([5]), Buffer.alloc(32, 6)]) },
    'future-type': { x: { any: ['thing', 1, null] } },
  }
}

for (const cfg of configs) {
  describe.skipIf(cfg.skip)(`conformance: ${cfg.name}`, () => {
    const opened = []
    const open = async () => {
      const s = await cfg.open()
      opened.push(s)
      return s
    }
    afterAll(async () => {
      await Promise.all(opened.map((s) => s.close()))
    })

    it('starts an unknown session from initAuthCreds and reads back saved creds with Buffers', async () => {
      const store = await open()
      const sid = uniqueId('creds')
      expect(await store.getCreds(sid)).toBeNull()
      const { state, saveCreds } = await useBaileysAuthState(store, sid)
      expect(Buffer.isBuffer(state.creds.noiseKey.private)).toBe(true)
      state.creds.me = { id: '5511999:1@s.whatsapp.net', name: 'bot' }
      await saveCreds()
      const again = await (await open()).getCreds(sid)
      expect(again.creds.me).toEqual(state.creds.me)
      expect(Buffer.isBuffer(again.creds.signedPreKey.keyPair.public)).toBe(true)
      expect(again.creds.signedPreKey.signature.equals(Buffer.from(state.creds.signedPreKey.signature))).toBe(true)
      expect(again.creds.advSecretKey).toBe(state.creds.advSecretKey)
    })

    it('round-trips every key type with its run-time shape', async () => {
      const store = await open()
      const sid = uniqueId('types')
      const data = sampleKeys()
      await store.setKeys(sid, data)
      const reader = await open()
      for (const [type, entries] of Object.entries(data)) {
        const ids = Object.keys(entries)
        const got = await reader.getKeys(sid, type, [...ids, 'missing'])
        expect(Object.keys(got).sort()).toEqual([...ids].sort())
        if (type === 'app-state-sync-key') {
          const v = got[ids[0]]
          expect(v).toBeInstanceOf(proto.Message.AppStateSyncKeyData)
          expect(v.keyData).toBeInstanceOf(Uint8Array)
          expect(Buffer.from(v.keyData).equals(Buffer.alloc(32, 9))).toBe(true)
          expect(v.fingerprint.deviceIndexes).toEqual([0, 1])
          expect(Number(v.timestamp)).toBe(1700000000000)
        } else {
          expect(got).toEqual(entries)
        }
      }
      const ver = (await reader.getKeys(sid, 'app-state-sync-version', ['regular_high'])).regular_high
      expect(Buffer.isBuffer(ver.hash)).toBe(true)
      expect(Buffer.isBuffer(ver.indexValueMap['aGk='].valueMac)).toBe(true)
    })

    it('reads many ids at once in the order asked, missing ones left out, multi-byte text intact, from every tier', async () => {
      const store = await open()
      const sid = uniqueId('many')
      if (store._lease !== false) await store.acquireLease(sid) // the cache serves leased sessions
      // lengths that differ per record, multi-byte UTF-8 (offsets are bytes, not characters), a Buffer
      const values = {}
      for (let i = 0; i < 60; i++) values[`id-${i}`] = { n: i, text: 'ção ✓ 🙂'.repeat(i % 7), raw: Buffer.alloc(i % 5, i) }
      await store.setKeys(sid, { session: values })
      const ask = []
      for (let i = 0; i < 70; i++) ask.push(i % 3 === 2 ? `absent-${i}` : `id-${(i * 7) % 60}`)
      const expected = Object.fromEntries(ask.filter((id) => id in values).map((id) => [id, values[id]]))
      const check = (got) => {
        expect(got).toEqual(expected)
        expect(Object.keys(got)).toEqual(Object.keys(expected))
      }
      check(await store.getKeys(sid, 'session', ask)) // the writer: its cache where it has one
      check(await store.getKeys(sid, 'session', ask)) // the same read again (a full cache hit)
      check(await (await open()).getKeys(sid, 'session', ask)) // a new store: Redis or SQL
      expect(await store.getKeys(sid, 'session', ['absent-1', 'absent-2'])).toEqual({})
    })

    it('revives Buffers in every form other stores wrote, in a read of many records, and leaves look-alike text alone', async () => {
      const store = await open()
      const sid = uniqueId('revive')
      if (store._lease !== false) await store.acquireLease(sid)
      const raw = {
        plain: '{"a":"QnVmZmVy","b":[1,2]}', // base64 of "Buffer": text, not a Buffer
        base64: '{"k":{"type":"Buffer","data":"AQID"}}',
        array: '{"k":{"type":"Buffer","data":[1,2,3]}}',
        object: '{"k":{"0":1,"1":2,"2":3}}', // a Uint8Array as plain JSON.stringify writes it
        escaped: '{"k":{"type":"\\u0042uffer","data":"AQID"}}', // "Buffer" spelled with an escape
        word: '{"k":"Buffer","n":{"0":"x"}}', // the words, yet nothing to revive (the reviver runs and leaves it)
      }
      const native = await store._native()
      const ids = Object.keys(raw)
      await store._completions.call((id) => native.write(id, sid, null, ids.map(() => 'session'), ids, ids.map((k) => Buffer.from(raw[k]))))
      const want = {
        plain: { a: 'QnVmZmVy', b: [1, 2] },
        base64: { k: Buffer.from([1, 2, 3]) },
        array: { k: Buffer.from([1, 2, 3]) },
        object: { k: Buffer.from([1, 2, 3]) },
        escaped: { k: Buffer.from([1, 2, 3]) },
        word: { k: 'Buffer', n: { 0: 'x' } },
      }
      for (const reader of [store, store, await open()]) {
        const got = await reader.getKeys(sid, 'session', ['missing', ...ids])
        expect(got).toEqual(want)
        for (const id of ['base64', 'array', 'object', 'escaped']) expect(Buffer.isBuffer(got[id].k)).toBe(true)
      }
      // the native layout itself: a u32 per id (0xffffffff absent, bit 31: needs the reviver), then the values
      const asked = ['missing', ...ids]
      const words = (packed) => asked.map((_, i) => packed.readUInt32LE(4 * i))
      const expected = [0xffffffff, ...ids.map((id) => Buffer.byteLength(raw[id]) + (id === 'plain' ? 0 : 0x80000000))]
      const viaRuntime = await native.getKeys(sid, 'session', asked)
      expect(words(viaRuntime)).toEqual(expected)
      expect(viaRuntime.subarray(4 * asked.length).toString()).toBe(ids.map((id) => raw[id]).join(''))
      const cached = native.getKeysCached(sid, 'session', ids) // null where this store has no cache of it
      if (cached) expect(ids.map((_, i) => cached.readUInt32LE(4 * i))).toEqual(expected.slice(1))
    })

    it('lists ids and describes a session', async () => {
      const store = await open()
      const sid = uniqueId('list')
      const { state } = await useBaileysAuthState(store, sid)
      await store.saveCreds(sid, { creds: state.creds, keys: { 'pre-key': { 2: { p: 1 }, 10: { p: 2 } }, session: { a: { v: 1 } } } })
      expect(await store.listIds(sid, 'pre-key')).toEqual(['10', '2'])
      const ids = []
      for await (const id of state.keys.listIds('pre-key')) ids.push(id)
      expect(ids).toEqual(['10', '2'])
      const pairs = []
      for await (const pair of state.keys.list('session')) pairs.push(pair)
      expect(pairs).toEqual([['a', { v: 1 }]])
      const d = await (await open()).describeSession(sid)
      expect(d.creds).toBe(true)
      expect(d.types.map((t) => [t.type, t.count])).toEqual([['pre-key', 2], ['session', 1]])
      expect(d.types[1].bytes).toBe(Buffer.byteLength('{"v":1}'))
    })

    it('deletes on null and undefined, and applies a mixed set as one unit', async () => {
      const store = await open()
      const sid = uniqueId('del')
      await store.setKeys(sid, { 'pre-key': { 1: { public: Buffer.alloc(1) }, 2: { public: Buffer.alloc(1) }, 3: { public: Buffer.alloc(1) } } })
      await store.setKeys(sid, { session: { a: { v: 1 } }, 'pre-key': { 1: null, 2: undefined } })
      const reader = await open()
      expect(Object.keys(await reader.getKeys(sid, 'pre-key', ['1', '2', '3']))).toEqual(['3'])
      expect(await reader.getKeys(sid, 'session', ['a'])).toEqual({ a: { v: 1 } })
      // a batch with one bad record writes nothing of it
      const bad = { session: { b: { v: 2 } }, 'pre-key': { ['x\u0000y']: { v: 1 } } }
      await expect(store.setKeys(sid, bad)).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
      expect(await (await open()).getKeys(sid, 'session', ['b'])).toEqual({})
    })

    it('does no I/O for empty sets and gets', async () => {
      const store = await open()
      const sid = uniqueId('empty')
      await store.getKeys(sid, 'session', ['warm-up'])
      const before = await store.stats()
      await store.setKeys(sid, { 'pre-key': {} })
      expect(await store.getKeys(sid, 'pre-key', [])).toEqual({})
      expect(await store.stats()).toEqual(before)
    })

    it('stores a pairing burst of 812 pre-keys in one set', async () => {
      const store = await open()
      const sid = uniqueId('pairing')
      const preKeys = {}
      for (let i = 1; i <= 812; i++) preKeys[i] = { public: Buffer.alloc(32, i % 256), private: Buffer.alloc(32, (i * 7) % 256) }
      await store.setKeys(sid, { 'pre-key': preKeys })
      const ids = Object.keys(preKeys)
      const got = await (await open()).getKeys(sid, 'pre-key', ids)
      expect(Object.keys(got)).toHaveLength(812)
      expect(got['812'].private.equals(preKeys[812].private)).toBe(true)
    })

    it('keeps sessions with look-alike ids apart', async () => {
      const store = await open()
      const base = uniqueId('iso')
      const names = [base, `${base}0`, `${base}:x`, `${base}*`, `{${base}}`, `${base}}`, `${base}%7B`]
      for (const n of names) await store.saveCreds(n, { creds: { who: n }, keys: { session: { 1: { who: n } } } })
      const reader = await open()
      for (const n of names) {
        expect((await reader.getCreds(n)).creds.who).toBe(n)
        expect((await reader.getKeys(n, 'session', ['1']))['1'].who).toBe(n)
      }
      await store.deleteCreds(names[0])
      await store.clearSession(names[1])
      const after = await open()
      expect(await after.getCreds(names[0])).toBeNull()
      expect(await after.getKeys(names[0], 'session', ['1'])).toEqual({})
      expect((await after.getCreds(names[1])).creds.who).toBe(names[1])
      expect(await after.getKeys(names[1], 'session', ['1'])).toEqual({})
      for (const n of names.slice(2)) expect((await after.getKeys(n, 'session', ['1']))['1'].who).toBe(n)
    })

    it('rejects bad session ids with ERR_INVALID_SESSION_ID', async () => {
      const store = await open()
      for (const bad of ['', 'x'.repeat(256), 'a\nb', 'tab\there', 42, null]) {
        const err = await store.getKeys(bad, 'session', ['1']).catch((e) => e)
        expect(err).toBeInstanceOf(WaAuthStoreError)
        expect(err.code).toBe('ERR_INVALID_SESSION_ID')
      }
      // 254 bytes of multi-byte UTF-8 is a valid id (named after the run: the teardown finds it)
      const sid = uniqueId('u8')
      await expect(store.getCreds(sid + 'é'.repeat(Math.floor((254 - Buffer.byteLength(sid)) / 2)))).resolves.toBeNull()
    })

    it('deletes the seed\'s "type-id" fields with the longest type matching', async () => {
      const store = await open()
      const sid = uniqueId('fields')
      await store.setKeys(sid, {
        'sender-key-memory': { 'g@g.us': { a: true } },
        'sender-key': { 'memory-g@g.us': Buffer.from('x'), 'g@g.us::a::0': Buffer.from('y') },
        custom: { 1: 'v' },
      })
      await store.deleteKeys(sid, ['sender-key-memory-g@g.us', 'sender-key-g@g.us::a::0', { type: 'custom', id: '1' }])
      const reader = await open()
      expect(await reader.getKeys(sid, 'sender-key-memory', ['g@g.us'])).toEqual({})
      expect(Object.keys(await reader.getKeys(sid, 'sender-key', ['memory-g@g.us', 'g@g.us::a::0']))).toEqual(['memory-g@g.us'])
      expect(await reader.getKeys(sid, 'custom', ['1'])).toEqual({})
      await expect(store.deleteKeys(sid, ['nonsense'])).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
    })

    it('lands overlapping saveCreds calls in call order, the last one winning', async () => {
      const store = await open()
      const sid = uniqueId('order')
      const { state, saveCreds } = await useBaileysAuthState(store, sid)
      const pending = []
      for (let i = 0; i < 25; i++) {
        state.creds.nextPreKeyId = i
        pending.push(saveCreds())
      }
      state.creds.nextPreKeyId = 999 // mutated after the last call: must not be what lands
      await Promise.all(pending)
      expect((await (await open()).getCreds(sid)).creds.nextPreKeyId).toBe(24)
    })

    it('reports a corrupt stored value as ERR_CORRUPT_VALUE, not as missing', async () => {
      const store = await open()
      const sid = uniqueId('corrupt')
      const native = await store._native()
      await store._completions.call((id) => native.write(id, sid, null, ['session'], ['x'], [Buffer.from('{not json')]))
      await expect(store.getKeys(sid, 'session', ['x'])).rejects.toMatchObject({ code: 'ERR_CORRUPT_VALUE' })
    })

    it.skipIf(!cfg.redis || !cfg.database)('writes Redis only with syncToDatabase: false', async () => {
      const store = await open()
      const sid = uniqueId('redis-only')
      await store.setKeys(sid, { session: { a: { v: 1 } } }, { syncToDatabase: false })
      expect(await (await open()).getKeys(sid, 'session', ['a'])).toEqual({ a: { v: 1 } })
      const { BaileysAuthStore, BaileysOrmAdapter } = await import('../index.js')
      const sqlOnly = new BaileysAuthStore(null, new BaileysOrmAdapter(cfg.database))
      opened.push(sqlOnly)
      expect(await sqlOnly.getKeys(sid, 'session', ['a'])).toEqual({})
    })

    it.skipIf(!cfg.redis)('sets a TTL on the Redis keys a write touches (refused when Redis holds the only copy)', async () => {
      const store = await open()
      const sid = uniqueId('ttl')
      const raw = rawRedis(cfg.redis)
      try {
        if (cfg.database || cfg.plugin) {
          await store.saveCreds(sid, { creds: { a: 1 }, keys: { session: { x: { v: 1 } } } }, { ttl: 120 })
          const ttl = await raw.pttl(`wa:{s:${sid}}:k:session`)
          expect(ttl).toBeGreaterThan(100_000)
          expect(ttl).toBeLessThanOrEqual(120_000)
          expect(await raw.pttl(`wa:{s:${sid}}:c`)).toBeGreaterThan(100_000)
        } else {
          await expect(store.setKeys(sid, { session: { x: { v: 1 } } }, { ttl: 120 })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
        }
      } finally {
        raw.disconnect()
      }
    })

    it('lists its sessions and their key types, from every tier it has', async () => {
      const store = await open()
      const sid = uniqueId('listed')
      await store.saveCreds(sid, { creds: { a: 1 }, keys: { 'pre-key': { 1: { k: 1 } }, session: { x: { v: 1 } } } })
      const mine = (await store.listSessions()).find((s) => s.id === sid)
      expect(mine).toBeDefined()
      expect(mine.inSql || mine.inRedis).toBe(true)
      if (cfg.database || cfg.plugin) expect(mine.inSql).toBe(true)
      expect(await store.listTypes(sid)).toEqual(['pre-key', 'session'])
      expect(await store.listTypes(uniqueId('nobody'))).toEqual([])
    })

    it.skipIf(!cfg.redis)('purgeSession also takes the session out of the shared LRU bookkeeping', async () => {
      const store = await open()
      const sid = uniqueId('purged')
      const raw = rawRedis(cfg.redis)
      try {
        await store.saveCreds(sid, { creds: { a: 1 }, keys: { session: { x: { v: 1 } } } })
        await store.getKeys(sid, 'session', ['x'])
        // accesses reach the LRU within a second
        for (let i = 0; i < 40 && (await raw.zscore('wa:{m}:lru', sid)) === null; i++) await new Promise((r) => setTimeout(r, 100))
        expect(await raw.zscore('wa:{m}:lru', sid)).not.toBeNull()
        await store.purgeSession(sid)
        expect(await raw.zscore('wa:{m}:lru', sid)).toBeNull()
        expect(await raw.hexists('wa:{m}:count', sid)).toBe(0)
      } finally {
        raw.disconnect()
      }
    })

    it('rejects every call after close() with ERR_STORE_CLOSED', async () => {
      const store = await cfg.open()
      await store.getCreds(uniqueId('x'))
      await store.close()
      await expect(store.getKeys('s', 'session', ['1'])).rejects.toMatchObject({ code: 'ERR_STORE_CLOSED' })
      await expect(store.saveCreds('s', { creds: {} })).rejects.toMatchObject({ code: 'ERR_STORE_CLOSED' })
    })
  })
}

it('initAuthCreds of the installed Baileys is what new sessions start from', () => {
  expect(typeof initAuthCreds).toBe('function')
})
