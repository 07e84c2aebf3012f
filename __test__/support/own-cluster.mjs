// A Redis Cluster of the test's own: `masters` primaries (3 by default) with `replicas` replicas
// each (1 by default), every node a redis-server child process on free loopback ports (its client
// port and its cluster bus port, both picked at run time), data in a temporary folder removed by
// stop(). `url` is the store's URL form: redis-cluster://host:port?node=host:port&node=host:port.
import { execFile, spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import Redis from 'ioredis'
import { freePort, waitListening } from './own-redis.mjs'

const exec = promisify(execFile)
const HOST = '127.0.0.1'

/** One redis-cli command against 127.0.0.1:`port`; its stdout. */
export async function redisCli(port, ...args) {
  const { stdout } = await exec('redis-cli', ['-h', HOST, '-p', String(port), ...args.map(String)], { timeout: 10_000 })
  return stdout
}

/** Distinct free ports (a bus port must not collide with another node's client port). */
async function freePorts(n) {
  const ports = new Set()
  while (ports.size < n) ports.add(await freePort())
  return [...ports]
}

/** Polls `check` (truthy: done) every 50 ms for up to `ms`; throws naming `what` and the last state. */
export async function until(check, what, ms = 20_000) {
  const deadline = Date.now() + ms
  let last
  for (;;) {
    try {
      last = await check()
      if (last) return last
    } catch (err) {
      last = err.message
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${JSON.stringify(last)})`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** Fields of an INFO or CLUSTER INFO reply. */
export const infoFields = (text) => Object.fromEntries(text.split(/\r?\n/).filter((l) => l.includes(':')).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()]))

/** Starts redis-server children; returns them once all accept connections. */
export async function spawnServers(dir, specs) {
  const children = specs.map(({ name, args }) => {
    const child = spawn('redis-server', args, { cwd: join(dir, name), stdio: ['ignore', 'ignore', 'pipe'] })
    child.stderr.setEncoding('utf8')
    child.stderr.on('data', (d) => (child.stderrText = (child.stderrText ?? '') + d))
    return child
  })
  try {
    await Promise.all(specs.map(({ port }, i) => Promise.race([waitListening(port), new Promise((_, reject) => children[i].once('exit', (code) => reject(new Error(`redis-server on port ${port} exited (${code}): ${children[i].stderrText ?? ''}`))))])))
  } catch (err) {
    await stopChildren(children)
    throw err
  }
  return children
}

/** Ends children by their pid (SIGTERM, then SIGKILL after 3 s) and waits for them. */
export async function stopChildren(children) {
  await Promise.all(
    children.map(async (child) => {
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = new Promise((r) => child.once('exit', r))
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000)
      await exited
      clearTimeout(timer)
    }),
  )
}

/** `harness._start(...args)`, or its stop() (nothing left behind) when that fails. */
export async function startedOrStopped(harness, ...args) {
  try {
    await harness._start(...args)
  } catch (err) {
    await harness.stop()
    throw err
  }
  return harness
}

export class OwnCluster {
  /** Starts the nodes, creates the cluster, waits until every node says `cluster_state:ok`. */
  static start({ masters = 3, replicas = 1 } = {}) {
    return startedOrStopped(new OwnCluster(), masters, replicas)
  }

  constructor() {
    this.dir = mkdtempSync(join(tmpdir(), 'wa-cluster-'))
    this.nodes = [] // { port, bus }
    this.children = []
  }

  async _start(masters, replicas) {
    const total = masters * (1 + replicas)
    const ports = await freePorts(total * 2)
    this.nodes = Array.from({ length: total }, (_, i) => ({ port: ports[2 * i], bus: ports[2 * i + 1] }))
    const specs = this.nodes.map(({ port, bus }) => {
      const name = `node-${port}`
      mkdirSync(join(this.dir, name))
      return {
        name,
        port,
        // no persistence; a short node timeout and no diskless-sync delay keep start-up and failovers quick
        args: ['--port', port, '--bind', HOST, '--save', '', '--appendonly', 'no', '--cluster-enabled', 'yes', '--cluster-port', bus, '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '2000', '--repl-diskless-sync-delay', '0', '--dir', join(this.dir, name)].map(String),
      }
    })
    this.children = await spawnServers(this.dir, specs)
    // redis-cli takes the first `masters` addresses as primaries, the rest as their replicas
    const hosts = this.nodes.map(({ port }) => `${HOST}:${port}`)
    await exec('redis-cli', ['--cluster', 'create', ...hosts, '--cluster-replicas', String(replicas), '--cluster-yes'], { timeout: 30_000 })
    await until(async () => {
      for (const { port } of this.nodes) {
        const info = infoFields(await redisCli(port, 'cluster', 'info'))
        if (info.cluster_state !== 'ok' || info.cluster_slots_ok !== '16384' || Number(info.cluster_known_nodes) !== total) return false
      }
      const roles = await this.roles()
      if (roles.masters.length !== masters) return false
      // every replica in sync with its primary (so a failover can promote it)
      for (const port of roles.replicas) if (infoFields(await redisCli(port, 'info', 'replication')).master_link_status !== 'up') return false
      return true
    }, 'the cluster to be ok on every node', 30_000)
    this.masterPorts = (await this.roles()).masters
    this.url = `redis-cluster://${HOST}:${this.masterPorts[0]}?${this.masterPorts
      .slice(1)
      .map((p) => `node=${HOST}:${p}`)
      .join('&')}`
  }

  /** The ports of the current primaries and replicas, as the first node sees them. */
  async roles() {
    const text = await redisCli(this.nodes[0].port, 'cluster', 'nodes')
    const masters = []
    const replicas = []
    for (const line of text.trim().split('\n')) {
      const [, addr, flags] = line.split(' ')
      const port = Number(addr.split('@')[0].split(':').pop())
      if (flags.includes('fail')) continue
      if (flags.includes('master')) masters.push(port)
      else if (flags.includes('slave')) replicas.push(port)
    }
    return { masters: masters.sort((a, b) => a - b), replicas }
  }

  /** An ioredis cluster client (for tests to look at the keys directly); disconnect it. */
  raw() {
    return new Redis.Cluster(
      this.masterPorts.map((port) => ({ host: HOST, port })),
      { redisOptions: { maxRetriesPerRequest: 3 } },
    )
  }

  /** A plain client of one node (no redirections followed). */
  node(port) {
    return new Redis({ host: HOST, port, maxRetriesPerRequest: 1 })
  }

  /** Runs `fn(client, port)` on each primary, with a plain client of it. */
  async eachMaster(fn) {
    const out = []
    for (const port of (await this.roles()).masters) {
      const client = this.node(port)
      try {
        out.push(await fn(client, port))
      } finally {
        client.disconnect()
      }
    }
    return out
  }

  async flushall() {
    await this.eachMaster((c) => c.flushall())
  }

  /** Every key matching `pattern`, from every primary. */
  async keys(pattern = '*') {
    return (await this.eachMaster((c) => c.keys(pattern))).flat().sort()
  }

  /** Stops every node by its pid and removes the data folder. */
  async stop() {
    await stopChildren(this.children)
    this.children = []
    rmSync(this.dir, { recursive: true, force: true })
  }
}
