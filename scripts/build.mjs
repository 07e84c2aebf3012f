#!/usr/bin/env node
// `npm run build [-- <napi build options>]`: the release addon, through `napi build --platform`
// (which also regenerates binding.js / binding.d.ts). Options pass through to napi unchanged, with
// one addition for Linux targets:
//
//   npm run build                                           the host's addon, with the host's cargo
//   npm run build -- --target aarch64-unknown-linux-gnu     cross-compiled with zig (napi's -x)
//
// A `--target` naming a Linux triple (gnu or musl, any arch, this host's own included) builds
// through napi's `--cross-compile`, i.e. `cargo zigbuild`, so no cross gcc or musl toolchain is
// needed (`pip install ziglang cargo-zigbuild`). A gnu triple without a version suffix gets
// `.2.17`: zig links it against glibc 2.17's symbols, so the binary loads on any glibc >= 2.17
// (scripts/check-linux-binary.mjs checks it). Spell a suffix yourself (`…-linux-gnu.2.28`) to
// choose another floor, or pass `--use-napi-cross` / `--use-cross` / `-x` to choose the way
// yourself. Other targets (macOS, Windows) build natively on their own OS, as the release workflow
// does (.github/workflows/release.yml).
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

export const GLIBC_FLOOR = '2.17'
const CROSS_FLAGS = new Set(['-x', '--cross-compile', '--use-cross', '--use-napi-cross'])

/** The napi build arguments for `args` (what follows `npm run build --`). */
export function napiBuildArgs(args) {
  const out = ['build', '--platform', '--release', '--js', 'binding.js', '--dts', 'binding.d.ts']
  const rest = [...args]
  let target = null
  for (let i = 0; i < rest.length && !target; i++) {
    if (rest[i] === '--target' || rest[i] === '-t') target = { at: i + 1, value: rest[i + 1] }
    else if (rest[i].startsWith('--target=')) {
      rest.splice(i, 1, '--target', rest[i].slice('--target='.length))
      target = { at: i + 1, value: rest[i + 1] }
    }
  }
  if (target && target.value && /-linux-(gnu|musl)/.test(target.value) && !rest.some((a) => CROSS_FLAGS.has(a))) {
    if (/-linux-gnu[a-z]*$/.test(target.value)) rest[target.at] = `${target.value}.${GLIBC_FLOOR}`
    rest.push('--cross-compile')
  }
  return [...out, ...rest]
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = napiBuildArgs(process.argv.slice(2))
  console.error(`> napi ${args.join(' ')}`)
  const napi = fileURLToPath(new URL('../node_modules/@napi-rs/cli/dist/cli.js', import.meta.url))
  const r = spawnSync(process.execPath, [napi, ...args], { stdio: 'inherit' })
  if (r.error) throw r.error
  process.exit(r.status ?? 1)
}
