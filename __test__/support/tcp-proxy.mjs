// A loopback TCP proxy in front of a loopback target, to cut and restore a client's connection to a
// real server mid-test.
//
//   const proxy = await TcpProxy.start({ port: 5432 })            // target 127.0.0.1:5432
//   proxy.rewrite('postgres://postgres@127.0.0.1:5432/test')      // same URL, the proxy's port
//   proxy.cut({ mode: 'reset' })      // RST every connection; new ones are reset as they arrive
//   proxy.cut({ mode: 'blackhole' })  // drop every connection; new ones are accepted, then silence
//   proxy.cut({ mode: 'blackhole', existing: 'stall' }) // keep them open, stop forwarding (a
//                                     // partition: what was sent is delivered on restore)
//   proxy.restore()                   // forward again (blackholed connections are dropped)
//   await proxy.close()
//
// Bounded: listens on 127.0.0.1 only, forwards to loopback targets only, keeps at most
// `maxConnections`, buffers at most `maxStallBytes` per stalled connection, and closes itself
// after `lifetimeMs` (an unref'd timer: it never keeps the process alive).
import { createServer, connect } from 'node:net'

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1'])
const open = new Set()
process.once('exit', () => {
  for (const p of open) p._destroyAll()
})

export class TcpProxy {
  /**
   * @param {{ host?: string, port: number, lifetimeMs?: number, maxConnections?: number, maxStallBytes?: number }} target
   */
  static async start(target) {
    const proxy = new TcpProxy(target)
    await proxy._listen()
    return proxy
  }

  constructor({ host = '127.0.0.1', port, lifetimeMs = 180_000, maxConnections = 256, maxStallBytes = 16 * 2 ** 20 }) {
    if (!LOOPBACK.has(host)) throw new Error(`TcpProxy forwards to loopback targets only, not ${host}`)
    if (!Number.isInteger(port) || port <= 0) throw new Error('TcpProxy needs the target port')
    this.targetHost = host === 'localhost' ? '127.0.0.1' : host
    this.targetPort = port
    this.host = '127.0.0.1'
    this.port = 0
    this.state = 'open' // 'open' | 'reset' | 'blackhole' | 'closed'
    this.maxConnections = maxConnections
    this.maxStallBytes = maxStallBytes
    this.lifetimeMs = lifetimeMs
    this.stats = { accepted: 0, reset: 0, blackholed: 0, forwardedBytes: 0, droppedBytes: 0 }
    /** @type {Set<Pair>} */
    this.pairs = new Set()
    this.server = createServer({ pauseOnConnect: true }, (socket) => this._accept(socket))
    this.server.maxConnections = maxConnections
    this.server.on('error', () => {})
  }

