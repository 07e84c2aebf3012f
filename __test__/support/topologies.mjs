// The Redis shapes a suite of the test's own servers runs against: one redis-server
// (support/own-redis.mjs) and a Redis Cluster of 3 primaries (support/own-cluster.mjs; no replicas:
// these suites look at where keys are, not at failovers). Each `start()` gives
// `{ url, cluster, raw, flushall(), keys(pattern), stop() }`, `raw` an ioredis client (a cluster
// client for the cluster) that stop() disconnects.
import Redis from 'ioredis'
import { OwnCluster } from './own-cluster.mjs'
import { OwnRedis } from './own-redis.mjs'

export const TOPOLOGIES = [
  {
    name: 'Redis',
    async start() {
      const own = await OwnRedis.start()
      const raw = new Redis(own.url)
      return {
        url: own.url,
        cluster: null,
        raw,
        flushall: () => raw.flushall(),
        keys: async (pattern = '*') => (await raw.keys(pattern)).sort(),
        stop: async () => {
          raw.disconnect()
          await own.kill()
        },
      }
    },
  },
  {
    name: 'Redis Cluster',
    async start() {
      const cluster = await OwnCluster.start({ masters: 3, replicas: 0 })
      const raw = cluster.raw()
      return {
        url: cluster.url,
        cluster,
        raw,
        flushall: () => cluster.flushall(),
        keys: (pattern) => cluster.keys(pattern),
        stop: async () => {
          raw.disconnect()
          await cluster.stop()
        },
      }
    },
  },
]
