'use strict'
// The promises of native calls answered through one completion handler (src/completions.rs):
// a call gets a request id, the native side answers ids in batches, each on the JavaScript
// thread. One long-lived handler instead of a promise per native call: no threadsafe function
// made and released per call, and one wake of this thread for all the answers queued by then.

/** Ids stay below 2^32 (u32 on the native side); 0 is never used. */
const MAX_ID = 0xffffffff

class Completions {
  constructor() {
    this._pending = new Map()
    this._next = 0
    // keeps the event loop alive while answers are owed (the native handler is weak): one
    // timer, referenced only then
    this._alive = setInterval(() => {}, 2 ** 31 - 1)
    this._alive.unref()
  }

  /** The native handler: settles each answered id. */
  handler() {
    return (ids, versions, errors) => {
      for (let i = 0; i < ids.length; i++) {
        const p = this._pending.get(ids[i])
        if (!p) continue
        this._pending.delete(ids[i])
        if (errors[i] == null) p.resolve(versions[i])
        else p.reject(new Error(errors[i]))
      }
      if (this._pending.size === 0) this._alive.unref()
    }
  }

  /** `start(id)` makes the native call (it may throw: bad arguments); a promise of its answer. */
  call(start) {
    let id = this._next + 1
    if (id > MAX_ID) id = 1
    while (this._pending.has(id)) id = id === MAX_ID ? 1 : id + 1
    this._next = id
    return new Promise((resolve, reject) => {
      start(id)
      this._pending.set(id, { resolve, reject })
      if (this._pending.size === 1) this._alive.ref()
    })
  }
}

module.exports = { Completions }
