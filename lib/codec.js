'use strict'
// Baileys' value shapes <-> stored bytes. The Rust core stores opaque bytes; this file is the only
// place that knows what Baileys puts in them.
//
// Format: UTF-8 JSON in Baileys' own BufferJSON convention, every Buffer/Uint8Array written as
// {"type":"Buffer","data":"<base64>"}. Reading also accepts what other stores wrote: the array form
// {"type":"Buffer","data":[1,2]} (plain JSON.stringify, Baileys 6.x) and Uint8Arrays serialised as
// plain objects {"0":1,"1":2}.

const { WaAuthStoreError } = require('./errors.js')

function replacer(_key, value) {
  if (value instanceof Uint8Array) {
    return { type: 'Buffer', data: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64') }
  }
  // Buffer#toJSON runs before the replacer and yields {type: 'Buffer', data: number[]}.
  if (value !== null && typeof value === 'object' && value.type === 'Buffer' && Array.isArray(value.data)) {
    return { type: 'Buffer', data: Buffer.from(value.data).toString('base64') }
  }
  return value
}

function isByteObject(o) {
  const keys = Object.keys(o)
  if (keys.length === 0) return false
  for (let i = 0; i < keys.length; i++) {
    if (keys[i] !== String(i)) return false
    const v = o[keys[i]]
    if (!Number.isInteger(v) || v < 0 || v > 255) return false
  }
  return true
}

function reviver(_key, value) {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return value
  if (value.type === 'Buffer') {
    if (typeof value.data === 'string') return Buffer.from(value.data, 'base64')
    if (Array.isArray(value.data)) return Buffer.from(value.data)
  }
  if (isByteObject(value)) return Buffer.from(Object.values(value))
  return value
}

/** Baileys-compatible JSON helpers (same format as Baileys' BufferJSON, more lenient reviver). */
const BufferJSON = { replacer, reviver }

/** Serialises a value to the stored bytes. */
function encodeValue(value) {
  let text
  try {
    text = JSON.stringify(value, replacer)
  } catch (err) {
    throw new WaAuthStoreError('ERR_INVALID_ARGUMENT', `value cannot be serialised: ${err.message}`, { cause: err })
  }
  if (text === undefined) {
    throw new WaAuthStoreError('ERR_INVALID_ARGUMENT', `value of type ${typeof value} cannot be stored`)
  }
  return Buffer.from(text, 'utf8')
}

/**
 * Parses stored bytes. `proto` (Baileys' WAProto) revives app-state-sync-key values through
 * fromObject, which turns base64 bytes fields back into Uint8Arrays and longs into Long.
 */
function decodeValue(type, bytes, proto) {
  let value
  try {
    value = JSON.parse(bytes.toString('utf8'), reviver)
  } catch (err) {
    throw new WaAuthStoreError('ERR_CORRUPT_VALUE', `stored ${type} value is not valid JSON: ${err.message}`, { cause: err })
  }
  if (type === 'app-state-sync-key' && value && proto?.Message?.AppStateSyncKeyData) {
    value = proto.Message.AppStateSyncKeyData.fromObject(value)
  }
  return value
}

module.exports = { BufferJSON, encodeValue, decodeValue }
