// Moving in from Baileys' own useMultiFileAuthState folder, and back out, without re-pairing:
// a party on a real Baileys folder talks with a party on the store (Baileys' Signal code), its
// folder is imported and the conversation continues on the store, then on an exported folder
// opened by Baileys again. Synthetic folders cover every key type and the ids Baileys' file
// naming mangles, in 6.x and 7.x shapes.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { isDeepStrictEqual } from 'node:util'
import { afterAll, describe, expect, it } from 'vitest'
import { proto } from 'baileys'
import { BufferJSON as BaileysBufferJSON } from 'baileys/lib/Utils/generics.js'
import { getNextPreKeys } from 'baileys/lib/Utils/signal.js'
import { useMultiFileAuthState } from 'baileys/lib/Utils/use-multi-file-auth-state.js'
import { introduce, openParty, send, sendGroup, sendGroupStored } from '../demo/signal-party.mjs'
import { keys6, keys7, openFolderParty, writeFolder } from './fixtures/multifile/folders.mjs'
import { configurations } from './support/configs.mjs'
import { uniqueId } from './support/services.mjs'

const require = createRequire(import.meta.url)
const pkg = require('../index.js')
// from the package once index.js exports them, else from their module
const tools = pkg.importMultiFileAuthState ? pkg : require('../lib/tools/multifile.js')
const { importMultiFileAuthState, exportMultiFileAuthState } = tools
const { BufferJSON, encodeValue } = pkg

const allConfigs = await configurations()
const configs = allConfigs.filter((c) => ['embedded SQLite', 'Redis + PostgreSQL', 'Redis + MariaDB'].includes(c.name))
// configurations() makes a temporary folder for each SQLite file: remove them after the suites
afterAll(() => {
  for (const c of allConfigs) if (c.database?.startsWith('sqlite://')) rmSync(dirname(c.database.slice('sqlite://'.length)), { recursive: true, force: true })
})

const names = (dir) => readdirSync(dir).sort()
const countKeys = (keys) => Object.fromEntries(Object.entries(keys).map(([t, ids]) => [t, Object.keys(ids).length]).sort())
const sorted = (o) => Object.fromEntries(Object.entries(o).sort())
/** Stored bytes of a value: how the tests compare what came back with what went in. */
const same = (a, b) => Buffer.from(encodeValue(a)).equals(Buffer.from(encodeValue(b)))

async function rejects(promise) {
  try {
    await promise
  } catch (err) {
    return err
  }
  throw new Error('expected a rejection')
}

