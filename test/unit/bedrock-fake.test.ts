/**
 * The fake Bedrock runtime's signature check, called directly with calls the gateway's signer made: a
 * good signature is served, a tampered body, a wrong secret, a wrong region and an unknown key are each
 * refused with the exception AWS names, in `x-amzn-ErrorType`, with Bedrock's `{"message"}` body.
 */
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FAKE_AWS, type FakeBedrockUpstream, startFakeBedrock } from '../../fakes/index.js';
import { bedrockExchange } from '../../src/providers/bedrock/exchange.js';
import { EventStreamDecoder } from '../../src/providers/bedrock/eventstream.js';
import { signCall } from '../../src/providers/bedrock/sign.js';
import type { PreparedCall, UpstreamEndpoint } from '../../src/providers/types.js';

let br: FakeBedrockUpstream;
beforeAll(async () => {
  br = await startFakeBedrock({ name: 'fb' });
});
afterAll(async () => {
  await br?.close();
});

const ep = (): UpstreamEndpoint => ({
  code: 'b',
  provider: 'bedrock',
  baseUrl: br.url,
  credential: '',
  headers: {},
});
const creds = (
  secretAccessKey: string = FAKE_AWS.secretAccessKey,
  accessKeyId: string = FAKE_AWS.accessKeyId,
) => ({
  credentials: { accessKeyId, secretAccessKey },
});

function call(stream = false): PreparedCall {
  return bedrockExchange(
    'openai_chat',
    { model: 'a', messages: [{ role: 'user', content: 'hi there' }], stream },
    ep(),
    'anthropic.claude-3-haiku-20240307-v1:0',
    'a',
  ).call;
}

async function send(c: PreparedCall, body = c.body as string) {
  const r = await request(br.url + c.path, { method: 'POST', headers: c.headers, body });
  return { status: r.statusCode, headers: r.headers, bytes: Buffer.from(await r.body.arrayBuffer()) };
}

describe('fake bedrock: SigV4', () => {
  it('serves a correctly signed call (JSON and the binary stream)', async () => {
    const ok = await send(await signCall(call(), ep(), creds(), FAKE_AWS.region));
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.bytes.toString())).toMatchObject({
      output: { message: { role: 'assistant', content: [{ text: 'Hello from fb: hi there' }] } },
      stopReason: 'end_turn',
    });
    const s = await send(await signCall(call(true), ep(), creds(), FAKE_AWS.region));
    expect(s.status).toBe(200);
    expect(s.headers['content-type']).toBe('application/vnd.amazon.eventstream');
    const events = new EventStreamDecoder().push(s.bytes).map((e) => e.event);
    expect(events[0]).toBe('messageStart');
    expect(events.slice(-2)).toEqual(['messageStop', 'metadata']);
  });

  it.each([
    [
      'a body changed after signing',
      async () => send(await signCall(call(), ep(), creds(), FAKE_AWS.region), '{"messages":[]}'),
      'InvalidSignatureException',
    ],
    [
      'a wrong secret',
      async () => send(await signCall(call(), ep(), creds('wrong'), FAKE_AWS.region)),
      'InvalidSignatureException',
    ],
    [
      'another region',
      async () => send(await signCall(call(), ep(), creds(), 'eu-west-1')),
      'InvalidSignatureException',
    ],
    [
      'an unknown access key',
      async () =>
        send(await signCall(call(), ep(), creds(FAKE_AWS.secretAccessKey, 'AKIAUNKNOWN'), FAKE_AWS.region)),
      'UnrecognizedClientException',
    ],
    ['no signature at all', async () => send(call()), 'MissingAuthenticationTokenException'],
  ])('refuses %s: 403 %s', async (_what, go, type) => {
    const r = await go();
    expect(r.status).toBe(403);
    expect(r.headers['x-amzn-errortype']).toBe(
      `${type}:http://internal.amazon.com/coral/com.amazon.bedrock/`,
    );
    expect(Object.keys(JSON.parse(r.bytes.toString()))).toEqual(['message']);
  });
});
