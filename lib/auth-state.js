'use strict'
// useBaileysAuthState: the { state, saveCreds } a Baileys socket consumes directly.

const { requireInitAuthCreds, resolveBaileys } = require('./baileys.js')
const { encodeValue } = require('./codec.js')
const { WaAuthStoreError } = require('./errors.js')
const { BaileysAuthStore, openAuthStore } = require('./store.js')

const LIST_BATCH = 500

/**
 * Writes creds snapshots in call order while coalescing bursts: a call made while a write is in
 * flight waits for it, then the newest snapshot is written once for every caller that waited.
 */
function makeCredsWriter(write) {
  let inflight = null
  let queued = null
  const run = (bytes) => {
    const p = write(bytes).finally(() => {
      if (inflight === p) inflight = null
    })
    inflight = p
    return p
  }
  return (bytes) => {
    if (!inflight) return run(bytes)
    if (queued) {
      queued.bytes = bytes
      return queued.promise
    }
    const slot = { bytes, promise: null }
    slot.promise = inflight
      .catch(() => {})
      .then(() => {
        queued = null
        return run(slot.bytes)
      })
    queued = slot
    return slot.promise
  }
}

/**
 * @param authStore a BaileysAuthStore, or a session id for the zero-config form (opens the
 *   embedded default, or what REDIS_URL / DATABASE_URL name)
 * @param sessionId one WhatsApp account
 * @param options { ttl?, syncToDatabase?, baileys? } (zero-config form: openAuthStore options too)
 */
async function useBaileysAuthState(authStore, sessionId, options) {
  let owned = false
  if (typeof authStore === 'string') {
    options = sessionId ?? {}
    sessionId = authStore
    authStore = await openAuthStore(options)
    owned = true
  }
  if (!(authStore instanceof BaileysAuthStore)) {
    throw new WaAuthStoreError('ERR_INVALID_ARGUMENT', 'useBaileysAuthState takes a BaileysAuthStore (or a session id alone)')
  }
  const { ttl, syncToDatabase, baileys: given } = options ?? {}
  const writeOpts = { ttl, syncToDatabase }
  try {
    const existing = await authStore.getCreds(sessionId)
    let creds = existing?.creds
    if (!creds) {
      const baileys = await resolveBaileys(given ?? authStore._baileys)
      creds = requireInitAuthCreds(baileys)()
    }
    const keys = {
      get: (type, ids) => authStore.getKeys(sessionId, type, ids),
      set: (data) => authStore.setKeys(sessionId, data, writeOpts),
      clear: () => authStore.clearSession(sessionId),
      // Optional iterators of newer Baileys (migrateAuthState): ids, then [id, value] pairs.
      listIds: async function* listIds(type) {
        yield* await authStore.listIds(sessionId, type)
      },
      list: async function* list(type) {
        const ids = await authStore.listIds(sessionId, type)
        for (let i = 0; i < ids.length; i += LIST_BATCH) {
          const batch = ids.slice(i, i + LIST_BATCH)
          const values = await authStore.getKeys(sessionId, type, batch)
          for (const id of batch) if (id in values) yield [id, values[id]]
        }
      },
    }
    const state = { creds, keys }
    const writeCreds = makeCredsWriter((bytes) => authStore._writeCredsBytes(sessionId, bytes, writeOpts))
    // Serialise now, synchronously: Baileys keeps mutating the object while the write is in flight.
    const saveCreds = () => {
      let bytes
      try {
        bytes = encodeValue(state.creds)
      } catch (err) {
        return Promise.reject(err)
      }
      return writeCreds(bytes)
    }
    return {
      state,
      saveCreds,
      clear: () => authStore.clearSession(sessionId),
      delete: () => authStore.deleteCreds(sessionId),
      close: () => (owned ? authStore.close() : Promise.resolve()),
      store: authStore,
    }
  } catch (err) {
    if (owned) await authStore.close().catch(() => {})
    throw err
  }
}

module.exports = { useBaileysAuthState, makeCredsWriter }
