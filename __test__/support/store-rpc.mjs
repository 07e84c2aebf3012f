// A store in another process, driven call by call (fixtures/store-rpc.mjs): `await p.call(op,
// ...args)` resolves with the value or rejects with an Error carrying the child's `code`;
// `p.events` collects what the child said unasked (lost leases). SIGSTOP/SIGCONT with p.stop() /
// p.cont(); p.end() closes its store and waits for the exit; every process of a test file ends
// with endAll() (SIGKILL).
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

const RPC = fileURLToPath(new URL('../fixtures/store-rpc.mjs', import.meta.url))
const children = new Set()

export function storeProcess({ redis = null, database = null, store = {}, timeoutMs } = {}) {
  const child = spawn(process.execPath, [RPC, JSON.stringify({ redis, database, store, timeoutMs })], { stdio: ['pipe', 'pipe', 'inherit'] })
  children.add(child)
  const pending = new Map()
  const events = []
  let next = 0
  const exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })))
  exited.then(() => {
    children.delete(child)
    for (const p of pending.values()) p.reject(new Error('the store process exited'))
  })
  createInterface({ input: child.stdout }).on('line', (l) => {
    let m
    try {
      m = JSON.parse(l)
    } catch {
      return
    }
    if (m.event) return void events.push(m)
    const p = pending.get(m.id)
    if (!p) return
    pending.delete(m.id)
    if (m.ok) p.resolve(m.value)
    else p.reject(Object.assign(new Error(m.message), { code: m.code }))
  })
  return {
    pid: child.pid,
    events,
    lost: (sessionId) => events.filter((e) => e.event === 'lost' && e.sessionId === sessionId),
    call: (op, ...args) =>
      new Promise((resolve, reject) => {
        const id = ++next
        pending.set(id, { resolve, reject })
        child.stdin.write(`${JSON.stringify({ id, op, args })}\n`)
      }),
    /** The call's outcome as data: { ok: true, value } or { ok: false, code }. */
    settle(op, ...args) {
      return this.call(op, ...args).then(
        (value) => ({ ok: true, value }),
        (err) => ({ ok: false, code: err.code }),
      )
    },
    stop: () => child.kill('SIGSTOP'),
    cont: () => child.kill('SIGCONT'),
    end: async () => {
      child.stdin.end()
      await exited
    },
  }
}

export function endAll() {
  for (const c of children) c.kill('SIGKILL')
}
