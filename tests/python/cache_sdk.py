"""Cache checks for the official OpenAI Python SDK (loaded by test_sdk.py through
GATEWAY_SDK_EXTRA=cache_sdk; run by tests/cache.rs against a gateway with the memory cache and
a mock upstream answering "Hello from the mock").

A cached answer must be indistinguishable, to the SDK, from a fresh one: a plain request gets
a ChatCompletion, a stream request a stream of chunks that ends cleanly.
"""
import uuid


def register(check, client):
    def create(**kw):
        raw = client.chat.completions.with_raw_response.create(**kw)
        return raw.headers.get("x-cache"), raw.parse()

    def read_stream(stream):
        text, finish, usage = "", None, None
        for chunk in stream:
            assert chunk.object == "chat.completion.chunk", chunk
            if chunk.usage:
                usage = chunk.usage
            for c in chunk.choices:
                text += c.delta.content or ""
                finish = c.finish_reason or finish
        return text, finish, usage

    @check
    def cache_plain_then_both_forms():
        msgs = [{"role": "user", "content": f"plain first {uuid.uuid4()}"}]
        state, r = create(model="openai/gpt-4o", messages=msgs)
        assert state == "MISS", state
        state, again = create(model="openai/gpt-4o", messages=msgs)
        assert state == "HIT", state
        assert again.object == "chat.completion"
        assert again.choices[0].message.content == "Hello from the mock", again
        assert again.choices[0].finish_reason == "stop"
        assert again.usage.total_tokens == r.usage.total_tokens == 18, (again.usage, r.usage)
        state, stream = create(model="openai/gpt-4o", messages=msgs, stream=True,
                               stream_options={"include_usage": True})
        assert state == "HIT", state
        text, finish, usage = read_stream(stream)
        assert text == "Hello from the mock", text
        assert finish == "stop"
        assert usage is not None and usage.total_tokens == 18, usage

    @check
    def cache_stream_then_both_forms():
        msgs = [{"role": "user", "content": f"stream first {uuid.uuid4()}"}]
        state, stream = create(model="openai/gpt-4o", messages=msgs, stream=True)
        assert state == "MISS", state
        assert read_stream(stream)[0] == "Hello from the mock"
        state, stream = create(model="openai/gpt-4o", messages=msgs, stream=True)
        assert state == "HIT", state
        text, finish, usage = read_stream(stream)
        assert (text, finish, usage) == ("Hello from the mock", "stop", None), (text, finish, usage)
        state, r = create(model="openai/gpt-4o", messages=msgs)
        assert state == "HIT", state
        assert r.choices[0].message.content == "Hello from the mock", r
        assert r.usage.completion_tokens == 4, r.usage
