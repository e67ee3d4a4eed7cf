/**
 * Bedrock as a channel, piece by piece: OpenAI chat -> Converse (and the refusals), Converse JSON and
 * stream events -> OpenAI chat with usage (cache reads added to the prompt), the failure table, the
 * credential formats and region, the model id's path encoding, and SigV4 (an AWS test-suite vector, and
 * the signed call checked by an independent signer).
 */
import { Sha256 } from '@aws-crypto/sha256-js';
import { SignatureV4 } from '@smithy/signature-v4';
import { describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/core/errors.js';
import { UpstreamFailureError } from '../../src/providers/classify.js';
import { classifyBedrock, exceptionName, streamException } from '../../src/providers/bedrock/classify.js';
import {
  ChatFromConverseStream,
  bedrockAuthorize,
  bedrockExchange,
} from '../../src/providers/bedrock/exchange.js';
import { converseToOpenAIResponse, openaiToConverseRequest } from '../../src/providers/bedrock/outbound.js';
import {
  NodeSha256,
  conversePath,
  parseCredential,
  regionOfHost,
  resolveRegion,
  signCall,
} from '../../src/providers/bedrock/sign.js';
import type { ChatRequest } from '../../src/providers/openai/wire.js';
import type { UpstreamEndpoint } from '../../src/providers/types.js';

const PNG = 'data:image/png;base64,iVBORw0KGgo=';

describe('OpenAI chat -> Converse', () => {
  it('maps system, user text and images, inference settings and tools', () => {
    const req = openaiToConverseRequest({
      model: 'x',
      messages: [
        { role: 'system', content: 'be brief' },
        { role: 'developer', content: [{ type: 'text', text: 'and kind' }] },
        {
          role: 'user',
          content: [
            { type: 'text', text: 'what is this?' },
            { type: 'image_url', image_url: { url: PNG, detail: 'low' } },
          ],
        },
      ],
      max_completion_tokens: 100,
      temperature: 0.2,
      top_p: 0.9,
      stop: 'END',
      stream: true,
      stream_options: { include_usage: true },
      user: 'u1',
      tools: [
        {
          type: 'function',
          function: {
            name: 'lookup',
            description: 'finds',
            parameters: { type: 'object', properties: { q: { type: 'string' } } },
          },
        },
      ],
      tool_choice: { type: 'function', function: { name: 'lookup' } },
    } as ChatRequest);
    expect(req).toEqual({
      system: [{ text: 'be brief' }, { text: 'and kind' }],
      messages: [
        {
          role: 'user',
          content: [
            { text: 'what is this?' },
            { image: { format: 'png', source: { bytes: 'iVBORw0KGgo=' } } },
          ],
        },
      ],
      inferenceConfig: { maxTokens: 100, temperature: 0.2, topP: 0.9, stopSequences: ['END'] },
      toolConfig: {
        tools: [
          {
            toolSpec: {
              name: 'lookup',
              description: 'finds',
              inputSchema: { json: { type: 'object', properties: { q: { type: 'string' } } } },
            },
          },
        ],
        toolChoice: { tool: { name: 'lookup' } },
      },
    });
  });

  it('a tool round trip: toolUse in the assistant turn, results merged into one user turn', () => {
    const req = openaiToConverseRequest({
      model: 'x',
      messages: [
        { role: 'user', content: 'weather?' },
        {
          role: 'assistant',
          content: '',
          tool_calls: [
            { id: 't1', type: 'function', function: { name: 'w', arguments: '{"city":"Oslo"}' } },
            { id: 't2', type: 'function', function: { name: 'w', arguments: '' } },
          ],
        },
        { role: 'tool', tool_call_id: 't1', content: 'cold' },
        { role: 'tool', tool_call_id: 't2', content: [{ type: 'text', text: 'warm' }] },
      ],
      tools: [{ type: 'function', function: { name: 'w' } }],
      tool_choice: 'required',
    } as ChatRequest);
    expect(req.messages).toEqual([
      { role: 'user', content: [{ text: 'weather?' }] },
      {
        role: 'assistant',
        content: [
          { toolUse: { toolUseId: 't1', name: 'w', input: { city: 'Oslo' } } },
          { toolUse: { toolUseId: 't2', name: 'w', input: {} } },
        ],
      },
      {
        role: 'user',
        content: [
          { toolResult: { toolUseId: 't1', content: [{ text: 'cold' }] } },
          { toolResult: { toolUseId: 't2', content: [{ text: 'warm' }] } },
        ],
      },
    ]);
    expect(req.toolConfig).toEqual({
      tools: [{ toolSpec: { name: 'w', inputSchema: { json: { type: 'object', properties: {} } } } }],
      toolChoice: { any: {} },
    });
  });

  it('tool_choice "none": the tools stay home, unless the history holds tool calls', () => {
    const base = { model: 'x', tools: [{ type: 'function', function: { name: 'w' } }], tool_choice: 'none' };
    const r = openaiToConverseRequest({
      ...base,
      messages: [{ role: 'user', content: 'hi' }],
    } as ChatRequest);
    expect(r.toolConfig).toBeUndefined();
    expect(() =>
      openaiToConverseRequest({
        ...base,
        messages: [
          { role: 'user', content: 'hi' },
          {
            role: 'assistant',
            tool_calls: [{ id: 't', type: 'function', function: { name: 'w', arguments: '{}' } }],
          },
          { role: 'tool', tool_call_id: 't', content: 'ok' },
        ],
      } as ChatRequest),
    ).toThrow(/tool_choice/);
  });

  it.each([
    ['n', { n: 2 }],
    ['logprobs', { logprobs: true }],
    ['seed', { seed: 1 }],
    ['presence_penalty', { presence_penalty: 0.5 }],
    ['parallel_tool_calls', { parallel_tool_calls: false }],
    ['response_format', { response_format: { type: 'json_object' } }],
    ['frobnicate', { frobnicate: 1 }],
  ])('refuses %s with a 400 naming it', (param, extra) => {
    try {
      openaiToConverseRequest({
        model: 'x',
        messages: [{ role: 'user', content: 'hi' }],
        ...extra,
      } as ChatRequest);
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(GatewayError);
      expect((e as GatewayError).status).toBe(400);
      expect((e as GatewayError).param).toBe(param);
    }
  });

  it('refuses an http image URL and a late system message; drops blank text', () => {
    expect(() =>
      openaiToConverseRequest({
        model: 'x',
        messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'https://x/y.png' } }] }],
      } as ChatRequest),
    ).toThrow(/base64 data URLs/);
    expect(() =>
      openaiToConverseRequest({
        model: 'x',
        messages: [
          { role: 'user', content: 'a' },
          { role: 'system', content: 'late' },
        ],
      } as ChatRequest),
    ).toThrow(/system prompt before all turns/);
    const r = openaiToConverseRequest({
      model: 'x',
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: ' ' },
            { type: 'text', text: 'x' },
          ],
        },
      ],
    } as ChatRequest);
    expect(r.messages).toEqual([{ role: 'user', content: [{ text: 'x' }] }]);
  });
});

