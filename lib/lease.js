'use strict'
// One owner per session: the lease useBaileysAuthState takes before it hands Baileys the state.
// The core keeps the lease (Redis, or SQL without Redis) and fences every write by its epoch;
// this file waits for a handoff, renews on an unref'd timer (it never keeps Node alive) and tells
// the bot when the lease is lost, so it can close its socket.

const { hostname } = require('node:os')
const { LEASE_MIN_TTL_MS } = require('../binding.js')
const { WaAuthStoreError, call, invalid } = require('./errors.js')

const DEFAULT_TTL_MS = 30_000

/** Validates `lease` options (store level, then per session); `false` turns leases off. */
function leaseOptions(...layers) {
  const out = { ttlMs: DEFAULT_TTL_MS, waitMs: 0, holderId: `${hostname()}:${process.pid}`, onLeaseLost: undefined }
  for (const o of layers) {
    if (o === undefined || o === null || o === true) continue
    if (o === false) return false
    if (typeof o !== 'object' || Array.isArray(o)) throw invalid('lease must be false or { ttlMs, waitMs, holderId, onLeaseLost }')
    Object.assign(
      out,
      Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)),
    )
  }
  const { ttlMs, waitMs, holderId, onLeaseLost } = out
  if (!(Number.isFinite(ttlMs) && ttlMs >= LEASE_MIN_TTL_MS && ttlMs <= 2 ** 31 - 1)) throw invalid(`lease.ttlMs must be a number of milliseconds from ${LEASE_MIN_TTL_MS} to 2^31-1`)
  if (!(Number.isFinite(waitMs) && waitMs >= 0 && waitMs <= 2 ** 31 - 1)) throw invalid('lease.waitMs must be a number of milliseconds >= 0')
  if (typeof holderId !== 'string' || holderId.length === 0 || Buffer.byteLength(holderId) > 255) throw invalid('lease.holderId must be a string of 1 to 255 bytes')
  if (onLeaseLost !== undefined && typeof onLeaseLost !== 'function') throw invalid('lease.onLeaseLost must be a function')
  return out
}

function lockedError(sessionId, info) {
  const ageMs = Math.max(0, Date.now() - info.acquiredAt)
  const err = new WaAuthStoreError(
    'ERR_SESSION_LOCKED',
    `session '${sessionId}' is held by '${info.holder}' (lease epoch ${info.epoch}, taken ${ageMs} ms ago, expires in ${Math.max(0, info.expiresInMs)} ms)`,
  )
  Object.assign(err, { holder: info.holder, epoch: info.epoch, ageMs, expiresInMs: info.expiresInMs })
  return err
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** A session's lease held by this process. */
class SessionLease {
  /**
   * Takes the lease, waiting up to `waitMs` for the holder to let go (a rolling deploy starts the
   * new process while the old one is closing). Rejects with ERR_SESSION_LOCKED naming the holder.
   */
  static async acquire(native, sessionId, options, logger) {
    const deadline = Date.now() + options.waitMs
    for (;;) {
      const info = await call(() => native.acquireLease(sessionId, { ttlMs: options.ttlMs, holderId: options.holderId, force: false }))
      if (info.acquired) return new SessionLease(native, sessionId, options, info, logger)
      const left = deadline - Date.now()
      if (left <= 0) throw lockedError(sessionId, info)
      await sleep(Math.max(20, Math.min(250, left, info.expiresInMs > 0 ? info.expiresInMs : 250)))
    }
  }

  constructor(native, sessionId, options, info, logger) {
    this._native = native
    this.sessionId = sessionId
    this.epoch = info.epoch
    this.holderId = options.holderId
    this._options = options
    this._logger = logger
    this._released = false
    this.lostError = null
    /** Resolves with the ERR_SESSION_LOCKED error once the lease is lost (never rejects). */
    this.lost = new Promise((resolve) => {
      this._resolveLost = resolve
    })
    this._renewing = null
    // renew well before expiry: three chances per ttl
    this._timer = setInterval(() => this.renew().catch(() => {}), Math.max(100, Math.floor(options.ttlMs / 3)))
    this._timer.unref?.()
  }

  get held() {
    return !this._released && !this.lostError
  }

  /** Extends the lease now; false (and onLeaseLost) when another process took it. */
  async renew() {
    if (!this.held) return false
    this._renewing ??= call(() => this._native.renewLease(this.sessionId))
      .then(
        (kept) => {
          if (!kept && this.held) this._lose(new WaAuthStoreError('ERR_SESSION_LOCKED', `the lease of session '${this.sessionId}' was lost: another process holds it now (close this socket)`))
          return kept
        },
        (err) => {
          if (err?.code === 'ERR_STORE_CLOSED') {
            // the store closed (it released its leases): nothing left to renew
            this._released = true
            clearInterval(this._timer)
            return false
          }
          // Redis or SQL unreachable: the lease may still be ours; the core refuses writes once it
          // expired by our clock and cannot be renewed
          report(this._logger, err, `could not renew the lease of session '${this.sessionId}'`)
          return this.held
        },
      )
      .finally(() => {
        this._renewing = null
      })
    return this._renewing
  }

  /** A write was fenced: the lease is gone. */
  noteFenced(err) {
    if (err?.code === 'ERR_SESSION_LOCKED' && this.held) this._lose(err)
  }

  _lose(err) {
    this.lostError = err
    clearInterval(this._timer)
    this._resolveLost(err)
    const { onLeaseLost } = this._options
    if (onLeaseLost) {
      try {
        onLeaseLost(err, { sessionId: this.sessionId, epoch: this.epoch })
      } catch (cbErr) {
        report(this._logger, cbErr, 'onLeaseLost threw')
      }
    }
  }

  /** Gives the lease up (idempotent). */
  async release() {
    if (this._released) return
    this._released = true
    clearInterval(this._timer)
    await call(() => this._native.releaseLease(this.sessionId))
  }
}

function report(logger, err, msg) {
  try {
    ;(logger?.warn ?? console.warn).call(logger ?? console, { code: err?.code ?? 'ERR_LEASE', component: 'wa-auth-store' }, `${msg}: ${err?.message ?? err}`)
  } catch {
    // a logger that throws is not ours to fix
  }
}

module.exports = { SessionLease, leaseOptions, lockedError, DEFAULT_TTL_MS }
