// End to end with Baileys' real Signal code (libsignal via Baileys' repository, Baileys'
// transaction wrapper, Baileys' pre-key helpers): two parties talk through the store, both stores
// are reopened in a new process, and the conversation continues.
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { afterAll, describe, expect, it } from 'vitest'
import { openParty, introduce, send, sendGroup } from '../demo/signal-party.mjs'
import { configurations } from './support/configs.mjs'
import { uniqueId } from './support/services.mjs'

const run = promisify(execFile)
const fixture = fileURLToPath(new URL('./fixtures/continue-conversation.mjs', import.meta.url))
const configs = (await configurations({ cluster: true })).filter((c) => ['embedded SQLite', 'Redis + PostgreSQL', 'Redis + MariaDB', 'Redis only', 'Redis Cluster + PostgreSQL', 'Redis + MikroORM plug-in', 'memory plug-in'].includes(c.name))

for (const cfg of configs) {
  describe.skipIf(cfg.skip)(`Baileys Signal end to end: ${cfg.name}`, () => {
    const stores = []
    afterAll(() => Promise.all(stores.map((s) => s.close())))
    const open = async () => {
      const s = await cfg.open()
      stores.push(s)
      return s
    }

    it('talks both ways, in a group, and again after both stores reopen in a new process', async () => {
      const sidA = uniqueId('alice')
      const sidB = uniqueId('bob')
      const jidA = '5511000000001@s.whatsapp.net'
      const jidB = '5511000000002@s.whatsapp.net'
      const group = '120363000000000001@g.us'
      const storeA = await open()
      const storeB = await open()
      const a = await openParty(storeA, sidA, jidA)
      const b = await openParty(storeB, sidB, jidB)
      await a.saveCreds()
      const published = await introduce(a, b, 30)
      expect(published).toBe(30)

      const first = await send(a, b, 'hello 0')
      expect(first).toEqual({ type: 'pkmsg', text: 'hello 0' })
      // the pre-key B used is consumed: Baileys deletes it with a null in the same transaction
      const preKeysLeft = await storeB.getKeys(sidB, 'pre-key', Array.from({ length: 30 }, (_, i) => String(i + 1)))
      expect(Object.keys(preKeysLeft)).toHaveLength(29)
      for (let i = 1; i <= 15; i++) {
        expect((await send(b, a, `reply ${i}`)).text).toBe(`reply ${i}`)
        expect((await send(a, b, `hello ${i}`)).text).toBe(`hello ${i}`)
      }
      expect(await sendGroup(group, a, [b], 'group hello')).toEqual(['group hello'])
      expect(Object.keys(await storeB.getKeys(sidB, 'sender-key', [`${group}::5511000000001::0`]))).toHaveLength(1)
      await Promise.all([a.saveCreds(), b.saveCreds()])
      await Promise.all([storeA.close(), storeB.close()])

      // a new process (the in-memory plug-in lives in this one only: it reopens below)
      if (cfg.plugin !== 'memory') {
        const args = JSON.stringify({ redis: cfg.redis, database: cfg.database, plugin: cfg.plugin, pluginDatabase: cfg.pluginDatabase, sidA, sidB, jidA, jidB, group, rounds: 5 })
        const { stdout } = await run(process.execPath, [fixture, args], { env: process.env })
        const out = JSON.parse(stdout)
        expect(out.texts).toEqual(Array.from({ length: 5 }, (_, i) => [`after restart a->b ${i}`, `after restart b->a ${i}`]).flat())
        expect(out.groupTexts).toEqual(['group after restart'])
        expect(out.registrationIdA).toBe(a.creds.registrationId)
      }

      // and once more here, on stores opened after the other process wrote
      const a2 = await openParty(await open(), sidA, jidA)
      const b2 = await openParty(await open(), sidB, jidB)
      expect((await send(a2, b2, 'third life')).text).toBe('third life')
      expect((await send(b2, a2, 'still here')).text).toBe('still here')
    })
  })
}

describe('Baileys shapes', () => {
  it('revives app-state-sync-key through fromObject (bytes, not base64 strings)', async () => {
    const cfg = (await configurations())[0]
    const store = await cfg.open()
    try {
      const { proto } = await import('baileys')
      const sid = uniqueId('appstate')
      const keyData = Buffer.alloc(32, 42)
      const value = proto.Message.AppStateSyncKeyData.fromObject({ keyData, fingerprint: { rawId: 1, currentIndex: 0, deviceIndexes: [0] }, timestamp: Date.now() })
      await store.setKeys(sid, { 'app-state-sync-key': { 'AAAAAQ==': value } })
      const got = (await store.getKeys(sid, 'app-state-sync-key', ['AAAAAQ==']))['AAAAAQ==']
      expect(got).toBeInstanceOf(proto.Message.AppStateSyncKeyData)
      // create() would leave keyData a base64 string: "Invalid patch mac" in Baileys
      expect(typeof got.keyData).not.toBe('string')
      expect(got.keyData).toBeInstanceOf(Uint8Array)
      expect(Buffer.from(got.keyData).equals(keyData)).toBe(true)
    } finally {
      await store.close()
    }
  })
})