describe('Converse -> OpenAI chat', () => {
  it('a JSON answer with a tool call; usage adds cache reads and writes to the prompt', () => {
    const c = converseToOpenAIResponse(
      {
        output: {
          message: {
            role: 'assistant',
            content: [
              { reasoningContent: { reasoningText: { text: 'hmm' } } },
              { text: 'Let me look.' },
              { toolUse: { toolUseId: 'tu1', name: 'lookup', input: { q: 'x' } } },
            ],
          },
        },
        stopReason: 'tool_use',
        usage: {
          inputTokens: 10,
          outputTokens: 5,
          totalTokens: 45,
          cacheReadInputTokens: 20,
          cacheWriteInputTokens: 10,
        },
      },
      'my-alias',
    );
    expect(c.model).toBe('my-alias');
    expect(c.choices[0]).toMatchObject({
      finish_reason: 'tool_calls',
      message: {
        content: 'Let me look.',
        tool_calls: [{ id: 'tu1', type: 'function', function: { name: 'lookup', arguments: '{"q":"x"}' } }],
      },
    });
    expect(c.usage).toEqual({
      prompt_tokens: 40,
      completion_tokens: 5,
      total_tokens: 45,
      prompt_tokens_details: { cached_tokens: 20 },
    });
  });

  it('the JSON decoder refuses a body that is not a Converse answer', () => {
    const ex = bedrockExchange(
      'openai_chat',
      { model: 'a', messages: [{ role: 'user', content: 'hi' }] },
      ep(),
      'm',
      'a',
    );
    expect(() => ex.decodeJson('{"choices":[]}')).toThrow(/not a Converse response/);
  });

  it('a stream: text, a tool call, the stop reason; done (and usage) only at metadata', () => {
    const t = new ChatFromConverseStream('al', true);
    const push = (event: string, data: object) => t.items({ event, data: JSON.stringify(data) });
    expect(push('messageStart', { role: 'assistant' })[0]!.choices[0]!.delta).toEqual({
      role: 'assistant',
      content: '',
    });
    expect(
      push('contentBlockDelta', { contentBlockIndex: 0, delta: { text: 'Hi ' } })[0]!.choices[0]!.delta,
    ).toEqual({ content: 'Hi ' });
    push('contentBlockStop', { contentBlockIndex: 0 });
    expect(
      push('contentBlockStart', {
        contentBlockIndex: 1,
        start: { toolUse: { toolUseId: 'tu', name: 'f' } },
      })[0]!.choices[0]!.delta,
    ).toEqual({
      tool_calls: [{ index: 0, id: 'tu', type: 'function', function: { name: 'f', arguments: '' } }],
    });
    expect(
      push('contentBlockDelta', { contentBlockIndex: 1, delta: { toolUse: { input: '{"a":' } } })[0]!
        .choices[0]!.delta,
    ).toEqual({
      tool_calls: [{ index: 0, function: { arguments: '{"a":' } }],
    });
    const stop = push('messageStop', { stopReason: 'tool_use' });
    expect(stop[0]!.choices[0]!.finish_reason).toBe('tool_calls');
    expect(t.done).toBe(false);
    expect(t.usage()).toBeNull();
    const meta = push('metadata', {
      usage: { inputTokens: 7, outputTokens: 3, cacheReadInputTokens: 2 },
      metrics: { latencyMs: 1 },
    });
    expect(t.done).toBe(true);
    expect(t.usage()).toEqual({ inputTokens: 9, outputTokens: 3, cachedTokens: 2, cacheWriteTokens: 0 });
    expect(meta[0]).toMatchObject({ choices: [], usage: { prompt_tokens: 9, completion_tokens: 3 } });
    // The edge closes an ended stream with [DONE], once.
    expect(t.onEvent({ event: 'contentBlockStop', data: '{}' })).toBe('data: [DONE]\n\n');
    expect(t.onEvent({ event: 'contentBlockStop', data: '{}' })).toBe('');
  });

  it('a stream exception is a classified failure (throttling: rate limited, not the breaker)', () => {
    const t = new ChatFromConverseStream('al', false);
    try {
      t.items({ event: 'exception:throttlingException', data: '{"message":"slow down"}' });
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(UpstreamFailureError);
      expect((e as UpstreamFailureError).failure).toMatchObject({
        kind: 'rate_limited',
        countsAsFailure: false,
        tryNext: true,
        upstreamType: 'ThrottlingException',
      });
    }
    expect(streamException('modelStreamErrorException', '{"message":"x"}').failure).toMatchObject({
      kind: 'server_error',
      countsAsFailure: true,
    });
    expect(streamException('validationException', '{"message":"bad"}').failure).toMatchObject({
      kind: 'client_error',
      tryNext: false,
    });
  });
});

