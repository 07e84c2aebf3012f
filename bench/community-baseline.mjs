// The baseline "community" store, written the way the TypeScript stores people use today are
// built: ioredis with one hash per session (field `${type}-${id}`), Baileys' BufferJSON, HMGET
// for reads and a pipeline for writes; persistence with `pg`, one upsert (or delete) per key.
import { BufferJSON } from 'baileys'
import pg from 'pg'
import Redis from 'ioredis'

export class CommunityStore {
  static async open({ redisUrl, pgUrl, prefix = 'community' }) {
    const redis = new Redis(redisUrl)
    const pool = new pg.Pool({ connectionString: pgUrl, max: 10 })
    await pool.query(`CREATE TABLE IF NOT EXISTS bench_community_keys (session_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (session_id, key))`)
    return new CommunityStore(redis, pool, prefix)
  }

  constructor(redis, pool, prefix) {
    this.redis = redis
    this.pool = pool
    this.prefix = prefix
  }

  key(sid) {
    return `${this.prefix}:${sid}`
  }

  async get(sid, type, ids) {
    if (ids.length === 0) return {}
    const values = await this.redis.hmget(this.key(sid), ...ids.map((id) => `${type}-${id}`))
    const out = {}
    const missing = []
    ids.forEach((id, i) => {
      if (values[i] != null) out[id] = JSON.parse(values[i], BufferJSON.reviver)
      else missing.push(id)
    })
    if (missing.length) {
      const { rows } = await this.pool.query('SELECT key, value FROM bench_community_keys WHERE session_id = $1 AND key = ANY($2)', [sid, missing.map((id) => `${type}-${id}`)])
      for (const r of rows) out[r.key.slice(type.length + 1)] = JSON.parse(r.value, BufferJSON.reviver)
    }
    return out
  }

  async set(sid, data) {
    const pipe = this.redis.pipeline()
    const writes = []
    for (const type of Object.keys(data)) {
      for (const id of Object.keys(data[type])) {
        const value = data[type][id]
        const field = `${type}-${id}`
        if (value == null) {
          pipe.hdel(this.key(sid), field)
          writes.push(['DELETE FROM bench_community_keys WHERE session_id = $1 AND key = $2', [sid, field]])
        } else {
          const text = JSON.stringify(value, BufferJSON.replacer)
          pipe.hset(this.key(sid), field, text)
          writes.push([
            'INSERT INTO bench_community_keys (session_id, key, value) VALUES ($1, $2, $3) ON CONFLICT (session_id, key) DO UPDATE SET value = EXCLUDED.value',
            [sid, field, text],
          ])
        }
      }
    }
    await pipe.exec()
    for (const [sql, args] of writes) await this.pool.query(sql, args)
  }

  async saveCreds(sid, creds) {
    await this.set(sid, { creds: { '': creds } })
  }

  async readCreds(sid) {
    return (await this.get(sid, 'creds', ['']))['']
  }

  async close() {
    this.redis.disconnect()
    await this.pool.end()
  }
}
