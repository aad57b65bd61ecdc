"""The official Anthropic Python SDK against /v1/messages for what a translated upstream's
reasoning and stop sequences become, and for a native upstream's own error body.

Run by tests/messages.rs (`thinking_stop_sequences_and_native_errors_through_the_sdk`), which
starts a mock OpenAI-compatible upstream that reasons and stops on the request's first stop
sequence the way vLLM reports it, and a mock Anthropic that answers with its own error body,
and passes GATEWAY_BASE_URL and GATEWAY_KEY. Each check prints one line; the last line is the
summary.
"""
import os
import sys
import traceback

import anthropic

BASE = os.environ["GATEWAY_BASE_URL"].removesuffix("/v1")
KEY = os.environ["GATEWAY_KEY"]
client = anthropic.Anthropic(base_url=BASE, api_key=KEY, max_retries=0,
                             default_headers={"anthropic-version": "2023-06-01"})
ASK = dict(model="vllm/qwen3-8b", max_tokens=8000, stop_sequences=["END", "STOP"],
           thinking={"type": "enabled", "budget_tokens": 4000},
           messages=[{"role": "user", "content": "count to three"}])

checks = []


def check(fn):
    checks.append(fn)
    return fn


def assert_answer(msg):
    kinds = [b.type for b in msg.content]
    assert kinds == ["thinking", "text"], kinds
    assert msg.content[0].thinking == "Counting.", msg.content[0]
    assert msg.content[1].text == "1, 2, 3", msg.content[1]
    assert msg.stop_reason == "stop_sequence", msg.stop_reason
    assert msg.stop_sequence == "END", msg.stop_sequence


@check
def plain_thinking_and_stop_sequence():
    assert_answer(client.messages.create(**ASK))


@check
def streamed_thinking_and_stop_sequence():
    with client.messages.stream(**ASK) as stream:
        thinking = "".join(e.thinking for e in stream if e.type == "thinking")
        final = stream.get_final_message()
    assert thinking == "Counting.", thinking
    assert_answer(final)


@check
def native_error_body_untouched():
    try:
        client.messages.create(model="anthropic/claude-sonnet-4-5", max_tokens=64,
                               messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("no error")
    except anthropic.BadRequestError as e:
        assert e.status_code == 400, e.status_code
        assert e.body["request_id"] == "req_011CQ9native", e.body
        assert e.body["error"]["message"].startswith("max_tokens: 999999"), e.body


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
