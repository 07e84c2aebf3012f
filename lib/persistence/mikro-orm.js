'use strict'
// MikroOrmPersistence: the Persistence interface (lib/persistence/driver.js) over a MikroORM 6
// instance of the user's (PostgreSQL; `@mikro-orm/postgresql`). Three tables of its own, declared
// as EntitySchemas the user adds to `entities`:
//
//   wa_orm_auth_sessions(session_id PK, creds bytea NULL, creds_version, version, cleared_version,
//                        epoch, epoch_seq, created_at, updated_at)           -- bigint, times in ms
//   wa_orm_auth_keys(session_id, type, id, value bytea NULL, version, updated_at,
//                    PK(session_id, type, id))                     -- value NULL: a tombstone
//   wa_orm_auth_leases(session_id PK, token, holder, epoch, expires_at, acquired_at)
//
// A transaction is `em.fork().transactional()` holding the session row locked: SELECT ... FOR
// UPDATE, and when there is no row yet INSERT ... ON CONFLICT DO NOTHING (the row it inserts is
// locked by it; a second process inserting the same session waits on the primary key, then locks
// the committed row). Every transaction of a session
// takes that lock first, so they serialise across processes; a placeholder row the transaction
// inserted and did not use is deleted before the commit (nobody ever sees it). All queries go
// through MikroORM's QueryBuilder (no identity map, no flush). @mikro-orm/core is loaded only
// when this file's exports are used, so the package works without MikroORM installed.

const TABLES = {
  sessions: 'wa_orm_auth_sessions',
  keys: 'wa_orm_auth_keys',
  leases: 'wa_orm_auth_leases',
}
/** Rows per INSERT / ids per IN list (PostgreSQL takes 65,535 parameters; MikroORM inlines them). */
const ROWS_PER_STATEMENT = 500
/** Value bytes per INSERT (values travel inlined as hex in the SQL text). */
const BYTES_PER_STATEMENT = 4 * 1024 * 1024
/** Tries of a transaction PostgreSQL rolled back for a deadlock or a serialization failure. */
const TRIES = 3
const RETRYABLE = new Set(['40001', '40P01'])
const OWN = Symbol('wa-auth-store.mikro-orm')

let core
function mikroCore() {
  if (!core) {
    try {
      core = require('@mikro-orm/core')
    } catch (err) {
      throw new Error('MikroOrmPersistence needs @mikro-orm/core (and @mikro-orm/postgresql) installed', { cause: err })
    }
  }
  return core
}

let schemas
/** The three EntitySchemas, made once (with the @mikro-orm/core this package resolves). */
function entities() {
  if (schemas) return schemas
  const { EntitySchema, BigIntType } = mikroCore()
  const text = (fieldName, extra = {}) => ({ type: 'text', columnType: 'text', fieldName, ...extra })
  const int = (fieldName, extra = {}) => ({ type: new BigIntType('number'), columnType: 'bigint', fieldName, ...extra })
  const blob = (fieldName) => ({ type: 'blob', columnType: 'bytea', fieldName, nullable: true })
  const Session = new EntitySchema({
    name: 'WaOrmAuthSession',
    tableName: TABLES.sessions,
    properties: {
      sessionId: text('session_id', { primary: true }),
      creds: blob('creds'),
      credsVersion: int('creds_version'),
      version: int('version'),
      clearedVersion: int('cleared_version'),
      epoch: int('epoch'),
      // added after the first tables were made: existing rows take the default
      epochSeq: int('epoch_seq', { default: 0 }),
      sealed: int('sealed', { default: 0 }),
      createdAt: int('created_at'),
      updatedAt: int('updated_at'),
    },
  })
  const Key = new EntitySchema({
    name: 'WaOrmAuthKey',
    tableName: TABLES.keys,
    properties: {
      sessionId: text('session_id', { primary: true }),
      type: text('type', { primary: true }),
      id: text('id', { primary: true }),
      value: blob('value'),
      version: int('version'),
      updatedAt: int('updated_at'),
    },
  })
  const Lease = new EntitySchema({
    name: 'WaOrmAuthLease',
    tableName: TABLES.leases,
    properties: {
      sessionId: text('session_id', { primary: true }),
      token: text('token'),
      holder: text('holder'),
      epoch: int('epoch'),
      expiresAt: int('expires_at'),
      acquiredAt: int('acquired_at'),
    },
  })
  schemas = { Session, Key, Lease }
  return schemas
}

