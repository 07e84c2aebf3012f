// prune: two parties talk with Baileys' real Signal code, first by phone number, then by LID
// (what Baileys 7 does once it learns the mapping); the state gains records each rule must remove
// and records it must keep. A dry run changes nothing and counts what the real run then removes;
// after the real run the conversation continues, by LID and by phone number (resolved to the LID
// session through the lid-mapping), and in the group: nothing Baileys needed was deleted.
import { isDeepStrictEqual } from 'node:util'
import { describe, expect, it } from 'vitest'
import libsignal from 'libsignal'
import { isTcTokenExpired } from 'baileys/lib/Utils/tc-token-utils.js'
import { getNextPreKeys } from 'baileys/lib/Utils/signal.js'
import { Curve } from 'baileys/lib/Utils/crypto.js'
import { introduce, openParty, send, sendGroup, sendGroupStored } from '../demo/signal-party.mjs'
import { encodeValue } from '../index.js'
import { readSession } from '../lib/tools/common.js'
import { prune, RULES, sessionHasNoOpenSession, tcTokenDead, tcTokenExpired } from '../lib/tools/prune.js'
import { tcTokenCases } from './fixtures/prune/tctokens.mjs'
import { configurations } from './support/configs.mjs'
import { uniqueId } from './support/services.mjs'

const TARGETS = ['embedded SQLite', 'Redis + PostgreSQL']
const targets = (await configurations()).filter((c) => TARGETS.includes(c.name))
const NOW = Date.UTC(2026, 2, 18, 12, 0, 0)
const JIDS = {
  alicePn: '5511000000301@s.whatsapp.net',
  bobPn: '5511000000302@s.whatsapp.net',
  bobLid: '190000000000302@lid',
}
const ADDR = {
  bobPn: '5511000000302.0', // where Baileys keeps bob's session before it knows his LID
  bobLid: '190000000000302_1.0',
  bobLidDevice7: '190000000000302_1.7',
  carolPn: '5511000000303.0',
  davePn: '5511000000304.0',
  erinLid: '190000000000305_1.0',
  alicePn: '5511000000301.0',
}
const GROUP_LEFT = '120363000000000301@g.us'
const GROUP_KEPT = '120363000000000302@g.us'
const signalPub = (key) => Buffer.concat([Buffer.from([5]), Buffer.from(key)])

/** A real session record with its open session closed by libsignal itself. */
function closedCopy(record) {
  const r = libsignal.SessionRecord.deserialize(structuredClone(record))
  const info = console.info
  console.info = () => {} // libsignal logs the whole session it closes
  try {
    r.closeSession(r.getOpenSession())
  } finally {
    console.info = info
  }
  return r.serialize()
}

/** Every record of the session as stored bytes: `{ 'type/id': Buffer }`, plus the creds. */
async function snapshot(store, sid) {
  const { creds, keys } = await readSession(store, sid)
  const out = { creds: Buffer.from(encodeValue(creds)) }
  for (const type of Object.keys(keys)) for (const id of Object.keys(keys[type])) out[`${type}/${id}`] = Buffer.from(encodeValue(keys[type][id]))
  return out
}

const removed = (before, after) => Object.keys(before).filter((k) => !(k in after)).sort()

