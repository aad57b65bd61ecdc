"""The official OpenAI Python SDK's Responses API against the gateway's /v1/responses.

Run by tests/responses.rs, which starts a mock OpenAI-compatible upstream (`vllm/...`) and a
mock Anthropic upstream (`anthropic/...`) and a mock Gemini upstream (`google/...`), all
translated, and the gateway (with `echo`), and
passes GATEWAY_BASE_URL and GATEWAY_KEY. Each check prints one line; the last line is the
summary.
"""
import json
import os
import sys
import traceback

import openai

BASE = os.environ["GATEWAY_BASE_URL"]
KEY = os.environ["GATEWAY_KEY"]
client = openai.OpenAI(base_url=BASE, api_key=KEY, max_retries=0)

VLLM = "vllm/qwen3-8b"
CLAUDE = "anthropic/claude-sonnet-4-20250514"
GEMINI = "google/gemini-2.0-flash"
ECHO = "echo/test"
TOOLS = [{
    "type": "function",
    "name": "get_weather",
    "description": "Current weather of a city",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["location"],
    },
    "strict": False,
}]
# What Codex CLI adds to every request: accepted and dropped when translating.
CODEX_EXTRAS = {
    "store": False,
    "include": ["reasoning.encrypted_content"],
    "reasoning": {"summary": "auto"},
    "prompt_cache_key": "session-1",
    "extra_body": {"client_metadata": {"x-codex-turn": "1"}},
}

checks = []


def check(fn):
    checks.append(fn)
    return fn


def plain(model, want):
    r = client.responses.create(model=model, instructions="Be brief.", input="say hello", **CODEX_EXTRAS)
    assert r.object == "response" and r.id.startswith("resp_"), r
    assert r.status == "completed", r.status
    assert want in r.output_text, r.output_text
    assert r.output[0].type == "message" and r.output[0].content[0].type == "output_text", r.output
    assert r.usage.output_tokens > 0 and r.usage.total_tokens >= r.usage.output_tokens, r.usage
    assert r.model == model, r.model


def streamed(model, want):
    # The low-level stream: every event typed, numbered in order, one response id throughout.
    events = list(client.responses.create(model=model, input=[{"role": "user", "content": "say hello"}], stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"], kinds
    assert kinds[-1] == "response.completed", kinds
    assert [e.sequence_number for e in events] == list(range(len(events))), events
    ids = {e.response.id for e in events if hasattr(e, "response")}
    assert len(ids) == 1, ids
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert want in text, text
    assert events[-1].response.output_text == text, events[-1].response
    assert events[-1].response.usage.output_tokens > 0, events[-1].response.usage
    # The helper, strict about order and item identity.
    with client.responses.stream(model=model, input="say hello", **CODEX_EXTRAS) as s:
        deltas = "".join(e.delta for e in s if e.type == "response.output_text.delta")
        final = s.get_final_response()
    assert want in deltas and final.output_text == deltas, (deltas, final)


def tool_round_trip(model, stream):
    items = [{"role": "user", "content": "weather in Paris?"}]
    if stream:
        with client.responses.stream(model=model, input=items, tools=TOOLS) as s:
            for _ in s:
                pass
            first = s.get_final_response()
    else:
        first = client.responses.create(model=model, input=items, tools=TOOLS, parallel_tool_calls=False)
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1, first.output
    assert calls[0].name == "get_weather", calls[0]
    assert json.loads(calls[0].arguments) == {"location": "Paris", "unit": "celsius"}, calls[0]
    assert calls[0].call_id, calls[0]
    # The whole history resent, the model's items as received (as Codex does).
    items += [o.model_dump(exclude_none=True) for o in first.output]
    items.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": "18C"})
    second = client.responses.create(model=model, input=items, tools=TOOLS)
    assert second.output_text == "Tool said: 18C", second.output
    assert not [o for o in second.output if o.type == "function_call"], second.output


@check
def vllm_plain():
    plain(VLLM, "Hello from vLLM")


@check
def vllm_streamed():
    streamed(VLLM, "Hello from vLLM")


@check
def vllm_tool_round_trip():
    tool_round_trip(VLLM, False)
    tool_round_trip(VLLM, True)


@check
def anthropic_plain():
    plain(CLAUDE, "Hello from Claude")


@check
def anthropic_streamed():
    streamed(CLAUDE, "Hello from Claude")


@check
def anthropic_tool_round_trip():
    tool_round_trip(CLAUDE, False)
    tool_round_trip(CLAUDE, True)


@check
def anthropic_json_schema():
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "born": {"type": "integer"}},
              "required": ["name", "born"], "additionalProperties": False}
    r = client.responses.create(model=CLAUDE, input="who wrote the first program?",
                                text={"format": {"type": "json_schema", "name": "person", "schema": schema, "strict": True}})
    assert json.loads(r.output_text) == {"name": "Ada", "born": 1815}, r.output_text


@check
def gemini_plain_streamed_and_tools():
    plain(GEMINI, "Hello from Gemini")
    streamed(GEMINI, "Hello from Gemini")
    tool_round_trip(GEMINI, False)
    tool_round_trip(GEMINI, True)


@check
def echo_plain_and_streamed():
    plain(ECHO, "say hello")
    streamed(ECHO, "say hello")


@check
def mid_stream_failure():
    events = list(client.responses.create(model=CLAUDE, input="please fail mid-stream", stream=True))
    kinds = [e.type for e in events]
    assert "response.output_text.delta" in kinds, kinds
    assert kinds[-1] == "response.failed", kinds
    assert events[-1].response.id == events[0].response.id, events
    assert events[-1].response.status == "failed" and events[-1].response.error.message, events[-1]
    assert [e.sequence_number for e in events] == list(range(len(events))), events
    # The helper accepts it (same response, in order) and reports no completed response.
    with client.responses.stream(model=CLAUDE, input="please fail mid-stream") as s:
        kinds = [e.type for e in s]
    assert kinds[-1] == "response.failed", kinds


@check
def typed_errors():
    bad = openai.OpenAI(base_url=BASE, api_key="sk-wrong", max_retries=0)
    try:
        bad.responses.create(model=VLLM, input="hi")
        raise AssertionError("a wrong key was accepted")
    except openai.AuthenticationError as e:
        assert e.status_code == 401, e
    for kwargs, cls, param in [
        ({"model": "nope/model"}, openai.NotFoundError, None),
        ({"model": "anthropic/claude-ratelimited"}, openai.RateLimitError, None),
        ({"model": VLLM, "previous_response_id": "resp_123"}, openai.NotFoundError, "previous_response_id"),
        # A hosted tool is left out of the offered tools; forcing one cannot be honoured.
        ({"model": VLLM, "tools": [{"type": "web_search_preview"}], "tool_choice": {"type": "web_search_preview"}},
         openai.BadRequestError, "tool_choice.type"),
        ({"model": VLLM, "background": True}, openai.BadRequestError, "background"),
    ]:
        try:
            client.responses.create(input="hi", **kwargs)
            raise AssertionError(f"{kwargs}: no error")
        except cls as e:
            assert e.body and e.body.get("message"), e.body
            if param:
                assert e.param == param, (kwargs, e.param)


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
