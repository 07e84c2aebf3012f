// Issue 4 suite: the same workloads through this store and through baselines, interleaved and
// repeated; medians, p50/p99 and ratios. BENCH_ROUNDS (default 3) repeats everything.
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import Redis from 'ioredis'
import pg from 'pg'
import { cpuPerOp, cpuSnapshot, creds, fmt, median, now, pairedSession, percentile, preKey, senderKey, signalSession } from './lib.mjs'
import { systemList } from './systems.mjs'

const run = promisify(execFile)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
const child = fileURLToPath(new URL('./cold-open-child.mjs', import.meta.url))
const rssChild = fileURLToPath(new URL('./rss-child.mjs', import.meta.url))
// sessions a process of its own writes and holds for the RSS figure
const RSS_SESSIONS = Number(process.env.BENCH_RSS_SESSIONS ?? 1000)
let uniq = 0
// every session the benchmark makes starts with this, so it can remove them all at its end
export const BENCH_PREFIX = `wa-bench-${process.pid}-`
const id = (w) => `${BENCH_PREFIX}${w}-${uniq++}`

const workloads = {
  async 'message loop (100 sessions x 50 messages, get + durable set)'(sys, ctx) {
    const sessions = 100
    const iters = Number(process.env.BENCH_LOOP_ITERS ?? 50)
    const jid = '5511999999999.0'
    const sids = Array.from({ length: sessions }, () => id('loop'))
    await Promise.all(sids.map((sid) => sys.set(sid, { session: { [jid]: signalSession(0) } })))
    const lat = []
    const cpu0 = cpuSnapshot(ctx.redisPid)
    const t0 = now()
    await Promise.all(
      sids.map(async (sid) => {
        for (let i = 0; i < iters; i++) {
          const t = now()
          const got = await sys.get(sid, 'session', [jid])
          if (!got[jid]) throw new Error('session vanished')
          await sys.set(sid, { session: { [jid]: signalSession(i + 1) } })
          lat.push(now() - t)
        }
      }),
    )
    const ms = now() - t0
    const cpu = cpuPerOp(cpu0, cpuSnapshot(ctx.redisPid), sessions * iters)
    return { value: (sessions * iters) / (ms / 1000), unit: 'ops/s', higher: true, p50: median(lat), p99: percentile(lat, 99), cpuNode: cpu.node, cpuRedis: cpu.redis, cpuPostgres: cpu.postgres, cpuTotal: cpu.total }
  },

  async 'group fan-out (get 200 sessions + sender key)'(sys, ctx) {
    const sid = id('fan')
    const ids = Array.from({ length: 200 }, (_, i) => `55119${String(i).padStart(8, '0')}.0`)
    const sessions = Object.fromEntries(ids.map((j, i) => [j, signalSession(i)]))
    const sk = '120363000000001@g.us::5511999::0'
    await sys.set(sid, { session: sessions, 'sender-key': { [sk]: senderKey(1) } })
    const lat = []
    const raw = []
    const bytesOnly = []
    const native = sys.store ? await sys.store._native() : null
    for (let i = 0; i < 40; i++) {
      const t = now()
      const got = await sys.get(sid, 'session', ids)
      await sys.get(sid, 'sender-key', [sk])
      lat.push(now() - t)
      if (Object.keys(got).length !== 200) throw new Error('fan-out lost records')
      if (native && ctx.redis) {
        const t2 = now()
        await ctx.redis.hmget(`wa:{s:${sid}}:k:session`, ...ids)
        raw.push(now() - t2)
        // the same 200 values through the store's async native call, as bytes: what the store
        // costs before the JavaScript JSON decode every system pays
        const t3 = now()
        await native.getKeys(sid, 'session', ids)
        bytesOnly.push(now() - t3)
      }
    }
    return {
      value: median(lat),
      unit: 'ms p50',
      p50: median(lat),
      p99: percentile(lat, 99),
      rawHmget: raw.length ? median(raw) : undefined,
      nativeBytes: bytesOnly.length ? median(bytesOnly) : undefined,
    }
  },

  // A group send as Baileys does it for a group of 200 devices: the 200 Signal sessions (to send
  // each the sender-key distribution message), the sender key, then the sender key written back
  // (encrypting advances its chain), durably. 10 accounts send at once, each its own session.
  async 'group send (10 accounts concurrently: get 200 sessions + sender key, durable set of the sender key)'(sys) {
    const accounts = 10
    const sends = Number(process.env.BENCH_GROUP_SENDS ?? 20)
    const ids = Array.from({ length: 200 }, (_, i) => `55119${String(i).padStart(8, '0')}.0`)
    const sk = '120363000000001@g.us::5511999::0'
    const sids = Array.from({ length: accounts }, () => id('group'))
    for (const sid of sids) {
      await sys.set(sid, { session: Object.fromEntries(ids.map((j, i) => [j, signalSession(i)])), 'sender-key': { [sk]: senderKey(1) } })
    }
    const lat = []
    const t0 = now()
    await Promise.all(
      sids.map(async (sid) => {
        for (let i = 0; i < sends; i++) {
          const t = now()
          const got = await sys.get(sid, 'session', ids)
          if (Object.keys(got).length !== 200) throw new Error('group send lost sessions')
          const key = await sys.get(sid, 'sender-key', [sk])
          if (!key[sk]) throw new Error('sender key vanished')
          await sys.set(sid, { 'sender-key': { [sk]: senderKey(i + 2) } })
          lat.push(now() - t)
        }
      }),
    )
    const ms = now() - t0
    return { value: (accounts * sends) / (ms / 1000), unit: 'sends/s', higher: true, p50: median(lat), p99: percentile(lat, 99) }
  },

  async 'pairing burst (812 pre-keys, 20 sessions)'(sys) {
    const lat = []
    for (let s = 0; s < 20; s++) {
      const keys = {}
      for (let k = 1; k <= 812; k++) keys[k] = preKey(k)
      const sid = id('pair')
      const t = now()
      await sys.set(sid, { 'pre-key': keys })
      lat.push(now() - t)
    }
    return { value: median(lat), unit: 'ms p50', p50: median(lat), p99: percentile(lat, 99) }
  },

  async 'cold open (2,000 keys, new process)'(sys, ctx, spec) {
    if (!spec.config) return { value: NaN, unit: 'ms p50', p50: NaN, p99: NaN } // nothing to reopen
    const sid = id('cold')
    const p = pairedSession(1, { preKeys: 800, sessions: 1200, senderKeys: 0 })
    await sys.saveCreds(sid, p.creds)
    await sys.set(sid, p.keys)
    const key = Object.keys(p.keys.session)[7]
    const times = []
    for (let i = 0; i < 5; i++) {
      const { stdout } = await run(process.execPath, [child, JSON.stringify({ config: spec.config ?? {}, sid, key })])
      times.push(JSON.parse(stdout).ms)
    }
    // the URL as users write it: no sslmode, so sqlx negotiates TLS (sslmode=prefer) on each connection
    let defaultUrl
    const plain = spec.config?.database?.startsWith('postgres') ? spec.config.database.replace(/[?&]sslmode=disable\b/, '') : null
    if (plain && plain !== spec.config.database) {
      const d = []
      for (let i = 0; i < 5; i++) {
        const { stdout } = await run(process.execPath, [child, JSON.stringify({ config: { ...spec.config, database: plain }, sid, key })])
        d.push(JSON.parse(stdout).ms)
      }
      defaultUrl = median(d)
    }
    let bare
    if (spec.config?.database?.startsWith('postgres')) {
      const b = []
      for (let i = 0; i < 5; i++) {
        const { stdout } = await run(process.execPath, [child, JSON.stringify({ config: { bareSelect: true, postgres: spec.config.database }, sid, key })])
        b.push(JSON.parse(stdout).ms)
      }
      bare = median(b)
    }
    return { value: median(times), unit: 'ms p50', p50: median(times), p99: percentile(times, 99), bareSelect: bare, defaultUrl }
  },

  async 'saveCreds (~2 KB creds, sequential)'(sys, ctx, spec) {
    const sid = id('creds')
    const c = creds(1)
    const n = 300
    const lat = []
    const t0 = now()
    for (let i = 0; i < n; i++) {
      c.nextPreKeyId = i
      const t = now()
      await sys.saveCreds(sid, c)
      lat.push(now() - t)
    }
    const out = { value: n / ((now() - t0) / 1000), unit: 'ops/s', higher: true, p50: median(lat), p99: percentile(lat, 99) }
    // the floor on the same servers and connection settings, in the same round: a bare
    // single-row upsert of the same bytes (pg, one connection), and that plus a bare HSET
    const url = spec.config?.database?.startsWith('postgres') ? spec.config.database : spec.config?.postgres
    if (url && (spec.ours || spec.community)) {
      const client = new pg.Client({ connectionString: url })
      await client.connect()
      const table = `bench_floor_${process.pid}`
      await client.query(`CREATE TABLE IF NOT EXISTS ${table} (id TEXT PRIMARY KEY, v BYTEA NOT NULL, n BIGINT NOT NULL)`)
      const bytes = Buffer.from(JSON.stringify(c))
      const up = []
      const both = []
      try {
        for (let i = 0; i < n; i++) {
          const t = now()
          await client.query({ name: 'floor', text: `INSERT INTO ${table} VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v, n = EXCLUDED.n`, values: [sid, bytes, i] })
          up.push(now() - t)
          if (ctx.redis) {
            await ctx.redis.hset(`community:${sid}:floor`, 'creds', bytes)
            both.push(now() - t)
          }
        }
      } finally {
        await client.query(`DROP TABLE ${table}`)
        await client.end()
        if (ctx.redis) await ctx.redis.del(`community:${sid}:floor`)
      }
      out.bareUpsert = median(up)
      if (both.length) out.bareUpsertHset = median(both)
    }
    return out
  },
}

