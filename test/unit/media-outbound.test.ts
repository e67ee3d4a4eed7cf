/**
 * Media channels are operator URLs too: their submit, poll, cancel and content calls (on fetch, not the
 * chat transport's pools) go through the outbound policy's connector, so a channel at a loopback address
 * is refused when it connects unless the allow list names loopback. Only 127.0.0.1 is ever connected to.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OutboundPolicy } from '../../src/lib/outbound.js';
import { MediaCallError, mediaAdapter } from '../../src/providers/media.js';
import type { UpstreamEndpoint } from '../../src/providers/types.js';

const received: string[] = [];
const server = createServer((req, res) => {
  received.push(`${req.method} ${req.url}`);
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ job_id: 'job_1', status: 'queued' }));
});
let base = '';

beforeAll(async () => {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
});
afterAll(async () => {
  await new Promise((r) => server.close(r));
});

const ep = (policy: OutboundPolicy): UpstreamEndpoint => ({
  code: 'jobs',
  provider: 'jobs' as UpstreamEndpoint['provider'],
  baseUrl: base,
  credential: 'k',
  headers: {},
  dispatcher: policy.dispatcher('operator'),
});
const req = { kind: 'video' as const, model: 'kling-v1', prompt: 'waves' };

describe('media calls and the outbound policy', () => {
  it('a loopback media channel is refused at connect without the allow list: nothing arrives', async () => {
    const strict = new OutboundPolicy({ allow: [] });
    received.length = 0;
    const err = await mediaAdapter('jobs')!
      .submit(ep(strict), req, AbortSignal.timeout(5_000))
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MediaCallError);
    await mediaAdapter('jobs')!
      .poll(ep(strict), 'job_1', 'video', AbortSignal.timeout(5_000))
      .catch(() => {});
    expect(received).toEqual([]);
    await strict.close();
  });

  it('the same channel is reached when loopback is allowed (the control)', async () => {
    const allowed = new OutboundPolicy({ allow: ['127.0.0.0/8'] });
    received.length = 0;
    await mediaAdapter('jobs')!.submit(ep(allowed), req, AbortSignal.timeout(5_000));
    expect(received).toHaveLength(1);
    await allowed.close();
  });
});