/** The DDL ensureSchema runs: the same columns the EntitySchemas declare (no schema diff). */
function ddl(qualify) {
  return [
    `create table if not exists ${qualify(TABLES.sessions)} (
      "session_id" text not null, "creds" bytea null, "creds_version" bigint not null,
      "version" bigint not null, "cleared_version" bigint not null, "epoch" bigint not null,
      "epoch_seq" bigint not null default 0, "sealed" bigint not null default 0,
      "created_at" bigint not null, "updated_at" bigint not null,
      constraint "${TABLES.sessions}_pkey" primary key ("session_id"))`,
    // tables made by an earlier version lack the epochs handed out
    `alter table ${qualify(TABLES.sessions)} add column if not exists "epoch_seq" bigint not null default 0`,
    `alter table ${qualify(TABLES.sessions)} add column if not exists "sealed" bigint not null default 0`,
    `create table if not exists ${qualify(TABLES.keys)} (
      "session_id" text not null, "type" text not null, "id" text not null, "value" bytea null,
      "version" bigint not null, "updated_at" bigint not null,
      constraint "${TABLES.keys}_pkey" primary key ("session_id", "type", "id"))`,
    `create table if not exists ${qualify(TABLES.leases)} (
      "session_id" text not null, "token" text not null, "holder" text not null,
      "epoch" bigint not null, "expires_at" bigint not null, "acquired_at" bigint not null,
      constraint "${TABLES.leases}_pkey" primary key ("session_id"))`,
  ]
}

/**
 * A database error without the query text: MikroORM and knex put the whole statement, values
 * inlined (creds and keys as hex), in front of the server's message. Keeps the server's message,
 * its SQLSTATE and the constraint, table and column names; never `detail` (PostgreSQL's "Failing
 * row contains (...)" would carry the values).
 */
function safeError(err, what) {
  if (err && err[OWN]) return err
  if (!(err instanceof Error)) return err
  const first = String(err.message).split('\n')[0]
  const cut = first.lastIndexOf(' - ')
  const looksLikeQuery = /^\s*(select|insert|update|delete|with|begin|commit|rollback|savepoint|release|create|alter|drop|set)\b/i.test(first)
  const server = looksLikeQuery && cut >= 0 ? first.slice(cut + 3) : first.slice(0, 300)
  const code = typeof err.code === 'string' ? err.code : undefined
  const where = ['table', 'column', 'constraint'].filter((k) => typeof err[k] === 'string' && err[k]).map((k) => `${k} ${err[k]}`)
  const out = new Error(`MikroORM ${what}: ${server}${code ? ` (${/^[0-9A-Z]{5}$/.test(code) ? 'SQLSTATE ' : ''}${code})` : ''}${where.length ? ` [${where.join(', ')}]` : ''}`)
  out[OWN] = true
  if (code) out.code = code
  return out
}

const num = (v) => (v === null || v === undefined ? v : Number(v))

function sessionOut(r) {
  return {
    creds: r.creds ?? null,
    credsVersion: num(r.credsVersion),
    version: num(r.version),
    clearedVersion: num(r.clearedVersion),
    epoch: num(r.epoch),
    epochSeq: num(r.epochSeq) ?? 0,
    sealed: num(r.sealed) ?? 0,
    createdAt: num(r.createdAt),
    updatedAt: num(r.updatedAt),
  }
}

