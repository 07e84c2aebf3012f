'use strict'
// importBaileysSqlite: copies the session in a file of Baileys' `useSqliteAuthState` into a store.
//
// That store is upstream Baileys' own (WhiskeySockets/Baileys PR #2575, merged 2026-05,
// src/Utils/use-sqlite-auth-state.ts; not in a release yet, 7.0.0-rc14 lacks it; forks carry
// the same file). Its schema, one session per file, better-sqlite3, WAL journal:
//   creds(key TEXT PRIMARY KEY, value TEXT NOT NULL)            one row, key '__creds__'
//   signal_keys(type TEXT, id TEXT, value TEXT, PRIMARY KEY (type, id))
// Values are JSON.stringify(value, BufferJSON.replacer); deletes are real (null deletes the row).
// app-state-sync-key values are protobuf messages, whose toJSON writes keyData as a base64
// string: read back as bytes ('app-state-key-data').

const { existsSync } = require('node:fs')
const { resolve } = require('node:path')
const { SqlConnection } = require('../../binding.js')
const { WaAuthStoreError, call, invalid } = require('../errors.js')
const { checkSessionId } = require('../validate.js')
const { toolOptions, writeSession, verifySession, assertVerified, countKeys } = require('./common.js')
const { repairValue } = require('./import-seed.js')
const { resolveBaileys } = require('../baileys.js')

const CREDS_ROW_KEY = '__creds__'

/**
 * Imports the session stored in `file` (a `useSqliteAuthState` database) as `sessionId`; the
 * file is opened read-only and left unchanged. One atomic write; an existing different session
 * is refused with ERR_SESSION_EXISTS unless `overwrite`. Returns
 * `{ sessionId, written, creds, counts, repaired, verified? }`.
 */
async function importBaileysSqlite(store, file, sessionId, options) {
  const o = toolOptions(options)
  if (typeof file !== 'string' || file === '') throw invalid('file must be the path of a useSqliteAuthState database')
  checkSessionId(sessionId)
  const path = resolve(file)
  if (!existsSync(path)) throw new WaAuthStoreError('ERR_NOT_FOUND', `no SQLite file at ${path}`)
  const conn = await call(() => SqlConnection.connect({ url: `sqlite://${path}`, migrate: false, readOnly: true }))
  try {
    const tables = new Set((await call(() => conn.query("SELECT name FROM sqlite_master WHERE type = 'table'"))).map((r) => r.name))
    if (!tables.has('creds') || !tables.has('signal_keys')) {
      throw invalid(`${path} is not a useSqliteAuthState database (it needs the tables creds and signal_keys)`)
    }
    const proto = (await resolveBaileys(store._baileys).catch(() => null))?.proto ?? null
    const repaired = {}
    const note = (kinds) => {
      for (const k of kinds) repaired[k] = (repaired[k] ?? 0) + 1
    }
    const credsRows = await call(() => conn.query('SELECT value FROM creds WHERE key = ?', [CREDS_ROW_KEY]))
    let creds = null
    if (credsRows.length > 0) {
      const r = repairValue('creds', text(credsRows[0].value), 'the creds row')
      creds = r.value
      note(r.repairs)
    }
    const keys = Object.create(null)
    const rows = await call(() => conn.query('SELECT type, id, value FROM signal_keys ORDER BY type, id'))
    for (const row of rows) {
      const type = text(row.type)
      const id = text(row.id)
      const r = repairValue(type, text(row.value), `signal_keys ${type}/${id}`, false, proto)
      note(r.repairs)
      ;(keys[type] ??= Object.create(null))[id] = r.value
    }
    const state = { creds, keys }
    const result = { sessionId, written: false, creds: creds != null, counts: countKeys(keys), repaired }
    o.onProgress(0, 1, sessionId)
    if (!o.dryRun && (creds != null || rows.length > 0)) {
      result.written = (await writeSession(store, sessionId, state, { overwrite: o.overwrite })).written
      if (o.verify) {
        assertVerified(sessionId, await verifySession(store, sessionId, state))
        result.verified = true
      }
    }
    o.onProgress(1, 1, sessionId)
    return result
  } finally {
    await conn.close().catch(() => {})
  }
}

function text(v) {
  return Buffer.isBuffer(v) ? v.toString('utf8') : v == null ? null : String(v)
}

module.exports = { importBaileysSqlite, CREDS_ROW_KEY }
