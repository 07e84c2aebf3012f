// A simulated WhatsApp party on Baileys' real Signal code (libsignal through Baileys' own
// repository), keeping its auth state in wa-auth-store. Used by the demo and the tests.
import { makeLibSignalRepository } from 'baileys/lib/Signal/libsignal.js'
import { addTransactionCapability } from 'baileys/lib/Utils/auth-utils.js'
import { getNextPreKeys } from 'baileys/lib/Utils/signal.js'
import { useBaileysAuthState } from '../index.js'

const silent = { level: 'silent', trace() {}, debug() {}, info() {}, warn() {}, error() {}, fatal() {}, child() { return silent } }

/** Signal public keys travel with the 0x05 type byte in front. */
const signalPub = (key) => Buffer.concat([Buffer.from([5]), Buffer.from(key)])

export async function openParty(store, sessionId, jid) {
  const auth = await useBaileysAuthState(store, sessionId)
  // What makeWASocket does with state.keys: Baileys' own transaction wrapper around our store.
  const keys = addTransactionCapability(auth.state.keys, silent, { maxCommitRetries: 3, delayBetweenTriesMs: 50 })
  const repo = makeLibSignalRepository({ creds: auth.state.creds, keys }, silent)
  return { ...auth, jid, keys, repo, creds: auth.state.creds }
}

/** B publishes pre-keys (Baileys' getNextPreKeys), A builds a session from B's bundle; returns how many were published. */
export async function introduce(a, b, preKeyCount = 30) {
  return (await introduceWithPreKey(a, b, preKeyCount)).published
}

/** introduce(), telling which of B's pre-keys A's session took: `{ published, preKeyId }`. */
export async function introduceWithPreKey(a, b, preKeyCount = 30) {
  const { update, preKeys } = await getNextPreKeys({ creds: b.creds, keys: b.keys }, preKeyCount)
  Object.assign(b.creds, update)
  await b.saveCreds()
  const [keyId, preKey] = Object.entries(preKeys)[0]
  await a.repo.injectE2ESession({
    jid: b.jid,
    session: {
      registrationId: b.creds.registrationId,
      identityKey: signalPub(b.creds.signedIdentityKey.public),
      signedPreKey: {
        keyId: b.creds.signedPreKey.keyId,
        publicKey: signalPub(b.creds.signedPreKey.keyPair.public),
        signature: b.creds.signedPreKey.signature,
      },
      preKey: { keyId: Number(keyId), publicKey: signalPub(preKey.public) },
    },
  })
  return { published: Object.keys(preKeys).length, preKeyId: Number(keyId) }
}

/** Encrypts `text` from `from` to `to` and decrypts it on the other side. */
export async function send(from, to, text) {
  const { type, ciphertext } = await from.repo.encryptMessage({ jid: to.jid, data: Buffer.from(text) })
  const plain = await to.repo.decryptMessage({ jid: from.jid, type, ciphertext })
  return { type, text: Buffer.from(plain).toString() }
}

/** A group message from `from` to every member, with sender-key distribution. */
export async function sendGroup(group, from, members, text) {
  const { senderKeyDistributionMessage, ciphertext } = await from.repo.encryptGroupMessage({ group, data: Buffer.from(text), meId: from.jid })
  const out = []
  for (const m of members) {
    await m.repo.processSenderKeyDistributionMessage({
      item: { groupId: group, axolotlSenderKeyDistributionMessage: senderKeyDistributionMessage },
      authorJid: from.jid,
    })
    out.push(Buffer.from(await m.repo.decryptGroupMessage({ group, authorJid: from.jid, msg: ciphertext })).toString())
  }
  return out
}

/** A group message using the sender key already stored (no new distribution processed). */
export async function sendGroupStored(group, from, members, text) {
  const { ciphertext } = await from.repo.encryptGroupMessage({ group, data: Buffer.from(text), meId: from.jid })
  const out = []
  for (const m of members) {
    out.push(Buffer.from(await m.repo.decryptGroupMessage({ group, authorJid: from.jid, msg: ciphertext })).toString())
  }
  return out
}
