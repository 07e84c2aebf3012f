#!/usr/bin/env node
// Checks built Linux addons the way a loader on an older or smaller system would see them:
//
//   node scripts/check-linux-binary.mjs [--glibc 2.17] [file.node ...]
//
// (default: every wa-auth-store.linux-*.node at the top of the repository). For each file, from
// `objdump -p` / `objdump -T` (binutils; the arch's own `<triple>-objdump` when the host's cannot
// read it):
// - a gnu build needs no GLIBC_ symbol version above the floor (2.17: what `npm run build --
//   --target …-linux-gnu` links against), and no library beyond glibc's own and libgcc_s;
// - a musl build needs only `libc.so` (musl's libc, which is also its loader) and no GLIBC_ symbol;
// - both route connect(2) through the TCP_NODELAY wrap (crates/core/src/sql/nodelay.rs, linked with
//   `--wrap=connect` by build.rs): `__wrap_connect` is defined and `connect` is not imported.
// Prints one line per file and exits 1 when any check fails.
import { execFileSync } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { basename, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const GLIBC_LIBS = /^(libc\.so\.6|libm\.so\.6|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|libgcc_s\.so\.1|ld-linux[-\w.]*\.so\.\d)$/

const cmp = (a, b) => {
  const x = a.split('.').map(Number)
  const y = b.split('.').map(Number)
  for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0)
  return 0
}

function objdump(flag, file, arch) {
  const tools = ['objdump', `${arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu-objdump`]
  let last
  for (const tool of tools) {
    try {
      return execFileSync(tool, [flag, file], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, stdio: ['ignore', 'pipe', 'pipe'] })
    } catch (e) {
      last = e
    }
  }
  throw new Error(`objdump ${flag} ${file} failed: ${last.stderr || last.message}`)
}

/** The findings for one addon: { file, abi, needed, maxGlibc, problems: [] }. */
export function checkLinuxBinary(file, { glibcFloor = '2.17' } = {}) {
  const m = /\.linux-(x64|arm64)-(gnu|musl)\.node$/.exec(basename(file))
  if (!m) throw new Error(`${file}: not a wa-auth-store.linux-<arch>-<gnu|musl>.node`)
  const [, arch, abi] = m
  const headers = objdump('-p', file, arch)
  const symbols = objdump('-T', file, arch)
  const problems = []
  const format = /file format (\S+)/.exec(headers)?.[1]
  const machine = { x64: /x86-64/, arm64: /aarch64|little/ }[arch]
  if (!format || !machine.test(format)) problems.push(`file format ${format}, expected ${arch}`)
  const needed = [...headers.matchAll(/^\s*NEEDED\s+(\S+)/gm)].map((x) => x[1])
  const versions = [...new Set([...symbols.matchAll(/\bGLIBC_(\d+(?:\.\d+)+)\b/g)].map((x) => x[1]))].sort(cmp)
  const maxGlibc = versions.at(-1) ?? null
  if (abi === 'gnu') {
    const above = versions.filter((v) => cmp(v, glibcFloor) > 0)
    if (above.length) {
      const names = symbols
        .split('\n')
        .filter((l) => above.some((v) => l.includes(`GLIBC_${v} `) || l.includes(`(GLIBC_${v})`)))
        .map((l) => l.trim().split(/\s+/).slice(-2).join(' '))
      problems.push(`needs glibc ${maxGlibc} > ${glibcFloor}: ${names.join(', ')}`)
    }
    const extra = needed.filter((n) => !GLIBC_LIBS.test(n))
    if (extra.length) problems.push(`needs libraries beyond glibc: ${extra.join(', ')}`)
  } else {
    if (needed.join(' ') !== 'libc.so') problems.push(`needs ${needed.join(', ') || 'nothing'}, expected only musl's libc.so`)
    if (versions.length) problems.push(`has glibc symbol versions: ${versions.join(', ')}`)
  }
  const dyn = symbols.split('\n').map((l) => l.trim().split(/\s+/))
  const defined = (name) => dyn.some((f) => f.at(-1) === name && !f.includes('*UND*'))
  const imported = (name) => dyn.some((f) => f.at(-1) === name && f.includes('*UND*'))
  if (!defined('__wrap_connect')) problems.push('__wrap_connect is not defined: not linked with --wrap=connect')
  if (imported('connect')) problems.push('imports connect: some calls bypass the TCP_NODELAY wrap')
  return { file, arch, abi, needed, maxGlibc, problems }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = process.argv.slice(2)
  let glibcFloor = '2.17'
  const at = args.indexOf('--glibc')
  if (at !== -1) [, glibcFloor] = args.splice(at, 2)
  const files = args.length ? args : readdirSync(root).filter((f) => /^wa-auth-store\.linux-.*\.node$/.test(f)).map((f) => join(root, f))
  if (!files.length) {
    console.error('no wa-auth-store.linux-*.node to check (npm run build -- --target <triple>)')
    process.exit(1)
  }
  let failed = false
  for (const file of files) {
    const r = checkLinuxBinary(file, { glibcFloor })
    const libc = r.abi === 'gnu' ? `GLIBC_ max ${r.maxGlibc} (floor ${glibcFloor})` : 'no GLIBC_ symbols'
    console.log(`${r.problems.length ? 'FAIL' : 'ok  '} ${basename(file)}: needs ${r.needed.join(' ')}; ${libc}; connect wrapped${r.problems.length ? `\n     - ${r.problems.join('\n     - ')}` : ''}`)
    failed ||= r.problems.length > 0
  }
  process.exit(failed ? 1 : 0)
}
