/** Fake upstream providers (OpenAI, Anthropic and Gemini wire formats) for tests, benchmarks and the demo mode. */
export * from './common.js';
export { openaiErrorBody, fakeEmbedding, startFakeOpenAI } from './openai.js';
export { anthropicErrorBody, startFakeAnthropic } from './anthropic.js';
export { geminiErrorBody, startFakeGemini } from './gemini.js';
export {
  AZURE_CONTENT_FILTER_TRIGGER,
  type AzureSwitches,
  azureErrorBody,
  type FakeAzureUpstream,
  startFakeAzure,
} from './azure.js';
export {
  FAKE_VERTEX_PROJECT,
  type FakeVertexUpstream,
  type VertexSwitches,
  startFakeVertex,
} from './vertex.js';
export {
  type BedrockSwitches,
  bedrockErrorBody,
  FAKE_AWS,
  type FakeBedrockUpstream,
  startFakeBedrock,
} from './bedrock.js';
export { audioSeconds, fakeSpeech } from './audio.js';
export { type FakeMediaUpstream, JobBook, type MediaSwitches, startFakeJobs } from './media.js';
export { type RerankFlavor, startFakeRerank } from './rerank.js';
