"""Custom and hosted tools, reasoning, input files and echoed settings through the gateway's
/v1/responses, with the official OpenAI Python SDK's typed parsing.

Run by tests/responses.rs (`responses_tools_reasoning_files_and_echo`), which starts the mock
upstreams (OpenAI-compatible `vllm/...`, which reasons when asked to "think" and calls
`apply_patch` when offered; Anthropic; Gemini) and the gateway, and passes GATEWAY_BASE_URL,
GATEWAY_KEY and PATCH (the patch the OpenAI-compatible mock sends). Each check prints one line;
the last line is the summary.
"""
import base64
import json
import os
import sys
import traceback

import openai

BASE = os.environ["GATEWAY_BASE_URL"]
KEY = os.environ["GATEWAY_KEY"]
PATCH = os.environ["PATCH"]
client = openai.OpenAI(base_url=BASE, api_key=KEY, max_retries=0)

VLLM = "vllm/qwen3-8b"
CLAUDE = "anthropic/claude-sonnet-4-20250514"
GEMINI = "google/gemini-2.0-flash"
ECHO = "echo/test"
# Codex CLI's free-form tool, its grammar shortened.
APPLY_PATCH = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Use the `apply_patch` tool to edit files.",
    "format": {"type": "grammar", "syntax": "lark", "definition": "start: begin_patch hunk+ end_patch"},
}
# Hosted tools as Codex sends them: no translated provider can run them.
HOSTED = [{"type": "web_search", "external_web_access": True}, {"type": "tool_search"}]
WEATHER = {"location": "Paris", "unit": "celsius"}

checks = []


def check(fn):
    checks.append(fn)
    return fn


def custom_round_trip(model, stream, is_input, **extra):
    """A call to the custom tool (its input checked by `is_input`), then its output sent back."""
    items = [{"role": "user", "content": "think, then fix the file"}]
    kwargs = dict(model=model, tools=[APPLY_PATCH, *HOSTED], temperature=0.2, instructions="Be brief.",
                  max_output_tokens=900, metadata={"run": "1"}, **extra)
    if stream:
        with client.responses.stream(input=items, **kwargs) as s:
            events = list(s)
            first = s.get_final_response()
        deltas = "".join(e.delta for e in events if e.type == "response.custom_tool_call_input.delta")
        done = [e for e in events if e.type == "response.custom_tool_call_input.done"]
        assert len(done) == 1 and done[0].input == deltas and is_input(deltas), (deltas, done)
        assert type(done[0]).__name__ == "ResponseCustomToolCallInputDoneEvent", type(done[0])
        assert [e.sequence_number for e in events] == list(range(len(events))), events
    else:
        raw = client.responses.with_raw_response.create(input=items, **kwargs)
        assert raw.headers.get("x-gateway-dropped-tools") == "web_search,tool_search", raw.headers
        first = raw.parse()
        events = []
    calls = [o for o in first.output if o.type == "custom_tool_call"]
    assert len(calls) == 1 and calls[0].name == "apply_patch", first.output
    assert is_input(calls[0].input), calls[0]
    assert type(calls[0]).__name__ == "ResponseCustomToolCall", type(calls[0])
    assert not [o for o in first.output if o.type == "function_call"], first.output
    # The request's settings, echoed and typed.
    assert first.temperature == 0.2 and first.instructions == "Be brief.", first
    assert first.max_output_tokens == 900 and first.metadata == {"run": "1"}, first
    assert [t.type for t in first.tools] == ["custom", "web_search", "tool_search"], first.tools
    assert first.tools[0].name == "apply_patch" and first.tools[0].format.syntax == "lark", first.tools
    assert first.tool_choice == "auto" and first.parallel_tool_calls is True, first
    assert first.top_p == 1.0 and first.store is True and first.truncation == "disabled", first
    assert first.previous_response_id is None and first.user is None, first
    # The whole history back, the custom call as received, its output after it.
    items += [o.model_dump(exclude_none=True) for o in first.output]
    items.append({"type": "custom_tool_call_output", "call_id": calls[0].call_id, "output": "Done! patched"})
    second = client.responses.create(model=model, input=items, tools=[APPLY_PATCH, *HOSTED])
    assert second.output_text == "Tool said: Done! patched", second.output
    return first, events


