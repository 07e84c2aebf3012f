// A redis-server of the test's own that keeps an RDB file in a temp dir: snapshot it (SAVE), kill
// it (SIGKILL: nothing saved on the way down), and bring it back on the same port from an older
// snapshot or empty. Only ever FLUSHALLs its own instance.
//
//   const r = await SnapshotRedis.start()
//   await r.save('before')             // SAVE, then keeps a copy of the dump as snapshot 'before'
//   await r.kill()                     // SIGKILL
//   await r.restart({ from: 'before' }) // or { from: 'empty' }, or { from: 'last' } (the dump as is)
//   await r.stop()                     // kill + remove the temp dir (stopAllSnapshotRedis() for all)
import { execFile, spawn } from 'node:child_process'
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { createServer, connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)
const running = new Set()
const instances = new Set()
process.once('exit', () => {
  for (const r of running) {
    try {
      if (r.serverPid) process.kill(r.serverPid, 'SIGKILL')
    } catch {}
  }
})

// redis-server runs under a small sh that prints its pid, waits for it, and kills it if this
// process dies first (even by SIGKILL or an abort, when no exit handler runs).
const WATCHDOG = `parent=$1; shift
redis-server "$@" >/dev/null 2>&1 & r=$!
echo "$r"
( while kill -0 "$parent" 2>/dev/null; do sleep 0.5; done; kill -9 "$r" 2>/dev/null ) & w=$!
wait "$r"; code=$?
kill "$w" 2>/dev/null
exit $code`

async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

async function answersPing(port) {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1')
    let buf = ''
    const done = (ok) => (s.destroy(), resolve(ok))
    s.setTimeout(500, () => done(false))
    s.once('connect', () => s.write('PING\r\n'))
    s.on('data', (d) => {
      buf += d
      // -LOADING while the RDB is read: not ready yet
      if (buf.includes('\r\n')) done(buf.startsWith('+PONG'))
    })
    s.once('error', () => done(false))
  })
}

export class SnapshotRedis {
  /** @param {{ lifetimeMs?: number, args?: string[] }} [options] args: more redis-server options (e.g. --maxmemory) */
  static async start(options = {}) {
    const r = new SnapshotRedis(await freePort(), options)
    await r.restart({ from: 'empty' })
    return r
  }

  constructor(port, { lifetimeMs = 180_000, args = [] } = {}) {
    this.port = port
    this.url = `redis://127.0.0.1:${port}`
    this.dir = mkdtempSync(join(tmpdir(), 'wa-rdb-'))
    this.dbfilename = 'dump.rdb'
    this.rdbPath = join(this.dir, this.dbfilename)
    this.snapshots = new Map() // name -> path
    this.child = null
    this.lifetimeMs = lifetimeMs
    this.extraArgs = args
    this.starts = 0
    instances.add(this)
  }

  /** The redis-server's pid (while it runs). */
  get pid() {
    return this.serverPid ?? null
  }

  get running() {
    return this.child != null
  }

  async cli(...args) {
    const { stdout } = await run('redis-cli', ['-h', '127.0.0.1', '-p', String(this.port), ...args], { timeout: 10_000 })
    return stdout.trim()
  }

  /** SAVE (synchronous RDB write); keeps a copy under `name`. Returns the snapshot's path. */
  async save(name = `s${this.snapshots.size}`) {
    const out = await this.cli('SAVE')
    if (out !== 'OK') throw new Error(`SAVE answered ${out}`)
    const path = join(this.dir, `snapshot-${name}.rdb`)
    copyFileSync(this.rdbPath, path)
    this.snapshots.set(name, path)
    return path
  }

  /** Keys in the instance (DBSIZE). */
  async dbsize() {
    return Number(await this.cli('DBSIZE'))
  }

  /** FLUSHALL on this instance (never any other). */
  async flushAll() {
    if (this.running) await this.cli('FLUSHALL')
  }

  /** SIGKILL: no save on the way down. */
  async kill() {
    const child = this.child
    if (!child) return
    const pid = this.serverPid
    this.child = null
    this.serverPid = null
    running.delete(this)
    clearTimeout(this._timer)
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r))
      try {
        if (pid) process.kill(pid, 'SIGKILL') // the server itself; its sh then exits
        else child.kill('SIGKILL')
      } catch {}
      const t = setTimeout(() => child.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(t)
    }
  }

  /**
   * Starts (again) on the same port. `from`: 'empty' (no dump), 'last' (the dump as the last SAVE
   * left it), or a snapshot name given to save().
   */
  async restart({ from = 'empty' } = {}) {
    await this.kill()
    if (from === 'empty') rmSync(this.rdbPath, { force: true })
    else if (from !== 'last') {
      const path = this.snapshots.get(from)
      if (!path) throw new Error(`no snapshot named ${from}`)
      copyFileSync(path, this.rdbPath)
    }
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir, '--dbfilename', this.dbfilename, '--save', '', '--appendonly', 'no', '--protected-mode', 'yes', '--logfile', join(this.dir, 'redis.log'), ...this.extraArgs]
    const child = spawn('sh', ['-c', WATCHDOG, 'sh', String(process.pid), ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-2000)))
    let stdout = ''
    child.stdout.on('data', (d) => {
      if (stdout.length > 100) return
      stdout += d
      const m = /^(\d+)\n/.exec(stdout)
      if (m && !this.serverPid && this.child === child) this.serverPid = Number(m[1])
    })
    this.child = child
    running.add(this)
    this.starts++
    // a forgotten instance stops by itself
    this._timer = setTimeout(() => this.kill(), this.lifetimeMs)
    this._timer.unref()
    for (let i = 0; i < 400; i++) {
      if (child.exitCode !== null) throw new Error(`redis-server exited at start (${child.exitCode}): ${stderr} ${this.logTail()}`)
      if (this.serverPid && (await answersPing(this.port))) return
      await new Promise((r) => setTimeout(r, 25))
    }
    await this.kill()
    throw new Error(`redis-server on port ${this.port} did not start: ${stderr} ${this.logTail()}`)
  }

  /** The end of the server's log file. */
  logTail() {
    try {
      return readFileSync(join(this.dir, 'redis.log'), 'utf8').slice(-1500)
    } catch {
      return ''
    }
  }

  /** Size of the current dump file (0 if none). */
  dumpBytes() {
    return existsSync(this.rdbPath) ? statSync(this.rdbPath).size : 0
  }

  /** Kills the server and removes its temp dir. */
  async stop() {
    await this.kill()
    instances.delete(this)
    rmSync(this.dir, { recursive: true, force: true })
  }
}

/** Stops every SnapshotRedis this process started (for afterAll). */
export async function stopAllSnapshotRedis() {
  await Promise.all([...instances].map((r) => r.stop()))
}