  async _listen() {
    await new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(0, this.host, () => {
        this.server.off('error', reject)
        resolve()
      })
    })
    this.server.unref()
    this.port = this.server.address().port
    this._timer = setTimeout(() => this.close(), this.lifetimeMs)
    this._timer.unref()
    open.add(this)
  }

  /** `scheme://127.0.0.1:PORT` + rest. */
  url(scheme, rest = '') {
    return `${scheme}://${this.host}:${this.port}${rest}`
  }

  /** `url` with its host and port replaced by the proxy's (user, path and query kept). */
  rewrite(url) {
    const u = new URL(url)
    u.hostname = this.host
    u.port = String(this.port)
    return u.toString()
  }

  get connections() {
    return this.pairs.size
  }

  /**
   * Cuts the link. `mode: 'reset'`: every connection is reset, new ones are reset on arrival.
   * `mode: 'blackhole'`: new connections are accepted and never answered (clients reach their
   * timeouts); existing ones are dropped (`existing: 'destroy'`, default) or kept open with
   * nothing forwarded either way (`existing: 'stall'`), their bytes held for restore().
   */
  cut({ mode = 'reset', existing = 'destroy' } = {}) {
    if (this.state === 'closed') throw new Error('proxy closed')
    if (mode !== 'reset' && mode !== 'blackhole') throw new Error(`unknown cut mode ${mode}`)
    if (existing !== 'destroy' && existing !== 'stall') throw new Error(`unknown existing-connection policy ${existing}`)
    if (mode === 'reset' && existing === 'stall') throw new Error("a reset cut cannot stall connections; use mode: 'blackhole'")
    this.state = mode
    for (const pair of [...this.pairs]) {
      if (pair.blackhole) continue
      if (existing === 'stall') pair.stall()
      else pair.destroy(mode === 'reset')
    }
  }

  /** Forwards again: stalled connections deliver what they held, blackholed ones are dropped. */
  restore() {
    if (this.state === 'closed') throw new Error('proxy closed')
    this.state = 'open'
    for (const pair of [...this.pairs]) {
      if (pair.blackhole) pair.destroy(true)
      else pair.unstall()
    }
  }

  /** Stops listening and drops every connection. Idempotent. */
  async close() {
    if (this.state === 'closed') return
    this.state = 'closed'
    clearTimeout(this._timer)
    this._destroyAll()
    open.delete(this)
    await new Promise((resolve) => this.server.close(() => resolve()))
  }

  _destroyAll() {
    for (const pair of [...this.pairs]) pair.destroy(true)
  }

  _accept(client) {
    client.on('error', () => {})
    if (this.state === 'closed' || this.state === 'reset' || this.pairs.size >= this.maxConnections) {
      this.stats.reset++
      reset(client)
      return
    }
    this.stats.accepted++
    if (this.state === 'blackhole') {
      this.stats.blackholed++
      const pair = new Pair(this, client, null)
      pair.blackhole = true
      client.on('data', (d) => (this.stats.droppedBytes += d.length))
      client.resume()
      return
    }
    const upstream = connect({ host: this.targetHost, port: this.targetPort, noDelay: true })
    upstream.on('error', () => {})
    const pair = new Pair(this, client, upstream)
    upstream.once('connect', () => {
      if (pair.dead) return
      if (this.state !== 'open') {
        // the cut came while this connection was being opened
        if (this.state === 'blackhole') pair.stall()
        else return pair.destroy(true)
      }
      client.resume()
    })
  }
}

function reset(socket) {
  if (typeof socket.resetAndDestroy === 'function') socket.resetAndDestroy()
  else socket.destroy()
}

/** One client connection and its upstream. */
class Pair {
  constructor(proxy, client, upstream) {
    this.proxy = proxy
    this.client = client
    this.upstream = upstream
    this.dead = false
    this.blackhole = false
    this.stalled = false
    this.held = [] // [target socket, chunk] while stalled
    this.heldBytes = 0
    proxy.pairs.add(this)
    client.setNoDelay(true)
    const end = () => this.destroy(false)
    client.once('close', end)
    if (upstream) {
      upstream.once('close', end)
      this._pipe(client, upstream)
      this._pipe(upstream, client)
    }
  }

  _pipe(from, to) {
    from.on('data', (chunk) => {
      if (this.dead) return
      if (this.stalled) {
        this.heldBytes += chunk.length
        if (this.heldBytes > this.proxy.maxStallBytes) return this.destroy(true)
        this.held.push([to, chunk])
        return
      }
      this.proxy.stats.forwardedBytes += chunk.length
      if (!to.write(chunk)) {
        from.pause()
        to.once('drain', () => !this.stalled && !this.dead && from.resume())
      }
    })
  }

  stall() {
    this.stalled = true
  }

  unstall() {
    if (!this.stalled || this.dead) return
    this.stalled = false
    const held = this.held
    this.held = []
    this.heldBytes = 0
    for (const [to, chunk] of held) {
      this.proxy.stats.forwardedBytes += chunk.length
      to.write(chunk)
    }
    this.client.resume()
    this.upstream?.resume()
  }

  destroy(hard) {
    if (this.dead) return
    this.dead = true
    this.proxy.pairs.delete(this)
    this.held = []
    for (const s of [this.client, this.upstream]) {
      if (!s) continue
      if (hard) reset(s)
      else s.destroy()
    }
  }
}
