"""The official OpenAI Python SDK through the gateway to Azure OpenAI (a mock resource).

Run by tests/azure.rs, which starts the mock Azure resource and the gateway configured with
AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_API_KEY and OPENAI_API_VERSION, and passes GATEWAY_BASE_URL.
The client is a plain OpenAI client: only base_url changes, the gateway speaks Azure.
Each check prints one line; the last line is the summary.
"""
import json
import os
import sys
import traceback

import openai
from openai import OpenAI

client = OpenAI(base_url=os.environ["GATEWAY_BASE_URL"], api_key="unused", max_retries=0)
MODEL = "azure/gpt-4o"
checks = []


def check(fn):
    checks.append(fn)
    return fn


def ask(text, **kw):
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}], **kw)


@check
def plain():
    r = ask("hi")
    assert r.choices[0].message.content == "Hello from Azure", r
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.total_tokens == 12
    # Azure's extra fields reach the SDK as they came.
    assert r.prompt_filter_results[0]["content_filter_results"]["hate"]["filtered"] is False, r


@check
def streamed():
    stream = ask("hi", stream=True, stream_options={"include_usage": True})
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert text == "Hello from Azure", text
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens == 3, usage


@check
def tools():
    r = ask(
        "weather in Paris?",
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}}}}],
    )
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}


@check
def filtered_answer():
    r = ask("filtered-answer")
    assert r.choices[0].finish_reason == "content_filter", r


@check
def filtered_prompt():
    try:
        ask("forbidden")
    except openai.BadRequestError as e:
        assert e.status_code == 400
        assert e.code == "content_filter", e.body
        assert e.param == "prompt", e.body
        assert "filtered: violence" in e.message, e.message
        return
    raise AssertionError("expected BadRequestError")


@check
def throttled():
    try:
        client.chat.completions.create(model="azure/throttled", messages=[{"role": "user", "content": "x"}])
    except openai.RateLimitError as e:
        assert e.response.headers.get("retry-after") == "6"
        return
    raise AssertionError("expected RateLimitError")


@check
def embeddings():
    r = client.embeddings.create(model="azure/text-embedding-3-small", input="hello")
    # The SDK asks for base64 and reads float32s: compare with float32 precision.
    got = r.data[0].embedding
    assert len(got) == 3 and all(abs(a - b) < 1e-6 for a, b in zip(got, [0.1, -0.2, 0.3])), r


@check
def models():
    ids = [m.id for m in client.models.list()]
    assert "azure/gpt-4o" in ids, ids


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
print(f"azure sdk: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
