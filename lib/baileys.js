'use strict'
// Finds the Baileys the user installed (as `baileys` or `@whiskeysockets/baileys`), or takes the
// one handed in, for `initAuthCreds` and `proto`. Baileys is a peer dependency: never bundled.

const { WaAuthStoreError } = require('./errors.js')

const NAMES = ['baileys', '@whiskeysockets/baileys']
let found

function isNotFound(err, name) {
  return (err?.code === 'ERR_MODULE_NOT_FOUND' || err?.code === 'MODULE_NOT_FOUND') && String(err.message).includes(name)
}

/** The Baileys module, or null when neither package is installed. */
function loadBaileys() {
  found ??= (async () => {
    for (const name of NAMES) {
      try {
        const mod = await import(name)
        return mod.default && !mod.initAuthCreds ? mod.default : mod
      } catch (err) {
        if (!isNotFound(err, name)) throw err
      }
    }
    return null
  })()
  return found
}

/** `given` if it looks like Baileys, else the installed one. */
async function resolveBaileys(given) {
  if (given) {
    if (typeof given !== 'object' && typeof given !== 'function') {
      throw new WaAuthStoreError('ERR_INVALID_ARGUMENT', 'baileys option must be the Baileys module (import * as baileys from "baileys")')
    }
    return given
  }
  return loadBaileys()
}

function requireInitAuthCreds(baileys) {
  if (typeof baileys?.initAuthCreds !== 'function') {
    throw new WaAuthStoreError(
      'ERR_BAILEYS_NOT_FOUND',
      'a new session needs Baileys\' initAuthCreds(): install "baileys" (or "@whiskeysockets/baileys"), or pass { baileys } in the options',
    )
  }
  return baileys.initAuthCreds
}

module.exports = { loadBaileys, resolveBaileys, requireInitAuthCreds }
