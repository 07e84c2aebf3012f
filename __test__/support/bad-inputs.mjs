// The bad-input table run by __test__/bad-input.test.mjs on every backend combination.
//
// Each case: { name, expect, run(t, scratch), after?(t, scratch), needs? }
// - expect: an ERR_* code, 'valid', an array of acceptable outcomes, or a function of the
//   configuration ({ redis, database }) returning one of those.
// - run: drives the public API once. For a rejection case the harness checks the error (a
//   WaAuthStoreError, the expected code, no secret in any rendering of it); `after` then checks
//   that nothing was written. For a 'valid' case, run itself checks the round trip and throws a
//   Mismatch when the value did not come back exactly.
// - needs: services that must be reachable ('redis', 'postgres', 'mysql'), whatever the
//   configuration under test.
//
// The context `t` (built by the test file) offers:
//   t.cfg, t.store (the shared store of the configuration), t.uid(label) (a fresh session id of
//   this run, deleted at the end), t.reg(sid) (delete this id at the end too), t.keep(sid) (delete
//   it at the end even when the case rejected as expected and wrote nothing), t.track(x) (closed,
//   stopped or disconnected after the case), t.cheap(options) (a new store with the
//   configuration's tier shape, SQL on sqlite::memory:), t.real(options) (a new store on the
//   configuration's own backends), t.tiers() (adapters of that cheap shape), t.services, t.redisAdapter()
//   (a connected adapter on the Redis service), t.withEnv(fn) (REDIS_URL unset, DATABASE_URL =
//   sqlite::memory: while fn runs, so a fallback never touches the disk), t.expectKeys(sid, want),
//   t.expectCreds(sid, want), t.nothingStored(sid, types), t.canary ({ sid, twin }), t.secret
//   (bytes that must never show up in an error).

import * as baileys from 'baileys'
import {
  BaileysAuthStore,
  BaileysOrmAdapter,
  BaileysRedisAdapter,
  BufferJSON,
  RedisMemoryManager,
  decodeValue,
  encodeValue,
  openAuthStore,
  useBaileysAuthState,
} from '../../index.js'

export const PASSWORD = 'S3cretPw'
export const VALID = 'valid'
const INV = 'ERR_INVALID_ARGUMENT'
const SID = 'ERR_INVALID_SESSION_ID'
const CONFIG = 'ERR_CONFIG'
const REDIS = 'ERR_REDIS'
const DB = 'ERR_DATABASE'
const CLOSED = 'ERR_STORE_CLOSED'
const CORRUPT = 'ERR_CORRUPT_VALUE'
const NO_BAILEYS = 'ERR_BAILEYS_NOT_FOUND'

/** A valid input that did not come back exactly. */
export class Mismatch extends Error {
  constructor(message) {
    super(message)
    this.name = 'Mismatch'
  }
}

/** Readable, ASCII-only rendering of a value for failure messages. */
export function show(v) {
  if (typeof v === 'bigint') return `${v}n`
  if (typeof v === 'symbol' || typeof v === 'function' || v === undefined) return String(v)
  if (Buffer.isBuffer(v)) return `<Buffer ${v.length} bytes>`
  let s
  try {
    s = JSON.stringify(v)
  } catch {
    s = Object.prototype.toString.call(v)
  }
  s = String(s).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
  return s.length > 90 ? `${s.slice(0, 90)}...` : s
}

function kind(v) {
  if (v === null) return 'null'
  if (Buffer.isBuffer(v)) return 'a Buffer'
  if (v instanceof Uint8Array) return 'a Uint8Array'
  if (Array.isArray(v)) return 'an array'
  return typeof v
}

/**
 * Exact equality: Buffers byte-equal (and Buffers, a Uint8Array comes back as a Buffer as in
 * Baileys' BufferJSON), arrays element-wise, plain objects with the same keys in the same order
 * and Object.prototype as prototype, primitives with Object.is.
 */
export function exact(got, want, path = 'value') {
  if (want instanceof Uint8Array) {
    if (!Buffer.isBuffer(got)) throw new Mismatch(`${path}: expected a Buffer of ${want.length} bytes, got ${kind(got)} ${show(got)}`)
    if (!Buffer.from(want.buffer, want.byteOffset, want.byteLength).equals(got)) {
      throw new Mismatch(`${path}: bytes differ (${got.length} bytes back, ${want.length} written)`)
    }
    return
  }
  if (Array.isArray(want)) {
    if (!Array.isArray(got)) throw new Mismatch(`${path}: expected an array, got ${kind(got)} ${show(got)}`)
    if (got.length !== want.length) throw new Mismatch(`${path}: expected ${want.length} elements, got ${got.length}`)
    for (let i = 0; i < want.length; i++) exact(got[i], want[i], `${path}[${i}]`)
    return
  }
  if (want !== null && typeof want === 'object') {
    if (got === null || typeof got !== 'object' || Array.isArray(got) || got instanceof Uint8Array) {
      throw new Mismatch(`${path}: expected an object, got ${kind(got)} ${show(got)}`)
    }
    if (Object.getPrototypeOf(got) !== Object.prototype) throw new Mismatch(`${path}: the object's prototype is not Object.prototype`)
    // JSON drops undefined fields (Baileys' creds have some): they are absent, not different.
    const gk = Object.keys(got)
    const wk = Object.keys(want).filter((k) => want[k] !== undefined)
    if (gk.join('\0') !== wk.join('\0')) throw new Mismatch(`${path}: keys ${show(gk)} instead of ${show(wk)}`)
    for (const k of wk) exact(got[k], want[k], `${path}.${k}`)
    return
  }
  if (!Object.is(got, want)) throw new Mismatch(`${path}: expected ${show(want)}, got ${kind(got)} ${show(got)}`)
}

/** An object with one own enumerable property, whatever its name (`__proto__` included). */
export function own(...pairs) {
  const o = {}
  for (let i = 0; i < pairs.length; i += 2) {
    Object.defineProperty(o, pairs[i], { value: pairs[i + 1], enumerable: true, writable: true, configurable: true })
  }
  return o
}

const pad = (prefix, bytes, ch = 'x') => prefix + ch.repeat(bytes - Buffer.byteLength(prefix))
/** prefix + as many `ch` as fit in `bytes`, then 'x' up to exactly `bytes`. */
function fill(prefix, bytes, ch) {
  let s = prefix
  while (Buffer.byteLength(s + ch) <= bytes) s += ch
  return pad(s, bytes)
}
const rnd = (n) => {
  const b = Buffer.alloc(n)
  for (let i = 0; i < n; i++) b[i] = (Math.random() * 256) | 0
  return b
}
/** A fresh id with a lone surrogate; registered so that what napi makes of it is deleted too. */
const sur = (t, label, tail) => {
  const s = t.uid(label) + tail
  t.reg(s.toWellFormed())
  return s
}

// ---------------------------------------------------------------------------------------------
// Session ids that must be refused (README, Errors: "empty, longer than 255 bytes, a control
// character, or not a string"; lone surrogates because napi turns them into U+FFFD, so two
// different JS strings would share one session).
const BAD_SESSION_IDS = [
  ['a number', () => 123],
  ['NaN', () => NaN],
  ['an object', () => ({ id: 'x' })],
  ['an array', () => ['x']],
  ['null', () => null],
  ['undefined', () => undefined],
  ['a symbol', () => Symbol('sid')],
  ['a bigint', () => 1n],
  ['a function', () => () => 'x'],
  ['a Buffer', () => Buffer.from('session')],
  ['a boolean', () => true],
  ['a String object', () => new String('session')],
  ['an empty string', () => ''],
  ['256 ASCII bytes', () => 'x'.repeat(256)],
  ['256 bytes of 2-byte UTF-8', () => '\u00e9'.repeat(128)],
  ['256 bytes, a 2-byte char crossing the 255-byte limit', (t) => pad(t.uid('b'), 254) + '\u00e9'],
  ['256 bytes, a 4-byte char crossing the 255-byte limit', (t) => pad(t.uid('b'), 252) + '\u{1F600}'],
  ['a newline', (t) => t.uid('c') + '\n'],
  ['a tab', (t) => t.uid('c') + '\t'],
  ['a NUL byte', (t) => t.uid('c') + '\0'],
  ['DEL U+007F', (t) => t.uid('c') + '\x7f'],
  ['the C1 control U+0085', (t) => t.uid('c') + '\u0085'],
  ['an ESC in the middle', (t) => `a\x1b${t.uid('c')}`],
  ['a lone high surrogate', (t) => sur(t, 's', '\uD800')],
  ['a lone low surrogate between letters', (t) => sur(t, 's', 'a\uDC00b')],
  ['two high surrogates', (t) => sur(t, 's', '\uDBFF\uDBFF')],
  ['a reversed surrogate pair', (t) => sur(t, 's', '\uDFFF\uD800')],
]

// Every store method that takes a session id, with otherwise valid arguments.
const SESSION_METHODS = [
  ['getCreds', (t, sid) => t.store.getCreds(sid)],
  ['saveCreds', (t, sid) => t.store.saveCreds(sid, { creds: { me: { id: '1@s.whatsapp.net' } }, keys: { session: { a: { v: 1 } } } })],
  ['getKeys', (t, sid) => t.store.getKeys(sid, 'session', ['a'])],
  ['setKeys', (t, sid) => t.store.setKeys(sid, { session: { a: { v: 1 } } })],
  ['deleteKeys', (t, sid) => t.store.deleteKeys(sid, [{ type: 'session', id: 'a' }])],
  ['clearSession', (t, sid) => t.store.clearSession(sid)],
  ['deleteCreds', (t, sid) => t.store.deleteCreds(sid)],
  ['listIds', (t, sid) => t.store.listIds(sid, 'session')],
  ['describeSession', (t, sid) => t.store.describeSession(sid)],
  ['flush', (t, sid) => t.store.flush(sid)],
]

// Key type names that must be refused (README: ERR_INVALID_ARGUMENT, "bad input"; the core
// allows 1..128 bytes without control characters).
const BAD_TYPES_NON_STRING = [
  ['a number', () => 5],
  ['null', () => null],
  ['undefined', () => undefined],
  ['an object', () => ({})],
  ['an array', () => ['session']],
  ['a symbol', () => Symbol('type')],
  ['a Buffer', () => Buffer.from('session')],
]
const BAD_TYPES_STRING = [
  ['an empty string', () => ''],
  ['129 bytes', () => 'x'.repeat(129)],
  ['129 bytes, a 2-byte char crossing the 128-byte limit', () => 'x'.repeat(127) + '\u00e9'],
  ['a newline', () => 'session\n'],
  ['a NUL byte', () => 'session\0'],
  ['the C1 control U+0085', () => 'session\u0085'],
  ['a lone high surrogate', () => 'session\uD800'],
  ['a lone low surrogate', () => '\uDC00session'],
]

// Key ids that must be refused: NUL (README), more than 1024 bytes, lone surrogates.
const BAD_KEY_IDS = [
  ['a NUL byte', () => 'a\0b'],
  ['1025 bytes', () => 'x'.repeat(1025)],
  ['1025 bytes, a 2-byte char crossing the 1024-byte limit', () => 'x'.repeat(1023) + '\u00e9'],
  ['1028 bytes of 4-byte chars', () => 'a' + '\u{1F600}'.repeat(256)],
  ['a lone high surrogate', () => 'id\uD800'],
  ['a lone low surrogate', () => '\uDC00'],
  ['a reversed surrogate pair', () => '\uDE00\uD83D'],
]

