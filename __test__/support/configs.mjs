// Every backend combination the conformance suite runs against. `open()` returns a new store on
// the same backends each time, so a test can reopen and read what another store wrote.
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { BaileysAuthStore, BaileysOrmAdapter, BaileysRedisAdapter, openAuthStore } from '../../index.js'
import { service } from './services.mjs'

const tmp = () => mkdtempSync(join(tmpdir(), 'wa-auth-store-'))

export async function configurations() {
  const redis = await service('redis')
  const postgres = await service('postgres')
  const mysql = await service('mysql')
  const sqliteFile = () => `sqlite://${join(tmp(), 'auth.db')}`
  const embedded = sqliteFile()
  const redisSqlite = sqliteFile()
  const combo = (r, d) => () => new BaileysAuthStore(r ? new BaileysRedisAdapter(r) : null, d ? new BaileysOrmAdapter(d) : null)
  return [
    { name: 'embedded SQLite', redis: null, database: embedded, open: () => openAuthStore({ redis: null, database: embedded }) },
    { name: 'Redis only', redis, database: null, open: combo(redis, null), skip: !redis },
    { name: 'Redis + PostgreSQL', redis, database: postgres, open: combo(redis, postgres), skip: !redis || !postgres },
    { name: 'Redis + MariaDB', redis, database: mysql, open: combo(redis, mysql), skip: !redis || !mysql },
    { name: 'Redis + SQLite', redis, database: redisSqlite, open: combo(redis, redisSqlite), skip: !redis },
    { name: 'PostgreSQL only', redis: null, database: postgres, open: combo(null, postgres), skip: !postgres },
  ]
}
