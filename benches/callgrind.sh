#!/usr/bin/env bash
# Instructions per request, repeatable on a noisy machine: runs the gateway under valgrind's
# callgrind, sends a fixed number of requests one after another and prints the instruction
# count per request of the gateway and of its main parts.
#
#   benches/callgrind.sh                          # pass-through, 2,000 requests
#   benches/callgrind.sh anthropic/claude-3-5-haiku-latest
#   CACHE=memory benches/callgrind.sh             # cache hits (the first request fills it)
#   API=messages benches/callgrind.sh anthropic/claude-3-5-haiku-latest   # /v1/messages, native
#   API=messages benches/callgrind.sh             # /v1/messages in, OpenAI chat out (translated)
#   API=responses benches/callgrind.sh            # the same conversation to /v1/responses (OpenAI: native)
#   API=responses NATIVE=off benches/callgrind.sh # ... translated to chat (OPENAI_NATIVE_RESPONSES=off)
#   API=completions benches/callgrind.sh          # the conversation as one prompt, /v1/completions
#   BIN=/tmp/old-build benches/callgrind.sh       # another build, to compare in one sitting
#   CG_OUT=/tmp/cg.out benches/callgrind.sh       # keep callgrind's file (callgrind_annotate)
#   OTEL=on benches/callgrind.sh                  # tracing on, every request sampled, spans
#                                                 # exported to the mock's /v1/traces
#   OTEL=on OTEL_RATIO=0.1 benches/callgrind.sh   # ... a tenth of the requests sampled
#   OTEL=on OTEL_BSP_MAX_EXPORT_BATCH_SIZE=2048 OTEL_BSP_MAX_QUEUE_SIZE=8192 benches/callgrind.sh
#                                                 # ... batching variables passed through
#   KEY_OPTS=:budget=1000000/total benches/callgrind.sh   # a budgeted key (reservation + settle)
#   CACHE_SIM=on benches/callgrind.sh             # also simulate the caches (this machine's L1s, a
#                                                 # 2 MB last level) and print misses per request
#
# Needs: valgrind, nginx (the mock upstream), python3, a release build. Loopback only; the
# request loop is bounded by N. valgrind has no SHA-NI: SHA-256 (auth, cache keys) counts far
# more instructions here than it costs on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${1:-openai/gpt-4o-mini}
N=${N:-2000}
CACHE=${CACHE:-off}
NATIVE=${NATIVE:-on}
API=${API:-chat}
case "$API" in
  chat) REQ_PATH=/v1/chat/completions ;;
  messages) REQ_PATH=/v1/messages ;;
  responses) REQ_PATH=/v1/responses ;;
  completions) REQ_PATH=/v1/completions ;;
  *) echo "API must be chat, messages, responses or completions" >&2; exit 1 ;;
esac
OTEL=${OTEL:-off}
MOCK_PORT=${MOCK_PORT:-18191}
GW_PORT=${GW_PORT:-18193}
for tool in valgrind callgrind_annotate callgrind_control nginx python3 curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool (Debian: apt-get install -y valgrind nginx-light)" >&2; exit 1; }
done
# BIN: another build to compare in the same sitting (default: this tree's release build).
BIN=${BIN:-target/release/ai-gateway}
[ "$BIN" != target/release/ai-gateway ] || [ -x "$BIN" ] || cargo build --release --bin ai-gateway

