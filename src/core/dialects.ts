/**
 * The dialect registry: one declaration per client dialect (the wire format a client speaks to Anima).
 * The routes, the error shape of every answer on a path, the ASYNC task kinds, what may be deferred or
 * cached and what reaches a chat provider through the pivot are all read from here. The request validator
 * is the one property kept beside Fastify (http/validate.ts `inboundFor`, a switch over this same union, so
 * the compiler holds it complete).
 *
 * Adding a dialect: its name in the union, its declaration below (the `satisfies` makes a missing one a
 * compile error), its validator, and the exchanges that serve it (providers/registry.ts `native`).
 */

export type InboundDialect =
  | 'openai_chat'
  | 'anthropic_messages'
  | 'openai_embeddings'
  | 'openai_responses'
  | 'gemini'
  | 'gemini_embed'
  | 'openai_speech'
  | 'openai_transcription'
  | 'openai_translation'
  | 'openai_image_edit'
  | 'anthropic_count_tokens'
  | 'openai_completions'
  | 'openai_moderations'
  | 'rerank';

/** The error body a dialect's clients parse (core/render.ts has one renderer per shape). */
export type ErrorShape = 'openai' | 'anthropic' | 'google';

export interface DialectDeclaration {
  /** POST routes served in this dialect. Gemini's share one wildcard route, dispatched by method. */
  paths: readonly string[];
  errorShape: ErrorShape;
  /** The task kind an ASYNC-mode key's over-limit request becomes (and the metric label of its queue). */
  taskKind: string;
  /** Its answer is JSON a task can keep: an ASYNC key over its limits gets a 202 and a task. */
  deferrable: boolean;
  /** Its answers are text, deterministic enough in shape to replay from the response cache. */
  cacheable: boolean;
  /** Chat-like: translated to and from OpenAI chat (the pivot) for a provider that doesn't speak it. */
  chatLike: boolean;
  /** The key may also come as Google's `x-goog-api-key` header or `?key=` parameter. */
  googleKey: boolean;
  /** Answers carry no output tokens (an estimate reserves none). */
  noOutput: boolean;
}

