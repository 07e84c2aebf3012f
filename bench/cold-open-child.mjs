// Run in a fresh process by the suite: opens one system, reads creds and one key, prints the ms.
// Modules are loaded before the clock starts, so the figure is the open + reads, not Node's boot.
import pg from 'pg'
import { openAuthStore } from '../index.js'
import { useMultiFileAuthState } from 'baileys'
import { CommunityStore } from './community-baseline.mjs'
import { join } from 'node:path'

const { config, sid, key } = JSON.parse(process.argv[2])
const t0 = performance.now()
let creds
let value
if (config.bareSelect) {
  const client = new pg.Client({ connectionString: config.postgres })
  await client.connect()
  const c = await client.query('SELECT creds FROM wa_auth_sessions WHERE session_id = $1', [sid])
  const k = await client.query('SELECT value FROM wa_auth_keys WHERE session_id = $1 AND type = $2 AND id = $3', [sid, 'session', key])
  // the bare rows: no decoding (the stored form is the store's business)
  creds = c.rows[0].creds
  value = k.rows[0].value
  await client.end()
} else if (config.multiFile) {
  const { state } = await useMultiFileAuthState(join(config.multiFile, sid))
  creds = state.creds
  value = (await state.keys.get('session', [key]))[key]
} else if (config.community) {
  const s = await CommunityStore.open({ redisUrl: config.redis, pgUrl: config.postgres })
  creds = await s.readCreds(sid)
  value = (await s.get(sid, 'session', [key]))[key]
  await s.close()
} else {
  const store = await openAuthStore(config)
  creds = (await store.getCreds(sid))?.creds
  value = (await store.getKeys(sid, 'session', [key]))[key]
  await store.close()
}
const ms = performance.now() - t0
if (!creds || !value) throw new Error('cold open read nothing')
process.stdout.write(JSON.stringify({ ms }))
