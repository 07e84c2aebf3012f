// A redis-server of the test's own on a free loopback port, to kill and restart mid-test.
import { spawn } from 'node:child_process'
import { createServer, connect } from 'node:net'

/** A loopback TCP port nobody listens on now. */
export async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

/** Resolves once something accepts connections on 127.0.0.1:`port`. */
export async function waitListening(port) {
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise((resolve) => {
      const s = connect(port, '127.0.0.1')
      s.once('connect', () => (s.destroy(), resolve(true)))
      s.once('error', () => resolve(false))
    })
    if (ok) return
    await new Promise((r) => setTimeout(r, 25))
  }
  throw new Error(`redis-server on port ${port} did not start`)
}

export class OwnRedis {
  static async start() {
    const r = new OwnRedis(await freePort())
    await r.start()
    return r
  }

  constructor(port) {
    this.port = port
    this.url = `redis://127.0.0.1:${port}`
    this.child = null
  }

  async start() {
    this.child = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
    await waitListening(this.port)
  }

  async kill() {
    if (!this.child) return
    const child = this.child
    this.child = null
    const exited = new Promise((r) => child.once('exit', r))
    child.kill('SIGKILL')
    await exited
  }
}

/** Whether a redis-server binary can be started; fails under CI=true when it cannot. */
export async function redisServerAvailable(what) {
  const { execFile } = await import('node:child_process')
  const { inCI } = await import('./services.mjs')
  const ok = await new Promise((resolve) => execFile('redis-server', ['--version'], (err) => resolve(err ?? true)))
  if (ok === true) return true
  if (inCI) throw new Error(`redis-server is required under CI: ${ok.message}`)
  console.warn(`SKIPPED: no redis-server binary; ${what} need one`)
  return false
}
