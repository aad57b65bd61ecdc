# Sourced by benches/load.sh and benches/callgrind.sh: the nginx mock upstream they share.
#
#   write_mock_conf DIR PORT    writes DIR/mock.conf (pid DIR/nginx-mock.pid, loopback PORT)
#
# Fixed answers in each provider's format, keep-alive, one worker; `/v1/traces` accepts OTLP
# exports.

OPENAI_BODY='{"id":"chatcmpl-bench","object":"chat.completion","created":1727346142,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":14,"completion_tokens":9,"total_tokens":23}}'
RESPONSES_BODY='{"id":"resp_bench","object":"response","created_at":1727346142,"status":"completed","error":null,"incomplete_details":null,"model":"gpt-4o-mini","output":[{"type":"message","id":"msg_bench","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hello! How can I help you today?","annotations":[]}]}],"usage":{"input_tokens":14,"input_tokens_details":{"cached_tokens":0},"output_tokens":9,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":23}}'
COMPLETION_BODY='{"id":"cmpl-bench","object":"text_completion","created":1727346142,"model":"gpt-3.5-turbo-instruct","choices":[{"text":"Hello! How can I help you today?","index":0,"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":14,"completion_tokens":9,"total_tokens":23}}'
ANTHROPIC_BODY='{"id":"msg_bench","type":"message","role":"assistant","model":"claude-3-5-haiku-latest","content":[{"type":"text","text":"Hello! How can I help you today?"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":14,"output_tokens":9}}'

write_mock_conf() {
  local dir=$1 port=$2
  cat > "$dir/mock.conf" <<CONF
worker_processes 1;
pid $dir/nginx-mock.pid;
error_log $dir/mock-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$port;
    location = /v1/chat/completions { default_type application/json; return 200 '$OPENAI_BODY'; }
    location = /v1/responses { default_type application/json; return 200 '$RESPONSES_BODY'; }
    location = /v1/completions { default_type application/json; return 200 '$COMPLETION_BODY'; }
    location = /v1/messages { default_type application/json; return 200 '$ANTHROPIC_BODY'; }
    # An OTLP collector that takes every export (benches with tracing on).
    location = /v1/traces { default_type application/x-protobuf; return 200 ''; }
    location / { default_type application/json; return 200 '{"object":"list","data":[]}'; }
  }
}
CONF
}
