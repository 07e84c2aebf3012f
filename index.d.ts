/// <reference types="node" />
// Public types of wa-auth-store. Structural on purpose: they match Baileys' AuthenticationState
// whichever package name (`baileys` or `@whiskeysockets/baileys`) and version the user installed.

/** Error codes every rejection carries as `err.code`. */
export type WaAuthStoreErrorCode =
  | 'ERR_INVALID_ARGUMENT'
  | 'ERR_INVALID_SESSION_ID'
  | 'ERR_REDIS'
  | 'ERR_DATABASE'
  | 'ERR_TIMEOUT'
  | 'ERR_STORE_CLOSED'
  | 'ERR_CORRUPT_VALUE'
  | 'ERR_CONFIG'
  | 'ERR_SESSION_LOCKED'
  | 'ERR_BAILEYS_NOT_FOUND'
  | 'ERR_SESSION_EXISTS'
  | 'ERR_SESSION_NOT_FOUND'
  | 'ERR_VERIFY_FAILED'
  | 'ERR_NOT_FOUND'
  | 'ERR_IO'
  | 'ERR_FOLDER_NOT_EMPTY'
  | 'ERR_DECRYPT'
  | 'ERR_SQL_BEHIND'
  /** require('wa-auth-store') on a platform with no prebuilt binary (README, Install). */
  | 'ERR_UNSUPPORTED_PLATFORM'
  /** require('wa-auth-store') on a listed platform whose binary package did not install or load. */
  | 'ERR_NATIVE_BINDING'

export declare class WaAuthStoreError extends Error {
  readonly code: WaAuthStoreErrorCode
  readonly cause?: unknown
  /** The file an import or export failed on (ERR_CORRUPT_VALUE, ERR_IO). */
  readonly file?: string
  /** What did not read back as written (ERR_VERIFY_FAILED). */
  readonly mismatches?: Array<{ type: string; id: string; problem: 'missing' | 'different' | 'unexpected' }>
}

/** `{ [type]: { [id]: value | null } }`; null or undefined deletes the record. */
export type KeyData = { [type: string]: { [id: string]: unknown | null | undefined } | undefined }

/** The key store Baileys' makeWASocket wraps with its own transactions. */
export interface SignalKeyStore {
  get(type: string, ids: string[]): Promise<{ [id: string]: any }>
  set(data: KeyData): Promise<void>
  clear(): Promise<void>
  /** Every id of one type (forward compatible with Baileys' migrateAuthState). */
  listIds(type: string): AsyncIterable<string>
  /** Every [id, value] of one type. */
  list(type: string): AsyncIterable<[string, any]>
}

/** Baileys' AuthenticationState, structurally. */
export interface AuthenticationState {
  creds: any
  keys: SignalKeyStore
}

export interface RedisOptions {
  /**
   * `redis://`, `rediss://`, `redis-cluster://host:port?node=host:port`, `redis-sentinel://…`
   * (TLS: `rediss-cluster://`, `rediss-sentinel://`); any other scheme is ERR_CONFIG. A sentinel
   * URL's `user:pass` authenticates to the servers, and to the sentinels unless
   * `&sentinelPassword=…` (and `&sentinelUsername=…`) give them credentials of their own.
   */
  url?: string
  host?: string
  port?: number
  username?: string
  password?: string
  db?: number
  tls?: boolean
  /** Prefix of every key (default `wa`). */
  keyPrefix?: string
  /** Deadline of one command in ms (default 5000). */
  timeoutMs?: number
}

export interface SqlOptions {
  /** `postgres://…`, `mysql://…`, `mariadb://…`, `sqlite://path`, `sqlite::memory:`. */
  url: string
  /** Connections to the server at most, an integer >= 1 (default 10): the pool and, on PostgreSQL and MySQL, the commit lanes' own (half, at most 4). */
  maxConnections?: number
  /** Deadline of one statement or transaction in ms (default 5000). */
  timeoutMs?: number
}

