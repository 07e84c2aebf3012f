// Every backend combination the conformance suite runs against. `open()` returns a new store on
// the same backends each time, so a test can reopen and read what another store wrote.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Redis from 'ioredis'
import { inject } from 'vitest'
import { BaileysAuthStore, BaileysOrmAdapter, BaileysRedisAdapter, MemoryPersistence, MikroOrmPersistence, openAuthStore } from '../../index.js'
import { service } from './services.mjs'

// the SQLite files' folders go when the test process ends
const folders = []
process.on('exit', () => {
  for (const f of folders) rmSync(f, { recursive: true, force: true })
})
const tmp = () => {
  const f = mkdtempSync(join(tmpdir(), 'wa-auth-store-'))
  folders.push(f)
  return f
}

/** One MikroORM (PostgreSQL) per test process, its tables made once; closed when the process ends. */
let orm
async function mikroOrm(postgres) {
  orm ??= (async () => {
    const { MikroORM } = await import('@mikro-orm/postgresql')
    const o = await MikroORM.init({ clientUrl: postgres, entities: MikroOrmPersistence.entities, debug: false, allowGlobalContext: true })
    await MikroOrmPersistence.ensureSchema(o)
    return o
  })()
  return orm
}

/**
 * The run's own Redis Cluster (support/cluster-setup.mjs), or null after a SKIPPED line (the
 * setup already failed the run under CI=true).
 */
export function clusterUrl() {
  const url = inject('clusterUrl')
  if (!url) console.warn(`SKIPPED: no Redis Cluster (${inject('clusterError') ?? 'not started'}); the cluster suites need redis-server`)
  return url ?? null
}

/**
 * An ioredis client for looking at a configuration's Redis directly: a cluster client for a
 * `redis-cluster://` URL (its first host and every `node=`). Disconnect it.
 */
export function rawRedis(url) {
  if (!url.startsWith('redis-cluster://')) return new Redis(url)
  const u = new URL(url.replace(/^redis-cluster:/, 'http:'))
  const hosts = [u.host, ...u.searchParams.getAll('node')].map((h) => ({ host: h.slice(0, h.lastIndexOf(':')), port: Number(h.slice(h.lastIndexOf(':') + 1)) }))
  return new Redis.Cluster(hosts)
}

/** `{ cluster: true }` adds 'Redis Cluster + PostgreSQL' (the run's own cluster) to the list. */
export async function configurations({ cluster = false } = {}) {
  const redis = await service('redis')
  const postgres = await service('postgres')
  const mysql = await service('mysql')
  const sqliteFile = () => `sqlite://${join(tmp(), 'auth.db')}`
  const embedded = sqliteFile()
  const redisSqlite = sqliteFile()
  const memory = new MemoryPersistence()
  const combo = (r, d) => () => new BaileysAuthStore(r ? new BaileysRedisAdapter(r) : null, d ? new BaileysOrmAdapter(d) : null)
  return [
    { name: 'embedded SQLite', redis: null, database: embedded, open: () => openAuthStore({ redis: null, database: embedded }) },
    { name: 'Redis only', redis, database: null, open: combo(redis, null), skip: !redis },
    { name: 'Redis + PostgreSQL', redis, database: postgres, open: combo(redis, postgres), skip: !redis || !postgres },
    { name: 'Redis + MariaDB', redis, database: mysql, open: combo(redis, mysql), skip: !redis || !mysql },
    { name: 'Redis + SQLite', redis, database: redisSqlite, open: combo(redis, redisSqlite), skip: !redis },
    { name: 'PostgreSQL only', redis: null, database: postgres, open: combo(null, postgres), skip: !postgres },
    // persistence plug-ins standing in for the SQL tier (the same guarantees, through lib/persistence/driver.js)
    { name: 'Redis + MikroORM plug-in', redis, database: null, plugin: 'mikro-orm', pluginDatabase: postgres, open: async () => new BaileysAuthStore(new BaileysRedisAdapter(redis), new MikroOrmPersistence(await mikroOrm(postgres))), skip: !redis || !postgres },
    { name: 'memory plug-in', redis: null, database: null, plugin: 'memory', open: () => openAuthStore({ redis: null, persistence: memory }) },
    ...(cluster ? [clusterConfiguration(postgres, combo)] : []),
  ]
}

function clusterConfiguration(postgres, combo) {
  const url = clusterUrl()
  return { name: 'Redis Cluster + PostgreSQL', redis: url, database: postgres, cluster: true, open: combo(url, postgres), skip: !url || !postgres }
}