describe('classifyBedrock', () => {
  const h = (t: string) => ({
    'x-amzn-errortype': `${t}:http://internal.amazon.com/coral/com.amazon.bedrock/`,
  });
  it.each([
    [429, 'ThrottlingException', 'rate_limited', false, true, undefined],
    [503, 'ServiceUnavailableException', 'server_error', true, true, undefined],
    [429, 'ModelNotReadyException', 'server_error', true, true, undefined],
    [500, 'InternalServerException', 'server_error', true, true, undefined],
    [408, 'ModelTimeoutException', 'request_timeout', true, true, undefined],
    [424, 'ModelErrorException', 'server_error', true, true, undefined],
    [400, 'ValidationException', 'client_error', false, false, undefined],
    [403, 'AccessDeniedException', 'auth_failed', false, true, 'invalid'],
    [403, 'UnrecognizedClientException', 'auth_failed', false, true, 'invalid'],
    [403, 'InvalidSignatureException', 'auth_failed', false, true, 'invalid'],
  ])('%i %s -> %s', (status, type, kind, counts, next, credential) => {
    const f = classifyBedrock(status, h(type), '{"message":"words"}');
    expect(f).toMatchObject({
      kind,
      status,
      countsAsFailure: counts,
      tryNext: next,
      message: 'words',
      upstreamType: type,
    });
    expect(f.credential).toBe(credential);
    expect(f.body).toBeUndefined(); // never passed through: {"message"} is no client's error shape
  });

  it('a 429 honours Retry-After; a validation error about length is context_length', () => {
    expect(classifyBedrock(429, { ...h('ThrottlingException'), 'retry-after': '7' }, '{}').cooldownMs).toBe(
      7000,
    );
    expect(
      classifyBedrock(
        400,
        h('ValidationException'),
        '{"message":"Input is too long for requested model. maximum context length exceeded"}',
      ).kind,
    ).toBe('context_length');
  });

  it('reads the type from the body when the header is missing, and the status when both are', () => {
    expect(
      classifyBedrock(400, {}, '{"__type":"com.amazon.coral.validate#ValidationException","message":"m"}')
        .kind,
    ).toBe('client_error');
    expect(classifyBedrock(502, {}, 'not json').kind).toBe('server_error');
    expect(exceptionName('aws.protocols#ThrottlingException')).toBe('ThrottlingException');
    expect(exceptionName('throttlingException')).toBe('ThrottlingException');
  });
});

