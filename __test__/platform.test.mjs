// What `require('wa-auth-store')` says on a machine it has no binary for, or whose binary did not
// install. Each case is a child Node whose platform, arch and libc a preload fakes
// (support/fake-platform.cjs): the real loaders (binding.js, lib/native.js) run unchanged.
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { root } from '../scripts/pack.mjs'

const run = promisify(execFile)
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
const preload = join(root, '__test__', 'support', 'fake-platform.cjs')

/** require('wa-auth-store') in a child faking `fake`: { ok } or the error's code, name, message and fields. */
async function requireAs(fake) {
  const env = { ...process.env, WA_FAKE_PLATFORM: fake.platform ?? '', WA_FAKE_ARCH: fake.arch ?? '', WA_FAKE_LIBC: fake.libc ?? '' }
  delete env.NAPI_RS_NATIVE_LIBRARY_PATH
  const script = `
    let out
    try {
      const w = require(${JSON.stringify(root)})
      out = { ok: typeof w.openAuthStore === 'function' }
    } catch (e) {
      out = { code: e.code, name: e.name, message: e.message, platform: e.platform, arch: e.arch, libc: e.libc, supported: e.supported, package: e.package, hasCause: e.cause !== undefined }
    }
    console.log(JSON.stringify(out))`
  const { stdout } = await run(process.execPath, ['--require', preload, '-e', script], { env, cwd: root, timeout: 60_000 })
  return JSON.parse(stdout)
}

describe('require() on a platform without a binary', () => {
  it('an OS with no binary: ERR_UNSUPPORTED_PLATFORM naming it, every supported target, and how to build from source', async () => {
    const r = await requireAs({ platform: 'freebsd', arch: 'x64' })
    expect(r.code).toBe('ERR_UNSUPPORTED_PLATFORM')
    expect(r.name).toBe('WaAuthStoreError')
    expect(r).toMatchObject({ platform: 'freebsd', arch: 'x64', libc: null, hasCause: true })
    expect(r.supported).toEqual(pkg.napi.targets)
    expect(r.message).toContain(`wa-auth-store ${pkg.version} has no prebuilt native binary for freebsd x64 (Node ${process.version})`)
    for (const t of pkg.napi.targets) expect(r.message).toContain(`(${t})`)
    expect(r.message).toMatch(/Linux x64 glibc \(x86_64-unknown-linux-gnu\)/)
    expect(r.message).toMatch(/Linux arm64 musl \(aarch64-unknown-linux-musl\)/)
    expect(r.message).toMatch(/macOS arm64 \(aarch64-apple-darwin\)/)
    expect(r.message).toMatch(/Windows x64 \(x86_64-pc-windows-msvc\)/)
    expect(r.message).toContain('install a Rust toolchain')
    expect(r.message).toContain('npm install && npm run build')
    expect(r.message).not.toMatch(/npm has a bug/)
  })

  it('Linux on an architecture with no binary names the libc too', async () => {
    const glibc = await requireAs({ platform: 'linux', arch: 'riscv64', libc: 'glibc' })
    expect(glibc.code).toBe('ERR_UNSUPPORTED_PLATFORM')
    expect(glibc).toMatchObject({ platform: 'linux', arch: 'riscv64', libc: 'glibc' })
    expect(glibc.message).toContain('no prebuilt native binary for linux riscv64 (glibc)')
    const musl = await requireAs({ platform: 'linux', arch: 'ppc64', libc: 'musl' })
    expect(musl.code).toBe('ERR_UNSUPPORTED_PLATFORM')
    expect(musl.message).toContain('no prebuilt native binary for linux ppc64 (musl)')
  })

  it('a supported platform whose optional package is missing: ERR_NATIVE_BINDING naming the package to install', async () => {
    const musl = await requireAs({ platform: 'linux', arch: 'arm64', libc: 'musl' })
    expect(musl.code).toBe('ERR_NATIVE_BINDING')
    expect(musl).toMatchObject({ platform: 'linux', arch: 'arm64', libc: 'musl', package: 'wa-auth-store-linux-arm64-musl', hasCause: true })
    expect(musl.message).toContain(`could not load its native binary for linux arm64 (musl), target aarch64-unknown-linux-musl`)
    expect(musl.message).toContain(`npm install wa-auth-store-linux-arm64-musl@${pkg.version}`)
    expect(musl.message).toContain("Cannot find module 'wa-auth-store-linux-arm64-musl'")
    expect(musl.message).not.toMatch(/wasi/)
    const mac = await requireAs({ platform: 'darwin', arch: 'arm64' })
    expect(mac).toMatchObject({ code: 'ERR_NATIVE_BINDING', platform: 'darwin', arch: 'arm64', libc: null, package: 'wa-auth-store-darwin-arm64' })
    const win = await requireAs({ platform: 'win32', arch: 'x64' })
    expect(win).toMatchObject({ code: 'ERR_NATIVE_BINDING', package: 'wa-auth-store-win32-x64-msvc' })
  })

  it('the package it names is the one napi create-npm-dirs made for that target', async () => {
    const { describeTarget } = await import('../lib/native.js').then((m) => m.default ?? m)
    for (const t of pkg.napi.targets) {
      const { name } = describeTarget(t)
      const platformPkg = JSON.parse(readFileSync(join(root, 'npm', name, 'package.json'), 'utf8'))
      expect(platformPkg.name).toBe(`${pkg.name}-${name}`)
    }
  })

  it('with nothing faked, the preload changes nothing: the host loads', async () => {
    expect(await requireAs({})).toEqual({ ok: true })
  })
})
