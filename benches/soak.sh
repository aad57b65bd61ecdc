#!/usr/bin/env bash
# Soak benchmark: a million requests of mixed kinds through one gateway, its resident memory
# sampled as they go. Memory must level off (the cache, the stored responses and every pool
# are bounded), not grow with the number of requests.
#
#   benches/soak.sh                  # N=1000000 requests, at most MAX_SECS=900 seconds
#   N=200000 benches/soak.sh         # a shorter run
#
# The mix, in turn, each request with a prompt of its own (so every one is a cache miss that
# stores an entry, and every Responses request is kept in the state backend):
#   chat to an OpenAI-compatible upstream (passed through), chat streamed by `echo`, Responses
#   translated to chat and stored, Messages translated to chat, chat translated to Anthropic.
# The upstream is the nginx mock of benches/mock-upstream.sh. wrk stops after N responses (a
# Lua counter per thread) or after MAX_SECS, whichever comes first; RSS is read from
# /proc/PID/status every SAMPLE seconds. Loopback only.
# Needs: nginx (nginx-light), wrk, a release build (built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-1000000}
MAX_SECS=${MAX_SECS:-900}
SAMPLE=${SAMPLE:-10}
CONNS=${CONNS:-32}
THREADS=${THREADS:-2}
MOCK_PORT=${MOCK_PORT:-18481}
GW_PORT=${GW_PORT:-18483}
GW_KEY=sk-gw-soak-key

for tool in nginx wrk; do
  command -v "$tool" >/dev/null || { echo "missing $tool (Debian: apt-get install -y nginx-light wrk)" >&2; exit 1; }
done
[ -x target/release/ai-gateway ] || cargo build --release --bin ai-gateway
BIN=target/release/ai-gateway

WORK=$(mktemp -d)
GW=
WRK=
cleanup() {
  [ -n "$WRK" ] && kill "$WRK" 2>/dev/null || true
  [ -n "$GW" ] && kill "$GW" 2>/dev/null || true
  [ -f "$WORK/nginx-mock.pid" ] && kill "$(cat "$WORK/nginx-mock.pid")" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

. benches/mock-upstream.sh
write_mock_conf "$WORK" "$MOCK_PORT"
nginx -c "$WORK/mock.conf" -p "$WORK" -g 'daemon on;'

env -i PATH="$PATH" GATEWAY_LISTEN="127.0.0.1:$GW_PORT" \
  GATEWAY_UPGRADE_SOCK="$WORK/up.sock" GATEWAY_PID_FILE="$WORK/gw.pid" \
  GATEWAY_HEALTH_CHECK_INTERVAL=off GATEWAY_API_KEYS="soak=$GW_KEY" \
  GATEWAY_CACHE_BACKEND=memory GATEWAY_LOG_LEVEL=warn \
  OPENAI_BASE_URL="http://127.0.0.1:$MOCK_PORT" OPENAI_API_KEY=sk-upstream OPENAI_NATIVE_RESPONSES=off \
  ANTHROPIC_BASE_URL="http://127.0.0.1:$MOCK_PORT" ANTHROPIC_API_KEY=sk-ant-upstream \
  "$BIN" > "$WORK/gw.log" 2>&1 &
GW=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$GW_PORT/health" >/dev/null && break; sleep 0.1; done

cat > "$WORK/soak.lua" <<LUA
-- Five kinds of request in turn, each with a prompt of its own; stops after its share of N.
local kinds = {
  {"/v1/chat/completions", '{"model":"openai/gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"question %s: what is the capital of France? Please answer in one word."}]}'},
  {"/v1/chat/completions", '{"model":"echo/soak","stream":true,"messages":[{"role":"user","content":"stream %s: count one two three four five six seven eight nine ten"}]}'},
  {"/v1/responses", '{"model":"openai/gpt-4o-mini","instructions":"Be brief.","input":[{"role":"user","content":"turn %s: say hello"}],"max_output_tokens":64}'},
  {"/v1/messages", '{"model":"openai/gpt-4o-mini","max_tokens":64,"system":"Be brief.","messages":[{"role":"user","content":"message %s: say hello"}]}'},
  {"/v1/chat/completions", '{"model":"anthropic/claude-3-5-haiku-latest","max_tokens":64,"messages":[{"role":"user","content":"anthropic %s: say hello"}]}'},
}
local threads = {}
function setup(thread)
  thread:set("id", #threads + 1)
  thread:set("limit", math.floor($N / $THREADS))
  table.insert(threads, thread)
end
n, got, bad = 0, 0, 0
function init(args)
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer $GW_KEY"
  wrk.headers["anthropic-version"] = "2023-06-01"
end
function request()
  n = n + 1
  local k = kinds[(n % #kinds) + 1]
  return wrk.format("POST", k[1], nil, string.format(k[2], id .. "-" .. n))
end
function response(status, headers, body)
  got = got + 1
  if status ~= 200 then bad = bad + 1 end
  if got >= limit then wrk.thread:stop() end
end
function done(summary, latency, requests)
  local total_bad = 0
  for _, t in ipairs(threads) do total_bad = total_bad + t:get("bad") end
  io.write(string.format("soak: %d responses, %d not 200, %.0f req/s, p50 %.2f ms, p99 %.2f ms\n",
    summary.requests, total_bad, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
LUA

rss_mb() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$GW/status"; }
# Requests the gateway has answered (its own counter, every endpoint).
served() {
  curl -fs "http://127.0.0.1:$GW_PORT/metrics" \
    | awk '/^gateway_requests_total\{/ && !/endpoint="(health|other)"/ {s += $NF} END {printf "%d", s}'
}
echo "soak: N=$N requests, at most ${MAX_SECS}s, $CONNS connections; gateway RSS every ${SAMPLE}s"
echo "   t_s  rss_MB  requests"
printf '%6d  %6s  %8d  (idle)\n' 0 "$(rss_mb)" "$(served)"
wrk -t"$THREADS" -c"$CONNS" -d"${MAX_SECS}s" -s "$WORK/soak.lua" "http://127.0.0.1:$GW_PORT" > "$WORK/wrk.out" 2>&1 &
WRK=$!
START=$(date +%s)
while kill -0 "$WRK" 2>/dev/null; do
  sleep "$SAMPLE"
  kill -0 "$WRK" 2>/dev/null || break
  done_so_far=$(served)
  printf '%6d  %6s  %8d\n' $(( $(date +%s) - START )) "$(rss_mb)" "$done_so_far"
  # wrk's threads stop at their share of N but wrk itself waits out its duration: SIGINT
  # ends it at once, with its summary.
  [ "$done_so_far" -ge "$N" ] && kill -INT "$WRK" 2>/dev/null || true
done
wait "$WRK" || true
WRK=
printf '%6d  %6s  %8d  (end)\n' $(( $(date +%s) - START )) "$(rss_mb)" "$(served)"
grep '^soak:' "$WORK/wrk.out" || { cat "$WORK/wrk.out"; exit 1; }
awk '/VmHWM/ {printf "peak RSS %.1f MB\n", $2 / 1024}' "/proc/$GW/status"
curl -fs "http://127.0.0.1:$GW_PORT/metrics" | grep -E '^gateway_cache_entries ' || true
grep -cE ' (ERROR|WARN) ' "$WORK/gw.log" | sed 's/^/gateway warnings and errors logged: /' || true
