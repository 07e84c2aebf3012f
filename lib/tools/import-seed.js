'use strict'
// importSeedSessions: copies sessions written by the seed package (wa-auth-store@0.6, ioredis +
// MikroORM) into a store, repairing what that package is known to corrupt.
//
// The seed's layout (dist/utils/index.js, dist/adapters/*.js):
//   Redis  `<ioredis keyPrefix>wa:auth:<sid>:creds`  string, JSON.stringify(creds, BufferJSON.replacer)
//          `<ioredis keyPrefix>wa:auth:<sid>:keys`   hash, field `${type}-${id}`, value JSON
//   SQL    one row per session in the user's MikroORM entity table (README: `CredentialsEntity`,
//          hence `credentials_entity`, columns `session_id`, `creds`, `keys` as JSON/JSONB), `keys`
//          one JSON object `{ "${type}-${id}": value }`.
//
// What it corrupts, and what this file does about it (evidence in the seed's dist/):
//   - 'base64-text-buffers': its ORM adapter's getParseData() runs BufferJSON.replacer over values
//     that are already `{type:'Buffer',data:'<base64>'}` objects; Baileys' replacer then encodes
//     the base64 TEXT as bytes (Buffer.from(value.data)), so every Buffer read through its SQL
//     tier comes back 4/3 its size, holding the base64 text of the real bytes. Its getKeys() and
//     getCreds() write those values back into Redis (cache warming), so the live Redis copy is
//     the damaged one. A value whose Buffers all are canonical base64 text is decoded (again,
//     while that holds: warming twice nests it).
//   - 'buffer-arrays': MikroORM stores JSON with plain JSON.stringify, and the Redis adapter's
//     setKeys() too, so Buffers land as `{type:'Buffer',data:[1,2,...]}` (creds in SQL always),
//     which Baileys 7's reviver does not revive. Read as bytes.
//   - 'app-state-key-data': app-state-sync-key values go through protobuf's toJSON, so keyData is
//     a base64 string (and the seed revives it with create(), which keeps the string). Decoded to
//     bytes.
//   - 'stale-sessions': its useBaileysAuthState keys.set() skips every null (`if (value)`), so no
//     delete Baileys asks for ever reaches either tier. Consumed pre-keys cannot be told from live
//     ones (libsignal records no pre-key id on the receiving side) and are kept: a deleted live
//     pre-key fails a peer's first message ("Invalid PreKey ID"), a kept consumed one costs a
//     few bytes. A session record whose every Signal session names another identity than the
//     stored identity-key of that address is the dropped half of Baileys' saveIdentity()
//     `{ session: null, 'identity-key': newKey }`: it is left out.
//
// Merge per session: a record (creds, or one key) is taken from Redis when Redis has it, else
// from SQL: the seed writes Redis first and SQL second, and Redis loses records on its own (TTLs,
// its memory manager), never SQL alone. `keySet: 'redis'` takes the keys from Redis only when
// Redis has the session's hash (for deployments that know their SQL copy holds deleted keys).

const { SqlConnection, RedisConnection } = require('../../binding.js')
const { WaAuthStoreError, call, invalid } = require('../errors.js')
const { checkSessionId, isPlainObject } = require('../validate.js')
const { encodeValue } = require('../codec.js')
const { KNOWN_TYPES } = require('../store.js')
const { resolveBaileys } = require('../baileys.js')
const { toolOptions, writeSession, verifySession, assertVerified, countKeys } = require('./common.js')

/** The seed README's entity `CredentialsEntity` under MikroORM's default naming strategy. */
const DEFAULT_TABLE = 'credentials_entity'
const SEED_NAMESPACE = 'wa:auth:'

// ---------------------------------------------------------------------------------------------
// Values

const BASE64_TEXT = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/
/** Below this many base64 characters in a value, random bytes could pass for text. */
const MIN_BASE64_TEXT = 16
const MAX_NESTING = 4

function isByte(v) {
  return Number.isInteger(v) && v >= 0 && v <= 255
}

function isIndexObject(o) {
  const keys = Object.keys(o)
  if (keys.length === 0) return false
  for (let i = 0; i < keys.length; i++) if (keys[i] !== String(i) || !isByte(o[keys[i]])) return false
  return true
}

