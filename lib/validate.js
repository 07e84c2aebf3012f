'use strict'
// Strings must be well-formed UTF-16 before they cross into the native layer: napi converts a
// lone surrogate to U+FFFD, so two different JavaScript strings (say 'a\uD800' and 'a\uDBFF')
// would name the same stored row.

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
 * surrogate (`ERR_INVALID_SESSION_ID` when `what` is 'session id', else `ERR_INVALID_ARGUMENT`).
 * The message names the argument and the code unit index, never the string itself. Values that
 * are not strings pass through: their type is checked elsewhere.
 */
function wellFormed(value, what = 'argument') {
  if (typeof value !== 'string' || isWellFormed(value)) return value
  const code = what === 'session id' ? 'ERR_INVALID_SESSION_ID' : 'ERR_INVALID_ARGUMENT'
  const at = loneSurrogateIndex(value)
  throw new WaAuthStoreError(code, `${what} is not well-formed UTF-16: lone surrogate at code unit index ${at}`)
}

module.exports = { wellFormed, loneSurrogateIndex }
