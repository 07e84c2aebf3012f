// makeCredsWriter: creds snapshots are written strictly in call order, bursts coalesce into one
// write of the newest snapshot, and every caller settles with the write that carried its snapshot.
import { describe, expect, it } from 'vitest'

import { makeCredsWriter } from '../lib/auth-state.js'

const snap = (name) => Buffer.from(String(name))
const text = (bytes) => Buffer.from(bytes).toString()

/** Lets every pending microtask (and the promise chains they start) run. */
const flush = () => new Promise((resolve) => setImmediate(resolve))

/** Runs `fn` after `n` microtask hops. */
const afterHops = async (n, fn) => {
  for (let i = 0; i < n; i++) await null
  return fn()
}

/** Follows a promise's state without changing it. */
function track(promise) {
  const t = { state: 'pending', value: undefined, error: undefined, promise }
  promise.then(
    (value) => Object.assign(t, { state: 'resolved', value }),
    (error) => Object.assign(t, { state: 'rejected', error }),
  )
  return t
}

/**
 * A fake `write` the test settles by hand: records the bytes it receives, in order, and how many
 * writes overlap.
 */
function controlledWrite() {
  const writes = []
  const ctl = {
    writes,
    active: 0,
    maxActive: 0,
    get written() {
      return writes.map((w) => w.bytes)
    },
    get open() {
      return writes.filter((w) => !w.done)
    },
    write(bytes) {
      ctl.active++
      ctl.maxActive = Math.max(ctl.maxActive, ctl.active)
      let resolve, reject
      const promise = new Promise((res, rej) => {
        resolve = res
        reject = rej
      })
      const w = { bytes: text(bytes), done: false, promise }
      w.resolve = (value = `ok:${w.bytes}`) => {
        w.done = true
        resolve(value)
      }
      w.reject = (error = new Error(`failed:${w.bytes}`)) => {
        w.done = true
        reject(error)
      }
      writes.push(w)
      return promise.then(
        (value) => {
          ctl.active--
          return value
        },
        (error) => {
          ctl.active--
          throw error
        },
      )
    },
    /** Resolves the oldest open write until none is left (a write settling may start the next). */
    async drain() {
      await flush()
      while (ctl.open.length) {
        ctl.open[0].resolve()
        await flush()
      }
    },
  }
  ctl.write = ctl.write.bind(ctl)
  return ctl
}

