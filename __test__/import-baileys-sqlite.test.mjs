// importBaileysSqlite: two parties keep their state in files of Baileys' useSqliteAuthState
// schema (fixtures/import/sqlite-auth-state.mjs) and talk with Baileys' real Signal code; the
// files are imported into this store and the conversation continues through it.
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { makeLibSignalRepository } from 'baileys/lib/Signal/libsignal.js'
import { addTransactionCapability } from 'baileys/lib/Utils/auth-utils.js'
import { proto } from 'baileys'
import { introduce, openParty, send, sendGroup, sendGroupStored } from '../demo/signal-party.mjs'
import { importBaileysSqlite } from '../lib/tools/import-baileys-sqlite.js'
import { useSqliteAuthFile } from './fixtures/import/sqlite-auth-state.mjs'
import { configurations } from './support/configs.mjs'
import { uniqueId } from './support/services.mjs'

const silent = { level: 'silent', trace() {}, debug() {}, info() {}, warn() {}, error() {}, fatal() {}, child() { return silent } }
const GROUP = '120363000000000201@g.us'
const JIDS = { alice: '5511000000201@s.whatsapp.net', bob: '5511000000202@s.whatsapp.net' }
const TARGETS = ['embedded SQLite', 'Redis + PostgreSQL', 'Redis + MariaDB']
const targets = (await configurations()).filter((c) => TARGETS.includes(c.name))

async function fileParty(path, jid) {
  const auth = await useSqliteAuthFile(path)
  const keys = addTransactionCapability(auth.state.keys, silent, { maxCommitRetries: 3, delayBetweenTriesMs: 50 })
  const repo = makeLibSignalRepository({ creds: auth.state.creds, keys }, silent)
  return { jid, creds: auth.state.creds, keys, repo, saveCreds: auth.saveCreds, close: auth.close }
}

describe('importBaileysSqlite', () => {
  const dir = mkdtempSync(join(tmpdir(), 'wa-import-sqlite-'))
  const files = { alice: join(dir, 'alice.db'), bob: join(dir, 'bob.db') }
  const appKeyId = 'AAAAAg=='
  const appKeyData = Buffer.alloc(32, 5)
  let registrationIds
  beforeAll(async () => {
    const a = await fileParty(files.alice, JIDS.alice)
    const b = await fileParty(files.bob, JIDS.bob)
    await a.saveCreds()
    await introduce(a, b, 10)
    expect(await send(a, b, 'file hello')).toEqual({ type: 'pkmsg', text: 'file hello' })
    for (let i = 0; i < 3; i++) {
      expect((await send(b, a, `file reply ${i}`)).text).toBe(`file reply ${i}`)
      expect((await send(a, b, `file hello ${i}`)).text).toBe(`file hello ${i}`)
    }
    expect(await sendGroup(GROUP, a, [b], 'file group')).toEqual(['file group'])
    await b.keys.set({ 'app-state-sync-key': { [appKeyId]: proto.Message.AppStateSyncKeyData.fromObject({ keyData: appKeyData, fingerprint: { rawId: 2, currentIndex: 0, deviceIndexes: [0] }, timestamp: 1700000000000 }) } })
    await Promise.all([a.saveCreds(), b.saveCreds()])
    registrationIds = { alice: a.creds.registrationId, bob: b.creds.registrationId }
    await Promise.all([a.close(), b.close()])
  })
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  for (const cfg of targets) {
    it.skipIf(cfg.skip)(`into ${cfg.name}: the conversation continues, the files stay unchanged`, async () => {
      const ids = { alice: uniqueId('file-alice'), bob: uniqueId('file-bob') }
      const before = Object.fromEntries(Object.entries(files).map(([k, f]) => [k, readFileSync(f)]))
      const store = await cfg.open()
      try {
        const progress = []
        const bob = await importBaileysSqlite(store, files.bob, ids.bob, { verify: true, onProgress: (done, total, sessionId) => progress.push({ done, total, sessionId }) })
        expect(bob).toMatchObject({ sessionId: ids.bob, written: true, verified: true, creds: true, repaired: { 'app-state-key-data': 1 } })
        // 10 published, the one alice used deleted (this store applies deletes)
        expect(bob.counts).toMatchObject({ 'pre-key': 9, session: 1, 'sender-key': 1, 'app-state-sync-key': 1 })
        expect(progress.at(-1)).toMatchObject({ done: 1, total: 1, sessionId: ids.bob })
        const alice = await importBaileysSqlite(store, files.alice, ids.alice)
        expect(alice).toMatchObject({ written: true, repaired: {} })
        for (const [k, f] of Object.entries(files)) expect(readFileSync(f).equals(before[k])).toBe(true)

        const a = await openParty(store, ids.alice, JIDS.alice)
        const b = await openParty(store, ids.bob, JIDS.bob)
        try {
          expect([a.creds.registrationId, b.creds.registrationId]).toEqual([registrationIds.alice, registrationIds.bob])
          expect(await send(a, b, 'imported 0')).toEqual({ type: 'msg', text: 'imported 0' })
          for (let i = 1; i <= 3; i++) {
            expect(await send(b, a, `imported reply ${i}`)).toEqual({ type: 'msg', text: `imported reply ${i}` })
            expect(await send(a, b, `imported ${i}`)).toEqual({ type: 'msg', text: `imported ${i}` })
          }
          expect(await sendGroupStored(GROUP, a, [b], 'imported group')).toEqual(['imported group'])
          const appKey = (await b.state.keys.get('app-state-sync-key', [appKeyId]))[appKeyId]
          expect(Buffer.from(appKey.keyData)).toEqual(appKeyData)
        } finally {
          await Promise.all([a.close(), b.close()])
        }
        // the session moved on: a second import is refused, overwrite replaces it
        await expect(importBaileysSqlite(store, files.bob, ids.bob)).rejects.toMatchObject({ code: 'ERR_SESSION_EXISTS' })
        expect(await importBaileysSqlite(store, files.bob, ids.bob, { overwrite: true, verify: true })).toMatchObject({ written: true, verified: true })
        // and the same import again is a no-op
        expect(await importBaileysSqlite(store, files.bob, ids.bob)).toMatchObject({ written: false })
      } finally {
        for (const sid of Object.values(ids)) await store.purgeSession(sid).catch(() => {})
        await store.close()
      }
    })
  }

  it('dry run writes nothing; a missing file, another schema and bad arguments are refused', async () => {
    const store = await targets[0].open()
    const sid = uniqueId('file-dry')
    try {
      expect(await importBaileysSqlite(store, files.bob, sid, { dryRun: true })).toMatchObject({ written: false, creds: true })
      expect(await store.getCreds(sid)).toBeNull()
      await expect(importBaileysSqlite(store, join(dir, 'missing.db'), sid)).rejects.toMatchObject({ code: 'ERR_NOT_FOUND' })
      const other = join(dir, 'other.db')
      writeFileSync(other, '')
      expect(statSync(other).size).toBe(0)
      await expect(importBaileysSqlite(store, other, sid)).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
      await expect(importBaileysSqlite(store, files.bob, '')).rejects.toMatchObject({ code: 'ERR_INVALID_SESSION_ID' })
      await expect(importBaileysSqlite(store, files.bob, sid, { nope: true })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
    } finally {
      await store.close()
    }
  })
})
