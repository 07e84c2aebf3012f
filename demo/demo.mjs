// npm run demo: two simulated WhatsApp parties exchange real Signal messages (Baileys' own Signal
// code) through wa-auth-store, the bot "restarts" (the store is closed and reopened), the
// conversation continues, and the demo prints what was stored.
// With no servers it uses the embedded default (SQLite file ./wa-auth-store.db); REDIS_URL and
// DATABASE_URL point it at Redis and/or PostgreSQL / MySQL instead.
import { openAuthStore } from '../index.js'
import { introduce, openParty, send, sendGroup, sendGroupStored } from './signal-party.mjs'

const redis = process.env.REDIS_URL || null
const database = process.env.DATABASE_URL || 'sqlite://./wa-auth-store.db'
const redact = (url) => url?.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@')
const ALICE = { sid: 'demo-alice', jid: '5511900000001@s.whatsapp.net' }
const BOB = { sid: 'demo-bob', jid: '5511900000002@s.whatsapp.net' }
const GROUP = '120363000000000042@g.us'

const line = (s = '') => console.log(s)
line(`wa-auth-store demo`)
line(`  redis:    ${redis ? redact(redis) : '(none: in-process cache only)'}`)
line(`  database: ${redact(database)}`)
line()

let store = await openAuthStore({ redis, database })
await Promise.all([store.deleteCreds(ALICE.sid), store.deleteCreds(BOB.sid)]) // start fresh each run
let alice = await openParty(store, ALICE.sid, ALICE.jid)
let bob = await openParty(store, BOB.sid, BOB.jid)
await Promise.all([alice.saveCreds(), bob.saveCreds()])

const published = await introduce(alice, bob, 30)
line(`bob published ${published} pre-keys; alice built a Signal session from his bundle`)
const talk = async (from, to, name, text) => {
  const { type, text: got } = await send(from, to, text)
  line(`  ${name.padEnd(14)} ${type.padEnd(6)} "${got}"`)
}
await talk(alice, bob, 'alice -> bob', 'hi bob, this is end-to-end encrypted')
await talk(bob, alice, 'bob -> alice', 'hi alice, keys are in the store')
await talk(alice, bob, 'alice -> bob', 'let us restart and see')
const [g1] = await sendGroup(GROUP, alice, [bob], 'hello group (sender key distributed)')
line(`  ${'alice -> group'.padEnd(14)} skmsg  "${g1}"`)
await Promise.all([alice.saveCreds(), bob.saveCreds()])
await store.close()

line()
line('-- bot restarts: store closed, reopened, auth state loaded from storage --')
line()
store = await openAuthStore({ redis, database })
alice = await openParty(store, ALICE.sid, ALICE.jid)
bob = await openParty(store, BOB.sid, BOB.jid)
await talk(bob, alice, 'bob -> alice', 'still decrypting after the restart')
await talk(alice, bob, 'alice -> bob', 'same ratchet, no new session needed')
const [g2] = await sendGroupStored(GROUP, alice, [bob], 'group again, on the stored sender key')
line(`  ${'alice -> group'.padEnd(14)} skmsg  "${g2}"`)
await Promise.all([alice.saveCreds(), bob.saveCreds()])

line()
line('what the store holds now:')
for (const { sid } of [ALICE, BOB]) {
  const d = await store.describeSession(sid)
  line(`  session ${sid}: creds ${d.credsBytes} bytes`)
  for (const t of d.types) line(`    ${t.type.padEnd(20)} ${String(t.count).padStart(4)} records ${String(t.bytes).padStart(7)} bytes`)
}
const stats = await store.stats()
line()
line(`reads since reopening: cache ${stats.cache?.hits ?? 0} hits / ${stats.cache?.misses ?? 0} misses, redis ${stats.redisHits} hits, sql ${stats.sqlHits} hits`)
await store.close()
line('done.')
