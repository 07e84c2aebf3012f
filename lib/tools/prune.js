'use strict'
// Removing auth state Baileys provably never reads again. Each rule below names the Baileys
// 7.0.0-rc14 code that makes it safe; everything else is kept, however old it looks (see the
// README, "Pruning", for what is not pruned and why). A session's deletions are one atomic
// write, made while holding the session's lease, so a crash never leaves half a prune and a
// running bot is never written under: its session is reported as skipped.

const { WaAuthStoreError, invalid } = require('../errors.js')
const { checkSessionId, isPlainObject } = require('../validate.js')
const { encodeValue } = require('../codec.js')
const { READ_CHUNK, toolOptions } = require('./common.js')

/** The rules, by name; all run unless `rules` names a subset. */
const RULES = ['expired-tctoken', 'superseded-pn-session', 'superseded-pn-identity-key', 'left-group-sender-key-memory']

/** The tctoken id Baileys keeps its index of tracked JIDs under (tc-token-utils.js TC_TOKEN_INDEX_KEY). */
const TC_TOKEN_INDEX_KEY = '__index'
/** tc-token-utils.js: TC_TOKEN_BUCKET_DURATION (7 days, seconds) and TC_TOKEN_NUM_BUCKETS (4). */
const TC_TOKEN_BUCKET_DURATION = 604800
const TC_TOKEN_NUM_BUCKETS = 4

/**
 * A phone-number (PN) Signal address, as Baileys' jidToSignalProtocolAddress writes it:
 * `<user>.<device>` (s.whatsapp.net) or `<user>_128.<device>` (hosted). LID addresses carry
 * `_1` / `_129` and are never candidates.
 */
const PN_ADDRESS = /^(\d+)(?:_128)?\.(\d+)$/

/**
 * Baileys' isTcTokenExpired (tc-token-utils.js) at `nowSec` instead of Date.now(): a timestamp
 * before the start of the oldest of the 4 weekly buckets is expired; a missing one too. Returns
 * null for a timestamp of a shape Baileys does not write (the entry is then kept).
 */
function tcTokenExpired(timestamp, nowSec) {
  if (timestamp === null || timestamp === undefined) return true
  if (typeof timestamp !== 'string' && typeof timestamp !== 'number') return null
  const ts = typeof timestamp === 'string' ? Number.parseInt(timestamp, 10) : timestamp
  if (Number.isNaN(ts)) return true
  const cutoff = (Math.floor(nowSec / TC_TOKEN_BUCKET_DURATION) - (TC_TOKEN_NUM_BUCKETS - 1)) * TC_TOKEN_BUCKET_DURATION
  return ts < cutoff
}

/**
 * True when Baileys' own pruneExpiredTcTokens (messages-recv.js) would delete the entry: neither
 * a live peer token nor a live senderTimestamp is left. Entries of another shape are kept.
 */
function tcTokenDead(entry, nowSec) {
  if (!isPlainObject(entry)) return false
  const token = entry.token
  if (token != null && !(token instanceof Uint8Array)) return false
  const hasPeerToken = token != null && token.length > 0
  const peerExpired = hasPeerToken ? tcTokenExpired(entry.timestamp, nowSec) : true
  const hasSenderTs = entry.senderTimestamp !== undefined
  const senderExpired = hasSenderTs ? tcTokenExpired(entry.senderTimestamp, nowSec) : true
  if (peerExpired === null || senderExpired === null) return false
  return peerExpired && senderExpired
}

/**
 * True when a libsignal SessionRecord (its serialize() form, version 'v1') holds no session
 * SessionRecord.haveOpenSession() would return: one with `indexInfo.closed === -1` and a numeric
 * registrationId. Any other shape (another record version, a future binary record) is kept.
 */
function sessionHasNoOpenSession(record) {
  if (!isPlainObject(record) || record.version !== 'v1' || !isPlainObject(record._sessions)) return false
  for (const entry of Object.values(record._sessions)) {
    if (!isPlainObject(entry) || !isPlainObject(entry.indexInfo)) return false
    if (entry.indexInfo.closed === -1 && typeof entry.registrationId === 'number') return false
  }
  return true
}

/** `{ records, bytes }` of values as stored (Baileys' JSON form, before the store compacts it). */
function measure(values) {
  let bytes = 0
  for (const v of values) bytes += encodeValue(v).length
  return { records: values.length, bytes }
}

