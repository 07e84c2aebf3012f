// One worker of bench/processes.mjs: its share of the sessions on the shared cluster and
// PostgreSQL, each held under its lease as a bot would; the message loop on all of them for a
// fixed time. Prints { ops, seconds, p50 }.
import { openAuthStore } from '../index.js'
import { median, now, signalSession } from './lib.mjs'

const { redis, database, prefix, sessions, seconds } = JSON.parse(process.argv[2])
const store = await openAuthStore({ redis, database, memoryManager: { checkIntervalMs: 2000, maxMemoryBytes: 2 ** 30 }, logger: { warn() {}, error() {} } })
const jid = '5511999999999.0'
const sids = Array.from({ length: sessions }, (_, i) => `${prefix}${i}`)
const leases = []
for (const sid of sids) {
  leases.push(await store.acquireLease(sid))
  await store.saveCreds(sid, { creds: { registrationId: 1, me: { id: `${sid}@s.whatsapp.net` } }, keys: { session: { [jid]: signalSession(0) } } })
}
const lat = []
let ops = 0
const t0 = now()
const until = t0 + seconds * 1000
// 64 sessions in flight at once, as many accounts of one process talk at the same time
let next = 0
await Promise.all(
  Array.from({ length: Math.min(64, sids.length) }, async () => {
    for (let i = 0; now() < until; i++) {
      const sid = sids[next++ % sids.length]
      const t = now()
      const got = await store.getKeys(sid, 'session', [jid])
      if (!got[jid]) throw new Error('session vanished')
      await store.setKeys(sid, { session: { [jid]: signalSession(i + 1) } })
      lat.push(now() - t)
      ops++
    }
  }),
)
const elapsed = (now() - t0) / 1000
for (const l of leases) await l.release()
await store.close()
process.stdout.write(JSON.stringify({ ops, seconds: elapsed, p50: median(lat) }))
