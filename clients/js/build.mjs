// The browser bundle shipped inside the Python package (served at /js/realtime-messaging.js):
// src/index.ts with realtime-js inlined, one ES module. Deterministic: the same sources give
// the same bytes (CI rebuilds it and fails on a difference), whatever directory npm runs from.
import { build } from 'esbuild'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('.', import.meta.url))

await build({
  absWorkingDir: root,
  entryPoints: ['src/index.ts'],
  outfile: '../../src/realtime_messaging/web/js/realtime-messaging.js',
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2020',
  minify: false,
  legalComments: 'none',
  sourcemap: false,
  charset: 'utf8',
  logLevel: 'warning',
})