/**
 * Parsed JSON -> Baileys' runtime shape: every Buffer form back to a Buffer. Counts the forms
 * that were not Baileys' own (`{type:'Buffer',data:'<base64>'}`) in `found.arrays`.
 */
function revive(value, found) {
  if (value === null || typeof value !== 'object' || Buffer.isBuffer(value)) return value
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) value[i] = revive(value[i], found)
    return value
  }
  if (value.type === 'Buffer') {
    if (typeof value.data === 'string') return Buffer.from(value.data, 'base64')
    if (Array.isArray(value.data) && value.data.every(isByte)) {
      found.arrays = true
      return Buffer.from(value.data)
    }
  }
  if (isIndexObject(value)) {
    found.arrays = true
    return Buffer.from(Object.values(value))
  }
  for (const k of Object.keys(value)) value[k] = revive(value[k], found)
  return value
}

/** Every Buffer in a revived value, with a setter to replace it. */
function buffersOf(value, out = []) {
  if (value === null || typeof value !== 'object' || Buffer.isBuffer(value)) return out
  for (const k of Object.keys(value)) {
    const v = value[k]
    if (Buffer.isBuffer(v)) out.push({ holder: value, key: k, buf: v })
    else buffersOf(v, out)
  }
  return out
}

function isBase64Text(buf) {
  if (buf.length < 4 || buf.length % 4 !== 0) return false
  const text = buf.toString('latin1')
  return BASE64_TEXT.test(text)
}

/**
 * Undoes the seed's double encoding: when every Buffer of the value holds canonical base64 text
 * (and there is enough of it that random bytes would not), decodes them all. Returns the value
 * (a root Buffer is replaced) and whether anything was decoded.
 */
function decodeBase64Text(value) {
  let repaired = false
  for (let round = 0; round < MAX_NESTING; round++) {
    const holder = { v: value }
    const bufs = Buffer.isBuffer(value) ? [{ holder, key: 'v', buf: value }] : buffersOf(value)
    if (bufs.length === 0) break
    const total = bufs.reduce((n, b) => n + b.buf.length, 0)
    if (total < MIN_BASE64_TEXT || !bufs.every((b) => isBase64Text(b.buf))) break
    for (const b of bufs) b.holder[b.key] = Buffer.from(b.buf.toString('latin1'), 'base64')
    value = holder.v
    repaired = true
  }
  return { value, repaired }
}

/**
 * One stored value -> `{ value, repairs }`, `repairs` the kinds applied. `raw` is JSON text (a
 * Redis value, the SQL creds column), or with `parsed` a member of the SQL keys column (parsed
 * with it; it is not modified). `proto` (Baileys' WAProto, when found) makes app-state-sync-key
 * values the AppStateSyncKeyData messages Baileys writes.
 */
function repairValue(type, raw, where, parsedAlready = false, proto = null) {
  let parsed = parsedAlready ? structuredClone(raw) : raw
  if (!parsedAlready) {
    try {
      parsed = JSON.parse(raw)
    } catch (err) {
      throw new WaAuthStoreError('ERR_CORRUPT_VALUE', `${where} is not valid JSON: ${err.message}`, { cause: err })
    }
  }
  const found = { arrays: false }
  let value = revive(parsed, found)
  const repairs = []
  if (found.arrays) repairs.push('buffer-arrays')
  const decoded = decodeBase64Text(value)
  value = decoded.value
  if (decoded.repaired) repairs.push('base64-text-buffers')
  if (type === 'app-state-sync-key' && isPlainObject(value)) {
    if (typeof value.keyData === 'string') {
      value.keyData = Buffer.from(value.keyData, 'base64')
      repairs.push('app-state-key-data')
    }
    // the message Baileys hands a store (and the store's getKeys returns)
    if (proto?.Message?.AppStateSyncKeyData) value = proto.Message.AppStateSyncKeyData.fromObject(value)
  }
  return { value, repairs }
}

/** The seed's `type-id` field -> `{ type, id }`, longest known type first; null when unknown. */
function parseSeedField(field) {
  const type = KNOWN_TYPES.find((t) => field.startsWith(`${t}-`))
  return type ? { type, id: field.slice(type.length + 1) } : null
}

