/** Fake upstream providers (OpenAI + Anthropic wire formats) for tests, benchmarks and the demo mode. */
export * from './common.js';
export { openaiErrorBody, fakeEmbedding, startFakeOpenAI } from './openai.js';
export { anthropicErrorBody, startFakeAnthropic } from './anthropic.js';
export { type FakeMediaUpstream, JobBook, type MediaSwitches, startFakeJobs } from './media.js';
