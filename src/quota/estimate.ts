import { countTokens } from 'gpt-tokenizer';

/** What a request reserves when it names no max_tokens. */
export const DEFAULT_OUTPUT_RESERVATION = 1024;
const PER_MESSAGE_OVERHEAD = 4;
const PER_IMAGE = 765; // a high-detail 512px tile pair, OpenAI's usual figure

function textOf(content: unknown, acc: string[], images: { n: number }): void {
  if (typeof content === 'string') acc.push(content);
  else if (Array.isArray(content)) {
    for (const p of content as Array<Record<string, unknown>>) {
      if (!p || typeof p !== 'object') continue;
      if (typeof p.text === 'string') acc.push(p.text);
      else if (p.type === 'image_url' || p.type === 'image') images.n++;
      else if (p.type === 'tool_result' || p.type === 'tool_use') acc.push(JSON.stringify(p.content ?? p.input ?? ''));
    }
  }
}

/**
 * Tokens a request will use at most, before the upstream says: the prompt counted with gpt-tokenizer
 * (o200k) plus the output it may produce (max_tokens, else DEFAULT_OUTPUT_RESERVATION). Settlement trues
 * it up to the upstream's reported usage.
 */
export function estimateTokens(body: Record<string, unknown>): { prompt: number; total: number } {
  const parts: string[] = [];
  const images = { n: 0 };
  let messages = 0;
  if (typeof body.system === 'string') parts.push(body.system);
  else textOf(body.system, parts, images);
  if (Array.isArray(body.messages)) {
    for (const m of body.messages as Array<Record<string, unknown>>) {
      messages++;
      textOf(m?.content, parts, images);
      if (m?.tool_calls) parts.push(JSON.stringify(m.tool_calls));
    }
  }
  if (body.input !== undefined) parts.push(typeof body.input === 'string' ? body.input : JSON.stringify(body.input));
  if (body.tools) parts.push(JSON.stringify(body.tools));
  const prompt = countTokens(parts.join('\n')) + messages * PER_MESSAGE_OVERHEAD + images.n * PER_IMAGE;
  const maxOut = [body.max_completion_tokens, body.max_tokens].find((v) => Number.isInteger(v) && (v as number) > 0) as number | undefined;
  const output = body.input !== undefined && body.messages === undefined ? 0 : (maxOut ?? DEFAULT_OUTPUT_RESERVATION);
  return { prompt, total: prompt + output };
}
