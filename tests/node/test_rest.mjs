// The official OpenAI Node SDK (npm `openai`, pinned in package-lock.json) against the rest of
// the OpenAI API through the gateway: completions, models.retrieve, moderations, images, audio
// (binary speech, multipart uploads, one with `model` after the file), rerank;
// offline against `echo` (REST_MODE=echo): completions, moderations, embeddings, tool calls.
//
// Run by tests/openai_rest.rs with GATEWAY_BASE_URL set. Each check prints one line; the last
// line is the summary.
import { createHash } from 'node:crypto';
import OpenAI, { toFile } from 'openai';

const MODE = process.env.REST_MODE ?? 'mock';
const client = new OpenAI({ baseURL: process.env.GATEWAY_BASE_URL, apiKey: 'unused', maxRetries: 0 });
// The upload the Rust side looks for in what the mock received.
const UPLOAD = Buffer.alloc(256 * 64, 0).map((_, i) => i % 256);

function assert(ok, what) {
  if (!ok) throw new Error(`assertion failed: ${what}`);
}

async function rejects(promise, Type, text) {
  try {
    await promise;
  } catch (e) {
    assert(e instanceof Type, `${e} is a ${Type.name}`);
    if (text) assert(String(e.message).includes(text), `${e.message} mentions ${text}`);
    return e;
  }
  throw new Error('no error');
}

const checks = { mock: [], echo: [] };

checks.mock.push(async function completions() {
  const r = await client.completions.create({ model: 'openai/gpt-3.5-turbo-instruct', prompt: 'Say hi' });
  assert(r.object === 'text_completion' && r.choices[0].text === 'Hello from completions', JSON.stringify(r));
  const stream = await client.completions.create({ model: 'openai/gpt-3.5-turbo-instruct', prompt: 'Say hi', stream: true });
  let text = '';
  for await (const c of stream) text += c.choices[0]?.text ?? '';
  assert(text === 'Hello from completions', text);
  await rejects(client.completions.create({ model: 'anthropic/claude-sonnet-4', prompt: 'x' }), OpenAI.BadRequestError, 'anthropic/claude-sonnet-4');
  await rejects(client.completions.create({ model: 'nobody-knows', prompt: 'x' }), OpenAI.NotFoundError);
});

checks.mock.push(async function modelsRetrieve() {
  const m = await client.models.retrieve('openai/org/model-x');
  assert(m.id === 'openai/org/model-x' && m.object === 'model', JSON.stringify(m));
  const e = await rejects(client.models.retrieve('openai/not-listed'), OpenAI.NotFoundError);
  assert(e.code === 'model_not_found', e.code);
});

checks.mock.push(async function moderations() {
  const r = await client.moderations.create({ model: 'openai/omni-moderation-latest', input: 'some text' });
  assert(r.results[0].flagged === true, JSON.stringify(r));
  const d = await client.moderations.create({ input: 'no model' });
  assert(d.model === 'omni-moderation-latest', JSON.stringify(d));
});

checks.mock.push(async function images() {
  const g = await client.images.generate({ model: 'openai/gpt-image-1', prompt: 'a cat' });
  assert(g.data[0].b64_json === 'aGVsbG8=', JSON.stringify(g));
  const e = await client.images.edit({
    model: 'openai/gpt-image-1',
    image: await toFile(UPLOAD, 'cat.png', { type: 'image/png' }),
    prompt: 'add a hat',
  });
  assert(e.data[0].b64_json === 'aGVsbG8=', JSON.stringify(e));
});

checks.mock.push(async function audioSpeechBinary() {
  const r = await client.audio.speech.create({ model: 'openai/gpt-4o-mini-tts', voice: 'alloy', input: 'hello' });
  const bytes = Buffer.from(await r.arrayBuffer());
  const sha = createHash('sha256').update(bytes).digest('hex');
  assert(sha === process.env.SPEECH_SHA256, `speech of ${bytes.length} bytes`);
  assert(r.headers.get('content-type') === 'audio/mpeg', r.headers.get('content-type'));
});

checks.mock.push(async function audioUploads() {
  // The form's parts follow the object's keys: here the file comes first, `model` after it.
  const t = await client.audio.transcriptions.create({ file: await toFile(UPLOAD, 'clip.wav', { type: 'audio/wav' }), model: 'openai/whisper-1' });
  assert(t.text === 'mock transcription', JSON.stringify(t));
  const tr = await client.audio.translations.create({ model: 'openai/whisper-1', file: await toFile(UPLOAD, 'clip.wav', { type: 'audio/wav' }) });
  assert(tr.text === 'mock translation', JSON.stringify(tr));
  await rejects(
    client.audio.transcriptions.create({ model: 'anthropic/claude-x', file: await toFile(UPLOAD, 'clip.wav') }),
    OpenAI.BadRequestError,
    'anthropic/claude-x',
  );
});

checks.mock.push(async function rerank() {
  const r = await client.post('/rerank', { body: { model: 'openai/bge-reranker', query: 'q', documents: ['a', 'b'] } });
  assert(r.results[0].index === 1, JSON.stringify(r));
});

checks.echo.push(async function echoCompletions() {
  const r = await client.completions.create({ model: 'echo/test', prompt: 'Say this is a test' });
  assert(r.choices[0].text === 'Say this is a test', JSON.stringify(r));
  const stream = await client.completions.create({ model: 'echo/test', prompt: 'one two three', stream: true });
  let text = '';
  for await (const c of stream) text += c.choices[0]?.text ?? '';
  assert(text === 'one two three', text);
});

checks.echo.push(async function echoModerations() {
  const r = await client.moderations.create({ model: 'echo/test', input: ['a', 'b'] });
  assert(r.results.length === 2 && r.results.every((x) => x.flagged === false), JSON.stringify(r));
});

checks.echo.push(async function echoEmbeddings() {
  // The SDK asks for base64 and decodes it.
  const r = await client.embeddings.create({ model: 'echo/test', input: ['the cat sat', 'the cat sat'], dimensions: 12 });
  const [a, b] = r.data.map((d) => d.embedding);
  assert(a.length === 12 && JSON.stringify(a) === JSON.stringify(b), JSON.stringify(r));
  const norm = Math.sqrt(a.reduce((s, x) => s + x * x, 0));
  assert(Math.abs(norm - 1) < 1e-5, norm);
});

checks.echo.push(async function echoToolCalls() {
  const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object' } } }];
  const messages = [{ role: 'user', content: 'call get_weather {"city":"Paris"}' }];
  const r = await client.chat.completions.create({ model: 'echo/test', messages, tools });
  const call = r.choices[0].message.tool_calls[0];
  assert(r.choices[0].finish_reason === 'tool_calls' && call.function.name === 'get_weather', JSON.stringify(r));
  assert(JSON.parse(call.function.arguments).city === 'Paris', call.function.arguments);
  messages.push({ role: 'assistant', content: null, tool_calls: [call] });
  messages.push({ role: 'tool', tool_call_id: call.id, content: '18C and sunny' });
  const after = await client.chat.completions.create({ model: 'echo/test', messages, tools });
  assert(after.choices[0].message.content === 'Tool get_weather returned: 18C and sunny', JSON.stringify(after));
});

let passed = 0;
let failed = 0;
for (const fn of checks[MODE]) {
  try {
    await fn();
    passed += 1;
    console.log(`ok   ${fn.name}`);
  } catch (e) {
    failed += 1;
    console.log(`FAIL ${fn.name}: ${e.stack ?? e}`);
  }
}
console.log(`node sdk rest (${MODE}): ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
