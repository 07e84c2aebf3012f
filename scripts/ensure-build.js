#!/usr/bin/env node
'use strict'
// Builds the native addon when it is missing or older than the Rust sources, so that
// `npm run demo`, `npm test` and `npm run bench` work on a fresh clone with nothing else to do.
// WA_AUTH_STORE_PROFILE=debug builds a debug addon (faster to build, slower to run).

const { execFileSync } = require('node:child_process')
const { existsSync, readdirSync, statSync, readFileSync, writeFileSync } = require('node:fs')
const { join } = require('node:path')

const root = join(__dirname, '..')
const profile = process.env.WA_AUTH_STORE_PROFILE === 'debug' ? 'debug' : 'release'
const stamp = join(root, 'target', '.wa-auth-store-build')

function newest(path) {
  const st = statSync(path)
  if (!st.isDirectory()) return st.mtimeMs
  return readdirSync(path).reduce((m, name) => Math.max(m, newest(join(path, name))), st.mtimeMs)
}

/** This host's addon (wa-auth-store.<platform>-<arch>[-<abi>].node), if built; cross builds of other targets may sit beside it. */
function addonPath() {
  const libc = process.platform === 'linux' ? (process.report.getReport().header.glibcVersionRuntime ? '-gnu' : '-musl') : ''
  const name = `wa-auth-store.${process.platform}-${process.arch}${libc}${process.platform === 'win32' ? '-msvc' : ''}.node`
  return readdirSync(root).includes(name) ? join(root, name) : null
}

const sources = ['src', 'crates', 'Cargo.toml', 'Cargo.lock', 'build.rs'].map((p) => join(root, p)).filter(existsSync)
const addon = addonPath()
const built = addon ? statSync(addon).mtimeMs : 0
const builtProfile = existsSync(stamp) ? readFileSync(stamp, 'utf8').trim() : null
const stale = !addon || sources.some((p) => newest(p) > built) || (builtProfile && builtProfile !== profile && profile === 'release')

if (!stale) process.exit(0)
console.error(`wa-auth-store: building the native addon (${profile}); the first build takes a few minutes…`)
const args = ['napi', 'build', '--platform', '--js', 'binding.js', '--dts', 'binding.d.ts']
if (profile === 'release') args.push('--release')
execFileSync(process.platform === 'win32' ? 'npx.cmd' : 'npx', args, { cwd: root, stdio: 'inherit' })
writeFileSync(stamp, profile)
