'use strict'
// Moving a session between Baileys' own `useMultiFileAuthState(folder)` and a store, without
// re-pairing. Baileys names each key file `fixFileName(`${type}-${id}.json`)`, where fixFileName
// turns '/' into '__' and ':' into '-': a lossy mapping, undone here per key type from what the
// ids of that type can contain (Baileys 6.7.x and 7.0.0-rc14):
//
//   pre-key                 decimal numbers                                 as is
//   session, identity-key   libsignal addresses `<user>[_<domain>].<device>` as is (no ':' or '/')
//   sender-key              `<group jid>::<user>[_<domain>]::<device>`:     the last two '--' are '::'
//                           a group jid may hold a '-' itself (`<creator>-<time>@g.us`); users and
//                           devices never do
//   sender-key-memory       group jids (`…@g.us`, `status@broadcast`)       as is
//   app-state-sync-key      standard base64 (A-Z a-z 0-9 + / =)             '__' is '/'
//   app-state-sync-version  collection names (`regular_high`, …)            as is
//   lid-mapping             `<pn user>`, `<lid user>_reverse`               as is
//   device-list             `<user>`                                        as is
//   tctoken                 user jids, `__index`                            `<digits>-<digits>@<user server>`
//                           is a device jid (`:`): a PN or LID user holds no '-'; `__index` as is
//
// A recovered id is taken only if Baileys would read that very file for it (fixFileName of the
// id gives the file name back); other files are reported as skipped. So every imported file is
// exported under the name it came from.
//
// Types this file does not know keep their ids as the file names spell them. Their type name is
// the leading run of '-'-separated segments made of lowercase ASCII letters only (how Baileys
// names its types), leaving at least the last segment to the id: `future-thing-12_3.json` is
// type `future-thing`, id `12_3`. `options.types` names more types (matched longest first, like
// the known ones) when that rule would split a name wrongly.

const fs = require('node:fs/promises')
const path = require('node:path')
const { WaAuthStoreError, invalid } = require('../errors.js')
const { BufferJSON } = require('../codec.js')
const { resolveBaileys } = require('../baileys.js')
const { checkSessionId, checkType } = require('../validate.js')
const { toolOptions, countKeys, readSession, writeSession, verifySession, assertVerified } = require('./common.js')

const CREDS_FILE = 'creds.json'
/** Files read or written at once. */
const FILE_CONCURRENCY = 32