describe('makeCredsWriter', () => {
  it('writes a call made while idle at once and resolves with what write resolved', async () => {
    const ctl = controlledWrite()
    const save = makeCredsWriter(ctl.write)
    const a = track(save(snap('A')))
    expect(ctl.written).toEqual(['A'])
    await flush()
    expect(a.state).toBe('pending')
    ctl.writes[0].resolve('stored')
    await flush()
    expect(a.state).toBe('resolved')
    expect(a.value).toBe('stored')
    // Idle again: the next call writes at once too.
    save(snap('B'))
    expect(ctl.written).toEqual(['A', 'B'])
  })

  it('coalesces a burst into ONE next write carrying the newest snapshot', async () => {
    const ctl = controlledWrite()
    const save = makeCredsWriter(ctl.write)
    const a = track(save(snap('A')))
    const burst = ['B', 'C', 'D', 'E'].map((n) => track(save(snap(n))))
    await flush()
    expect(ctl.written).toEqual(['A'])
    expect(burst.every((t) => t.state === 'pending')).toBe(true)

    ctl.writes[0].resolve()
    await flush()
    expect(a.state).toBe('resolved')
    expect(ctl.written).toEqual(['A', 'E'])
    // Not settled before the write that carried their snapshot (or a newer one) has.
    expect(burst.every((t) => t.state === 'pending')).toBe(true)

    ctl.writes[1].resolve('stored-E')
    await flush()
    for (const t of burst) expect(t).toMatchObject({ state: 'resolved', value: 'stored-E' })
    expect(ctl.written).toEqual(['A', 'E'])
    expect(ctl.maxActive).toBe(1)
  })

  it('the old fast-path race: a call made as soon as the in-flight write settles is written after the queued one', async () => {
    // Old code: A in flight, B queued; A settles, `inflight` is reset in `.finally`, and a call
    // made by A's caller (`await saveCreds(); saveCreds()`) takes the fast path and writes C
    // before the queued slot runs and writes the older B last.
    const ctl = controlledWrite()
    const save = makeCredsWriter(ctl.write)
    let c
    const a = save(snap('A')).then(() => {
      c = track(save(snap('C')))
    })
    const b = track(save(snap('B')))
    ctl.writes[0].resolve()
    await a
    await ctl.drain()
    expect(ctl.written).toEqual(['A', 'B', 'C'])
    expect(ctl.written.at(-1)).toBe('C')
    expect(ctl.maxActive).toBe(1)
    expect(b.state).toBe('resolved')
    expect(c.state).toBe('resolved')
  })

  it('the same race with `await` in an async caller, as Baileys calls saveCreds', async () => {
    const ctl = controlledWrite()
    const save = makeCredsWriter(ctl.write)
    const caller = (async () => {
      await save(snap('A'))
      await save(snap('C'))
    })()
    save(snap('B'))
    ctl.writes[0].resolve()
    const done = caller.then(() => 'done')
    await ctl.drain()
    expect(await done).toBe('done')
    expect(ctl.written).toEqual(['A', 'B', 'C'])
  })

  it('keeps call order whatever microtask hop after the settle the next call lands on', async () => {
    for (let hops = 0; hops <= 12; hops++) {
      for (const fails of [false, true]) {
        const ctl = controlledWrite()
        const save = makeCredsWriter(ctl.write)
        let later
        const a = save(snap('A'))
        a.catch(() => {}).then(() => afterHops(hops, () => (later = track(save(snap('C'))))))
        save(snap('B')).catch(() => {})
        if (fails) ctl.writes[0].reject()
        else ctl.writes[0].resolve()
        await ctl.drain()
        const label = `hops=${hops} fails=${fails}`
        expect(ctl.written, label).toEqual(['A', 'B', 'C'])
        expect(ctl.maxActive, label).toBe(1)
        expect(later.state, label).toBe('resolved')
      }
    }
  })

  it('a call made in a handler of the raw write promise (before the writer sees it settle) joins the queued write', async () => {
    const ctl = controlledWrite()
    const save = makeCredsWriter(ctl.write)
    const a = track(save(snap('A')))
    const b = track(save(snap('B')))
    let c
    // Runs before the writer's own handler: the write is still in flight as far as it knows.
    ctl.writes[0].promise.then(() => (c = track(save(snap('C')))))
    ctl.writes[0].resolve()
    await ctl.drain()
    expect(ctl.written).toEqual(['A', 'C'])
    expect(a.state).toBe('resolved')
    expect(b).toMatchObject({ state: 'resolved', value: 'ok:C' })
    expect(c).toMatchObject({ state: 'resolved', value: 'ok:C' })
  })

  it('a failed write rejects exactly the callers it carried; the queued write still runs', async () => {
    const ctl = controlledWrite()
    const save = makeCredsWriter(ctl.write)
    const a = track(save(snap('A')))
    const b = track(save(snap('B')))
    const c = track(save(snap('C')))
    const boom = new Error('A failed')
    ctl.writes[0].reject(boom)
    await flush()
    expect(a).toMatchObject({ state: 'rejected', error: boom })
    expect(ctl.written).toEqual(['A', 'C'])
    expect(b.state).toBe('pending')
    ctl.writes[1].resolve()
    await flush()
    expect(b.state).toBe('resolved')
    expect(c.state).toBe('resolved')
  })

  it('a failed coalesced write rejects all its callers, and the next call tries again', async () => {
    const ctl = controlledWrite()
    const save = makeCredsWriter(ctl.write)
    const a = track(save(snap('A')))
    const b = track(save(snap('B')))
    const c = track(save(snap('C')))
    ctl.writes[0].resolve()
    await flush()
    const boom = new Error('C failed')
    ctl.writes[1].reject(boom)
    await flush()
    expect(a.state).toBe('resolved')
    expect(b).toMatchObject({ state: 'rejected', error: boom })
    expect(c).toMatchObject({ state: 'rejected', error: boom })
    const d = track(save(snap('D')))
    expect(ctl.written).toEqual(['A', 'C', 'D'])
    ctl.writes[2].resolve()
    await flush()
    expect(d.state).toBe('resolved')
  })

  it('a write that throws synchronously rejects its caller and the writer keeps working', async () => {
    const written = []
    let throwNext = true
    const save = makeCredsWriter((bytes) => {
      written.push(text(bytes))
      if (throwNext) {
        throwNext = false
        throw new Error('sync throw')
      }
      return Promise.resolve('ok')
    })
    const a = track(save(snap('A')))
    const b = track(save(snap('B')))
    await flush()
    expect(a.state).toBe('rejected')
    expect(a.error.message).toBe('sync throw')
    expect(b).toMatchObject({ state: 'resolved', value: 'ok' })
    expect(await save(snap('C'))).toBe('ok')
    expect(written).toEqual(['A', 'B', 'C'])
  })

  it('a write that returns a plain value (no promise) still serialises', async () => {
    const written = []
    const save = makeCredsWriter((bytes) => {
      written.push(text(bytes))
      return written.length
    })
    const results = await Promise.all(['A', 'B', 'C'].map((n) => save(snap(n))))
    expect(written).toEqual(['A', 'C'])
    expect(results).toEqual([1, 2, 2])
  })

  it('a call made synchronously from inside write waits for that write', async () => {
    const ctl = controlledWrite()
    let inner
    let reentered = false
    const save = makeCredsWriter((bytes) => {
      const p = ctl.write(bytes)
      if (!reentered) {
        reentered = true
        inner = track(save(snap('inner')))
      }
      return p
    })
    save(snap('outer'))
    expect(ctl.written).toEqual(['outer'])
    await ctl.drain()
    expect(ctl.written).toEqual(['outer', 'inner'])
    expect(inner.state).toBe('resolved')
    expect(ctl.maxActive).toBe(1)
  })

  it('randomised schedules: order, coalescing and settlement hold (random delays, failures, awaiting callers)', async () => {
    for (let seed = 1; seed <= 30; seed++) await randomRun(seed)
  })
})

