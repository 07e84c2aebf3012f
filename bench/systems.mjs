// The systems every workload runs through: this store in several configurations, and the
// baselines measured in the same run.
import { randomBytes } from 'node:crypto'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { BufferJSON } from 'baileys'
import { useMultiFileAuthState } from 'baileys'
import { openAuthStore } from '../index.js'
import { CommunityStore } from './community-baseline.mjs'

const tmp = (name) => mkdtempSync(join(tmpdir(), `wa-bench-${name}-`))

/** Our store behind the common workload interface; each session's lease taken on first use, as a bot would. */
function ours(store) {
  const leases = new Map()
  const held = (sid) => {
    if (store._lease === false) return undefined
    let l = leases.get(sid)
    if (!l) leases.set(sid, (l = store.acquireLease(sid)))
    return l
  }
  const first = (sid, fn) => {
    const l = held(sid)
    return l ? l.then(fn) : fn()
  }
  return {
    get: (sid, type, ids) => first(sid, () => store.getKeys(sid, type, ids)),
    set: (sid, data) => first(sid, () => store.setKeys(sid, data)),
    saveCreds: (sid, creds) => first(sid, () => store.saveCreds(sid, { creds })),
    readCreds: async (sid) => (await first(sid, () => store.getCreds(sid)))?.creds,
    close: () => store.close(),
    store,
  }
}

/** Our store from openAuthStore options. */
export async function oursFrom(config) {
  return ours(await openAuthStore(config))
}

/** The floor: a Map of BufferJSON strings, no I/O. */
function memory() {
  const m = new Map()
  const k = (sid, type, id) => `${sid}\0${type}\0${id}`
  return {
    async get(sid, type, ids) {
      const out = {}
      for (const id of ids) {
        const v = m.get(k(sid, type, id))
        if (v !== undefined) out[id] = JSON.parse(v, BufferJSON.reviver)
      }
      return out
    },
    async set(sid, data) {
      for (const type of Object.keys(data))
        for (const id of Object.keys(data[type])) {
          const v = data[type][id]
          if (v == null) m.delete(k(sid, type, id))
          else m.set(k(sid, type, id), JSON.stringify(v, BufferJSON.replacer))
        }
    },
    async saveCreds(sid, creds) {
      m.set(k(sid, '', ''), JSON.stringify(creds, BufferJSON.replacer))
    },
    async readCreds(sid) {
      const v = m.get(k(sid, '', ''))
      return v && JSON.parse(v, BufferJSON.reviver)
    },
    async close() {},
  }
}

/** Baileys' own useMultiFileAuthState, one folder per session. */
function multiFile(root) {
  const states = new Map()
  const state = async (sid) => {
    if (!states.has(sid)) states.set(sid, useMultiFileAuthState(join(root, sid)))
    return states.get(sid)
  }
  return {
    async get(sid, type, ids) {
      return (await state(sid)).state.keys.get(type, ids)
    },
    async set(sid, data) {
      return (await state(sid)).state.keys.set(data)
    },
    async saveCreds(sid, creds) {
      const s = await state(sid)
      Object.assign(s.state.creds, creds)
      await s.saveCreds()
    },
    async readCreds(sid) {
      return (await state(sid)).state.creds
    },
    async close() {},
    root,
  }
}

export async function systemList({ redis, postgres, mysql }) {
  const list = [
    { name: 'store: SQLite (embedded)', ours: true, config: { redis: null, database: `sqlite://${join(tmp('sqlite'), 'auth.db')}` } },
  ]
  if (redis && postgres) list.push({ name: 'store: Redis + PostgreSQL', ours: true, config: { redis, database: postgres } })
  if (redis && postgres) list.push({ name: 'store: Redis + PostgreSQL, write-behind', ours: true, config: { redis, database: postgres, durability: 'write-behind', flushIntervalMs: 200 } })
  if (redis && mysql) list.push({ name: 'store: Redis + MariaDB', ours: true, config: { redis, database: mysql } })
  // the cost of encryption at rest: the same configurations with every value sealed (AES-256-GCM),
  // on the workloads it touches most (every message writes a session record; pairing seals 812 pre-keys)
  const encryption = { key: randomBytes(32) }
  const encrypted = (base) => list.push({ name: `${base.name}, encrypted`, ours: true, config: { ...base.config, encryption }, plain: base.name, workloads: ['message loop', 'pairing burst'] })
  for (const base of list.filter((s) => !s.config.durability)) encrypted(base)
  for (const s of list) s.open = async () => ours(await openAuthStore({ ...s.config }))
  list.push({ name: 'baseline: in-memory (floor)', open: async () => memory() })
  const fileRoot = tmp('multifile')
  list.push({ name: 'baseline: useMultiFileAuthState', open: async () => multiFile(fileRoot), config: { multiFile: fileRoot } })
  if (redis && postgres) {
    list.push({ name: 'baseline: ioredis + pg (community)', community: true, open: () => CommunityStore.open({ redisUrl: redis, pgUrl: postgres }), config: { community: true, redis, postgres } })
  }
  return list
}
