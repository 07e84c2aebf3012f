// Native writes answer through one completion handler (src/completions.rs, lib/completions.js)
// instead of a promise per call: every call is answered once, with its own result, in batches.
// (That a pending write keeps a script alive, and an idle store does not: faults.test.mjs,
// "lets a script that closes its store exit by itself".)
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { openAuthStore } from '../index.js'
import { convertError } from '../lib/errors.js'
import { uniqueId } from './support/services.mjs'

const open = () => openAuthStore({ redis: null, database: `sqlite://${join(mkdtempSync(join(tmpdir(), 'wa-done-')), 'auth.db')}` })
const bytes = (v) => Buffer.from(JSON.stringify(v))

describe('completions', () => {
  it('answers every one of many concurrent writes with its own version, in call order per session', async () => {
    const store = await open()
    const native = await store._native()
    const sids = Array.from({ length: 8 }, () => uniqueId('done'))
    for (const sid of sids) await store.acquireLease(sid)
    const calls = []
    for (let i = 0; i < 400; i++) {
      const sid = sids[i % sids.length]
      calls.push({ sid, i, p: store._completions.call((id) => native.write(id, sid, null, ['session'], ['x'], [bytes({ i })])) })
    }
    const versions = await Promise.all(calls.map((c) => c.p))
    expect(store._completions._pending.size).toBe(0)
    for (const sid of sids) {
      const mine = calls.map((c, k) => ({ ...c, v: versions[k] })).filter((c) => c.sid === sid)
      for (let k = 1; k < mine.length; k++) expect(mine[k].v).toBeGreaterThan(mine[k - 1].v)
      const last = mine[mine.length - 1]
      expect(await store.getKeys(sid, 'session', ['x'])).toEqual({ x: { i: last.i } })
    }
    await store.close()
  })

  it('answers a failed write with its error code, and rejects bad arguments at once', async () => {
    const store = await open()
    const native = await store._native()
    const sid = uniqueId('done-bad')
    const mismatch = store._completions.call((id) => native.write(id, sid, null, ['session', 'session'], ['x'], [bytes(1)]))
    await expect(mismatch.catch((e) => Promise.reject(convertError(e)))).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
    const badId = store._completions.call((id) => native.write(id, '', null, ['session'], ['x'], [bytes(1)]))
    await expect(badId.catch((e) => Promise.reject(convertError(e)))).rejects.toMatchObject({ code: 'ERR_INVALID_SESSION_ID' })
    expect(store._completions._pending.size).toBe(0)
    await native.close()
    // answered by the native task (the store is closed there), not thrown by the call
    const closed = store._completions.call((id) => native.write(id, sid, bytes({ a: 1 }), [], [], []))
    await expect(closed.catch((e) => Promise.reject(convertError(e)))).rejects.toMatchObject({ code: 'ERR_STORE_CLOSED' })
    expect(store._completions._pending.size).toBe(0)
    await store.close()
  })

  it('wraps its request ids below 2^32 and never reuses a pending one', async () => {
    const store = await open()
    const native = await store._native()
    const sid = uniqueId('done-wrap')
    await store.acquireLease(sid)
    const c = store._completions
    c._next = 0xffffffff - 1
    const ids = []
    const write = (n) =>
      c.call((id) => {
        ids.push(id)
        native.write(id, sid, null, ['session'], [`k${n}`], [bytes(n)])
      })
    await Promise.all([write(1), write(2), write(3)])
    expect(ids).toEqual([0xffffffff, 1, 2])
    // an id still pending is skipped (a stand-in holds id 1)
    c._next = 0xffffffff
    c._pending.set(1, { resolve() {}, reject() {} })
    await write(4)
    expect(ids[3]).toBe(2)
    c._pending.delete(1)
    expect(await store.getKeys(sid, 'session', ['k1', 'k2', 'k3', 'k4'])).toEqual({ k1: 1, k2: 2, k3: 3, k4: 4 })
    await store.close()
  })
})
