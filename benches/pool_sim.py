#!/usr/bin/env python3
"""Pool strategies under a simulated GPU pool (issue 23): round_robin, least_requests and
inference, the same workload for each, through the release gateway.

Each replica is a mock OpenAI-compatible server on 127.0.0.1 modelling one GPU: SLOTS requests
run at once, the rest queue (FIFO); a request's prefill takes PREFILL_MS_PER_TOKEN for each
prompt token not in the replica's prefix cache (an LRU of BLOCK_TOKENS-token blocks, chained
hashes like vLLM's, CACHE_BLOCKS at most), then DECODE_MS_PER_TOKEN per output token, streamed.
It serves vLLM-style /metrics (num_requests_waiting, num_requests_running,
kv_cache_usage_perc). A token is 4 characters of the rendered prompt.

The workload: multi-turn conversations (each turn resends the history, the replica's earlier
answers included) over a few shared system prompts, arriving open-loop (Poisson) at each rate
of RATES, for SECONDS each. Reported per strategy and rate: TTFB p50/p90/p99 (client-measured,
to the first streamed event), completed requests/s, prefix-cache hit rate (prompt tokens found
in the serving replica's cache) and the spread of requests over the replicas.

Standard library only. Run through benches/pool_sim.sh, which builds nothing: it needs
target/release/ai-gateway (cargo build --release).
"""

import asyncio
import collections
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPLICAS = int(os.environ.get("REPLICAS", "4"))
SLOTS = int(os.environ.get("SLOTS", "4"))
BLOCK_TOKENS = 16
CHARS_PER_TOKEN = 4
CACHE_BLOCKS = int(os.environ.get("CACHE_BLOCKS", "1500"))
KV_TOKENS = 40_000
PREFILL_MS_PER_TOKEN = float(os.environ.get("PREFILL_MS_PER_TOKEN", "0.2"))
DECODE_MS_PER_TOKEN = float(os.environ.get("DECODE_MS_PER_TOKEN", "2"))
OUTPUT_TOKENS = 32
CHUNK_TOKENS = 8
SYSTEM_PROMPTS = 4
RATES = [float(r) for r in os.environ.get("RATES", "10,45,80,95").split(",")]
SECONDS = float(os.environ.get("SECONDS", "15"))
WARMUP = 2.0
STRATEGIES = os.environ.get("STRATEGIES", "round_robin,least_requests,inference").split(",")
GATEWAY = os.environ.get("GATEWAY", "target/release/ai-gateway")
REQUEST_TIMEOUT = 30.0
MAX_IN_FLIGHT = 600


# --- The simulated replica -----------------------------------------------------------------

