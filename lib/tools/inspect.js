'use strict'
// Looking at what a store holds without writing code: the sessions, one session in detail, and a
// check that every record decodes. Read-only.

const { WaAuthStoreError, invalid } = require('../errors.js')
const { checkSessionId } = require('../validate.js')
const { READ_CHUNK } = require('./common.js')

/** Codes of a record that cannot be read (as opposed to a backend failure). */
const UNREADABLE = new Set(['ERR_CORRUPT_VALUE', 'ERR_DECRYPT'])

/** The creds fields Baileys cannot open a socket without (key pairs hold 32-byte keys). */
const CREDS_KEY_PAIRS = ['noiseKey', 'signedIdentityKey', 'pairingEphemeralKeyPair']

/** What is wrong with a creds object, or null when it looks like Baileys' AuthenticationCreds. */
function credsProblem(creds) {
  if (creds === null || typeof creds !== 'object' || Array.isArray(creds)) return 'creds is not an object'
  for (const name of CREDS_KEY_PAIRS) {
    const pair = creds[name]
    if (!pair || !Buffer.isBuffer(pair.private) || !Buffer.isBuffer(pair.public)) return `creds.${name} is not a key pair of Buffers`
    if (pair.private.length !== 32 || pair.public.length !== 32) return `creds.${name} keys are not 32 bytes`
  }
  if (!Number.isInteger(creds.registrationId)) return 'creds.registrationId is not an integer'
  if (!creds.signedPreKey || !Buffer.isBuffer(creds.signedPreKey.signature)) return 'creds.signedPreKey has no signature'
  return null
}

/**
 * One session: `{ id, exists, registered, me, creds, credsBytes, types: [{ type, count, bytes }],
 * keys, bytes, lease }`. `me` is creds.me.id (null before pairing).
 */
async function describe(store, sessionId) {
  checkSessionId(sessionId)
  const [d, got, lease] = await Promise.all([
    store.describeSession(sessionId),
    // unreadable creds (ERR_DECRYPT without the key): the session is described without me.id
    store.getCreds(sessionId).catch((err) => {
      if (!UNREADABLE.has(err?.code)) throw err
      return null
    }),
    store.leaseInfo(sessionId).catch(() => null),
  ])
  const creds = got?.creds ?? null
  const keys = d.types.reduce((n, t) => n + t.count, 0)
  const bytes = d.types.reduce((n, t) => n + t.bytes, d.credsBytes)
  return {
    id: sessionId,
    exists: d.creds || keys > 0,
    registered: creds?.registered === true,
    me: creds?.me?.id ?? null,
    creds: d.creds,
    credsBytes: d.credsBytes,
    types: d.types,
    keys,
    bytes,
    lease: lease && { holder: lease.holder, epoch: lease.epoch, expiresAt: lease.expiresAt },
    ...(d.credsUnreadable ? { credsUnreadable: d.credsUnreadable } : {}),
  }
}

/**
 * Every session with its summary (deleted sessions, whose only trace is the record of their
 * deletion, are left out): `[{ id, registered, me, keys, bytes, updatedAt, ... }]`.
 */
async function listSessionSummaries(store, { onProgress = () => {} } = {}) {
  const listed = await store.listSessions()
  const out = []
  let done = 0
  for (const s of listed) {
    const d = await describe(store, s.id)
    onProgress(++done, listed.length)
    if (d.exists) out.push({ ...d, updatedAt: s.updatedAt, inSql: s.inSql, inRedis: s.inRedis })
  }
  return out
}

/**
 * Decodes every record of the session and reports the ones that do not:
 * `{ id, records, corrupt: [{ type, id, bytes, problem }] }`. Creds are also checked for the fields
 * Baileys needs. A backend failure rejects (it is not a corrupt record).
 */
async function verifySession(store, sessionId) {
  checkSessionId(sessionId)
  const corrupt = []
  let records = 0
  try {
    const got = await store.getCreds(sessionId)
    if (got) {
      records++
      const problem = credsProblem(got.creds)
      if (problem) corrupt.push({ type: 'creds', id: '', code: 'ERR_CORRUPT_VALUE', problem })
    }
  } catch (err) {
    if (!UNREADABLE.has(err?.code)) throw err
    records++
    corrupt.push({ type: 'creds', id: '', code: err.code, problem: err.message })
  }
  for (const type of await store.listTypes(sessionId)) {
    const ids = await store.listIds(sessionId, type)
    for (let i = 0; i < ids.length; i += READ_CHUNK) {
      const chunk = ids.slice(i, i + READ_CHUNK)
      records += chunk.length
      try {
        await store.getKeys(sessionId, type, chunk)
      } catch (err) {
        if (!UNREADABLE.has(err?.code)) throw err
        // one record spoils the batch: find which, one by one
        for (const id of chunk) {
          try {
            await store.getKeys(sessionId, type, [id])
          } catch (e) {
            if (!UNREADABLE.has(e?.code)) throw e
            corrupt.push({ type, id, code: e.code, problem: e.message })
          }
        }
      }
    }
  }
  return { id: sessionId, records, corrupt }
}

/** verifySession over the named sessions, or every session of the store. */
async function verifySessions(store, sessionIds, { onProgress = () => {} } = {}) {
  if (sessionIds != null && !Array.isArray(sessionIds)) throw invalid('sessionIds must be an array of session ids')
  const ids = sessionIds ?? (await store.listSessions()).map((s) => s.id)
  const out = []
  let done = 0
  for (const id of ids) {
    const r = await verifySession(store, id)
    // a deleted session's record of deletion holds nothing to verify; a named one is a mistake
    if (sessionIds && r.records === 0) throw new WaAuthStoreError('ERR_SESSION_NOT_FOUND', `the store holds no session "${id}"`)
    if (r.records > 0) out.push(r)
    onProgress(++done, ids.length)
  }
  return out
}

/** Throws ERR_SESSION_NOT_FOUND unless the store holds the session. */
async function requireSession(store, sessionId) {
  const d = await describe(store, sessionId)
  if (!d.exists) throw new WaAuthStoreError('ERR_SESSION_NOT_FOUND', `the store holds no session "${sessionId}"`)
  return d
}

module.exports = { describe, listSessionSummaries, verifySession, verifySessions, requireSession, credsProblem }
