/**
 * The import arrows of DESIGN.md, checked on every run: inner layers never import outer ones.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, dirname, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = resolve('src');

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}

function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/(?:import|export)[^'"]*from\s+'(\.[^']+)'/g)) {
    out.push(relative(SRC, resolve(dirname(file), m[1]!)).split('/')[0]!);
  }
  return out;
}

// folder -> folders it may import (besides itself)
const ALLOWED: Record<string, string[]> = {
  core: [],
  lib: ['core'],
  providers: ['core', 'lib'],
  coord: ['core', 'lib'],
  breaker: ['core', 'lib', 'coord', 'config'],
  store: ['core', 'lib'],
  config: ['core', 'lib', 'store'],
  observability: ['core', 'lib', 'coord', 'relay'],
  relay: ['core', 'lib', 'providers', 'breaker', 'config', 'coord'],
  http: [
    'core',
    'lib',
    'providers',
    'relay',
    'config',
    'observability',
    'coord',
    'quota',
    'tasks',
    'billing',
  ],
  quota: ['core', 'lib', 'config', 'coord'],
  billing: ['core', 'lib', 'store', 'config', 'relay', 'quota', 'coord'],
  tasks: ['core', 'lib', 'config', 'quota', 'relay', 'store', 'providers', 'billing', 'breaker'],
  app: ['*'],
};

describe('architecture', () => {
  it('imports point inward (providers know nothing of store, http, relay...)', () => {
    const violations: string[] = [];
    for (const f of files(SRC)) {
      const layer = relative(SRC, f).split('/')[0]!;
      const allowed = ALLOWED[layer];
      if (!allowed) {
        violations.push(`${relative(SRC, f)}: folder '${layer}' has no declared arrows`);
        continue;
      }
      if (allowed.includes('*')) continue;
      for (const dep of importsOf(f)) {
        if (dep !== layer && !allowed.includes(dep)) violations.push(`${relative(SRC, f)} imports ${dep}`);
      }
    }
    expect(violations).toEqual([]);
  });
});