describe('prune rule helpers', () => {
  it("tcTokenExpired is Baileys' isTcTokenExpired, with the clock as a parameter", () => {
    const now = Date.now()
    const nowSec = Math.floor(now / 1000)
    const { cutoff } = tcTokenCases(now)
    const samples = [undefined, null, 'x', '', 0, cutoff - 1, cutoff, cutoff + 1, String(cutoff - 1), String(cutoff), nowSec, nowSec - 35 * 86400, String(nowSec - 20 * 86400)]
    for (const ts of samples) expect([ts, tcTokenExpired(ts, nowSec)]).toEqual([ts, isTcTokenExpired(ts)])
  })

  it('records of shapes Baileys does not write are kept', () => {
    const nowSec = Math.floor(NOW / 1000)
    for (const v of [null, 'x', [], { token: 'not bytes' }, { token: [1, 2] }, { token: Buffer.from('t'), timestamp: { low: 1 } }]) expect(tcTokenDead(v, nowSec)).toBe(false)
    expect(tcTokenDead({}, nowSec)).toBe(true) // neither token nor senderTimestamp: Baileys deletes it too
    for (const v of [null, Buffer.from('{}'), { version: 'v0', _sessions: {} }, { version: 'v1' }, { version: 'v1', _sessions: { k: { registrationId: 1 } } }]) expect(sessionHasNoOpenSession(v)).toBe(false)
    expect(sessionHasNoOpenSession({ version: 'v1', _sessions: { k: { registrationId: 1, indexInfo: { closed: 1700000000000 } } } })).toBe(true)
  })
})