for (const cfg of configs) {
  describe.skipIf(cfg.skip)(`multi-file auth folders: ${cfg.name}`, () => {
    const stores = []
    const sessions = []
    const dirs = []
    afterAll(async () => {
      try {
        // closing releases the leases a failed test may still hold; then nothing is left behind
        await Promise.allSettled(stores.map((st) => st.close()))
        const s = await cfg.open()
        try {
          await Promise.all(sessions.map((id) => s.purgeSession(id)))
        } finally {
          await s.close()
        }
      } finally {
        for (const d of dirs) rmSync(d, { recursive: true, force: true })
      }
    })
    const open = async () => {
      const s = await cfg.open()
      stores.push(s)
      return s
    }
    const sid = (name) => {
      const id = uniqueId(name)
      sessions.push(id)
      return id
    }
    const tmp = () => {
      const d = mkdtempSync(join(tmpdir(), 'wa-multifile-'))
      dirs.push(d)
      return d
    }

    it('a party on a Baileys folder moves into the store and out again, and keeps talking without re-pairing', async () => {
      const jidA = '5511000000101@s.whatsapp.net'
      const jidB = '5511000000102@s.whatsapp.net'
      const group = '120363000000000101@g.us'
      const sidA = sid('mf-alice')
      const sidB = sid('mf-bob')
      const root = tmp()
      const folderA = join(root, 'alice-auth')

      // A on Baileys' own useMultiFileAuthState, B on the store
      const a = await openFolderParty(folderA, jidA)
      const pre = await getNextPreKeys({ creds: a.creds, keys: a.keys }, 5)
      Object.assign(a.creds, pre.update)
      await a.saveCreds()
      const b = await openParty(await open(), sidB, jidB)
      await introduce(a, b, 10)
      expect(await send(a, b, 'hello')).toEqual({ type: 'pkmsg', text: 'hello' })
      for (let i = 0; i < 3; i++) {
        expect(await send(b, a, `reply ${i}`)).toEqual({ type: 'msg', text: `reply ${i}` })
        expect(await send(a, b, `hello ${i}`)).toEqual({ type: 'msg', text: `hello ${i}` })
      }
      expect(await sendGroup(group, a, [b], 'group from a')).toEqual(['group from a'])
      expect(await sendGroup(group, b, [a], 'group from b')).toEqual(['group from b'])
      await a.saveCreds()
      const credsText = readFileSync(join(folderA, 'creds.json'), 'utf8')
      const filesA = names(folderA)
      expect(filesA).toContain(`sender-key-${group}--5511000000101--0.json`)
      expect(filesA).toContain(`sender-key-${group}--5511000000102--0.json`)

      // import: the whole folder, verified
      const storeA = await open()
      const progress = []
      const res = await importMultiFileAuthState(storeA, folderA, sidA, { verify: true, onProgress: (done, total) => progress.push([done, total]) })
      expect(res.written).toBe(true)
      expect(res.skipped).toEqual([])
      expect(res.records).toBe(filesA.length)
      expect(res.verified).toEqual({ records: filesA.length, mismatches: 0 })
      expect(res.counts).toMatchObject({ 'pre-key': 5, session: 1, 'sender-key': 2 })
      expect(progress.at(-1)).toEqual([filesA.length, filesA.length])
      expect(res.bytes).toBe(filesA.reduce((n, f) => n + readFileSync(join(folderA, f)).length, 0))
      expect(Object.keys(await storeA.getKeys(sidA, 'sender-key', [`${group}::5511000000101::0`, `${group}::5511000000102::0`]))).toHaveLength(2)
      const sessionIds = await storeA.listIds(sidA, 'session')

      // A continues on the store: same creds (no new pairing), the same Signal session ('msg', not 'pkmsg')
      const a2 = await openParty(storeA, sidA, jidA)
      expect(JSON.stringify(a2.creds, BaileysBufferJSON.replacer)).toBe(credsText)
      expect(await send(a2, b, 'from the store')).toEqual({ type: 'msg', text: 'from the store' })
      expect(await send(b, a2, 'welcome')).toEqual({ type: 'msg', text: 'welcome' })
      expect(await send(a2, b, 'thanks')).toEqual({ type: 'msg', text: 'thanks' })
      expect(await sendGroupStored(group, a2, [b], 'group from the store')).toEqual(['group from the store'])
      expect(await sendGroupStored(group, b, [a2], 'group to the store')).toEqual(['group to the store'])
      expect(await storeA.listIds(sidA, 'session')).toEqual(sessionIds)
      await a2.saveCreds()
      // while A runs on the store, another process may not export it
      const busy = await rejects(exportMultiFileAuthState(await open(), sidA, join(root, 'busy')))
      expect(busy.code).toBe('ERR_SESSION_LOCKED')
      expect(existsSync(join(root, 'busy'))).toBe(false)
      const credsAfter = JSON.stringify(a2.creds, BaileysBufferJSON.replacer)
      await a2.close()

      // export: Baileys' own useMultiFileAuthState opens the folder and the conversation goes on
      const folderC = join(root, 'exported', 'alice-auth')
      const exp = await exportMultiFileAuthState(storeA, sidA, folderC, { verify: true })
      expect(exp.files).toBe(names(folderC).length)
      expect(names(folderC)).toEqual(filesA) // the same ids: nothing new was created on the store
      expect(readdirSync(join(root, 'exported'))).toEqual(['alice-auth']) // no staging folder left
      expect(readFileSync(join(folderC, 'creds.json'), 'utf8')).toBe(credsAfter)
      const c = await openFolderParty(folderC, jidA)
      expect(JSON.stringify(c.creds, BaileysBufferJSON.replacer)).toBe(credsAfter)
      expect(await send(c, b, 'back in a folder')).toEqual({ type: 'msg', text: 'back in a folder' })
      expect(await send(b, c, 'still here')).toEqual({ type: 'msg', text: 'still here' })
      expect(await sendGroupStored(group, c, [b], 'group from the folder')).toEqual(['group from the folder'])
      expect(await sendGroupStored(group, b, [c], 'group to the folder')).toEqual(['group to the folder'])
      expect(names(folderC)).toEqual(filesA)
      await b.close()
    })

    it('a 7.x folder with every key type round-trips byte for byte, and getKeys answers the ids Baileys uses', async () => {
      const root = tmp()
      const src = join(root, 'src')
      const keys = keys7()
      const { files } = await writeFolder(src, keys)
      const store = await open()
      const id = sid('mf-v7')
      const res = await importMultiFileAuthState(store, src, id)
      expect(res.skipped).toEqual([])
      expect(sorted(res.counts)).toEqual(countKeys(keys))
      expect(res.records).toBe(files.length)

      for (const [type, byId] of Object.entries(keys)) {
        const got = await store.getKeys(id, type, Object.keys(byId))
        expect(Object.keys(got).sort(), type).toEqual(Object.keys(byId).sort())
        for (const [kid, value] of Object.entries(byId)) expect(same(got[kid], value), `${type}/${kid}`).toBe(true)
      }
      // app-state-sync-key comes back as Baileys expects it: an AppStateSyncKeyData with bytes
      const ask = await store.getKeys(id, 'app-state-sync-key', ['AAAAAf/+'])
      expect(ask['AAAAAf/+']).toBeInstanceOf(proto.Message.AppStateSyncKeyData)
      expect(Buffer.from(ask['AAAAAf/+'].keyData).equals(Buffer.alloc(32, 11))).toBe(true)
      // the file-name spellings are not ids
      expect(await store.getKeys(id, 'sender-key', ['120363000000000001@g.us--5511999990001--0'])).toEqual({})
      expect(await store.getKeys(id, 'tctoken', ['5511999990003-2@s.whatsapp.net', '/index'])).toEqual({})
      expect(await store.getKeys(id, 'app-state-sync-key', ['AAAAAf__+'])).toEqual({})

      const out = join(root, 'out')
      const exp = await exportMultiFileAuthState(store, id, out)
      expect(exp.files).toBe(files.length)
      expect(names(out)).toEqual(files)
      for (const f of files) expect(readFileSync(join(out, f), 'utf8'), f).toBe(readFileSync(join(src, f), 'utf8'))
    })

    it('a 6.x folder (array-form Buffers, six types) imports and exports semantically equal, in the form Baileys 7 reads', async () => {
      const root = tmp()
      const src = join(root, 'src')
      const keys = keys6()
      const { files } = await writeFolder(src, keys, { shape: '6' })
      expect(readFileSync(join(src, 'pre-key-1.json'), 'utf8')).toContain('"data":[1,1,')
      const store = await open()
      const id = sid('mf-v6')
      const res = await importMultiFileAuthState(store, src, id, { verify: true })
      expect(sorted(res.counts)).toEqual(countKeys(keys))
      for (const [type, byId] of Object.entries(keys)) {
        const got = await store.getKeys(id, type, Object.keys(byId))
        for (const [kid, value] of Object.entries(byId)) expect(same(got[kid], value), `${type}/${kid}`).toBe(true)
      }
      const creds = (await store.getCreds(id)).creds
      expect(Buffer.isBuffer(creds.noiseKey.private)).toBe(true)

      const out = join(root, 'out')
      await exportMultiFileAuthState(store, id, out)
      expect(names(out)).toEqual(files)
      for (const f of files) {
        const parse = (dir) => JSON.parse(readFileSync(join(dir, f), 'utf8'), BufferJSON.reviver)
        expect(isDeepStrictEqual(parse(out), parse(src)), f).toBe(true)
      }
      // Baileys 7's reviver leaves the array form an object; the exported folder gives it Buffers
      const before = (await (await useMultiFileAuthState(src)).state.keys.get('pre-key', ['1']))['1']
      const after = (await (await useMultiFileAuthState(out)).state.keys.get('pre-key', ['1']))['1']
      expect(Buffer.isBuffer(before.public)).toBe(false)
      expect(Buffer.isBuffer(after.public)).toBe(true)
      expect(after.public.equals(Buffer.alloc(32, 1))).toBe(true)
    })

    it('skips what Baileys never reads, names unknown types by the documented rule, and takes extra type names', async () => {
      const root = tmp()
      const src = join(root, 'src')
      await writeFolder(src, { 'pre-key': { 1: { public: Buffer.alloc(32, 1), private: Buffer.alloc(32, 2) } } })
      const put = (name, text) => writeFileSync(join(src, name), text)
      put('future-thing-x-y.json', '{"v":1}') // unknown type, id with '-': split at the last lowercase run
      put('nextgen-5511999990001.0.json', '{"v":2}')
      put('pre-key-5.json.tmp', '{}')
      put('creds.json.bak', '{}')
      put('notes.txt', 'hi')
      put('.hidden.json', '{}')
      put('foo.json', '{}')
      put('creds-old.json', '{}')
      put('sender-key-not-a-sender-key.json', '{}')
      put('session-5511:1.json', '{}') // Baileys would write "session-5511-1.json"
      put('pre-key-9.json', 'null')
      mkdirSync(join(src, 'old'))
      const store = await open()
      const id = sid('mf-odd')
      const res = await importMultiFileAuthState(store, src, id)
      expect(res.counts).toEqual({ 'pre-key': 1, 'future-thing-x': 1, nextgen: 1 })
      expect(res.skipped.map((s) => s.file).sort()).toEqual(
        ['.hidden.json', 'creds-old.json', 'creds.json.bak', 'foo.json', 'notes.txt', 'old', 'pre-key-5.json.tmp', 'pre-key-9.json', 'sender-key-not-a-sender-key.json', 'session-5511:1.json'].sort(),
      )
      expect(res.skipped.find((s) => s.file === 'session-5511:1.json').reason).toMatch(/session-5511-1\.json/)
      expect(res.skipped.find((s) => s.file === 'pre-key-9.json').reason).toMatch(/null/)
      expect(await store.getKeys(id, 'future-thing-x', ['y'])).toEqual({ y: { v: 1 } })
      expect(await store.getKeys(id, 'nextgen', ['5511999990001.0'])).toEqual({ '5511999990001.0': { v: 2 } })

      // with the type named, the id keeps its '-'
      const id2 = sid('mf-types')
      const res2 = await importMultiFileAuthState(store, src, id2, { types: ['future-thing'] })
      expect(res2.counts).toEqual({ 'pre-key': 1, 'future-thing': 1, nextgen: 1 })
      expect(await store.getKeys(id2, 'future-thing', ['x-y'])).toEqual({ 'x-y': { v: 1 } })

      // either way the files come back under the names they had
      for (const [sess, dir] of [[id, 'out1'], [id2, 'out2']]) {
        await exportMultiFileAuthState(store, sess, join(root, dir))
        expect(names(join(root, dir))).toEqual(['creds.json', 'future-thing-x-y.json', 'nextgen-5511999990001.0.json', 'pre-key-1.json'])
      }
    })

    it('refuses to replace another session, re-imports as a no-op, and verifies what it wrote', async () => {
      const root = tmp()
      const v7 = join(root, 'v7')
      const v6 = join(root, 'v6')
      await writeFolder(v7, keys7())
      await writeFolder(v6, keys6(), { shape: '6' })
      const store = await open()
      const id = sid('mf-exists')

      const first = await importMultiFileAuthState(store, v7, id)
      expect(first.written).toBe(true)
      const again = await importMultiFileAuthState(store, v7, id, { verify: true })
      expect(again).toMatchObject({ written: false, counts: first.counts, records: first.records, verified: { records: first.records, mismatches: 0 } })

      const refused = await rejects(importMultiFileAuthState(store, v6, id))
      expect(refused.code).toBe('ERR_SESSION_EXISTS')
      expect(Object.keys(await store.getKeys(id, 'tctoken', ['__index']))).toEqual(['__index']) // untouched

      const replaced = await importMultiFileAuthState(store, v6, id, { overwrite: true, verify: true })
      expect(replaced.written).toBe(true)
      expect(await store.getKeys(id, 'tctoken', ['__index'])).toEqual({}) // the 7.x keys are gone
      expect((await store.describeSession(id)).types.map((t) => t.type).sort()).toEqual(Object.keys(keys6()).sort())

      // a record changed behind the import's back: the session is no longer the folder's
      await store.setKeys(id, { 'pre-key': { 1: { public: Buffer.alloc(32, 9), private: Buffer.alloc(32, 9) } } })
      expect((await rejects(importMultiFileAuthState(store, v6, id))).code).toBe('ERR_SESSION_EXISTS')

      // a backend that loses a record on the way: verify catches it
      const lossy = {
        getCreds: (...a) => store.getCreds(...a),
        getKeys: (...a) => store.getKeys(...a),
        listIds: (...a) => store.listIds(...a),
        listTypes: (...a) => store.listTypes(...a),
        describeSession: (...a) => store.describeSession(...a),
        deleteCreds: (...a) => store.deleteCreds(...a),
        saveCreds: (s, data, o) => {
          const keys = { ...data.keys, 'pre-key': { ...data.keys['pre-key'] } }
          delete keys['pre-key']['812']
          return store.saveCreds(s, { ...data, keys }, o)
        },
      }
      const id2 = sid('mf-lossy')
      const failed = await rejects(importMultiFileAuthState(lossy, v7, id2, { verify: true }))
      expect(failed.code).toBe('ERR_VERIFY_FAILED')
      expect(failed.mismatches).toEqual([{ type: 'pre-key', id: '812', problem: 'missing' }])

      // dry run: everything read and checked, nothing written
      const id3 = sid('mf-dry')
      const dry = await importMultiFileAuthState(store, v7, id3, { dryRun: true })
      expect(dry).toMatchObject({ written: false, counts: first.counts })
      expect(await store.getCreds(id3)).toBeNull()
    })

    it('fails on bad folders and files with typed errors naming them, and imports nothing', async () => {
      const root = tmp()
      const store = await open()
      const id = sid('mf-bad')
      expect((await rejects(importMultiFileAuthState(store, join(root, 'missing'), id))).code).toBe('ERR_NOT_FOUND')
      mkdirSync(join(root, 'empty'))
      const noCreds = await rejects(importMultiFileAuthState(store, join(root, 'empty'), id))
      expect(noCreds.code).toBe('ERR_NOT_FOUND')
      expect(noCreds.message).toMatch(/creds\.json/)
      writeFileSync(join(root, 'a-file'), 'x')
      expect((await rejects(importMultiFileAuthState(store, join(root, 'a-file'), id))).code).toBe('ERR_IO')

      const cases = [
        ['session-5511999990001.0.json', (f) => writeFileSync(f, '{"_sessions":'), 'ERR_CORRUPT_VALUE'],
        ['pre-key-3.json', (f) => writeFileSync(f, ''), 'ERR_CORRUPT_VALUE'],
        ['pre-key-4.json', (f) => symlinkSync(join(root, 'nowhere'), f), 'ERR_IO'],
        ['creds.json', (f) => writeFileSync(f, '[1]'), 'ERR_CORRUPT_VALUE'],
      ]
      for (const [name, spoil, code] of cases) {
        const dir = join(root, `spoilt-${name}`)
        await writeFolder(dir, keys7())
        rmSync(join(dir, name), { force: true })
        spoil(join(dir, name))
        const err = await rejects(importMultiFileAuthState(store, dir, id))
        expect(err.code, name).toBe(code)
        expect(err.file).toBe(join(dir, name))
        expect(err.message).toContain(name)
        expect(await store.getCreds(id)).toBeNull()
        expect((await store.describeSession(id)).types).toEqual([])
      }

      const good = join(root, 'good')
      await writeFolder(good, keys6())
      for (const options of [{ overwrite: 'yes' }, { bogus: true }, { onProgress: 1 }, { types: 'x' }]) {
        expect((await rejects(importMultiFileAuthState(store, good, id, options))).code).toBe('ERR_INVALID_ARGUMENT')
      }
      expect((await rejects(importMultiFileAuthState(store, '', id))).code).toBe('ERR_INVALID_ARGUMENT')
      expect((await rejects(importMultiFileAuthState(store, good, ''))).code).toBe('ERR_INVALID_SESSION_ID')
    })

    it('export refuses a missing session and a non-empty folder; overwrite replaces only the Baileys files', async () => {
      const root = tmp()
      const src = join(root, 'src')
      const { files } = await writeFolder(src, keys6())
      const store = await open()
      const id = sid('mf-export')
      await importMultiFileAuthState(store, src, id)

      const missing = await rejects(exportMultiFileAuthState(store, sid('mf-nobody'), join(root, 'nobody')))
      expect(missing.code).toBe('ERR_SESSION_NOT_FOUND')
      expect(existsSync(join(root, 'nobody'))).toBe(false)

      const out = join(root, 'out')
      mkdirSync(out)
      writeFileSync(join(out, 'notes.txt'), 'keep me')
      writeFileSync(join(out, 'package.json'), '{"name":"a bot"}')
      writeFileSync(join(out, 'pre-key-999.json'), '{}')
      const refused = await rejects(exportMultiFileAuthState(store, id, out))
      expect(refused.code).toBe('ERR_FOLDER_NOT_EMPTY')
      expect(names(out)).toEqual(['notes.txt', 'package.json', 'pre-key-999.json'])

      const progress = []
      const exp = await exportMultiFileAuthState(store, id, out, { overwrite: true, verify: true, onProgress: (d, t) => progress.push([d, t]) })
      expect(exp).toMatchObject({ sessionId: id, files: files.length, removed: 1, verified: { files: files.length } })
      expect(sorted(exp.counts)).toEqual(countKeys(keys6()))
      // a stale Baileys key file goes; other files, JSON or not, stay
      expect(names(out)).toEqual([...files, 'notes.txt', 'package.json'].sort())
      expect(progress.at(-1)).toEqual([files.length, files.length])
      expect(readdirSync(root).sort()).toEqual(['out', 'src']) // no staging folder left

      // an empty folder that exists is filled
      const empty = join(root, 'empty')
      mkdirSync(empty)
      await exportMultiFileAuthState(store, id, empty)
      expect(names(empty)).toEqual(files)
    })
  })
}
