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

export declare class WaAuthStoreError extends Error {
  readonly code: WaAuthStoreErrorCode
  readonly cause?: unknown
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
  /** `redis://`, `rediss://`, `redis-cluster://host:port?node=host:port`, `redis-sentinel://…`. */
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
  /** Pool size (default 10). */
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
  /** Milliseconds between checks (default 5 minutes). */
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
  memoryUsage: { usedBytes: number; maxBytes: number; percentUsed: number; measure: 'server' | 'store' }
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
}

export declare class BaileysAuthStore {
  constructor(redisAdapter?: BaileysRedisAdapter | null, ormAdapter?: BaileysOrmAdapter | null, options?: StoreOptions)
  /** null for an unknown session. */
  getCreds(sessionId: string): Promise<{ creds: any } | null>
  /** Writes creds and/or keys as one atomic unit. */
  saveCreds(sessionId: string, data: { creds?: any; keys?: KeyData }, options?: WriteOptions): Promise<void>
  /** Removes the session entirely: creds and every key. */
  deleteCreds(sessionId: string): Promise<void>
  /** Removes every key of the session, keeps its creds. */
  clearSession(sessionId: string): Promise<void>
  /** Missing ids are left out of the answer. */
  getKeys(sessionId: string, type: string, ids: string[]): Promise<{ [id: string]: any }>
  setKeys(sessionId: string, data: KeyData, options?: WriteOptions): Promise<void>
  /** The seed's `'type-id'` strings (longest known type wins) or `{ type, id }`. */
  deleteKeys(sessionId: string, fields: Array<string | { type: string; id: string }>): Promise<void>
  /** Every id of one key type in the session (union of Redis and SQL). */
  listIds(sessionId: string, type: string): Promise<string[]>
  /** What a session holds: creds present, and records and value bytes per key type. */
  describeSession(sessionId: string): Promise<SessionDescription>
  /** Copies the session's records not yet in SQL (write-behind, syncToDatabase: false); returns how many. */
  flush(sessionId: string): Promise<number>
  /** Flushes every dirty session of any process (crash recovery); returns the records flushed. */
  flushAll(): Promise<number>
  /** The manager started by the `memoryManager` option, once the store is connected. */
  readonly memoryManager: RedisMemoryManager | null
  stats(): Promise<StoreStats>
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
}

/** Opens a store; with no arguments the embedded default (SQLite file + in-process cache). */
export declare function openAuthStore(options?: OpenAuthStoreOptions): Promise<BaileysAuthStore>

export interface AuthStateOptions extends WriteOptions {
  baileys?: any
}

export interface BaileysAuthStateHandle {
  state: AuthenticationState
  /** Snapshots creds synchronously, then writes; overlapping calls land in call order. */
  saveCreds(): Promise<void>
  /** Removes the session's keys, keeps its creds. */
  clear(): Promise<void>
  /** Removes the session entirely. */
  delete(): Promise<void>
  /** Closes the store when this call opened it (the zero-config form); otherwise does nothing. */
  close(): Promise<void>
  store: BaileysAuthStore
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
export declare function encodeValue(value: unknown): Buffer
export declare function decodeValue(type: string, bytes: Buffer, proto?: any): any
