/**
 * One governance module (src/governance/pipeline.ts) admits and settles every route: the calls that take
 * a key's quota lease, hold a wallet, or book a sale appear nowhere else in src/, bar the listed
 * exceptions (each with its reason). A new route that admits or books on its own fails here; so does an
 * exception that no longer happens (removed, not kept as a loophole).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = resolve('src');

/** The calls only governance makes. */
const CALLS: Record<string, RegExp> = {
  'admission.admit(': /\badmission\.admit\(/g,
  '.reserve(': /\.reserve\(/g,
  'settleRequest(': /\bsettleRequest\(/g,
  'billing.settle(': /\bbilling\.settle\(/g,
};

/** `file call` outside src/governance/ that is allowed, and why. */
const EXCEPTIONS: Record<string, string> = {
  'billing/request.ts settleRequest(':
    'its definition: the request booking that Governance.book calls (governance owns when, billing how)',
  'billing/request.ts billing.settle(': "inside settleRequest, the ledger write of governance's booking",
  'billing/service.ts .reserve(': 'Billing.reserve handing the hold to its wallet backend (Redis or memory)',
};

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}

/** The source without its comments (a comment may name a call it doesn't make). */
function code(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1');
}

function callSites(): Map<string, number> {
  const found = new Map<string, number>();
  for (const f of files(SRC)) {
    const rel = relative(SRC, f);
    const text = code(readFileSync(f, 'utf8'));
    for (const [name, re] of Object.entries(CALLS)) {
      const n = [...text.matchAll(re)].length;
      if (n) found.set(`${rel} ${name}`, n);
    }
  }
  return found;
}

describe('admission and settlement happen only in src/governance/', () => {
  const sites = callSites();

  it('governance makes every one of these calls (the check below is not vacuous)', () => {
    for (const name of Object.keys(CALLS))
      expect(
        [...sites.keys()].some((k) => k.startsWith('governance/') && k.endsWith(` ${name}`)),
        name,
      ).toBe(true);
  });

  it('no other file makes them, bar the listed exceptions', () => {
    const outside = [...sites.keys()].filter((k) => !k.startsWith('governance/') && !EXCEPTIONS[k]);
    expect(outside).toEqual([]);
  });

  it('every exception still happens', () => {
    expect(Object.keys(EXCEPTIONS).filter((k) => !sites.has(k))).toEqual([]);
  });
});