// Values JSON cannot hold: refused with ERR_INVALID_ARGUMENT, nothing written.
const UNSERIALISABLE = [
  ['a BigInt', () => 10n],
  ['a BigInt nested in an object', () => ({ a: { b: 1n } })],
  ['a BigInt in an array', () => [1, 2n]],
  ['a circular object', () => {
    const o = { a: 1 }
    o.self = o
    return o
  }],
  ['a circular array', () => {
    const a = [1]
    a.push(a)
    return a
  }],
  ['a cycle through nested objects holding a Buffer', () => {
    const o = { k: Buffer.from('x') }
    o.inner = { back: o }
    return o
  }],
  ['a function at the top level', () => () => 1],
  ['a symbol at the top level', () => Symbol('v')],
  ['a toJSON returning undefined', () => ({ toJSON: () => undefined })],
  ['a toJSON that throws', () => ({ toJSON() { throw new Error('toJSON exploded') } })],
  ['a getter that throws', () => ({ get a() { throw new Error('getter exploded') } })],
  ['a nested getter that throws', () => ({ x: [{ get a() { throw new Error('nested getter exploded') } }] })],
  ['a Proxy whose ownKeys trap throws', () => new Proxy({}, { ownKeys() { throw new Error('ownKeys exploded') } })],
  ['a toJSON returning a BigInt', () => ({ toJSON: () => 5n })],
]

const REFUSED = '127.0.0.1:1' // nothing listens there: connection refused at once
// A refused SQL connection is "unreachable" (README: ERR_DATABASE). Until the core reports it at
// once, the pool retries until timeoutMs and says ERR_TIMEOUT: both are accepted for now.
const DB_REFUSED = [DB, 'ERR_TIMEOUT']

function liveRedisHostPort(t) {
  const u = new URL(t.services.redis)
  return `${u.hostname}:${u.port || 6379}`
}

/**
 * useBaileysAuthState(store, sid, options), its handle closed after the case. It takes the
 * session's lease, whose Redis keys stay until the session is purged even when the case then
 * writes nothing: the id is deleted at the end whatever the outcome.
 */
async function authState(t, store, sid, options) {
  t.keep(sid)
  return t.track(await useBaileysAuthState(store, sid, options))
}

/** Connects an adapter (and disconnects it after the case). */
async function connect(t, adapter) {
  t.track(adapter)
  await adapter.connect()
}

/** The memory manager on the Redis service, stopped after the case. */
async function startManager(t, options, ...conn) {
  const mm = t.track(new RedisMemoryManager(conn.length ? conn[0] : await t.redisAdapter(), options))
  await mm.start()
  return mm
}
// Options that make a check harmless on the shared Redis should one run: nothing is over budget,
// nothing is idle.
const HARMLESS = { maxMemoryBytes: 2 ** 50, ttlInactivity: 10 * 365 * 86400, logger: { warn() {} } }

