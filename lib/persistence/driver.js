'use strict'
// PersistenceDriver: lets a JavaScript object stand in for the built-in SQL tier. The core calls
// one function, `handle(requestJson)`, with a JSON request and awaits a JSON response (bytes as
// base64 inside the JSON); this file turns that into calls on a user's `Persistence` object. It
// decides nothing itself: inside each transaction it reads the rows, asks the core's rules what
// to write (`persistenceRule` of the binding: crates/core/src/sql/rules.rs, the same rules the
// SQL tier applies: versions that only rise, creds replaced only by a newer creds version,
// tombstones, the cleared watermark, fencing by epoch, the lease decision), and writes that. An
// adapter only stores and returns rows; as long as its transactions are atomic and serialised per
// session, the store keeps the guarantees it has on SQL.

/**
 * A session's row. The driver writes every field; an adapter stores it as given and returns it
 * as stored (the driver adds `sessionId` to rows it passes in; rows an adapter returns need not
 * carry it). Numbers are non-negative integers below 2^53 (`bigint` and decimal strings are
 * accepted back, for ORMs that map BIGINT columns that way).
 * @typedef {object} PersistenceSession
 * @property {string} [sessionId]
 * @property {Buffer|null} creds          the encoded creds, null when the session has none
 * @property {number} credsVersion        the version that wrote `creds` (or deleted them)
 * @property {number} version             the highest version committed for the session
 * @property {number} clearedVersion      key rows below this version are dead (a clear)
 * @property {number} epoch               the highest epoch that took the session: older writers are fenced
 * @property {number} [epochSeq]          the highest epoch handed out (0 when the adapter does not keep it)
 * @property {number} [sealed]            1 once a store with an encryption key took the session
 * @property {number} createdAt           epoch ms
 * @property {number} updatedAt           epoch ms
 */

/**
 * A key row: a value, or a tombstone (`value: null`) that keeps an older copy from coming back.
 * @typedef {object} PersistenceKey
 * @property {string} [sessionId]
 * @property {string} type
 * @property {string} id
 * @property {Buffer|null} value
 * @property {number} version
 * @property {number} [updatedAt]         epoch ms (written by the driver; not read back)
 */

/**
 * A session's lease row (one per session at most).
 * @typedef {object} PersistenceLease
 * @property {string} [sessionId]
 * @property {string} token               the holder's secret token
 * @property {string} holder              the holder's id, for messages
 * @property {number} epoch
 * @property {number} expiresAt           epoch ms
 * @property {number} acquiredAt          epoch ms
 */

/**
 * A key row without its value, as `listKeys` returns it.
 * @typedef {object} PersistenceKeyListing
 * @property {string} type
 * @property {string} id
 * @property {number} version
 * @property {number|null} size           the value's byte length; null for a tombstone
 */

/**
 * What a transaction can do. Every method works on the session `transaction()` was called for;
 * reads see the transaction's own writes. The object is only valid until the callback settles.
 * @typedef {object} PersistenceTransaction
 * @property {() => Promise<PersistenceSession|null>} getSession
 * @property {(row: PersistenceSession) => Promise<void>} putSession      insert or replace the session row
 * @property {(refs: {type: string, id: string}[]) => Promise<PersistenceKey[]>} getKeys
 *   the rows of these keys, tombstones included, missing ones left out, in any order (one batch;
 *   split it if your database limits parameters)
 * @property {(rows: PersistenceKey[]) => Promise<void>} putKeys         insert or replace each row
 * @property {(version: number) => Promise<void>} deleteKeysBelow       delete the session's key rows with version < `version`
 * @property {() => Promise<PersistenceLease|null>} getLease
 * @property {(row: PersistenceLease) => Promise<void>} putLease         insert or replace the lease row
 * @property {() => Promise<void>} deleteLease
 */

