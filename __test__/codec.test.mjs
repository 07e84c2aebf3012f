// The stored format: Baileys' BufferJSON text; older stores' forms still read.
import { describe, expect, it } from 'vitest'
import { BufferJSON as BaileysBufferJSON } from 'baileys'
import { BufferJSON, decodeValue, encodeValue } from '../index.js'

describe('value codec', () => {
  it('writes exactly what Baileys writes', () => {
    const v = { a: Buffer.from([1, 2, 3]), b: new Uint8Array([4, 5]), nested: [{ c: Buffer.alloc(2) }], s: 'x' }
    expect(encodeValue(v).toString()).toBe(JSON.stringify(v, BaileysBufferJSON.replacer))
    expect(JSON.parse(encodeValue(v).toString(), BaileysBufferJSON.reviver)).toEqual(JSON.parse(JSON.stringify(v, BaileysBufferJSON.replacer), BaileysBufferJSON.reviver))
  })

  it('reads the base64, array and plain-object byte forms as Buffers', () => {
    const forms = [
      '{"k":{"type":"Buffer","data":"AQID"}}',
      '{"k":{"type":"Buffer","data":[1,2,3]}}',
      '{"k":{"0":1,"1":2,"2":3}}',
    ]
    for (const f of forms) {
      const v = decodeValue('pre-key', Buffer.from(f))
      expect(Buffer.isBuffer(v.k)).toBe(true)
      expect([...v.k]).toEqual([1, 2, 3])
    }
  })

  it('reads a value exactly as the reviver would, also when it skips the reviver', () => {
    // decodeValue parses text that cannot hold a Buffer without the reviver: spellings that
    // could still revive must all take it
    const forms = [
      '{"k":{ "type" : "Buffer", "data": "AQID" }}',
      '{"k":{ "0": 1, "1": 2, "2": 3 }}',
      '{"k":{"\\u0030":1,"\\u0031":2,"2":3}}',
      '{"k":{"type":"\\u0042uffer","data":"AQID"}}',
      '[{"type":"Buffer","data":[1,2,3]}]',
    ]
    for (const f of forms) {
      const got = decodeValue('x', Buffer.from(f))
      expect(got).toEqual(JSON.parse(f, BufferJSON.reviver))
      expect(Buffer.isBuffer(got.k ?? got[0])).toBe(true)
    }
    // and text with none of them comes back as plain JSON.parse reads it
    const plain = '{"_sessions":{"QUJD":{"registrationId":7,"chains":{"x":{"messageKeys":{"1":"YQ=="}}}}},"version":"v1"}'
    expect(decodeValue('session', Buffer.from(plain))).toEqual(JSON.parse(plain))
  })

  it('leaves objects that only look numeric alone', () => {
    expect(decodeValue('x', Buffer.from('{"0":1,"2":3}'))).toEqual({ 0: 1, 2: 3 })
    expect(decodeValue('x', Buffer.from('{"0":300}'))).toEqual({ 0: 300 })
    expect(decodeValue('x', Buffer.from('{"0":"a"}'))).toEqual({ 0: 'a' })
    expect(decodeValue('x', Buffer.from('{}'))).toEqual({})
    expect(decodeValue('x', Buffer.from('["a"]'))).toEqual(['a'])
  })

  it('round-trips strings, arrays, numbers and top-level Buffers', () => {
    for (const v of ['lid', ['0', '1'], 42, true, { deep: { deeper: [Buffer.from('z')] } }]) {
      expect(decodeValue('x', encodeValue(v))).toEqual(v)
    }
    const b = decodeValue('sender-key', encodeValue(Buffer.from('{"json":"inside"}')))
    expect(Buffer.isBuffer(b) && b.toString()).toBe('{"json":"inside"}')
  })

  it('types its errors', () => {
    const cyclic = {}
    cyclic.self = cyclic
    expect(() => encodeValue(cyclic)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }))
    expect(() => encodeValue(() => 1)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }))
    expect(() => decodeValue('session', Buffer.from('{oops'))).toThrow(expect.objectContaining({ code: 'ERR_CORRUPT_VALUE' }))
  })

  it('exposes a reviver Baileys users can reuse', () => {
    expect(JSON.parse('{"type":"Buffer","data":"AQ=="}', BufferJSON.reviver)).toEqual(Buffer.from([1]))
  })
})

describe('stored forms', () => {
  it('reads values written compact and as JSON text, whichever form the store writes', async () => {
    const { openAuthStore } = await import('../index.js')
    const { mkdtempSync } = await import('node:fs')
    const { tmpdir } = await import('node:os')
    const { join } = await import('node:path')
    const database = `sqlite://${join(mkdtempSync(join(tmpdir(), 'wa-forms-')), 'auth.db')}`
    const text = await openAuthStore({ redis: null, database, compactValues: false, cache: false })
    const compact = await openAuthStore({ redis: null, database, cache: false })
    const value = { public: Buffer.alloc(32, 1), private: Buffer.alloc(32, 2), note: 'x' }
    await text.setKeys('forms', { 'pre-key': { 1: value } })
    await compact.setKeys('forms', { 'pre-key': { 2: value } })
    for (const s of [text, compact]) expect(await s.getKeys('forms', 'pre-key', ['1', '2'])).toEqual({ 1: value, 2: value })
    const sizes = Object.fromEntries((await compact.describeSession('forms')).types.map((t) => [t.type, t.bytes]))
    expect(sizes['pre-key']).toBeLessThan(2 * Buffer.byteLength(encodeValue(value)))
    await Promise.all([text.close(), compact.close()])
  })
})
