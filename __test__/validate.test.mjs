// wellFormed: lone UTF-16 surrogates are refused before they reach napi (which would turn them
// into U+FFFD and make two different strings share storage).
import { createRequire } from 'node:module'

import { afterEach, describe, expect, it } from 'vitest'

// Both through Node's require, so validate.js and this file share one errors.js (and one
// WaAuthStoreError class for instanceof).
const require = createRequire(import.meta.url)
const { WaAuthStoreError } = require('../lib/errors.js')
const { loneSurrogateIndex, wellFormed } = require('../lib/validate.js')

const WELL_FORMED = ['', 'session-123', 'héllo wörld', '\u{1F600}', 'a\u{1F600}b\u{10FFFF}', '\uD7FF\uE000\uFFFD\uFFFF', '\uD800\uDC00', '\uDBFF\uDFFF']

/** [string, index of its first lone surrogate] */
const ILL_FORMED = [
  ['\uD800', 0],
  ['\uDC00', 0],
  ['abc\uD83D', 3],
  ['\uDE00abc', 0],
  ['a\uD800b', 1],
  ['a\uDFFFb', 1],
  ['\uDC00\uD800', 0], // a low then a high surrogate: a reversed pair, both lone
  ['\uD83D\uD83D\uDE00', 0], // a high surrogate, then a valid pair
  ['\uD83D\uDE00\uDE00', 2], // a valid pair, then a low surrogate
  ['ok\u{1F600}\uD800', 4],
]

/** The first lone surrogate, found the slow obvious way. */
function naiveIndex(s) {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c >= 0xd800 && c <= 0xdbff) {
      const n = i + 1 < s.length ? s.charCodeAt(i + 1) : -1
      if (n >= 0xdc00 && n <= 0xdfff) i++
      else return i
    } else if (c >= 0xdc00 && c <= 0xdfff) return i
  }
  return -1
}

function thrown(fn) {
  try {
    fn()
  } catch (err) {
    return err
  }
  throw new Error('expected a throw')
}

const nativeIsWellFormed = Object.getOwnPropertyDescriptor(String.prototype, 'isWellFormed')

/** Runs `fn` once with String.prototype.isWellFormed (when the runtime has it) and once without. */
function bothPaths(fn) {
  fn('native')
  delete String.prototype.isWellFormed
  try {
    expect(typeof ''.isWellFormed).toBe('undefined')
    fn('regex fallback')
  } finally {
    if (nativeIsWellFormed) Object.defineProperty(String.prototype, 'isWellFormed', nativeIsWellFormed)
  }
}

describe('wellFormed', () => {
  afterEach(() => {
    if (nativeIsWellFormed) expect(Object.getOwnPropertyDescriptor(String.prototype, 'isWellFormed')).toEqual(nativeIsWellFormed)
  })

  it('returns well-formed strings (surrogate pairs included) unchanged', () => {
    bothPaths((path) => {
      for (const s of WELL_FORMED) expect(wellFormed(s, 'session id'), `${path}: ${JSON.stringify(s)}`).toBe(s)
    })
  })

  it('passes values that are not strings through untouched', () => {
    const obj = {}
    for (const v of [undefined, null, 42, obj, ['\uD800']]) expect(wellFormed(v, 'key id')).toBe(v)
  })

  it('throws ERR_INVALID_SESSION_ID for a session id with a lone surrogate', () => {
    bothPaths((path) => {
      const err = thrown(() => wellFormed('user-\uD800', 'session id'))
      expect(err, path).toBeInstanceOf(WaAuthStoreError)
      expect(err.name).toBe('WaAuthStoreError')
      expect(err.code).toBe('ERR_INVALID_SESSION_ID')
    })
  })

  it('throws ERR_INVALID_ARGUMENT for any other argument', () => {
    bothPaths((path) => {
      for (const what of ['key id', 'key type', 'keyPrefix', undefined]) {
        const err = thrown(() => wellFormed('\uDC00x', what))
        expect(err, `${path}: ${what}`).toBeInstanceOf(WaAuthStoreError)
        expect(err.code).toBe('ERR_INVALID_ARGUMENT')
      }
    })
  })

  it('names the argument and the code unit index, never the string itself', () => {
    bothPaths((path) => {
      for (const [s, index] of ILL_FORMED) {
        const secret = `top-secret-${s}-tail`
        const at = 'top-secret-'.length + index
        const err = thrown(() => wellFormed(secret, 'session id'))
        expect(err.message, path).toContain('session id')
        expect(err.message).toContain(`index ${at}`)
        expect(err.message).not.toContain('top-secret')
        expect(err.message).not.toContain('tail')
        expect(err.message).not.toMatch(/[\uD800-\uDFFF]/)
      }
      expect(thrown(() => wellFormed('\uD800')).message).toContain('argument')
    })
  })

  it('loneSurrogateIndex finds the first lone surrogate', () => {
    for (const s of WELL_FORMED) expect(loneSurrogateIndex(s)).toBe(-1)
    for (const [s, index] of ILL_FORMED) expect(loneSurrogateIndex(s), JSON.stringify(s)).toBe(index)
  })

  it('agrees with isWellFormed and a naive scan on random code unit sequences', () => {
    // Units drawn mostly from around the surrogate ranges, so pairs, lone halves and reversed
    // pairs all come up often.
    const pool = [0x41, 0xd7ff, 0xd800, 0xd83d, 0xdbff, 0xdc00, 0xde00, 0xdfff, 0xe000, 0xfffd]
    let seed = 12345
    const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32)
    for (let n = 0; n < 3000; n++) {
      const len = Math.floor(rand() * 8)
      const s = String.fromCharCode(...Array.from({ length: len }, () => pool[Math.floor(rand() * pool.length)]))
      const index = naiveIndex(s)
      expect(loneSurrogateIndex(s), JSON.stringify(s)).toBe(index)
      if (typeof s.isWellFormed === 'function') expect(s.isWellFormed()).toBe(index === -1)
      bothPaths(() => {
        if (index === -1) expect(wellFormed(s, 'key id')).toBe(s)
        else expect(thrown(() => wellFormed(s, 'key id')).message).toContain(`index ${index}`)
      })
    }
  })

  it('two strings napi would both map to U+FFFD are told apart and refused', () => {
    const a = 'session\uD800'
    const b = 'session\uDBFF'
    expect(a).not.toBe(b)
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true) // what the lossy conversion does
    expect(() => wellFormed(a, 'session id')).toThrow(WaAuthStoreError)
    expect(() => wellFormed(b, 'session id')).toThrow(WaAuthStoreError)
    expect(wellFormed('session\uFFFD', 'session id')).toBe('session\uFFFD')
  })
})