/**
 * The object a user writes to plug a database or ORM of their own under the store.
 *
 * The one hard requirement is `transaction(sessionId, fn)`: run `fn(tx)` so that
 *   1. transactions of one session never interleave (across processes too, when several share
 *      the database: lock the session's row, a document, a lock item, ...), and it must work for
 *      a session that has no row yet;
 *   2. every write made through `tx` is applied when `fn` resolves and none when it rejects;
 *   3. the promise rejects when `fn` or the commit fails.
 * It may run `fn` again after a conflict the database reports (fn starts over from its reads).
 * Everything else is plain reads: rows as stored, tombstones and dead rows included (the driver
 * filters). Values are always Buffers (Uint8Array accepted back). Error messages reach the
 * store's ERR_DATABASE error: never put value bytes in them.
 *
 * @typedef {object} Persistence
 * @property {<T>(sessionId: string, fn: (tx: PersistenceTransaction) => Promise<T>) => Promise<T>} transaction
 * @property {(sessionId: string) => Promise<PersistenceSession|null>} getSession
 * @property {(sessionId: string, type: string, ids: string[]) => Promise<PersistenceKey[]>} getKeys
 *   rows of one type (tombstones included, missing left out, any order), one batch
 * @property {(sessionId: string, type?: string) => Promise<PersistenceKeyListing[]>} listKeys
 *   every key row of the session, of one type or (type undefined) of all types, without values
 * @property {() => Promise<{sessionId: string, hasCreds: boolean, version: number, updatedAt: number}[]>} listSessions
 *   every session row, any order
 * @property {(sessionId: string) => Promise<void>} deleteSession
 *   remove the session row, its key rows and its lease row (atomically, if you can)
 * @property {() => Promise<void>} [close]
 */

const REQUIRED = ['transaction', 'getSession', 'getKeys', 'listKeys', 'listSessions', 'deleteSession']
const TX_REQUIRED = ['getSession', 'putSession', 'getKeys', 'putKeys', 'deleteKeysBelow', 'getLease', 'putLease', 'deleteLease']
/** Sessions of one commit applied at once (each in its own transaction). */
const PARALLEL_SESSIONS = 4
/** Longest message of a user error passed on (guards against a dump of a whole query). */
const MAX_MESSAGE = 1000
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/
const OWN = Symbol('wa-auth-store.persistence')
/** Where store-wide settings live: key rows of a session no real id can name (ids hold no control characters). */
const SETTINGS = '\u0001wa-auth-store:settings'

function ownError(message) {
  const err = new Error(message)
  err[OWN] = true
  return err
}

// ---- requests ------------------------------------------------------------------------------

function isObject(v) {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function field(req, name, check, what) {
  const v = req[name]
  if (!check(v)) throw ownError(`invalid persistence request (op ${req.op}): ${name} must be ${what}`)
  return v
}

const isUint = (v) => Number.isSafeInteger(v) && v >= 0
const isString = (v) => typeof v === 'string'
const isSid = (v) => typeof v === 'string' && v.length > 0

function uintField(req, name) {
  return field(req, name, isUint, 'a non-negative integer below 2^53')
}

function sidField(req, name = 'sid') {
  return field(req, name, isSid, 'a non-empty string')
}

function bytesField(req, name, op) {
  const v = req[name]
  if (v === null) return null
  if (typeof v !== 'string' || v.length % 4 !== 0 || !BASE64.test(v)) {
    throw ownError(`invalid persistence request (op ${op}): ${name} must be base64 or null`)
  }
  return Buffer.from(v, 'base64')
}

function arrayField(req, name) {
  return field(req, name, Array.isArray, 'an array')
}

/** `items[i]` as an object, for the field checks (its op names where it sits). */
function item(req, name, i) {
  const v = req[name][i]
  if (!isObject(v)) throw ownError(`invalid persistence request (op ${req.op}): ${name}[${i}] must be an object`)
  return { ...v, op: `${req.op}, ${name}[${i}]` }
}

// ---- what adapters return --------------------------------------------------------------------

function count(v, where) {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return v
  if (typeof v === 'bigint' && v >= 0n && v < 2n ** 53n) return Number(v)
  if (typeof v === 'string' && /^[0-9]{1,16}$/.test(v) && Number.isSafeInteger(Number(v))) return Number(v)
  throw ownError(`${where} must be a non-negative integer below 2^53 (got ${typeof v === 'string' ? `'${v.slice(0, 20)}'` : typeof v})`)
}

/**
 * A value or creds column: a Buffer, or null for none. A missing property (a column the adapter
 * did not select, a misspelt field) is refused: read as "none" it would make creds look absent,
 * and Baileys would pair anew over the real ones.
 */
function bytes(v, where) {
  if (v === undefined) throw ownError(`${where} is missing (a Buffer, or null for none, is required)`)
  if (v === null) return null
  if (Buffer.isBuffer(v)) return v
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength)
  throw ownError(`${where} must be a Buffer or null (got ${typeof v})`)
}

