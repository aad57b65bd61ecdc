#!/usr/bin/env bash
# The test command: everything the test suite needs that cargo does not bring, then cargo test.
#   - a Python venv (.venv) with the official openai and anthropic SDKs and prometheus_client,
#     for the client-compatibility and metrics-parsing tests;
#   - redis-server on PATH, for the Redis backend tests (each test starts its own on loopback);
#   - Claude Code in tests/node (npm ci), for the Claude Code test.
#   - Codex CLI (npm @openai/codex) in .tools/codex, for tests/codex.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! .venv/bin/python -c 'import openai, anthropic, prometheus_client' 2>/dev/null; then
  echo "== creating .venv with openai, anthropic and prometheus_client"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check openai anthropic prometheus-client
fi
if ! command -v npm >/dev/null; then
  echo "npm is not installed (Debian: apt-get install -y nodejs npm); the Claude Code and Codex CLI tests need it" >&2
  exit 1
fi
# Claude Code (npm @anthropic-ai/claude-code) for tests/claude_code.rs and the openai npm package
# for tests/openai_rest.rs, the versions pinned in tests/node/package-lock.json.
if [ ! -x tests/node/node_modules/.bin/claude ] || [ ! -f tests/node/node_modules/openai/package.json ]; then
  echo "== npm ci in tests/node (Claude Code, openai)"
  npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
fi
# Codex CLI, for tests/codex.rs (the version clients.md's recordings were made with).
CODEX_VERSION=0.171.0
if ! .tools/codex/node_modules/.bin/codex --version 2>/dev/null | grep -qx "codex-cli $CODEX_VERSION"; then
  echo "== installing @openai/codex@$CODEX_VERSION into .tools/codex"
  npm install --prefix .tools/codex --no-audit --no-fund --silent "@openai/codex@$CODEX_VERSION"
fi
if ! command -v redis-server >/dev/null; then
  echo "redis-server is not installed (Debian: apt-get install -y redis-server)" >&2
  exit 1
fi
exec cargo test --locked "$@"