/** Baileys' own file naming (use-multi-file-auth-state.ts). */
const fixFileName = (file) => file.replace(/\//g, '__').replace(/:/g, '-')

const asIs = (id) => id
const SENDER_KEY = /^(.+)--([^-]+)--(\d+)$/
const DEVICE_JID = /^(\d+)-(\d+)@(s\.whatsapp\.net|lid|hosted|hosted\.lid|c\.us)$/

/** File id -> the id Baileys looks up, per known type; null: not a name Baileys writes. */
const ID_RULES = {
  'pre-key': asIs,
  session: asIs,
  'identity-key': asIs,
  'sender-key': (id) => {
    const m = SENDER_KEY.exec(id)
    return m ? `${m[1]}::${m[2]}::${m[3]}` : null
  },
  'sender-key-memory': asIs,
  'app-state-sync-key': (id) => id.replace(/__/g, '/'),
  'app-state-sync-version': asIs,
  'lid-mapping': asIs,
  'device-list': asIs,
  tctoken: (id) => (id === '__index' ? id : id.replace(DEVICE_JID, '$1:$2@$3')),
}
const { KNOWN_TYPES } = require('../key-types.js')
for (const t of KNOWN_TYPES) if (!ID_RULES[t]) throw new Error(`multifile: no file-name rule for the known key type '${t}'`)
const UNKNOWN_TYPE_SEGMENT = /^[a-z]+$/

/** A typed error naming the file (`err.file`, the full path). */
function fileError(code, file, message, cause) {
  const err = new WaAuthStoreError(code, `${file}: ${message}`, cause === undefined ? undefined : { cause })
  err.file = file
  return err
}

/** Baileys' BufferJSON reviver (lib/codec.js), plus the `{ buffer: true, value }` form 6.x's reviver read. */
function reviver(key, value) {
  if (value !== null && typeof value === 'object' && !Array.isArray(value) && value.buffer === true) {
    const data = value.data ?? value.value
    if (typeof data === 'string') return Buffer.from(data, 'base64')
    if (Array.isArray(data)) return Buffer.from(data)
  }
  return BufferJSON.reviver(key, value)
}

/** Baileys' proto (for app-state-sync-key values), or null when Baileys cannot be found. */
async function protoOf(store) {
  if (typeof store._loadProto === 'function') return store._loadProto()
  const baileys = await resolveBaileys(undefined).catch(() => null)
  return baileys?.proto ?? null
}

/** Runs `fn` over `items`, `limit` at a time; stops taking new items after a failure, waits for those running. */
async function eachLimit(items, limit, fn) {
  let next = 0
  let failure = null
  const worker = async () => {
    while (failure === null && next < items.length) {
      const i = next++
      try {
        await fn(items[i], i)
      } catch (err) {
        failure ??= { err }
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  if (failure) throw failure.err
}

function checkFolder(folder) {
  if (typeof folder !== 'string' || folder.length === 0) throw invalid('folder must be a non-empty path string')
  return path.resolve(folder)
}

function extraTypes(types) {
  if (types == null) return []
  if (!Array.isArray(types)) throw invalid('types must be an array of key type names')
  for (const t of types) {
    checkType(t)
    if (t === 'creds') throw invalid('"creds" is not a key type')
  }
  return types
}

/**
 * Splits a key file name (without `.json`) into `{ type, id }`, or returns `{ reason }` when it is
 * not a file Baileys reads as a key.
 */
function parseKeyFile(base, types) {
  let type = types.find((t) => base.startsWith(`${t}-`))
  let fileId
  let rule = asIs
  if (type) {
    fileId = base.slice(type.length + 1)
    rule = ID_RULES[type] ?? asIs
  } else {
    const parts = base.split('-')
    let n = 0
    while (n < parts.length - 1 && UNKNOWN_TYPE_SEGMENT.test(parts[n])) n++
    if (n === 0) return { reason: 'not a Baileys key file name (<type>-<id>.json)' }
    type = parts.slice(0, n).join('-')
    fileId = parts.slice(n).join('-')
    if (type === 'creds') return { reason: 'not a key file (Baileys keeps its creds in creds.json only)' }
  }
  if (fileId.length === 0) return { reason: 'no key id in the file name' }
  const id = rule(fileId)
  if (id == null) return { reason: `not a ${type} name Baileys writes` }
  const expected = fixFileName(`${type}-${id}.json`)
  if (expected !== `${base}.json`) return { reason: `Baileys never reads this file (it would look for ${expected})` }
  return { type, id }
}

/** Reads and parses one JSON file; `{ value, bytes }`. */
async function readJson(full) {
  let buf
  try {
    buf = await fs.readFile(full)
  } catch (err) {
    throw fileError('ERR_IO', full, `could not be read (${err.code ?? err.message}); nothing was imported`, err)
  }
  try {
    return { value: JSON.parse(buf.toString('utf8'), reviver), bytes: buf.length }
  } catch (err) {
    throw fileError('ERR_CORRUPT_VALUE', full, `is not valid JSON (${err.message}); nothing was imported`, err)
  }
}

/**
 * Reads a `useMultiFileAuthState` folder (Baileys 6.x or 7.x) and writes it into `store` as
 * `sessionId`, creds and every key in one atomic write. Returns
 * `{ sessionId, written, counts, records, bytes, skipped: [{ file, reason }], verified? }`.
 */
async function importMultiFileAuthState(store, folder, sessionId, options) {
  const o = toolOptions(options, ['types'])
  checkSessionId(sessionId)
  const dir = checkFolder(folder)
  const types = [...new Set([...KNOWN_TYPES, ...extraTypes(o.types)])].sort((a, b) => b.length - a.length)

  let entries
  try {
    entries = await fs.readdir(dir, { withFileTypes: true })
  } catch (err) {
    if (err.code === 'ENOENT') throw new WaAuthStoreError('ERR_NOT_FOUND', `no Baileys auth folder at ${dir}: it does not exist`, { cause: err })
    if (err.code === 'ENOTDIR') throw new WaAuthStoreError('ERR_IO', `${dir} is not a folder`, { cause: err })
    throw new WaAuthStoreError('ERR_IO', `${dir} could not be listed (${err.code ?? err.message})`, { cause: err })
  }
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
  if (!entries.some((e) => e.name === CREDS_FILE && !e.isDirectory())) {
    throw new WaAuthStoreError('ERR_NOT_FOUND', `${dir} holds no ${CREDS_FILE}: not a Baileys useMultiFileAuthState folder (nothing was imported)`)
  }

  const skipped = []
  const wanted = [] // { name, type, id }
  for (const e of entries) {
    if (e.name === CREDS_FILE) continue
    if (e.isDirectory()) skipped.push({ file: e.name, reason: 'a folder' })
    else if (!e.name.endsWith('.json') || e.name.startsWith('.')) skipped.push({ file: e.name, reason: 'not a .json file (Baileys reads only creds.json and <type>-<id>.json)' })
    else {
      const parsed = parseKeyFile(e.name.slice(0, -'.json'.length), types)
      if (parsed.reason) skipped.push({ file: e.name, reason: parsed.reason })
      else wanted.push({ name: e.name, ...parsed })
    }
  }

  const total = wanted.length + 1
  let done = 0
  const progress = () => o.onProgress(++done, total)

  const credsPath = path.join(dir, CREDS_FILE)
  const credsFile = await readJson(credsPath)
  if (credsFile.value === null || typeof credsFile.value !== 'object' || Array.isArray(credsFile.value)) {
    throw fileError('ERR_CORRUPT_VALUE', credsPath, 'does not hold a creds object; nothing was imported')
  }
  let bytes = credsFile.bytes
  progress()

  const proto = wanted.some((w) => w.type === 'app-state-sync-key') ? await protoOf(store) : null
  const keys = Object.create(null)
  const read = new Array(wanted.length)
  await eachLimit(wanted, FILE_CONCURRENCY, async (w, i) => {
    read[i] = await readJson(path.join(dir, w.name))
    progress()
  })
  for (let i = 0; i < wanted.length; i++) {
    const { name, type, id } = wanted[i]
    let { value } = read[i]
    if (value === null) {
      skipped.push({ file: name, reason: 'holds null (Baileys reads it as absent)' })
      continue
    }
    if (type === 'app-state-sync-key' && proto?.Message?.AppStateSyncKeyData) {
      // what Baileys' get() hands out, and what it writes back (toJSON: bytes as base64, longs as strings)
      try {
        value = proto.Message.AppStateSyncKeyData.fromObject(value)
      } catch (err) {
        throw fileError('ERR_CORRUPT_VALUE', path.join(dir, name), `is not an AppStateSyncKeyData (${err.message}); nothing was imported`, err)
      }
    }
    bytes += read[i].bytes
    ;(keys[type] ??= Object.create(null))[id] = value
  }

  const state = { creds: credsFile.value, keys }
  const counts = countKeys(keys)
  let records = 1
  for (const t of Object.keys(counts)) records += counts[t]
  const result = { sessionId, written: false, counts, records, bytes, skipped }
  if (o.dryRun) return result
  result.written = (await writeSession(store, sessionId, state, { overwrite: o.overwrite })).written
  if (o.verify) {
    const check = await verifySession(store, sessionId, state)
    assertVerified(sessionId, check)
    result.verified = { records: check.records, mismatches: 0 }
  }
  return result
}

/** `[name, text]` of every file of the session, creds.json last. */
function layout(sessionId, state) {
  const files = []
  const owner = new Map()
  for (const type of Object.keys(state.keys)) {
    for (const id of Object.keys(state.keys[type])) {
      const name = fixFileName(`${type}-${id}.json`)
      const other = owner.get(name)
      if (other) {
        throw invalid(`session "${sessionId}" cannot be written as a multi-file folder: ${other} and ${type}/${id} both map to the file ${name}`)
      }
      owner.set(name, `${type}/${id}`)
      files.push([name, JSON.stringify(state.keys[type][id], BufferJSON.replacer)])
    }
  }
  files.push([CREDS_FILE, JSON.stringify(state.creds, BufferJSON.replacer)])
  return files
}

/** Moves `name` from `from` to `to` (rename; a copy across file systems). */
async function move(from, to, name) {
  const src = path.join(from, name)
  const dst = path.join(to, name)
  try {
    await fs.rename(src, dst)
  } catch (err) {
    if (err.code !== 'EXDEV') throw fileError('ERR_IO', dst, `could not be written (${err.code ?? err.message})`, err)
    try {
      await fs.copyFile(src, dst)
    } catch (err2) {
      throw fileError('ERR_IO', dst, `could not be written (${err2.code ?? err2.message})`, err2)
    }
  }
}

/**
 * Writes the session out as a folder Baileys' own `useMultiFileAuthState(folder)` opens: creds.json
 * and one `${type}-${id}.json` per key (Baileys' fixFileName), BufferJSON text. A new or empty folder
 * appears whole (the files are written into a sibling folder that is then renamed); a non-empty one
 * is refused unless `overwrite`, which replaces it file by file (creds.json last) and removes the
 * `.json` files the session does not have (other files stay). A session whose lease another process
 * holds (a running bot) is refused with ERR_SESSION_LOCKED. Returns `{ sessionId, counts, files, bytes, removed }`.
 */
async function exportMultiFileAuthState(store, sessionId, folder, options) {
  const o = toolOptions(options)
  checkSessionId(sessionId)
  const dir = checkFolder(folder)

  // a session a running bot holds changes under the export, and two clients on one account conflict
  const lease = typeof store.leaseInfo === 'function' ? await store.leaseInfo(sessionId).catch(() => null) : null
  if (lease && !lease.mine) {
    throw new WaAuthStoreError('ERR_SESSION_LOCKED', `session "${sessionId}" is in use by "${lease.holder}" (lease epoch ${lease.epoch}); stop that bot before exporting, or its folder copy is stale at once`)
  }
  const state = await readSession(store, sessionId)
  if (state.creds == null) {
    const what = Object.keys(state.keys).length > 0 ? 'has keys but no creds (Baileys would pair anew)' : 'does not exist in the store'
    throw new WaAuthStoreError('ERR_SESSION_NOT_FOUND', `session "${sessionId}" ${what}; nothing was exported`)
  }
  const files = layout(sessionId, state)
  const counts = countKeys(state.keys)
  let bytes = 0
  for (const [, text] of files) bytes += Buffer.byteLength(text)

  let existing = null // names in the target folder, null when it does not exist
  try {
    existing = await fs.readdir(dir)
  } catch (err) {
    if (err.code === 'ENOTDIR') throw new WaAuthStoreError('ERR_IO', `${dir} is not a folder`, { cause: err })
    if (err.code !== 'ENOENT') throw new WaAuthStoreError('ERR_IO', `${dir} could not be listed (${err.code ?? err.message})`, { cause: err })
  }
  if (existing?.length > 0 && !o.overwrite) {
    throw new WaAuthStoreError('ERR_FOLDER_NOT_EMPTY', `${dir} is not empty (${existing.length} entries); pass overwrite (--overwrite) to replace its Baileys files`)
  }
  const result = { sessionId, counts, files: files.length, bytes, removed: 0 }
  if (o.dryRun) return result

  const parent = path.dirname(dir)
  let staging
  try {
    await fs.mkdir(parent, { recursive: true })
    staging = await fs.mkdtemp(path.join(parent, `.${path.basename(dir)}.wa-export-`))
  } catch (err) {
    throw new WaAuthStoreError('ERR_IO', `could not create a folder next to ${dir} (${err.code ?? err.message})`, { cause: err })
  }
  let done = 0
  try {
    await eachLimit(files, FILE_CONCURRENCY, async ([name, text]) => {
      try {
        await fs.writeFile(path.join(staging, name), text)
      } catch (err) {
        throw fileError('ERR_IO', path.join(staging, name), `could not be written (${err.code ?? err.message})`, err)
      }
      o.onProgress(++done, files.length)
    })
    let placed = false
    if (existing == null || existing.length === 0) {
      // POSIX rename replaces an empty folder: the folder appears complete or not at all
      placed = await fs.rename(staging, dir).then(() => true, () => false)
    }
    if (!placed) {
      if (existing == null) await fs.mkdir(dir, { recursive: true })
      const keyFiles = files.slice(0, -1)
      await eachLimit(keyFiles, FILE_CONCURRENCY, ([name]) => move(staging, dir, name))
      await move(staging, dir, CREDS_FILE)
      const mine = new Set(files.map(([name]) => name))
      // only files of Baileys' own key types go: anything else in the folder (package.json, notes) stays
      const stale = (existing ?? []).filter((name) => name.endsWith('.json') && !mine.has(name) && KNOWN_TYPES.some((t) => name.startsWith(`${t}-`)))
      await eachLimit(stale, FILE_CONCURRENCY, async (name) => {
        try {
          await fs.rm(path.join(dir, name), { force: true })
        } catch (err) {
          throw fileError('ERR_IO', path.join(dir, name), `could not be removed (${err.code ?? err.message})`, err)
        }
      })
      result.removed = stale.length
    }
  } finally {
    await fs.rm(staging, { recursive: true, force: true }).catch(() => {})
  }

  if (o.verify) {
    await eachLimit(files, FILE_CONCURRENCY, async ([name, text]) => {
      const full = path.join(dir, name)
      const got = await fs.readFile(full, 'utf8').catch((err) => {
        throw fileError('ERR_IO', full, `could not be read back (${err.code ?? err.message})`, err)
      })
      if (got !== text) throw fileError('ERR_VERIFY_FAILED', full, 'did not read back as written')
    })
    result.verified = { files: files.length }
  }
  return result
}

module.exports = { importMultiFileAuthState, exportMultiFileAuthState, fixFileName, parseKeyFile, KNOWN_TYPES }