const sessionIn = (sessionId, r) => ({
  sessionId,
  creds: r.creds ?? null,
  credsVersion: r.credsVersion,
  version: r.version,
  clearedVersion: r.clearedVersion,
  epoch: r.epoch,
  epochSeq: r.epochSeq ?? 0,
  sealed: r.sealed ?? 0,
  createdAt: r.createdAt,
  updatedAt: r.updatedAt,
})

const keyOut = (r) => ({ type: r.type, id: r.id, value: r.value ?? null, version: num(r.version) })

/** `rows` in runs of at most ROWS_PER_STATEMENT rows and about BYTES_PER_STATEMENT bytes. */
function chunks(rows, size = () => 0) {
  const out = []
  let run = []
  let bytes = 0
  for (const r of rows) {
    const n = size(r)
    if (run.length && (run.length >= ROWS_PER_STATEMENT || bytes + n > BYTES_PER_STATEMENT)) {
      out.push(run)
      run = []
      bytes = 0
    }
    run.push(r)
    bytes += n
  }
  if (run.length) out.push(run)
  return out
}

/** A transaction of one session, its row locked. */
class MikroOrmTransaction {
  #em
  #sid
  #s
  #session = null // the row as this transaction sees it (null: no session yet)
  #placeholder = false // this transaction inserted the row only to lock it
  #sessionPut = false
  #done = false

  constructor(em, sessionId) {
    this.#em = em
    this.#sid = sessionId
    this.#s = entities()
  }

  #qb(entity) {
    if (this.#done) throw new Error('this MikroOrmPersistence transaction is over: use tx only inside its callback')
    return this.#em.createQueryBuilder(entity)
  }

