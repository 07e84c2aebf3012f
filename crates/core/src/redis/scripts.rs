//! The tier's Lua scripts, one file each under `scripts/`, loaded at build time. Each file opens
//! with a header stating its KEYS, ARGV, reply, and which keys' TTLs it sets or keeps.

use fred::types::scripts::Script;

/// Every script of the tier, ready for `EVALSHA` (loaded on first use).
pub(super) struct Scripts {
    pub write: Script,
    pub warm_keys: Script,
    pub warm_creds: Script,
    pub drop: Script,
    pub clean: Script,
    pub lease_take: Script,
    pub lease_renew: Script,
    pub lease_release: Script,
    pub lease_state: Script,
    pub raise: Script,
}

impl Scripts {
    pub fn new() -> Self {
        Scripts {
            write: Script::from_lua(include_str!("scripts/write.lua")),
            warm_keys: Script::from_lua(include_str!("scripts/warm_keys.lua")),
            warm_creds: Script::from_lua(include_str!("scripts/warm_creds.lua")),
            drop: Script::from_lua(include_str!("scripts/drop.lua")),
            clean: Script::from_lua(include_str!("scripts/clean.lua")),
            lease_take: Script::from_lua(include_str!("scripts/lease_take.lua")),
            lease_renew: Script::from_lua(include_str!("scripts/lease_renew.lua")),
            lease_release: Script::from_lua(include_str!("scripts/lease_release.lua")),
            lease_state: Script::from_lua(include_str!("scripts/lease_state.lua")),
            raise: Script::from_lua(include_str!("scripts/raise.lua")),
        }
    }
}
