'use strict'
// useBaileysAuthState: the { state, saveCreds } a Baileys socket consumes directly.

const { requireInitAuthCreds, resolveBaileys } = require('./baileys.js')
const { WaAuthStoreError, invalid, reading } = require('./errors.js')
const { BaileysAuthStore, encodeCreds, openAuthStore, writeOptions } = require('./store.js')
const { checkSessionId, isPlainObject } = require('./validate.js')
const { SessionLease, leaseOptions } = require('./lease.js')

const LIST_BATCH = 500

/**
 * Writes creds snapshots strictly in call order while coalescing bursts.
 *
 * At most one `write` runs at a time. A call made while the writer is idle starts a write of its
 * bytes at once. Every call made while a write is in flight joins the one `next` slot and replaces
 * its bytes, so the slot carries the newest snapshot; when the in-flight write settles (whether it
 * resolved or rejected), that same callback starts the slot's write before anything else can run.
 * There is never a moment at which the writer looks idle while a slot is waiting, so a later call
 * can never overtake an earlier one and a stale snapshot can never be written last.
 *
 * Each caller's promise settles with the outcome of the write that carried its snapshot (or a
 * newer one): the value `write` resolved with, or its error. A failure rejects only the callers
 * that write served; the next call writes again.
 *
 * @param write (bytes) => Promise: persists one snapshot
 * @returns (bytes) => Promise
 */
function makeCredsWriter(write) {
  let busy = false
  // The callers waiting for the write after the in-flight one: { bytes, promise, resolve, reject }.
  let next = null

  const slot = (bytes) => {
    const s = { bytes, promise: null, resolve: null, reject: null }
    s.promise = new Promise((resolve, reject) => {
      s.resolve = resolve
      s.reject = reject
    })
    return s
  }

  const start = (s) => {
    busy = true
    let p
    try {
      p = Promise.resolve(write(s.bytes))
    } catch (err) {
      p = Promise.reject(err)
    }
    s.bytes = null
    p.then(
      (value) => {
        advance()
        s.resolve(value)
      },
      (err) => {
        advance()
        s.reject(err)
      },
    )
  }

  // Runs in the settle callback of the in-flight write: hands over to the waiting slot, if any,
  // without ever leaving the writer idle in between.
  const advance = () => {
    const s = next
    next = null
    if (s) start(s)
    else busy = false
  }

  return (bytes) => {
    if (next) {
      next.bytes = bytes
      return next.promise
    }
    const s = slot(bytes)
    if (busy) next = s
    else start(s)
    return s.promise
  }
}

/**
 * @param authStore a BaileysAuthStore, or a session id for the zero-config form (opens the
 *   embedded default, or what REDIS_URL / DATABASE_URL name)
 * @param sessionId one WhatsApp account
 * @param options { ttl?, syncToDatabase?, baileys? } (zero-config form: openAuthStore options too)
 */
async function useBaileysAuthState(authStore, sessionId, options) {
  const zeroConfig = typeof authStore === 'string'
  if (zeroConfig) {
    options = sessionId
    sessionId = authStore
  } else if (!(authStore instanceof BaileysAuthStore)) {
    throw new WaAuthStoreError('ERR_INVALID_ARGUMENT', 'useBaileysAuthState takes a BaileysAuthStore (or a session id alone)')
  }
  // Arguments are checked before a store is opened, write options before the first write.
  checkSessionId(sessionId)
  const { ttl, syncToDatabase, baileys: given, lease: leaseOption } = reading('useBaileysAuthState options', () => {
    if (options != null && !isPlainObject(options)) throw invalid('useBaileysAuthState options must be an object')
    return { ...options }
  })
  const writeOpts = { ttl, syncToDatabase }
  writeOptions(writeOpts)
  let owned = false
  if (zeroConfig) {
    authStore = await openAuthStore(options)
    owned = true
  }
  let lease = null
  try {
    // one owner per session: take the lease before reading state (the cache serves held sessions)
    const leaseOpts = authStore._lease === false ? false : leaseOptions(authStore._lease, leaseOption)
    if (leaseOpts) {
      if (typeof sessionId !== 'string') throw new WaAuthStoreError('ERR_INVALID_SESSION_ID', `session id must be a string, got ${typeof sessionId}`)
      lease = authStore._metrics.lease(await SessionLease.acquire(await authStore._native(), sessionId, leaseOpts, authStore._logger))
    }
    // a write refused by the lease's fence tells the bot at once (onLeaseLost, lease.lost)
    const fenced = (p) => (lease ? p.catch((err) => (lease.noteFenced(err), Promise.reject(err))) : p)
    const release = () => lease?.release().catch(() => {}) ?? Promise.resolve()
    const existing = await authStore.getCreds(sessionId)
    let creds = existing?.creds
    if (!creds) {
      const baileys = await resolveBaileys(given ?? authStore._baileys)
      creds = requireInitAuthCreds(baileys)()
    }
    const keys = {
      get: (type, ids) => authStore.getKeys(sessionId, type, ids),
      set: (data) => fenced(authStore.setKeys(sessionId, data, writeOpts)),
      clear: () => fenced(authStore.clearSession(sessionId)),
      // Optional iterators of newer Baileys (migrateAuthState): ids, then [id, value] pairs.
      listIds: async function* listIds(type) {
        yield* await authStore.listIds(sessionId, type)
      },
      list: async function* list(type) {
        const ids = await authStore.listIds(sessionId, type)
        for (let i = 0; i < ids.length; i += LIST_BATCH) {
          const batch = ids.slice(i, i + LIST_BATCH)
          const values = await authStore.getKeys(sessionId, type, batch)
          for (const id of batch) if (Object.hasOwn(values, id)) yield [id, values[id]]
        }
      },
    }
    const state = { creds, keys }
    const writeCreds = makeCredsWriter((bytes) => fenced(authStore._writeCredsBytes(sessionId, bytes, writeOpts)))
    // Serialise now, synchronously: Baileys keeps mutating the object while the write is in flight.
    const saveCreds = () => {
      let bytes
      try {
        bytes = encodeCreds(state.creds)
      } catch (err) {
        return Promise.reject(err)
      }
      return writeCreds(bytes)
    }
    return {
      state,
      saveCreds,
      // clearing or deleting the session ends this socket's use of it: the lease goes too
      clear: () => fenced(authStore.clearSession(sessionId)).finally(release),
      delete: () => fenced(authStore.deleteCreds(sessionId)).finally(release),
      close: async () => {
        await release()
        if (owned) await authStore.close()
      },
      store: authStore,
      /** The session's lease (null with `lease: false`): `epoch`, `held`, `lost` (a Promise), `renew()`. */
      lease,
    }
  } catch (err) {
    await lease?.release().catch(() => {})
    if (owned) await authStore.close().catch(() => {})
    throw err
  }
}

module.exports = { useBaileysAuthState, makeCredsWriter }
