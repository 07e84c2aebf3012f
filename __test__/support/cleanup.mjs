// Global teardown: the tests (cargo's and vitest's) name every session they create on the shared
// services with a test prefix (support/services.mjs, crates/core/tests/common); this removes those rows and keys after the run, so nothing is left
// behind in the shared Redis, PostgreSQL and MariaDB. Own redis-servers and SQLite files are
// temporary anyway.
import Redis from 'ioredis'
import pg from 'pg'
import mysql from 'mysql2/promise'

// this run's sessions (the forks inherit WA_TEST_RUN from setup), and those cargo's tests left
// (`npm test` runs them just before): never another run's. WA_TEST_CLEAN_RUST=0 leaves cargo's
// alone, for a vitest run beside a `cargo test` that is still using them.
const RUN = `${process.pid}${Date.now().toString(36)}`
const prefixes = () => [`wa-test-js-${process.env.WA_TEST_RUN}-`, ...(process.env.WA_TEST_CLEAN_RUST === '0' ? [] : ['wa-test-rs-'])]
const TABLES = ['wa_auth_keys', 'wa_auth_sessions', 'wa_auth_leases']
// the MikroORM plug-in's tables and the benchmark's community baseline (PostgreSQL only;
// elsewhere the DELETE fails and is ignored)
const PG_ONLY_TABLES = ['wa_orm_auth_keys', 'wa_orm_auth_sessions', 'wa_orm_auth_leases', 'bench_community_keys']

async function cleanRedis(url, prefixes) {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 })
  try {
    await redis.connect()
    let removed = 0
    // anywhere in the id: the look-alike tests wrap ids ('{<id>}' is escaped to '%7B<id>%7D')
    for (const pattern of prefixes().flatMap((p) => [`wa:{s:*${p}*`, `community:*${p}*`])) {
      let cursor = '0'
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000)
        cursor = next
        if (keys.length) removed += await redis.del(...keys)
      } while (cursor !== '0')
    }
    // the memory manager's shared bookkeeping names sessions as members
    for (const key of ['wa:{m}:lru', 'wa:{m}:dirty', 'wa:{m}:count', 'wa:{m}:size']) {
      const type = await redis.type(key)
      const members = type === 'zset' ? await redis.zrange(key, 0, -1) : type === 'set' ? await redis.smembers(key) : type === 'hash' ? await redis.hkeys(key) : []
      const ours = members.filter((m) => prefixes().some((p) => m.includes(p)))
      for (let i = 0; i < ours.length; i += 1000) {
        const part = ours.slice(i, i + 1000)
        if (type === 'zset') await redis.zrem(key, ...part)
        else if (type === 'set') await redis.srem(key, ...part)
        else await redis.hdel(key, ...part)
      }
    }
    return removed
  } catch {
    return 0 // no Redis here: nothing to clean
  } finally {
    redis.disconnect()
  }
}

async function cleanPostgres(url, prefixes) {
  const client = new pg.Client({ connectionString: url })
  try {
    await client.connect()
    for (const p of prefixes()) for (const t of [...TABLES, ...PG_ONLY_TABLES]) await client.query(`DELETE FROM ${t} WHERE session_id LIKE $1`, [`%${p}%`]).catch(() => {})
  } catch {
    // not reachable: nothing to clean
  } finally {
    await client.end().catch(() => {})
  }
}

async function cleanMysql(url, prefixes) {
  let conn
  try {
    conn = await mysql.createConnection(url)
    for (const p of prefixes()) for (const t of TABLES) await conn.query(`DELETE FROM ${t} WHERE session_id LIKE ?`, [`%${p}%`]).catch(() => {})
  } catch {
    // not reachable: nothing to clean
  } finally {
    await conn?.end().catch(() => {})
  }
}

export async function setup() {
  process.env.WA_TEST_RUN ??= RUN
}

/**
 * Removes every session whose id contains one of `names` from the shared services (and the
 * benchmark's community baseline rows): what the tests and `npm run bench` run at their end.
 */
export async function cleanShared(names) {
  const prefixes = () => names
  const redis = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
  const postgres = process.env.POSTGRES_URL ? [process.env.POSTGRES_URL] : ['postgres://postgres@127.0.0.1:5432/test', 'postgres://root@127.0.0.1:5432/test']
  const mysql = process.env.MYSQL_URL ? [process.env.MYSQL_URL] : ['mysql://root@127.0.0.1:3306/test', 'mysql://wa:wa@127.0.0.1:3306/test']
  await cleanRedis(redis, prefixes)
  for (const url of postgres) await cleanPostgres(url, prefixes)
  for (const url of mysql) await cleanMysql(url, prefixes)
}

export async function teardown() {
  await cleanShared(prefixes())
}