function text(v, where) {
  if (typeof v !== 'string') throw ownError(`${where} must be a string (got ${typeof v})`)
  return v
}

function readSession(row, method) {
  if (row === null || row === undefined) return null
  if (!isObject(row)) throw ownError(`${method} must resolve with a session row or null`)
  const at = (name) => `${method}: ${name}`
  return {
    creds: bytes(row.creds, at('creds')),
    credsVersion: count(row.credsVersion, at('credsVersion')),
    version: count(row.version, at('version')),
    clearedVersion: count(row.clearedVersion, at('clearedVersion')),
    epoch: count(row.epoch, at('epoch')),
    epochSeq: row.epochSeq === undefined || row.epochSeq === null ? 0 : count(row.epochSeq, at('epochSeq')),
    sealed: row.sealed === undefined || row.sealed === null ? 0 : count(row.sealed, at('sealed')),
    createdAt: count(row.createdAt, at('createdAt')),
    updatedAt: count(row.updatedAt, at('updatedAt')),
  }
}

function rows(list, method) {
  if (!Array.isArray(list)) throw ownError(`${method} must resolve with an array`)
  return list.map((row, i) => {
    if (!isObject(row)) throw ownError(`${method}: row ${i} must be an object`)
    return row
  })
}

function readKey(row, method) {
  return {
    type: text(row.type, `${method}: type`),
    id: text(row.id, `${method}: id`),
    value: bytes(row.value, `${method}: value of '${row.type}' '${row.id}'`),
    version: count(row.version, `${method}: version`),
  }
}

function readLease(row, method) {
  if (row === null || row === undefined) return null
  if (!isObject(row)) throw ownError(`${method} must resolve with a lease row or null`)
  return {
    token: text(row.token, `${method}: token`),
    holder: text(row.holder, `${method}: holder`),
    epoch: count(row.epoch, `${method}: epoch`),
    expiresAt: count(row.expiresAt, `${method}: expiresAt`),
    acquiredAt: count(row.acquiredAt, `${method}: acquiredAt`),
  }
}

// ---- rules: the core's, through the binding ---------------------------------------------------

let native = null
/** The core's rule `name` (crates/core/src/sql/rules_json.rs) on `input`. */
function rule(name, input) {
  native ??= require('../../binding.js')
  return JSON.parse(native.persistenceRule(name, JSON.stringify(input)))
}

/** A session row as it is before anything is written: no creds, versions and epochs at `floor`. */
function emptySession(now, floor = 0) {
  return { creds: null, credsVersion: 0, version: 0, clearedVersion: 0, epoch: 0, epochSeq: floor, sealed: 0, createdAt: now, updatedAt: now }
}

/** The session row after a commit or clear the rule allowed (`s`: its merged numbers). */
function mergedSession(stored, incoming, s, now) {
  const base = stored ?? emptySession(now)
  return {
    ...base,
    creds: s.credsFromIncoming ? incoming.creds : base.creds,
    credsVersion: s.credsVersion,
    version: s.version,
    clearedVersion: s.clearedVersion,
    updatedAt: now,
  }
}

/** Which of `rows` are read (a value, at or above the cleared watermark). */
function liveRows(rows, cleared) {
  if (rows.length === 0) return rows
  const has = (r) => ('size' in r ? r.size !== null : r.value !== null)
  const live = rule('live', { cleared, rows: rows.map((r) => [has(r), r.version]) })
  return rows.filter((_, i) => live[i])
}

const leaseOf = (l) => (l ? { token: l.token, holder: l.holder, epoch: l.epoch, expiresAt: l.expiresAt, acquiredAt: l.acquiredAt } : null)

/** Sorts by the strings' UTF-8 bytes (Unicode code point order, SQLite's BINARY collation). */
function sortByBytes(items, keyOf) {
  return items
    .map((it) => [Buffer.from(keyOf(it), 'utf8'), it])
    .sort((a, b) => Buffer.compare(a[0], b[0]))
    .map(([, it]) => it)
}

const keyOf = (type, id) => `${type.length}:${type}\u0000${id}`