  /** Runs a query of `what`, its error without the query text. */
  async #run(what, qb, method = 'run') {
    try {
      return await qb.execute(method)
    } catch (err) {
      throw safeError(err, what)
    }
  }

  /** Locks the session row, inserting a placeholder first when there is none. */
  async lock() {
    const { LockMode } = mikroCore()
    const { Session } = this.#s
    for (let i = 0; i < 5; i++) {
      const row = await this.#run('lock', this.#qb(Session).select('*').where({ sessionId: this.#sid }).setLockMode(LockMode.PESSIMISTIC_WRITE), 'get')
      if (row) {
        this.#session = sessionOut(row)
        return
      }
      const placeholder = { sessionId: this.#sid, creds: null, credsVersion: 0, version: 0, clearedVersion: 0, epoch: 0, epochSeq: 0, sealed: 0, createdAt: 0, updatedAt: 0 }
      const done = await this.#run('lock', this.#qb(Session).insert(placeholder).onConflict('sessionId').ignore())
      if (done.affectedRows === 1) {
        this.#placeholder = true
        return
      }
      // another transaction inserted it meanwhile (and committed: ON CONFLICT waited): lock that
    }
    throw new Error(`could not lock the row of session '${this.#sid}' (it kept being deleted)`)
  }

  /** Before the commit: drops the placeholder row nobody wrote. */
  async finish() {
    if (this.#placeholder && !this.#sessionPut) {
      await this.#run('finish', this.#qb(this.#s.Session).delete({ sessionId: this.#sid }))
    }
    this.#done = true
  }

  end() {
    this.#done = true
  }

  async getSession() {
    this.#qb(this.#s.Session)
    return this.#session ? { ...this.#session } : null
  }

  async putSession(row) {
    const data = sessionIn(this.#sid, row)
    const { sessionId: _, ...set } = data
    // the row exists: it is locked (or was inserted) by this transaction
    await this.#run('putSession', this.#qb(this.#s.Session).update(set).where({ sessionId: this.#sid }))
    this.#session = sessionOut(data)
    this.#sessionPut = true
  }

  async getKeys(refs) {
    const byType = new Map()
    for (const { type, id } of refs) {
      if (!byType.has(type)) byType.set(type, new Set())
      byType.get(type).add(id)
    }
    const out = []
    for (const [type, ids] of byType) {
      for (const part of chunks([...ids])) {
        const found = await this.#run('getKeys', this.#qb(this.#s.Key).select(['type', 'id', 'value', 'version']).where({ sessionId: this.#sid, type, id: { $in: part } }), 'all')
        for (const r of found) out.push(keyOut(r))
      }
    }
    return out
  }

  async putKeys(rows) {
    const data = rows.map((r) => ({ sessionId: this.#sid, type: r.type, id: r.id, value: r.value ?? null, version: r.version, updatedAt: r.updatedAt ?? 0 }))
    for (const part of chunks(data, (r) => (r.value ? r.value.length * 2 : 0) + r.type.length + r.id.length + 64)) {
      await this.#run('putKeys', this.#qb(this.#s.Key).insert(part).onConflict(['sessionId', 'type', 'id']).merge(['value', 'version', 'updatedAt']))
    }
  }

  async deleteKeysBelow(version) {
    await this.#run('deleteKeysBelow', this.#qb(this.#s.Key).delete({ sessionId: this.#sid, version: { $lt: version } }))
  }

  async getLease() {
    const r = await this.#run('getLease', this.#qb(this.#s.Lease).select('*').where({ sessionId: this.#sid }), 'get')
    return r ? { token: r.token, holder: r.holder, epoch: num(r.epoch), expiresAt: num(r.expiresAt), acquiredAt: num(r.acquiredAt) } : null
  }

  async putLease(row) {
    const data = { sessionId: this.#sid, token: row.token, holder: row.holder, epoch: row.epoch, expiresAt: row.expiresAt, acquiredAt: row.acquiredAt }
    await this.#run('putLease', this.#qb(this.#s.Lease).insert(data).onConflict('sessionId').merge(['token', 'holder', 'epoch', 'expiresAt', 'acquiredAt']))
  }

  async deleteLease() {
    await this.#run('deleteLease', this.#qb(this.#s.Lease).delete({ sessionId: this.#sid }))
  }
}

class MikroOrmPersistence {
  /**
   * The EntitySchemas to add to your MikroORM config's `entities` (or `entitiesTs`), before
   * `MikroORM.init`: `[...MikroOrmPersistence.entities, ...yours]`.
   */
  static get entities() {
    const { Session, Key, Lease } = entities()
    return [Session, Key, Lease]
  }

  /** `{ Session, Key, Lease }`, the same EntitySchemas by name. */
  static get schemas() {
    return entities()
  }

  /**
   * Creates the three tables if they do not exist (PostgreSQL; in the config's `schema` when it
   * has one). Touches nothing else. Alternatively let your migrations create them: the
   * EntitySchemas declare exactly these columns.
   */
  static async ensureSchema(orm) {
    checkOrm(orm)
    const platform = orm.em.getPlatform()
    const name = platform.constructor?.name ?? ''
    if (!/postgre/i.test(name)) {
      throw new Error(`MikroOrmPersistence.ensureSchema creates PostgreSQL tables; this MikroORM uses ${name || 'another platform'}: create the tables with your migrations (the EntitySchemas describe them)`)
    }
    const schema = orm.config.get('schema')
    const quote = (s) => `"${String(s).replace(/"/g, '""')}"`
    const qualify = (table) => (schema ? `${quote(schema)}.${quote(table)}` : quote(table))
    const em = orm.em.fork()
    try {
      await em.transactional(async (tx) => {
        // one creator at a time (CREATE TABLE IF NOT EXISTS can still collide on the catalog)
        await tx.execute(`select pg_advisory_xact_lock(hashtext('wa-auth-store:mikro-orm-schema'))`)
        for (const statement of ddl(qualify)) await tx.execute(statement)
      })
    } catch (err) {
      throw safeError(err, 'ensureSchema')
    }
  }

  /**
   * @param {import('@mikro-orm/core').MikroORM} orm  an initialised MikroORM (PostgreSQL) whose
   *   `entities` include `MikroOrmPersistence.entities`
   * @param {{ closeOrm?: boolean }} [options]  `closeOrm`: close the ORM when the store closes
   *   (default false: the ORM is yours)
   */
  constructor(orm, options = {}) {
    checkOrm(orm)
    const { Session } = entities()
    let known = false
    try {
      known = Boolean(orm.getMetadata().find(Session.meta.className))
    } catch {
      known = false
    }
    if (!known) throw new TypeError('this MikroORM does not know the wa-auth-store entities: add ...MikroOrmPersistence.entities to its `entities` before MikroORM.init')
    this.orm = orm
    this.closeOrm = Boolean(options.closeOrm)
  }

  async transaction(sessionId, fn) {
    for (let attempt = 1; ; attempt++) {
      let tx
      let thrown // what the callback threw: passed on as it is
      try {
        return await this.orm.em.fork().transactional(async (em) => {
          tx = new MikroOrmTransaction(em, sessionId)
          await tx.lock()
          let result
          try {
            result = await fn(tx)
          } catch (err) {
            thrown = err
            throw err
          }
          await tx.finish()
          return result
        })
      } catch (err) {
        tx?.end()
        if (attempt < TRIES && RETRYABLE.has(err?.code)) continue
        throw err === thrown ? err : safeError(err, 'transaction')
      }
    }
  }

  async #read(what, fn) {
    try {
      return await fn(this.orm.em.fork())
    } catch (err) {
      throw safeError(err, what)
    }
  }

  async getSession(sessionId) {
    return this.#read('getSession', async (em) => {
      const r = await em.createQueryBuilder(entities().Session).select('*').where({ sessionId }).execute('get')
      return r ? sessionOut(r) : null
    })
  }

  async getKeys(sessionId, type, ids) {
    return this.#read('getKeys', async (em) => {
      const out = []
      for (const part of chunks([...new Set(ids)])) {
        const found = await em.createQueryBuilder(entities().Key).select(['type', 'id', 'value', 'version']).where({ sessionId, type, id: { $in: part } }).execute('all')
        for (const r of found) out.push(keyOut(r))
      }
      return out
    })
  }

  async listKeys(sessionId, type) {
    const { raw } = mikroCore()
    return this.#read('listKeys', async (em) => {
      const where = type === undefined ? { sessionId } : { sessionId, type }
      const found = await em.createQueryBuilder(entities().Key).select(['type', 'id', 'version', raw('octet_length(value) as size')]).where(where).execute('all')
      return found.map((r) => ({ type: r.type, id: r.id, version: num(r.version), size: r.size === null || r.size === undefined ? null : Number(r.size) }))
    })
  }

  async listSessions() {
    const { raw } = mikroCore()
    return this.#read('listSessions', async (em) => {
      const found = await em.createQueryBuilder(entities().Session).select(['sessionId', 'version', 'updatedAt', raw('(creds is not null) as has_creds')]).execute('all')
      return found.map((r) => ({ sessionId: r.sessionId, hasCreds: r.has_creds === true || r.has_creds === 't', version: num(r.version), updatedAt: num(r.updatedAt) }))
    })
  }

  /** One transaction: the session row first (it waits for the session's running transaction). */
  async deleteSession(sessionId) {
    const { Session, Key, Lease } = entities()
    await this.#read('deleteSession', (em) =>
      em.transactional(async (tx) => {
        for (const entity of [Session, Key, Lease]) await tx.createQueryBuilder(entity).delete({ sessionId }).execute('run')
      }),
    )
  }

  async close() {
    if (this.closeOrm) await this.orm.close()
  }
}

function checkOrm(orm) {
  if (!orm || typeof orm !== 'object' || !orm.em || typeof orm.em.fork !== 'function' || typeof orm.getMetadata !== 'function') {
    throw new TypeError('MikroOrmPersistence takes an initialised MikroORM instance (await MikroORM.init({...}))')
  }
}

module.exports.MikroOrmPersistence = MikroOrmPersistence
