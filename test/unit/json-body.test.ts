import secureJson from 'secure-json-parse';
import { describe, expect, it } from 'vitest';
import { MAX_JSON_DEPTH, parseJsonBody as parseBytes } from '../../src/http/json-body.js';
import { jsonBytesOf, withModel as withModelBytes } from '../../src/lib/json-text.js';

/** The tests read the spliced bytes as text. */
const withModel = (body: Record<string, unknown>, model: string, add: boolean) =>
  withModelBytes(body, model, add)?.toString('utf8') ?? null;
const jsonTextOf = (v: object) => jsonBytesOf(v)?.toString('utf8');
const parseJsonBody = (text: string | Buffer) =>
  parseBytes(typeof text === 'string' ? Buffer.from(text) : text);

const parsed = (text: string | Buffer) => {
  const r = parseJsonBody(text);
  if (!r.ok) throw new Error(`refused: ${r.why}`);
  return r.value as Record<string, unknown>;
};

/** A small deterministic generator (tests must not depend on Math.random's luck). */
function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

describe('parseJsonBody', () => {
  it('parses JSON, skips a byte order mark, and refuses what is not JSON', () => {
    expect(parsed('{"a":[1,2,{"b":null}]}')).toEqual({ a: [1, 2, { b: null }] });
    expect(parsed('\ufeff{"a":1}')).toEqual({ a: 1 });
    expect(parsed(' "just a string" ')).toBe('just a string');
    expect(parseJsonBody('{bad')).toEqual({ ok: false, why: 'invalid' });
    expect(parseJsonBody('{"a":1} x')).toEqual({ ok: false, why: 'invalid' });
  });

  it(`refuses nesting deeper than ${MAX_JSON_DEPTH} (objects and arrays alike); brackets inside strings don't count`, () => {
    const arr = (n: number) => '['.repeat(n) + ']'.repeat(n);
    const obj = (n: number) => '{"a":'.repeat(n - 1) + '{}' + '}'.repeat(n - 1);
    expect(parseJsonBody(arr(MAX_JSON_DEPTH)).ok).toBe(true);
    expect(parseJsonBody(arr(MAX_JSON_DEPTH + 1))).toEqual({ ok: false, why: 'too_deep' });
    expect(parseJsonBody(obj(MAX_JSON_DEPTH)).ok).toBe(true);
    expect(parseJsonBody(obj(MAX_JSON_DEPTH + 1))).toEqual({ ok: false, why: 'too_deep' });
    // Far deeper than any stack: JSON.parse is iterative and the walk stops at the limit.
    expect(parseJsonBody(arr(200_000))).toEqual({ ok: false, why: 'too_deep' });
    expect(parseJsonBody(JSON.stringify({ m: '['.repeat(5_000) + '{'.repeat(5_000) })).ok).toBe(true);
  });

  it("removes prototype-poisoning keys exactly as Fastify's parser did (secure-json-parse, action 'remove')", () => {
    const bodies = [
      '{"model":"main","__proto__":{"admin":true},"messages":[{"role":"user","content":"x","__proto__":{"x":1}}],"constructor":{"prototype":{"polluted":1}}}',
      '{"constructor":{"a":1},"b":{"constructor":{"prototype":1}}}',
      '{"constructor":null,"x":[{"constructor":{"prototype":null}},[{"__proto__":null}]]}',
      '[{"__proto__":{"a":1}},{"k":{"constructor":{"prototype":{}}}}]',
      '{"text":"a \\"__proto__\\": in a string is only text","constructor":"a string"}',
    ];
    for (const b of bodies) {
      const mine = parsed(b);
      const theirs = secureJson.parse(b, { protoAction: 'remove', constructorAction: 'remove' });
      expect(JSON.stringify(mine)).toBe(JSON.stringify(theirs));
      expect(Object.getPrototypeOf(mine)).toBe(Array.isArray(mine) ? Array.prototype : Object.prototype);
      expect(({} as Record<string, unknown>).admin).toBeUndefined();
    }
  });

  it("bytes that aren't UTF-8 parse as before (U+FFFD) but are not kept to forward; UTF-8 text is", () => {
    const bad = Buffer.concat([
      Buffer.from('{"model":"m","messages":[{"role":"user","content":"a'),
      Buffer.from([0xff, 0xfe]),
      Buffer.from('"}]}'),
    ]);
    const v = parsed(bad);
    expect((v.messages as Array<{ content: string }>)[0]!.content).toBe('a\ufffd\ufffd');
    expect(jsonTextOf(v)).toBeUndefined();
    expect(withModel(v, 'up', false)).toBeNull();
    const cjk = '{"model":"m","messages":[{"role":"user","content":"请用一句话解释 🙂"}]}';
    expect(withModel(parsed(cjk), '模型-up', true)).toBe(
      JSON.stringify({ ...JSON.parse(cjk), model: '模型-up', stream_options: { include_usage: true } }),
    );
  });

  it('refuses what PostgreSQL refuses: a NUL anywhere, an unpaired surrogate; not their lookalikes', () => {
    const nul = [
      '{"a":"x\\u0000y"}',
      '{"a\\u0000":1}',
      '{"a":[1,{"b":["\\u0000"]}]}',
      '"\\u0000"',
      '{"a":"\u00e9\\u0000"}', // a non-ASCII body takes the text search first
      '{"a":"\\\\\\u0000"}', // an escaped backslash, then a real NUL
    ];
    for (const b of nul) expect(parseJsonBody(b), b).toEqual({ ok: false, why: 'nul' });
    const lone = [
      '{"a":"\\ud800"}',
      '{"a":"\\uDC00x"}',
      '{"a":"\\ud83d"}',
      '["é\\ud83d\\u0041"]',
      '{"\\udfff":1}',
    ];
    for (const b of lone) expect(parseJsonBody(b), b).toEqual({ ok: false, why: 'lone_surrogate' });
    const fine = [
      '{"a":"\\\\u0000"}', // a backslash, then the text u0000
      '{"a":"\\ud83d\\ude00"}', // a pair: an emoji as Python's json.dumps writes it
      '{"a":"\\uD83D\\uDE00 and é"}',
      '{"a":"\\ud7ff\\ue000"}',
      '{"a":"😀 plain"}',
    ];
    for (const b of fine) expect(parseJsonBody(b).ok, b).toBe(true);
  });

  it('remembers the text of an object body, but not when it removed a key (the text would say otherwise)', () => {
    const t = '{"model":"m","messages":[]}';
    expect(jsonTextOf(parsed(t))).toBe(t);
    expect(jsonTextOf(parsed('\ufeff' + t))).toBe(t);
    expect(jsonTextOf(parsed('{"model":"m","__proto__":{"a":1}}'))).toBeUndefined();
    expect(jsonTextOf({ ...parsed(t) })).toBeUndefined(); // a new object has no text
  });
});

