#!/usr/bin/env bash
# Load benchmark: the gateway against nginx as a plain reverse proxy, on loopback.
#
#   benches/load.sh                  # ~2.5 minutes; prints one table
#   TRACE_ROUNDS=9 benches/load.sh   # ... and 9 more tracing off/on pairs (+14 s each), median ratio
#
# Layout (2 cores): core 0 runs wrk and the nginx mock upstream; core 1 runs the thing under
# test (the gateway with GATEWAY_THREADS=1, or nginx proxy_pass with one worker), so the CPU
# time per request of the gateway and of nginx are measured the same way: user+sys of that
# process over the run, divided by the requests it served.
# Needs: nginx (nginx-light), wrk, taskset (util-linux), a release build (built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}      # seconds per throughput run
CONNS=${CONNS:-32}
MOCK_PORT=${MOCK_PORT:-18081}
PROXY_PORT=${PROXY_PORT:-18082}
GW_PORT=${GW_PORT:-18083}
GW_KEY=sk-gw-bench-key

for tool in nginx wrk taskset; do
  command -v "$tool" >/dev/null || { echo "missing $tool (Debian: apt-get install -y nginx-light wrk util-linux)" >&2; exit 1; }
done
[ -x target/release/ai-gateway ] || cargo build --release --bin ai-gateway
BIN=target/release/ai-gateway

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for f in "$WORK"/nginx-*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# The mock upstream (benches/mock-upstream.sh): fixed answers, keep-alive, one worker.
. benches/mock-upstream.sh   # (the working directory is the repository root)
write_mock_conf "$WORK" "$MOCK_PORT"
# The baseline: nginx as a plain reverse proxy with upstream keep-alive, one worker.
cat > "$WORK/proxy.conf" <<CONF
worker_processes 1;
pid $WORK/nginx-proxy.pid;
error_log $WORK/proxy-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream mock { server 127.0.0.1:$MOCK_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$PROXY_PORT;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CONF
taskset -c 0 nginx -c "$WORK/mock.conf" -p "$WORK" -g 'daemon on;'
taskset -c 1 nginx -c "$WORK/proxy.conf" -p "$WORK" -g 'daemon on;'
sleep 0.5

BODY=$(python3 - <<'PY'
import json
msgs=[{"role":"system","content":"You are a helpful assistant. "*20}]
for i in range(6):
    msgs.append({"role":"user","content":f"Question {i}: "+"what is the capital of France? "*6})
    msgs.append({"role":"assistant","content":"Paris is the capital of France. "*5})
msgs.append({"role":"user","content":"Thanks, and of Italy?"})
print(json.dumps({"model":"MODEL","messages":msgs,"temperature":0.2,"max_tokens":64}))
PY
)
lua_for() { # $1 model -> wrk script
  local f="$WORK/${1//\//_}.lua" b=${BODY//MODEL/$1}
  b=${b//\\/\\\\}; b=${b//\"/\\\"}
  cat > "$f" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $GW_KEY"
wrk.body = "$b"
LUA
  echo "$f"
}

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
hwm_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
nginx_worker() { pgrep -P "$(cat "$WORK/nginx-proxy.pid")" | head -1; }
TICK=$(getconf CLK_TCK)

RESULTS="$WORK/results"
: > "$RESULTS"
# run NAME URL MODEL PID(or -) CONNS
run() {
  local name=$1 url=$2 model=$3 pid=$4 conns=$5 dur=${6:-$DURATION}
  local script; script=$(lua_for "$model")
  local t0=0; [ "$pid" != - ] && t0=$(cpu_ticks "$pid")
  local out; out=$(taskset -c 0 wrk -t1 -c"$conns" -d"${dur}s" --latency -s "$script" "$url")
  local t1=0; [ "$pid" != - ] && t1=$(cpu_ticks "$pid")
  local reqs rps p50 p99 non2xx
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  local cpu_us=- rss=-
  if [ "$pid" != - ] && [ "${reqs:-0}" -gt 0 ]; then
    cpu_us=$(awk -v a="$t0" -v b="$t1" -v n="$reqs" -v hz="$TICK" 'BEGIN {printf "%.1f", (b-a)/hz*1e6/n}')
    rss=$(( $(hwm_kb "$pid") / 1024 ))
  fi
  printf '%-32s %6s %10s %9s %9s %10s %7s %s\n' "$name" "$conns" "$rps" "$p50" "$p99" "$cpu_us" "$rss" "${non2xx:+non2xx=$non2xx}"
  echo "$name|$conns|$rps|$p50|$p99|$cpu_us|$rss|${non2xx:-0}" >> "$RESULTS"
}

start_gw() { # extra env...
  env -i PATH="$PATH" GATEWAY_LISTEN=127.0.0.1:$GW_PORT GATEWAY_THREADS=1 \
    GATEWAY_UPGRADE_SOCK="$WORK/up.sock" GATEWAY_PID_FILE="$WORK/gw.pid" \
    GATEWAY_HEALTH_CHECK_INTERVAL=off GATEWAY_API_KEYS="bench=$GW_KEY" \
    OPENAI_BASE_URL="http://127.0.0.1:$MOCK_PORT" OPENAI_API_KEY=sk-upstream \
    ANTHROPIC_BASE_URL="http://127.0.0.1:$MOCK_PORT" ANTHROPIC_API_KEY=sk-ant-upstream \
    "$@" taskset -c 1 "$BIN" > "$WORK/gw.log" 2>&1 &
  GW=$!
  PIDS+=("$GW")
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$GW_PORT/health" >/dev/null && break; sleep 0.05; done
}
stop_gw() { kill "$GW"; wait "$GW" 2>/dev/null || true; }

printf '%-32s %6s %10s %9s %9s %10s %7s\n' scenario conns req/s p50 p99 "cpu_us/req" "rss_MB"
run "direct to mock" "http://127.0.0.1:$MOCK_PORT/v1/chat/completions" gpt-4o-mini - "$CONNS"
NGX=$(nginx_worker)
run "nginx proxy_pass" "http://127.0.0.1:$PROXY_PORT/v1/chat/completions" gpt-4o-mini "$NGX" "$CONNS"
run "nginx proxy_pass, 1 conn" "http://127.0.0.1:$PROXY_PORT/v1/chat/completions" gpt-4o-mini "$NGX" 1 5

start_gw GATEWAY_CACHE_BACKEND=off
run "gateway pass-through" "http://127.0.0.1:$GW_PORT/v1/chat/completions" openai/gpt-4o-mini "$GW" "$CONNS"
run "gateway pass-through, 1 conn" "http://127.0.0.1:$GW_PORT/v1/chat/completions" openai/gpt-4o-mini "$GW" 1 5
run "gateway -> anthropic" "http://127.0.0.1:$GW_PORT/v1/chat/completions" anthropic/claude-3-5-haiku-latest "$GW" "$CONNS"
stop_gw

# Tracing on, every request sampled, spans exported to the mock's /v1/traces (the export
# thread runs on the gateway's core too, so its CPU is counted).
start_gw GATEWAY_CACHE_BACKEND=off OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$MOCK_PORT" OTEL_TRACES_SAMPLER=always_on
run "gateway pass-through, traced" "http://127.0.0.1:$GW_PORT/v1/chat/completions" openai/gpt-4o-mini "$GW" "$CONNS"
stop_gw

# TRACE_ROUNDS=N: N more pairs, each side on a fresh gateway for TRACE_DURATION seconds, for the
# median of the per-pair CPU ratios (one pair moves by several percent on a busy machine: many
# short pairs close together vary less than a few long ones). The order alternates (off then on,
# on then off), so a machine that drifts during the run favours neither side.
TRACE_DURATION=${TRACE_DURATION:-5}
trace_side() { # off|on
  if [ "$1" = on ]; then
    start_gw GATEWAY_CACHE_BACKEND=off OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$MOCK_PORT" OTEL_TRACES_SAMPLER=always_on
  else
    start_gw GATEWAY_CACHE_BACKEND=off
  fi
  # One unmeasured second first (the upstream connections, the span buffers, the collector's).
  taskset -c 0 wrk -t1 -c"$CONNS" -d1s -s "$(lua_for openai/gpt-4o-mini)" "http://127.0.0.1:$GW_PORT/v1/chat/completions" >/dev/null
  run "tracing pair $i: $1" "http://127.0.0.1:$GW_PORT/v1/chat/completions" openai/gpt-4o-mini "$GW" "$CONNS" "$TRACE_DURATION"
  stop_gw
}
for i in $(seq "${TRACE_ROUNDS:-0}"); do
  if [ $((i % 2)) = 1 ]; then trace_side off; trace_side on; else trace_side on; trace_side off; fi
done

start_gw GATEWAY_CACHE_BACKEND=memory
run "gateway cache hit" "http://127.0.0.1:$GW_PORT/v1/chat/completions" openai/gpt-4o-mini "$GW" "$CONNS"
stop_gw

echo
python3 - "$RESULTS" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    name, conns, rps, p50, p99, cpu, rss, non2xx = line.rstrip("\n").split("|")
    rows[name] = dict(rps=float(rps or 0), p50=p50, cpu=float(cpu) if cpu not in ("-", "") else None, non2xx=int(non2xx or 0))
def ms(s):
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if s.endswith(unit):
            return float(s[: -len(unit)]) * f
    return float("nan")
n, g = rows.get("nginx proxy_pass"), rows.get("gateway pass-through")
if n and g:
    print(f"gateway pass-through / nginx proxy_pass: req/s {g['rps'] / n['rps']:.2f}x, cpu/req {g['cpu'] / n['cpu']:.2f}x")
t = rows.get("gateway pass-through, traced")
if g and t and g["cpu"] and t["cpu"]:
    print(f"tracing on (always_on, exported) / off: cpu/req {t['cpu'] / g['cpu']:.2f}x, req/s {t['rps'] / g['rps']:.2f}x")
pairs = []
i = 1
while f"tracing pair {i}: off" in rows:
    a, b = rows[f"tracing pair {i}: off"], rows.get(f"tracing pair {i}: on")
    if b and a["cpu"] and b["cpu"]:
        pairs.append(b["cpu"] / a["cpu"])
    i += 1
if pairs:
    pairs.sort()
    median = pairs[len(pairs) // 2] if len(pairs) % 2 else (pairs[len(pairs) // 2 - 1] + pairs[len(pairs) // 2]) / 2
    print(f"tracing on / off over {len(pairs)} pairs: cpu/req median {median:.2f}x (each: {', '.join(f'{r:.2f}' for r in pairs)})")
n1, g1 = rows.get("nginx proxy_pass, 1 conn"), rows.get("gateway pass-through, 1 conn")
if n1 and g1:
    print(f"added latency at 1 connection (p50): gateway {ms(g1['p50']):.3f} ms vs nginx {ms(n1['p50']):.3f} ms: {ms(g1['p50']) - ms(n1['p50']):+.3f} ms")
bad = [k for k, v in rows.items() if v["non2xx"]]
if bad:
    print("WARNING: non-2xx answers in: " + ", ".join(bad))
PY
echo "(p50/p99 as wrk reports them; cpu_us/req = user+sys CPU of the process under test / requests served)"
