'use strict'
// What every importer, exporter and copier shares: reading a whole session out of a store,
// writing one in as a single atomic write (so a crash never leaves a half-imported session that
// looks complete), refusing to overwrite, and verifying what was written.

const { isDeepStrictEqual } = require('node:util')
const { WaAuthStoreError, invalid } = require('../errors.js')
const { checkSessionId, checkType, isPlainObject, wellFormed } = require('../validate.js')
const { encodeValue } = require('../codec.js')

/** Ids read per getKeys call while walking a session. */
const READ_CHUNK = 500

/** Options every tool takes, checked: `{ overwrite, verify, onProgress }`. */
function toolOptions(options, extra = []) {
  if (options != null && !isPlainObject(options)) throw invalid('options must be an object')
  const o = options ?? {}
  for (const name of ['overwrite', 'verify', 'dryRun']) {
    if (o[name] != null && typeof o[name] !== 'boolean') throw invalid(`${name} must be a boolean`)
  }
  if (o.onProgress != null && typeof o.onProgress !== 'function') throw invalid('onProgress must be a function')
  const known = new Set(['overwrite', 'verify', 'dryRun', 'onProgress', ...extra])
  for (const k of Object.keys(o)) if (!known.has(k)) throw invalid(`unknown option "${k}"`)
  return { ...o, overwrite: o.overwrite === true, verify: o.verify === true, dryRun: o.dryRun === true, onProgress: o.onProgress ?? (() => {}) }
}

/** True when the store holds creds or any key of the session. */
async function sessionExists(store, sessionId) {
  const [d, types] = await Promise.all([store.describeSession(sessionId), store.listTypes(sessionId)])
  return d.creds || types.length > 0
}

/** `{ type: count }` of a `{ type: { id: value } }` object. */
function countKeys(keys) {
  const counts = {}
  for (const type of Object.keys(keys)) counts[type] = Object.keys(keys[type]).length
  return counts
}

/**
 * Reads a whole session: `{ creds, keys: { type: { id: value } } }` (creds null when absent).
 * `onType(type, count)` is told each type before it is read.
 */
async function readSession(store, sessionId, onType = () => {}) {
  checkSessionId(sessionId)
  // the types of both tiers: Redis may hold some SQL has not got yet (write-behind)
  const [got, types] = await Promise.all([store.getCreds(sessionId), store.listTypes(sessionId)])
  const keys = Object.create(null)
  for (const type of types) {
    const ids = await store.listIds(sessionId, type)
    onType(type, ids.length)
    const records = Object.create(null)
    for (let i = 0; i < ids.length; i += READ_CHUNK) {
      Object.assign(records, await store.getKeys(sessionId, type, ids.slice(i, i + READ_CHUNK)))
    }
    if (Object.keys(records).length > 0) keys[type] = records
  }
  return { creds: got?.creds ?? null, keys }
}

/**
 * Writes `{ creds, keys }` as the session, in one atomic write; returns `{ written }`. An existing
 * session that already holds exactly this state is left as it is (`written: false`: running an
 * import twice is harmless); any other existing session is refused with ERR_SESSION_EXISTS unless
 * `overwrite` (then it is deleted first: a crash between the two leaves no session, never a mix,
 * and the import can run again).
 */
async function writeSession(store, sessionId, state, { overwrite = false } = {}) {
  checkSessionId(sessionId)
  if (await sessionExists(store, sessionId)) {
    if (!overwrite) {
      const same = await verifySession(store, sessionId, state)
      if (same.mismatches.length === 0) return { written: false }
      throw new WaAuthStoreError('ERR_SESSION_EXISTS', `session "${sessionId}" already exists in the target store with other state; pass overwrite (--overwrite) to replace it`)
    }
    // everything that could refuse the new state is checked before the old one goes
    checkWritable(state)
    await checkUnsealed(store, sessionId)
    await store.deleteCreds(sessionId)
  }
  await store.saveCreds(sessionId, { creds: state.creds ?? undefined, keys: state.keys })
  return { written: true }
}

/**
 * A store without the encryption key may delete a sealed session but not write values into it
 * (ERR_CONFIG): refuse before the old state goes, not after. Only a store without a key can be
 * refused so; a sealed record it cannot open (ERR_DECRYPT) is how it tells.
 */
async function checkUnsealed(store, sessionId) {
  if (store._encrypted) return
  try {
    await readSession(store, sessionId)
  } catch (err) {
    if (err?.code !== 'ERR_DECRYPT') return // a record that does not decode is what an overwrite replaces
    throw new WaAuthStoreError('ERR_CONFIG', `session "${sessionId}" is sealed (encrypted at rest) and this store has no encryption key: open it with the key (--key-env) to replace the session`)
  }
}

/** Throws what the store's write would refuse (a type, an id or a value it cannot take). */
function checkWritable({ creds, keys }) {
  if (creds != null) encodeValue(creds)
  for (const type of Object.keys(keys ?? {})) {
    checkType(type)
    for (const id of Object.keys(keys[type])) {
      wellFormed(id, 'key id')
      if (keys[type][id] != null) encodeValue(keys[type][id])
    }
  }
}

/** Stored bytes of a value, for comparing what was meant with what was read back. */
function canonical(value) {
  return value == null ? null : Buffer.from(encodeValue(value))
}

/**
 * Reads the session back and compares it with `expected` (`{ creds, keys }`) record by record.
 * Returns `{ records, mismatches: [{ type, id, problem }] }`; `type` is 'creds' for the creds.
 */
async function verifySession(store, sessionId, expected) {
  const actual = await readSession(store, sessionId)
  const mismatches = []
  let records = 0
  const compare = (type, id, want, got) => {
    records++
    if (got == null) mismatches.push({ type, id, problem: 'missing' })
    else if (!isDeepStrictEqual(canonical(want), canonical(got))) mismatches.push({ type, id, problem: 'different' })
  }
  if (expected.creds != null) compare('creds', '', expected.creds, actual.creds)
  for (const type of Object.keys(expected.keys ?? {})) {
    for (const id of Object.keys(expected.keys[type])) compare(type, id, expected.keys[type][id], actual.keys[type]?.[id])
  }
  for (const type of Object.keys(actual.keys)) {
    for (const id of Object.keys(actual.keys[type])) {
      if (expected.keys?.[type]?.[id] === undefined) mismatches.push({ type, id, problem: 'unexpected' })
    }
  }
  return { records, mismatches }
}

/** Throws ERR_VERIFY_FAILED naming the first mismatches (ids only: never values). */
function assertVerified(sessionId, result) {
  if (result.mismatches.length === 0) return
  const shown = result.mismatches.slice(0, 5).map((m) => `${m.type}/${m.id}: ${m.problem}`).join(', ')
  const err = new WaAuthStoreError('ERR_VERIFY_FAILED', `session "${sessionId}": ${result.mismatches.length} of ${result.records} records did not read back as written (${shown})`)
  err.mismatches = result.mismatches
  throw err
}

module.exports = { toolOptions, sessionExists, countKeys, readSession, writeSession, verifySession, assertVerified, READ_CHUNK }
