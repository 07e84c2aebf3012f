// Shared helpers of the benchmarks: timing, percentiles, realistic Baileys values, an own Redis, CPU accounting.
import { execFileSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { cpus, totalmem } from 'node:os'

export { OwnRedis } from '../__test__/support/own-redis.mjs'

export const now = () => Number(process.hrtime.bigint()) / 1e6 // ms

export function percentile(values, p) {
  if (values.length === 0) return NaN
  const s = [...values].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]
}

export const median = (v) => percentile(v, 50)

export function fmt(n, digits = 1) {
  if (!Number.isFinite(n)) return String(n)
  return n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(digits)
}

export const mib = (b) => `${(b / 2 ** 20).toFixed(1)} MiB`

/** A libsignal session record as Baileys stores it (~0.9 KB of JSON). */
export function signalSession(seed) {
  const b64 = (n) => Buffer.alloc(n, seed % 251).toString('base64')
  return {
    _sessions: {
      [b64(33)]: {
        registrationId: 1000 + (seed % 9000),
        currentRatchet: { ephemeralKeyPair: { pubKey: b64(33), privKey: b64(32) }, lastRemoteEphemeralKey: b64(33), previousCounter: 3, rootKey: b64(32) },
        indexInfo: { baseKey: b64(33), baseKeyType: 1, closed: -1, used: 1700000000000, created: 1700000000000, remoteIdentityKey: b64(33) },
        _chains: { [b64(33)]: { chainKey: { counter: 5, key: b64(32) }, chainType: 2, messageKeys: {} } },
      },
    },
    version: 'v1',
  }
}

export const preKey = (i) => ({ public: Buffer.alloc(32, i % 256), private: Buffer.alloc(32, (i * 7) % 256) })

export const senderKey = (i) =>
  Buffer.from(JSON.stringify([{ senderKeyId: i, senderChainKey: { iteration: 3, seed: Buffer.alloc(32, i).toString('base64') }, senderSigningKey: { public: Buffer.alloc(33, 5).toString('base64') }, senderMessageKeys: [] }]))

/** A realistic creds object (~2 KB serialised). */
export function creds(i) {
  const key = (n) => ({ public: Buffer.alloc(32, n), private: Buffer.alloc(32, n + 1) })
  return {
    noiseKey: key(i % 200),
    pairingEphemeralKeyPair: key(3),
    signedIdentityKey: key(5),
    signedPreKey: { keyPair: key(7), signature: Buffer.alloc(64, 9), keyId: 1 },
    registrationId: 1234,
    advSecretKey: Buffer.alloc(32, 2).toString('base64'),
    processedHistoryMessages: [],
    nextPreKeyId: 813,
    firstUnuploadedPreKeyId: 813,
    accountSyncCounter: 1,
    accountSettings: { unarchiveChats: false },
    registered: true,
    pairingCode: undefined,
    me: { id: `55119${String(i).padStart(8, '0')}:12@s.whatsapp.net`, name: 'bench bot', lid: '123456789012345:12@lid' },
    account: { details: Buffer.alloc(120, 1).toString('base64'), accountSignatureKey: Buffer.alloc(32, 4), accountSignature: Buffer.alloc(64, 5), deviceSignature: Buffer.alloc(64, 6) },
    signalIdentities: [{ identifier: { name: `55119${i}:12@s.whatsapp.net`, deviceId: 0 }, identifierKey: Buffer.alloc(33, 5) }],
    platform: 'android',
    routingInfo: Buffer.alloc(24, 3),
    lastAccountSyncTimestamp: 1700000000,
    myAppStateKeyId: 'AAAAAB/+Zw==',
    additionalData: { x: 'y'.repeat(300) },
  }
}

/** One paired session: creds, 800 pre-keys, 50 Signal sessions, 3 sender keys. */
export function pairedSession(i, { preKeys = 800, sessions = 50, senderKeys = 3 } = {}) {
  const pk = {}
  for (let k = 1; k <= preKeys; k++) pk[k] = preKey(k + i)
  const ss = {}
  for (let k = 0; k < sessions; k++) ss[`55119${String(k).padStart(8, '0')}.0`] = signalSession(i + k)
  const sk = {}
  for (let k = 0; k < senderKeys; k++) sk[`1203630000000${k}@g.us::55119${i}::0`] = senderKey(k)
  return { creds: creds(i), keys: { 'pre-key': pk, session: ss, 'sender-key': sk } }
}

export function machine() {
  let rustc = ''
  try {
    rustc = execFileSync('rustc', ['--version']).toString().trim()
  } catch {}
  return `${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, ${rustc}`
}

/** On-CPU nanoseconds of every thread of process `pid` (Linux schedstat), 0 when unreadable. */
function taskCpuNs(pid) {
  let total = 0
  try {
    for (const t of readdirSync(`/proc/${pid}/task`)) {
      const f = readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8')
      total += Number(f.split(' ')[0])
    }
  } catch {
    // the process or thread ended: its time is gone with it
  }
  return total
}

/** The pids of the processes whose command name is `comm`. */
function pidsOf(comm) {
  const out = []
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue
    try {
      if (readFileSync(`/proc/${d}/comm`, 'utf8').trim() === comm) out.push(Number(d))
    } catch {}
  }
  return out
}

/**
 * CPU time so far of this Node process, the Redis server (`redisPid`) and every PostgreSQL
 * process, in microseconds; the difference of two snapshots is what a workload cost each.
 */
export function cpuSnapshot(redisPid) {
  const u = process.cpuUsage()
  return {
    node: u.user + u.system,
    redis: redisPid ? taskCpuNs(redisPid) / 1000 : 0,
    postgres: pidsOf('postgres').reduce((n, pid) => n + taskCpuNs(pid), 0) / 1000,
  }
}

/** Per-operation CPU (µs) between two snapshots. */
export function cpuPerOp(a, b, ops) {
  const per = (k) => (b[k] - a[k]) / ops
  const out = { node: per('node'), redis: per('redis'), postgres: per('postgres') }
  out.total = out.node + out.redis + out.postgres
  return out
}
