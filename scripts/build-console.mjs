// Builds the operator console into dist/console: its TypeScript modules compiled by tsc (plain ES modules,
// no bundler, no framework), then the HTML, CSS and icon copied beside them, and build.json written last
// (the server serves the folder only once that marker is there). Part of `npm run build`.
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(root, 'console', 'src');
const out = join(root, 'dist', 'console');
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
execFileSync(process.execPath, [tsc, '-p', join(root, 'console', 'tsconfig.json')], { stdio: 'inherit' });
const files = [];
for (const f of readdirSync(src)) {
  if (['.html', '.css', '.svg'].includes(extname(f))) {
    copyFileSync(join(src, f), join(out, f));
    files.push(f);
  }
}
writeFileSync(
  join(out, 'build.json'),
  JSON.stringify({ built_at: new Date().toISOString(), static: files }, null, 2) + '\n',
);
console.log(`console built into ${out}`);
