// index.d.ts against Baileys' real types: a file that passes our state to makeWASocket must
// compile under --strict.
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { expect, it } from 'vitest'

const run = promisify(execFile)

it('compiles makeWASocket({ auth: state }) with --strict', async () => {
  const result = await run(process.execPath, ['node_modules/typescript/bin/tsc', '--noEmit', '-p', 'tsconfig.json'], { cwd: new URL('..', import.meta.url).pathname }).catch((e) => e)
  expect(result.stdout + (result.stderr ?? '')).toBe('')
  expect(result.code ?? 0).toBe(0)
})

it('loads with require() and with ESM named imports, by package name', async () => {
  const cwd = new URL('..', import.meta.url).pathname
  const cjs = await run(process.execPath, ['-e', "const w = require('wa-auth-store'); console.log([typeof w.useBaileysAuthState, typeof w.BaileysAuthStore, typeof w.RedisMemoryManager].join())"], { cwd })
  expect(cjs.stdout.trim()).toBe('function,function,function')
  const esm = await run(
    process.execPath,
    ['--input-type=module', '-e', "import { useBaileysAuthState, openAuthStore, WaAuthStoreError } from 'wa-auth-store'; console.log([typeof useBaileysAuthState, typeof openAuthStore, typeof WaAuthStoreError].join())"],
    { cwd },
  )
  expect(esm.stdout.trim()).toBe('function,function,function')
})