for (const cfg of targets) {
  describe.skipIf(cfg.skip)(`prune on ${cfg.name}`, () => {
    it('removes exactly what the rules name; the conversation continues', async () => {
      const ids = { alice: uniqueId('prune-alice'), bob: uniqueId('prune-bob') }
      const store = await cfg.open()
      try {
        // 1. Before LIDs: alice reaches bob by phone number; bob publishes pre-keys with Baileys' code
        let a = await openParty(store, ids.alice, JIDS.alicePn)
        let b = await openParty(store, ids.bob, JIDS.bobPn)
        await a.saveCreds()
        await introduce(a, b, 30)
        expect(await send(a, b, 'hello by number')).toEqual({ type: 'pkmsg', text: 'hello by number' })
        expect((await send(b, a, 'reply by number')).text).toBe('reply by number')
        // alice's own pre-keys, as uploadPreKeys makes them
        Object.assign(a.creds, (await getNextPreKeys({ creds: a.creds, keys: a.keys }, 30)).update)
        await a.saveCreds()
        const pnRecord = (await a.keys.get('session', [ADDR.bobPn]))[ADDR.bobPn]
        expect(pnRecord).toBeTruthy()
        await Promise.all([a.close(), b.close()])

        // 2. alice learns bob's LID (storeLIDPNMappings' two rows); the phone-number record is
        // superseded: libsignal closed its open session (as initOutgoing/initIncoming do)
        await store.setKeys(ids.alice, {
          'lid-mapping': { '5511000000302': '190000000000302', '190000000000302_reverse': '5511000000302' },
          session: { [ADDR.bobPn]: closedCopy(pnRecord) },
        })
        a = await openParty(store, ids.alice, JIDS.alicePn)
        b = await openParty(store, ids.bob, JIDS.bobLid)
        await introduce(a, b, 10)
        expect(await send(a, b, 'hello by lid')).toEqual({ type: 'pkmsg', text: 'hello by lid' })
        expect((await send(b, a, 'reply by lid')).text).toBe('reply by lid')
        expect(await sendGroup(GROUP_LEFT, a, [b], 'group hello')).toEqual(['group hello'])
        const lidRecord = (await a.keys.get('session', [ADDR.bobLid]))[ADDR.bobLid]
        // the rule's test of a record is libsignal's haveOpenSession, negated
        for (const rec of [pnRecord, closedCopy(pnRecord), lidRecord, closedCopy(lidRecord)]) {
          expect(sessionHasNoOpenSession(rec)).toBe(!libsignal.SessionRecord.deserialize(structuredClone(rec)).haveOpenSession())
        }
        expect(sessionHasNoOpenSession(closedCopy(lidRecord))).toBe(true)
        await Promise.all([a.close(), b.close()])

        // 3. records of the other shapes Baileys writes: to remove and to keep
        const tc = tcTokenCases(NOW)
        const bobIdentity = signalPub(b.creds.signedIdentityKey.public)
        await store.setKeys(ids.alice, {
          tctoken: { ...tc.dead, ...tc.alive, ...tc.index },
          'identity-key': { [ADDR.bobPn]: bobIdentity, [ADDR.bobLid]: bobIdentity, [ADDR.davePn]: signalPub(Curve.generateKeyPair().public) },
          'lid-mapping': { '5511000000303': '190000000000303', '190000000000303_reverse': '5511000000303' },
          session: {
            [ADDR.carolPn]: lidRecord, // mapped, but open: migrateSession would still move it
            [ADDR.davePn]: closedCopy(lidRecord), // closed, but no mapping: Baileys reads it
            [ADDR.erinLid]: closedCopy(lidRecord), // a LID address: never superseded
            [ADDR.bobLidDevice7]: lidRecord, // a device the device-list does not name: kept
          },
          'device-list': { '190000000000302': ['0'] },
          'sender-key-memory': { [GROUP_LEFT]: { [JIDS.bobLid]: true }, [GROUP_KEPT]: { [JIDS.bobLid]: true } },
        })
        // bob: a pre-key generated but never accounted in creds (a crash before saveCreds): kept
        const bobNext = b.creds.nextPreKeyId
        await store.setKeys(ids.bob, { 'pre-key': { [bobNext]: Curve.generateKeyPair() } })

        const expected = {
          [ids.alice]: [
            ...Object.keys(tc.dead).map((j) => `tctoken/${j}`),
            `session/${ADDR.bobPn}`,
            `identity-key/${ADDR.bobPn}`,
            `sender-key-memory/${GROUP_LEFT}`,
          ].sort(),
          [ids.bob]: [],
        }
        const before = { [ids.alice]: await snapshot(store, ids.alice), [ids.bob]: await snapshot(store, ids.bob) }
        expect(Object.keys(before[ids.bob]).filter((k) => k.startsWith('pre-key/')).length).toBe(39) // 40 published, 2 used, 1 unaccounted
        expect(Object.keys(before[ids.bob])).toContain(`identity-key/${ADDR.alicePn}`) // no mapping for alice in bob's state: kept

        // 4. dry run: counts and bytes, nothing written
        const options = { now: NOW, groupsLeft: [GROUP_LEFT] }
        const sessions = [ids.alice, ids.bob]
        const dry = await prune(store, sessions, { ...options, dryRun: true })
        for (const sid of sessions) expect(await snapshot(store, sid)).toEqual(before[sid])
        const drySession = Object.fromEntries(dry.sessions.map((s) => [s.sessionId, s]))
        expect(drySession[ids.alice].kinds).toEqual({
          tctoken: { records: Object.keys(tc.dead).length, bytes: Object.keys(tc.dead).reduce((n, j) => n + before[ids.alice][`tctoken/${j}`].length, 0) },
          session: { records: 1, bytes: before[ids.alice][`session/${ADDR.bobPn}`].length },
          'identity-key': { records: 1, bytes: before[ids.alice][`identity-key/${ADDR.bobPn}`].length },
          'sender-key-memory': { records: 1, bytes: before[ids.alice][`sender-key-memory/${GROUP_LEFT}`].length },
        })
        expect(drySession[ids.bob]).toMatchObject({ kinds: {}, records: 0, bytes: 0, pruned: false })
        expect(dry.totals).toMatchObject({ sessions: 2, pruned: 0, skipped: 0, records: expected[ids.alice].length })

        // 5. the real run removes exactly what the dry run counted, and nothing else
        const progress = []
        const real = await prune(store, sessions, { ...options, onProgress: (...p) => progress.push(p) })
        expect(progress).toEqual([[1, 2, ids.alice], [2, 2, ids.bob]])
        expect(real.totals).toEqual({ ...dry.totals, pruned: 1 })
        expect(real.sessions.map((s) => s.kinds)).toEqual(dry.sessions.map((s) => s.kinds))
        for (const sid of sessions) {
          const after = await snapshot(store, sid)
          expect(removed(before[sid], after)).toEqual(expected[sid])
          for (const k of Object.keys(after)) expect(isDeepStrictEqual(after[k], before[sid][k]), k).toBe(true)
        }
        // a second run finds nothing
        expect((await prune(store, sessions, options)).totals).toMatchObject({ records: 0, pruned: 0 })
        // without groupsLeft, sender-key-memory is never touched
        expect((await prune(store, ids.alice, { now: NOW, dryRun: true, rules: ['left-group-sender-key-memory'] })).totals.records).toBe(0)

        // 6. the conversation continues: by LID, by phone number (resolved to the LID session), in the group
        a = await openParty(store, ids.alice, JIDS.alicePn)
        b = await openParty(store, ids.bob, JIDS.bobLid)
        try {
          for (let i = 0; i < 2; i++) {
            expect(await send(a, b, `after prune ${i}`)).toEqual({ type: 'msg', text: `after prune ${i}` })
            expect(await send(b, a, `reply after prune ${i}`)).toEqual({ type: 'msg', text: `reply after prune ${i}` })
          }
          const byNumber = { ...b, jid: JIDS.bobPn }
          expect(await send(a, byNumber, 'by number after prune')).toEqual({ type: 'msg', text: 'by number after prune' })
          expect(await send(byNumber, a, 'reply to number after prune')).toEqual({ type: 'msg', text: 'reply to number after prune' })
          expect(await sendGroupStored(GROUP_LEFT, a, [b], 'group after prune')).toEqual(['group after prune'])
          // a peer that fetched one of bob's pre-keys from the server before the prune (id 5,
          // uploaded in step 1, never used) still opens a session with it
          const carolId = uniqueId('prune-carol')
          ids.carol = carolId
          const carol = await openParty(store, carolId, '5511000000309@s.whatsapp.net')
          try {
            await carol.saveCreds()
            const { 5: preKey } = await b.keys.get('pre-key', ['5'])
            expect(preKey).toBeTruthy()
            await carol.repo.injectE2ESession({
              jid: b.jid,
              session: {
                registrationId: b.creds.registrationId,
                identityKey: signalPub(b.creds.signedIdentityKey.public),
                signedPreKey: { keyId: b.creds.signedPreKey.keyId, publicKey: signalPub(b.creds.signedPreKey.keyPair.public), signature: b.creds.signedPreKey.signature },
                preKey: { keyId: 5, publicKey: signalPub(preKey.public) },
              },
            })
            expect(await send(carol, b, 'hello with an old pre-key')).toEqual({ type: 'pkmsg', text: 'hello with an old pre-key' })
            expect(await b.keys.get('pre-key', ['5'])).toEqual({}) // Baileys deletes it on use, not prune
          } finally {
            await carol.close()
          }
        } finally {
          await Promise.all([a.close(), b.close()])
        }
      } finally {
        for (const sid of Object.values(ids)) await store.purgeSession(sid).catch(() => {})
        await store.close()
      }
    })

    it('skips a session another process holds, reports why, and prunes the others', async () => {
      const ids = { held: uniqueId('prune-held'), free: uniqueId('prune-free') }
      const store = await cfg.open()
      const other = await cfg.open()
      const tc = tcTokenCases(NOW)
      const one = Object.fromEntries(Object.entries(tc.dead).slice(0, 2))
      try {
        for (const sid of Object.values(ids)) await store.saveCreds(sid, { creds: { registrationId: 1 }, keys: { tctoken: { ...one, ...tc.alive } } })
        const lease = await other.acquireLease(ids.held) // a running bot
        try {
          const r = await prune(store, [ids.held, ids.free], { now: NOW })
          expect(r.sessions[0]).toMatchObject({ sessionId: ids.held, pruned: false, records: 0, skipped: { code: 'ERR_SESSION_LOCKED' } })
          expect(r.sessions[0].skipped.reason).toMatch(/lease|holds|locked/i)
          expect(r.sessions[1]).toMatchObject({ sessionId: ids.free, pruned: true, records: 2 })
          expect(r.totals).toMatchObject({ sessions: 2, pruned: 1, skipped: 1, records: 2 })
          expect((await store.listIds(ids.held, 'tctoken')).length).toBe(2 + Object.keys(tc.alive).length)
          // a dry run needs no lease: it reports the held session's counts
          expect((await prune(store, ids.held, { now: NOW, dryRun: true })).sessions[0]).toMatchObject({ records: 2, pruned: false })
        } finally {
          await lease.release()
        }
        expect((await prune(store, ids.held, { now: NOW })).sessions[0]).toMatchObject({ pruned: true, records: 2 })
        expect((await store.listIds(ids.held, 'tctoken')).sort()).toEqual(Object.keys(tc.alive).sort())
        // a socket of this very store on the session: skipped too, and its lease left alone
        await store.setKeys(ids.free, { tctoken: one })
        const bot = await openParty(store, ids.free, '5511000000319@s.whatsapp.net')
        try {
          const r = await prune(store, ids.free, { now: NOW })
          expect(r.sessions[0]).toMatchObject({ pruned: false, skipped: { code: 'ERR_SESSION_LOCKED' } })
          expect(r.sessions[0].skipped.reason).toMatch(/open in this process/)
          expect(await store.leaseInfo(ids.free)).toMatchObject({ mine: true, epoch: bot.lease.epoch })
          expect(bot.lease.held).toBe(true)
          await bot.saveCreds() // the bot still writes
        } finally {
          await bot.close()
        }
        expect((await prune(store, ids.free, { now: NOW })).sessions[0]).toMatchObject({ pruned: true, records: 2 })
      } finally {
        for (const sid of Object.values(ids)) await store.purgeSession(sid).catch(() => {})
        await Promise.all([store.close(), other.close()])
      }
    })
  })
}

