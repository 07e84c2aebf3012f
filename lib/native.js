'use strict'
// Loads the native addon through binding.js (the loader `napi build` generates). When that fails,
// the generated error blames npm and names no platform; this one says which of two things
// happened, as a WaAuthStoreError with a code:
//
// - ERR_UNSUPPORTED_PLATFORM: no prebuilt binary exists for this platform, architecture and libc
//   (the message lists the ones that do and how to build from source);
// - ERR_NATIVE_BINDING: a binary exists for it, but it did not load (its optional package was not
//   installed, or the .node refused to load: the loader's own errors are in the message and in
//   `cause`).
//
// index.js requires this file before anything that requires binding.js: when the load fails, this
// error is what `require('wa-auth-store')` throws.

const { readFileSync } = require('node:fs')
const { WaAuthStoreError } = require('./errors.js')

/** `x86_64-unknown-linux-gnu` as napi names its packages and files: platform, arch, abi. */
function describeTarget(triple) {
  const [cpu, , os, abi] = triple.replace('-apple-darwin', '-apple-darwin-').split('-')
  const arch = { x86_64: 'x64', aarch64: 'arm64', i686: 'ia32', armv7: 'arm', riscv64gc: 'riscv64' }[cpu] ?? cpu
  const platform = { darwin: 'darwin', windows: 'win32', linux: 'linux', freebsd: 'freebsd' }[os] ?? os
  const libc = platform === 'linux' ? ({ gnu: 'glibc', musl: 'musl' }[abi] ?? abi) : null
  const name = [platform, arch, platform === 'linux' || platform === 'win32' ? abi : null].filter(Boolean).join('-')
  return { triple, platform, arch, libc, name }
}

/**
 * Which libc this Linux process runs on, found as binding.js finds it (so the two agree): the
 * text of /usr/bin/ldd, else the process report (glibc reports its version; musl shows up as a
 * loaded ld-musl / libc.musl object).
 */
function linuxLibc() {
  try {
    return readFileSync('/usr/bin/ldd', 'utf8').includes('musl') ? 'musl' : 'glibc'
  } catch {
    // no ldd: ask the process report
  }
  try {
    const report = process.report.getReport()
    if (report.header?.glibcVersionRuntime) return 'glibc'
    if ((report.sharedObjects ?? []).some((f) => f.includes('libc.musl-') || f.includes('ld-musl-'))) return 'musl'
  } catch {
    // no report either
  }
  return 'glibc'
}

/** This process's platform, arch and (on Linux) libc, as the message names them. */
function host() {
  const libc = process.platform === 'linux' ? linuxLibc() : null
  return { platform: process.platform, arch: process.arch, libc }
}

function hostName(h) {
  return `${h.platform} ${h.arch}${h.libc ? ` (${h.libc})` : ''}`
}

function targetLabel(t) {
  const os = { darwin: 'macOS', win32: 'Windows', linux: 'Linux' }[t.platform] ?? t.platform
  return `${os} ${t.arch}${t.libc ? ` ${t.libc}` : ''} (${t.triple})`
}

/** The error for a failed load of binding.js; `loadError` is what binding.js threw. */
function nativeLoadError(loadError, { pkg = require('../package.json'), h = host() } = {}) {
  const targets = (pkg.napi?.targets ?? []).map(describeTarget)
  const mine = targets.find((t) => t.platform === h.platform && t.arch === h.arch && t.libc === h.libc)
  const causes = (function flatten(e, depth = 0) {
    if (!e || depth > 20) return []
    return [e, ...flatten(e.cause, depth + 1)]
  })(loadError?.cause ?? null)
  // the generated loader also tries a WebAssembly build, which this package does not ship
  const causeLines = causes
    .map((e) => String(e?.message ?? e).split('\n')[0])
    .filter((line) => !/wasi/.test(line))
    .map((line) => `  - ${line}`)
    .join('\n')
  const fromSource =
    'To build it from source: install a Rust toolchain (https://rustup.rs), then in a clone of the ' +
    `${pkg.name} repository run \`npm install && npm run build\`, and point NAPI_RS_NATIVE_LIBRARY_PATH at the built ` +
    `${pkg.napi?.binaryName ?? pkg.name}.*.node (or use the clone itself as the dependency).`
  if (!mine) {
    const err = new WaAuthStoreError(
      'ERR_UNSUPPORTED_PLATFORM',
      `${pkg.name} ${pkg.version} has no prebuilt native binary for ${hostName(h)} (Node ${process.version}).\n` +
        `Prebuilt binaries exist for:\n${targets.map((t) => `  - ${targetLabel(t)}`).join('\n')}\n${fromSource}`,
      { cause: loadError },
    )
    Object.assign(err, { platform: h.platform, arch: h.arch, libc: h.libc, supported: targets.map((t) => t.triple) })
    return err
  }
  const platformPackage = `${pkg.name}-${mine.name}`
  const err = new WaAuthStoreError(
    'ERR_NATIVE_BINDING',
    `${pkg.name} ${pkg.version} could not load its native binary for ${hostName(h)}, target ${mine.triple}, ` +
      `which comes in the optional dependency ${platformPackage}@${pkg.version}.\n` +
      'It is missing when npm skipped optional dependencies (--omit=optional, --no-optional) or ' +
      'installed from a lockfile written on another platform (npm/cli#4828): reinstall with optional ' +
      `dependencies, or add it: \`npm install ${platformPackage}@${pkg.version}\`.\n` +
      `What the loader tried:\n${causeLines || '  (nothing reported)'}\n${fromSource}`,
    { cause: loadError },
  )
  Object.assign(err, { platform: h.platform, arch: h.arch, libc: h.libc, package: platformPackage })
  return err
}

let binding
try {
  binding = require('../binding.js')
} catch (e) {
  throw nativeLoadError(e)
}

module.exports = { binding, nativeLoadError, describeTarget }