function mulberry32(seed) {
  return () => {
    seed |= 0
    seed = (seed + 0x6d2b79f5) | 0
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

async function randomRun(seed) {
  const rand = mulberry32(seed)
  const pause = () => {
    const r = rand()
    if (r < 0.5) return afterHops(Math.floor(rand() * 6), () => {})
    if (r < 0.8) return new Promise((resolve) => setImmediate(resolve))
    return new Promise((resolve) => setTimeout(resolve, Math.floor(rand() * 3)))
  }

  const log = [] // every start, end and settle, in the order they happened
  const writes = [] // { index, ok, error, startAt, endAt }
  const calls = [] // { index, startsBefore, settleAt, outcome }
  let active = 0
  let maxActive = 0
  let nextIndex = 0

  const save = makeCredsWriter(async (bytes) => {
    const index = Number(text(bytes))
    const w = { index, ok: rand() >= 0.2, startAt: log.length, number: writes.length }
    writes.push(w)
    log.push(`start ${index}`)
    active++
    maxActive = Math.max(maxActive, active)
    // Invariant: a write always carries the newest snapshot called so far.
    w.newestAtStart = index === nextIndex - 1
    await pause()
    if (rand() < 0.5) await pause()
    active--
    w.endAt = log.length
    log.push(`end ${index}`)
    if (!w.ok) {
      w.error = new Error(`write ${index} failed`)
      throw w.error
    }
    return { write: w.number }
  })

  const call = () => {
    const c = { index: nextIndex++, startsBefore: writes.length }
    calls.push(c)
    const p = save(snap(c.index))
    // startsBefore counts writes begun before the call; if this call started one, it is that one.
    p.then(
      (value) => {
        c.settleAt = log.length
        log.push(`settle ${c.index}`)
        c.outcome = { ok: true, value }
      },
      (error) => {
        c.settleAt = log.length
        log.push(`settle ${c.index}`)
        c.outcome = { ok: false, error }
      },
    )
    return p
  }

  const actors = Array.from({ length: 1 + Math.floor(rand() * 4) }, async () => {
    const n = 5 + Math.floor(rand() * 20)
    for (let i = 0; i < n; i++) {
      const awaitIt = rand() < 0.5
      const p = call()
      if (awaitIt) await p.catch(() => {})
      else await pause()
    }
  })
  await Promise.all(actors)
  // Every call settles.
  for (let spins = 0; calls.some((c) => !c.outcome); spins++) {
    expect(spins, `seed ${seed}: a caller never settled`).toBeLessThan(10_000)
    await flush()
  }

  const label = `seed ${seed}`
  const order = writes.map((w) => w.index)
  expect(maxActive, label).toBe(1)
  // The sequence written is a subsequence of call order...
  for (let i = 1; i < order.length; i++) expect(order[i], label).toBeGreaterThan(order[i - 1])
  // ...ending with the last call's snapshot.
  expect(order.at(-1), label).toBe(calls.at(-1).index)
  // Coalescing: each write carries the newest snapshot there is when it starts.
  expect(writes.every((w) => w.newestAtStart), label).toBe(true)
  for (const c of calls) {
    // Served by the first write to start at or after the call (the one it started, or the next).
    const w = writes[c.startsBefore]
    expect(w, `${label} call ${c.index}`).toBeDefined()
    expect(w.index, `${label} call ${c.index}`).toBeGreaterThanOrEqual(c.index)
    expect(c.settleAt, `${label} call ${c.index}`).toBeGreaterThan(w.endAt)
    expect(c.outcome.ok, `${label} call ${c.index}`).toBe(w.ok)
    if (w.ok) expect(c.outcome.value, `${label} call ${c.index}`).toEqual({ write: w.number })
    else expect(c.outcome.error, `${label} call ${c.index}`).toBe(w.error)
  }
}
