'use strict'
// Key rotation: after `encryption.key` was replaced (the old one moved to `previousKeys`), every
// record is re-sealed under the new key, so the old key can be dropped. Each session is one write
// through the store's normal path (its next version, in its call order); running it again is
// harmless.

const { WaAuthStoreError, invalid } = require('../errors.js')
const { checkSessionId, isPlainObject } = require('../validate.js')

/**
 * Re-seals every record of every session of `store` (a BaileysAuthStore opened with the
 * `encryption` option), or of those named in `sessions`. `onProgress(done, total, sessionId)`
 * after each session. Returns `{ sessions: [{ sessionId, creds, counts, records }], records }`;
 * sessions that hold nothing (the record of a deletion) are left out.
 */
async function rekeySessions(store, options) {
  if (options != null && !isPlainObject(options)) throw invalid('options must be an object')
  const { sessions, onProgress = () => {}, ...rest } = options ?? {}
  for (const k of Object.keys(rest)) throw invalid(`unknown option "${k}"`)
  if (sessions != null && !Array.isArray(sessions)) throw invalid('sessions must be an array of session ids')
  if (typeof onProgress !== 'function') throw invalid('onProgress must be a function')
  for (const id of sessions ?? []) checkSessionId(id)
  const ids = sessions ?? (await store.listSessions()).map((s) => s.id)
  const out = []
  let done = 0
  for (const sessionId of ids) {
    const r = await store.rekeySession(sessionId)
    if (r.records > 0) out.push({ sessionId, ...r })
    else if (sessions) throw new WaAuthStoreError('ERR_SESSION_NOT_FOUND', `the store holds no session "${sessionId}"`)
    onProgress(++done, ids.length, sessionId)
  }
  return { sessions: out, records: out.reduce((n, s) => n + s.records, 0) }
}

module.exports = { rekeySessions }
