// A PostgreSQL cluster of the test's own: initdb into a temp dir, started with pg_ctl on a free
// loopback port (trust auth, socket in the data dir), so a test can dump, drop, restore, stop or
// crash it without touching the shared server. As root, the server commands run as the
// `postgres` user (PostgreSQL refuses to run as root); the client tools (pg_dump, psql) run as is.
//
//   const pg = await OwnPostgres.start()      // initdb + pg_ctl start
//   const url = await pg.createDatabase('wa') // postgres://postgres@127.0.0.1:<port>/wa?sslmode=disable
//   const dump = await pg.dump('wa')          // pg_dump to a file in the temp dir
//   await pg.restore('wa', dump)              // DROP DATABASE ... WITH (FORCE), CREATE, psql < dump
//   await pg.stop()                           // pg_ctl stop -m fast, temp dir removed
import { execFile, execFileSync } from 'node:child_process'
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { freePort } from './own-redis.mjs'
import { inCI } from './services.mjs'

const run = promisify(execFile)
const instances = new Set()
// a test process that dies without afterAll still stops its clusters
process.once('exit', () => {
  for (const pg of instances) {
    try {
      execFileSync(...pg.asServer(pg.bin('pg_ctl'), ['-D', pg.dir, '-m', 'immediate', '-w', 'stop']), { stdio: 'ignore', timeout: 10_000 })
    } catch {}
  }
})

/** The folder holding initdb / pg_ctl: on the PATH, or Debian's /usr/lib/postgresql/<v>/bin. */
function serverBinDir() {
  for (const dir of (process.env.PATH ?? '').split(':')) if (dir && existsSync(join(dir, 'initdb')) && existsSync(join(dir, 'pg_ctl'))) return dir
  const base = '/usr/lib/postgresql'
  if (!existsSync(base)) return null
  const versions = readdirSync(base).filter((v) => existsSync(join(base, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a))
  return versions.length ? join(base, versions[0], 'bin') : null
}

/** The uid/gid of the `postgres` user (to run the server as, when this process is root). */
function postgresUser() {
  try {
    const id = (flag) => Number(execFileSync('id', [flag, 'postgres'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim())
    return { uid: id('-u'), gid: id('-g') }
  } catch {
    return null
  }
}

/**
 * Whether a private cluster can be started here (initdb, pg_ctl, pg_dump and psql found; as root a
 * `postgres` user to run it as); fails under CI=true when it cannot.
 */
export async function postgresServerAvailable(what) {
  const missing = []
  if (!serverBinDir()) missing.push('initdb/pg_ctl')
  for (const tool of ['pg_dump', 'psql']) {
    const ok = await run(tool, ['--version']).then(() => true, () => false)
    if (!ok) missing.push(tool)
  }
  if (process.getuid?.() === 0 && !postgresUser()) missing.push('a postgres user to run the server as (this process is root)')
  if (missing.length === 0) return true
  if (inCI) throw new Error(`a private PostgreSQL cluster is required under CI (${what}): missing ${missing.join(', ')}`)
  console.warn(`SKIPPED: no ${missing.join(', ')}; ${what} need a PostgreSQL cluster of their own`)
  return false
}

export class OwnPostgres {
  static async start() {
    const pg = new OwnPostgres(await freePort())
    await pg.init()
    await pg.startServer()
    return pg
  }

  constructor(port) {
    this.port = port
    this.binDir = serverBinDir()
    this.dir = mkdtempSync(join(tmpdir(), 'wa-pg-'))
    this.data = join(this.dir, 'data')
    this.user = process.getuid?.() === 0 ? postgresUser() : null
    if (this.user) chownSync(this.dir, this.user.uid, this.user.gid)
    instances.add(this)
  }

  bin(name) {
    return join(this.binDir, name)
  }

  /** [file, args] running `file` as the server's user (runuser when this process is root). */
  asServer(file, args) {
    return this.user ? ['runuser', ['-u', 'postgres', '--', file, ...args]] : [file, args]
  }

  async server(name, args, timeout = 60_000) {
    const [file, argv] = this.asServer(this.bin(name), args)
    return run(file, argv, { timeout })
  }

  async init() {
    await this.server('initdb', ['-D', this.data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--no-sync'])
  }

  async startServer() {
    const opts = `-p ${this.port} -k ${this.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=200`
    try {
      await this.server('pg_ctl', ['-D', this.data, '-l', join(this.dir, 'server.log'), '-o', opts, '-w', '-t', '30', 'start'])
    } catch (err) {
      throw new Error(`pg_ctl start failed: ${err.message} ${this.logTail()}`)
    }
  }

  /** The end of the server's log. */
  logTail() {
    try {
      return readFileSync(join(this.dir, 'server.log'), 'utf8').slice(-1500)
    } catch {
      return ''
    }
  }

  url(db) {
    return `postgres://postgres@127.0.0.1:${this.port}/${db}?sslmode=disable`
  }

  /** Runs SQL (or `-f file`) with psql on database `db`; stops at the first error. */
  async psql(db, ...args) {
    const { stdout } = await run('psql', ['-h', '127.0.0.1', '-p', String(this.port), '-U', 'postgres', '-d', db, '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-At', ...args], { timeout: 60_000, maxBuffer: 64 << 20 })
    return stdout.trim()
  }

  async createDatabase(db) {
    await this.psql('postgres', '-c', `CREATE DATABASE "${db}"`)
    return this.url(db)
  }

  /** pg_dump of `db` (plain SQL) into a file of the temp dir; returns its path. */
  async dump(db, name = `dump-${Date.now()}.sql`) {
    const file = join(this.dir, name)
    await run('pg_dump', ['-h', '127.0.0.1', '-p', String(this.port), '-U', 'postgres', '-d', db, '-f', file], { timeout: 60_000 })
    return file
  }

  /** A restore from a backup: the database dropped (its connections ended), created, the dump replayed. */
  async restore(db, file) {
    await this.psql('postgres', '-c', `DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`)
    await this.psql('postgres', '-c', `CREATE DATABASE "${db}"`)
    await this.psql(db, '-f', file)
  }

  async stop() {
    if (!instances.has(this)) return
    instances.delete(this)
    try {
      await this.server('pg_ctl', ['-D', this.data, '-m', 'fast', '-w', '-t', '30', 'stop'])
    } catch {
      try {
        await this.server('pg_ctl', ['-D', this.data, '-m', 'immediate', '-w', 'stop'])
      } catch {}
    }
    rmSync(this.dir, { recursive: true, force: true })
  }
}