WORK=$(mktemp -d)
GW=
cleanup() {
  [ -n "$GW" ] && kill "$GW" 2>/dev/null || true
  [ -f "$WORK/nginx-mock.pid" ] && kill "$(cat "$WORK/nginx-mock.pid")" 2>/dev/null || true
  [ -n "${KEEP:-}" ] && echo "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

# The mock upstream (benches/mock-upstream.sh): fixed answers, keep-alive, one worker.
. benches/mock-upstream.sh   # (the working directory is the repository root)
write_mock_conf "$WORK" "$MOCK_PORT"
nginx -c "$WORK/mock.conf" -p "$WORK" -g 'daemon on;'

# The same 2 KB-class chat request as benches/load.sh (in Messages or Responses form for
# API=messages or API=responses).
python3 - "$MODEL" "$API" > "$WORK/body.json" <<'PY'
import json, sys
system = "You are a helpful assistant. "*20
msgs=[]
for i in range(6):
    msgs.append({"role":"user","content":f"Question {i}: "+"what is the capital of France? "*6})
    msgs.append({"role":"assistant","content":"Paris is the capital of France. "*5})
msgs.append({"role":"user","content":"Thanks, and of Italy?"})
if sys.argv[2] == "messages":
    print(json.dumps({"model":sys.argv[1],"system":system,"messages":msgs,"temperature":0.2,"max_tokens":64}))
elif sys.argv[2] == "responses":
    print(json.dumps({"model":sys.argv[1],"instructions":system,"input":msgs,"temperature":0.2,"max_output_tokens":64}))
elif sys.argv[2] == "completions":
    prompt = system + "".join(f"\n{m['role']}: {m['content']}" for m in msgs)
    print(json.dumps({"model":sys.argv[1],"prompt":prompt,"temperature":0.2,"max_tokens":64}))
else:
    msgs.insert(0, {"role":"system","content":system})
    print(json.dumps({"model":sys.argv[1],"messages":msgs,"temperature":0.2,"max_tokens":64}))
PY

# OTEL=on: OpenTelemetry traces, every request sampled, batches POSTed to the mock.
OTEL_VARS=()
# OTEL_RATIO=0.1: sample a tenth of the requests instead (traceidratio).
if [ "$OTEL" = on ]; then
  OTEL_VARS=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$MOCK_PORT" OTEL_TRACES_SAMPLER=always_on)
  [ -z "${OTEL_RATIO:-}" ] || OTEL_VARS+=(OTEL_TRACES_SAMPLER=traceidratio OTEL_TRACES_SAMPLER_ARG="$OTEL_RATIO")
  # Batching (OTEL_BSP_*) passed through when set, to measure the per-batch share.
  for v in OTEL_BSP_SCHEDULE_DELAY OTEL_BSP_MAX_QUEUE_SIZE OTEL_BSP_MAX_EXPORT_BATCH_SIZE; do
    [ -z "${!v:-}" ] || OTEL_VARS+=("$v=${!v}")
  done
fi

# CACHE_SIM=on: valgrind's cache simulation (I1 and D1 as on this host, LL as one core's 2 MB L2).
SIM_OPTS=()
[ "${CACHE_SIM:-off}" != on ] || SIM_OPTS=(--cache-sim=yes --LL=2097152,16,64)

env -i PATH="$PATH" GATEWAY_LISTEN="127.0.0.1:$GW_PORT" GATEWAY_THREADS=1 \
  GATEWAY_UPGRADE_SOCK="$WORK/up.sock" GATEWAY_PID_FILE="$WORK/gw.pid" \
  GATEWAY_HEALTH_CHECK_INTERVAL=off GATEWAY_API_KEYS="bench=sk-gw-bench-key${KEY_OPTS:-}" GATEWAY_CACHE_BACKEND="$CACHE" \
  OPENAI_BASE_URL="http://127.0.0.1:$MOCK_PORT" OPENAI_API_KEY=sk-upstream OPENAI_NATIVE_RESPONSES="$NATIVE" \
  ANTHROPIC_BASE_URL="http://127.0.0.1:$MOCK_PORT" ANTHROPIC_API_KEY=sk-ant-upstream \
  "${OTEL_VARS[@]}" valgrind --tool=callgrind "${SIM_OPTS[@]}" --callgrind-out-file="$WORK/cg.out" --instr-atstart=no \
  "$BIN" > "$WORK/gw.log" 2>&1 &
GW=$!
for _ in $(seq 300); do curl -fs "http://127.0.0.1:$GW_PORT/health" >/dev/null && break; sleep 0.1; done

send() { # $1 requests, one connection, one after another
  python3 - "$1" "$WORK/body.json" "$GW_PORT" "$REQ_PATH" <<'PY'
import http.client, sys
n, body, port, path = int(sys.argv[1]), open(sys.argv[2], "rb").read(), int(sys.argv[3]), sys.argv[4]
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
ok = 0
for _ in range(n):
    c.request("POST", path, body,
              {"Authorization": "Bearer sk-gw-bench-key", "Content-Type": "application/json",
               "anthropic-version": "2023-06-01"})
    r = c.getresponse(); r.read(); ok += r.status == 200
if ok != n:
    sys.exit(f"{n - ok} of {n} requests failed")
PY
}
send 50                        # warm-up: pools, caches, lazy statics
callgrind_control -i on "$GW" >/dev/null
send "$N"
callgrind_control -i off "$GW" >/dev/null
kill "$GW"; wait "$GW" 2>/dev/null || true; GW=

# CG_OUT: keep callgrind's output there, for callgrind_annotate.
[ -z "${CG_OUT:-}" ] || cp "$WORK/cg.out" "$CG_OUT"
echo "api=$API model=$MODEL cache=$CACHE native_responses=$NATIVE otel=$OTEL${OTEL_RATIO:+ ratio=$OTEL_RATIO} requests=$N (instructions per request, inclusive)"
callgrind_annotate --inclusive=yes --auto=no --threshold=100 "$WORK/cg.out" 2>/dev/null | awk -v n="$N" '
  # A function can be listed more than once (inlined code from other files, or its own file
  # under two paths); its largest inclusive entry is the one that holds its calls.
  function show(label, pat,   i, best) { for (i = 1; i <= cnt; i++) if (line[i] ~ pat && val[i] + 0 > best) best = val[i] + 0; if (best) printf "%9.1fk  %s\n", best / n / 1000, label }
  /PROGRAM TOTALS/ { v = $1; gsub(",", "", v); total = v }
  /^ *[0-9,]+ +\([ 0-9.]+%\) +[^ ]/ && !/PROGRAM TOTALS/ { v = $1; gsub(",", "", v); cnt++; val[cnt] = v; line[cnt] = $0 }
  END {
    printf "%9.1fk  %s\n", total / n / 1000, "whole process"
    show("Pingora: connection and request cycle", "apps::ServerApp>::process_new::\\{\\{closure\\}\\}( |$)")
    show("gateway: one request (read, answer, log, finish)", "proxy::app::App as pingora_core::apps::HttpServerApp>::process_new_http::\\{\\{closure\\}\\}( |$)")
    show("  route (everything the answer takes)", "proxy::Gateway::route::\\{\\{closure\\}\\}( |$)")
    show("  request parse + validation", "api::ChatRequest::parse(_with)?( |$)")
    show("  Messages request -> canonical request", "AnthropicMessages as ai_gateway::dialects::Dialect>::parse( |$)")
    show("  Responses request -> chat request", "openai_responses::to_chat( |$)")
    show("  Responses request head (native)", "responses_head::read( |$)")
    show("  stored response kept (state)", "proxy::responses::complete::\\{\\{closure\\}\\}( |$)")
    show("  request body as a JSON tree (translation, cache)", "api::ChatRequest::body( |$)")
    show("  cache key (canonical form + SHA-256)", "cache::key::exact_request( |$)")
    show("  translation to the provider", "Provider>::chat_request( |$)")
    show("  completions and the other endpoints (passthrough.rs)", "proxy::passthrough::handle::\\{\\{closure\\}\\}( |$)")
    show("  upstream exchange (Pingora connector)", "upstream::Upstreams::send::\\{\\{closure\\}\\}( |$)")
    show("  response translation / usage", "Provider>::chat_response( |$)")
    show("  response to the client", "proxy::respond::\\{\\{closure\\}\\}( |$)")
    show("  auth", "auth::Auth::authenticate( |$)")
    show("  trace: server span started", "ai_gateway::trace::start( |$)")
    show("  trace: server span ended", "ai_gateway::trace::RequestTrace::finish( |$)")
    show("trace export thread (frame + POST)", "ai_gateway::trace::export_loop( |$)")
  }'
if [ "${CACHE_SIM:-off}" = on ]; then
  # Misses per request: instruction fetches that missed L1 (I1mr), data reads and writes that
  # missed L1 (D1mr + D1mw), and everything that missed the last level (ILmr + DLmr + DLmw).
  callgrind_annotate --auto=no --threshold=100 "$WORK/cg.out" 2>/dev/null | awk -v n="$N" '/PROGRAM TOTALS/ {
    gsub(/\([ 0-9.]+%\)/, ""); for (i = 1; i <= 9; i++) { v[i] = $i; gsub(",", "", v[i]) }
    printf "%9.1f  I1 misses a request\n%9.1f  D1 misses a request\n%9.1f  LL misses a request\n", v[4] / n, (v[5] + v[6]) / n, (v[7] + v[8] + v[9]) / n }'
fi