export interface StoreOptions {
  /** In-process cache in front of the tiers (default true). Assumes one writing process per session. */
  cache?: boolean
  /** Byte budget of the in-process cache (default 32 MiB). */
  cacheMaxBytes?: number
  /** The Baileys module, when it cannot be imported as `baileys` or `@whiskeysockets/baileys`. */
  baileys?: any
  /**
   * 'write-through' (default): a write resolves after the SQL commit and the Redis write.
   * 'write-behind': a write resolves after Redis (records marked dirty); SQL gets them in
   * batches every `flushIntervalMs`, on close(), or from any process after a crash. Needs both tiers.
   */
  durability?: 'write-through' | 'write-behind'
  /** Write-behind flush period in ms (default 1000). */
  flushIntervalMs?: number
  /**
   * Store values in the compact binary form (default true): Buffers and base64 as raw bytes, known
   * keys as one byte. false stores Baileys' JSON text as given. Either form reads both.
   */
  compactValues?: boolean
  /** Start a RedisMemoryManager with these options (or defaults for `true`); needs Redis. */
  memoryManager?: boolean | MemoryManagerOptions
  /**
   * Where background failures go (pino's shape: `warn(obj, msg)`, `error(obj, msg)`; `obj.code`
   * is stable). Default: warnings and errors to the console.
   */
  logger?: Logger
  /**
   * Session leases (default on): one owner per session across processes, writes fenced by the
   * lease epoch. `false`: no leases, the in-process cache trusted for every session.
   */
  lease?: false | LeaseOptions
  /**
   * Encryption at rest: every value (creds and every key record) sealed with AES-256-GCM before it
   * reaches Redis or SQL, bound to its session, type and id. Keys are 32 bytes (a Buffer, a
   * Uint8Array or base64 text). `previousKeys` still open values sealed under them (rotation; see
   * rekeySessions). A value that does not open rejects with ERR_DECRYPT.
   */
  encryption?: EncryptionOptions
}

/** A 32-byte AES-256 key: bytes, or their base64 text. */
export type EncryptionKey = Buffer | Uint8Array | string

export interface EncryptionOptions {
  /** The key every value is sealed under. */
  key: EncryptionKey
  /** Older keys: values sealed under them still open (never sealed again under them). */
  previousKeys?: EncryptionKey[]
}

/** Codes of the background reports (README, "What reaches the logger"), besides any backend `ERR_*`. */
export type LogCode =
  | 'WARN_REDIS_BEHIND'
  | 'WARN_RECORD_LOST'
  | 'WARN_SQL_BEHIND'
  | 'WARN_REDIS_POLICY_UNKNOWN'
  | 'WARN_TRACKING'
  | 'ERR_LEASE'
  | WaAuthStoreErrorCode

/** Where background failures go (pino's shape). */
export interface Logger {
  warn(obj: { code: LogCode; component: 'wa-auth-store' }, msg: string): void
  error?(obj: { code: LogCode; component: 'wa-auth-store' }, msg: string): void
}

export interface LeaseOptions {
  /** Lease lifetime in ms (default 30,000); renewed every third of it. */
  ttlMs?: number
  /** How long useBaileysAuthState waits for another holder to let go (default 0). */
  waitMs?: number
  /** Who holds it, as others are told (default `<hostname>:<pid>`). */
  holderId?: string
  /** Called once when the lease is lost (another process took over): close the socket. */
  onLeaseLost?: (err: WaAuthStoreError, info: { sessionId: string; epoch: number }) => void
}

/** A session lease held by this process. */
export interface SessionLease {
  readonly sessionId: string
  readonly epoch: number
  readonly holderId: string
  /** Held and not lost. */
  readonly held: boolean
  /** Resolves with the ERR_SESSION_LOCKED error once the lease is lost (never rejects). */
  readonly lost: Promise<WaAuthStoreError>
  /** Renews now; false when it was lost. */
  renew(): Promise<boolean>
  release(): Promise<void>
}

export interface LeaseInfo {
  holder: string
  epoch: number
  /** Epoch ms. */
  acquiredAt: number
  /** Epoch ms. */
  expiresAt: number
  /** Held by this store. */
  mine: boolean
}

export interface MemoryManagerOptions {
  /** Budget in bytes (default 1 GiB). */
  maxMemoryBytes?: number
  /** Percent of the budget above which eviction starts (default 80). */
  evictionThreshold?: number
  /** Percent eviction brings usage down to (default evictionThreshold - 10). */
  evictionTarget?: number
  /** Seconds without access before a session leaves Redis (default 7 days). */
  ttlInactivity?: number
  /** Milliseconds between checks, 1 to 2^31-1 (what a Node timer holds; default 5 minutes). */
  checkIntervalMs?: number
  /** 'server': INFO used_memory (default); 'store': MEMORY USAGE of this store's own keys. */
  measure?: 'server' | 'store'
  /** Where refusals and failed checks are reported (default console). */
  logger?: { warn(message: string): void }
}

