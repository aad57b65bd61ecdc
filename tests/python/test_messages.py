"""The official Anthropic Python SDK against the gateway's /v1/messages.

Run by tests/messages.rs, which starts a mock Anthropic upstream (native pass-through), mock
OpenAI-compatible (`vllm/...`) and Gemini upstreams (translated) and the gateway (with `echo`),
and passes
GATEWAY_BASE_URL and GATEWAY_KEY. Each check prints one line; the last line is the summary.
"""
import base64
import os
import sys
import traceback

import anthropic

BASE = os.environ["GATEWAY_BASE_URL"].removesuffix("/v1")
KEY = os.environ["GATEWAY_KEY"]
# The version the mock Anthropic accepts: the gateway forwards the client's own.
VERSION = {"anthropic-version": "2023-06-01"}
# The SDK 2.x sends its key as Authorization: Bearer (x-api-key is tested in tests/messages.rs).
client = anthropic.Anthropic(base_url=BASE, api_key=KEY, max_retries=0, default_headers=VERSION)
# The same with auth_token (what Claude Code's ANTHROPIC_AUTH_TOKEN does).
bearer = anthropic.Anthropic(base_url=BASE, auth_token=KEY, max_retries=0, default_headers=VERSION)

NATIVE = "anthropic/claude-sonnet-4-20250514"
TRANSLATED = "vllm/qwen3-8b"
GEMINI = "google/gemini-2.0-flash"
ECHO = "echo/test"
TOOLS = [{
    "name": "get_weather",
    "description": "Current weather of a city",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["location"],
    },
}]
# A 1x1 PNG.
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000100e527de4f0000000049454e44ae426082"
)).decode()

checks = []


def check(fn):
    checks.append(fn)
    return fn


def plain(model, want):
    msg = bearer.messages.create(
        model=model, max_tokens=64,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "say hello"}],
    )
    assert msg.type == "message" and msg.role == "assistant", msg
    assert msg.content[0].type == "text", msg.content
    assert want in msg.content[0].text, msg.content
    assert msg.stop_reason == "end_turn", msg.stop_reason
    assert msg.usage.output_tokens > 0, msg.usage
    assert msg.id.startswith("msg_"), msg.id


def streamed(model, want):
    with client.messages.stream(
        model=model, max_tokens=64, messages=[{"role": "user", "content": "say hello"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert want in text, text
    assert final.content[0].text == text, final.content
    assert final.stop_reason == "end_turn", final.stop_reason
    assert final.usage.output_tokens > 0, final.usage


def tool_round_trip(model, stream):
    messages = [{"role": "user", "content": "weather in Paris?"}]
    if stream:
        with client.messages.stream(model=model, max_tokens=256, messages=messages, tools=TOOLS) as s:
            for _ in s:
                pass
            first = s.get_final_message()
    else:
        first = client.messages.create(model=model, max_tokens=256, messages=messages, tools=TOOLS)
    assert first.stop_reason == "tool_use", first
    uses = [b for b in first.content if b.type == "tool_use"]
    assert len(uses) == 1, first.content
    assert uses[0].id.startswith("toolu_"), uses[0].id
    assert uses[0].name == "get_weather", uses[0]
    assert uses[0].input == {"location": "Paris", "unit": "celsius"}, uses[0].input
    messages.append({"role": "assistant", "content": first.content})
    messages.append({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": uses[0].id, "content": [{"type": "text", "text": "18C"}]},
    ]})
    second = client.messages.create(model=model, max_tokens=256, messages=messages, tools=TOOLS)
    assert second.stop_reason == "end_turn", second
    assert second.content[0].text == "Tool said: 18C", second.content


@check
def native_plain():
    plain(NATIVE, "Hello from Claude")


@check
def native_streamed():
    streamed(NATIVE, "Hello from Claude")


@check
def native_tool_round_trip():
    tool_round_trip(NATIVE, False)
    tool_round_trip(NATIVE, True)


@check
def native_image():
    msg = client.messages.create(model=NATIVE, max_tokens=64, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "text", "text": "what is this?"},
    ]}])
    assert msg.content[0].text == "I see 1 images", msg.content


