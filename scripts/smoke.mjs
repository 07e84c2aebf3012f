#!/usr/bin/env node
// The smoke test of a built addon, for any Node on any platform (a native runner of the release
// workflow, or an emulated one: scripts/smoke-cross.sh). Loads wa-auth-store from this checkout
// (binding.js picks the .node of the running platform), then for each store: writes creds and keys,
// reads them back with getCreds / getKeys, closes, reopens, reads them again, and removes the
// session. Exits 1 at the first failure.
//
//   node scripts/smoke.mjs            the embedded SQLite store (a file in a temporary folder)
//   SMOKE_REDIS_URL=redis://…         also a Redis store (Redis only, no SQL)
//   SMOKE_SQL_URL=postgres://…        also a SQL store over TCP (PostgreSQL / MySQL / MariaDB)
//
// A URL that is set must work: an unreachable server fails the run.
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const require = createRequire(import.meta.url)
const started = Date.now()
const { openAuthStore } = require(root)
const addon = Object.keys(require.cache).find((k) => k.endsWith('.node'))
const libc = process.platform === 'linux' ? (process.report.getReport().header.glibcVersionRuntime ? `glibc ${process.report.getReport().header.glibcVersionRuntime}` : 'musl') : ''
console.log(`node ${process.version} ${process.platform} ${process.arch} ${libc}`.trim())
console.log(`addon ${addon ? addon.slice(root.length) : '(none in require.cache)'} loaded in ${Date.now() - started} ms`)

const redact = (url) => url.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@')
const dir = mkdtempSync(join(tmpdir(), 'wa-auth-store-smoke-'))
const stores = [['embedded SQLite', { redis: null, database: `sqlite://${join(dir, 'smoke.db').replaceAll('\\', '/')}?mode=rwc` }]]
if (process.env.SMOKE_REDIS_URL) stores.push([`Redis ${redact(process.env.SMOKE_REDIS_URL)}`, { redis: process.env.SMOKE_REDIS_URL, database: null }])
if (process.env.SMOKE_SQL_URL) stores.push([`SQL ${redact(process.env.SMOKE_SQL_URL)}`, { redis: null, database: process.env.SMOKE_SQL_URL }])

// a Baileys-shaped session: creds with binary fields, two pre-keys and a Signal session record
const sid = `wa-test-js-smoke-${process.pid}-${Date.now()}`
const creds = { registrationId: 4242, noiseKey: { public: Buffer.alloc(32, 1), private: Buffer.alloc(32, 2) }, me: { id: '5511900000001@s.whatsapp.net' } }
const preKeys = { 1: { public: Buffer.alloc(32, 3), private: Buffer.alloc(32, 4) }, 2: { public: Buffer.alloc(32, 5), private: Buffer.alloc(32, 6) } }
const session = { '5511900000002.0': { record: Buffer.from('signal session record') } }

async function check(store, phase) {
  const got = await store.getCreds(sid)
  assert.ok(got, `${phase}: getCreds returned nothing`)
  assert.deepEqual(got.creds, creds, `${phase}: getCreds`)
  assert.deepEqual(await store.getKeys(sid, 'pre-key', ['1', '2', '3']), { 1: preKeys[1], 2: preKeys[2] }, `${phase}: getKeys pre-key`)
  assert.deepEqual(await store.getKeys(sid, 'session', Object.keys(session)), session, `${phase}: getKeys session`)
}

let failed = false
for (const [name, options] of stores) {
  const t = Date.now()
  let store
  try {
    store = await openAuthStore(options)
    await store.saveCreds(sid, { creds })
    await store.setKeys(sid, { 'pre-key': preKeys, session })
    await check(store, 'after the write')
    await store.close()
    store = await openAuthStore(options)
    await check(store, 'after reopening')
    await store.purgeSession(sid)
    assert.equal(await store.getCreds(sid), null, 'purgeSession left the creds')
    await store.close()
    store = null
    console.log(`ok   ${name}: write, getCreds, getKeys, reopen, read again, purge (${Date.now() - t} ms)`)
  } catch (e) {
    failed = true
    console.log(`FAIL ${name}: ${e.stack ?? e}`)
    await store?.close().catch(() => {})
  }
}
rmSync(dir, { recursive: true, force: true })
console.log(failed ? 'smoke test FAILED' : `smoke test passed (${stores.length} stores, ${Date.now() - started} ms)`)
process.exit(failed ? 1 : 0)
