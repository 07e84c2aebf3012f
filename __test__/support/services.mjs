// Real services for the JS tests. URLs from the environment with loopback defaults; a missing
// service fails the run under CI=true and skips with a clear message elsewhere.
import { BaileysOrmAdapter, BaileysRedisAdapter } from '../../index.js'

export const inCI = ['1', 'true', 'yes'].includes(String(process.env.CI ?? '').toLowerCase())

async function firstReachable(candidates, Adapter) {
  const errors = []
  for (const url of candidates) {
    const a = new Adapter(url)
    try {
      await a.connect()
      await a.disconnect()
      return { url }
    } catch (err) {
      errors.push(err.message)
    }
  }
  return { url: null, error: errors.join('; ') }
}

const probes = {
  redis: () => firstReachable([process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'], BaileysRedisAdapter),
  postgres: () =>
    firstReachable(
      process.env.POSTGRES_URL ? [process.env.POSTGRES_URL] : ['postgres://postgres@127.0.0.1:5432/test', 'postgres://root@127.0.0.1:5432/test'],
      BaileysOrmAdapter,
    ),
  mysql: () =>
    firstReachable(process.env.MYSQL_URL ? [process.env.MYSQL_URL] : ['mysql://root@127.0.0.1:3306/test', 'mysql://wa:wa@127.0.0.1:3306/test'], BaileysOrmAdapter),
}

const cache = {}
/** The URL of a reachable service, or null (after failing loudly under CI). */
export async function service(name) {
  cache[name] ??= probes[name]()
  const { url, error } = await cache[name]
  if (url) return url
  if (inCI) throw new Error(`${name} is required under CI but unreachable: ${error}`)
  console.warn(`SKIPPED: ${name} unreachable (${error}); start it or set its URL to run these tests`)
  return null
}

let n = 0
/**
 * A session id no other run uses. Every test session starts with TEST_PREFIX, so the global
 * teardown (support/cleanup.mjs) can remove what the tests left in the shared services.
 */
export const TEST_PREFIX = `wa-test-js-${process.env.WA_TEST_RUN ?? 'run'}-`
export function uniqueId(name) {
  return `${TEST_PREFIX}${name}-${process.pid}-${Date.now()}-${n++}`
}