class Replica:
    def __init__(self, index):
        self.index = index
        self.cache = collections.OrderedDict()  # block hash -> None, LRU order
        self.slots = asyncio.Semaphore(SLOTS)
        self.waiting = 0
        self.running = 0
        self.kv_tokens = 0
        self.reset_counts()

    def reset_counts(self):
        self.requests = 0
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.peak_waiting = 0

    def reset(self):
        self.cache.clear()
        self.reset_counts()

    def blocks(self, text):
        size = BLOCK_TOKENS * CHARS_PER_TOKEN
        h = 0
        out = []
        for i in range(0, len(text) - size + 1, size):
            h = hash((h, text[i:i + size]))
            out.append(h)
        return out

    def cached_prefix(self, blocks):
        n = 0
        for b in blocks:
            if b not in self.cache:
                break
            self.cache.move_to_end(b)
            n += 1
        return n

    def insert(self, blocks):
        for b in blocks:
            self.cache[b] = None
            self.cache.move_to_end(b)
        while len(self.cache) > CACHE_BLOCKS:
            self.cache.popitem(last=False)

    def metrics(self):
        return (
            "# HELP vllm:num_requests_waiting Requests waiting.\n"
            "# TYPE vllm:num_requests_waiting gauge\n"
            f'vllm:num_requests_waiting{{model_name="sim"}} {self.waiting}.0\n'
            "# TYPE vllm:num_requests_running gauge\n"
            f'vllm:num_requests_running{{model_name="sim"}} {self.running}.0\n'
            "# TYPE vllm:kv_cache_usage_perc gauge\n"
            f'vllm:kv_cache_usage_perc{{model_name="sim"}} {min(1.0, self.kv_tokens / KV_TOKENS):.4f}\n'
        )

    async def complete(self, body, writer):
        messages = body.get("messages", [])
        prompt = "".join(f"<{m.get('role')}>{m.get('content')}" for m in messages)
        blocks = self.blocks(prompt)
        tokens = max(1, len(prompt) // CHARS_PER_TOKEN)
        self.requests += 1
        self.waiting += 1
        self.peak_waiting = max(self.peak_waiting, self.waiting)
        async with self.slots:
            self.waiting -= 1
            self.running += 1
            self.kv_tokens += tokens
            try:
                hit = self.cached_prefix(blocks) * BLOCK_TOKENS
                self.prompt_tokens += tokens
                self.cached_tokens += min(hit, tokens)
                await asyncio.sleep((tokens - min(hit, tokens)) * PREFILL_MS_PER_TOKEN / 1000)
                self.insert(blocks)
                words = [f"w{(hash(prompt) >> (i % 48)) & 0xfff:03x}" for i in range(OUTPUT_TOKENS)]
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                             b"transfer-encoding: chunked\r\n\r\n")
                for i in range(0, OUTPUT_TOKENS, CHUNK_TOKENS):
                    if i:
                        await asyncio.sleep(CHUNK_TOKENS * DECODE_MS_PER_TOKEN / 1000)
                    piece = "".join(w + " " for w in words[i:i + CHUNK_TOKENS])
                    ev = {"id": "sim", "object": "chat.completion.chunk", "model": "sim",
                          "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                    chunk(writer, f"data: {json.dumps(ev)}\n\n".encode())
                    await writer.drain()
                await asyncio.sleep(CHUNK_TOKENS * DECODE_MS_PER_TOKEN / 1000)
                reply = "".join(w + " " for w in words)
                self.insert(self.blocks(prompt + "<assistant>" + reply))
                done = {"id": "sim", "object": "chat.completion.chunk", "model": "sim",
                        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                chunk(writer, f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
                chunk(writer, b"")
                await writer.drain()
            finally:
                self.running -= 1
                self.kv_tokens -= tokens


def chunk(writer, data):
    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")


async def read_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return method, path, headers


async def serve_replica(replica, reader, writer):
    try:
        while True:
            try:
                method, path, headers = await read_head(reader)
            except (asyncio.IncompleteReadError, ConnectionError, ValueError):
                return
            n = int(headers.get("content-length", "0"))
            body = await reader.readexactly(n) if n else b""
            if method == "GET" and path == "/metrics":
                text = replica.metrics().encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\n"
                             + f"content-length: {len(text)}\r\n\r\n".encode() + text)
                await writer.drain()
            elif method == "POST" and path.endswith("/chat/completions"):
                await replica.complete(json.loads(body), writer)
            else:
                text = b'{"object":"list","data":[]}'
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             + f"content-length: {len(text)}\r\n\r\n".encode() + text)
                await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


# --- The workload --------------------------------------------------------------------------

SYSTEMS = [
    f"You are assistant number {i} of the support team. " + " ".join(
        f"Rule {j}: answer politely, cite the manual section {i}.{j}, never guess." for j in range(40))
    for i in range(SYSTEM_PROMPTS)
]


class Conversation:
    def __init__(self, rng, cid):
        self.messages = [{"role": "system", "content": SYSTEMS[rng.randrange(SYSTEM_PROMPTS)]}]
        self.turns_left = rng.randint(2, 8)
        self.cid = cid
        self.busy = False
        self.turn = 0

    def next_request(self, rng):
        self.turn += 1
        words = " ".join(f"detail{rng.randrange(10_000)}" for _ in range(60))
        self.messages.append({"role": "user",
                              "content": f"Conversation {self.cid}, question {self.turn}: {words}"})
        return {"model": "vllm/sim", "stream": True, "messages": self.messages}


async def post(port, body):
    """Sends one streamed chat request; returns (ttfb seconds or None, the answer text)."""
    data = json.dumps(body).encode()
    start = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n"
                     b"content-type: application/json\r\nconnection: close\r\n"
                     + f"content-length: {len(data)}\r\n\r\n".encode() + data)
        await writer.drain()
        raw = b""
        ttfb = None
        while True:
            part = await reader.read(65536)
            if not part:
                break
            raw += part
            if ttfb is None and b"data:" in raw:
                ttfb = time.monotonic() - start
        head, _, rest = raw.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            return None, None
        text = []
        for line in dechunk(rest).split(b"\n"):
            if line.startswith(b"data: {"):
                ev = json.loads(line[6:])
                for c in ev.get("choices", []):
                    text.append(c.get("delta", {}).get("content") or "")
        return ttfb, "".join(text)
    finally:
        writer.close()


def dechunk(b):
    out = b""
    while b:
        size, _, b = b.partition(b"\r\n")
        try:
            n = int(size.split(b";")[0], 16)
        except ValueError:
            return out
        if n == 0:
            break
        out += b[:n]
        b = b[n + 2:]
    return out