async function readAll(store, sessionId, type, ids) {
  const out = Object.create(null)
  for (let i = 0; i < ids.length; i += READ_CHUNK) Object.assign(out, await store.getKeys(sessionId, type, ids.slice(i, i + READ_CHUNK)))
  return out
}

/** The PN users of `ids` that have a lid-mapping: `Set` of users. */
async function mappedPnUsers(store, sessionId, ids, cache) {
  const users = [...new Set(ids.map((id) => PN_ADDRESS.exec(id)?.[1]).filter(Boolean))].filter((u) => !cache.has(u))
  const found = await readAll(store, sessionId, 'lid-mapping', users)
  for (const u of users) cache.set(u, typeof found[u] === 'string' && found[u].length > 0)
  return cache
}

/**
 * What the rules would delete from one session: `{ [type]: { [id]: value } }`. Reads only.
 */
async function findPrunable(store, sessionId, { rules, nowSec, groupsLeft }) {
  const found = Object.create(null)
  const add = (type, id, value) => ((found[type] ??= Object.create(null))[id] = value)
  const mapped = new Map() // PN user -> has a lid-mapping

  if (rules.has('expired-tctoken')) {
    // Every tctoken record, not only the ones __index lists: records Baileys stored without
    // indexing them (a crash before the index save, tokens stored under a second JID) are never
    // pruned by Baileys itself. The index row is never touched; Baileys drops index entries whose
    // record is missing on its next prune ("Tracked but nothing in store").
    const ids = (await store.listIds(sessionId, 'tctoken')).filter((id) => id !== TC_TOKEN_INDEX_KEY)
    const records = await readAll(store, sessionId, 'tctoken', ids)
    for (const id of ids) if (id in records && tcTokenDead(records[id], nowSec)) add('tctoken', id, records[id])
  }

  if (rules.has('superseded-pn-session')) {
    // libsignal.js signalStorage.loadSession/storeSession resolve a PN address to the LID one
    // whenever a lid-mapping exists (resolveLIDSignalAddress), so the PN record is read only by
    // migrateSession, which copies it only when SessionRecord.haveOpenSession().
    const ids = (await store.listIds(sessionId, 'session')).filter((id) => PN_ADDRESS.test(id))
    await mappedPnUsers(store, sessionId, ids, mapped)
    const candidates = ids.filter((id) => mapped.get(PN_ADDRESS.exec(id)[1]))
    const records = await readAll(store, sessionId, 'session', candidates)
    for (const id of candidates) if (id in records && sessionHasNoOpenSession(records[id])) add('session', id, records[id])
  }

  if (rules.has('superseded-pn-identity-key')) {
    // libsignal.js loadIdentityKey/saveIdentity are the only readers, and resolve the same way.
    const ids = (await store.listIds(sessionId, 'identity-key')).filter((id) => PN_ADDRESS.test(id))
    await mappedPnUsers(store, sessionId, ids, mapped)
    const candidates = ids.filter((id) => mapped.get(PN_ADDRESS.exec(id)[1]))
    const records = await readAll(store, sessionId, 'identity-key', candidates)
    for (const id of candidates) if (id in records) add('identity-key', id, records[id])
  }

  if (rules.has('left-group-sender-key-memory') && groupsLeft.length > 0) {
    // Group membership is not in the auth state: only groups the caller names. Deleting one is
    // what Baileys does itself on every retry receipt of a group (messages-recv.js): the next
    // message to that group re-sends the sender key to each device.
    const records = await readAll(store, sessionId, 'sender-key-memory', groupsLeft)
    for (const id of groupsLeft) if (id in records) add('sender-key-memory', id, records[id])
  }
  return found
}

function checkPruneOptions(options) {
  const o = toolOptions(options, ['now', 'rules', 'groupsLeft'])
  let now = o.now ?? Date.now()
  if (now instanceof Date) now = now.getTime()
  if (!Number.isFinite(now)) throw invalid('now must be a Date or a number of milliseconds since the epoch')
  const rules = o.rules ?? RULES
  if (!Array.isArray(rules) || rules.some((r) => !RULES.includes(r))) throw invalid(`rules must be an array of: ${RULES.join(', ')}`)
  const groupsLeft = o.groupsLeft ?? []
  if (!Array.isArray(groupsLeft) || groupsLeft.some((g) => typeof g !== 'string' || !g.endsWith('@g.us'))) {
    throw invalid('groupsLeft must be an array of group JIDs (…@g.us)')
  }
  return { dryRun: o.dryRun, onProgress: o.onProgress, nowSec: Math.floor(now / 1000), now, rules: new Set(rules), groupsLeft: [...new Set(groupsLeft)] }
}

