'use strict'
// `wa-auth-store <command>`: commander parses, the tools in lib/tools do the work, output.js
// prints. Exit codes: 0 success, 1 failure, 2 usage error.

const { Command, CommanderError } = require('commander')
const { openAuthStore, DEFAULT_DATABASE } = require('../store.js')
const { WaAuthStoreError } = require('../errors.js')
const { progress, bytes, table, counts } = require('./output.js')

/** A mistake in how the command was called (exit code 2). */
class UsageError extends Error {}

function collect(value, previous) {
  return [...(previous ?? []), value]
}

/** `--redis`, `--no-redis`, `--database`, the encryption keys and `--json` on a command. */
function storeOptions(cmd) {
  return cmd
    .option('--redis <url>', 'target Redis (default: $REDIS_URL, else none)')
    .option('--no-redis', 'no Redis tier, even when $REDIS_URL is set')
    .option('--database <url>', `target SQL database (default: $DATABASE_URL, else ${DEFAULT_DATABASE})`)
    .option('--key-env <name>', 'environment variable holding the encryption key, base64 (default: $WA_AUTH_STORE_KEY when set)')
    .option('--previous-key-env <name>', 'environment variable holding a previous encryption key (repeatable)', collect)
    .option('--json', 'print machine-readable JSON on stdout')
}

/**
 * The `encryption` option from the environment variables the flags name: keys never go on the
 * command line, where `ps` and shell histories would show them.
 */
function encryptionFrom(keyEnv, previousKeyEnvs) {
  const name = keyEnv ?? (process.env.WA_AUTH_STORE_KEY ? 'WA_AUTH_STORE_KEY' : null)
  if (!name) {
    if (previousKeyEnvs?.length) throw new UsageError('--previous-key-env needs the current key too (--key-env or $WA_AUTH_STORE_KEY)')
    return undefined
  }
  const read = (n) => {
    const v = process.env[n]
    if (!v) throw new UsageError(`the environment variable ${n} is not set or empty`)
    return v
  }
  return { key: read(name), previousKeys: (previousKeyEnvs ?? []).map(read) }
}

/** Query parameters that may carry a secret (password=, sslpassword=, token=, ...). */
const SECRET_PARAM = /pass|secret|token|key|auth|cred/i

/** The URL with its password and every secret-looking parameter replaced, for printing. */
function redacted(url) {
  if (!url) return null
  try {
    const u = new URL(url)
    if (u.password) u.password = '***'
    for (const name of [...u.searchParams.keys()]) if (SECRET_PARAM.test(name)) u.searchParams.set(name, '***')
    return u.toString()
  } catch {
    return '(an unparsable URL, not shown)'
  }
}

/** Target URLs from the flags and the environment, as openAuthStore() would pick them. */
function targetUrls(opts) {
  const redis = opts.redis === false ? null : (opts.redis ?? (process.env.REDIS_URL || null))
  const database = opts.database ?? (process.env.DATABASE_URL || DEFAULT_DATABASE)
  return { redis, database }
}

/** Background warnings of the store, on stderr. */
const LOGGER = {
  warn: (obj, msg) => process.stderr.write(`warning: ${msg} (${obj.code})\n`),
  error: (obj, msg) => process.stderr.write(`error: ${msg} (${obj.code})\n`),
}

async function withStore(urls, fn, encryption) {
  const store = await openAuthStore({ ...urls, logger: LOGGER, ...(encryption ? { encryption } : {}) })
  try {
    return await fn(store)
  } finally {
    await store.close()
  }
}