/**
 * Session records whose every Signal session was built with another identity key than the one
 * stored for that address (Baileys deleted them in the same set that saved the new identity).
 */
function staleSessionIds(keys) {
  const stale = []
  const sessions = keys.session ?? {}
  const identities = keys['identity-key'] ?? {}
  for (const id of Object.keys(sessions)) {
    const identity = identities[id]
    const entries = Object.values(sessions[id]?._sessions ?? {})
    if (!Buffer.isBuffer(identity) || entries.length === 0) continue
    const remote = entries.map((e) => e?.indexInfo?.remoteIdentityKey).filter((k) => typeof k === 'string')
    if (remote.length === entries.length && !remote.some((k) => Buffer.from(k, 'base64').equals(identity))) stale.push(id)
  }
  return stale
}

// ---------------------------------------------------------------------------------------------
// Sources

function checkOptions(options) {
  const o = toolOptions(options, ['fromDatabase', 'fromTable', 'fromRedis', 'fromRedisPrefix', 'sessions', 'keySet'])
  const { fromDatabase, fromRedis, fromRedisPrefix = '', fromTable = DEFAULT_TABLE, sessions, keySet = 'union' } = o
  if (fromDatabase != null && typeof fromDatabase !== 'string') throw invalid('fromDatabase must be a database URL')
  if (fromRedis != null && typeof fromRedis !== 'string') throw invalid('fromRedis must be a Redis URL')
  if (!fromDatabase && !fromRedis) throw invalid('importSeedSessions needs fromDatabase (the seed\'s SQL URL), fromRedis, or both')
  if (typeof fromRedisPrefix !== 'string') throw invalid('fromRedisPrefix must be a string (the ioredis keyPrefix the seed used)')
  if (typeof fromTable !== 'string' || !/^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$/.test(fromTable)) {
    throw invalid('fromTable must be a table name ([schema.]name of letters, digits, _ and $)')
  }
  if (sessions != null && (!Array.isArray(sessions) || sessions.some((s) => typeof s !== 'string'))) throw invalid('sessions must be an array of session ids')
  if (keySet !== 'union' && keySet !== 'redis') throw invalid("keySet must be 'union' or 'redis'")
  return { ...o, fromDatabase, fromRedis, fromRedisPrefix, fromTable, sessions, keySet }
}

/** A Redis glob matching `text` literally. */
function globEscape(text) {
  return text.replace(/[\\*?[\]]/g, (c) => `\\${c}`)
}

class SeedSql {
  constructor(conn, table) {
    this.conn = conn
    const quote = conn.dialect === 'mysql' ? (n) => `\`${n}\`` : (n) => `"${n}"`
    const text = (col) => (conn.dialect === 'postgres' ? `${quote(col)}::text` : conn.dialect === 'mysql' ? `CAST(${quote(col)} AS CHAR)` : quote(col))
    const from = table.split('.').map(quote).join('.')
    const param = conn.dialect === 'postgres' ? '$1' : '?'
    this.listSql = `SELECT ${quote('session_id')} AS sid FROM ${from}`
    this.rowSql = `SELECT ${text('creds')} AS creds, ${text('keys')} AS ${quote('keys')} FROM ${from} WHERE ${quote('session_id')} = ${param}`
  }

  async list() {
    const rows = await call(() => this.conn.query(this.listSql))
    return rows.map((r) => asText(r.sid)).filter((sid) => sid != null)
  }

  async read(sessionId) {
    const rows = await call(() => this.conn.query(this.rowSql, [sessionId]))
    if (rows.length === 0) return null
    return { creds: asText(rows[0].creds), keys: asText(rows[0].keys) }
  }
}

function asText(v) {
  if (v == null) return null
  return Buffer.isBuffer(v) ? v.toString('utf8') : String(v)
}

class SeedRedis {
  constructor(conn, prefix) {
    this.conn = conn
    this.base = `${prefix}${SEED_NAMESPACE}`
  }