export interface MemoryCheckReport {
  usedBefore: number
  usedAfter: number
  evictedIdle: number
  evictedForMemory: number
  /** Sessions due for eviction that hold data SQL lacks: never evicted. */
  refused: number
  refusedSessions: string[]
}

export interface MemoryStats {
  memoryUsage: {
    usedBytes: number
    maxBytes: number
    percentUsed: number
    measure: 'server' | 'store'
    /** `'server'`: `used_memory` of each server summed into usedBytes (every primary of a cluster, `host:port`); empty with `'store'`. */
    nodes: Array<{ node: string; usedBytes: number }>
  }
  totalSessions: number
  /** Most recently used first; shared by every process on this Redis. */
  sessionMetadata: Array<{ sessionId: string; lastAccess: number; accessCount: number; sizeBytes: number }>
  evictions: number
  evictionsAllProcesses: number
  refusedEvictions: number
  checks: number
  lastCheck: number | null
  lastReport: MemoryCheckReport | null
  lastError: string | null
  running: boolean
  /** Hits and misses per tier, for a manager started by a store's `memoryManager` option. */
  tiers?: StoreStats
}

/** Keeps Redis inside a budget by evicting least-recently-used sessions that SQL holds. */
export declare class RedisMemoryManager {
  constructor(redis: unknown, options?: MemoryManagerOptions)
  start(): Promise<void>
  stop(): Promise<void>
  check(): Promise<MemoryCheckReport>
  trackAccess(sessionId: string, estimatedSize?: number): Promise<void>
  getStats(): Promise<MemoryStats>
  /** Whether periodic checks are scheduled. */
  readonly running: boolean
}

export interface WriteOptions {
  /** Write the SQL tier too (default true). false writes Redis only (needs a Redis tier). */
  syncToDatabase?: boolean
  /** Seconds until the Redis keys this write touches expire; refused when Redis would hold the only copy. */
  ttl?: number
  /**
   * Write although another process holds the session's lease (takes a new epoch: fences that
   * holder). Waits out what is left of that lease first (at most its ttlMs): until then the holder
   * may still answer reads from its cache.
   */
  force?: boolean
}

export declare class BaileysRedisAdapter {
  constructor(urlOrOptions?: string | RedisOptions)
  connect(): Promise<void>
  disconnect(): Promise<void>
  readonly connected: boolean
  /** The native connection, for RedisMemoryManager; null before connect(). */
  readonly redis: unknown
}

export declare class BaileysOrmAdapter {
  constructor(urlOrOptions: string | SqlOptions)
  /** Connects and applies the schema migrations; idempotent. */
  connect(): Promise<void>
  disconnect(): Promise<void>
  readonly connected: boolean
  readonly dialect: 'postgres' | 'mysql' | 'sqlite' | null
}

export interface StoreStats {
  cache?: { hits: number; misses: number; entries: number; bytes: number; maxBytes: number }
  redisHits: number
  redisMisses: number
  sqlHits: number
  sqlMisses: number
  /** Sessions whose Redis copy was found behind SQL (restart, older snapshot, failover) and rebuilt. */
  redisRebuilds: number
  /** SQL group transactions, and the writes they carried. */
  sqlTransactions: number
  sqlWrites: number
  /** Background warnings and errors reported to the logger. */
  warnings: number
  errors: number
  /** Sessions with records not yet in SQL when the last flush pass started (write-behind). */
  flushDirtySessions: number
  /** When the last flush pass finished without a failure (epoch ms), if one did. */
  lastFlushMs?: number
  /** Records written to Redis only that Redis no longer held when a flush came for them. */
  recordsLost: number
  /** Sessions found with SQL behind Redis (SQL restored from an older backup): ERR_SQL_BEHIND. */
  sqlBehind: number
}

