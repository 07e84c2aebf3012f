'use strict'
// Every error the package throws is a WaAuthStoreError with a stable `code`. The native layer
// prefixes its messages with the code ("ERR_REDIS: ..."); convertError lifts it into `err.code`
// and keeps the original as `err.cause`.

class WaAuthStoreError extends Error {
  constructor(code, message, options) {
    super(message, options)
    this.name = 'WaAuthStoreError'
    this.code = code
  }
}

const CODE_PREFIX = /^(ERR_[A-Z_]+): ([\s\S]*)$/
// napi-rs statuses of arguments JavaScript passed with the wrong type.
const NAPI_ARGUMENT_STATUSES = new Set(['InvalidArg', 'ObjectExpected', 'StringExpected', 'NameExpected', 'FunctionExpected', 'NumberExpected', 'BooleanExpected', 'ArrayExpected', 'BigintExpected'])

function convertError(err) {
  if (err instanceof WaAuthStoreError) return err
  const message = typeof err?.message === 'string' ? err.message : String(err)
  const m = CODE_PREFIX.exec(message)
  if (m) return new WaAuthStoreError(m[1], m[2], { cause: err })
  if (NAPI_ARGUMENT_STATUSES.has(err?.code)) return new WaAuthStoreError('ERR_INVALID_ARGUMENT', message, { cause: err })
  return err
}

/** Awaits `fn()` and rethrows any failure as a WaAuthStoreError. */
async function call(fn) {
  try {
    return await fn()
  } catch (err) {
    throw convertError(err)
  }
}

/** ERR_INVALID_ARGUMENT; `cause` is the caller's own error, when there is one. */
function invalid(message, cause) {
  return new WaAuthStoreError('ERR_INVALID_ARGUMENT', message, cause === undefined ? undefined : { cause })
}

/** ERR_CONFIG: an unusable URL or option. The message must not quote the URL (passwords). */
function configError(message) {
  return new WaAuthStoreError('ERR_CONFIG', message)
}

/**
 * Runs `fn`, which reads objects the caller handed in. A getter or Proxy trap of theirs that
 * throws becomes ERR_INVALID_ARGUMENT (their error as `cause`); our own errors pass unchanged.
 */
function reading(what, fn) {
  try {
    return fn()
  } catch (err) {
    if (err instanceof WaAuthStoreError) throw err
    throw invalid(`${what} could not be read: a getter or Proxy trap threw (see cause)`, err)
  }
}

module.exports = { WaAuthStoreError, convertError, call, invalid, configError, reading }
