'use strict'
// Store to store: SQLite to PostgreSQL when a bot outgrows one machine, or any other pair. Each
// session is read whole, written as one atomic write and read back; a session the target already
// holds identically is skipped, so a copy that stopped half way resumes by running it again.

const { WaAuthStoreError, invalid } = require('../errors.js')
const { checkSessionId } = require('../validate.js')
const { toolOptions, readSession, writeSession, verifySession, assertVerified, countKeys } = require('./common.js')

/**
 * Copies sessions from `source` to `target` (both BaileysAuthStores). Options: `sessions` (ids;
 * default every session of the source), `overwrite`, `verify` (default true: every record is
 * read back from the target and compared), `onProgress(done, total, sessionId)`.
 * Returns `{ sessions: [{ sessionId, written, counts, records }], written, skipped, records }`.
 */
async function copySessions(source, target, options) {
  const o = toolOptions(options, ['sessions'])
  if (source === target) throw invalid('source and target are the same store')
  if (o.sessions != null && !Array.isArray(o.sessions)) throw invalid('sessions must be an array of session ids')
  for (const id of o.sessions ?? []) checkSessionId(id)
  const verify = options?.verify !== false
  const ids = o.sessions ?? (await source.listSessions()).map((s) => s.id)
  const out = []
  for (const sessionId of ids) {
    const state = await readSession(source, sessionId)
    const counts = countKeys(state.keys)
    const records = Object.values(counts).reduce((a, b) => a + b, 0) + (state.creds ? 1 : 0)
    if (records === 0) {
      // a deleted session's record of deletion: nothing to copy; a named one is a mistake
      if (o.sessions) throw new WaAuthStoreError('ERR_SESSION_NOT_FOUND', `the source store holds no session "${sessionId}"`)
    } else {
      const { written } = await writeSession(target, sessionId, state, o)
      if (verify) assertVerified(sessionId, await verifySession(target, sessionId, state))
      out.push({ sessionId, written, counts, records })
    }
    o.onProgress(out.length, ids.length, sessionId)
  }
  return {
    sessions: out,
    written: out.filter((s) => s.written).length,
    skipped: out.filter((s) => !s.written).length,
    records: out.reduce((n, s) => n + s.records, 0),
  }
}

module.exports = { copySessions }