describe('prune arguments', () => {
  it('every session by default; bad options and unknown sessions are refused', async () => {
    const cfg = targets[0] // embedded SQLite: a file of this test's own, so "every session" is ours
    const store = await cfg.open()
    const sid = uniqueId('prune-all')
    try {
      const tc = tcTokenCases(NOW)
      await store.saveCreds(sid, { creds: { registrationId: 1 }, keys: { tctoken: tc.dead } })
      const all = await prune(store, undefined, { now: NOW, dryRun: true })
      expect(all.sessions.map((s) => s.sessionId)).toContain(sid)
      expect(all.sessions.find((s) => s.sessionId === sid).kinds.tctoken.records).toBe(Object.keys(tc.dead).length)
      // measured in the future, the live ones expire too; measured long ago, nothing is expired
      expect((await prune(store, sid, { now: NOW + 60 * 86400 * 1000, dryRun: true })).totals.records).toBe(Object.keys(tc.dead).length)
      expect((await prune(store, sid, { now: new Date(NOW - 60 * 86400 * 1000), dryRun: true, rules: ['expired-tctoken'] })).totals.records).toBe(2) // the two without a timestamp
      expect(RULES).toEqual(['expired-tctoken', 'superseded-pn-session', 'superseded-pn-identity-key', 'left-group-sender-key-memory'])
      await expect(prune(store, uniqueId('prune-missing'), {})).rejects.toMatchObject({ code: 'ERR_SESSION_NOT_FOUND' })
      await expect(prune(store, '', {})).rejects.toMatchObject({ code: 'ERR_INVALID_SESSION_ID' })
      await expect(prune(store, sid, { nope: true })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
      await expect(prune(store, sid, { rules: ['pre-keys'] })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
      await expect(prune(store, sid, { groupsLeft: ['5511@s.whatsapp.net'] })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
      await expect(prune(store, sid, { now: 'yesterday' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
      await expect(prune(store, sid, { dryRun: 'yes' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
      expect(await store.listIds(sid, 'tctoken')).toHaveLength(Object.keys(tc.dead).length) // nothing written by any of these
    } finally {
      await store.purgeSession(sid).catch(() => {})
      await store.close()
    }
  })
})
