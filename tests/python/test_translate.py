"""The official OpenAI Python SDK against Anthropic and Gemini behind the gateway.

Run by tests/python_translate.rs, which starts mock Anthropic and Gemini upstreams and the
gateway, and passes GATEWAY_BASE_URL. Each check prints one line; the last line is the summary.
"""
import json
import os
import sys
import traceback

import openai
from openai import OpenAI

BASE = os.environ["GATEWAY_BASE_URL"]
client = OpenAI(base_url=BASE, api_key="unused", max_retries=0)

CLAUDE = "anthropic/claude-sonnet-4-20250514"
GEMINI = "google/gemini-2.0-flash"
TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["location"],
            "additionalProperties": False,
        },
    },
}]

checks = []


def check(fn):
    checks.append(fn)
    return fn


def streamed_tool_call(model):
    """The SDK's own stream accumulator must rebuild the call from the translated deltas."""
    messages = [{"role": "user", "content": "weather in two cities"}]
    with client.chat.completions.stream(model=model, messages=messages, tools=TOOLS) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_completion()
    assert "tool_calls.function.arguments.done" in events, events
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    calls = choice.message.tool_calls
    assert len(calls) == 2, calls
    assert [c.function.name for c in calls] == ["get_weather", "get_weather"], calls
    assert json.loads(calls[0].function.arguments) == {"location": "Paris", "unit": "celsius"}, calls
    assert json.loads(calls[1].function.arguments) == {"location": "Rome", "unit": "celsius"}, calls
    assert calls[0].id and calls[0].id != calls[1].id
    assert final.model == model, final.model

    # Second turn: the SDK's own objects go back as history, with the results.
    messages.append(choice.message.model_dump(exclude_none=True, exclude={"parsed", "refusal"}))
    for c, result in zip(calls, ["18C", "24C"]):
        messages.append({"role": "tool", "tool_call_id": c.id, "content": result})
    r = client.chat.completions.create(model=model, messages=messages, tools=TOOLS)
    assert r.choices[0].message.content == "Tool said: 18C, 24C", r
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.total_tokens > 0


@check
def anthropic_streamed_tool_call():
    streamed_tool_call(CLAUDE)


@check
def gemini_streamed_tool_call():
    streamed_tool_call(GEMINI)


@check
def plain_and_streamed_text():
    for model, want in [(CLAUDE, "Hello from Claude"), (GEMINI, "Hello from Gemini")]:
        r = client.chat.completions.create(model=model, messages=[{"role": "system", "content": "hi"}, {"role": "user", "content": "hi"}])
        assert r.choices[0].message.content == want, r
        assert r.usage.prompt_tokens_details.cached_tokens > 0, r.usage
        stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], stream=True,
                                                stream_options={"include_usage": True})
        text, finish, usage = "", [], None
        for chunk in stream:
            if chunk.usage:
                usage = chunk.usage
            for c in chunk.choices:
                text += c.delta.content or ""
                if c.finish_reason:
                    finish.append(c.finish_reason)
        assert text == want, text
        assert finish == ["stop"], finish
        assert usage is not None and usage.total_tokens > 0


@check
def embeddings_create():
    # The SDK asks for base64 by default and decodes it.
    r = client.embeddings.create(model="google/text-embedding-004", input="hello")
    assert len(r.data) == 1 and r.data[0].object == "embedding"
    assert r.data[0].embedding == [5 / 8, 6 / 8, 7 / 8, 8 / 8], r.data[0].embedding
    assert r.usage.prompt_tokens > 0
    r = client.embeddings.create(model="google/text-embedding-004", input=["a", "bb"], dimensions=2, encoding_format="float")
    assert [d.index for d in r.data] == [0, 1]
    assert r.data[1].embedding == [2 / 8, 3 / 8], r.data[1].embedding
    try:
        client.embeddings.create(model=CLAUDE, input="hello")
    except openai.BadRequestError as e:
        assert "no embeddings" in e.message, e.message
    else:
        raise AssertionError("Anthropic embeddings must be refused")


def expect(exc, **kw):
    try:
        r = client.chat.completions.create(**kw)
        if kw.get("stream"):
            for _ in r:
                pass
    except exc as e:
        return e
    raise AssertionError(f"expected {exc.__name__}")


@check
def typed_errors():
    msgs = [{"role": "user", "content": "hi"}]
    e = expect(openai.InternalServerError, model="anthropic/claude-overloaded", messages=msgs)
    assert e.status_code == 503 and "Overloaded" in e.message, e
    e = expect(openai.RateLimitError, model="google/gemini-exhausted", messages=msgs)
    assert "exhausted" in e.message, e.message
    e = expect(openai.BadRequestError, model=CLAUDE, messages=msgs, n=2)
    assert e.param == "n", e.body
    # A stream that fails midway raises instead of ending quietly.
    for model in [CLAUDE, GEMINI]:
        expect(openai.APIError, model=model, messages=[{"role": "user", "content": "please fail mid-stream"}], stream=True)
        expect(openai.APIError, model=model, messages=[{"role": "user", "content": "please cut the stream"}], stream=True)


passed = failed = 0
for fn in checks:
    try:
        fn()
        passed += 1
        print(f"ok {fn.__name__}")
    except Exception:
        failed += 1
        print(f"FAILED {fn.__name__}")
        traceback.print_exc()
print(f"sdk: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
