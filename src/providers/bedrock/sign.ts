/**
 * Addressing and SigV4 signing for Bedrock runtime channels. Pure except for the signature's clock.
 *
 * Credential (the channel's `credential`), either form:
 *   - JSON: `{"accessKeyId":"AKIA…","secretAccessKey":"…","sessionToken":"…","region":"us-east-1"}`
 *     (sessionToken and region optional)
 *   - text: `AKID:SECRET` or `AKID:SECRET:SESSION_TOKEN`
 *   - empty: the process's AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN.
 * Region: the credential's `region`, else the base URL's host (`bedrock-runtime.{region}.amazonaws.com`,
 * FIPS and VPC endpoint names too), else AWS_REGION / AWS_DEFAULT_REGION.
 *
 * Signed as the AWS SDK signs bedrock-runtime calls: service `bedrock`, the payload hash in
 * `x-amz-content-sha256`, the model id in the path encoded as one label (`:` -> %3A, an ARN's `/` -> %2F;
 * aws-sdk-js-v3 client-bedrock-runtime se_ConverseCommand: `b.p("modelId", …, false)`), which the signer
 * then escapes again for the canonical request (SigV4 for every service but S3:
 * https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html#create-canonical-request).
 */
import { createHash, createHmac, type Hash, type Hmac } from 'node:crypto';
import { SignatureV4 } from '@smithy/signature-v4';
import { GatewayError } from '../../core/errors.js';
import type { PreparedCall, UpstreamEndpoint } from '../types.js';

export const SIGNING_SERVICE = 'bedrock';

export interface AwsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

type Source = string | ArrayBuffer | ArrayBufferView;

function bytes(d: Source): Buffer {
  if (typeof d === 'string') return Buffer.from(d, 'utf8');
  if (ArrayBuffer.isView(d)) return Buffer.from(d.buffer, d.byteOffset, d.byteLength);
  return Buffer.from(d);
}

/**
 * SHA-256 (and its HMAC with a key) on node:crypto, the signer's hash interface: what the AWS SDK uses in
 * Node (@smithy/hash-node), without the pure-JavaScript implementation's cost.
 */
export class NodeSha256 {
  private h: Hash | Hmac;
  constructor(private readonly secret?: Source) {
    this.h = this.fresh();
  }
  private fresh(): Hash | Hmac {
    return this.secret === undefined ? createHash('sha256') : createHmac('sha256', bytes(this.secret));
  }
  update(data: Source): void {
    this.h.update(bytes(data));
  }
  digest(): Promise<Uint8Array> {
    return Promise.resolve(new Uint8Array(this.h.digest()));
  }
  reset(): void {
    this.h = this.fresh();
  }
}

export interface BedrockAuth {
  credentials: AwsCredentials;
  /** The credential's own region setting, if any. */
  region?: string;
}

