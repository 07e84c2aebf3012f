// A Redis Sentinel set of the test's own: one master, one replica, three sentinels (quorum 2)
// monitoring them as `mymaster`, every process a redis-server child on free loopback ports, config
// and data in a temporary folder removed by stop(). `url` is the store's URL form:
// redis-sentinel://host:port/0?sentinelServiceName=mymaster&node=host:port&node=host:port (the
// host and every `node` are sentinels; `:password@` authenticates to the master and replica; with a
// `sentinelPassword` of their own the sentinels require it, and `url` carries it as sentinelPassword=).
// cli(port, ...args) runs redis-cli on any of them (with the password where needed).
// sentinelFailover() runs SENTINEL FAILOVER and waits until every sentinel names the new master
// and the old one follows it.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort } from './own-redis.mjs'
import { infoFields, redisCli, spawnServers, startedOrStopped, stopChildren, until } from './own-cluster.mjs'

const HOST = '127.0.0.1'
const NAME = 'mymaster'
const SENTINELS = 3
const QUORUM = 2

export class OwnSentinel {
  /**
   * `password`: the master and replica require it. `sentinelPassword`: the sentinels require it
   * (without one they require nothing, the usual setup).
   */
  static start({ password = null, sentinelPassword = null } = {}) {
    return startedOrStopped(new OwnSentinel(), { password, sentinelPassword })
  }

  constructor() {
    this.dir = mkdtempSync(join(tmpdir(), 'wa-sentinel-'))
    this.children = []
    this.name = NAME
  }

  async _start({ password, sentinelPassword }) {
    this.password = password
    const auth = password ? ['--requirepass', password, '--masterauth', password] : []
    const as = (pw) => (pw ? ['--no-auth-warning', '-a', pw] : [])
    const cli = (port, ...args) => redisCli(port, ...as(this.dataPorts.includes(port) ? password : this.sentinelPorts.includes(port) ? sentinelPassword : null), ...args)
    this.cli = cli
    const sentinelCli = (port, ...args) => redisCli(port, ...as(sentinelPassword), ...args)
    this.sentinelCli = sentinelCli
    const ports = new Set()
    while (ports.size < 2 + SENTINELS) ports.add(await freePort())
    const [master, replica, ...sentinels] = [...ports]
    this.dataPorts = [master, replica]
    this.sentinelPorts = sentinels
    const data = (port, extra = []) => {
      mkdirSync(join(this.dir, `redis-${port}`))
      return { name: `redis-${port}`, port, args: ['--port', port, '--bind', HOST, '--save', '', '--appendonly', 'no', '--repl-diskless-sync-delay', '0', '--dir', join(this.dir, `redis-${port}`), ...auth, ...extra].map(String) }
    }
    this.children = await spawnServers(this.dir, [data(master), data(replica, ['--replicaof', HOST, master])])
    await until(async () => infoFields(await cli(replica, 'info', 'replication')).master_link_status === 'up', 'the replica to sync')
    const specs = sentinels.map((port) => {
      const name = `sentinel-${port}`
      mkdirSync(join(this.dir, name))
      const conf = join(this.dir, name, 'sentinel.conf') // a sentinel rewrites its config: one file each
      writeFileSync(
        conf,
        [
          `port ${port}`,
          `bind ${HOST}`,
          `dir ${join(this.dir, name)}`,
          `sentinel monitor ${NAME} ${HOST} ${master} ${QUORUM}`,
          ...(password ? [`sentinel auth-pass ${NAME} ${password}`] : []),
          // the sentinels' own password, and the one they give each other
          ...(sentinelPassword ? [`requirepass ${sentinelPassword}`, `sentinel sentinel-pass ${sentinelPassword}`] : []),
          `sentinel down-after-milliseconds ${NAME} 1000`,
          `sentinel failover-timeout ${NAME} 10000`,
          `sentinel parallel-syncs ${NAME} 1`,
          '',
        ].join('\n'),
      )
      return { name, port, args: [conf, '--sentinel'] }
    })
    this.children.push(...(await spawnServers(this.dir, specs)))
    // every sentinel knows the replica and the other sentinels (so all of them follow a failover)
    await until(async () => {
      for (const port of sentinels) {
        if (!(await sentinelCli(port, 'sentinel', 'replicas', NAME)).includes(String(replica))) return false
        const others = (await sentinelCli(port, 'sentinel', 'sentinels', NAME)).split('\n').filter((l) => l === 'name').length
        if (others !== SENTINELS - 1) return false
      }
      return true
    }, 'the sentinels to see the replica and each other', 30_000)
    this.url = `redis-sentinel://${password ? `:${encodeURIComponent(password)}@` : ''}${HOST}:${sentinels[0]}/0?sentinelServiceName=${NAME}&${sentinels
      .slice(1)
      .map((p) => `node=${HOST}:${p}`)
      .join('&')}${sentinelPassword ? `&sentinelPassword=${encodeURIComponent(sentinelPassword)}` : ''}`
  }

  /** The port every sentinel names as the master, or null while they disagree. */
  async masterPort() {
    const seen = new Set()
    for (const port of this.sentinelPorts) {
      const [, p] = (await this.sentinelCli(port, 'sentinel', 'get-master-addr-by-name', NAME)).trim().split('\n')
      seen.add(Number(p))
    }
    return seen.size === 1 ? [...seen][0] : null
  }

  /** SENTINEL FAILOVER; resolves with { from, to } once the new master serves and the old one replicates it. */
  async sentinelFailover() {
    const from = await this.masterPort()
    const to = this.dataPorts.find((p) => p !== from)
    const reply = (await this.sentinelCli(this.sentinelPorts[0], 'sentinel', 'failover', NAME)).trim()
    if (reply !== 'OK') throw new Error(`SENTINEL FAILOVER answered ${reply}`)
    await until(async () => {
      if ((await this.masterPort()) !== to) return false
      if (infoFields(await this.cli(to, 'info', 'replication')).role !== 'master') return false
      const old = infoFields(await this.cli(from, 'info', 'replication'))
      return old.role === 'slave' && Number(old.master_port) === to && old.master_link_status === 'up'
    }, `the failover from ${from} to ${to}`, 30_000)
    return { from, to }
  }

  /** Stops every process by its pid and removes the folder. */
  async stop() {
    await stopChildren(this.children)
    this.children = []
    rmSync(this.dir, { recursive: true, force: true })
  }
}
