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