async function footprint(list, ctx, print, withRss = false) {
  const n = Number(process.env.BENCH_FOOTPRINT_SESSIONS ?? 200)
  const rows = []
  for (const spec of list.filter((s) => (s.ours && s.config.redis && s.config.database?.startsWith('postgres') && !s.config.durability && !s.config.encryption) || s.community)) {
    const sys = await spec.open()
    const tag = `${BENCH_PREFIX}fp${uniq++}`
    for (let i = 0; i < n; i++) {
      const p = pairedSession(i)
      await sys.saveCreds(`${tag}-${i}`, p.creds)
      await sys.set(`${tag}-${i}`, p.keys)
    }
    // what a process of its own grows by, holding the sessions (bench/rss-child.mjs)
    const rss = withRss ? JSON.parse((await run(process.execPath, ['--expose-gc', rssChild, JSON.stringify({ config: spec.config, n: RSS_SESSIONS, tag: `${BENCH_PREFIX}rss${uniq++}` })])).stdout).grown : NaN
    let redisBytes = 0
    const pattern = spec.community ? `community:${tag}-*` : `wa:{s:${tag}-*`
    let cursor = '0'
    do {
      const [next, keys] = await ctx.redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000)
      cursor = next
      for (const k of keys) redisBytes += Number(await ctx.redis.memory('USAGE', k, 'SAMPLES', '0'))
    } while (cursor !== '0')
    const sql = spec.community
      ? await ctx.pg.query(`SELECT COALESCE(SUM(pg_column_size(t.*)), 0) AS b FROM bench_community_keys t WHERE session_id LIKE $1`, [`${tag}-%`])
      : await ctx.pg.query(
          `SELECT (SELECT COALESCE(SUM(pg_column_size(k.*)), 0) FROM wa_auth_keys k WHERE session_id LIKE $1) + (SELECT COALESCE(SUM(pg_column_size(s.*)), 0) FROM wa_auth_sessions s WHERE session_id LIKE $1) AS b`,
          [`${tag}-%`],
        )
    rows.push({ name: spec.name, redis: redisBytes / n, sql: Number(sql.rows[0].b) / n, rss })
    await sys.close()
  }
  return { n, rows }
}

