'use strict'
// How the command line talks: JSON on stdout with --json, readable text otherwise; progress on
// stderr as a bar on a terminal (cli-progress) and as plain lines when stderr is a file or pipe.

const cliProgress = require('cli-progress')

/** A progress reporter: `update(done, total, item?)`, `stop()`. Silent with --json off a TTY. */
function progress(label, { json = false, stream = process.stderr } = {}) {
  if (stream.isTTY) {
    const bar = new cliProgress.SingleBar(
      { format: `${label} [{bar}] {value}/{total} {item}`, stream, hideCursor: true, clearOnComplete: false, etaBuffer: 20 },
      cliProgress.Presets.shades_classic,
    )
    let started = false
    return {
      update(done, total, item = '') {
        if (!started) {
          bar.start(total, 0, { item: '' })
          started = true
        }
        bar.setTotal(total)
        bar.update(done, { item: String(item) })
      },
      stop() {
        if (started) bar.stop()
      },
    }
  }
  // plain lines: about every tenth of the way, and the end
  let last = -1
  return {
    update(done, total, item = '') {
      if (json) return
      const step = Math.max(1, Math.floor(total / 10))
      if (done === total || done - last >= step) {
        last = done
        stream.write(`${label}: ${done}/${total}${item ? ` ${item}` : ''}\n`)
      }
    },
    stop() {},
  }
}

/** Bytes as a short human figure. */
function bytes(n) {
  if (n < 1024) return `${n} B`
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`
  return `${(n / 1024 ** 2).toFixed(1)} MiB`
}

/** Left-aligned columns. `rows` are arrays of strings, the first is the header. */
function table(rows) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)))
  return rows.map((r) => r.map((c, i) => String(c).padEnd(widths[i])).join('  ').trimEnd()).join('\n')
}

/** `{ type: n }` as "type n, type n". */
function counts(c) {
  const parts = Object.entries(c).map(([t, n]) => `${t} ${n}`)
  return parts.length ? parts.join(', ') : 'nothing'
}

module.exports = { progress, bytes, table, counts }
