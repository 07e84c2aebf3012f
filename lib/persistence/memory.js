'use strict'
// MemoryPersistence: the Persistence interface (lib/persistence/driver.js) over Maps in this
// process. For tests, demos and as the reference a new adapter can be read against: each
// session's transactions run one after another (a promise chain per session), a transaction's
// writes are staged and applied together when its callback resolves, dropped when it throws.
// Buffers are copied in and out, so nobody can change a stored value from outside.

const copy = (b) => (b === null || b === undefined ? null : Buffer.from(b))

function sessionRow(r) {
  return {
    creds: copy(r.creds),
    credsVersion: r.credsVersion,
    version: r.version,
    clearedVersion: r.clearedVersion,
    epoch: r.epoch,
    epochSeq: r.epochSeq ?? 0,
    sealed: r.sealed ?? 0,
    createdAt: r.createdAt,
    updatedAt: r.updatedAt,
  }
}

function keyRow(r) {
  return { type: r.type, id: r.id, value: copy(r.value), version: r.version, updatedAt: r.updatedAt }
}

function leaseRow(r) {
  return { token: r.token, holder: r.holder, epoch: r.epoch, expiresAt: r.expiresAt, acquiredAt: r.acquiredAt }
}

/** A transaction's view: the committed entry below, its own writes on top. */
class MemoryTransaction {
  #entry
  #session = undefined // undefined: not written
  #lease = undefined // undefined: not written, null: deleted
  #puts = new Map() // type -> id -> row
  #below = 0
  #done = false

  constructor(entry) {
    this.#entry = entry
  }

  #open() {
    if (this.#done) throw new Error('this MemoryPersistence transaction is over: use tx only inside its callback')
  }

  async getSession() {
    this.#open()
    const row = this.#session !== undefined ? this.#session : this.#entry?.session
    return row ? sessionRow(row) : null
  }

  async putSession(row) {
    this.#open()
    this.#session = sessionRow(row)
  }

  async getKeys(refs) {
    this.#open()
    const out = []
    for (const { type, id } of refs) {
      const staged = this.#puts.get(type)?.get(id)
      if (staged) {
        out.push(keyRow(staged))
        continue
      }
      const stored = this.#entry?.keys.get(type)?.get(id)
      if (stored && stored.version >= this.#below) out.push(keyRow(stored))
    }
    return out
  }

  async putKeys(rows) {
    this.#open()
    for (const r of rows) {
      let ids = this.#puts.get(r.type)
      if (!ids) this.#puts.set(r.type, (ids = new Map()))
      ids.set(r.id, keyRow(r))
    }
  }

  async deleteKeysBelow(version) {
    this.#open()
    this.#below = Math.max(this.#below, version)
    for (const ids of this.#puts.values()) for (const [id, r] of ids) if (r.version < version) ids.delete(id)
  }

  async getLease() {
    this.#open()
    const row = this.#lease !== undefined ? this.#lease : this.#entry?.lease
    return row ? leaseRow(row) : null
  }

  async putLease(row) {
    this.#open()
    this.#lease = leaseRow(row)
  }

  async deleteLease() {
    this.#open()
    this.#lease = null
  }

  /** Applies the staged writes to `entry` (synchronously: nobody sees half of them). */
  commit(entry) {
    this.#done = true
    if (this.#session !== undefined) entry.session = this.#session
    if (this.#below > 0) {
      for (const ids of entry.keys.values()) for (const [id, r] of ids) if (r.version < this.#below) ids.delete(id)
    }
    for (const [type, staged] of this.#puts) {
      let ids = entry.keys.get(type)
      if (!ids) entry.keys.set(type, (ids = new Map()))
      for (const [id, r] of staged) ids.set(id, r)
    }
    for (const [type, ids] of entry.keys) if (ids.size === 0) entry.keys.delete(type)
    if (this.#lease !== undefined) entry.lease = this.#lease
  }

  discard() {
    this.#done = true
  }
}

class MemoryPersistence {
  /** sessionId -> { session, keys: type -> id -> row, lease } */
  #data = new Map()
  /** sessionId -> the tail of its chain of transactions */
  #locks = new Map()

  /** Runs `fn` after the session's earlier transactions and deletes, alone. */
  #serialised(sessionId, fn) {
    const prior = this.#locks.get(sessionId) ?? Promise.resolve()
    const run = prior.then(fn)
    const tail = run.then(
      () => {},
      () => {},
    )
    this.#locks.set(sessionId, tail)
    tail.then(() => {
      if (this.#locks.get(sessionId) === tail) this.#locks.delete(sessionId)
    })
    return run
  }

  async transaction(sessionId, fn) {
    return this.#serialised(sessionId, async () => {
      const tx = new MemoryTransaction(this.#data.get(sessionId))
      let result
      try {
        result = await fn(tx)
      } catch (err) {
        tx.discard()
        throw err
      }
      let entry = this.#data.get(sessionId)
      if (!entry) entry = { session: null, keys: new Map(), lease: null }
      tx.commit(entry)
      if (entry.session || entry.lease || entry.keys.size) this.#data.set(sessionId, entry)
      else this.#data.delete(sessionId)
      return result
    })
  }

  async getSession(sessionId) {
    const row = this.#data.get(sessionId)?.session
    return row ? sessionRow(row) : null
  }

  async getKeys(sessionId, type, ids) {
    const stored = this.#data.get(sessionId)?.keys.get(type)
    if (!stored) return []
    const out = []
    for (const id of ids) {
      const r = stored.get(id)
      if (r) out.push(keyRow(r))
    }
    return out
  }

  async listKeys(sessionId, type) {
    const entry = this.#data.get(sessionId)
    if (!entry) return []
    const out = []
    for (const [t, ids] of entry.keys) {
      if (type !== undefined && t !== type) continue
      for (const r of ids.values()) out.push({ type: r.type, id: r.id, version: r.version, size: r.value === null ? null : r.value.length })
    }
    return out
  }

  async listSessions() {
    const out = []
    for (const [sessionId, entry] of this.#data) {
      const s = entry.session
      if (s) out.push({ sessionId, hasCreds: s.creds !== null, version: s.version, updatedAt: s.updatedAt })
    }
    return out
  }

  async deleteSession(sessionId) {
    await this.#serialised(sessionId, async () => {
      this.#data.delete(sessionId)
    })
  }

  /** Nothing to release; the data stays, so another store can open this object again (a restart). */
  async close() {}
}

module.exports.MemoryPersistence = MemoryPersistence