export function buildCases() {
  const cases = []
  const add = (name, expect, run, extra = {}) => cases.push({ name, expect, run, ...extra })

  // ----------------------------------------------------------------- session ids, every method
  for (const [method, call] of SESSION_METHODS) {
    for (const [label, make] of BAD_SESSION_IDS) {
      add(`${method}: session id is ${label}`, SID, (t) => call(t, make(t)))
    }
  }
  // An empty write or read is no excuse to accept an id that would be refused otherwise.
  for (const [label, make] of [['an empty string', () => ''], ['a lone high surrogate', (t) => sur(t, 's', '\uD800')], ['a number', () => 5], ['256 ASCII bytes', () => 'x'.repeat(256)], ['a newline', (t) => t.uid('e') + '\n']]) {
    add(`setKeys with no records: session id is ${label}`, SID, (t) => t.store.setKeys(make(t), {}))
    add(`getKeys of no ids: session id is ${label}`, SID, (t) => t.store.getKeys(make(t), 'session', []))
    add(`saveCreds with nothing to save: session id is ${label}`, SID, (t) => t.store.saveCreds(make(t), {}))
  }

  // Valid but unusual session ids: each must round-trip creds and a key, through every reader.
  const validSid = (label, make) =>
    add(`session id is ${label}: valid, round-trips`, VALID, async (t) => {
      const sid = make(t)
      t.reg(sid)
      const creds = { me: { id: '5511@s.whatsapp.net', name: label }, key: rnd(32) }
      const keys = { session: { a: { v: sid } } }
      await t.store.saveCreds(sid, { creds, keys })
      await t.expectCreds(sid, creds)
      await t.expectKeys(sid, keys)
    })
  validSid('255 ASCII bytes, the limit', (t) => pad(t.uid('v'), 255))
  validSid('255 bytes ending in 2-byte chars', (t) => fill(t.uid('v'), 255, '\u00e9'))
  validSid('255 bytes ending in a 4-byte char', (t) => pad(t.uid('v'), 251) + '\u{1F600}')
  validSid('Redis pattern and hash-tag characters', (t) => `${t.uid('v')}{X}*?[]:\\ %`)
  validSid('a valid surrogate pair (emoji)', (t) => `${t.uid('v')}\u{1F600}`)
  validSid('U+FFFD itself', (t) => `${t.uid('v')}\uFFFD`)
  validSid('U+2028, a separator and not a control character', (t) => `${t.uid('v')}\u2028`)
  validSid('a zero-width joiner and a BOM (format characters, not controls)', (t) => `${t.uid('v')}\u200D\uFEFF`)
  validSid('numeric-looking', (t) => `${t.uid('v')}-1e3`)

  // Ids that differ must never share storage, on any tier (MySQL collations, escaping).
  const distinctSids = (label, suffixA, suffixB) =>
    add(`session ids differing by ${label} stay apart: valid`, VALID, async (t) => {
      const base = t.uid('d')
      const [a, b] = [base + suffixA, base + suffixB]
      t.reg(a)
      t.reg(b)
      await t.store.saveCreds(a, { creds: { who: 'a' }, keys: { session: { x: { who: 'a' } } } })
      await t.store.saveCreds(b, { creds: { who: 'b' }, keys: { session: { x: { who: 'b' } } } })
      await t.expectCreds(a, { who: 'a' })
      await t.expectCreds(b, { who: 'b' })
      await t.expectKeys(a, { session: { x: { who: 'a' } } })
      await t.expectKeys(b, { session: { x: { who: 'b' } } })
    })
  distinctSids('letter case', 'Abc', 'abc')
  distinctSids('a trailing space', 'abc', 'abc ')
  distinctSids('Unicode normalisation (NFC vs NFD)', '\u00e9', 'e\u0301')
  distinctSids("'{' vs its escape '%7B'", '{', '%7B')
  distinctSids("':' vs its escape '%3A'", ':', '%3A')

  // ------------------------------------------------------------------------- key type names
  for (const [label, make] of [...BAD_TYPES_NON_STRING, ...BAD_TYPES_STRING]) {
    add(`getKeys: type is ${label}`, INV, (t) => t.store.getKeys(t.uid('ty'), make(), ['a']))
    add(`listIds: type is ${label}`, INV, (t) => t.store.listIds(t.uid('ty'), make()))
    add(`deleteKeys: { type } is ${label}`, INV, (t) => t.store.deleteKeys(t.uid('ty'), [{ type: make(), id: 'a' }]))
  }
  for (const [label, make] of BAD_TYPES_STRING) {
    add(`setKeys: type is ${label}, next to a valid type: nothing written`, INV, (t, s) => {
      s.sid = t.uid('ty')
      return t.store.setKeys(s.sid, { session: { ok: { v: t.secret } }, ...own(make(), { a: { v: 1 } }) })
    }, { after: (t, s) => t.nothingStored(s.sid, ['session']) })
  }
  add('getKeys of no ids: type is an empty string', INV, (t) => t.store.getKeys(t.uid('ty'), '', []))
  add('getKeys of no ids: type is a number', INV, (t) => t.store.getKeys(t.uid('ty'), 5, []))
  add('getKeys of no ids: type is 129 bytes', INV, (t) => t.store.getKeys(t.uid('ty'), 'x'.repeat(129), []))
  add('getKeys of no ids: type holds a newline', INV, (t) => t.store.getKeys(t.uid('ty'), 'session\n', []))
  add('setKeys with no records: type holds a NUL', INV, (t) => t.store.setKeys(t.uid('ty'), own('session\0', {})))

  const validType = (label, type) =>
    add(`type is ${label}: valid, round-trips`, VALID, async (t) => {
      const sid = t.uid('vt')
      const data = own(type, { a: { v: 1, b: rnd(8) } })
      await t.store.setKeys(sid, data)
      await t.expectKeys(sid, data)
    })
  validType('128 bytes, the limit', 'x'.repeat(128))
  validType('128 bytes of 2-byte chars', '\u00e9'.repeat(64))
  validType('128 bytes of 4-byte chars', '\u{1F600}'.repeat(32))
  validType('made of escaped characters', '%{}*?[]\\: ')
  validType("'__proto__'", '__proto__')
  validType("'constructor'", 'constructor')
  validType("'toString'", 'toString')
  validType("'hasOwnProperty'", 'hasOwnProperty')
  validType('a known type plus a suffix', 'pre-key-extra')
  add('types differing by letter case stay apart: valid', VALID, async (t) => {
    const sid = t.uid('vt')
    const data = { session: { a: { who: 'lower' } }, Session: { a: { who: 'upper' } } }
    await t.store.setKeys(sid, data)
    await t.expectKeys(sid, data)
  })
  add("types '{' and '%7B' stay apart: valid", VALID, async (t) => {
    const sid = t.uid('vt')
    const data = { '{': { a: { who: 'brace' } }, '%7B': { a: { who: 'escape' } } }
    await t.store.setKeys(sid, data)
    await t.expectKeys(sid, data)
  })

  // ---------------------------------------------------------------------------------- key ids
  for (const [label, make] of BAD_KEY_IDS) {
    add(`setKeys: key id is ${label}, next to a valid id: nothing written`, INV, (t, s) => {
      s.sid = t.uid('id')
      return t.store.setKeys(s.sid, { session: { ok: { v: t.secret }, ...own(make(), { v: 1 }) } })
    }, { after: (t, s) => t.nothingStored(s.sid, ['session']) })
    add(`getKeys: key id is ${label}`, INV, (t) => t.store.getKeys(t.uid('id'), 'session', ['ok', make()]))
    add(`deleteKeys: { id } is ${label}`, INV, (t) => t.store.deleteKeys(t.uid('id'), [{ type: 'session', id: make() }]))
  }
  const badIds = [
    ['a number', () => [1]],
    ['null', () => [null]],
    ['undefined', () => [undefined]],
    ['an object', () => [{}]],
    ['a symbol', () => [Symbol('id')]],
    ['a bigint', () => [1n]],
    ['a boolean', () => [true]],
    ['a hole (sparse array)', () => [, 'a']], // eslint-disable-line no-sparse-arrays
    ['a string next to a number', () => ['a', 5]],
  ]
  for (const [label, make] of badIds) add(`getKeys: an id is ${label}`, INV, (t) => t.store.getKeys(t.uid('id'), 'session', make()))
  // napi-rs renders the offending JS value into its message: it must not carry stored bytes or
  // a password out.
  add('getKeys: an id is a Buffer of stored key bytes (must not be echoed)', INV, (t) => t.store.getKeys(t.uid('id'), 'pre-key', [t.secret]))
  add('getKeys: an id is an object holding a password (must not be echoed)', INV, (t) => t.store.getKeys(t.uid('id'), 'session', [{ password: PASSWORD }]))
  const badIdLists = [
    ['a string', () => 'a'],
    ['null', () => null],
    ['undefined', () => undefined],
    ['a number', () => 5],
    ['an array-like object', () => ({ 0: 'a', length: 1 })],
    ['a Set', () => new Set(['a'])],
    ['a Buffer', () => Buffer.from('a')],
  ]
  for (const [label, make] of badIdLists) add(`getKeys: ids is ${label}`, INV, (t) => t.store.getKeys(t.uid('id'), 'session', make()))

  const validId = (label, id) =>
    add(`key id is ${label}: valid, round-trips`, VALID, async (t) => {
      const sid = t.uid('vi')
      const data = { session: own(id, { v: rnd(4) }) }
      await t.store.setKeys(sid, data)
      await t.expectKeys(sid, data)
    })
  // The core allows an empty id (only NUL and length are refused); the seed's 'pre-key-' names it.
  validId('an empty string', '')
  validId('1024 bytes, the limit', 'x'.repeat(1024))
  validId('1024 bytes of 2-byte chars', '\u00e9'.repeat(512))
  validId('1024 bytes of 4-byte chars', '\u{1F600}'.repeat(256))
  // README refuses NUL only: other control characters are legal id bytes.
  validId('made of control characters other than NUL', '\n\t\r\x1b\x7f')
  validId("'__proto__'", '__proto__')
  validId("'constructor'", 'constructor')
  validId("'toString'", 'toString')
  validId("'hasOwnProperty'", 'hasOwnProperty')
  validId('U+FFFD', 'k\uFFFD')
  validId('a Signal address with dots, colons and at-signs', '5511999999999:12@s.whatsapp.net.0')
  const distinctIds = (label, a, b) =>
    add(`key ids differing by ${label} stay apart: valid`, VALID, async (t) => {
      const sid = t.uid('vi')
      const data = { session: own(a, { who: 'a' }, b, { who: 'b' }) }
      await t.store.setKeys(sid, data)
      await t.expectKeys(sid, data)
    })
  distinctIds('letter case', 'Abc', 'abc')
  distinctIds('a trailing space', 'abc', 'abc ')
  distinctIds('Unicode normalisation (NFC vs NFD)', '\u00e9', 'e\u0301')
  add('getKeys with duplicate ids: valid, one entry', VALID, async (t) => {
    const sid = t.uid('vi')
    await t.store.setKeys(sid, { session: { a: { v: 1 } } })
    for (const store of t.readerStores()) exact(await store.getKeys(sid, 'session', ['a', 'a', 'a']), { a: { v: 1 } }, 'getKeys')
  })
  // Missing ids are left out: a result must not claim inherited names as present records.
  add('getKeys of missing prototype-named ids: valid, none reported', VALID, async (t) => {
    const sid = t.uid('vi')
    await t.store.setKeys(sid, { session: { other: 1 } })
    for (const store of t.readerStores()) exact(await store.getKeys(sid, 'session', ['constructor', 'toString', '__proto__']), {}, 'getKeys')
  })
  add('812 pre-keys (a pairing burst) in one set and one get: valid, round-trip', VALID, async (t) => {
    const sid = t.uid('vi')
    const keys = {}
    for (let i = 0; i < 812; i++) keys[i] = { public: rnd(32), private: rnd(32) }
    await t.store.setKeys(sid, { 'pre-key': keys })
    await t.expectKeys(sid, { 'pre-key': keys })
  })

  // ----------------------------------------------------------------- values that cannot be stored
  for (const [label, make] of UNSERIALISABLE) {
    add(`setKeys: a value is ${label}, next to a valid record: nothing written`, INV, (t, s) => {
      s.sid = t.uid('uv')
      return t.store.setKeys(s.sid, { session: { ok: { v: t.secret } }, 'pre-key': { bad: make() } })
    }, { after: (t, s) => t.nothingStored(s.sid, ['session', 'pre-key']) })
    add(`saveCreds: creds are ${label}, with valid keys: nothing written`, INV, (t, s) => {
      s.sid = t.uid('uc')
      return t.store.saveCreds(s.sid, { creds: make(), keys: { session: { ok: { v: t.secret } } } })
    }, { after: (t, s) => t.nothingStored(s.sid, ['session']) })
    add(`saveCreds: valid creds, a key value is ${label}: nothing written`, INV, (t, s) => {
      s.sid = t.uid('uk')
      return t.store.saveCreds(s.sid, { creds: { ok: t.secret }, keys: { session: { bad: make() } } })
    }, { after: (t, s) => t.nothingStored(s.sid, ['session']) })
    add(`encodeValue: ${label}`, INV, () => encodeValue(make()))
  }
  add('encodeValue: undefined', INV, () => encodeValue(undefined))

  // Containers of setKeys: { [type]: { [id]: value | null } } and nothing else.
  const badData = [
    ['a number', () => 5],
    ['a string', () => 'session'],
    ['a boolean', () => true],
    ['a function', () => () => ({})],
    ['a symbol', () => Symbol('data')],
    ['a bigint', () => 5n],
    // An array's indexes would become type names '0', '1', ...
    ['an array', () => [{ a: { v: 1 } }]],
    ['a Buffer', () => Buffer.from('data')],
    ['a Map (its entries are not own properties)', () => new Map([['session', { a: 1 }]])],
    ['an object whose type getter throws', () => ({ get session() { throw new Error('type getter exploded') } })],
    ['a Proxy whose ownKeys trap throws', () => new Proxy({}, { ownKeys() { throw new Error('ownKeys exploded') } })],
  ]
  for (const [label, make] of badData) {
    add(`setKeys: data is ${label}`, INV, (t, s) => {
      s.sid = t.uid('bd')
      return t.store.setKeys(s.sid, make())
    }, { after: (t, s) => t.nothingStored(s.sid, ['session', '0']) })
  }
  const badEntries = [
    ['a number', () => 5],
    ['a string', () => 'value'],
    ['a boolean', () => true],
    ['a function', () => () => 1],
    ['an array (indexes would become ids)', () => [{ v: 1 }]],
    // The classic mistake: a Buffer where { [id]: Buffer } belongs, its bytes would become ids.
    ['a Buffer', () => Buffer.from([1, 2, 3])],
    ['a Map', () => new Map([['a', { v: 1 }]])],
    ['an object whose id getter throws', () => ({ get a() { throw new Error('id getter exploded') } })],
    ['a Proxy whose get trap throws', () => new Proxy({ a: 1 }, { get() { throw new Error('get trap exploded') } })],
  ]
  for (const [label, make] of badEntries) {
    add(`setKeys: the records of a type are ${label}, next to a valid type: nothing written`, INV, (t, s) => {
      s.sid = t.uid('be')
      return t.store.setKeys(s.sid, { 'pre-key': { ok: { v: t.secret } }, 'sender-key': make() })
    }, { after: (t, s) => t.nothingStored(s.sid, ['pre-key', 'sender-key']) })
  }
  const emptyWrite = (label, data) =>
    add(`setKeys: data is ${label}: valid, an empty write`, VALID, async (t) => {
      const sid = t.uid('ew')
      await t.store.setKeys(sid, data)
      await t.nothingStored(sid, ['session'])
    })
  emptyWrite('undefined', undefined)
  emptyWrite('null', null)
  emptyWrite('{}', {})
  emptyWrite('{ session: null }', { session: null })
  emptyWrite('{ session: {} }', { session: {} })

  // ----------------------------------------------------------------- values that are valid
  const validValue = (label, value, want = value) =>
    add(`value is ${label}: valid, round-trips`, VALID, async (t) => {
      const sid = t.uid('vv')
      const v = typeof value === 'function' ? value() : value
      const w = typeof want === 'function' ? (want === value ? v : want(v)) : want
      await t.store.setKeys(sid, { 'bi-value': { v } })
      await t.expectKeys(sid, { 'bi-value': { v: w } })
    })
  // Falsy values are records, not "missing".
  validValue('false', false)
  validValue('0', 0)
  validValue('an empty string', '')
  validValue('an empty array', [])
  validValue('an empty object', {})
  validValue('an array holding null', [null, 1, null])
  validValue('integers at varint boundaries', [0, 1, -1, 127, 128, 255, 256, 16383, 16384, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 53 - 1, -(2 ** 53 - 1)])
  validValue('integers beyond 2^53', [2 ** 53 + 2, 2 ** 63, 2 ** 64, -(2 ** 63), 1e21, 1e300])
  validValue('floats', [0.1, 1.5, -0.5, 1e-7, 5e-324, Number.MAX_VALUE, -Number.MIN_VALUE])
  validValue('a string with NUL and control characters', 'a\0b\x01c\n\x7f')
  validValue('a string starting with the compact-form header bytes', '\u0001\u0002x')
  validValue('a string holding a lone high surrogate', 'a\uD800b')
  validValue('a string holding a lone low surrogate', '\uDC00')
  validValue('an object key holding a lone surrogate', () => own('k\uD800', 1))
  validValue('base64-looking strings, canonical and not', ['AAAA', 'aGk=', 'aGl=', 'AA==', 'AA', 'A', '====', 'a-_b', 'AAAA\n', rnd(33).toString('base64')])
  validValue('numeric and keyword strings', ['0001', '1e3', '-0', 'true', 'null', 'NaN'])
  validValue('a string that spells a Buffer in JSON', '{"type":"Buffer","data":"AQID"}')
  validValue('an empty Buffer', Buffer.alloc(0))
  validValue('a one-byte Buffer 0x01 (the compact header)', Buffer.from([1]))
  validValue('a Buffer starting 0x02 0x00', Buffer.from([2, 0]))
  validValue('every byte value', () => Buffer.from(Array.from({ length: 256 }, (_, i) => i)))
  validValue('a Buffer view at an offset of a larger allocation', () => Buffer.from('hello world, and more').subarray(6, 11))
  validValue('a Uint8Array (comes back as a Buffer, as in Baileys)', () => new Uint8Array(rnd(48).buffer, 8, 16), (v) => Buffer.from(v))
  validValue('Buffers nested in arrays and objects', () => ({ a: [rnd(3), { b: rnd(0), c: [rnd(65)] }], d: rnd(32) }))
  validValue('an object with a type: Buffer field and a numeric data', { type: 'Buffer', data: 5 })
  validValue('an object with index keys that are not bytes', { 0: 'a', 1: 256 })
  validValue('an own __proto__ key (JSON.parse)', () => JSON.parse('{"__proto__":{"polluted":true},"x":1}'))
  validValue('a nested own __proto__ key', () => JSON.parse('{"a":{"__proto__":[1,2]}}'))
  validValue('constructor.prototype keys', { constructor: { prototype: { polluted: true } } })
  validValue('1,000 levels of nesting', () => {
    let v = { leaf: 1 }
    for (let i = 0; i < 1000; i++) v = { a: v }
    return v
  })
  validValue('1 MiB of random bytes', () => rnd(1024 * 1024))
  validValue('256 KiB of multi-byte text', () => '\u00e9\u{1F600}'.repeat(43690))
  validValue('an object with 2,000 keys', () => Object.fromEntries(Array.from({ length: 2000 }, (_, i) => [`k${i}`, i])))
  // JSON's own rules, as Baileys' BufferJSON applies them: nested undefined, functions and
  // symbols are dropped (Baileys' creds carry undefined fields), NaN and Infinity become null,
  // a Date its ISO string, a class instance its own fields. A demanding user gets what
  // JSON.stringify/parse with BufferJSON would give, no more, no less.
  validValue('an object with undefined, function and symbol fields (dropped)', () => ({ a: 1, u: undefined, f() {}, s: Symbol('x') }), () => ({ a: 1 }))
  validValue('an array with undefined, function and symbol slots (null)', () => [undefined, () => 1, Symbol('x')], () => [null, null, null])
  validValue('NaN and Infinity inside an object (null)', { n: NaN, i: Infinity, m: -Infinity }, { n: null, i: null, m: null })
  validValue('a Date (its ISO string)', () => ({ at: new Date(0) }), () => ({ at: '1970-01-01T00:00:00.000Z' }))
  validValue('a class instance (its own fields)', () => new (class Point { constructor() { this.x = 1; this.y = rnd(2) } })(), (v) => ({ x: 1, y: v.y }))
  validValue('an object without a prototype', () => Object.assign(Object.create(null), { a: 1 }), () => ({ a: 1 }))
  validValue('a toJSON returning an object', { toJSON: () => ({ x: 1 }) }, { x: 1 })
  // Documented leniency (README, "Also exported"): the reviver reads plain-object Uint8Arrays.
  validValue('a plain object of byte-valued index keys (read as a Buffer, documented)', { 0: 1, 1: 2 }, Buffer.from([1, 2]))
  // Accepted and then unreadable is the one outcome that must not happen: either it is refused
  // up front (nothing written) or it reads back.
  add('value is 4,000 levels of nesting: round-trips or is refused, never accepted then unreadable', [VALID, INV], async (t) => {
    let v = { leaf: 1 }
    for (let i = 0; i < 4000; i++) v = { a: v }
    const sid = t.uid('vv')
    await t.store.setKeys(sid, { 'bi-value': { v } })
    for (const store of t.readerStores()) {
      const got = await store.getKeys(sid, 'bi-value', ['v'])
      if (!got.v || !encodeValue(got.v).equals(encodeValue(v))) throw new Mismatch('the value came back different')
    }
  })
  // The limit (lib/codec.js, MAX_DEPTH): 1,024 levels are written, one more is refused.
  add('value is 1,025 levels of nesting (one beyond the limit): refused, nothing written', INV, (t, s) => {
    let v = {}
    for (let i = 1; i < 1025; i++) v = { a: v }
    s.sid = t.uid('vv')
    return t.store.setKeys(s.sid, { session: { ok: { v: t.secret } }, 'bi-value': { v } })
  }, { after: (t, s) => t.nothingStored(s.sid, ['session', 'bi-value']) })
  add('saveCreds: creds nested 2,000 levels deep: refused, nothing written', INV, (t, s) => {
    let v = { leaf: 1 }
    for (let i = 0; i < 2000; i++) v = { a: v }
    s.sid = t.uid('vv')
    return t.store.saveCreds(s.sid, { creds: v })
  }, { after: (t, s) => t.nothingStored(s.sid, []) })
  const deletes = (label, tomb) =>
    add(`setKeys: a record set to ${label} is deleted: valid`, VALID, async (t) => {
      const sid = t.uid('dl')
      await t.store.setKeys(sid, { session: { a: { v: 1 }, b: { v: 2 } } })
      await t.store.setKeys(sid, { session: { a: tomb } })
      await t.expectKeys(sid, { session: { a: undefined, b: { v: 2 } } })
    })
  deletes('null', null)
  deletes('undefined', undefined)

  // ----------------------------------------------------------------- saveCreds' own shape
  for (const [label, make] of [['null', () => null], ['a number', () => 5], ['a string', () => 'creds'], ['a boolean', () => true], ['an array', () => [{ creds: {} }]]]) {
    add(`saveCreds: the second argument is ${label}`, INV, (t, s) => {
      s.sid = t.uid('sc')
      return t.store.saveCreds(s.sid, make())
    }, { after: (t, s) => t.nothingStored(s.sid, []) })
  }
  // Creds are Baileys' AuthenticationCreds: an object. A primitive would be stored, then read back
  // as the creds of the session (and a falsy one makes useBaileysAuthState re-pair).
  for (const [label, make] of [['a number', () => 5], ['a string', () => 'creds'], ['false', () => false], ['an array', () => [1, 2]]]) {
    add(`saveCreds: creds are ${label}`, INV, (t, s) => {
      s.sid = t.uid('sc')
      return t.store.saveCreds(s.sid, { creds: make() })
    }, { after: (t, s) => t.nothingStored(s.sid, []) })
  }
  for (const [label, make] of [['a number', () => 5], ['an array', () => [{ session: {} }]], ['{ session: 5 }', () => ({ session: 5 })]]) {
    add(`saveCreds: keys are ${label}, with valid creds: nothing written`, INV, (t, s) => {
      s.sid = t.uid('sk')
      return t.store.saveCreds(s.sid, { creds: { ok: t.secret }, keys: make() })
    }, { after: (t, s) => t.nothingStored(s.sid, ['session', '0']) })
  }
  add('saveCreds: {} saves nothing: valid', VALID, async (t) => {
    const sid = t.uid('sc')
    await t.store.saveCreds(sid, {})
    await t.nothingStored(sid, [])
  })
  add('saveCreds: { creds: null } saves nothing: valid', VALID, async (t) => {
    const sid = t.uid('sc')
    await t.store.saveCreds(sid, { creds: null })
    await t.nothingStored(sid, [])
  })
  add('saveCreds: keys only, no creds: valid, keys round-trip', VALID, async (t) => {
    const sid = t.uid('sc')
    await t.store.saveCreds(sid, { keys: { session: { a: { v: 1 } } } })
    await t.expectCreds(sid, null)
    await t.expectKeys(sid, { session: { a: { v: 1 } } })
  })
  const validCreds = (label, make) =>
    add(`saveCreds: creds are ${label}: valid, round-trip`, VALID, async (t) => {
      const sid = t.uid('vc')
      const creds = make()
      await t.store.saveCreds(sid, { creds })
      await t.expectCreds(sid, creds)
    })
  validCreds('an empty object', () => ({}))
  validCreds("Baileys' initAuthCreds()", () => baileys.initAuthCreds())
  validCreds('an object with an own __proto__ key', () => JSON.parse('{"__proto__":{"polluted":true},"me":{"id":"1@s"}}'))
  validCreds('256 KiB', () => ({ blob: 'c'.repeat(256 * 1024), key: rnd(32) }))

  // ----------------------------------------------------------------- write options
  const badWriteOptions = [
    ['a number', () => 5],
    ['a string', () => 'ttl'],
    ['true', () => true],
    ['ttl NaN', () => ({ ttl: NaN })],
    ['ttl Infinity', () => ({ ttl: Infinity })],
    ['ttl -Infinity', () => ({ ttl: -Infinity })],
    ['ttl -1', () => ({ ttl: -1 })],
    ['ttl 0', () => ({ ttl: 0 })],
    ['ttl a numeric string', () => ({ ttl: '60' })],
    ['ttl a bigint', () => ({ ttl: 60n })],
    ['ttl true', () => ({ ttl: true })],
    ['ttl an array', () => ({ ttl: [60] })],
    ['ttl 1e300 seconds', () => ({ ttl: 1e300 })],
    ['syncToDatabase 1', () => ({ syncToDatabase: 1 })],
    ['syncToDatabase 0', () => ({ syncToDatabase: 0 })],
    ["syncToDatabase 'false'", () => ({ syncToDatabase: 'false' })],
    ["syncToDatabase 'true'", () => ({ syncToDatabase: 'true' })],
    ['syncToDatabase an object', () => ({ syncToDatabase: {} })],
    ['an object whose ttl getter throws', () => ({ get ttl() { throw new Error('ttl getter exploded') } })],
  ]
  for (const [label, make] of badWriteOptions) {
    add(`setKeys: options are ${label}: nothing written`, INV, (t, s) => {
      s.sid = t.uid('wo')
      return t.store.setKeys(s.sid, { session: { a: { v: t.secret } } }, make())
    }, { after: (t, s) => t.nothingStored(s.sid, ['session']) })
  }
  for (const [label, make] of badWriteOptions.filter(([l]) => ['a number', 'ttl NaN', 'ttl -1', 'ttl a numeric string', "syncToDatabase 'false'"].includes(l))) {
    add(`saveCreds: options are ${label}: nothing written`, INV, (t, s) => {
      s.sid = t.uid('wo')
      return t.store.saveCreds(s.sid, { creds: { a: t.secret } }, make())
    }, { after: (t, s) => t.nothingStored(s.sid, []) })
  }
  const redisOnly = (cfg) => Boolean(cfg.redis && !cfg.database)
  // A TTL is refused where Redis would hold the only copy (README, Tiers).
  add('setKeys: ttl 60 (refused on a Redis-only store, else valid)', (cfg) => (redisOnly(cfg) ? INV : VALID), async (t) => {
    const sid = t.uid('tt')
    await t.store.setKeys(sid, { session: { a: { v: 1 } } }, { ttl: 60 })
    await t.expectKeys(sid, { session: { a: { v: 1 } } })
  })
  add('saveCreds: ttl 60 (refused on a Redis-only store, else valid)', (cfg) => (redisOnly(cfg) ? INV : VALID), async (t) => {
    const sid = t.uid('tt')
    await t.store.saveCreds(sid, { creds: { a: 1 } }, { ttl: 60 })
    await t.expectCreds(sid, { a: 1 })
  })
  // Half a second: the Redis keys may expire during the reads, SQL still answers.
  add('setKeys: ttl 0.5 s (refused on a Redis-only store, else valid)', (cfg) => (redisOnly(cfg) ? INV : VALID), async (t) => {
    const sid = t.uid('tt')
    await t.store.setKeys(sid, { session: { a: { v: 1 } } }, { ttl: 0.5 })
    await t.expectKeys(sid, { session: { a: { v: 1 } } })
  })
  // With Redis, syncToDatabase: false writes Redis only: a TTL would expire the only copy. With
  // no Redis there is no Redis key to expire and SQL is the only place to write.
  add('setKeys: ttl 60 with syncToDatabase false (refused wherever there is Redis)', (cfg) => (cfg.redis ? INV : VALID), async (t, s) => {
    s.sid = t.uid('tt')
    await t.store.setKeys(s.sid, { session: { a: { v: 1 } } }, { ttl: 60, syncToDatabase: false })
    await t.expectKeys(s.sid, { session: { a: { v: 1 } } })
  }, { after: (t, s) => t.nothingStored(s.sid, ['session']) })
  add('setKeys: ttl null means no ttl: valid', VALID, async (t) => {
    const sid = t.uid('tt')
    await t.store.setKeys(sid, { session: { a: { v: 1 } } }, { ttl: null })
    await t.expectKeys(sid, { session: { a: { v: 1 } } })
  })
  add('setKeys: options null: valid', VALID, async (t) => {
    const sid = t.uid('tt')
    await t.store.setKeys(sid, { session: { a: { v: 1 } } }, null)
    await t.expectKeys(sid, { session: { a: { v: 1 } } })
  })
  // syncToDatabase: false reaches SQL through flush(); without Redis, SQL is the only tier.
  add('setKeys: syncToDatabase false, then flush: valid, reads back from every tier', VALID, async (t) => {
    const sid = t.uid('sf')
    const data = { session: { a: { v: rnd(8) } } }
    await t.store.setKeys(sid, data, { syncToDatabase: false })
    const flushed = await t.store.flush(sid)
    if (t.cfg.redis && t.cfg.database && flushed !== 1) throw new Mismatch(`flush returned ${show(flushed)}, expected 1`)
    if (typeof flushed !== 'number') throw new Mismatch(`flush returned ${show(flushed)}`)
    await t.expectKeys(sid, data)
  })
  add('flush of a session with nothing dirty: valid, 0', VALID, async (t) => {
    const got = await t.store.flush(t.uid('fl'))
    if (got !== 0) throw new Mismatch(`flush returned ${show(got)}`)
  })
  add('describeSession of an unknown session: valid, empty', VALID, async (t) => {
    const got = await t.store.describeSession(t.uid('ds'))
    exact(got, { creds: false, credsBytes: 0, types: [] }, 'describeSession')
  })

  // ----------------------------------------------------------------- deleteKeys' fields
  const badFields = [
    ['a string, not an array', () => 'session-a'],
    ['null', () => null],
    ['undefined', () => undefined],
    ['a number', () => 5],
    ['one { type, id } object, not an array', () => ({ type: 'session', id: 'a' })],
    ['[5]', () => [5]],
    ['[null]', () => [null]],
    ['[undefined]', () => [undefined]],
    ['[a symbol]', () => [Symbol('f')]],
    ["[['session', 'a']]", () => [['session', 'a']]],
    ['an unknown type prefix', () => ['nonsense-a']],
    ['a known type without its dash', () => ['pre-key']],
    ['a known type in the wrong case', () => ['Pre-key-1']],
    ['{ type } without an id', () => [{ type: 'session' }]],
    ['{ id } without a type', () => [{ id: 'a' }]],
    ['{ type, id: 5 }', () => [{ type: 'session', id: 5 }]],
    ['a "type-id" string with a NUL in the id', () => ['session-a\0']],
    ['a "type-id" string with a 1025-byte id', () => ['session-' + 'x'.repeat(1025)]],
    ['a "type-id" string with a lone surrogate', () => ['session-x\uD800']],
  ]
  for (const [label, make] of badFields) add(`deleteKeys: fields are ${label}`, INV, (t) => t.store.deleteKeys(t.uid('df'), make()))
  const validDelete = (label, type, ids, field, keep = { other: { v: 2 } }) =>
    add(`deleteKeys: ${label}: valid, deletes exactly that record`, VALID, async (t) => {
      const sid = t.uid('vd')
      const records = own(...ids.flatMap((id) => [id, { v: id }]))
      for (const [k, v] of Object.entries(keep)) records[k] = v
      await t.store.setKeys(sid, own(type, records))
      await t.store.deleteKeys(sid, field)
      const want = own(...ids.flatMap((id) => [id, undefined]))
      for (const [k, v] of Object.entries(keep)) want[k] = v
      await t.expectKeys(sid, own(type, want))
    })
  validDelete("the seed's 'pre-key-1'", 'pre-key', ['1'], ['pre-key-1'])
  validDelete("'sender-key-memory-<jid>' (longest known type wins)", 'sender-key-memory', ['1203@g.us'], ['sender-key-memory-1203@g.us'])
  // (no sibling record: app-state-sync-key values come back as Baileys' proto objects)
  validDelete("'app-state-sync-key-<id>'", 'app-state-sync-key', ['AAAAAB/+Zw=='], ['app-state-sync-key-AAAAAB/+Zw=='], {})
  validDelete("'pre-key-' (the empty id)", 'pre-key', [''], ['pre-key-'])
  validDelete('{ type, id } of a type Baileys does not know', 'future-type', ['x'], [{ type: 'future-type', id: 'x' }])
  validDelete('the same field twice', 'session', ['a'], [{ type: 'session', id: 'a' }, 'session-a'])
  // Prototype-named types and ids are ordinary names; deleting them must neither pollute
  // Object.prototype nor silently delete nothing.
  validDelete("{ type: '__proto__', id: 'polluted' }", '__proto__', ['polluted'], [{ type: '__proto__', id: 'polluted' }])
  validDelete("{ type: 'constructor' }", 'constructor', ['x'], [{ type: 'constructor', id: 'x' }])
  validDelete("{ type: 'toString' }", 'toString', ['x'], [{ type: 'toString', id: 'x' }])
  validDelete("{ id: '__proto__' }", 'session', ['__proto__'], [{ type: 'session', id: '__proto__' }])
  validDelete("{ id: 'constructor' }", 'session', ['constructor'], [{ type: 'session', id: 'constructor' }])
  validDelete("the seed's 'session-__proto__'", 'session', ['__proto__'], ['session-__proto__'])
  add('deleteKeys: [] and ids that do not exist: valid, nothing happens', VALID, async (t) => {
    const sid = t.uid('vd')
    await t.store.setKeys(sid, { session: { a: { v: 1 } } })
    await t.store.deleteKeys(sid, [])
    await t.store.deleteKeys(sid, ['session-missing', { type: 'other', id: 'x' }])
    await t.expectKeys(sid, { session: { a: { v: 1 } } })
  })

  // ----------------------------------------------------------------- BaileysAuthStore constructor
  // Wrong adapters and option values are refused when the store is built, or at the latest on
  // its first call (the run makes one). Option values are ERR_INVALID_ARGUMENT, as the existing
  // write-behind test asserts.
  const ctor = (label, expect, args, after) =>
    add(`new BaileysAuthStore: ${label}`, expect, async (t) => {
      const [r, q] = t.tiers()
      const s = t.track(new BaileysAuthStore(...args(r, q, t)))
      await s.getCreds(t.uid('ct'))
      if (after) await after(t, s)
    })
  ctor('no adapters', INV, () => [])
  ctor('null and null', INV, () => [null, null])
  ctor('a plain object as the Redis adapter', INV, (r, q) => [{}, q])
  ctor('a URL string as the Redis adapter', INV, (r, q) => ['redis://127.0.0.1:6379', q])
  ctor('a number as the Redis adapter', INV, (r, q) => [5, q])
  ctor('a BaileysOrmAdapter in the Redis position', INV, () => [new BaileysOrmAdapter('sqlite::memory:'), null])
  ctor('a URL string as the SQL adapter', INV, (r) => [r, 'sqlite::memory:'])
  ctor('a BaileysRedisAdapter in the SQL position', INV, () => [null, new BaileysRedisAdapter(`redis://${REFUSED}`)])
  ctor('a plain object as the SQL adapter', INV, (r) => [r, {}])
  const storeOptions = [
    ['options are a number', () => 5],
    ['options are a string', () => 'write-behind'],
    ['options are true', () => true],
    ['cache 0', () => ({ cache: 0 })],
    ['cache 1', () => ({ cache: 1 })],
    ["cache 'false'", () => ({ cache: 'false' })],
    ['cache an object', () => ({ cache: {} })],
    ['cacheMaxBytes -1', () => ({ cacheMaxBytes: -1 })],
    ['cacheMaxBytes NaN', () => ({ cacheMaxBytes: NaN })],
    ['cacheMaxBytes Infinity', () => ({ cacheMaxBytes: Infinity })],
    ["cacheMaxBytes '32mb'", () => ({ cacheMaxBytes: '32mb' })],
    ['compactValues 0', () => ({ compactValues: 0 })],
    ["compactValues 'false'", () => ({ compactValues: 'false' })],
    ["compactValues 'no'", () => ({ compactValues: 'no' })],
    ["durability 'write-back'", () => ({ durability: 'write-back' })],
    ["durability 'WRITE-THROUGH'", () => ({ durability: 'WRITE-THROUGH' })],
    ["durability ''", () => ({ durability: '' })],
    ['durability 5', () => ({ durability: 5 })],
    ['durability an object', () => ({ durability: {} })],
    ['flushIntervalMs 0', () => ({ flushIntervalMs: 0 })],
    ['flushIntervalMs -1', () => ({ flushIntervalMs: -1 })],
    ['flushIntervalMs NaN', () => ({ flushIntervalMs: NaN })],
    ["flushIntervalMs '1000'", () => ({ flushIntervalMs: '1000' })],
    ['flushIntervalMs Infinity', () => ({ flushIntervalMs: Infinity })],
    ['write-behind with flushIntervalMs 1e13', () => ({ durability: 'write-behind', flushIntervalMs: 1e13 })],
    ['memoryManager 5', () => ({ memoryManager: 5 })],
    ["memoryManager 'yes'", () => ({ memoryManager: 'yes' })],
    ['memoryManager an array', () => ({ memoryManager: [] })],
    ['memoryManager { checkIntervalMs: 0 }', () => ({ memoryManager: { checkIntervalMs: 0 } })],
    ["memoryManager { measure: 'disk' }", () => ({ memoryManager: { measure: 'disk' } })],
    ['memoryManager { maxMemoryBytes: -1 }', () => ({ memoryManager: { maxMemoryBytes: -1 } })],
    ['memoryManager { evictionThreshold: 150 }', () => ({ memoryManager: { evictionThreshold: 150 } })],
    ['an object whose cache getter throws', () => ({ get cache() { throw new Error('cache getter exploded') } })],
  ]
  for (const [label, make] of storeOptions) ctor(label, INV, (r, q) => [r, q, make()])
  ctor('write-behind (needs Redis and SQL)', (cfg) => (cfg.redis && cfg.database ? VALID : INV), (r, q) => [r, q, { durability: 'write-behind' }], async (t, s) => {
    const sid = t.uid('wb')
    await s.setKeys(sid, { session: { a: { v: 1 } } })
    exact(await s.getKeys(sid, 'session', ['a']), { a: { v: 1 } }, 'getKeys')
  })
  ctor('memoryManager options (needs Redis)', (cfg) => (cfg.redis ? VALID : INV), (r, q) => [r, q, { memoryManager: { ...HARMLESS } }])
  ctor('memoryManager false: valid, no manager', VALID, (r, q) => [r, q, { memoryManager: false }], (t, s) => {
    if (s.memoryManager) throw new Mismatch('a memory manager was started')
  })
  ctor('undefined as the Redis adapter: valid on a SQL store', (cfg) => (cfg.database ? VALID : INV), (r, q) => [undefined, q])
  ctor('options undefined: valid', VALID, (r, q) => [r, q, undefined])
  ctor('options null: valid', VALID, (r, q) => [r, q, null])
  add('new BaileysAuthStore: baileys 5, then a new session', INV, async (t) => {
    const [r, q] = t.tiers()
    const s = t.track(new BaileysAuthStore(r, q, { baileys: 5 }))
    await authState(t, s, t.uid('nb'))
  })
  add('new BaileysAuthStore: baileys {}, then a new session', NO_BAILEYS, async (t) => {
    const [r, q] = t.tiers()
    const s = t.track(new BaileysAuthStore(r, q, { baileys: {} }))
    await authState(t, s, t.uid('nb'))
  })
  // Options that change how values are kept must still give back exactly what was written, read
  // by stores with the default options.
  const realOption = (label, options) =>
    add(`a store with ${label}: valid, round-trips`, VALID, async (t) => {
      const s = t.real(options)
      const sid = t.uid('ro')
      const data = { session: { a: { v: rnd(40), s: 'AAAA', n: 2 ** 40 } }, 'pre-key': { 1: { public: rnd(32), private: rnd(32) } } }
      await s.setKeys(sid, data)
      exact(await s.getKeys(sid, 'session', ['a']), data.session, 'same store')
      await t.expectKeys(sid, data)
    })
  realOption('compactValues false', { compactValues: false })
  realOption('cacheMaxBytes 1 (every value bigger than the cache)', { cacheMaxBytes: 1 })

  // A closed store refuses everything, even calls with nothing to do (README: "later calls reject
  // with ERR_STORE_CLOSED").
  const closed = (label, call) =>
    add(`a closed store: ${label}`, CLOSED, async (t) => {
      const s = t.cheap()
      await s.getCreds(t.uid('cl'))
      await s.close()
      await call(s, t.uid('cl'))
    })
  closed('getCreds', (s, sid) => s.getCreds(sid))
  closed('setKeys', (s, sid) => s.setKeys(sid, { session: { a: 1 } }))
  closed('saveCreds', (s, sid) => s.saveCreds(sid, { creds: { a: 1 } }))
  closed('listIds', (s, sid) => s.listIds(sid, 'session'))
  closed('setKeys with no records', (s, sid) => s.setKeys(sid, {}))
  closed('getKeys of no ids', (s, sid) => s.getKeys(sid, 'session', []))
  add('a closed store: close again: valid', VALID, async (t) => {
    const s = t.cheap()
    await s.getCreds(t.uid('cl'))
    await s.close()
    await s.close()
  })

  // ----------------------------------------------------------------- useBaileysAuthState
  const badStores = [
    ['null', () => null],
    ['undefined', () => undefined],
    ['a number', () => 5],
    ['a plain object', () => ({})],
    ['a store-like object', () => ({ getCreds: async () => null, getKeys: async () => ({}), setKeys: async () => {} })],
    ['a BaileysRedisAdapter', () => new BaileysRedisAdapter(`redis://${REFUSED}`)],
    // The common mistake: openAuthStore() not awaited.
    ['a Promise of a store', (t) => Promise.resolve(t.store)],
  ]
  for (const [label, make] of badStores) add(`useBaileysAuthState: the store is ${label}`, INV, (t) => useBaileysAuthState(make(t), t.uid('ub')))
  for (const [label, make] of BAD_SESSION_IDS) add(`useBaileysAuthState: session id is ${label}`, SID, (t) => useBaileysAuthState(t.store, make(t)))
  // Options are checked by the call or, at the latest, by the first write; either way the write
  // that would use them must not happen.
  const badAuthOptions = [
    ['a number', () => 5],
    ['a string', () => 'ttl'],
    ['ttl NaN', () => ({ ttl: NaN })],
    ['ttl -1', () => ({ ttl: -1 })],
    ['ttl a numeric string', () => ({ ttl: '60' })],
    ["syncToDatabase 'yes'", () => ({ syncToDatabase: 'yes' })],
    ['syncToDatabase 1', () => ({ syncToDatabase: 1 })],
  ]
  for (const [label, make] of badAuthOptions) {
    add(`useBaileysAuthState: options are ${label}, then saveCreds: nothing written`, INV, async (t, s) => {
      s.sid = t.uid('uo')
      const auth = await authState(t, t.store, s.sid, make())
      await auth.saveCreds()
      await auth.state.keys.set({ session: { a: { v: 1 } } })
    }, { after: (t, s) => t.nothingStored(s.sid, ['session']) })
  }
  add('useBaileysAuthState: ttl 60, then keys.set (refused on a Redis-only store, else valid)', (cfg) => (redisOnly(cfg) ? INV : VALID), async (t, s) => {
    s.sid = t.uid('uo')
    const auth = await authState(t, t.store, s.sid, { ttl: 60 })
    await auth.state.keys.set({ session: { a: { v: 1 } } })
    exact(await auth.state.keys.get('session', ['a']), { a: { v: 1 } }, 'keys.get')
    await t.expectKeys(s.sid, { session: { a: { v: 1 } } })
  }, { after: (t, s) => t.nothingStored(s.sid, ['session']) })
  add('useBaileysAuthState: baileys 5 for a new session', INV, (t) => authState(t, t.store, t.uid('ub'), { baileys: 5 }))
  add('useBaileysAuthState: baileys {} for a new session', NO_BAILEYS, (t) => authState(t, t.store, t.uid('ub'), { baileys: {} }))
  add("useBaileysAuthState: baileys whose initAuthCreds is a string", NO_BAILEYS, (t) => authState(t, t.store, t.uid('ub'), { baileys: { initAuthCreds: 'x' } }))
  const authCall = (label, expect, call) =>
    add(`useBaileysAuthState: ${label}`, expect, async (t, s) => {
      s.sid = t.uid('ua')
      const auth = await authState(t, t.store, s.sid)
      await call(auth, t)
    }, { after: (t, s) => t.nothingStored(s.sid, ['session']) })
  authCall("keys.get('session', 'a'), ids not an array", INV, (a) => a.state.keys.get('session', 'a'))
  authCall('keys.get(5, ids)', INV, (a) => a.state.keys.get(5, ['a']))
  authCall("keys.get('', ids)", INV, (a) => a.state.keys.get('', ['a']))
  authCall('keys.get with an id holding NUL', INV, (a) => a.state.keys.get('session', ['a\0']))
  authCall('keys.set(5)', INV, (a) => a.state.keys.set(5))
  authCall('keys.set with a BigInt value', INV, (a) => a.state.keys.set({ session: { a: 1n } }))
  authCall("keys.set with type ''", INV, (a) => a.state.keys.set({ '': { a: 1 } }))
  authCall('keys.set with an id holding a lone surrogate', INV, (a) => a.state.keys.set({ session: { 'x\uD800': 1 } }))
  authCall('saveCreds after state.creds became circular', INV, (a) => {
    a.state.creds.self = a.state.creds
    return a.saveCreds()
  })
  authCall('saveCreds after state.creds became a BigInt', INV, (a) => {
    a.state.creds = 1n
    return a.saveCreds()
  })
  authCall('saveCreds after state.creds became undefined', INV, (a) => {
    a.state.creds = undefined
    return a.saveCreds()
  })
  // Stored "null" creds read back as { creds: null } and the next start re-pairs.
  authCall('saveCreds after state.creds became null', INV, (a) => {
    a.state.creds = null
    return a.saveCreds()
  })
  add('useBaileysAuthState: new session, saveCreds, reopen: valid, creds round-trip exactly', VALID, async (t) => {
    const sid = t.uid('uv')
    const auth = await authState(t, t.store, sid)
    auth.state.creds.me = { id: '5511:1@s.whatsapp.net', name: 'bot' }
    await auth.saveCreds()
    await t.expectCreds(sid, auth.state.creds)
    const again = await authState(t, t.store, sid)
    exact(again.state.creds, auth.state.creds, 'reopened creds')
  })
  add('useBaileysAuthState: keys.listIds and keys.list with unusual ids: valid', VALID, async (t) => {
    const sid = t.uid('uv')
    const auth = await authState(t, t.store, sid)
    const data = own('', { v: 1 }, '__proto__', { v: 2 }, 'constructor', { v: 3 }, '\n', { v: 4 }, 'k\uFFFD', { v: rnd(3) })
    await auth.state.keys.set({ session: data })
    const ids = []
    for await (const id of auth.state.keys.listIds('session')) ids.push(id)
    exact(ids.sort(), Object.keys(data).sort(), 'listIds')
    const pairs = []
    for await (const [id, v] of auth.state.keys.list('session')) pairs.push([id, v])
    if (pairs.length !== ids.length) throw new Mismatch(`list yielded ${pairs.length} pairs, expected ${ids.length}`)
    for (const [id, v] of pairs) exact(v, data[id], `list ${show(id)}`)
  })
  // The zero-config form opens its own store: REDIS_URL unset and DATABASE_URL = sqlite::memory:
  // while these run, so a wrongly accepted call opens nothing on disk.
  const zero = (label, expect, args) =>
    add(`useBaileysAuthState zero-config: ${label}`, expect, (t) =>
      t.withEnv(async () => {
        const auth = await useBaileysAuthState(...args(t))
        t.track(auth)
        await auth.saveCreds()
      }),
    )
  const MEM = { redis: null, database: 'sqlite::memory:' }
  // The first argument is neither a store nor a session id: either code says so.
  zero('the first argument is a number', [INV, SID], () => [5])
  zero('the first argument is null', [INV, SID], () => [null])
  zero('the session id is empty', SID, () => ['', MEM])
  zero('the session id holds a lone surrogate', SID, (t) => [sur(t, 'z', '\uD800'), MEM])
  zero('the session id holds a newline', SID, (t) => [t.uid('z') + '\n', MEM])
  zero('options are a number', INV, (t) => [t.uid('z'), 5])
  zero('options are a string', INV, (t) => [t.uid('z'), 'sqlite::memory:'])
  zero('an unknown database scheme with a password', CONFIG, (t) => [t.uid('z'), { redis: null, database: `oracle://u:${PASSWORD}@db.example/x` }])
  zero('an unreachable Redis URL with a password', REDIS, (t) => [t.uid('z'), { redis: `redis://u:${PASSWORD}@${REFUSED}/0`, database: null }])
  zero('an unreachable PostgreSQL URL with a password', DB_REFUSED, (t) => [t.uid('z'), { redis: null, database: { url: `postgres://u:${PASSWORD}@${REFUSED}/db`, timeoutMs: 50 } }])
  zero("durability 'sometimes'", INV, (t) => [t.uid('z'), { ...MEM, durability: 'sometimes' }])
  zero('ttl NaN', INV, (t) => [t.uid('z'), { ...MEM, ttl: NaN }])
  zero('sqlite::memory:: valid', VALID, (t) => [t.uid('z'), MEM])

  // ----------------------------------------------------------------- openAuthStore
  const open = (label, expect, options) =>
    add(`openAuthStore: ${label}`, expect, (t) =>
      t.withEnv(async () => {
        t.track(await openAuthStore(...options(t)))
      }),
    )
  open('options are a number', INV, () => [5])
  open('options are a URL string', INV, () => ['sqlite::memory:'])
  open('options are true', INV, () => [true])
  open('options are an array', INV, () => [[]])
  open('redis is a number', INV, () => [{ redis: 5, database: 'sqlite::memory:' }])
  open('redis is true', INV, () => [{ redis: true, database: 'sqlite::memory:' }])
  // Only null leaves a tier out (README); a falsy non-null value is a mistake, not a request.
  open('redis is 0', INV, () => [{ redis: 0, database: 'sqlite::memory:' }])
  open('redis is false', INV, () => [{ redis: false, database: 'sqlite::memory:' }])
  open('redis is an empty string', CONFIG, () => [{ redis: '', database: 'sqlite::memory:' }])
  open('redis options with a bad port', CONFIG, () => [{ redis: { port: 'abc' }, database: 'sqlite::memory:' }])
  open('database is a number', INV, () => [{ redis: null, database: 5 }])
  open('database is an empty string', CONFIG, () => [{ redis: null, database: '' }])
  open('database is false', INV, () => [{ redis: null, database: false }])
  open('database is 0', INV, () => [{ redis: null, database: 0 }])
  open('both tiers null', INV, () => [{ redis: null, database: null }])
  open('an unknown database scheme with a password', CONFIG, () => [{ redis: null, database: `oracle://u:${PASSWORD}@db.example/x` }])
  open('an unreachable Redis with a password', REDIS, () => [{ redis: `redis://u:${PASSWORD}@${REFUSED}/0`, database: null }])
  open('an unreachable Redis with a query-string password', REDIS, () => [{ redis: `redis://${REFUSED}/0?password=${PASSWORD}`, database: null }])
  open('cacheMaxBytes -1', INV, () => [{ redis: null, database: 'sqlite::memory:', cacheMaxBytes: -1 }])
  open("compactValues 'no'", INV, () => [{ redis: null, database: 'sqlite::memory:', compactValues: 'no' }])
  open("durability 'fast'", INV, () => [{ redis: null, database: 'sqlite::memory:', durability: 'fast' }])
  open('memoryManager without Redis', INV, () => [{ redis: null, database: 'sqlite::memory:', memoryManager: true }])
  open('sqlite::memory: alone: valid', VALID, () => [{ redis: null, database: 'sqlite::memory:' }])

  // ----------------------------------------------------------------- BaileysRedisAdapter
  // The adapter is built, then connected (some checks happen on connect).
  const redisAdapter = (label, expect, arg, extra) =>
    add(`BaileysRedisAdapter: ${label}`, expect, async (t) => connect(t, new BaileysRedisAdapter(typeof arg === 'function' ? arg(t) : arg)), extra)
  redisAdapter('a number', INV, 5)
  redisAdapter('null', INV, null)
  redisAdapter('true', INV, true)
  redisAdapter('a symbol', INV, Symbol('redis'))
  redisAdapter('a function', INV, () => () => 'redis://127.0.0.1:6379')
  redisAdapter('an array', INV, [])
  redisAdapter('{ host: 5 }', INV, { host: 5, port: 1 })
  redisAdapter("{ port: 'abc' }", CONFIG, { port: 'abc' })
  redisAdapter('{ port: -1 }', CONFIG, { port: -1 })
  redisAdapter('{ port: 70000 }', CONFIG, { port: 70000 })
  redisAdapter("{ db: 'x' }", CONFIG, { port: 1, db: 'x' })
  redisAdapter('{ url: 5 }', INV, { url: 5 })
  redisAdapter('{ url } an object holding a password (must not be echoed)', INV, { url: { password: PASSWORD } })
  redisAdapter('unreachable, { password } in the options', REDIS, { host: '127.0.0.1', port: 1, password: PASSWORD, timeoutMs: 500 })
  redisAdapter('timeoutMs 0', INV, { url: `redis://${REFUSED}`, timeoutMs: 0 })
  redisAdapter('timeoutMs -1', INV, { url: `redis://${REFUSED}`, timeoutMs: -1 })
  redisAdapter('timeoutMs NaN', INV, { url: `redis://${REFUSED}`, timeoutMs: NaN })
  redisAdapter("timeoutMs '5s'", INV, { url: `redis://${REFUSED}`, timeoutMs: '5s' })
  redisAdapter('keyPrefix 5', INV, { url: `redis://${REFUSED}`, keyPrefix: 5 })
  redisAdapter('timeoutMs an object holding a password (must not be echoed)', INV, { url: `redis://${REFUSED}`, timeoutMs: { password: PASSWORD } })
  redisAdapter('keyPrefix an object holding a password (must not be echoed)', INV, { url: `redis://${REFUSED}`, keyPrefix: { password: PASSWORD } })
  for (const [label, prefix] of [['empty', ''], ['with braces', '{x}'], ['with a space', 'a b'], ['with a newline', 'p\n'], ['with a glob star', 'p*'], ['with a lone surrogate', 'p\uD800']]) {
    redisAdapter(`keyPrefix ${label}`, CONFIG, (t) => ({ url: t.services.redis, keyPrefix: prefix }), { needs: ['redis'] })
  }
  redisAdapter('an empty URL', CONFIG, '')
  redisAdapter('not a URL', CONFIG, 'not a url')
  redisAdapter("a URL without a scheme ('localhost:6379')", CONFIG, 'localhost:6379')
  redisAdapter('an http:// URL with a password', CONFIG, (t) => `http://u:${PASSWORD}@${t.services.redis ? liveRedisHostPort(t) : REFUSED}/0`)
  redisAdapter('an unparsable URL with a password', CONFIG, `redis://u:${PASSWORD}@[::1`)
  redisAdapter('db 99999', CONFIG, 'redis://127.0.0.1:6379/99999')
  redisAdapter('port 70000', CONFIG, 'redis://127.0.0.1:70000')
  redisAdapter('unreachable, user:password in the URL', REDIS, `redis://user:${PASSWORD}@${REFUSED}/0`)
  redisAdapter('unreachable, :password in the URL', REDIS, `redis://:${PASSWORD}@${REFUSED}/0`)
  redisAdapter('unreachable, ?password= in the URL', REDIS, `redis://${REFUSED}/0?password=${PASSWORD}`)
  redisAdapter('unreachable, a percent-encoded password', REDIS, `redis://u:S3cret%40Pw@${REFUSED}/0`)
  redisAdapter('unreachable cluster, password in the URL', REDIS, `redis-cluster://u:${PASSWORD}@${REFUSED}?node=127.0.0.1:2`)
  redisAdapter('unreachable sentinel, password in the URL', REDIS, `redis-sentinel://u:${PASSWORD}@${REFUSED}/0?sentinelServiceName=mymaster`)
  redisAdapter('a live server, wrong user and password', REDIS, (t) => `redis://nobody:${PASSWORD}@${liveRedisHostPort(t)}/0`, { needs: ['redis'] })
  redisAdapter('a live server, wrong password with URL-special characters', REDIS, (t) => {
    const [host, port] = liveRedisHostPort(t).split(':')
    return { host, port: Number(port), username: 'nobody', password: 'S3cret@Pw/?#', timeoutMs: 1000 }
  }, { needs: ['redis'] })
  // TLS against a plaintext server: a handshake that never completes (a timeout is fair).
  redisAdapter('rediss:// against a plaintext server, password in the URL', [REDIS, 'ERR_TIMEOUT'], (t) => ({ url: `rediss://u:${PASSWORD}@${liveRedisHostPort(t)}/0`, timeoutMs: 50 }), { needs: ['redis'] })
  redisAdapter('{} (defaults to 127.0.0.1:6379): valid', VALID, {}, { needs: ['redis'] })

  // ----------------------------------------------------------------- BaileysOrmAdapter
  const sqlAdapter = (label, expect, ...args) =>
    add(`BaileysOrmAdapter: ${label}`, expect, async (t) => connect(t, new BaileysOrmAdapter(...args.map((a) => (typeof a === 'function' && a.length === 1 ? a(t) : a)))))
  sqlAdapter('a number', INV, 5)
  sqlAdapter('null', INV, null)
  sqlAdapter('undefined', INV, undefined)
  sqlAdapter('true', INV, true)
  sqlAdapter('{}', INV, {})
  sqlAdapter('{ url: 5 }', INV, { url: 5 })
  sqlAdapter('an array of a URL', INV, ['sqlite::memory:'])
  sqlAdapter("the seed's (em, Entity)", INV, { find() {} }, class AuthEntity {})
  sqlAdapter('an empty URL', CONFIG, '')
  sqlAdapter('an unknown scheme with a password', CONFIG, `oracle://u:${PASSWORD}@db.example/x`)
  sqlAdapter('port 99999, password in the URL', CONFIG, `postgres://u:${PASSWORD}@127.0.0.1:99999/db`)
  sqlAdapter('an unparsable URL with a password', CONFIG, `mysql://u:${PASSWORD}@[::1/db`)
  // sqlite:// with no path: every pooled connection would get its own private temporary file.
  // (ERR_DATABASE accepted too while the core's check of the path is being changed.)
  sqlAdapter("'sqlite://' without a path", [CONFIG, DB], 'sqlite://')
  sqlAdapter('an unknown SQLite mode', CONFIG, 'sqlite::memory:?mode=bogus')
  sqlAdapter('a SQLite file in a missing directory', DB, (t) => `sqlite:///nonexistent-${t.uid('dir')}/x/auth.db`)
  sqlAdapter('maxConnections 0', CONFIG, { url: 'sqlite::memory:', maxConnections: 0 })
  sqlAdapter('maxConnections -1', CONFIG, { url: 'sqlite::memory:', maxConnections: -1 })
  sqlAdapter('maxConnections 1.5', CONFIG, { url: 'sqlite::memory:', maxConnections: 1.5 })
  sqlAdapter("maxConnections 'x'", INV, { url: 'sqlite::memory:', maxConnections: 'x' })
  sqlAdapter('timeoutMs 0', INV, { url: 'sqlite::memory:', timeoutMs: 0 })
  sqlAdapter('timeoutMs NaN', INV, { url: 'sqlite::memory:', timeoutMs: NaN })
  sqlAdapter("timeoutMs 'x'", INV, { url: 'sqlite::memory:', timeoutMs: 'x' })
  sqlAdapter('timeoutMs an object holding a password (must not be echoed)', INV, { url: 'sqlite::memory:', timeoutMs: { password: PASSWORD } })
  sqlAdapter('maxConnections an object holding a password (must not be echoed)', INV, { url: 'sqlite::memory:', maxConnections: { password: PASSWORD } })
  // Connection refused is "unreachable" (README: ERR_DATABASE), not a server that did not answer
  // (see DB_REFUSED).
  sqlAdapter('unreachable PostgreSQL, user:password in the URL', DB_REFUSED, { url: `postgres://u:${PASSWORD}@${REFUSED}/db`, timeoutMs: 50 })
  sqlAdapter('unreachable PostgreSQL, ?password= in the URL', DB_REFUSED, { url: `postgres://u@${REFUSED}/db?password=${PASSWORD}`, timeoutMs: 50 })
  sqlAdapter('unreachable MySQL, user:password in the URL', DB_REFUSED, { url: `mysql://u:${PASSWORD}@${REFUSED}/db`, timeoutMs: 50 })
  sqlAdapter('unreachable MariaDB, user:password in the URL', DB_REFUSED, { url: `mariadb://u:${PASSWORD}@${REFUSED}/db`, timeoutMs: 50 })
  sqlAdapter('unreachable MySQL, ?password= in the URL', DB_REFUSED, { url: `mysql://u@${REFUSED}/db?password=${PASSWORD}`, timeoutMs: 50 })
  add('BaileysOrmAdapter: a live PostgreSQL, unknown role with a password', DB, (t) => {
    const u = new URL(t.services.postgres)
    return connect(t, new BaileysOrmAdapter({ url: `postgres://nobody_${t.uid('r')}:${PASSWORD}@${u.host}${u.pathname}?sslmode=disable`, timeoutMs: 2000 }))
  }, { needs: ['postgres'] })
  add('BaileysOrmAdapter: a live MySQL, wrong password', DB, (t) => {
    const u = new URL(t.services.mysql)
    u.password = PASSWORD
    return connect(t, new BaileysOrmAdapter({ url: u.href, timeoutMs: 2000 }))
  }, { needs: ['mysql'] })
  sqlAdapter('{ url, maxConnections: 1, timeoutMs: 1000 }: valid', VALID, { url: 'sqlite::memory:', maxConnections: 1, timeoutMs: 1000 })
  add("BaileysOrmAdapter: the 'postgresql://' scheme: valid", VALID, (t) => connect(t, new BaileysOrmAdapter(t.services.postgres.replace(/^postgres:/, 'postgresql:'))), { needs: ['postgres'] })

  // ----------------------------------------------------------------- RedisMemoryManager
  const mm = (label, expect, run, extra = { needs: ['redis'] }) => add(`RedisMemoryManager: ${label}`, expect, run, extra)
  mm('no connection (undefined)', INV, (t) => startManager(t, HARMLESS, undefined), {})
  mm('null connection', INV, (t) => startManager(t, HARMLESS, null), {})
  mm('a number as the connection', INV, (t) => startManager(t, HARMLESS, 5), {})
  mm('a URL string as the connection', INV, (t) => startManager(t, HARMLESS, 'redis://127.0.0.1:6379'), {})
  mm('a plain object as the connection', INV, (t) => startManager(t, HARMLESS, {}), {})
  mm('a BaileysOrmAdapter as the connection', INV, (t) => startManager(t, HARMLESS, new BaileysOrmAdapter('sqlite::memory:')), {})
  mm('options are a number', INV, (t) => startManager(t, 5))
  mm('options are a string', INV, (t) => startManager(t, 'server'))
  const mmOptions = [
    ['checkIntervalMs 0', { checkIntervalMs: 0 }],
    ['checkIntervalMs -1', { checkIntervalMs: -1 }],
    ['checkIntervalMs NaN', { checkIntervalMs: NaN }],
    ["checkIntervalMs '1000'", { checkIntervalMs: '1000' }],
    // Node's timers take at most 2^31-1 ms; above that setInterval silently fires every 1 ms.
    ['checkIntervalMs 2^31 (beyond what a Node timer holds)', { checkIntervalMs: 2 ** 31 }],
    ['maxMemoryBytes 0', { maxMemoryBytes: 0 }],
    ['maxMemoryBytes -1', { maxMemoryBytes: -1 }],
    ['maxMemoryBytes NaN', { maxMemoryBytes: NaN }],
    ["maxMemoryBytes '1gb'", { maxMemoryBytes: '1gb' }],
    ['evictionThreshold 0', { evictionThreshold: 0 }],
    ['evictionThreshold 150', { evictionThreshold: 150 }],
    ['evictionThreshold NaN', { evictionThreshold: NaN }],
    ["evictionThreshold '80'", { evictionThreshold: '80' }],
    ['evictionTarget above evictionThreshold', { evictionThreshold: 50, evictionTarget: 90 }],
    ['evictionTarget -1', { evictionTarget: -1 }],
    ['ttlInactivity 0', { ttlInactivity: 0 }],
    ['ttlInactivity -1', { ttlInactivity: -1 }],
    ['ttlInactivity NaN', { ttlInactivity: NaN }],
    ["measure 'disk'", { measure: 'disk' }],
    ['measure 5', { measure: 5 }],
    ["measure ''", { measure: '' }],
  ]
  for (const [label, o] of mmOptions) mm(label, INV, (t) => startManager(t, { ...HARMLESS, ...o }))
  const track = (label, expect, args) =>
    mm(`trackAccess: ${label}`, expect, async (t) => {
      const m = t.track(new RedisMemoryManager(await t.redisAdapter(), HARMLESS))
      await m.trackAccess(...args(t))
    })
  track('an empty session id', SID, () => [''])
  track('a session id with a lone surrogate', SID, (t) => [sur(t, 'm', '\uD800')])
  track('a session id with a newline', SID, (t) => [t.uid('m') + '\n'])
  track('a number as the session id', SID, () => [5])
  track('a Buffer of stored key bytes as the session id (must not be echoed)', SID, (t) => [t.secret])
  track("an estimated size 'big'", INV, (t) => [t.uid('m'), 'big'])
  track('an estimated size that is a Buffer of stored key bytes (must not be echoed)', INV, (t) => [t.uid('m'), t.secret])
  track('a session id of 256 bytes', SID, () => ['x'.repeat(256)])
  mm('a BaileysRedisAdapter, start and stop: valid', VALID, (t) => startManager(t, HARMLESS))
  mm('the connected adapter.redis: valid', VALID, async (t) => startManager(t, HARMLESS, (await t.redisAdapter()).redis))
  mm('evictionThreshold 50 alone (target defaults below it): valid', VALID, (t) => startManager(t, { ...HARMLESS, evictionThreshold: 50 }))

  // ----------------------------------------------------------------- codec
  const decode = (label, expect, bytes) => add(`decodeValue: ${label}`, expect, () => decodeValue('session', bytes()))
  decode('a number', INV, () => 5)
  decode('null', INV, () => null)
  decode('undefined', INV, () => undefined)
  decode('an object', INV, () => ({ length: 2 }))
  decode('truncated JSON', CORRUPT, () => Buffer.from('{"a":'))
  decode('no bytes', CORRUPT, () => Buffer.alloc(0))
  decode('bytes that are not UTF-8', CORRUPT, () => Buffer.from([0xff, 0xfe, 0x7b]))
  decode('a broken compact-form value', CORRUPT, () => Buffer.from([0x01, 0xff]))
  const codecRoundTrip = (label, make, want) =>
    add(`encodeValue then decodeValue: ${label}: valid, exact`, VALID, () => {
      const v = make()
      exact(decodeValue('session', encodeValue(v)), want ? want(v) : v, 'decoded')
    })
  codecRoundTrip('a lone surrogate string', () => 'x\uDBFFy')
  codecRoundTrip('a Buffer view at an offset', () => Buffer.from('0123456789abcdef').subarray(3, 9))
  codecRoundTrip('a Uint8Array view at an offset', () => new Uint8Array(rnd(64).buffer, 16, 8), (v) => Buffer.from(v))
  codecRoundTrip('an own __proto__ key', () => JSON.parse('{"__proto__":{"x":1}}'))
  codecRoundTrip('null', () => null)
  codecRoundTrip('nested Buffers', () => ({ a: [rnd(1), { b: rnd(2) }] }))
  add('BufferJSON: replacer then reviver on a Buffer view: valid, exact', VALID, () => {
    const v = Buffer.from('abcdefghij').subarray(2, 5)
    exact(JSON.parse(JSON.stringify({ v }, BufferJSON.replacer), BufferJSON.reviver), { v }, 'revived')
  })
  add('BufferJSON: the reviver reads the 6.x array form: valid', VALID, () => {
    exact(JSON.parse('{"type":"Buffer","data":[1,2,3]}', BufferJSON.reviver), Buffer.from([1, 2, 3]), 'revived')
  })

  // ----------------------------------------------------------------- aliasing the canary
  // napi turns a lone surrogate into U+FFFD. The canary session `sid` holds a record
  // session/'k\uFFFD' and a type 'x-\uFFFD', and its twin session is `sid + '\uFFFD'`: every call
  // below would land on them if the surrogate got through. The canary check at the end shows the
  // damage.
  const alias = (label, expect, run) => add(`aliasing the canary: ${label}`, expect, run)
  alias('getCreds of sid + lone high surrogate', SID, (t) => t.store.getCreds(t.canary.sid + '\uD800'))
  alias('getKeys of id k + lone high surrogate', INV, (t) => t.store.getKeys(t.canary.sid, 'session', ['k\uD800']))
  alias('listIds of type x- + lone low surrogate', INV, (t) => t.store.listIds(t.canary.sid, 'x-\uDC00'))
  alias('setKeys on sid + lone high surrogate', SID, (t) => t.store.setKeys(t.canary.sid + '\uD800', { session: { 'k\uFFFD': { overwritten: true } } }))
  alias('saveCreds on sid + lone high surrogate', SID, (t) => t.store.saveCreds(t.canary.sid + '\uDBFF', { creds: { overwritten: true } }))
  alias('setKeys of id k + lone high surrogate', INV, (t) => t.store.setKeys(t.canary.sid, { session: { 'k\uD800': { overwritten: true } } }))
  alias('setKeys of type x- + lone high surrogate', INV, (t) => t.store.setKeys(t.canary.sid, own('x-\uD800', { k: { overwritten: true } })))
  alias('deleteKeys of id k + lone low surrogate', INV, (t) => t.store.deleteKeys(t.canary.sid, [{ type: 'session', id: 'k\uDFFF' }]))
  alias('clearSession of sid + lone low surrogate', SID, (t) => t.store.clearSession(t.canary.sid + '\uDC00'))
  alias('deleteCreds of sid + lone low surrogate', SID, (t) => t.store.deleteCreds(t.canary.sid + '\uDFFF'))

  return cases
}