export async function runSuite({ services, print = console.log }) {
  const list = await systemList(services)
  const ctx = { redis: services.redis ? new Redis(services.redis) : null, pg: services.postgres ? new pg.Pool({ connectionString: services.postgres }) : null }
  // the Redis server's pid, to count its CPU per write (a server on another machine reads as 0)
  ctx.redisPid = ctx.redis ? Number(/process_id:(\d+)/.exec(await ctx.redis.info('server'))?.[1]) || null : null
  const results = {}
  // BENCH_WORKLOADS=loop,cold: only the workloads whose names contain one of those words (default all)
  const only = process.env.BENCH_WORKLOADS?.split(',').map((w) => w.trim()).filter(Boolean)
  for (const [wl, fn] of Object.entries(workloads)) {
    if (only && !only.some((w) => wl.includes(w))) continue
    // systems that name their workloads run only those (the encrypted variants)
    const systems = list.filter((s) => !s.workloads || s.workloads.some((w) => wl.startsWith(w)))
    results[wl] = Object.fromEntries(systems.map((s) => [s.name, []]))
    const rounds = wl.startsWith('saveCreds') ? Math.max(ROUNDS, 5) : ROUNDS
    for (let r = 0; r < rounds; r++) {
      // interleaved: every system once per round, the order rotated each round
      const order = systems.map((_, i) => systems[(i + r) % systems.length])
      for (const spec of order) {
        const sys = await spec.open()
        try {
          results[wl][spec.name].push(await fn(sys, ctx, spec))
        } finally {
          await sys.close()
        }
      }
    }
    printWorkload(wl, results[wl], print, systems, rounds)
  }
  let fp
  if (ctx.redis && ctx.pg && !only) {
    fp = await footprint(list, ctx, print, true)
    print(`\n### footprint (${fp.n} sessions: 800 pre-keys, 50 sessions, 3 sender keys each)\n`)
    print(`| system | Redis bytes / session | SQL bytes / session | Node RSS growth holding ${RSS_SESSIONS.toLocaleString('en-US')} sessions (own process) |`)
    print('| --- | --- | --- | --- |')
    const base = fp.rows.find((r) => r.name.includes('community'))
    for (const r of fp.rows) {
      const ratio = (a, b) => (b ? ` (${fmt(a / b, 2)}x)` : '')
      print(`| ${r.name} | ${fmt(r.redis, 0)}${ratio(r.redis, base?.redis)} | ${fmt(r.sql, 0)}${ratio(r.sql, base?.sql)} | ${fmt(r.rss / 2 ** 20, 1)} MiB |`)
    }
  }
  if (ctx.redis && ctx.pg && !only) {
    // the same data in a Redis configured to keep hashes of up to 1024 fields as listpacks
    const { OwnRedis } = await import('./lib.mjs')
    const own = await OwnRedis.start()
    const tuned = new Redis(own.url)
    await tuned.config('SET', 'hash-max-listpack-entries', '1024')
    await tuned.config('SET', 'hash-max-listpack-value', '1024')
    const spec = list.find((s) => s.ours && s.config.redis && s.config.database?.startsWith('postgres') && !s.config.durability && !s.config.encryption)
    const comm = list.find((s) => s.community)
    const tunedList = [
      { ...spec, name: `${spec.name} (listpack hashes)`, open: async () => (await import('./systems.mjs')).oursFrom({ ...spec.config, redis: own.url }) },
      { ...comm, name: `${comm.name} (listpack hashes)`, open: () => import('./community-baseline.mjs').then((m) => m.CommunityStore.open({ redisUrl: own.url, pgUrl: spec.config.database })) },
    ]
    const fp2 = await footprint(tunedList, { ...ctx, redis: tuned }, print)
    print(`\nWith hash-max-listpack-entries 1024 / hash-max-listpack-value 1024 (Redis configuration, not ours):\n`)
    print('| system | Redis bytes / session | ratio |')
    print('| --- | --- | --- |')
    for (const r of fp2.rows) print(`| ${r.name} | ${fmt(r.redis, 0)} | ${fmt(r.redis / fp2.rows[1].redis, 2)}x |`)
    tuned.disconnect()
    await own.kill()
  }
  ctx.redis?.disconnect()
  await ctx.pg?.end()
  return { results, footprint: fp }
}

