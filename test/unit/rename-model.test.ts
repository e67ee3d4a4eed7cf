import { describe, expect, it } from 'vitest';
import { renameModel } from '../../src/providers/shared.js';

describe('renameModel (a passthrough answer renamed without re-serializing it)', () => {
  it('renames the one top-level model and keeps every other byte', () => {
    const text = '{"id":"c1","model":"gpt-4o-mini-2024","choices":[{"message":{"content":"say \\"model\\":\\"x\\""}}],"usage":{"prompt_tokens":1}}';
    const out = renameModel(text, JSON.parse(text).model, 'alias/one')!;
    expect(JSON.parse(out)).toEqual({ ...JSON.parse(text), model: 'alias/one' });
    expect(out.replace('"model":"alias/one"', '"model":"gpt-4o-mini-2024"')).toBe(text);
  });
  it('declines (null: re-serialize instead) when the field is ambiguous, spaced or not a string', () => {
    expect(renameModel('{"model":"m","meta":{"model":"m"}}', 'm', 'a')).toBeNull();
    expect(renameModel('{"model" : "m"}', 'm', 'a')).toBeNull();
    expect(renameModel('{"model":1}', 1, 'a')).toBeNull();
    expect(renameModel('{"x":1}', undefined, 'a')).toBeNull();
  });
  it('escapes an alias that needs it', () => {
    expect(JSON.parse(renameModel('{"model":"m"}', 'm', 'a"b\\c')!).model).toBe('a"b\\c');
  });
});