export declare class BaileysAuthStore {
  constructor(redisAdapter?: BaileysRedisAdapter | null, ormAdapter?: BaileysOrmAdapter | Persistence | null, options?: StoreOptions)
  /** null for an unknown session. */
  getCreds(sessionId: string): Promise<{ creds: any } | null>
  /** Writes creds and/or keys as one atomic unit. */
  saveCreds(sessionId: string, data: { creds?: object | null; keys?: KeyData | null }, options?: WriteOptions): Promise<void>
  /** Removes the session entirely: creds and every key. `force`: even if another process holds it. */
  deleteCreds(sessionId: string, options?: { force?: boolean }): Promise<void>
  /** Removes every key of the session, keeps its creds. `force`: even if another process holds it. */
  clearSession(sessionId: string, options?: { force?: boolean }): Promise<void>
  /** Takes the session's lease for this process (useBaileysAuthState does it itself). */
  acquireLease(sessionId: string, options?: LeaseOptions): Promise<SessionLease>
  /** Who holds the session's lease, or null. */
  leaseInfo(sessionId: string): Promise<LeaseInfo | null>
  /** Removes a session and the record of its deletion (tests, tools that own the deployment). */
  purgeSession(sessionId: string): Promise<void>
  /**
   * Accepts SQL's state of a session refused with `ERR_SQL_BEHIND` (SQL restored from a backup older
   * than what Redis applied): Redis drops its newer copy. Resolves with whether it was refused.
   */
  acceptSqlState(sessionId: string): Promise<boolean>
  /** Missing ids are left out of the answer. */
  getKeys(sessionId: string, type: string, ids: string[]): Promise<{ [id: string]: any }>
  setKeys(sessionId: string, data: KeyData, options?: WriteOptions): Promise<void>
  /** The seed's `'type-id'` strings (longest known type wins) or `{ type, id }`. */
  deleteKeys(sessionId: string, fields: Array<string | { type: string; id: string }>): Promise<void>
  /** Every key type the session has records of, in Redis or SQL (name order). */
  listTypes(sessionId: string): Promise<string[]>
  /** Every id of one key type in the session (union of Redis and SQL). */
  listIds(sessionId: string, type: string): Promise<string[]>
  /** What a session holds: creds present, and records and value bytes per key type. */
  describeSession(sessionId: string): Promise<SessionDescription>
  /**
   * Every session either tier knows, in id order. A deleted session may still be listed (SQL
   * keeps the record of its deletion); describeSession() tells what it holds.
   */
  listSessions(): Promise<Array<{ id: string; inSql: boolean; inRedis: boolean; version: number; updatedAt: number | null }>>
  /**
   * Re-seals every record of the session under the current encryption key, as one write in the
   * session's call order. Needs the `encryption` option.
   */
  rekeySession(sessionId: string, options?: { force?: boolean }): Promise<RekeySessionResult>
  /** Copies the session's records not yet in SQL (write-behind, syncToDatabase: false); returns how many. */
  flush(sessionId: string): Promise<number>
  /** Flushes every dirty session of any process (crash recovery); returns the records flushed. */
  flushAll(): Promise<number>
  /** The manager started by the `memoryManager` option, once the store is connected. */
  readonly memoryManager: RedisMemoryManager | null
  stats(): Promise<StoreStats>
  /** Prometheus text exposition format (README, Metrics); `{ format: 'json' }` for prom-client's structured form. */
  metrics(options?: { format?: 'text' }): Promise<string>
  metrics(options: { format: 'json' }): Promise<Array<{ name: string; help: string; type: string; values: Array<{ value: number; labels: Record<string, string | number>; metricName?: string }> }>>
  /** prom-client's Registry of this store's metrics (merge it into yours). */
  readonly metricsRegistry: import('prom-client').Registry
  close(): Promise<void>
}

export interface SessionDescription {
  creds: boolean
  credsBytes: number
  types: Array<{ type: string; count: number; bytes: number }>
}

export interface OpenAuthStoreOptions extends StoreOptions {
  /** Redis URL or options; default REDIS_URL, else none. null: no Redis. */
  redis?: string | RedisOptions | null
  /** Database URL or options; default DATABASE_URL, else `sqlite://./wa-auth-store.db`. null: no SQL. */
  database?: string | SqlOptions | null
  /** A persistence plug-in standing in for the database (then leave `database` out). */
  persistence?: Persistence
}

/** Opens a store; with no arguments the embedded default (SQLite file + in-process cache). */
export declare function openAuthStore(options?: OpenAuthStoreOptions): Promise<BaileysAuthStore>

export interface AuthStateOptions extends WriteOptions {
  baileys?: any
  /** This session's lease options over the store's (`false`: take none). */
  lease?: false | LeaseOptions
}

