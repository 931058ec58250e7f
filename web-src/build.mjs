// Builds the staff inbox and the customer chat into ../src/realtime_messaging/web/app/:
// inbox.js, portal.js, app.css, the code both pages share (one chunk-<hash>.js, loaded once and
// shipped once) and the two pages. Deterministic: the same sources give the same bytes (the
// chunk's hash is of its content; no timestamps, no source paths beyond what esbuild writes).
import { copyFileSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, '..', 'src', 'realtime_messaging', 'web', 'app');
mkdirSync(out, { recursive: true });
// A chunk of an earlier build would linger beside the new one.
for (const name of readdirSync(out)) {
  if (name.startsWith('chunk-')) rmSync(join(out, name));
}

await esbuild.build({
  absWorkingDir: here,
  entryPoints: {
    inbox: 'src/inbox.tsx',
    portal: 'src/portal.tsx',
    app: 'src/app.css',
  },
  outdir: out,
  bundle: true,
  format: 'esm',
  splitting: true,
  chunkNames: 'chunk-[hash]',
  platform: 'browser',
  target: 'es2020',
  jsx: 'automatic',
  jsxImportSource: 'preact',
  minify: false,
  legalComments: 'none',
  charset: 'utf8',
  sourcemap: false,
  logLevel: 'warning',
  define: { 'process.env.NODE_ENV': '"production"' },
});

for (const page of ['inbox.html', 'portal.html']) {
  copyFileSync(join(here, page), join(out, page));
}
console.log(`built ${out}`);
