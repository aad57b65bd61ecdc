"""The official OpenAI Python SDK through reasoning models behind the gateway (issue 20).

Run by tests/reasoning.rs, which starts mock Anthropic and Gemini upstreams that enforce the
providers' rules for thinking in tool loops, and passes GATEWAY_BASE_URL. A three-turn tool
conversation with `reasoning_effort`, plain and streamed, on Claude and Gemini 3: each turn's
reasoning is shown (`reasoning_content`), the assistant message goes back as the SDK gave it,
and the upstream accepts the next turn only if the gateway restored what it needs.
"""
import os
import sys
import traceback

from openai import OpenAI

BASE = os.environ["GATEWAY_BASE_URL"]
client = OpenAI(base_url=BASE, api_key="unused", max_retries=0)

MODELS = ["anthropic/claude-sonnet-4-5", "google/gemini-3-pro-preview"]
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
]
RESULTS = {"get_weather": "18C", "get_time": "14:00"}


def plain_turn(model, messages):
    r = client.chat.completions.create(
        model=model, messages=messages, tools=TOOLS, reasoning_effort="high")
    choice = r.choices[0]
    reasoning = getattr(choice.message, "reasoning_content", None)
    assert reasoning, choice.message
    if "gemini" in model:
        assert r.usage.completion_tokens_details.reasoning_tokens == 64, r.usage
    # The SDK's own message object goes back as history, as most applications do it.
    return choice.finish_reason, choice.message, choice.message.content, choice.message.tool_calls


def streamed_turn(model, messages):
    stream = client.chat.completions.create(
        model=model, messages=messages, tools=TOOLS, reasoning_effort="high", stream=True,
        stream_options={"include_usage": True})
    reasoning, content, calls, finish, usage = "", "", {}, None, None
    order = []
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        if not chunk.choices:
            continue
        c = chunk.choices[0]
        d = c.delta
        r = getattr(d, "reasoning_content", None)
        if r:
            reasoning += r
            order.append("r")
        if d.content:
            content += d.content
            order.append("c")
        for t in d.tool_calls or []:
            order.append("t")
            slot = calls.setdefault(t.index, {"id": "", "name": "", "arguments": ""})
            if t.id:
                slot["id"] = t.id
            if t.function and t.function.name:
                slot["name"] = t.function.name
            if t.function and t.function.arguments:
                slot["arguments"] += t.function.arguments
        if c.finish_reason:
            finish = c.finish_reason
    assert reasoning, order
    # Reasoning streams first, before any content or tool call.
    assert "r" in order and "".join(order).lstrip("r").count("r") == 0, order
    if "gemini" in model:
        assert usage.completion_tokens_details.reasoning_tokens == 64, usage
    tool_calls = [{"id": v["id"], "type": "function",
                   "function": {"name": v["name"], "arguments": v["arguments"]}}
                  for _, v in sorted(calls.items())]
    message = {"role": "assistant", "content": content or None, "reasoning_content": reasoning}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return finish, message, content, tool_calls


def name_of(call):
    return call["function"]["name"] if isinstance(call, dict) else call.function.name


def id_of(call):
    return call["id"] if isinstance(call, dict) else call.id


def conversation(model, turn):
    messages = [{"role": "user", "content": "What are the weather and the time in Paris?"}]
    for step, want in enumerate(["get_weather", "get_time", None]):
        finish, message, content, calls = turn(model, messages)
        if want is None:
            assert finish == "stop", finish
            assert content == "Paris: 18C, 14:00", content
            return
        assert finish == "tool_calls", finish
        assert [name_of(c) for c in calls] == [want], calls
        messages.append(message)
        messages.append({"role": "tool", "tool_call_id": id_of(calls[0]), "content": RESULTS[want]})


def main():
    passed = failed = 0
    for model in MODELS:
        for name, turn in [("plain", plain_turn), ("streamed", streamed_turn)]:
            try:
                conversation(model, turn)
                print(f"ok   {model} {name}")
                passed += 1
            except Exception:
                print(f"FAIL {model} {name}")
                traceback.print_exc(file=sys.stdout)
                failed += 1
    print(f"reasoning: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


main()