export interface BaileysAuthStateHandle {
  state: AuthenticationState
  /** Snapshots creds synchronously, then writes; overlapping calls land in call order. */
  saveCreds(): Promise<void>
  /** Removes the session's keys, keeps its creds. */
  clear(): Promise<void>
  /** Removes the session entirely. */
  delete(): Promise<void>
  /** Releases the lease; closes the store when this call opened it (the zero-config form). */
  close(): Promise<void>
  store: BaileysAuthStore
  /** The session's lease (null when leases are off). */
  lease: SessionLease | null
}

export declare function useBaileysAuthState(
  authStore: BaileysAuthStore,
  sessionId: string,
  options?: AuthStateOptions,
): Promise<BaileysAuthStateHandle>
/** Zero-config form: opens the embedded default (or REDIS_URL / DATABASE_URL). */
export declare function useBaileysAuthState(
  sessionId: string,
  options?: AuthStateOptions & OpenAuthStoreOptions,
): Promise<BaileysAuthStateHandle>

/** Baileys-compatible JSON helpers (reviver also reads the array and plain-object byte forms). */
export declare const BufferJSON: {
  replacer(key: string, value: any): any
  reviver(key: string, value: any): any
}
/** JSON in BufferJSON's format; refuses values nested deeper than 1,024 levels (they could not be read back). */
export declare function encodeValue(value: unknown): Buffer
export declare function decodeValue(type: string, bytes: Uint8Array, proto?: any): any

/** Options of the tools that write whole sessions (imports, copies). */
export interface ToolOptions {
  /** Replace a session the target holds with other state (default: refuse with ERR_SESSION_EXISTS). */
  overwrite?: boolean
  /** Read the session back and compare it record by record (ERR_VERIFY_FAILED on a difference). */
  verify?: boolean
  /** Read and check, write nothing. */
  dryRun?: boolean
  /** Called as work progresses: `done` of `total`. */
  onProgress?(done: number, total: number, item?: string): void
}

export interface MultiFileImportOptions extends ToolOptions {
  /** Key type names to recognise besides Baileys' own (ids kept as the file names spell them). */
  types?: string[]
}

export interface MultiFileImportResult {
  sessionId: string
  /** false when the store already held exactly this session (a re-import), or on dryRun. */
  written: boolean
  counts: { [type: string]: number }
  /** Key records plus one for the creds. */
  records: number
  /** Bytes of the files imported. */
  bytes: number
  /** Files Baileys never reads as auth state (temporary and backup files, other names). */
  skipped: Array<{ file: string; reason: string }>
  verified?: { records: number; mismatches: 0 }
}

export interface MultiFileExportOptions {
  /** Write into a non-empty folder: its Baileys `.json` files are replaced, other files stay. */
  overwrite?: boolean
  /** Read every file back and compare it with what was written. */
  verify?: boolean
  /** Read the session and check the folder, write nothing. */
  dryRun?: boolean
  onProgress?(done: number, total: number): void
}

export interface MultiFileExportResult {
  sessionId: string
  counts: { [type: string]: number }
  /** Files written, creds.json included. */
  files: number
  bytes: number
  /** Stale `.json` files removed (overwrite). */
  removed: number
  verified?: { files: number }
}

/** Reads a Baileys useMultiFileAuthState folder (6.x or 7.x) into the store as `sessionId`, in one atomic write: no new pairing. */
export declare function importMultiFileAuthState(store: BaileysAuthStore, folder: string, sessionId: string, options?: MultiFileImportOptions): Promise<MultiFileImportResult>

/** Writes a session out as a folder Baileys' own useMultiFileAuthState opens. */
export declare function exportMultiFileAuthState(store: BaileysAuthStore, sessionId: string, folder: string, options?: MultiFileExportOptions): Promise<MultiFileExportResult>

export interface CopyOptions extends ToolOptions {
  /** Sessions to copy (default: every session of the source). A named session the source lacks is ERR_SESSION_NOT_FOUND. */
  sessions?: string[]
}

export interface CopyResult {
  sessions: Array<{ sessionId: string; written: boolean; counts: { [type: string]: number }; records: number }>
  /** Sessions written. */
  written: number
  /** Sessions the target already held identically (a resumed copy). */
  skipped: number
  records: number
}

/**
 * Copies sessions store to store (e.g. the embedded SQLite file to Redis + PostgreSQL): each
 * session read whole, written as one atomic write and read back and compared (`verify: false`
 * skips that). Sessions the target already holds identically are skipped, so running it again
 * resumes a copy that stopped.
 */