/** Runs a command body: opens the target store, prints the result as JSON or text. */
function action(body, text) {
  return async function (...args) {
    const cmd = args[args.length - 1]
    const opts = cmd.optsWithGlobals()
    const urls = targetUrls(opts)
    const encryption = encryptionFrom(opts.keyEnv, opts.previousKeyEnv)
    const result = await withStore(urls, (store) => body(store, opts, args.slice(0, -2), urls), encryption)
    if (opts.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`)
    else process.stdout.write(`${text(result, opts)}\n`)
  }
}

/** Runs `fn(onProgress)` with a progress reporter that is stopped whatever happens. */
async function withProgress(label, opts, fn) {
  const p = progress(label, { json: opts.json })
  try {
    return await fn((done, total, item) => p.update(done, total, item))
  } finally {
    p.stop()
  }
}

function requireSession(opts) {
  if (!opts.session) throw new UsageError('--session <id> is required')
  return opts.session
}

function importText(r, opts) {
  r = { ...r, dryRun: opts?.dryRun === true }
  const lines = (r.sessions ?? [r]).map((s) => {
    const names = (s.skipped ?? []).map((f) => (typeof f === 'string' ? f : f.file))
    const skipped = names.length ? `; ${names.length} skipped (${names.slice(0, 3).join(', ')}${names.length > 3 ? ', ...' : ''})` : ''
    const what = r.dryRun || s.dryRun ? 'would import' : s.written === false ? 'already imported, unchanged' : 'imported'
    return `${s.sessionId}: ${what} (${counts(s.counts)})${s.verified ? ', verified' : ''}${skipped}`
  })
  return lines.join('\n')
}

function tools(name) {
  return require(`../tools/${name}.js`)
}

function buildProgram() {
  const program = new Command('wa-auth-store')
    .description('Inspect, import, export and copy Baileys auth state kept by wa-auth-store')
    .showHelpAfterError()
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) })

  const imp = program.command('import').description('bring paired accounts in without scanning a QR code again')
  storeOptions(
    imp
      .command('multifile <folder>')
      .description("a Baileys useMultiFileAuthState folder (6.x and 7.x layouts)")
      .option('--session <id>', 'session id to import it as')
      .option('--overwrite', 'replace the session if the target holds another state for it')
      .option('--verify', 'read every record back and compare')
      .option('--dry-run', 'read and check, write nothing'),
  ).action(
    action(async (store, opts, [folder]) => {
      const sid = requireSession(opts)
      return withProgress('import', opts, (onProgress) => tools('multifile').importMultiFileAuthState(store, folder, sid, { overwrite: opts.overwrite === true, verify: opts.verify === true, dryRun: opts.dryRun === true, onProgress }))
    }, importText),
  )
  storeOptions(
    imp
      .command('wa-auth-store-0.6')
      .description('the tables and Redis keys of wa-auth-store 0.6.x (the TypeScript package)')
      .option('--from-database <url>', 'its SQL database (its MikroORM connection URL)')
      .option('--from-table <name>', 'its table (the entity your application declared)')
      .option('--from-redis <url>', 'its Redis (preferred over SQL where both hold a session)')
      .option('--from-redis-prefix <prefix>', 'the ioredis keyPrefix your application set')
      .option('--session <id>', 'a session to import (repeatable; default: all)', collect)
      .option('--key-set <set>', "'union' (default): records only SQL still holds are taken from SQL; 'redis': Redis's keys only")
      .option('--overwrite', 'replace sessions the target holds another state for')
      .option('--verify', 'read every record back and compare')
      .option('--dry-run', 'read and repair, write nothing'),
  ).action(
    action(async (store, opts) => {
      if (!opts.fromDatabase && !opts.fromRedis) throw new UsageError('import wa-auth-store-0.6 needs --from-database and/or --from-redis')
      return withProgress('import', opts, (onProgress) =>
        tools('import-seed').importSeedSessions(store, {
          fromDatabase: opts.fromDatabase,
          fromTable: opts.fromTable,
          fromRedis: opts.fromRedis,
          fromRedisPrefix: opts.fromRedisPrefix,
          sessions: opts.session,
          keySet: opts.keySet,
          overwrite: opts.overwrite === true,
          verify: opts.verify === true,
          dryRun: opts.dryRun === true,
          onProgress,
        }),
      )
    }, importText),
  )
  storeOptions(
    imp
      .command('baileys-sqlite <file>')
      .description("a useSqliteAuthState file (creds and signal_keys tables)")
      .option('--session <id>', 'session id to import it as')
      .option('--overwrite', 'replace the session if the target holds another state for it')
      .option('--verify', 'read every record back and compare')
      .option('--dry-run', 'read and check, write nothing'),
  ).action(
    action(async (store, opts, [file]) => {
      const sid = requireSession(opts)
      return withProgress('import', opts, (onProgress) => tools('import-baileys-sqlite').importBaileysSqlite(store, file, sid, { overwrite: opts.overwrite === true, verify: opts.verify === true, dryRun: opts.dryRun === true, onProgress }))
    }, importText),
  )

  const exp = program.command('export').description('write a session out in another layout')
  storeOptions(
    exp
      .command('multifile <folder>')
      .description("a folder Baileys' own useMultiFileAuthState opens")
      .option('--session <id>', 'session to export')
      .option('--overwrite', 'write into a folder that is not empty')
      .option('--verify', 'read every file back and compare'),
  ).action(
    action(
      async (store, opts, [folder]) => {
        const sid = requireSession(opts)
        return withProgress('export', opts, (onProgress) => tools('multifile').exportMultiFileAuthState(store, sid, folder, { overwrite: opts.overwrite === true, verify: opts.verify === true, dryRun: opts.dryRun === true, onProgress }))
      },
      (r) => `${r.sessionId}: ${r.files} files written (${counts(r.counts)})`,
    ),
  )

  storeOptions(
    program
      .command('copy')
      .description('copy sessions from another store into the target store, each verified')
      .option('--from-redis <url>', 'source Redis')
      .option('--from-database <url>', 'source SQL database')
      .option('--session <id>', 'a session to copy (repeatable; default: all)', collect)
      .option('--from-key-env <name>', "environment variable holding the source's encryption key, base64")
      .option('--overwrite', 'replace sessions the target holds another state for'),
  ).action(async (...args) => {
    const opts = args[args.length - 1].optsWithGlobals()
    if (!opts.fromRedis && !opts.fromDatabase) throw new UsageError('copy needs --from-redis and/or --from-database')
    const fromEncryption = opts.fromKeyEnv ? encryptionFrom(opts.fromKeyEnv, []) : undefined
    const source = await openAuthStore({ redis: opts.fromRedis ?? null, database: opts.fromDatabase ?? null, logger: LOGGER, lease: false, ...(fromEncryption ? { encryption: fromEncryption } : {}) })
    try {
      await action(
        (target) => withProgress('copy', opts, (onProgress) => tools('copy').copySessions(source, target, { sessions: opts.session, overwrite: opts.overwrite === true, onProgress })),
        (r) => `${r.written} copied, ${r.skipped} already there (${r.records} records, all verified)`,
      )(...args)
    } finally {
      await source.close()
    }
  })

  storeOptions(program.command('sessions').description('list the sessions: id, registered, me.id, keys, bytes, last write')).action(
    action(
      (store, opts) => withProgress('sessions', opts, (onProgress) => tools('inspect').listSessionSummaries(store, { onProgress })),
      (list) =>
        list.length === 0
          ? 'no sessions'
          : table([
              ['SESSION', 'REGISTERED', 'ME', 'KEYS', 'BYTES', 'LAST WRITE'],
              ...list.map((s) => [s.id, s.registered ? 'yes' : 'no', s.me ?? '-', s.keys, bytes(s.bytes), s.updatedAt ? new Date(s.updatedAt).toISOString() : '-']),
            ]),
    ),
  )

  storeOptions(program.command('describe <id>').description('one session: creds, key types with counts and bytes, lease')).action(
    action(
      (store, opts, [id]) => tools('inspect').requireSession(store, id),
      (d) =>
        [
          `session ${d.id}: ${d.registered ? 'registered' : 'not registered'}${d.me ? ` as ${d.me}` : ''}`,
          `creds: ${d.creds ? bytes(d.credsBytes) : 'none'}`,
          `lease: ${d.lease ? `held by ${d.lease.holder} (epoch ${d.lease.epoch})` : 'free'}`,
          table([['TYPE', 'RECORDS', 'BYTES'], ...d.types.map((t) => [t.type, t.count, bytes(t.bytes)]), ['total', d.keys, bytes(d.bytes)]]),
        ].join('\n'),
    ),
  )

  storeOptions(program.command('stats').description('tiers, sessions, cache and Redis memory')).action(
    action(
      async (store, opts, _args, urls) => {
        const sessions = await tools('inspect').listSessionSummaries(store)
        const out = {
          tiers: { redis: redacted(urls.redis), database: redacted(urls.database) },
          sessions: sessions.length,
          registered: sessions.filter((s) => s.registered).length,
          keys: sessions.reduce((n, s) => n + s.keys, 0),
          bytes: sessions.reduce((n, s) => n + s.bytes, 0),
          store: await store.stats(),
        }
        if (urls.redis) {
          const { RedisMemoryManager } = require('../memory-manager.js')
          const mm = new RedisMemoryManager(store._redis.redis, {})
          const s = await mm.getStats()
          out.redisMemory = { usedBytes: s.memoryUsage.usedBytes, trackedSessions: s.totalSessions, evictionsAllProcesses: s.evictionsAllProcesses }
        }
        return out
      },
      (s) =>
        [
          `redis:    ${s.tiers.redis ?? 'none'}`,
          `database: ${s.tiers.database ?? 'none'}`,
          `sessions: ${s.sessions} (${s.registered} registered), ${s.keys} keys, ${bytes(s.bytes)}`,
          s.redisMemory ? `redis memory: ${bytes(s.redisMemory.usedBytes)} used, ${s.redisMemory.trackedSessions} sessions tracked, ${s.redisMemory.evictionsAllProcesses} evictions` : null,
        ]
          .filter(Boolean)
          .join('\n'),
    ),
  )

  storeOptions(program.command('verify [id]').description('decode every record; report the corrupt ones')).action(async (...args) => {
    let bad = 0
    await action(
      async (store, opts, [id]) => {
        const results = await withProgress('verify', opts, (onProgress) => tools('inspect').verifySessions(store, id ? [id] : undefined, { onProgress }))
        bad = results.reduce((n, r) => n + r.corrupt.length, 0)
        return results
      },
      (results) =>
        results
          .map((r) => [`${r.id}: ${r.records} records, ${r.corrupt.length ? `${r.corrupt.length} corrupt` : 'all decode'}`, ...r.corrupt.map((c) => `  ${c.type}${c.id ? `/${c.id}` : ''}: ${c.problem} (${c.code})`)].join('\n'))
          .join('\n') || 'no sessions',
    )(...args)
    if (bad > 0) process.exitCode = 1
  })

  storeOptions(
    program
      .command('delete <id>')
      .description('remove a session: creds and every key')
      .option('--force', "take the session from the process holding its lease (that bot's writes are refused from then on; waits out what is left of its lease first)"),
  ).action(
    action(
      async (store, opts, [id]) => {
        await tools('inspect').requireSession(store, id)
        await store.deleteCreds(id, { force: opts.force === true })
        return { deleted: id }
      },
      (r) => `deleted ${r.deleted}`,
    ),
  )

  storeOptions(
    program
      .command('repair <id>')
      .description("settle a session the store refuses with ERR_SQL_BEHIND (SQL was restored from a backup older than Redis)")
      .requiredOption('--accept-sql', "serve SQL's (older) state from now on: Redis drops its newer copy"),
  ).action(
    action(
      async (store, opts, [id]) => ({ session: id, wasRefused: await store.acceptSqlState(id) }),
      (r) => (r.wasRefused ? `${r.session}: SQL's state accepted; Redis dropped its newer copy` : `${r.session}: was not refused; Redis now follows SQL`),
    ),
  )

  storeOptions(
    program
      .command('rekey')
      .description('re-seal every record under the current encryption key, so previous keys can be dropped')
      .option('--session <id>', 'a session to re-seal (repeatable; default: all)', collect),
  ).action(
    action(
      async (store, opts) => {
        if (!encryptionFrom(opts.keyEnv, opts.previousKeyEnv)) throw new UsageError('rekey needs the encryption key (--key-env, or $WA_AUTH_STORE_KEY)')
        return withProgress('rekey', opts, (onProgress) => tools('rekey').rekeySessions(store, { sessions: opts.session, onProgress }))
      },
      (r) => `${r.records} records in ${r.sessions.length} sessions re-sealed under the current key`,
    ),
  )

  storeOptions(
    program
      .command('prune [id]')
      .description('delete state Baileys never reads again (see README, Pruning); default: every session')
      .option('--dry-run', 'report records and bytes per key type, delete nothing')
      .option('--group-left <jid>', 'a group the account left: its sender-key-memory goes (repeatable)', collect)
      .option('--rule <name>', 'run only this rule (repeatable; default: all)', collect),
  ).action(async (...args) => {
    let skipped = 0
    await action(
      async (store, opts, [id]) => {
        const r = await withProgress('prune', opts, (onProgress) => tools('prune').prune(store, id, { dryRun: opts.dryRun === true, groupsLeft: opts.groupLeft, rules: opts.rule, onProgress }))
        skipped = r.totals.skipped
        return r
      },
      (r) => {
        const verb = r.dryRun ? 'would delete' : 'deleted'
        const perSession = r.sessions.map((s) => (s.skipped ? `${s.sessionId}: skipped (${s.skipped.reason})` : `${s.sessionId}: ${verb} ${counts(Object.fromEntries(Object.entries(s.kinds).map(([t, k]) => [t, k.records])))} (${bytes(s.bytes)})`))
        const total = `${verb} ${r.totals.records} records, ${bytes(r.totals.bytes)}, in ${r.totals.sessions} sessions${r.totals.skipped ? `; ${r.totals.skipped} skipped` : ''}`
        return [...perSession, total].join('\n')
      },
    )(...args)
    if (skipped > 0) process.exitCode = 1
  })

  return program
}

/** Runs the command line; resolves to the exit code. */
async function main(argv = process.argv) {
  const program = buildProgram()
  try {
    await program.parseAsync(argv)
    return process.exitCode ?? 0
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version exit 0; a missing command (help shown instead) and bad usage exit 2
      return err.exitCode === 0 ? 0 : 2
    }
    // a bad option value the tools refused (an unknown --rule, a malformed key) is a usage error too
    if (err instanceof UsageError || err?.code === 'ERR_INVALID_ARGUMENT') {
      process.stderr.write(`error: ${err.message}${err.code ? ` (${err.code})` : ''}\n`)
      return 2
    }
    const code = err instanceof WaAuthStoreError ? err.code : 'ERR_UNEXPECTED'
    process.stderr.write(`error: ${err.message} (${code})\n`)
    return 1
  }
}

module.exports = { main, buildProgram }
