#!/usr/bin/env node
import { main } from '../dist/core/cli.js'
import { builtinTypes } from '../dist/plugins/builtin.js'

const code = await main(process.argv.slice(2), { builtinTypes })
if (code !== 0) process.exit(code)
