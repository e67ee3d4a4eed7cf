/**
 * One schema per admin resource: the validator and the OpenAPI document read the same TypeBox objects, so
 * changing one changes both; and the refusals keep the API's wording (`<field>: <what is wrong>`).
 */
import { describe, expect, it } from 'vitest';
import { Value } from '@sinclair/typebox/value';
import { checkBody, validateWrite } from '../../src/config/validate.js';
import { AliasCreate, ChannelCreate, RESOURCES } from '../../src/config/schema.js';
import { buildAdminOpenApi, SCHEMAS } from '../../src/http/openapi.js';
import { Fund, KillSwitchWrite } from '../../src/http/schemas.js';
import { OutboundPolicy } from '../../src/lib/outbound.js';

const outbound = new OutboundPolicy({ allow: [] });
const channel = { code: 'oa', provider: 'openai', base_url: 'https://api.openai.com/v1/' };
const refusal = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return (e as Error).message;
  }
  return null;
};

type Doc = { components: { schemas: Record<string, unknown> }; paths: Record<string, Record<string, any>> };

describe('admin schemas', () => {
  it('the document holds the very schema objects the API validates with', () => {
    const doc = buildAdminOpenApi() as Doc;
    for (const r of Object.values(RESOURCES)) {
      expect(doc.components.schemas[r.name]).toBe(r.row);
      expect(doc.components.schemas[`${r.name}Create`]).toBe(r.create);
      expect(doc.components.schemas[`${r.name}Patch`]).toBe(r.patch);
    }
    expect(doc.components.schemas.Fund).toBe(Fund);
    const post = doc.paths['/channels']!.post.requestBody.content['application/json'].schema;
    const patch = doc.paths['/channels/{code}']!.patch.requestBody.content['application/json'].schema;
    expect([post.$ref, patch.$ref]).toEqual([
      '#/components/schemas/ChannelCreate',
      '#/components/schemas/ChannelPatch',
    ]);
    // what GET /openapi.json serves: plain JSON Schema (TypeBox's symbols don't survive JSON)
    const served = JSON.parse(JSON.stringify(doc)) as Doc;
    expect(served.components.schemas.AliasCreate).toEqual(JSON.parse(JSON.stringify(AliasCreate)));
    expect(served.components.schemas.ChannelCreate).toMatchObject({
      required: ['code', 'provider', 'base_url'],
      additionalProperties: false,
    });
    // every request body the document names is a schema it holds
    for (const ops of Object.values(doc.paths))
      for (const op of Object.values(ops)) {
        const ref = op.requestBody?.content['application/json'].schema.$ref as string | undefined;
        if (ref) expect(SCHEMAS[ref.split('/').pop()!], ref).toBeTruthy();
      }
  });

  it('a change to a schema changes both the validation and the document', () => {
    const weight = ChannelCreate.properties.weight as { maximum: number };
    const before = weight.maximum;
    expect(validateWrite('channel', { ...channel, weight: 50 }, 'create', outbound).weight).toBe(50);
    weight.maximum = 10;
    try {
      expect(refusal(() => validateWrite('channel', { ...channel, weight: 50 }, 'create', outbound))).toBe(
        'weight: must be an integer in [0, 10]',
      );
      const doc = JSON.parse(JSON.stringify(buildAdminOpenApi())) as Doc;
      expect(doc.components.schemas.ChannelCreate).toMatchObject({ properties: { weight: { maximum: 10 } } });
    } finally {
      weight.maximum = before;
    }
    expect(validateWrite('channel', { ...channel, weight: 50 }, 'create', outbound).weight).toBe(50);
  });

  it('valid writes give the same columns as before: trimmed URL, weighted chain, money as digits', () => {
    const c = validateWrite(
      'channel',
      { ...channel, settings: { timeouts: { connectMs: 5 } } },
      'create',
      outbound,
    );
    expect(c.base_url).toBe('https://api.openai.com/v1');
    expect(c.settings).toBe('{"timeouts":{"connectMs":5}}');
    const a = validateWrite(
      'alias',
      {
        name: 'gpt',
        chain: [
          { targets: [{ channel: 'oa', model: 'm', extra: 1 }] },
          [{ channel: 'b', model: 'n', weight: 3 }],
        ],
      },
      'create',
      outbound,
    );
    expect(JSON.parse(a.chain as string)).toEqual([
      { targets: [{ channel: 'oa', model: 'm', weight: 1 }] },
      { targets: [{ channel: 'b', model: 'n', weight: 3 }] },
    ]);
    const p = validateWrite(
      'price',
      { alias: 'gpt', sale_input_per_mtok: 2500000, cost_input_per_mtok: '99999999999999999' },
      'create',
      outbound,
    );
    expect([p.sale_input_per_mtok, p.cost_input_per_mtok]).toEqual(['2500000', '99999999999999999']);
    expect(
      validateWrite('app', { name: 'x', effective_to: null }, 'patch', outbound).effective_to,
    ).toBeNull();
  });

  it('refusals name the field and say what is wrong', () => {
    const cases: Array<[Parameters<typeof validateWrite>[0], unknown, 'create' | 'patch', string]> = [
      ['channel', { ...channel, weight: 'abc' }, 'create', 'weight: must be an integer in [0, 1000000]'],
      [
        'channel',
        { ...channel, code: 'a b' },
        'create',
        'code: letters, digits, . _ : - (1-64 characters, starting with a letter or digit)',
      ],
      [
        'channel',
        { ...channel, provider: 'no_such_kind' },
        'create',
        'provider: unknown provider kind "no_such_kind"; known: openai',
      ],
      ['channel', { ...channel, base_url: 'ftp://x' }, 'create', 'base_url: must be an absolute http(s) URL'],
      [
        'channel',
        { ...channel, settings: { colour: 1 } },
        'create',
        'settings.colour: is not a known setting',
      ],
      [
        'channel',
        { ...channel, settings: { breaker: { failureRate: 2 } } },
        'create',
        'settings.breaker.failureRate: must be a number in [0, 1]',
      ],
      [
        'channel',
        { ...channel, settings: { headers: { a: 1 } } },
        'create',
        'settings.headers: must map header names to strings',
      ],
      ['channel', { code: 'x' }, 'patch', 'code: cannot be changed; create a new row instead'],
      ['channel', { provider: 'openai', base_url: 'https://x.example' }, 'create', 'code: is required'],
      ['channel', { colour: 1 }, 'patch', 'colour: is not a field of channel'],
      ['app', JSON.parse('{"constructor": 1}'), 'patch', 'constructor: is not a field of app'],
      ['app', JSON.parse('{"__proto__": 1}'), 'patch', '__proto__: is not a field of app'],
      ['alias', { name: 'a', chain: [] }, 'create', 'chain: must be a non-empty array of tiers'],
      [
        'alias',
        { name: 'a', chain: [{ targets: [] }] },
        'create',
        'chain[0].targets: must be a non-empty array',
      ],
      [
        'alias',
        { name: 'a', chain: [{ targets: [{ channel: 'c', model: 'm', weight: 'abc' }] }] },
        'create',
        'chain[0].targets[0].weight: must be an integer in [0, 1000000]',
      ],
      [
        'alias',
        { name: 'a', chain: [{ targets: [{ model: 'm' }] }] },
        'create',
        'chain[0].targets[0].channel: must be a non-empty string',
      ],
      ['app', { name: 'a', billing: 'free' }, 'create', "billing: must be 'prepaid' or 'postpaid'"],
      ['app', { effective_from: 'soon' }, 'patch', 'effective_from: must be an ISO-8601 timestamp or null'],
      [
        'app',
        { effective_from: '2030-01-02', effective_to: '2030-01-01' },
        'patch',
        'effective_to: must be after effective_from',
      ],
      [
        'quota',
        { scope: 'key', scope_id: 'k', cost_per_day: -1 },
        'create',
        'cost_per_day: must be a non-negative integer (a JSON integer or a digit string)',
      ],
      ['api_key', { queue_mode: 'LATER' }, 'patch', "queue_mode: must be 'REJECT', 'WAIT' or 'ASYNC'"],
    ];
    for (const [entity, body, mode, msg] of cases)
      expect(
        refusal(() => validateWrite(entity, body, mode, outbound)),
        JSON.stringify(body),
      ).toContain(msg);
  });

  it('the small bodies keep their wording, and the schema alone agrees with the validator', () => {
    expect(refusal(() => checkBody(KillSwitchWrite, {}, ' '))).toBe('enabled must be a boolean');
    expect(refusal(() => checkBody(KillSwitchWrite, { enabled: 'yes' }, ' '))).toBe(
      'enabled must be a boolean',
    );
    expect(refusal(() => checkBody(Fund, { amount_micros: 0 }, ' '))).toMatch(
      /^amount_micros must be a positive integer/,
    );
    expect(checkBody(Fund, { amount_micros: '5', idempotency_key: 'k' }, ' ')).toEqual({
      amount_micros: '5',
      idempotency_key: 'k',
    });
    // TypeBox's own check (what any other client of the published schema would run) says the same
    expect(Value.Check(ChannelCreate, { ...channel, weight: 'abc' })).toBe(false);
    expect(Value.Check(ChannelCreate, { ...channel, weight: 3 })).toBe(true);
  });
});
