"""The official OpenAI Python SDK against the rest of the OpenAI API through the gateway:
completions, models.retrieve, moderations, images, audio (binary speech, multipart uploads),
rerank; offline against `echo` (REST_MODE=echo): completions, moderations, embeddings, tool calls.

Run by tests/openai_rest.rs, which starts the gateway (and in mock mode a mock OpenAI upstream)
and passes GATEWAY_BASE_URL. Each check prints one line; the last line is the summary.
"""
import hashlib
import json
import math
import os
import sys
import traceback

import openai
from openai import OpenAI

BASE = os.environ["GATEWAY_BASE_URL"]
MODE = os.environ.get("REST_MODE", "mock")
client = OpenAI(base_url=BASE, api_key="unused", max_retries=0)

# The upload the Rust side looks for in what the mock received.
UPLOAD = bytes(range(256)) * 64

checks = []


def check(mode):
    def register(fn):
        if mode == MODE:
            checks.append(fn)
        return fn

    return register


@check("mock")
def completions_plain_and_streamed():
    r = client.completions.create(model="openai/gpt-3.5-turbo-instruct", prompt="Say hi", max_tokens=5)
    assert r.object == "text_completion", r
    assert r.choices[0].text == "Hello from completions", r
    assert r.usage.total_tokens == 6, r.usage
    stream = client.completions.create(model="openai/gpt-3.5-turbo-instruct", prompt="Say hi", stream=True)
    text = "".join(c.choices[0].text for c in stream if c.choices)
    assert text == "Hello from completions", text


@check("mock")
def completions_errors_are_typed():
    try:
        client.completions.create(model="anthropic/claude-sonnet-4", prompt="x")
        raise AssertionError("no error")
    except openai.BadRequestError as e:
        assert "anthropic/claude-sonnet-4" in str(e), e
    try:
        client.completions.create(model="nobody-knows", prompt="x")
        raise AssertionError("no error")
    except openai.NotFoundError as e:
        assert e.code == "model_not_found", e
    try:
        client.completions.create(model="openai/status-429", prompt="x")
        raise AssertionError("no error")
    except openai.RateLimitError as e:
        assert "mock says 429" in str(e), e


@check("mock")
def models_retrieve_with_a_slash():
    m = client.models.retrieve("openai/org/model-x")
    assert m.id == "openai/org/model-x" and m.object == "model", m
    assert client.models.retrieve("openai/gpt-4o").owned_by == "openai"
    try:
        client.models.retrieve("openai/not-listed")
        raise AssertionError("no error")
    except openai.NotFoundError as e:
        assert e.code == "model_not_found", e


@check("mock")
def moderations():
    r = client.moderations.create(model="openai/omni-moderation-latest", input="some text")
    assert r.results[0].flagged is True, r
    r = client.moderations.create(input="no model given")
    assert r.model == "omni-moderation-latest", r


@check("mock")
def images_generate_and_edit():
    r = client.images.generate(model="openai/gpt-image-1", prompt="a cat", size="1024x1024")
    assert r.data[0].b64_json == "aGVsbG8=", r
    r = client.images.edit(model="openai/gpt-image-1", image=("cat.png", UPLOAD, "image/png"), prompt="add a hat")
    assert r.data[0].b64_json == "aGVsbG8=", r


@check("mock")
def audio_speech_binary():
    r = client.audio.speech.create(model="openai/gpt-4o-mini-tts", voice="alloy", input="hello")
    data = r.read()
    assert hashlib.sha256(data).hexdigest() == os.environ["SPEECH_SHA256"], len(data)
    with client.audio.speech.with_streaming_response.create(model="openai/tts-1", voice="alloy", input="hi") as s:
        parts = list(s.iter_bytes(65536))
    assert hashlib.sha256(b"".join(parts)).hexdigest() == os.environ["SPEECH_SHA256"]


@check("mock")
def audio_transcriptions_and_translations():
    r = client.audio.transcriptions.create(model="openai/whisper-1", file=("clip.wav", UPLOAD, "audio/wav"))
    assert r.text == "mock transcription", r
    r = client.audio.translations.create(model="openai/whisper-1", file=("clip.wav", UPLOAD, "audio/wav"))
    assert r.text == "mock translation", r
    try:
        client.audio.transcriptions.create(model="anthropic/claude-x", file=("clip.wav", UPLOAD, "audio/wav"))
        raise AssertionError("no error")
    except openai.BadRequestError as e:
        assert "anthropic/claude-x" in str(e), e


@check("mock")
def rerank():
    r = client.post("/rerank", body={"model": "openai/bge-reranker", "query": "q", "documents": ["a", "b"]}, cast_to=object)
    assert r["results"][0]["index"] == 1, r


@check("echo")
def echo_completions():
    r = client.completions.create(model="echo/test", prompt="Say this is a test")
    assert r.choices[0].text == "Say this is a test", r
    stream = client.completions.create(model="echo/test", prompt="one two three", stream=True)
    text = "".join(c.choices[0].text for c in stream if c.choices)
    assert text == "one two three", text


@check("echo")
def echo_moderations():
    r = client.moderations.create(model="echo/test", input=["a", "b"])
    assert [x.flagged for x in r.results] == [False, False], r
    r = client.moderations.create(input="no model")
    assert r.results[0].flagged is False, r


@check("echo")
def echo_embeddings():
    # The SDK asks for base64 and decodes it.
    r = client.embeddings.create(model="echo/test", input=["the cat sat", "the cat sat"], dimensions=12)
    a, b = r.data[0].embedding, r.data[1].embedding
    assert len(a) == 12 and a == b, r
    assert abs(math.sqrt(sum(x * x for x in a)) - 1) < 1e-5
    r = client.embeddings.create(model="echo/test", input="hello", encoding_format="float")
    assert len(r.data[0].embedding) == 16, r


@check("echo")
def echo_tool_calls():
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    messages = [{"role": "user", "content": 'call get_weather {"city":"Paris"}'}]
    r = client.chat.completions.create(model="echo/test", messages=messages, tools=tools)
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls", r
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}, call
    stream = client.chat.completions.create(model="echo/test", messages=messages, tools=tools, stream=True)
    names = [tc.function.name for c in stream if c.choices for tc in (c.choices[0].delta.tool_calls or []) if tc.function and tc.function.name]
    assert names == ["get_weather"], names
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"},
    ]
    r = client.chat.completions.create(model="echo/test", messages=messages, tools=tools)
    assert r.choices[0].message.content == "Tool get_weather returned: 18C and sunny", r


passed = failed = 0
for fn in checks:
    try:
        fn()
        passed += 1
        print(f"ok   {fn.__name__}")
    except Exception:
        failed += 1
        print(f"FAIL {fn.__name__}")
        traceback.print_exc(file=sys.stdout)
print(f"sdk rest ({MODE}): {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