/** `fn` over `items`, at most `limit` at a time; every call settles before this does. */
async function settleAll(items, limit, fn) {
  const out = new Array(items.length)
  let next = 0
  const worker = async () => {
    while (next < items.length) {
      const i = next++
      try {
        out[i] = { ok: true, value: await fn(items[i]) }
      } catch (error) {
        out[i] = { ok: false, error }
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  return out
}

// ---- the driver ------------------------------------------------------------------------------

class PersistenceDriver {
  /**
   * @param {Persistence} persistence
   * @param {{ now?: () => number }} [options]  `now`: the clock (epoch ms) for row times and
   *   lease expiry, `Date.now` by default (tests pass a fake one)
   */
  constructor(persistence, options = {}) {
    if (!isObject(persistence) && typeof persistence !== 'function') throw new TypeError('persistence must be an object implementing the Persistence interface')
    const missing = REQUIRED.filter((m) => typeof persistence[m] !== 'function')
    if (missing.length) throw new TypeError(`persistence lacks ${missing.map((m) => `${m}()`).join(', ')} (see the Persistence interface in lib/persistence/driver.js)`)
    if (persistence.close !== undefined && typeof persistence.close !== 'function') throw new TypeError('persistence.close must be a function when present')
    const now = options.now ?? Date.now
    if (typeof now !== 'function') throw new TypeError('options.now must be a function')
    this.persistence = persistence
    this.now = () => count(now(), 'options.now()')
  }

  /** Runs one request of the core: a JSON string in, a JSON string out. */
  async handle(requestJson) {
    if (typeof requestJson !== 'string') throw ownError('persistence request must be a JSON string')
    let req
    try {
      req = JSON.parse(requestJson)
    } catch (err) {
      throw ownError(`persistence request is not valid JSON: ${err.message}`)
    }
    if (!isObject(req) || typeof req.op !== 'string') throw ownError('persistence request must be an object with a string op')
    const run = Object.hasOwn(OPS, req.op) ? OPS[req.op] : undefined
    if (!run) throw ownError(`unknown persistence op '${req.op.slice(0, 40)}'`)
    const result = await run.call(this, req)
    return JSON.stringify(result === undefined ? null : result)
  }

  /** Calls the persistence; a failure of its own gets the op and session in front. */
  async call(what, sid, fn) {
    try {
      return await fn()
    } catch (err) {
      if (err && err[OWN]) throw err
      const message = err instanceof Error ? err.message : String(err)
      const cut = message.length > MAX_MESSAGE ? `${message.slice(0, MAX_MESSAGE)}…` : message
      const wrapped = ownError(`${what}${sid === undefined ? '' : ` of session '${sid}'`} failed: ${cut}`)
      wrapped.cause = err
      throw wrapped
    }
  }

  /** `fn(tx)` in one transaction of the session; resolves with what `fn` returned (last run). */
  async transaction(op, sid, fn) {
    let ran = false
    let out
    await this.call(`Persistence.transaction (${op})`, sid, () =>
      this.persistence.transaction(sid, async (tx) => {
        const missing = isObject(tx) ? TX_REQUIRED.filter((m) => typeof tx[m] !== 'function') : TX_REQUIRED
        if (missing.length) throw ownError(`Persistence.transaction gave its callback a transaction without ${missing.map((m) => `${m}()`).join(', ')}`)
        out = await fn(tx)
        ran = true
        return out
      }),
    )
    if (!ran) throw ownError(`Persistence.transaction resolved without running its callback to the end (${op} of session '${sid}')`)
    return out
  }

  /** One session of a commit, in one transaction: fenced (true) or applied (false). */
  async commitSession(s, keys, fence, now) {
    return this.transaction('commit', s.sid, async (tx) => {
      const stored = readSession(await tx.getSession(), 'tx.getSession')
      const method = 'tx.getKeys'
      const existing = new Map()
      if (keys.length) {
        for (const raw of rows(await tx.getKeys(keys.map((k) => ({ type: k.type, id: k.id }))), method)) {
          const row = readKey(raw, method)
          const key = keyOf(row.type, row.id)
          const seen = existing.get(key)
          if (!seen || seen.version < row.version) existing.set(key, row)
        }
      }
      const plan = rule('commit', {
        fence: fence ?? null,
        stored,
        incoming: { version: s.version, credsVersion: s.credsVersion, cleared: s.cleared },
        storedKeys: keys.map((k) => existing.get(keyOf(k.type, k.id))?.version ?? null),
        incomingKeys: keys.map((k) => k.version),
      })
      if (plan.fenced) return true
      await tx.putSession({ sessionId: s.sid, ...mergedSession(stored, s, plan.session, now) })
      const put = plan.putKeys.map((i) => keys[i]).map((k) => ({ sessionId: s.sid, type: k.type, id: k.id, value: k.value, version: k.version, updatedAt: now }))
      if (put.length) await tx.putKeys(put)
      return false
    })
  }

  /** The session's settings row of `name` (a number), inside `tx` of the settings session. */
  static async settingIn(tx, name) {
    const found = rows(await tx.getKeys([{ type: 'setting', id: name }]), 'tx.getKeys')
    return found.reduce((m, r) => Math.max(m, count(readKey(r, 'tx.getKeys').version, 'setting')), 0)
  }

  /** Raises a store-wide setting (kept as the version of a key row of the settings session). */
  async raiseSetting(name, value, now) {
    await this.transaction('raiseSetting', SETTINGS, async (tx) => {
      const cur = await PersistenceDriver.settingIn(tx, name)
      if (value <= cur) return
      if (!readSession(await tx.getSession(), 'tx.getSession')) await tx.putSession({ sessionId: SETTINGS, ...emptySession(now) })
      await tx.putKeys([{ sessionId: SETTINGS, type: 'setting', id: name, value: Buffer.alloc(0), version: value, updatedAt: now }])
    })
  }

  async setting(name) {
    return this.transaction('setting', SETTINGS, (tx) => PersistenceDriver.settingIn(tx, name))
  }

  async getSession(sid) {
    return readSession(await this.call('Persistence.getSession', sid, () => this.persistence.getSession(sid)), 'Persistence.getSession')
  }

  /** The session's key rows (of `type`, or all), without values. */
  async listKeys(sid, type) {
    const list = rows(await this.call('Persistence.listKeys', sid, () => this.persistence.listKeys(sid, type)), 'Persistence.listKeys')
    const method = 'Persistence.listKeys'
    return list.map((r) => ({
      type: text(r.type, `${method}: type`),
      id: text(r.id, `${method}: id`),
      version: count(r.version, `${method}: version`),
      size: r.size === null || r.size === undefined ? null : count(r.size, `${method}: size`),
    }))
  }
}

/** One handler per op; `this` is the driver. */
const OPS = {
  async getCreds(req) {
    const sid = sidField(req)
    const row = await this.getSession(sid)
    return row && row.creds !== null ? { value: row.creds.toString('base64'), version: row.credsVersion } : null
  },

  async sessionVersion(req) {
    const row = await this.getSession(sidField(req))
    return row ? row.version : 0
  },

  async sessionEpoch(req) {
    const row = await this.getSession(sidField(req))
    return row ? row.epoch : 0
  },

  async getKeys(req) {
    const sid = sidField(req)
    const type = field(req, 'type', isString, 'a string')
    const ids = arrayField(req, 'ids')
    ids.forEach((id, i) => {
      if (typeof id !== 'string') throw ownError(`invalid persistence request (op getKeys): ids[${i}] must be a string`)
    })
    if (ids.length === 0) return []
    const unique = [...new Set(ids)]
    const method = 'Persistence.getKeys'
    const found = rows(await this.call(method, sid, () => this.persistence.getKeys(sid, type, unique)), method)
    // the watermark is read after the rows: a clear that raced the read hides what it cleared
    const session = await this.getSession(sid)
    const cleared = session ? session.clearedVersion : 0
    const wanted = new Set(unique)
    const newest = new Map()
    for (const raw of found) {
      const row = readKey({ type, ...raw }, method)
      if (row.type !== type || !wanted.has(row.id)) continue
      const seen = newest.get(row.id)
      if (!seen || seen.version < row.version) newest.set(row.id, row)
    }
    return liveRows([...newest.values()], cleared).map((r) => ({ id: r.id, value: r.value.toString('base64'), version: r.version }))
  },

  async commit(req) {
    const sessions = arrayField(req, 'sessions').map((_, i) => {
      const s = item(req, 'sessions', i)
      return { sid: sidField(s), version: uintField(s, 'version'), creds: bytesField(s, 'creds', s.op), credsVersion: uintField(s, 'credsVersion'), cleared: uintField(s, 'cleared') }
    })
    const bySid = new Map()
    for (const s of sessions) {
      if (bySid.has(s.sid)) throw ownError(`invalid persistence request (op commit): session '${s.sid}' is listed twice in sessions`)
      bySid.set(s.sid, new Map())
    }
    arrayField(req, 'keys').forEach((_, i) => {
      const k = item(req, 'keys', i)
      const row = { sid: sidField(k), type: field(k, 'type', isString, 'a string'), id: field(k, 'id', isString, 'a string'), value: bytesField(k, 'value', k.op), version: uintField(k, 'version') }
      const keys = bySid.get(row.sid)
      if (!keys) throw ownError(`invalid persistence request (op commit): keys[${i}] names session '${row.sid}', which is not in sessions`)
      const key = keyOf(row.type, row.id)
      const old = keys.get(key)
      if (!old || row.version >= old.version) keys.set(key, row)
    })
    const fences = new Map()
    arrayField(req, 'fences').forEach((_, i) => {
      const f = item(req, 'fences', i)
      const sid = sidField(f)
      const epoch = uintField(f, 'epoch')
      fences.set(sid, Math.min(epoch, fences.get(sid) ?? epoch))
    })
    const now = this.now()
    const results = await settleAll(sessions, PARALLEL_SESSIONS, (s) => this.commitSession(s, [...bySid.get(s.sid).values()], fences.get(s.sid), now))
    const failed = results.find((r) => !r.ok)
    if (failed) throw failed.error
    return { fenced: sessions.filter((_, i) => results[i].value).map((s) => s.sid) }
  },

  async clear(req) {
    const sid = sidField(req)
    const version = uintField(req, 'version')
    const keepCreds = field(req, 'keepCreds', (v) => typeof v === 'boolean', 'a boolean')
    const epoch = req.epoch === null || req.epoch === undefined ? null : uintField(req, 'epoch')
    const now = this.now()
    return this.transaction('clear', sid, async (tx) => {
      const stored = readSession(await tx.getSession(), 'tx.getSession')
      const incoming = { version, creds: null, credsVersion: keepCreds ? 0 : version, cleared: version }
      const plan = rule('clear', { fence: epoch, stored, incoming })
      if (plan.fenced) return false
      await tx.putSession({ sessionId: sid, ...mergedSession(stored, incoming, plan.session, now) })
      await tx.deleteKeysBelow(version)
      return true
    })
  },

  async allocateEpoch(req) {
    const sid = sidField(req)
    const floor = uintField(req, 'floor')
    const seal = field(req, 'seal', (v) => typeof v === 'boolean', 'a boolean')
    // a reacquisition of a lapsed lease: the epoch the taker held (the rule may refuse it)
    const since = req.since === null || req.since === undefined ? undefined : uintField(req, 'since')
    const now = this.now()
    const purged = await this.setting('epoch_floor')
    return this.transaction('allocateEpoch', sid, async (tx) => {
      const row = readSession(await tx.getSession(), 'tx.getSession')
      const stored = row ?? emptySession(now, purged)
      // a reacquisition of a session without a row (purged) is the rule's to refuse (null), and
      // then no row is made
      const epochs = row || since === undefined ? { epoch: stored.epoch, seq: stored.epochSeq } : null
      const epoch = rule('allocate', { epochs, floor, since })
      if (epoch === null) return null
      await tx.putSession({ sessionId: sid, ...stored, epochSeq: epoch, sealed: Math.max(stored.sealed, seal ? 1 : 0) })
      return { epoch, sealed: stored.sealed > 0 }
    })
  },

  async raiseEpoch(req) {
    const sid = sidField(req)
    const epoch = uintField(req, 'epoch')
    return this.transaction('raiseEpoch', sid, async (tx) => {
      const stored = readSession(await tx.getSession(), 'tx.getSession')
      if (!stored) return false
      if (epoch > stored.epoch || epoch > stored.epochSeq) {
        await tx.putSession({ sessionId: sid, ...stored, epoch: Math.max(stored.epoch, epoch), epochSeq: Math.max(stored.epochSeq, epoch) })
      }
      return true
    })
  },

  async leaseTake(req) {
    const sid = sidField(req)
    const request = {
      sid,
      token: field(req, 'token', isString, 'a string'),
      holder: field(req, 'holder', isString, 'a string'),
      ttlMs: uintField(req, 'ttlMs'),
      mode: field(req, 'mode', (v) => v === 'acquire' || v === 'claim' || v === 'reacquire', "'acquire', 'claim' or 'reacquire'"),
      force: field(req, 'force', (v) => typeof v === 'boolean', 'a boolean'),
      checkLive: field(req, 'checkLive', (v) => typeof v === 'boolean', 'a boolean'),
      since: uintField(req, 'since'),
      floor: uintField(req, 'floor'),
      seal: field(req, 'seal', (v) => typeof v === 'boolean', 'a boolean'),
    }
    const now = this.now()
    const purged = await this.setting('epoch_floor')
    return this.transaction('leaseTake', sid, async (tx) => {
      const found = readSession(await tx.getSession(), 'tx.getSession')
      const stored = found ?? emptySession(now, purged)
      const current = readLease(await tx.getLease(), 'tx.getLease')
      const out = rule('take', { request, current: leaseOf(current), epochs: { epoch: stored.epoch, seq: stored.epochSeq }, missing: !found, now })
      const sealed = stored.sealed > 0
      if (out.taken !== 'granted') return { ...out, sealed, now }
      if (out.lease.write === 'put') await tx.putLease({ sessionId: sid, ...out.lease.row })
      else if (out.lease.write === 'delete') await tx.deleteLease()
      await tx.putSession({ sessionId: sid, ...stored, epoch: out.epochs.epoch, epochSeq: out.epochs.seq, sealed: Math.max(stored.sealed, request.seal ? 1 : 0) })
      return { taken: 'granted', epoch: out.epoch, acquiredAt: out.acquiredAt, expiresAt: out.expiresAt, sealed, now }
    })
  },

  async leaseRenew(req) {
    const sid = sidField(req)
    const token = field(req, 'token', isString, 'a string')
    const ttlMs = uintField(req, 'ttlMs')
    const now = this.now()
    return this.transaction('leaseRenew', sid, async (tx) => {
      const lease = readLease(await tx.getLease(), 'tx.getLease')
      const expiresAt = rule('renew', { current: leaseOf(lease), token, ttlMs, now })
      if (expiresAt === null) return false
      await tx.putLease({ sessionId: sid, ...lease, expiresAt })
      return true
    })
  },

  async leaseRelease(req) {
    const sid = sidField(req)
    const token = field(req, 'token', isString, 'a string')
    await this.transaction('leaseRelease', sid, async (tx) => {
      const lease = readLease(await tx.getLease(), 'tx.getLease')
      if (lease && lease.token === token) await tx.deleteLease()
    })
    return null
  },

  async leaseInfo(req) {
    const sid = sidField(req)
    const now = this.now()
    const lease = await this.transaction('leaseInfo', sid, async (tx) => readLease(await tx.getLease(), 'tx.getLease'))
    return lease ? { ...lease, now } : null
  },

  async summary(req) {
    const sid = sidField(req)
    const list = await this.listKeys(sid, undefined)
    const session = await this.getSession(sid)
    const cleared = session ? session.clearedVersion : 0
    const byType = new Map()
    for (const r of liveRows(list, cleared)) {
      const t = byType.get(r.type) ?? { type: r.type, count: 0, bytes: 0 }
      t.count += 1
      t.bytes += r.size
      byType.set(r.type, t)
    }
    return sortByBytes([...byType.values()], (t) => t.type)
  },

  async listIds(req) {
    const sid = sidField(req)
    const type = field(req, 'type', isString, 'a string')
    const list = await this.listKeys(sid, type)
    const session = await this.getSession(sid)
    const cleared = session ? session.clearedVersion : 0
    const ids = new Set(liveRows(list.filter((r) => r.type === type), cleared).map((r) => r.id))
    return sortByBytes([...ids], (id) => id)
  },

  async listSessions() {
    const method = 'Persistence.listSessions'
    const list = rows(await this.call(method, undefined, () => this.persistence.listSessions()), method)
    return sortByBytes(
      list.filter((r) => r.sessionId !== SETTINGS).map((r) => ({
        sid: text(r.sessionId, `${method}: sessionId`),
        hasCreds: Boolean(r.hasCreds),
        version: count(r.version, `${method}: version`),
        updatedAt: count(r.updatedAt, `${method}: updatedAt`),
      })),
      (s) => s.sid,
    )
  },

  async purge(req) {
    const sid = sidField(req)
    // new sessions start above every epoch the purged one had: a holder paused across the purge
    // stays fenced
    const session = await this.getSession(sid)
    if (session) await this.raiseSetting('epoch_floor', Math.max(session.epoch, session.epochSeq), this.now())
    await this.call('Persistence.deleteSession', sid, () => this.persistence.deleteSession(sid))
    return null
  },

  async close() {
    if (typeof this.persistence.close === 'function') await this.call('Persistence.close', undefined, () => this.persistence.close())
    return null
  },
}

module.exports.PersistenceDriver = PersistenceDriver
