// Global setup: one Redis Cluster of the run's own (3 primaries, 1 replica each; support/own-cluster.mjs)
// for the suites that run a 'Redis Cluster + PostgreSQL' configuration (support/configs.mjs), stopped
// and removed at the end of the run. Its URL reaches the test files through `inject('clusterUrl')`.
// Without redis-server the cluster suites are skipped, except under CI=true, where the run fails.
import { OwnCluster } from './own-cluster.mjs'

// as in services.mjs, which this main-process file does not import (it loads the addon)
const inCI = ['1', 'true', 'yes'].includes(String(process.env.CI ?? '').toLowerCase())

let cluster = null

export async function setup(project) {
  try {
    cluster = await OwnCluster.start({ masters: 3, replicas: 1 })
    project.provide('clusterUrl', cluster.url)
    project.provide('clusterError', null)
  } catch (err) {
    if (inCI) throw new Error(`a Redis Cluster is required under CI but could not start: ${err.message}`)
    project.provide('clusterUrl', null)
    project.provide('clusterError', err.message)
  }
}

export async function teardown() {
  await cluster?.stop()
  cluster = null
}
