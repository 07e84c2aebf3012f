// A database outage: queued writes fail with typed errors instead of hanging, and a write whose
// caller gave up before it started never lands later (issue 7, item 9).
import { afterAll, describe, expect, it } from 'vitest'
import { BaileysAuthStore, BaileysOrmAdapter } from '../index.js'
import { service, uniqueId } from './support/services.mjs'
import { TcpProxy } from './support/tcp-proxy.mjs'

const pg = await service('postgres')

describe.skipIf(!pg)('a PostgreSQL outage behind a TCP proxy', () => {
  let proxy
  afterAll(() => proxy?.close())

  it('rejects queued writes with ERR_TIMEOUT/ERR_DATABASE, and a write given up before it started never lands', async () => {
    proxy = await TcpProxy.start({ port: Number(new URL(pg).port || 5432) })
    const url = proxy.rewrite(`${pg}${pg.includes('?') ? '&' : '?'}sslmode=disable`)
    const store = new BaileysAuthStore(null, new BaileysOrmAdapter({ url, timeoutMs: 400, maxConnections: 2 }), { cache: false, lease: false })
    const sid = uniqueId('outage')
    try {
      await store.setKeys(sid, { session: { before: { v: 1 } } })
      proxy.cut({ mode: 'blackhole', existing: 'stall' })
      // the first write blocks its lane on a commit that cannot answer; the others queue behind it
      const write = (i) => store.setKeys(sid, { session: { [`during-${i}`]: { v: i } } }).then(() => 'ok', (e) => e.code)
      const writes = [write(0)]
      await new Promise((r) => setTimeout(r, 100)) // the first is inside its commit now
      for (let i = 1; i < 20; i++) writes.push(write(i))
      const codes = await Promise.all(writes)
      expect(codes.every((c) => c === 'ERR_TIMEOUT' || c === 'ERR_DATABASE')).toBe(true)
      proxy.restore()
      await new Promise((r) => setTimeout(r, 1500)) // what the stalled link held is delivered now
      const reader = new BaileysAuthStore(null, new BaileysOrmAdapter(pg), { cache: false, lease: false })
      try {
        const ids = ['before', ...codes.map((_, i) => `during-${i}`)]
        const got = await reader.getKeys(sid, 'session', ids)
        expect(got.before).toEqual({ v: 1 })
        // only the write that was inside its commit when the link stalled may have landed
        const landed = Object.keys(got).filter((k) => k.startsWith('during-'))
        expect(landed.filter((k) => k !== 'during-0')).toEqual([])
        // and the store works again
        await store.setKeys(sid, { session: { after: { v: 2 } } })
        expect(await reader.getKeys(sid, 'session', ['after'])).toEqual({ after: { v: 2 } })
        await reader.purgeSession(sid)
      } finally {
        await reader.close()
      }
    } finally {
      await store.close()
    }
  }, 60_000)
})