@check
def vllm_reasoning_and_custom_tool():
    for stream in (False, True):
        first, events = custom_round_trip(VLLM, stream, lambda s: s == PATCH,
                                          reasoning={"effort": "high", "summary": "auto"})
        assert [o.type for o in first.output] == ["reasoning", "custom_tool_call"], first.output
        assert first.output[0].summary[0].text == "Thinking hard.", first.output[0]
        assert first.output[0].id.startswith("rs_"), first.output[0]
        assert first.usage.output_tokens_details.reasoning_tokens == 5, first.usage
        assert first.reasoning.effort == "high", first.reasoning
        if stream:
            kinds = [e.type for e in events]
            summary = "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta")
            assert summary == "Thinking hard.", kinds
            for k in ["response.reasoning_summary_part.added", "response.reasoning_summary_text.done",
                      "response.reasoning_summary_part.done", "response.custom_tool_call_input.done"]:
                assert k in kinds, (k, kinds)
            # Reasoning first, then the call.
            assert kinds.index("response.reasoning_summary_text.done") < kinds.index("response.custom_tool_call_input.delta"), kinds


@check
def vllm_reasoning_with_text():
    r = client.responses.create(model=VLLM, input="think, then say hello")
    assert [o.type for o in r.output] == ["reasoning", "message"], r.output
    assert r.output_text == "Hello from vLLM", r.output_text
    # Defaults OpenAI echoes for what the request left out.
    assert r.tools == [] and r.temperature == 1.0 and r.reasoning.effort is None, r
    assert r.text.format.type == "text" and r.service_tier == "default", r


@check
def anthropic_custom_tool():
    # The mock calls the first tool with its weather arguments: not `{"input": ...}`, so the
    # custom tool gets the arguments as written.
    for stream in (False, True):
        custom_round_trip(CLAUDE, stream, lambda s: json.loads(s) == WEATHER, reasoning={"summary": "auto"})


@check
def gemini_custom_tool():
    for stream in (False, True):
        custom_round_trip(GEMINI, stream, lambda s: json.loads(s) == WEATHER)


@check
def forced_custom_tool():
    r = client.responses.create(model=VLLM, input="patch", tools=[APPLY_PATCH],
                                tool_choice={"type": "custom", "name": "apply_patch"})
    assert r.output[0].type == "custom_tool_call" and r.output[0].input == PATCH, r.output
    assert r.tool_choice.type == "custom" and r.tool_choice.name == "apply_patch", r.tool_choice


@check
def hosted_tools_forced_are_refused():
    for choice, param in [({"type": "web_search_preview"}, "tool_choice.type"), ("required", "tool_choice")]:
        try:
            client.responses.create(model=VLLM, input="search", tools=[{"type": "web_search_preview"}],
                                    tool_choice=choice)
            raise AssertionError(f"{choice}: no error")
        except openai.BadRequestError as e:
            assert e.param == param and "web_search_preview" in e.message, (e.param, e.message)


@check
def input_files():
    pdf = base64.b64encode(b"%PDF-1.4 gateway test").decode()
    content = [{"type": "input_text", "text": "read this"},
               {"type": "input_file", "filename": "report.pdf", "file_data": pdf}]
    # Gemini takes it inline (the mock counts inline parts).
    r = client.responses.create(model=GEMINI, input=[{"role": "user", "content": content}])
    assert r.output_text == "I see 1 images", r.output_text
    # Anthropic takes a PDF as a document (checked upstream by tests/responses.rs).
    content[1]["file_data"] = f"data:application/pdf;base64,{pdf}"
    r = client.responses.create(model=CLAUDE, input=[{"role": "user", "content": content}])
    assert r.status == "completed", r
    for part, param in [({"type": "input_file", "file_id": "file-abc"}, "input[0].content[0].file_id"),
                        ({"type": "input_file", "file_url": "https://example.com/a.pdf"}, "input[0].content[0].file_url")]:
        try:
            client.responses.create(model=GEMINI, input=[{"role": "user", "content": [part]}])
            raise AssertionError(f"{part}: no error")
        except openai.BadRequestError as e:
            assert e.param == param, (e.param, e.message)


@check
def echo_settings_and_stream():
    r = client.responses.create(model=ECHO, input="echo me", temperature=0.7, top_p=0.5, user="u1",
                                text={"format": {"type": "text"}, "verbosity": "low"}, store=False,
                                parallel_tool_calls=False, truncation="auto")
    assert r.output_text == "echo me", r.output_text
    assert (r.temperature, r.top_p, r.user, r.store) == (0.7, 0.5, "u1", False), r
    assert r.text.verbosity == "low" and r.parallel_tool_calls is False and r.truncation == "auto", r
    with client.responses.stream(model=ECHO, input="echo me", temperature=0.7) as s:
        kinds = [e.type for e in s]
        final = s.get_final_response()
    assert kinds[-1] == "response.completed" and final.temperature == 0.7, (kinds, final)
    assert final.output_text == "echo me", final


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
