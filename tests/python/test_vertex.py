"""The official OpenAI Python SDK through the gateway to Google Vertex AI (Gemini and Claude).

Run by tests/vertex.rs, which starts the mock token endpoint and Vertex API and the gateway,
and passes GATEWAY_BASE_URL. Each check prints one line; the last line is the summary.
"""
import json
import os
import sys
import traceback

import openai
from openai import OpenAI

BASE = os.environ["GATEWAY_BASE_URL"]
client = OpenAI(base_url=BASE, api_key="unused", max_retries=0)

GEMINI = "vertex/gemini-2.0-flash"
CLAUDE = "vertex/claude-sonnet-4@20250514"
TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    },
}]

checks = []


def check(fn):
    checks.append(fn)
    return fn


@check
def plain_both_publishers():
    for model, want in [(GEMINI, "Hello from Gemini"), (CLAUDE, "Hello from Claude")]:
        r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        assert r.object == "chat.completion", r
        assert r.model == model, r.model
        assert r.choices[0].message.content == want, r
        assert r.choices[0].finish_reason == "stop"
        assert r.usage.total_tokens > 0


@check
def streams_both_publishers():
    for model, want in [(GEMINI, "Hello from Gemini"), (CLAUDE, "Hello from Claude")]:
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "hi"}],
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
        assert text == want, text
        assert finish == "stop", finish
        assert usage is not None and usage.completion_tokens > 0


@check
def tools_both_publishers():
    for model in [GEMINI, CLAUDE]:
        r = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "weather in Paris?"}], tools=TOOLS
        )
        call = r.choices[0].message.tool_calls[0]
        assert call.function.name == "get_weather", call
        assert json.loads(call.function.arguments)["location"] == "Paris"
        assert r.choices[0].finish_reason == "tool_calls"


@check
def typed_errors():
    try:
        client.chat.completions.create(model="vertex/gemini-exhausted", messages=[{"role": "user", "content": "x"}])
    except openai.RateLimitError as e:
        assert e.status_code == 429
    else:
        raise AssertionError("no RateLimitError")
    try:
        client.chat.completions.create(model="vertex/claude-ratelimited", messages=[{"role": "user", "content": "x"}], stream=True)
    except openai.RateLimitError:
        pass
    else:
        raise AssertionError("no RateLimitError on a stream")


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
print(f"vertex sdk: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
