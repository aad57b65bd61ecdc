#!/usr/bin/env bash
# Pool strategies under a simulated pool of GPU replicas (issue 23): round_robin,
# least_requests and inference, light load to near saturation, through the release gateway.
# Loopback only; about 4 minutes. Knobs (environment): RATES=10,45,80,95 SECONDS=15 REPLICAS=4
# SLOTS=4 PREFILL_MS_PER_TOKEN=0.2 DECODE_MS_PER_TOKEN=2 CACHE_BLOCKS=1500 STRATEGIES=...
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x target/release/ai-gateway ] || cargo build --release
exec python3 benches/pool_sim.py "$@"
