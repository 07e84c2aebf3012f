// Run in a fresh process by the suite (node --expose-gc): opens one system, writes `n` paired
// sessions the way a bot holding them would, and prints what the process's RSS grew by, after a
// full GC before and after: the store's cache (bounded by its budget, 32 MiB by default) and what
// the allocators keep, or the community store's ioredis and pg.
import { CommunityStore } from './community-baseline.mjs'
import { pairedSession } from './lib.mjs'
import { oursFrom } from './systems.mjs'

const { config, n, tag } = JSON.parse(process.argv[2])
const sys = config.community ? await CommunityStore.open({ redisUrl: config.redis, pgUrl: config.postgres }) : await oursFrom(config)
const rss = () => {
  globalThis.gc()
  globalThis.gc()
  return process.memoryUsage().rss
}
const before = rss()
for (let i = 0; i < n; i++) {
  const p = pairedSession(i)
  await sys.saveCreds(`${tag}-${i}`, p.creds)
  await sys.set(`${tag}-${i}`, p.keys)
}
const after = rss()
await sys.close()
process.stdout.write(JSON.stringify({ grown: after - before }))