/**
 * Takes the session's lease for the prune, or null when the store has none (lease: false).
 * A lease this store already holds (a socket of this process is open on the session) is not
 * taken over: acquiring it would succeed, and releasing it afterwards would free the bot's lease.
 */
async function takeLease(store, sessionId) {
  try {
    const held = await store.leaseInfo(sessionId)
    if (held?.mine) {
      const err = new WaAuthStoreError('ERR_SESSION_LOCKED', `session '${sessionId}' is open in this process (its lease is held by this store): close it before pruning`)
      err.holder = held.holder
      err.epoch = held.epoch
      throw err
    }
    return await store.acquireLease(sessionId, { waitMs: 0 })
  } catch (err) {
    if (err?.code === 'ERR_INVALID_ARGUMENT' && /no leases/.test(err.message)) return null
    throw err
  }
}

async function pruneSession(store, sessionId, o) {
  const report = { sessionId, kinds: {}, records: 0, bytes: 0, pruned: false }
  let lease = null
  try {
    // held for the whole read-then-delete, so no bot starts (and writes) in between
    if (!o.dryRun) lease = await takeLease(store, sessionId)
    const found = await findPrunable(store, sessionId, o)
    const deletes = Object.create(null)
    for (const type of Object.keys(found)) {
      const ids = Object.keys(found[type])
      report.kinds[type] = measure(ids.map((id) => found[type][id]))
      report.records += report.kinds[type].records
      report.bytes += report.kinds[type].bytes
      deletes[type] = Object.fromEntries(ids.map((id) => [id, null]))
    }
    if (!o.dryRun && report.records > 0) {
      await store.setKeys(sessionId, deletes) // one atomic write
      report.pruned = true
    }
  } catch (err) {
    if (err?.code !== 'ERR_SESSION_LOCKED') throw err
    return { sessionId, kinds: {}, records: 0, bytes: 0, pruned: false, skipped: { code: err.code, reason: err.message } }
  } finally {
    await lease?.release().catch(() => {})
  }
  return report
}

/**
 * Prunes `sessionId` (a session id, an array of them, or undefined for every session of the
 * store) by the rules of RULES. Options: `dryRun` (report, write nothing), `now` (Date or epoch
 * ms; default now: what "expired" is measured against), `rules` (a subset of RULES), `groupsLeft`
 * (group JIDs the account left: their sender-key-memory goes), `onProgress(done, total, id)`.
 * Returns `{ dryRun, now, sessions: [{ sessionId, kinds: { [type]: { records, bytes } }, records,
 * bytes, pruned, skipped? }], totals: { sessions, pruned, skipped, records, bytes, kinds } }`.
 * A session another process holds is skipped (`skipped: { code: 'ERR_SESSION_LOCKED', reason }`).
 */
async function prune(store, sessionId, options) {
  const o = checkPruneOptions(options)
  let ids
  if (sessionId === undefined || sessionId === null) {
    ids = []
    for (const s of await store.listSessions()) {
      const d = await store.describeSession(s.id)
      if (d.creds || d.types.some((t) => t.count > 0)) ids.push(s.id) // not a deleted session's trace
    }
  } else {
    ids = Array.isArray(sessionId) ? sessionId : [sessionId]
    for (const id of ids) {
      checkSessionId(id)
      const d = await store.describeSession(id)
      if (!d.creds && !d.types.some((t) => t.count > 0)) throw new WaAuthStoreError('ERR_SESSION_NOT_FOUND', `the store holds no session "${id}"`)
    }
  }
  const sessions = []
  for (const id of ids) {
    sessions.push(await pruneSession(store, id, o))
    o.onProgress(sessions.length, ids.length, id)
  }
  const totals = { sessions: sessions.length, pruned: 0, skipped: 0, records: 0, bytes: 0, kinds: {} }
  for (const s of sessions) {
    if (s.pruned) totals.pruned++
    if (s.skipped) totals.skipped++
    totals.records += s.records
    totals.bytes += s.bytes
    for (const [type, k] of Object.entries(s.kinds)) {
      const t = (totals.kinds[type] ??= { records: 0, bytes: 0 })
      t.records += k.records
      t.bytes += k.bytes
    }
  }
  return { dryRun: o.dryRun, now: o.now, sessions, totals }
}

module.exports = { prune, RULES, tcTokenExpired, tcTokenDead, sessionHasNoOpenSession }
