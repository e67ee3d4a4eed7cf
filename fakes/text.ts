/**
 * The fake OpenAI's legacy completions and moderations, in the real wire formats
 * (https://platform.openai.com/docs/api-reference/completions, .../moderations), so the `openai` client's
 * `completions.create` (JSON and stream) and `moderations.create` work against it unchanged.
 *
 * Deterministic behaviour:
 *  - completions: text "Hello from <name>: <first 40 chars of the prompt>", one choice per prompt and per n,
 *    cut by `stop` and `max_tokens` (one word = one token); the prompt costs ceil(chars / 4) + 1 tokens;
 *  - moderations: one result per input (a string, or the array's strings / text parts as one input); an
 *    input containing "kill" is flagged for violence, anything else is not.
 */
import {
  applyStop,
  chunkText,
  type FakeContext,
  head,
  isObject,
  type ProviderSpec,
  rid,
  sendError,
  sendJson,
  SseWriter,
  truncateWords,
  wordCount,
} from './common.js';

function completions(ctx: FakeContext, spec: ProviderSpec): Promise<void> | void {
  const b = ctx.body;
  if (!ctx.bodyIsJson || !isObject(b)) return sendError(ctx, spec, 400, 'We could not parse the JSON body.');
  if (typeof b.model !== 'string' || !b.model)
    return sendError(ctx, spec, 400, 'you must provide a model parameter');
  const p = b.prompt;
  const prompts: string[] =
    typeof p === 'string'
      ? [p]
      : Array.isArray(p) && p.length && p.every((x) => typeof x === 'string')
        ? (p as string[])
        : Array.isArray(p) && p.length
          ? [JSON.stringify(p)]
          : [];
  if (!prompts.length) return sendError(ctx, spec, 400, "'prompt' is a required property");
  const n = typeof b.n === 'number' && Number.isInteger(b.n) && b.n > 1 ? Math.min(b.n, 16) : 1;
  const id = `cmpl-${rid(29)}`;
  const created = Math.floor(Date.now() / 1000);
  const model = b.model;
  let promptTokens = 0;
  const texts: Array<{ text: string; finish: string }> = [];
  for (const pr of prompts) {
    promptTokens += Math.ceil(pr.length / 4) + 1;
    let text = applyStop(`Hello from ${ctx.name}: ${head(pr, 40)}`, b.stop).text;
    const cut = truncateWords(text, b.max_tokens ?? 16);
    text = cut.text;
    for (let i = 0; i < n; i++) texts.push({ text, finish: cut.truncated ? 'length' : 'stop' });
  }
  const completionTokens = texts.reduce((s, t) => s + wordCount(t.text), 0);
  const usage = {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
  };
  if (b.stream !== true)
    return sendJson(ctx, 200, {
      id,
      object: 'text_completion',
      created,
      model,
      choices: texts.map((t, index) => ({ text: t.text, index, logprobs: null, finish_reason: t.finish })),
      usage,
      system_fingerprint: 'fp_fake',
    });
  return (async () => {
    const includeUsage = isObject(b.stream_options) && b.stream_options.include_usage === true;
    const sse = new SseWriter(ctx);
    const event = (choices: unknown[], u: unknown = null) =>
      `data: ${JSON.stringify({ id, object: 'text_completion', created, choices, model, system_fingerprint: 'fp_fake', ...(includeUsage ? { usage: u } : {}) })}\n\n`;
    for (let index = 0; index < texts.length; index++) {
      const t = texts[index]!;
      const pieces = chunkText(t.text, ctx.fault?.chunks ?? 3, false);
      for (let k = 0; k < pieces.length; k++) {
        const last = k === pieces.length - 1;
        const choice = { text: pieces[k], index, logprobs: null, finish_reason: last ? t.finish : null };
        if (!(await sse.send(event([choice])))) return;
      }
    }
    if (includeUsage && !(await sse.send(event([], usage)))) return;
    await sse.end('data: [DONE]\n\n');
  })();
}

const CATEGORIES = [
  'harassment',
  'harassment/threatening',
  'hate',
  'hate/threatening',
  'illicit',
  'illicit/violent',
  'self-harm',
  'self-harm/instructions',
  'self-harm/intent',
  'sexual',
  'sexual/minors',
  'violence',
  'violence/graphic',
] as const;
/** Categories scored on images too (omni-moderation), the rest on text only. */
const IMAGE_TOO = new Set([
  'self-harm',
  'self-harm/instructions',
  'self-harm/intent',
  'sexual',
  'violence',
  'violence/graphic',
]);

function moderations(ctx: FakeContext, spec: ProviderSpec): void {
  const b = ctx.body;
  if (!ctx.bodyIsJson || !isObject(b)) return sendError(ctx, spec, 400, 'We could not parse the JSON body.');
  const input = b.input;
  // Strings: one result each. Multimodal parts: one result for the whole array.
  let items: Array<{ text: string; image: boolean }>;
  if (typeof input === 'string') items = [{ text: input, image: false }];
  else if (Array.isArray(input) && input.length && input.every((x) => typeof x === 'string'))
    items = (input as string[]).map((text) => ({ text, image: false }));
  else if (Array.isArray(input) && input.length && input.every(isObject))
    items = [
      {
        text: (input as Array<Record<string, unknown>>)
          .map((x) => (typeof x.text === 'string' ? x.text : ''))
          .join(' '),
        image: (input as Array<Record<string, unknown>>).some((x) => x.type === 'image_url'),
      },
    ];
  else return sendError(ctx, spec, 400, "'input' is a required property");
  const results = items.map(({ text, image }) => {
    const violent = /\bkill\b/i.test(text);
    const categories: Record<string, boolean> = {};
    const scores: Record<string, number> = {};
    const applied: Record<string, string[]> = {};
    for (const c of CATEGORIES) {
      const hit = violent && c === 'violence';
      categories[c] = hit;
      scores[c] = hit ? 0.91 : 0.0001;
      applied[c] = image && IMAGE_TOO.has(c) ? ['text', 'image'] : ['text'];
    }
    return { flagged: violent, categories, category_scores: scores, category_applied_input_types: applied };
  });
  sendJson(ctx, 200, {
    id: `modr-${rid(24)}`,
    model: typeof b.model === 'string' ? b.model : 'omni-moderation-latest',
    results,
  });
}

/** Completions and moderations on the fake OpenAI; false when the request is for another route. */
export async function openaiTextRoute(ctx: FakeContext, spec: ProviderSpec): Promise<boolean> {
  if (ctx.method !== 'POST') return false;
  if (ctx.path === '/v1/completions') await completions(ctx, spec);
  else if (ctx.path === '/v1/moderations') moderations(ctx, spec);
  else return false;
  return true;
}