function printWorkload(wl, bySystem, print, systems, rounds) {
  const med = (runs, k) => median(runs.map((x) => x[k]).filter((v) => v !== undefined))
  const first = Object.values(bySystem)[0][0]
  const community = Object.entries(bySystem).find(([n]) => n.includes('community'))
  const floor = Object.entries(bySystem).find(([n]) => n.includes('in-memory'))
  const ratioTo = (v, base) => {
    if (!base) return ''
    const b = med(base[1], 'value')
    return fmt(first.higher ? v / b : b / v, 2) + 'x'
  }
  print(`\n### ${wl}\n`)
  print(`| system | ${first.unit} (median of ${rounds}) | p50 ms | p99 ms | vs community | vs in-memory | extra |`)
  print('| --- | --- | --- | --- | --- | --- | --- |')
  for (const [name, runs] of Object.entries(bySystem)) {
    const v = med(runs, 'value')
    const extra = []
    const raw = med(runs, 'rawHmget')
    if (Number.isFinite(raw)) extra.push(`raw HMGET ${fmt(raw, 2)} ms (${fmt(med(runs, 'p50') / raw, 2)}x)`)
    const nb = med(runs, 'nativeBytes')
    if (Number.isFinite(nb)) extra.push(`store, bytes without decode ${fmt(nb, 2)} ms (${fmt(nb / raw, 2)}x raw)`)
    const plain = systems.find((s) => s.name === name)?.plain
    if (plain && bySystem[plain]) {
      const p = med(bySystem[plain], 'value')
      const cost = first.higher ? p / v : v / p
      extra.push(`encryption costs ${fmt((cost - 1) * 100, 1)} % (${fmt(cost, 3)}x ${plain.replace('store: ', '')})`)
    }
    const bare = med(runs, 'bareSelect')
    if (Number.isFinite(bare)) extra.push(`bare SELECT ${fmt(bare, 2)} ms (${fmt(v / bare, 2)}x)`)
    if (runs.length >= 5) {
      const vs = runs.map((x) => x.value)
      extra.push(`spread of ${vs.length} runs ${fmt(Math.min(...vs), first.higher ? 0 : 2)}-${fmt(Math.max(...vs), first.higher ? 0 : 2)}`)
    }
    const bu = med(runs, 'bareUpsert')
    if (Number.isFinite(bu)) extra.push(`bare single-row upsert ${fmt(bu, 3)} ms (p50 ${fmt(med(runs, 'p50') / bu, 2)}x it)`)
    const buh = med(runs, 'bareUpsertHset')
    if (Number.isFinite(buh)) extra.push(`bare upsert + bare HSET ${fmt(buh, 3)} ms (p50 ${fmt(med(runs, 'p50') / buh, 2)}x it)`)
    const cpu = med(runs, 'cpuTotal')
    // (for this store on PostgreSQL: the schedstat figures count PostgreSQL's processes, not MariaDB's)
    const onPostgres = systems.find((s) => s.name === name)?.config?.database?.startsWith('postgres')
    if (Number.isFinite(cpu) && floor && onPostgres) {
      // the floor: the JSON every system pays (the in-memory baseline's CPU) plus this system's
      // own Redis and PostgreSQL CPU, from the same run
      const f = med(floor[1], 'cpuTotal') + med(runs, 'cpuRedis') + med(runs, 'cpuPostgres')
      extra.push(`floor ${fmt(f, 0)} µs (JSON ${fmt(med(floor[1], 'cpuTotal'), 0)} + servers), ${fmt(cpu / f, 2)}x the floor`)
    }
    if (Number.isFinite(cpu)) {
      const base = community ? med(community[1], 'cpuTotal') : NaN
      extra.push(`CPU per write ${fmt(cpu, 0)} µs (node ${fmt(med(runs, 'cpuNode'), 0)}, redis ${fmt(med(runs, 'cpuRedis'), 0)}, postgres ${fmt(med(runs, 'cpuPostgres'), 0)})${Number.isFinite(base) ? `, ${fmt(cpu / base, 2)}x community's` : ''}`)
    }
    const du = med(runs, 'defaultUrl')
    if (Number.isFinite(du)) extra.push(`URL without sslmode (TLS negotiated) ${fmt(du, 2)} ms${community ? ` (${fmt(med(community[1], 'value') / du, 2)}x community)` : ''}`)
    print(`| ${name} | ${fmt(v, first.higher ? 0 : 2)} | ${fmt(med(runs, 'p50'), 2)} | ${fmt(med(runs, 'p99'), 2)} | ${ratioTo(v, community)} | ${ratioTo(v, floor)} | ${extra.join('; ')} |`)
  }
}