/** The canary: creds and keys of several types, plus a twin whose id ends in U+FFFD. */
export function makeCanary(t) {
  const { proto, initAuthCreds } = baileys
  const sid = t.uid('canary')
  const twin = `${sid}\uFFFD`
  t.reg(twin)
  const secrets = []
  const key = (n) => {
    const b = rnd(n)
    secrets.push(b)
    return b
  }
  const main = {
    creds: { ...initAuthCreds(), advSecretKey: key(32).toString('base64') },
    keys: {
      'pre-key': { 1: { public: key(32), private: key(32) }, 2: { public: key(32), private: key(32) } },
      session: {
        '5511999999999.0': { _sessions: { [key(33).toString('base64')]: { registrationId: 7, currentRatchet: { rootKey: key(32).toString('base64') } } }, version: 'v1' },
        'k\uFFFD': { who: 'main', key: key(32) },
      },
      'sender-key': { '1203@g.us::5511999_1::0': key(64) },
      'app-state-sync-key': {
        'AAAAAB/+Zw==': proto.Message.AppStateSyncKeyData.fromObject({ keyData: key(32), fingerprint: { rawId: 5, currentIndex: 2, deviceIndexes: [0, 1] }, timestamp: 1700000000000 }),
      },
      'identity-key': { '5511999.0': Buffer.concat([Buffer.from([5]), key(32)]) },
      'x-\uFFFD': { k: { who: 'main', key: key(16) } },
    },
  }
  const twinData = {
    creds: { ...initAuthCreds(), me: { id: '5511888:1@s.whatsapp.net' } },
    keys: { session: { 'k\uFFFD': { who: 'twin', key: key(32) } }, 'pre-key': { 7: { public: key(32), private: key(32) } } },
  }
  return { sid, twin, sessions: [[sid, main], [twin, twinData]], secrets }
}
