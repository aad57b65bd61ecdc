"""The official OpenAI Python SDK against the gateway: only base_url changes.

Run by tests/python_sdk.rs, which starts the gateway and a mock OpenAI upstream and passes
GATEWAY_BASE_URL. Each check prints one line; the last line is the summary.
"""
import os
import sys
import traceback

import openai
from openai import OpenAI

BASE = os.environ["GATEWAY_BASE_URL"]
client = OpenAI(base_url=BASE, api_key=os.environ.get("GATEWAY_CLIENT_KEY", "unused"), max_retries=0)

checks = []


def check(fn):
    checks.append(fn)
    return fn


@check
def plain_echo():
    r = client.chat.completions.create(model="echo/test", messages=[{"role": "user", "content": "hello sdk"}])
    assert r.object == "chat.completion", r
    assert r.choices[0].message.content == "hello sdk", r
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.total_tokens > 0


@check
def stream_echo():
    stream = client.chat.completions.create(
        model="echo/test",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert text == "one two three", text
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens == 3


@check
def upstream_plain_and_stream():
    r = client.chat.completions.create(model="openai/gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "Hello from the mock", r
    stream = client.chat.completions.create(model="openai/gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True)
    text = "".join((c.choices[0].delta.content or "") for c in stream if c.choices)
    assert text == "Hello from the mock", text


@check
def models_list():
    ids = [m.id for m in client.models.list()]
    assert "echo/echo" in ids, ids
    assert "openai/mock-model" in ids, ids


def expect(exc, **kw):
    try:
        client.chat.completions.create(**kw)
    except exc as e:
        assert e.body is not None
        return e
    raise AssertionError(f"expected {exc.__name__}")


@check
def typed_errors():
    e = expect(openai.NotFoundError, model="anthropic/claude-3-5-haiku-latest", messages=[{"role": "user", "content": "x"}])
    assert "ANTHROPIC_API_KEY" in e.message, e.message
    expect(openai.BadRequestError, model="echo/test", messages=[])
    expect(openai.AuthenticationError, model="openai/status-401", messages=[{"role": "user", "content": "x"}])
    expect(openai.RateLimitError, model="openai/status-429", messages=[{"role": "user", "content": "x"}])
    expect(openai.InternalServerError, model="openai/status-500", messages=[{"role": "user", "content": "x"}])
    # Errors on streams are raised too.
    expect(openai.RateLimitError, model="openai/status-429", messages=[{"role": "user", "content": "x"}], stream=True)


# Checks added by later features register themselves here.
extra = os.environ.get("GATEWAY_SDK_EXTRA")
if extra:
    sys.path.insert(0, os.path.dirname(__file__))
    __import__(extra).register(check, client)

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
