#!/usr/bin/env node
// Packs wa-auth-store the way it is published, into a folder outside the repository:
//
// - the main package: `npm pack` of the repository (its `files`, its lifecycle scripts), then
//   `napi prepublish` run on an unpacked copy, which writes the `optionalDependencies` (one
//   `<name>-<platformArchABI>` per napi target, at the package's version; see README, Install)
//   into its package.json, and the result packed again. The repository's package.json does not
//   carry them: a dependency on a platform package that is not on the registry yet would break
//   `npm ci` in the repository.
// - the platform package of this host: a temporary copy of npm/<platformArchABI>/ with the built
//   addon copied in (debug info stripped when `strip` is there, as the release profile does), packed.
//
// Nothing is written inside the repository. Used by __test__/package.test.mjs; by hand:
//   node scripts/pack.mjs [dest]      (prints the tarballs and their file lists as JSON)
import { execFile } from 'node:child_process'
import { copyFile, cp, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

const run = promisify(execFile)
export const root = fileURLToPath(new URL('..', import.meta.url))
const require = createRequire(import.meta.url)

// What an npm started by `npm run` / `npx` passes down and a nested npm must not take for its own
// project (npm_config_local_prefix would point it back at this repository).
const INHERITED = /^npm_(package_|lifecycle_|command$|execpath$|node_execpath$|config_(local_prefix|prefix|global_prefix|npm_version|user_agent|yes)$)/i

/** process.env without what an outer npm run / npx set for this repository. */
export function cleanNpmEnv(extra = {}) {
  const env = {}
  for (const [k, v] of Object.entries(process.env)) if (!INHERITED.test(k)) env[k] = v
  return { ...env, ...extra }
}

/** Runs npm with `args` in `cwd`; rejects with npm's output in the message. */
export async function npm(args, cwd, { timeout = 300_000 } = {}) {
  try {
    return await run('npm', args, { cwd, env: cleanNpmEnv(), timeout, maxBuffer: 64 * 1024 * 1024 })
  } catch (e) {
    const err = new Error(`npm ${args.join(' ')} failed in ${cwd} (exit ${e.code}${e.signal ? `, ${e.signal}` : ''}):\n${e.stderr || ''}${e.stdout || ''}`.trim())
    err.npmOutput = `${e.stderr || ''}\n${e.stdout || ''}`
    throw err
  }
}

/** `npm pack --json` in `cwd` into `dest`: { tarball, files (paths), packageJson }. */
async function pack(cwd, dest, extra = []) {
  const { stdout } = await npm(['pack', '--json', '--pack-destination', dest, ...extra], cwd)
  // lifecycle scripts may print before the JSON document
  const at = stdout.startsWith('[') ? 0 : stdout.indexOf('\n[') + 1
  const [info] = JSON.parse(stdout.slice(at))
  return { tarball: join(dest, info.filename), files: info.files.map((f) => f.path).sort(), name: info.name, version: info.version }
}

async function stripOrCopy(src, dst) {
  try {
    await run('strip', ['--strip-debug', '-o', dst, src], { timeout: 120_000 })
    return 'stripped'
  } catch {
    await copyFile(src, dst)
    return 'copied'
  }
}

/**
 * Packs both packages into `dest` (created; default a new temporary folder).
 * Returns { dest, repoPack, main, platform }: `repoPack` is the plain `npm pack` of the repository,
 * `main` the published form (with optionalDependencies), `platform` the host's platform package.
 */
export async function packAll(dest) {
  dest = dest ? resolve(dest) : await mkdtemp(join(tmpdir(), 'wa-auth-store-pack-'))
  const work = join(dest, '.work')
  await mkdir(join(work, 'raw'), { recursive: true })
  const { readNapiConfig } = require('@napi-rs/cli')
  const napi = await readNapiConfig(join(root, 'package.json'))

  // 1. the main package as `npm pack` makes it from the repository
  const repoPack = await pack(root, join(work, 'raw'))

  // 2. what `napi prepublish` makes of it at publish time (`npm publish` runs it as prepublishOnly):
  // it writes `optionalDependencies` on every target's package into package.json. It runs here
  // for real, on a copy: the unpacked tarball with the repository's npm/ folders beside it. It
  // checks that every platform package is complete first, so each gets its addon: the one built
  // here when there is one (wa-auth-store.<abi>.node at the top of the repository), else a
  // stand-in file, which nothing packs (--skip-optional-publish: it publishes nothing).
  const staged = join(work, 'main')
  await mkdir(staged, { recursive: true })
  await run('tar', ['-xzf', repoPack.tarball, '-C', staged])
  const stagedPkg = join(staged, 'package')
  await cp(join(root, 'npm'), join(stagedPkg, 'npm'), { recursive: true })
  for (const t of napi.targets) {
    const file = `${napi.binaryName}.${t.platformArchABI}.node`
    const built = join(root, file)
    const into = join(stagedPkg, 'npm', t.platformArchABI, file)
    if (await stat(built).catch(() => null)) await copyFile(built, into)
    else await writeFile(into, 'stand-in: not built on this machine, never packed\n')
  }
  const napiCli = join(root, 'node_modules', '@napi-rs', 'cli', 'dist', 'cli.js')
  await run(process.execPath, [napiCli, 'prepublish', '-t', 'npm', '--skip-optional-publish', '--no-gh-release'], {
    cwd: stagedPkg,
    env: cleanNpmEnv(),
    timeout: 300_000,
    maxBuffer: 64 * 1024 * 1024,
  }).catch((e) => {
    throw new Error(`napi prepublish failed in ${stagedPkg}:\n${e.stderr || ''}${e.stdout || ''}`)
  })
  await rm(join(stagedPkg, 'npm'), { recursive: true, force: true })
  const manifest = JSON.parse(await readFile(join(stagedPkg, 'package.json'), 'utf8'))
  // scripts already ran in step 1; the staged copy has no node_modules to run them with
  const main = { ...(await pack(stagedPkg, dest, ['--ignore-scripts'])), packageJson: manifest }

  // 3. the platform package of this host, with the built addon
  const libc = process.platform === 'linux' ? (process.report.getReport().header.glibcVersionRuntime ? '-gnu' : '-musl') : ''
  const abi = `${process.platform}-${process.arch}${libc}${process.platform === 'win32' ? '-msvc' : ''}`
  const target = napi.targets.find((t) => t.platformArchABI === abi)
  if (!target) throw new Error(`no napi target for this host (${abi}); targets: ${napi.targets.map((t) => t.platformArchABI).join(', ')}`)
  const nodeFile = `${napi.binaryName}.${abi}.node`
  const addon = join(root, nodeFile)
  await stat(addon).catch(() => {
    throw new Error(`${nodeFile} is not built (npm run build or npm run build:debug)`)
  })
  const platformDir = join(work, abi)
  await cp(join(root, 'npm', abi), platformDir, { recursive: true })
  const addonCopy = await stripOrCopy(addon, join(platformDir, nodeFile))
  const platformPkg = JSON.parse(await readFile(join(platformDir, 'package.json'), 'utf8'))
  const platform = { ...(await pack(platformDir, dest)), packageJson: platformPkg, nodeFile, addonCopy }

  await rm(work, { recursive: true, force: true })
  delete repoPack.tarball // was in the work folder
  return { dest, repoPack, main, platform }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const out = await packAll(process.argv[2])
  console.log(JSON.stringify(out, null, 2))
}
