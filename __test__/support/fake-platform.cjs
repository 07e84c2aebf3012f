'use strict'
// Preloaded with `node --require`: this process then looks, to binding.js and lib/native.js alike,
// like one on the platform, architecture and libc that WA_FAKE_PLATFORM, WA_FAKE_ARCH and
// WA_FAKE_LIBC ('glibc' | 'musl') name. It changes what Node reports (process.platform,
// process.arch, the process report) and what /usr/bin/ldd reads as, the places the loaders look;
// nothing of the package itself.
const fs = require('node:fs')

const { WA_FAKE_PLATFORM: platform, WA_FAKE_ARCH: arch, WA_FAKE_LIBC: libc } = process.env
if (platform) Object.defineProperty(process, 'platform', { value: platform, enumerable: true, configurable: true })
if (arch) Object.defineProperty(process, 'arch', { value: arch, enumerable: true, configurable: true })
if (libc) {
  const ldd = libc === 'musl' ? 'musl libc (fake)\nVersion 1.2.5\n' : 'ldd (GNU libc) 2.36\n'
  const readFileSync = fs.readFileSync
  fs.readFileSync = function (path, ...rest) {
    if (path === '/usr/bin/ldd') {
      const enc = typeof rest[0] === 'string' ? rest[0] : rest[0]?.encoding
      return enc ? ldd : Buffer.from(ldd)
    }
    return readFileSync.call(this, path, ...rest)
  }
  const getReport = process.report.getReport.bind(process.report)
  process.report.getReport = (...args) => {
    const report = getReport(...args)
    if (libc === 'musl') {
      delete report.header.glibcVersionRuntime
      report.sharedObjects = [...(report.sharedObjects ?? []), `/lib/ld-musl-${arch ?? process.arch}.so.1`]
    }
    return report
  }
}