export declare function copySessions(source: BaileysAuthStore, target: BaileysAuthStore, options?: CopyOptions): Promise<CopyResult>

export interface SessionVerification {
  id: string
  records: number
  /** Records that do not decode (or creds without the fields Baileys needs). */
  corrupt: Array<{ type: string; id: string; code: 'ERR_CORRUPT_VALUE' | 'ERR_DECRYPT'; problem: string }>
}

/** Decodes every record of the named sessions (default: all) and reports the corrupt ones. */
export declare function verifySessions(store: BaileysAuthStore, sessionIds?: string[], options?: { onProgress?(done: number, total: number): void }): Promise<SessionVerification[]>

export interface RekeySessionResult {
  /** The creds were re-sealed. */
  creds: boolean
  /** Records re-sealed per key type. */
  counts: { [type: string]: number }
  /** Records re-sealed, creds included. */
  records: number
}

export interface RekeyResult {
  /** Sessions that held records (deleted sessions are left out). */
  sessions: Array<{ sessionId: string } & RekeySessionResult>
  records: number
}

/**
 * Re-seals every record of every session (or those named) under the store's current encryption
 * key, each session as one write through the normal write path, so `previousKeys` can be dropped
 * afterwards. Running it again is harmless.
 */
export declare function rekeySessions(store: BaileysAuthStore, options?: { sessions?: string[]; onProgress?(done: number, total: number, sessionId: string): void }): Promise<RekeyResult>

/** What importSeedSessions repaired (what wa-auth-store 0.6 is known to corrupt). */
export type SeedRepairKind = 'base64-text-buffers' | 'buffer-arrays' | 'app-state-key-data' | 'stale-sessions'

export interface ImportSeedOptions extends ToolOptions {
  /** The 0.6 package's SQL database (its MikroORM connection URL). */
  fromDatabase?: string
  /** Its table (default `credentials_entity`, the README's CredentialsEntity). */
  fromTable?: string
  /** Its Redis (preferred per record where both hold one). */
  fromRedis?: string
  /** The ioredis `keyPrefix` the application set (default none). */
  fromRedisPrefix?: string
  /** Sessions to import (default: every session either source holds). */
  sessions?: string[]
  /** 'union' (default): records only SQL still holds are taken from SQL; 'redis': Redis's keys only where Redis has the session. */
  keySet?: 'union' | 'redis'
}

export interface ImportedSeedSession {
  sessionId: string
  source: 'redis' | 'sql' | 'both'
  written: boolean
  creds: boolean
  counts: { [type: string]: number }
  repaired: Partial<Record<SeedRepairKind, number>>
  records: { redis: number; sql: number }
  /** Records both copies held with different values after repair (Redis's won). */
  conflicts: number
  /** Records taken from SQL while Redis had the session. */
  sqlOnly: number
  /** Fields that name no known key type, left out. */
  skipped: string[]
  verified?: boolean
}

/** Imports sessions of wa-auth-store 0.6.x (its Redis keys and/or SQL table), repairing what it corrupted; one atomic write per session. */
export declare function importSeedSessions(store: BaileysAuthStore, options: ImportSeedOptions): Promise<{ sessions: ImportedSeedSession[]; total: number; written: number }>

/** Imports the one session of a Baileys useSqliteAuthState file (opened read-only). */
export declare function importBaileysSqlite(store: BaileysAuthStore, file: string, sessionId: string, options?: ToolOptions): Promise<{
  sessionId: string
  written: boolean
  creds: boolean
  counts: { [type: string]: number }
  repaired: Partial<Record<'base64-text-buffers' | 'buffer-arrays' | 'app-state-key-data', number>>
  verified?: boolean
}>

export type PruneRule = 'expired-tctoken' | 'superseded-pn-session' | 'superseded-pn-identity-key' | 'left-group-sender-key-memory'

export interface PruneOptions {
  /** Report records and bytes per key type, delete nothing. */
  dryRun?: boolean
  /** What "expired" is measured against (default now). */
  now?: Date | number
  /** The rules to run (default all). */
  rules?: PruneRule[]
  /** Group JIDs (…@g.us) the account left: their sender-key-memory is deleted. */
  groupsLeft?: string[]
  onProgress?: (done: number, total: number, sessionId: string) => void
}

export interface PruneCount {
  records: number
  bytes: number
}

