// Bundles the storefront and the dashboard (ES modules using the Firebase Web SDK from
// node_modules) into web/public/dist/, which `boxoffice serve` serves at /app/.
// One esbuild call, no config file: `node web/build.mjs` (or `make web`).
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));

await build({
  entryPoints: {
    store: path.join(here, 'src/store.js'),
    dashboard: path.join(here, 'src/dashboard.js'),
  },
  outdir: path.join(here, 'public/dist'),
  bundle: true,
  format: 'esm',
  splitting: true,          // the Firebase SDK is one shared chunk for both pages
  minify: true,
  sourcemap: true,
  target: ['es2020'],
  logLevel: 'warning',
});
