#!/usr/bin/env bash
# 1,000 concurrent streams, directly and through the gateway (see benches/stream.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ -x target/release/ai-gateway ] || cargo build --release --bin ai-gateway
exec cargo bench --bench stream