export interface PruneSessionReport {
  sessionId: string
  kinds: { [type: string]: PruneCount }
  records: number
  bytes: number
  pruned: boolean
  /** A session a running bot holds is left alone. */
  skipped?: { code: 'ERR_SESSION_LOCKED'; reason: string }
}

export interface PruneResult {
  dryRun: boolean
  now: number
  sessions: PruneSessionReport[]
  totals: { sessions: number; pruned: number; skipped: number; records: number; bytes: number; kinds: { [type: string]: PruneCount } }
}

export declare const PRUNE_RULES: readonly PruneRule[]

/** Deletes state Baileys provably never reads again (README, Pruning); one atomic write per session, under its lease. */
export declare function prune(store: BaileysAuthStore, sessionId?: string | string[] | null, options?: PruneOptions): Promise<PruneResult>

/** A session's row as a Persistence stores it (README, "Persistence of your own"). */
export interface PersistenceSession {
  sessionId?: string
  creds: Buffer | null
  credsVersion: number
  version: number
  clearedVersion: number
  epoch: number
  createdAt: number
  updatedAt: number
}

/** A key row; `value: null` is a tombstone, to be kept. */
export interface PersistenceKey {
  sessionId?: string
  type: string
  id: string
  value: Buffer | null
  version: number
  updatedAt?: number
}

export interface PersistenceLease {
  sessionId?: string
  token: string
  holder: string
  epoch: number
  expiresAt: number
  acquiredAt: number
}

export interface PersistenceKeyListing {
  type: string
  id: string
  version: number
  /** Value bytes; null for a tombstone. */
  size: number | null
}

export interface PersistenceSessionListing {
  sessionId: string
  hasCreds: boolean
  version: number
  updatedAt: number
}

/** What a Persistence transaction offers: reads and writes of one session's rows. */
export interface PersistenceTransaction {
  getSession(): Promise<PersistenceSession | null>
  putSession(row: PersistenceSession): Promise<void>
  getKeys(refs: Array<{ type: string; id: string }>): Promise<PersistenceKey[]>
  putKeys(rows: PersistenceKey[]): Promise<void>
  deleteKeysBelow(version: number): Promise<void>
  getLease(): Promise<PersistenceLease | null>
  putLease(row: PersistenceLease): Promise<void>
  deleteLease(): Promise<void>
}

/**
 * A durable tier of your own (an ORM, a database the store does not speak). It only stores rows;
 * versions, tombstones, fencing and lease decisions are the store's. `transaction` must run `fn`
 * alone among the session's transactions (across processes too) and apply all or none of it.
 */
export interface Persistence {
  transaction<T>(sessionId: string, fn: (tx: PersistenceTransaction) => Promise<T>): Promise<T>
  getSession(sessionId: string): Promise<PersistenceSession | null>
  getKeys(sessionId: string, type: string, ids: string[]): Promise<PersistenceKey[]>
  listKeys(sessionId: string, type?: string): Promise<PersistenceKeyListing[]>
  listSessions(): Promise<PersistenceSessionListing[]>
  deleteSession(sessionId: string): Promise<void>
  close?(): Promise<void>
}

/** Turns a Persistence into what the core calls (one JSON request, one JSON answer); for adapter authors' tests. */
export declare class PersistenceDriver {
  constructor(persistence: Persistence, options?: { now?: () => number })
  handle(requestJson: string): Promise<string>
}

/** A Persistence in this process's memory: tests, demos, and the reference for writing your own. */
export interface MemoryPersistence extends Persistence {}
export declare class MemoryPersistence {
  /** Keeps the data: a new store can reopen the same object, like a restart. */
  close(): Promise<void>
}

/** A Persistence on MikroORM 6 (PostgreSQL): tables wa_orm_auth_{sessions,keys,leases}, the session row locked FOR UPDATE. */
export interface MikroOrmPersistence extends Persistence {}
export declare class MikroOrmPersistence {
  /** The EntitySchemas to add to your MikroORM `entities`. */
  static readonly entities: unknown[]
  static readonly schemas: { Session: unknown; Key: unknown; Lease: unknown }
  /** Creates the three tables if they are missing (or make them with your migrations). */
  static ensureSchema(orm: unknown): Promise<void>
  /** `closeOrm`: close the ORM when the store closes (default false: it is yours). */
  constructor(orm: unknown, options?: { closeOrm?: boolean })
  close(): Promise<void>
}