describe('withModel', () => {
  const chat = { model: 'main', messages: [{ role: 'user', content: 'hi' }], temperature: 0.2, stream: true };

  it('gives what serializing the renamed body gives, byte for byte, for a compact body', () => {
    for (const body of [
      chat,
      { messages: [{ role: 'user', content: 'x' }], model: 'main' },
      { model: 'main', input: [[1, 2], [3]] },
    ]) {
      const b = parsed(JSON.stringify(body));
      expect(withModel(b, 'gpt-up', false)).toBe(JSON.stringify({ ...body, model: 'gpt-up' }));
    }
    const b = parsed(JSON.stringify(chat));
    expect(withModel(b, 'gpt-up', true)).toBe(
      JSON.stringify({ ...chat, model: 'gpt-up', stream_options: { include_usage: true } }),
    );
  });

  it('keeps the client\'s own spacing (Python\'s json.dumps writes \'"model": "main"\')', () => {
    const text = '{"model": "main", "messages": [{"role": "user", "content": "hi"}],\n "stream": true}\n';
    const out = withModel(parsed(text), 'gpt-up', true)!;
    expect(out).toBe(
      '{"model": "gpt-up", "messages": [{"role": "user", "content": "hi"}],\n "stream": true,"stream_options":{"include_usage":true}}\n',
    );
    expect(JSON.parse(out)).toEqual({
      model: 'gpt-up',
      messages: [{ role: 'user', content: 'hi' }],
      stream: true,
      stream_options: { include_usage: true },
    });
  });

  it('an escaped quote inside a string is not a delimiter: "say \\"model\\" twice" holds no "model" token', () => {
    const text = '{"model":"main","messages":[{"role":"user","content":"say \\"model\\" twice"}]}';
    expect(JSON.parse(withModel(parsed(text), 'up', false)!)).toEqual({ ...JSON.parse(text), model: 'up' });
  });

  it('declines (null) whenever the text alone cannot say where the top-level model is', () => {
    const no = (text: string, add = false) => expect(withModel(parsed(text), 'up', add)).toBeNull();
    no('{"model":"main","messages":[{"role":"user","content":"model"}]}'); // "model" as a value too
    no('{"model":"main","messages":[{"role":"user","content":"say \\"model"}]}'); // a string ending in an escaped quote and model
    no('{"model":"main","model":"main"}'); // a duplicate key
    no('{"mod\\u0065l":"main","meta":{"model":"main"}}'); // an escaped key: the literal one is nested
    no('{"model":"ma\\/in"}'); // the value written with an escape
    no('{"model":"main","stream":true,"stream_options":{}}', true); // stream_options exists: merged by serializing
    no('{"model":"main","stream":true,"stream_options":null}', true);
    expect(withModel({ model: 'main' }, 'up', false)).toBeNull(); // not a parsed body: no text
  });

  it('whatever it returns parses to the renamed body (random bodies, random spacing)', () => {
    const r = rng(7);
    const pick = <T>(xs: T[]) => xs[Math.floor(r() * xs.length)]!;
    const strings = [
      'main',
      'model',
      'a "model" b',
      'mo\\del',
      'x\u00e9',
      'line\nbreak',
      '{"model":"main"}',
      '',
    ];
    const value = (d: number): unknown => {
      const k = r();
      if (d > 3 || k < 0.4) return pick<unknown>([pick(strings), 1, -2.5, true, null]);
      if (k < 0.7) return Array.from({ length: Math.floor(r() * 3) }, () => value(d + 1));
      return Object.fromEntries(
        Array.from({ length: Math.floor(r() * 3) }, () => [
          pick(['model', 'content', 'role', 'k']),
          value(d + 1),
        ]),
      );
    };
    const spaced = (v: unknown): string => {
      const sp = () => pick(['', ' ', '\n  ', '\t']);
      if (Array.isArray(v)) return '[' + sp() + v.map(spaced).join(sp() + ',' + sp()) + sp() + ']';
      if (v !== null && typeof v === 'object')
        return (
          '{' +
          sp() +
          Object.entries(v)
            .map(([k, x]) => JSON.stringify(k) + sp() + ':' + sp() + spaced(x))
            .join(',' + sp()) +
          sp() +
          '}'
        );
      return JSON.stringify(v);
    };
    let spliced = 0;
    for (let i = 0; i < 3_000; i++) {
      const body: Record<string, unknown> = { model: pick(['main', 'gpt-4o', 'm"x']) };
      for (let j = Math.floor(r() * 4); j > 0; j--)
        body[pick(['messages', 'input', 'meta', 'stream'])] = value(1);
      const text = r() < 0.5 ? JSON.stringify(body) : spaced(body);
      const b = parsed(text);
      const add = r() < 0.5;
      const out = withModel(b, 'up-model', add);
      if (out === null) continue;
      spliced++;
      const want: Record<string, unknown> = { ...b, model: 'up-model' };
      if (add) want.stream_options = { include_usage: true };
      expect(JSON.parse(out)).toEqual(want);
    }
    expect(spliced).toBeGreaterThan(500); // the generator does reach the fast path
  });
});