  async list() {
    const keys = await call(() => this.conn.scanKeys(`${globEscape(this.base)}*`))
    const ids = new Set()
    for (const key of keys) {
      const rest = key.slice(this.base.length)
      const m = /^(.*):(creds|keys)$/s.exec(rest)
      if (m && m[1] !== '') ids.add(m[1])
    }
    return [...ids]
  }

  async read(sessionId) {
    const [creds, fields] = await Promise.all([
      call(() => this.conn.getBuffer(`${this.base}${sessionId}:creds`)),
      call(() => this.conn.hgetallBuffers(`${this.base}${sessionId}:keys`)),
    ])
    const hasKeys = Object.keys(fields).length > 0
    if (creds == null && !hasKeys) return null
    const keys = Object.create(null)
    for (const f of Object.keys(fields)) keys[f] = fields[f].toString('utf8')
    return { creds: creds == null ? null : creds.toString('utf8'), keys: hasKeys ? keys : null }
  }
}

// ---------------------------------------------------------------------------------------------
// One session

/** `{ field: jsonText | parsedValue }` of one copy, or null. */
function sqlFields(row, sessionId) {
  if (row?.keys == null) return null
  let parsed
  try {
    parsed = JSON.parse(row.keys)
  } catch (err) {
    throw new WaAuthStoreError('ERR_CORRUPT_VALUE', `session "${sessionId}": the SQL keys column is not valid JSON: ${err.message}`, { cause: err })
  }
  if (!isPlainObject(parsed)) throw new WaAuthStoreError('ERR_CORRUPT_VALUE', `session "${sessionId}": the SQL keys column is not a JSON object`)
  return Object.keys(parsed).length > 0 ? parsed : null
}

/** SQL creds column: the seed's ORM getCreds treats null and {} as "no creds". */
function sqlCreds(row) {
  if (row?.creds == null) return null
  const t = row.creds.trim()
  return t === 'null' || t === '{}' ? null : row.creds
}

function same(a, b) {
  return Buffer.from(encodeValue(a)).equals(Buffer.from(encodeValue(b)))
}

function mergeSession(sessionId, redisCopy, sqlRow, keySet, proto) {
  const repaired = {}
  const note = (kinds) => {
    for (const k of kinds) repaired[k] = (repaired[k] ?? 0) + 1
  }
  const from = { redis: 0, sql: 0 }
  let conflicts = 0
  let sqlOnly = 0

  // creds
  let creds = null
  const redisCreds = redisCopy?.creds ?? null
  const fromSqlCreds = sqlCreds(sqlRow)
  if (redisCreds != null) {
    const r = repairValue('creds', redisCreds, `session "${sessionId}": Redis creds`)
    creds = r.value
    note(r.repairs)
    from.redis++
    if (fromSqlCreds != null && !same(r.value, repairValue('creds', fromSqlCreds, 'SQL creds').value)) conflicts++
  } else if (fromSqlCreds != null) {
    const r = repairValue('creds', fromSqlCreds, `session "${sessionId}": SQL creds`)
    creds = r.value
    note(r.repairs)
    from.sql++
  }

  // keys
  const redisFields = redisCopy?.keys ?? null
  const sqlKeyFields = sqlFields(sqlRow, sessionId)
  const useSql = sqlKeyFields && !(keySet === 'redis' && redisFields)
  const keys = Object.create(null)
  const skipped = []
  const fields = new Set([...Object.keys(redisFields ?? {}), ...(useSql ? Object.keys(sqlKeyFields) : [])])
  for (const field of fields) {
    const ref = parseSeedField(field)
    if (!ref) {
      skipped.push(field)
      continue
    }
    const inRedis = redisFields != null && Object.hasOwn(redisFields, field)
    const raw = inRedis ? redisFields[field] : sqlKeyFields[field]
    if (raw == null) continue
    const where = `session "${sessionId}": ${inRedis ? 'Redis' : 'SQL'} field "${field}"`
    const r = repairValue(ref.type, raw, where, !inRedis, proto)
    if (inRedis) {
      from.redis++
      if (useSql && Object.hasOwn(sqlKeyFields, field) && sqlKeyFields[field] != null && !same(r.value, repairValue(ref.type, sqlKeyFields[field], where, true, proto).value)) conflicts++
    } else {
      from.sql++
      if (redisFields) sqlOnly++
    }
    note(r.repairs)
    ;(keys[ref.type] ??= Object.create(null))[ref.id] = r.value
  }

  for (const id of staleSessionIds(keys)) {
    delete keys.session[id]
    note(['stale-sessions'])
  }
  if (keys.session && Object.keys(keys.session).length === 0) delete keys.session

  const source = from.sql === 0 ? 'redis' : from.redis === 0 ? 'sql' : 'both'
  return { state: { creds, keys }, source, repaired, records: from, conflicts, sqlOnly, skipped }
}

