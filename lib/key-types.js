'use strict'
// The key types Baileys (7.x) writes, defined once: the seed's 'type-id' field names and
// useMultiFileAuthState's file names are parsed against this list, longest first (so
// 'sender-key-memory-…' is never read as a 'sender-key'). Other types are accepted everywhere;
// this list only says which names are known to be one type followed by an id.

const KNOWN_TYPES = Object.freeze(
  [
    'app-state-sync-version',
    'app-state-sync-key',
    'sender-key-memory',
    'identity-key',
    'lid-mapping',
    'device-list',
    'sender-key',
    'pre-key',
    'session',
    'tctoken',
  ].sort((a, b) => b.length - a.length),
)

module.exports = { KNOWN_TYPES }