function ep(over: Partial<UpstreamEndpoint> = {}): UpstreamEndpoint {
  return {
    code: 'br',
    provider: 'bedrock',
    baseUrl: 'https://bedrock-runtime.eu-west-3.amazonaws.com',
    credential: 'AKIDEXAMPLE:secret',
    headers: {},
    ...over,
  };
}

describe('credentials, region and path', () => {
  it('reads JSON, colon-separated and environment credentials', () => {
    expect(
      parseCredential('{"accessKeyId":"A","secretAccessKey":"S","sessionToken":"T","region":"us-west-2"}'),
    ).toEqual({
      credentials: { accessKeyId: 'A', secretAccessKey: 'S', sessionToken: 'T' },
      region: 'us-west-2',
    });
    expect(parseCredential('A:S')).toEqual({ credentials: { accessKeyId: 'A', secretAccessKey: 'S' } });
    expect(parseCredential('A:S:T')).toEqual({
      credentials: { accessKeyId: 'A', secretAccessKey: 'S', sessionToken: 'T' },
    });
    expect(
      parseCredential('', { AWS_ACCESS_KEY_ID: 'E', AWS_SECRET_ACCESS_KEY: 'X', AWS_SESSION_TOKEN: 'Y' }),
    ).toEqual({
      credentials: { accessKeyId: 'E', secretAccessKey: 'X', sessionToken: 'Y' },
    });
    expect(() => parseCredential('', {})).toThrow(/AWS_ACCESS_KEY_ID/);
    expect(() => parseCredential('only-one-part')).toThrow(/AKID:SECRET/);
    expect(() => parseCredential('{"accessKeyId":"A"}')).toThrow(/secretAccessKey/);
  });

  it('takes the region from the credential, else the host, else AWS_REGION', () => {
    expect(regionOfHost('bedrock-runtime.ap-southeast-2.amazonaws.com')).toBe('ap-southeast-2');
    expect(regionOfHost('bedrock-runtime-fips.us-gov-west-1.amazonaws.com')).toBe('us-gov-west-1');
    expect(regionOfHost('vpce-0abc.bedrock-runtime.eu-central-1.vpce.amazonaws.com')).toBe('eu-central-1');
    const auth = { credentials: { accessKeyId: 'A', secretAccessKey: 'S' } };
    expect(resolveRegion(auth, 'https://bedrock-runtime.eu-west-3.amazonaws.com', {})).toBe('eu-west-3');
    expect(
      resolveRegion({ ...auth, region: 'us-east-2' }, 'https://bedrock-runtime.eu-west-3.amazonaws.com', {}),
    ).toBe('us-east-2');
    expect(resolveRegion(auth, 'http://127.0.0.1:9', { AWS_REGION: 'sa-east-1' })).toBe('sa-east-1');
    expect(() => resolveRegion(auth, 'http://127.0.0.1:9', {})).toThrow(/no region/);
  });

  it('encodes the model id as one path label, as the AWS SDK does', () => {
    expect(conversePath('anthropic.claude-3-5-sonnet-20240620-v1:0', false)).toBe(
      '/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse',
    );
    expect(conversePath('us.anthropic.claude-3-7-sonnet-20250219-v1:0', true)).toBe(
      '/model/us.anthropic.claude-3-7-sonnet-20250219-v1%3A0/converse-stream',
    );
    expect(conversePath('arn:aws:bedrock:us-east-1:123:inference-profile/x(1)', false)).toBe(
      '/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123%3Ainference-profile%2Fx%281%29/converse',
    );
  });
});