// ---------------------------------------------------------------------------------------------

/**
 * Imports the seed package's sessions into `store`: from its Redis (`fromRedis`, behind the
 * ioredis keyPrefix `fromRedisPrefix`) and/or its SQL table (`fromDatabase`, `fromTable`, default
 * 'credentials_entity'), all of them or the ids in `sessions`. One atomic write per session;
 * an existing different session is refused with ERR_SESSION_EXISTS unless `overwrite`; a
 * session already imported identically is left alone (`written: false`).
 */
async function importSeedSessions(store, options) {
  const o = checkOptions(options)
  if (o.sessions) for (const sid of o.sessions) checkSessionId(sid)
  let sqlConn = null
  let redisConn = null
  try {
    if (o.fromDatabase) sqlConn = await call(() => SqlConnection.connect({ url: o.fromDatabase, migrate: false, readOnly: true }))
    if (o.fromRedis) redisConn = await call(() => RedisConnection.connect({ url: o.fromRedis }))
    const proto = (await resolveBaileys(store._baileys).catch(() => null))?.proto ?? null
    const sql = sqlConn && new SeedSql(sqlConn, o.fromTable)
    const redis = redisConn && new SeedRedis(redisConn, o.fromRedisPrefix)

    // every id is checked before anything is written
    const [inSql, inRedis] = await Promise.all([sql ? sql.list() : [], redis ? redis.list() : []])
    const found = new Set([...inSql, ...inRedis])
    let ids
    if (o.sessions) {
      ids = [...new Set(o.sessions)]
      const missing = ids.filter((sid) => !found.has(sid))
      if (missing.length > 0) {
        throw new WaAuthStoreError('ERR_SESSION_NOT_FOUND', `${missing.length} named session(s) are in neither the seed's Redis nor its SQL table: ${missing.slice(0, 5).map((s) => `"${s}"`).join(', ')}`)
      }
    } else {
      ids = [...found].sort()
      for (const sid of ids) checkSessionId(sid)
    }

    const results = []
    for (let i = 0; i < ids.length; i++) {
      const sessionId = ids[i]
      const [redisCopy, sqlRow] = await Promise.all([redis ? redis.read(sessionId) : null, sql ? sql.read(sessionId) : null])
      if (!redisCopy && !sqlRow) {
        throw new WaAuthStoreError('ERR_SESSION_NOT_FOUND', `session "${sessionId}" is in neither the seed's Redis nor its SQL table`)
      }
      const merged = mergeSession(sessionId, redisCopy, sqlRow, o.keySet, proto)
      const { state } = merged
      const entry = {
        sessionId,
        source: merged.source,
        written: false,
        creds: state.creds != null,
        counts: countKeys(state.keys),
        repaired: merged.repaired,
        records: merged.records,
        conflicts: merged.conflicts,
        sqlOnly: merged.sqlOnly,
        skipped: merged.skipped,
      }
      const empty = state.creds == null && Object.keys(state.keys).length === 0
      if (!o.dryRun && !empty) {
        entry.written = (await writeSession(store, sessionId, state, { overwrite: o.overwrite })).written
        if (o.verify) {
          assertVerified(sessionId, await verifySession(store, sessionId, state))
          entry.verified = true
        }
      }
      results.push(entry)
      o.onProgress(i + 1, ids.length, sessionId)
    }
    return { sessions: results, total: results.length, written: results.filter((r) => r.written).length }
  } finally {
    await Promise.all([sqlConn?.close().catch(() => {}), redisConn?.close().catch(() => {})])
  }
}

module.exports = { importSeedSessions, repairValue, parseSeedField, staleSessionIds, DEFAULT_TABLE }