async def run_level(port, rate, seed):
    rng = random.Random(seed)
    idle = []
    results = []  # (ttfb, ok, finished_at)
    tasks = set()
    next_id = [0]
    t0 = time.monotonic()

    async def one(conv, measured):
        body = conv.next_request(rng)
        try:
            ttfb, text = await asyncio.wait_for(post(port, body), REQUEST_TIMEOUT)
        except (asyncio.TimeoutError, OSError):
            ttfb, text = None, None
        if measured:
            results.append((ttfb, text is not None, time.monotonic() - t0))
        if text is not None:
            conv.messages.append({"role": "assistant", "content": text})
        conv.turns_left -= 1
        conv.busy = False
        if conv.turns_left > 0 and text is not None:
            idle.append(conv)

    t = 0.0
    end = WARMUP + SECONDS
    while t < end:
        t += rng.expovariate(rate)
        delay = t0 + t - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(tasks) >= MAX_IN_FLIGHT:
            continue
        if idle and (rng.random() > 0.2 or len(idle) > 150):
            conv = idle.pop(rng.randrange(len(idle)))
        else:
            next_id[0] += 1
            conv = Conversation(rng, f"{seed}-{next_id[0]}")
        conv.busy = True
        task = asyncio.create_task(one(conv, t >= WARMUP))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT + 5)
    return results


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_gateway(strategy, replica_ports, log):
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "VLLM_BASE_URL": ",".join(f"http://127.0.0.1:{p}/v1" for p in replica_ports),
        "VLLM_POOL_STRATEGY": strategy,
        "GATEWAY_POOL_METRICS_INTERVAL": "200ms",
        "GATEWAY_HEALTH_CHECK_INTERVAL": "off",
        "GATEWAY_CACHE_BACKEND": "off",
        "GATEWAY_LOG_LEVEL": "warn",
        "GATEWAY_THREADS": "2",
        "GATEWAY_FIRST_BYTE_TIMEOUT": "60s",
        "GATEWAY_UPGRADE_SOCK": os.path.join(tempfile.gettempdir(), f"pool-sim-{port}.sock"),
        "GATEWAY_PID_FILE": os.path.join(tempfile.gettempdir(), f"pool-sim-{port}.pid"),
    }
    proc = subprocess.Popen([GATEWAY], env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the gateway did not start (see the log)")


def pct(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


async def main():
    if not os.path.exists(GATEWAY):
        raise SystemExit(f"{GATEWAY} not found: cargo build --release")
    replicas = [Replica(i) for i in range(REPLICAS)]
    servers = []
    ports = []
    for r in replicas:
        server = await asyncio.start_server(lambda rd, wr, r=r: serve_replica(r, rd, wr), "127.0.0.1", 0)
        servers.append(server)
        ports.append(server.sockets[0].getsockname()[1])
    print(f"{REPLICAS} replicas x {SLOTS} slots, prefill {PREFILL_MS_PER_TOKEN} ms/token uncached, "
          f"decode {DECODE_MS_PER_TOKEN} ms/token x {OUTPUT_TOKENS}, prefix cache {CACHE_BLOCKS} blocks "
          f"of {BLOCK_TOKENS} tokens; rates {RATES} req/s, {SECONDS:.0f} s each after {WARMUP:.0f} s warm-up")
    print()
    header = (f"{'strategy':<15}{'rate':>6}{'done/s':>8}{'ok':>6}{'fail':>5}{'p50 ms':>8}{'p90 ms':>8}"
              f"{'p99 ms':>8}{'hit %':>7}  per-replica requests (peak queue)")
    print(header)
    print("-" * len(header))
    rows = []
    log = open(os.environ.get("LOG", os.path.join(tempfile.gettempdir(), "pool-sim-gateway.log")), "w")
    for rate_i, rate in enumerate(RATES):
        for strategy in STRATEGIES:
            for r in replicas:
                r.reset()
            proc, port = start_gateway(strategy, ports, log)
            try:
                results = await run_level(port, rate, seed=1000 + rate_i)
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            ok = [r for r in results if r[1] and r[0] is not None]
            ttfb = [r[0] * 1000 for r in ok]
            span = max((r[2] for r in results), default=WARMUP + 1) - WARMUP
            prompt = sum(r.prompt_tokens for r in replicas)
            cached = sum(r.cached_tokens for r in replicas)
            spread = " ".join(f"{r.requests}({r.peak_waiting})" for r in replicas)
            row = dict(strategy=strategy, rate=rate, done=len(ok) / max(span, 1e-9), ok=len(ok),
                       fail=len(results) - len(ok), p50=pct(ttfb, 50), p90=pct(ttfb, 90),
                       p99=pct(ttfb, 99), hit=100 * cached / max(prompt, 1), spread=spread)
            rows.append(row)
            print(f"{strategy:<15}{rate:>6.0f}{row['done']:>8.1f}{row['ok']:>6}{row['fail']:>5}"
                  f"{row['p50']:>8.0f}{row['p90']:>8.0f}{row['p99']:>8.0f}{row['hit']:>7.1f}  {spread}",
                  flush=True)
        print()
    for s in servers:
        s.close()
    # The targets of issue 23.
    top, low = max(RATES), min(RATES)
    get = lambda s, r: next((x for x in rows if x["strategy"] == s and x["rate"] == r), None)
    rr, inf, lr = get("round_robin", top), get("inference", top), get("least_requests", low)
    inf_low = get("inference", low)
    if rr and inf and lr and inf_low:
        print(f"near saturation ({top:.0f} req/s): round_robin p90 / inference p90 = "
              f"{rr['p90'] / inf['p90']:.2f}x (target >= 2); cache hit {inf['hit']:.1f}% vs {rr['hit']:.1f}%")
        print(f"light load ({low:.0f} req/s): inference p90 {inf_low['p90']:.0f} ms vs least_requests "
              f"{lr['p90']:.0f} ms (target: not worse)")


if __name__ == "__main__":
    asyncio.run(main())