function nonEmpty(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/** The channel's credential (or the environment's) as AWS credentials; a 400-free config error otherwise. */
export function parseCredential(credential: string, env: NodeJS.ProcessEnv = process.env): BedrockAuth {
  const c = credential.trim();
  if (c === '') {
    const accessKeyId = nonEmpty(env.AWS_ACCESS_KEY_ID);
    const secretAccessKey = nonEmpty(env.AWS_SECRET_ACCESS_KEY);
    if (!accessKeyId || !secretAccessKey)
      throw noCredential(
        'the channel has no credential and AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are not set',
      );
    const sessionToken = nonEmpty(env.AWS_SESSION_TOKEN);
    return { credentials: { accessKeyId, secretAccessKey, ...(sessionToken ? { sessionToken } : {}) } };
  }
  if (c.startsWith('{')) {
    let j: Record<string, unknown>;
    try {
      j = JSON.parse(c) as Record<string, unknown>;
    } catch {
      throw noCredential('the channel credential starts with "{" but is not JSON');
    }
    const accessKeyId = nonEmpty(j.accessKeyId);
    const secretAccessKey = nonEmpty(j.secretAccessKey);
    if (!accessKeyId || !secretAccessKey)
      throw noCredential('the JSON credential needs accessKeyId and secretAccessKey');
    const sessionToken = nonEmpty(j.sessionToken);
    const region = nonEmpty(j.region);
    return {
      credentials: { accessKeyId, secretAccessKey, ...(sessionToken ? { sessionToken } : {}) },
      ...(region ? { region } : {}),
    };
  }
  const parts = c.split(':');
  if (parts.length < 2 || parts.length > 3 || !parts[0] || !parts[1])
    throw noCredential('the credential must be JSON or AKID:SECRET[:SESSION_TOKEN]');
  return {
    credentials: {
      accessKeyId: parts[0],
      secretAccessKey: parts[1],
      ...(parts[2] ? { sessionToken: parts[2] } : {}),
    },
  };
}

function noCredential(why: string): GatewayError {
  // Never the credential's text: only what is wrong with its shape.
  return new GatewayError('unsupported_operation', `Bedrock channel misconfigured: ${why}`);
}

const REGION_IN_HOST = /(?:^|\.)bedrock-runtime(?:-fips)?\.([a-z]{2}(?:-[a-z]+)+-\d+)\./;

/** The region a Bedrock runtime host names (bedrock-runtime.us-east-1.amazonaws.com -> us-east-1). */
export function regionOfHost(host: string): string | undefined {
  return REGION_IN_HOST.exec(host.toLowerCase())?.[1];
}

export function resolveRegion(
  auth: BedrockAuth,
  baseUrl: string,
  env: NodeJS.ProcessEnv = process.env,
): string {
  let host = '';
  try {
    host = new URL(baseUrl).hostname;
  } catch {
    /* the admin API validates base URLs; a bad one has no region in it */
  }
  const region =
    auth.region ?? regionOfHost(host) ?? nonEmpty(env.AWS_REGION) ?? nonEmpty(env.AWS_DEFAULT_REGION);
  if (!region)
    throw noCredential(
      'no region: set "region" in the JSON credential, use a bedrock-runtime.{region} base URL, or set AWS_REGION',
    );
  return region;
}

/** aws-sdk-js-v3's extendedEncodeURIComponent: encodeURIComponent plus !'()* (RFC 3986 reserved). */
export function encodeLabel(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());
}

/** The operation's path relative to the channel's base URL. */
export function conversePath(modelId: string, stream: boolean): string {
  return `/model/${encodeLabel(modelId)}/${stream ? 'converse-stream' : 'converse'}`;
}

/** Signers by channel credential and region: each keeps its derived signing keys (one per day). */
const signers = new Map<string, SignatureV4>();

function signerFor(auth: BedrockAuth, region: string): SignatureV4 {
  const c = auth.credentials;
  const key = `${region}\n${c.accessKeyId}\n${c.secretAccessKey}\n${c.sessionToken ?? ''}`;
  let s = signers.get(key);
  if (!s) {
    s = new SignatureV4({ service: SIGNING_SERVICE, region, credentials: c, sha256: NodeSha256 });
    if (signers.size > 1_000) signers.clear();
    signers.set(key, s);
  }
  return s;
}

/**
 * The call with its SigV4 headers (authorization, x-amz-date, x-amz-content-sha256, x-amz-security-token).
 * The signature covers the path as the transport sends it (the base URL's path joined in front) and the
 * host header, which is sent as signed (undici uses a given `host` instead of its own).
 */
export async function signCall(
  call: PreparedCall,
  ep: UpstreamEndpoint,
  auth: BedrockAuth,
  region: string,
  now?: Date,
): Promise<PreparedCall> {
  const u = new URL(ep.baseUrl);
  const path = u.pathname.replace(/\/+$/, '') + call.path;
  const headers: Record<string, string> = { ...call.headers, host: u.host };
  const signed = await signerFor(auth, region).sign(
    {
      method: 'POST',
      protocol: u.protocol,
      hostname: u.hostname,
      ...(u.port ? { port: Number(u.port) } : {}),
      path,
      query: {},
      headers,
      body: call.body as string,
    },
    now ? { signingDate: now } : {},
  );
  return { ...call, headers: signed.headers as Record<string, string> };
}
