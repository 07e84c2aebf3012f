// store.metrics(): the Prometheus text exposition format, read back with a parser of its own
// (@platformatic/promotel's, from npm), and the figures move with the workload.
import { afterAll, describe, expect, it } from 'vitest'
import { parse as parsePrometheusText } from '@platformatic/promotel'
import { initAuthCreds } from 'baileys'
import { BaileysAuthStore, BaileysOrmAdapter, BaileysRedisAdapter, useBaileysAuthState } from '../index.js'
import { configurations } from './support/configs.mjs'
import { uniqueId } from './support/services.mjs'

const configs = (await configurations()).filter((c) => ['embedded SQLite', 'Redis + PostgreSQL'].includes(c.name))

/**
 * Every sample of an exposition: [{ family, type, name, labels, value }], histogram samples as
 * their _bucket/_sum/_count series. The parser skips a line it cannot read instead of failing, so
 * every sample line must come back as a sample, or the scrape did not parse.
 */
function parseExposition(text) {
  const { timeseries, metadata } = parsePrometheusText(text)
  const types = new Map(metadata.map((m) => [m.metric_family_name, m.type]))
  const samples = []
  for (const ts of timeseries) {
    const labels = Object.fromEntries(ts.labels.filter((l) => !l.name.startsWith('__')).map((l) => [l.name, l.value]))
    const family = ts.labels.find((l) => l.name === '__metric_name').value
    const suffix = ts.labels.find((l) => l.name === '__suffix')?.value
    for (const s of ts.samples) samples.push({ family, type: types.get(family), name: suffix ? `${family}_${suffix}` : family, labels, value: s.value })
  }
  const lines = text.split('\n').filter((l) => l.trim() && !l.startsWith('#'))
  if (samples.length !== lines.length) {
    const read = new Set(samples.map((s) => `${s.name}${JSON.stringify(Object.entries(s.labels).sort())}`))
    const missed = lines.filter((l) => {
      const m = /^([^{\s]+)(?:\{(.*)\})?\s/.exec(l)
      const labels = m?.[2] ? [...m[2].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map(([, k, v]) => [k, v]).sort() : []
      return !m || !read.has(`${m[1]}${JSON.stringify(labels)}`)
    })
    throw new Error(`the scrape did not parse: ${lines.length} sample lines, ${samples.length} samples read; not read:\n${missed.join('\n')}`)
  }
  return samples
}

/** Every sample of a scrape of `store`. */
async function scrape(store) {
  return parseExposition(await store.metrics())
}

describe('the exposition parser', () => {
  it('reads labelled histograms whole: every series, its buckets up to +Inf, sum and count', () => {
    const text = [
      '# HELP t_seconds x',
      '# TYPE t_seconds histogram',
      't_seconds_bucket{le="0.1",op="a"} 1',
      't_seconds_bucket{le="+Inf",op="a"} 2',
      't_seconds_sum{op="a"} 0.25',
      't_seconds_count{op="a"} 2',
      't_seconds_bucket{le="0.1",op="b"} 0',
      't_seconds_bucket{le="+Inf",op="b"} 3',
      't_seconds_sum{op="b"} 1.5e-3',
      't_seconds_count{op="b"} 3',
      '# TYPE n_total counter',
      'n_total 7',
      '',
    ].join('\n')
    const samples = parseExposition(text)
    expect(samples).toHaveLength(9)
    expect(value(samples, 't_seconds_count', { op: 'b' })).toBe(3)
    expect(value(samples, 't_seconds_sum', { op: 'b' })).toBe(0.0015)
    expect(value(samples, 't_seconds_bucket', { op: 'a', le: '+Inf' })).toBe(2)
    expect(samples.find((x) => x.name === 'n_total')).toMatchObject({ family: 'n_total', labels: {}, value: 7 })
  })

  it('fails on a sample line it cannot read instead of dropping it', () => {
    expect(() => parseExposition('a_total 1\nb_total{x="y"} not-a-number\n')).toThrow(/did not parse[\s\S]*b_total\{x="y"\} not-a-number/)
  })
})

/** The value of the sample `name` whose labels include `labels` (0 when absent). */
function value(samples, name, labels = {}) {
  const s = samples.find((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v))
  return s ? s.value : 0
}

const has = (samples, name) => samples.some((x) => x.name === name)

for (const cfg of configs) {
  describe.skipIf(cfg.skip)(`metrics: ${cfg.name}`, () => {
    const stores = []
    afterAll(() => Promise.all(stores.map((s) => s.close())))
    const open = async (options) => {
      const s = options ? new BaileysAuthStore(new BaileysRedisAdapter(cfg.redis), new BaileysOrmAdapter(cfg.database), options) : await cfg.open()
      stores.push(s)
      return s
    }

    it('follow Prometheus naming, and count writes, bytes, reads per tier and errors by code', async () => {
      const store = await open()
      const sid = uniqueId('metrics')
      const before = await scrape(store)
      const text = await store.metrics()
      for (const [, name, type] of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
        expect(name).toMatch(/^wa_auth_[a-z_]+$/)
        if (type === 'counter') expect(name).toMatch(/_total$/)
        if (type === 'histogram') expect(name).toMatch(/_seconds$/)
        if (type === 'gauge') expect(name).not.toMatch(/_total$/)
      }
      // the cache serves a session to the process that holds its lease
      const lease = await store.acquireLease(sid)
      await store.saveCreds(sid, { creds: initAuthCreds() })
      const preKeys = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [String(i + 1), { public: Buffer.alloc(32, i), private: Buffer.alloc(32, i) }]))
      await store.setKeys(sid, { 'pre-key': preKeys })
      for (let i = 0; i < 5; i++) await store.getKeys(sid, 'pre-key', ['1', '2', '3'])
      await store.getKeys(sid, 'pre-key', ['404'])
      await expect(store.getKeys('', 'pre-key', ['1'])).rejects.toMatchObject({ code: 'ERR_INVALID_SESSION_ID' })

      const after = await scrape(store)
      expect(value(after, 'wa_auth_operation_duration_seconds_count', { op: 'write' }) - value(before, 'wa_auth_operation_duration_seconds_count', { op: 'write' })).toBe(2)
      expect(value(after, 'wa_auth_operation_duration_seconds_count', { op: 'get_keys' }) - value(before, 'wa_auth_operation_duration_seconds_count', { op: 'get_keys' })).toBe(7)
      expect(value(after, 'wa_auth_written_records_total') - value(before, 'wa_auth_written_records_total')).toBe(21)
      expect(value(after, 'wa_auth_written_bytes_total') - value(before, 'wa_auth_written_bytes_total')).toBeGreaterThan(20 * 64)
      // the 15 records read back were cache hits (the writes filled the cache)
      expect(value(after, 'wa_auth_reads_total', { tier: 'cache', result: 'hit' }) - value(before, 'wa_auth_reads_total', { tier: 'cache', result: 'hit' })).toBeGreaterThanOrEqual(15)
      expect(value(after, 'wa_auth_reads_total', { tier: 'cache', result: 'miss' }) + value(after, 'wa_auth_reads_total', { tier: 'sql', result: 'miss' })).toBeGreaterThanOrEqual(1)
      expect(value(after, 'wa_auth_errors_total', { code: 'ERR_INVALID_SESSION_ID' })).toBe(1)
      expect(value(after, 'wa_auth_queued_writes')).toBe(0)
      expect(value(after, 'wa_auth_sql_group_commits_total')).toBeGreaterThanOrEqual(2)
      expect(value(after, 'wa_auth_sql_group_commit_writes_total')).toBeGreaterThanOrEqual(value(after, 'wa_auth_sql_group_commits_total'))
      expect(value(after, 'wa_auth_cache_entries')).toBeGreaterThanOrEqual(21)
      // a histogram has its buckets, cumulative up to +Inf
      const buckets = after.filter((x) => x.name === 'wa_auth_operation_duration_seconds_bucket' && x.labels.op === 'write')
      expect(buckets.length).toBeGreaterThan(5)
      expect(buckets.find((b) => b.labels.le === '+Inf').value).toBe(value(after, 'wa_auth_operation_duration_seconds_count', { op: 'write' }))
      // and the structured form carries the same figures
      const json = await store.metrics({ format: 'json' })
      const records = json.find((m) => m.name === 'wa_auth_written_records_total')
      expect(records.values[0].value).toBe(value(after, 'wa_auth_written_records_total'))
      await expect(store.metrics({ format: 'xml' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
      await lease.release()
    })

    it('count the leases held and the writes in flight', async () => {
      const store = await open()
      const sid = uniqueId('metrics-lease')
      const auth = await useBaileysAuthState(store, sid)
      expect(value(await scrape(store), 'wa_auth_leases_held')).toBe(1)
      // writes in flight show as queued until they are answered
      const writes = Array.from({ length: 20 }, (_, i) => store.setKeys(sid, { session: { [`a${i}`]: { i } } }))
      const during = value(await scrape(store), 'wa_auth_queued_writes')
      await Promise.all(writes)
      expect(during).toBeGreaterThan(0)
      expect(value(await scrape(store), 'wa_auth_queued_writes')).toBe(0)
      await auth.close()
      expect(value(await scrape(store), 'wa_auth_leases_held')).toBe(0)
    })

    it.skipIf(!cfg.redis)('report the write-behind backlog and the memory manager', async () => {
      const store = await open({ durability: 'write-behind', flushIntervalMs: 100, memoryManager: { checkIntervalMs: 60_000 } })
      const sid = uniqueId('metrics-behind')
      await store.setKeys(sid, { session: { x: { v: 1 } } })
      // the flusher takes it to SQL within a pass or two
      let m
      for (let i = 0; i < 50; i++) {
        await new Promise((r) => setTimeout(r, 100))
        m = await scrape(store)
        if (has(m, 'wa_auth_write_behind_lag_seconds')) break
      }
      expect(has(m, 'wa_auth_write_behind_lag_seconds')).toBe(true)
      expect(value(m, 'wa_auth_write_behind_lag_seconds')).toBeLessThan(30)
      expect(has(m, 'wa_auth_write_behind_dirty_sessions')).toBe(true)
      expect(value(m, 'wa_auth_redis_memory_bytes', { kind: 'used' })).toBeGreaterThan(0)
      expect(value(m, 'wa_auth_redis_memory_bytes', { kind: 'max' })).toBeGreaterThan(0)
    })
  })
}
