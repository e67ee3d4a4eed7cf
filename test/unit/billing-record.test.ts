/**
 * A billing record survives its trip through the queue (encode, decode) field for field, and the journal
 * it becomes carries the usage plus the sale and cost, with the uncollected part when a wallet fell short.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { saleJournal } from '../../src/billing/journal.js';
import { type BillingRecord, decodeRecord, encodeRecord } from '../../src/billing/types.js';

const record = fc.record(
  {
    id: fc.string({ minLength: 1 }),
    requestId: fc.string({ minLength: 1 }),
    taskId: fc.string({ minLength: 1 }),
    appId: fc.string({ minLength: 1 }),
    prepaid: fc.boolean(),
    alias: fc.string(),
    channel: fc.string(),
    sale: fc.bigInt({ min: 0n, max: 2n ** 53n }),
    cost: fc.bigInt({ min: 0n, max: 2n ** 53n }),
    usage: fc.dictionary(fc.string(), fc.oneof(fc.integer(), fc.string(), fc.boolean())),
    at: fc.nat(),
  },
  { requiredKeys: ['id', 'appId', 'prepaid', 'alias', 'channel', 'sale', 'cost', 'usage', 'at'] },
);

describe('billing record', () => {
  it('decode(encode(r)) is r, with charged = sale unless the queue says otherwise (property)', () => {
    fc.assert(
      fc.property(record, (r) => {
        const back = decodeRecord(encodeRecord(r as BillingRecord), undefined);
        expect(back).toEqual({ ...r, usage: r.usage, charged: r.sale });
        expect(decodeRecord(encodeRecord(r as BillingRecord), '7').charged).toBe(7n);
      }),
      { numRuns: 300 },
    );
  });

  it('the sale journal carries the usage, sale and cost, and the uncollected part', () => {
    const r: BillingRecord = {
      id: 'req_1',
      requestId: 'req_1',
      appId: 'a',
      prepaid: true,
      alias: 'm',
      channel: 'c',
      sale: 100n,
      cost: 60n,
      usage: { input_tokens: 3 },
      at: 0,
    };
    const j = saleJournal(r, 40n)!;
    expect(j.spec).toMatchObject({
      idemKey: 'sale:req_1',
      kind: 'sale',
      requestId: 'req_1',
      appId: 'a',
      alias: 'm',
      channel: 'c',
    });
    expect(j.spec.taskId).toBeUndefined();
    expect(j.spec.usage).toEqual({
      input_tokens: 3,
      uncollected_micros: '60',
      sale_micros: '100',
      cost_micros: '60',
    });
    expect(r.usage).toEqual({ input_tokens: 3 }); // the record's own usage is not touched
    expect(j.spec.entries).toEqual([
      { account: 'wallet:a', debit: 40n },
      { account: 'bad_debt', debit: 60n },
      { account: 'revenue', credit: 100n },
      { account: 'cogs:c', debit: 60n },
      { account: 'payable:c', credit: 60n },
    ]);
  });
});
