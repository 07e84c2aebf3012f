'use strict'
// wa-auth-store: Baileys auth state in Redis and SQL, on a Rust core. This file only gathers the
// public surface; see lib/ for the facade and binding.js for the generated native loader.

// First: on a platform whose binary is missing, this throws the error that says why.
require('./lib/native.js')

const { BaileysRedisAdapter, BaileysOrmAdapter } = require('./lib/adapters.js')
const { useBaileysAuthState } = require('./lib/auth-state.js')
const { BufferJSON, encodeValue, decodeValue } = require('./lib/codec.js')
const { WaAuthStoreError } = require('./lib/errors.js')
const { RedisMemoryManager } = require('./lib/memory-manager.js')
const { BaileysAuthStore, openAuthStore } = require('./lib/store.js')
const { copySessions } = require('./lib/tools/copy.js')
const { verifySessions } = require('./lib/tools/inspect.js')
const { importMultiFileAuthState, exportMultiFileAuthState } = require('./lib/tools/multifile.js')
const { importSeedSessions } = require('./lib/tools/import-seed.js')
const { importBaileysSqlite } = require('./lib/tools/import-baileys-sqlite.js')
const { prune, RULES: PRUNE_RULES } = require('./lib/tools/prune.js')
const { PersistenceDriver } = require('./lib/persistence/driver.js')
const { MemoryPersistence } = require('./lib/persistence/memory.js')
const { MikroOrmPersistence } = require('./lib/persistence/mikro-orm.js')
const { rekeySessions } = require('./lib/tools/rekey.js')

module.exports.BaileysRedisAdapter = BaileysRedisAdapter
module.exports.BaileysOrmAdapter = BaileysOrmAdapter
module.exports.BaileysAuthStore = BaileysAuthStore
module.exports.openAuthStore = openAuthStore
module.exports.useBaileysAuthState = useBaileysAuthState
module.exports.BufferJSON = BufferJSON
module.exports.encodeValue = encodeValue
module.exports.decodeValue = decodeValue
module.exports.WaAuthStoreError = WaAuthStoreError
module.exports.RedisMemoryManager = RedisMemoryManager
module.exports.copySessions = copySessions
module.exports.verifySessions = verifySessions
module.exports.importMultiFileAuthState = importMultiFileAuthState
module.exports.exportMultiFileAuthState = exportMultiFileAuthState
module.exports.importSeedSessions = importSeedSessions
module.exports.importBaileysSqlite = importBaileysSqlite
module.exports.prune = prune
module.exports.PRUNE_RULES = PRUNE_RULES
module.exports.PersistenceDriver = PersistenceDriver
module.exports.MemoryPersistence = MemoryPersistence
module.exports.MikroOrmPersistence = MikroOrmPersistence
module.exports.rekeySessions = rekeySessions