@check
def translated_plain():
    plain(TRANSLATED, "Hello from vLLM")
    plain(GEMINI, "Hello from Gemini")


@check
def translated_streamed():
    streamed(TRANSLATED, "Hello from vLLM")
    streamed(GEMINI, "Hello from Gemini")


@check
def translated_tool_round_trip():
    for model in [TRANSLATED, GEMINI]:
        tool_round_trip(model, False)
        tool_round_trip(model, True)


@check
def translated_image():
    for model in [TRANSLATED, GEMINI]:
        msg = client.messages.create(model=model, max_tokens=64, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            {"type": "text", "text": "what is this?"},
        ]}])
        assert msg.content[0].text == "I see 1 images", (model, msg.content)


@check
def translated_reasoning_as_thinking():
    with client.messages.stream(model=TRANSLATED, max_tokens=2048,
                                thinking={"type": "enabled", "budget_tokens": 1024},
                                messages=[{"role": "user", "content": "think, then say hello"}]) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert "thinking" in kinds, kinds
    assert [b.type for b in final.content] == ["thinking", "text"], final.content
    assert final.content[0].thinking == "Thinking hard.", final.content
    assert final.content[1].text == "Hello from vLLM", final.content


@check
def echo_plain_and_streamed():
    plain(ECHO, "say hello")
    streamed(ECHO, "say hello")


@check
def count_tokens():
    messages = [{"role": "user", "content": "how many tokens is this?"}]
    for model, want in [(NATIVE, 42), (TRANSLATED, 33), (GEMINI, 17)]:
        # Anthropic's own count passed through; vLLM's /tokenize; Gemini's countTokens.
        n = client.messages.count_tokens(model=model, messages=messages, tools=TOOLS)
        assert n.input_tokens == want, (model, n)
    n = client.messages.count_tokens(model=ECHO, messages=messages, tools=TOOLS)
    assert 10 < n.input_tokens < 200, n  # the gateway's estimate


@check
def models_list():
    page = client.models.list()
    ids = [m.id for m in page.data]
    assert NATIVE in ids, ids
    assert all(m.type == "model" and m.created_at.year >= 1970 for m in page.data), page.data


@check
def typed_errors():
    bad = anthropic.Anthropic(base_url=BASE, api_key="sk-wrong", max_retries=0, default_headers=VERSION)
    try:
        bad.messages.create(model=NATIVE, max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("a wrong key was accepted")
    except anthropic.AuthenticationError as e:
        assert e.status_code == 401 and e.body["error"]["type"] == "authentication_error", e.body
    for model, cls, status in [
        ("nope/model", anthropic.NotFoundError, 404),
        ("anthropic/claude-ratelimited", anthropic.RateLimitError, 429),
        ("anthropic/claude-overloaded", anthropic.OverloadedError, 529),
    ]:
        try:
            client.messages.create(model=model, max_tokens=5, messages=[{"role": "user", "content": "hi"}])
            raise AssertionError(f"{model}: no error")
        except cls as e:
            assert e.status_code == status, (model, e.status_code)
            assert e.body["type"] == "error", e.body
    try:
        client.messages.create(model=TRANSLATED, max_tokens=5, messages=[{"role": "user", "content": "hi"}],
                               tools=[{"type": "web_search_20250305", "name": "web_search"}])
        raise AssertionError("a server tool was sent to a translated provider")
    except anthropic.BadRequestError as e:
        assert "tools[0].type" in str(e), e


passed = failed = 0
for fn in checks:
    try:
        fn()
        passed += 1
        print(f"ok {fn.__name__}")
    except Exception:
        failed += 1
        print(f"FAIL {fn.__name__}")
        traceback.print_exc(file=sys.stdout)
print(f"sdk: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