export const DIALECTS = {
  openai_chat: {
    paths: ['/v1/chat/completions'],
    errorShape: 'openai',
    taskKind: 'chat',
    deferrable: true,
    cacheable: true,
    chatLike: true,
    googleKey: false,
    noOutput: false,
  },
  anthropic_messages: {
    paths: ['/v1/messages'],
    errorShape: 'anthropic',
    taskKind: 'messages',
    deferrable: true,
    cacheable: true,
    chatLike: true,
    googleKey: false,
    noOutput: false,
  },
  openai_embeddings: {
    paths: ['/v1/embeddings'],
    errorShape: 'openai',
    taskKind: 'embeddings',
    deferrable: true,
    cacheable: true,
    chatLike: false,
    googleKey: false,
    noOutput: true,
  },
  openai_responses: {
    paths: ['/v1/responses'],
    errorShape: 'openai',
    taskKind: 'responses',
    deferrable: true,
    cacheable: true,
    chatLike: true,
    googleKey: false,
    noOutput: false,
  },
  gemini: {
    paths: ['/v1beta/models/*', '/v1/models/*'],
    errorShape: 'google',
    taskKind: 'gemini',
    deferrable: true,
    cacheable: true,
    chatLike: true,
    googleKey: true,
    noOutput: false,
  },
  gemini_embed: {
    paths: ['/v1beta/models/*', '/v1/models/*'],
    errorShape: 'google',
    taskKind: 'gemini_embed',
    deferrable: true,
    cacheable: true,
    chatLike: false,
    googleKey: true,
    noOutput: true,
  },
  openai_speech: {
    paths: ['/v1/audio/speech'],
    errorShape: 'openai',
    taskKind: 'speech',
    deferrable: false, // binary audio: nothing a task's JSON result can hold
    cacheable: false,
    chatLike: false,
    googleKey: false,
    noOutput: true,
  },
  openai_transcription: {
    paths: ['/v1/audio/transcriptions'],
    errorShape: 'openai',
    taskKind: 'transcription',
    deferrable: false, // the upload is not kept
    cacheable: false,
    chatLike: false,
    googleKey: false,
    noOutput: false,
  },
  openai_translation: {
    paths: ['/v1/audio/translations'],
    errorShape: 'openai',
    taskKind: 'translation',
    deferrable: false,
    cacheable: false,
    chatLike: false,
    googleKey: false,
    noOutput: false,
  },
  openai_image_edit: {
    paths: ['/v1/images/edits'],
    errorShape: 'openai',
    taskKind: 'image_edit',
    deferrable: false,
    cacheable: false,
    chatLike: false,
    googleKey: false,
    noOutput: false,
  },
  // Anthropic's token count: answered by an Anthropic channel, estimated locally on any other chat channel
  // (providers/anthropic/count-tokens.ts). Free, like upstream: nothing is booked.
  anthropic_count_tokens: {
    paths: ['/v1/messages/count_tokens'],
    errorShape: 'anthropic',
    taskKind: 'count_tokens',
    deferrable: false, // an instant, free answer: a task would only delay it
    cacheable: false, // the estimate header would not be replayed
    chatLike: false,
    googleKey: false,
    noOutput: true,
  },
  // Legacy OpenAI completions: native on OpenAI channels, through the chat pivot elsewhere.
  openai_completions: {
    paths: ['/v1/completions'],
    errorShape: 'openai',
    taskKind: 'completions',
    deferrable: false,
    cacheable: true,
    chatLike: true,
    googleKey: false,
    noOutput: false,
  },
  openai_moderations: {
    paths: ['/v1/moderations'],
    errorShape: 'openai',
    taskKind: 'moderations',
    deferrable: false,
    cacheable: true,
    chatLike: false,
    googleKey: false,
    noOutput: true,
  },
  // Cohere / Jina rerank (providers/rerank.ts): no OpenAI or Anthropic equivalent, so OpenAI's error shape.
  rerank: {
    paths: ['/v1/rerank'],
    errorShape: 'openai',
    taskKind: 'rerank',
    deferrable: false,
    cacheable: true,
    chatLike: false,
    googleKey: false,
    noOutput: true,
  },
} as const satisfies Record<InboundDialect, DialectDeclaration>;

export const DIALECT_NAMES = Object.keys(DIALECTS) as InboundDialect[];

export function dialect(d: InboundDialect): DialectDeclaration {
  return DIALECTS[d];
}

/** Which error body a dialect's clients parse. */
export function errorShapeOf(d: InboundDialect): ErrorShape {
  return DIALECTS[d].errorShape;
}

/**
 * The dialect whose clients call a path (for the error shape of an answer that has no route's dialect: a
 * 404, a refused key, a framework error). A `/*` route matches POSTs below it (GET /v1/models/{id} is
 * OpenAI's); every /v1beta/ path is Google's API. Anything else answers as OpenAI.
 */
export function dialectOfPath(method: string, url: string): InboundDialect {
  const q = url.indexOf('?');
  const path = q < 0 ? url : url.slice(0, q);
  for (const d of DIALECT_NAMES)
    for (const p of DIALECTS[d].paths) {
      if (p.endsWith('/*')) {
        if (path.startsWith(p.slice(0, -1)) && method === 'POST') return d;
      } else if (path === p || path.startsWith(p + '/')) return d;
    }
  return path.startsWith('/v1beta/') ? 'gemini' : 'openai_chat';
}

/** The dialects an ASYNC task of `kind` runs in (the inverse of taskKind, for the deferrable ones). */
const BY_TASK_KIND = new Map<string, InboundDialect>(
  DIALECT_NAMES.filter((d) => DIALECTS[d].deferrable).map((d) => [DIALECTS[d].taskKind, d]),
);

export function dialectOfTask(kind: string): InboundDialect | undefined {
  return BY_TASK_KIND.get(kind);
}

/** The task kinds a deferred request can have (metrics create their series at 0 from this list). */
export const DEFERRED_TASK_KINDS: readonly string[] = [...BY_TASK_KIND.keys()];

export const CHAT_LIKE: ReadonlySet<InboundDialect> = new Set(
  DIALECT_NAMES.filter((d) => DIALECTS[d].chatLike),
);