describe('SigV4', () => {
  it('the node:crypto hash gives the AWS test-suite signature (get-vanilla)', async () => {
    // https://docs.aws.amazon.com/IAM/latest/UserGuide/signature-v4-test-suite.html (get-vanilla)
    const signer = new SignatureV4({
      service: 'service',
      region: 'us-east-1',
      credentials: {
        accessKeyId: 'AKIDEXAMPLE',
        secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY',
      },
      sha256: NodeSha256,
      applyChecksum: false,
    });
    const r = await signer.sign(
      {
        method: 'GET',
        protocol: 'https:',
        hostname: 'example.amazonaws.com',
        path: '/',
        query: {},
        headers: { host: 'example.amazonaws.com' },
      },
      { signingDate: new Date('2015-08-30T12:36:00Z') },
    );
    expect(r.headers.authorization).toBe(
      'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31',
    );
  });

  it('a signed call verifies with an independent signer; the session token is signed in', async () => {
    const e = ep({
      baseUrl: 'https://bedrock-runtime.eu-west-3.amazonaws.com/prefix/',
      credential: 'AKIDEXAMPLE:s3cret:TOKEN',
    });
    const ex = bedrockExchange(
      'openai_chat',
      { model: 'a', messages: [{ role: 'user', content: 'hi' }], stream: true },
      e,
      'anthropic.claude-v2:1',
      'a',
    );
    const now = new Date('2026-01-02T03:04:05Z');
    const call = await signCall(ex.call, e, parseCredential(e.credential), 'eu-west-3', now);
    expect(call.headers.host).toBe('bedrock-runtime.eu-west-3.amazonaws.com');
    expect(call.headers['x-amz-security-token']).toBe('TOKEN');
    expect(call.headers.accept).toBe('application/vnd.amazon.eventstream');
    const independent = new SignatureV4({
      service: 'bedrock',
      region: 'eu-west-3',
      credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 's3cret', sessionToken: 'TOKEN' },
      sha256: Sha256,
    });
    const { authorization: _a, 'x-amz-date': _d, ...unsigned } = call.headers;
    const again = await independent.sign(
      {
        method: 'POST',
        protocol: 'https:',
        hostname: 'bedrock-runtime.eu-west-3.amazonaws.com',
        path: '/prefix/model/anthropic.claude-v2%3A1/converse-stream',
        query: {},
        headers: unsigned,
        body: ex.call.body as string,
      },
      { signingDate: now },
    );
    expect(call.headers.authorization).toBe(again.headers.authorization);
    expect(call.headers.authorization).toMatch(
      /Credential=AKIDEXAMPLE\/20260102\/eu-west-3\/bedrock\/aws4_request/,
    );
  });

  it('authorize: a channel without usable credentials fails as its credential, not the request', async () => {
    const ex = bedrockExchange(
      'openai_chat',
      { model: 'a', messages: [{ role: 'user', content: 'hi' }] },
      ep(),
      'm',
      'a',
    );
    const f = await bedrockAuthorize(ep({ credential: 'nonsense' }), ex.call).catch((e: unknown) => e);
    expect(f).toBeInstanceOf(UpstreamFailureError);
    expect((f as UpstreamFailureError).failure).toMatchObject({ kind: 'auth_failed', credential: 'invalid' });
    const ok = await bedrockAuthorize(ep(), ex.call);
    expect(ok.headers.authorization).toMatch(
      /^AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE\/\d{8}\/eu-west-3\/bedrock\//,
    );
  });
});
