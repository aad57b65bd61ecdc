"""The official OpenAI Python SDK's stored responses through the gateway (or, for the mock's
fidelity check, straight against the mock OpenAI Responses upstream).

Run by tests/responses_native.rs with GATEWAY_BASE_URL, GATEWAY_KEY, MODEL, and OTHER_KEY (a
second gateway key, or empty to skip the other-key checks) and CUT_CHECK=1 where the upstream
cuts a stream asked to ("please cut the stream") and the gateway must end it. Each check prints one line; the last
line is the summary.
"""
import os
import sys
import traceback

import openai

BASE = os.environ["GATEWAY_BASE_URL"]
KEY = os.environ["GATEWAY_KEY"]
MODEL = os.environ["MODEL"]
OTHER = os.environ.get("OTHER_KEY", "")
client = openai.OpenAI(base_url=BASE, api_key=KEY, max_retries=0)
TOOLS = [{
    "type": "function",
    "name": "get_weather",
    "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    "strict": False,
}]

checks = []


def check(fn):
    checks.append(fn)
    return fn


@check
def create_and_stream():
    r = client.responses.create(model=MODEL, input="say hello")
    assert r.object == "response" and r.id.startswith("resp_"), r
    assert r.status == "completed" and r.output_text, r
    assert r.usage.total_tokens > 0, r.usage
    with client.responses.stream(model=MODEL, input="say hello") as s:
        deltas = "".join(e.delta for e in s if e.type == "response.output_text.delta")
        final = s.get_final_response()
    assert deltas and final.output_text == deltas, (deltas, final)
    print("  text:", final.output_text)


@check
def previous_response_id_plain_and_streamed():
    r1 = client.responses.create(model=MODEL, input="My name is Ada.")
    r2 = client.responses.create(model=MODEL, previous_response_id=r1.id, input="What is my name?")
    assert "Ada" in r2.output_text, r2.output_text
    assert r2.id != r1.id
    # A chain of three, the middle one streamed.
    with client.responses.stream(model=MODEL, previous_response_id=r2.id, input="And again, my name?") as s:
        final = s.get_final_response()
    assert "Ada" in final.output_text, final.output_text
    r4 = client.responses.create(model=MODEL, previous_response_id=final.id, input="Once more: name?")
    assert "Ada" in r4.output_text, r4.output_text


@check
def tool_round_trip_by_previous_response_id():
    r1 = client.responses.create(model=MODEL, input="weather in Paris?", tools=TOOLS)
    calls = [o for o in r1.output if o.type == "function_call"]
    assert calls and calls[0].name == "get_weather", r1.output
    r2 = client.responses.create(
        model=MODEL, previous_response_id=r1.id, tools=TOOLS,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "18C"}],
    )
    assert "Tool said: 18C" in r2.output_text, r2.output_text


@check
def retrieve_and_delete():
    r = client.responses.create(model=MODEL, input="say hello")
    got = client.responses.retrieve(r.id)
    assert got.id == r.id and got.output_text == r.output_text, (got, r)
    assert client.responses.delete(r.id) is None
    for call in (lambda: client.responses.retrieve(r.id), lambda: client.responses.delete(r.id)):
        try:
            call()
            raise AssertionError("a deleted response is still there")
        except openai.NotFoundError as e:
            assert e.status_code == 404, e
    try:
        client.responses.create(model=MODEL, previous_response_id=r.id, input="hi")
        raise AssertionError("continued a deleted response")
    except (openai.NotFoundError, openai.BadRequestError) as e:
        # OpenAI (and the mock, run straight) answers 400; the gateway 404 (issue 16).
        assert e.status_code == (404 if OTHER else 400), e
        assert e.param == "previous_response_id", e.body


@check
def not_stored_means_not_kept():
    r = client.responses.create(model=MODEL, input="say hello", store=False)
    try:
        client.responses.retrieve(r.id)
        raise AssertionError("store=False was kept")
    except openai.NotFoundError:
        pass


@check
def another_key_gets_404():
    if not OTHER:
        print("  (no other key here)")
        return
    r = client.responses.create(model=MODEL, input="My name is Ada.")
    other = openai.OpenAI(base_url=BASE, api_key=OTHER, max_retries=0)
    for call in (lambda: other.responses.retrieve(r.id), lambda: other.responses.delete(r.id)):
        try:
            call()
            raise AssertionError("another key read or deleted it")
        except openai.NotFoundError as e:
            assert e.status_code == 404, e
    try:
        other.responses.create(model=MODEL, previous_response_id=r.id, input="What is my name?")
        raise AssertionError("another key continued it")
    except openai.NotFoundError as e:
        assert e.param == "previous_response_id", e.body
    # Still there for its own key.
    assert client.responses.retrieve(r.id).id == r.id


@check
def cut_stream_ends_with_response_failed():
    if os.environ.get("CUT_CHECK") != "1":
        print("  (no cut check here)")
        return
    events = list(client.responses.create(model=MODEL, input="please cut the stream", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.failed", kinds
    assert "response.completed" not in kinds, kinds
    assert events[-1].response.id == events[0].response.id, events[-1]
    assert events[-1].response.status == "failed" and events[-1].response.error.message, events[-1]
    assert [e.sequence_number for e in events] == list(range(len(events))), events


@check
def typed_errors():
    try:
        client.responses.retrieve("resp_unknown")
        raise AssertionError("an unknown id was found")
    except openai.NotFoundError as e:
        assert e.body and e.body.get("message"), e.body


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
