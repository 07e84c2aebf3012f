#!/usr/bin/env node
'use strict'
// The `wa-auth-store` command (npx wa-auth-store --help). Everything lives in lib/cli.
require('../lib/cli/main.js')
  .main(process.argv)
  .then((code) => {
    process.exitCode = code
  })
