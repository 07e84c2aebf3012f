'use strict'
// Strings must be well-formed UTF-16 before they cross into the native layer: napi converts a
// lone surrogate to U+FFFD, so two different JavaScript strings (say 'a\uD800' and 'a\uDBFF')
// would name the same stored row.
//
// Session ids and key types are also checked here against the core's rules (crates/core/src/
// ident.rs), so that a call with nothing to write or read, which never reaches the core, still
// refuses a name the core would refuse.

const { WaAuthStoreError } = require('./errors.js')

// Without the `u` flag a regex sees UTF-16 code units: a high surrogate not followed by a low
// one, or a low surrogate not preceded by a high one.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

/** Index of the first lone surrogate code unit of `str`, or -1 if it is well-formed. */
function loneSurrogateIndex(str) {
  const m = LONE_SURROGATE.exec(str)
  return m ? m.index : -1
}

function isWellFormed(str) {
  return typeof str.isWellFormed === 'function' ? str.isWellFormed() : loneSurrogateIndex(str) === -1
}

/**
 * Returns `value` unchanged, or throws a WaAuthStoreError if it is a string holding a lone UTF-16
 * surrogate (`code`: by default `ERR_INVALID_SESSION_ID` when `what` is 'session id', else
 * `ERR_INVALID_ARGUMENT`). The message names the argument and the code unit index, never the
 * string itself. Values that are not strings pass through: their type is checked elsewhere.
 */
function wellFormed(value, what = 'argument', code = what === 'session id' ? 'ERR_INVALID_SESSION_ID' : 'ERR_INVALID_ARGUMENT') {
  if (typeof value !== 'string' || isWellFormed(value)) return value
  const at = loneSurrogateIndex(value)
  throw new WaAuthStoreError(code, `${what} is not well-formed UTF-16: lone surrogate at code unit index ${at}`)
}

// Unicode's Cc category, what the core's char::is_control refuses.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/

/** A string of 1..maxBytes UTF-8 bytes, well-formed, without control characters; else `code`. */
function checkName(value, what, maxBytes, code) {
  if (typeof value !== 'string') throw new WaAuthStoreError(code, `${what} must be a string, got ${typeof value}`)
  wellFormed(value, what, code)
  if (value.length === 0) throw new WaAuthStoreError(code, `${what} must not be empty`)
  const bytes = Buffer.byteLength(value, 'utf8')
  if (bytes > maxBytes) throw new WaAuthStoreError(code, `${what} is ${bytes} bytes long; at most ${maxBytes} are allowed`)
  if (CONTROL.test(value)) throw new WaAuthStoreError(code, `${what} must not contain control characters`)
}

/** Throws ERR_INVALID_SESSION_ID unless `sid` is a session id the core accepts. */
function checkSessionId(sid) {
  checkName(sid, 'session id', 255, 'ERR_INVALID_SESSION_ID')
}

/** Throws ERR_INVALID_ARGUMENT unless `type` is a key type name the core accepts. */
function checkType(type) {
  checkName(type, 'key type', 128, 'ERR_INVALID_ARGUMENT')
}

/**
 * An object of named entries: `{}`, `Object.create(null)`, a class instance. Not null, an array,
 * a Buffer or typed array, a Map, a boxed primitive or a function. (May run a Proxy's trap.)
 */
function isPlainObject(value) {
  return value !== null && typeof value === 'object' && Object.prototype.toString.call(value) === '[object Object]'
}

module.exports = { wellFormed, loneSurrogateIndex, checkSessionId, checkType, isPlainObject }
