//! # ai-gateway
//!
//! One OpenAI-compatible endpoint in front of OpenAI, Anthropic, Gemini, Ollama, Hugging Face,
//! vLLM and any OpenAI-compatible host, built on Cloudflare's Pingora.
//!
//! # Layout
//!
//! - [`config`]: every environment variable, parsed once into a validated `Config`; one file per
//!   feature (`providers`, `routing`, `auth`, `ratelimit`, `tls`, `cache`, `pricing`). A leaf:
//!   it imports no other module of the gateway.
//! - [`server`]: Pingora bootstrap, listeners, signals and graceful shutdown.
//! - [`proxy`]: the `HttpServerApp` Pingora runs per request: read the head, route by path,
//!   answer, write the log line.
//! - [`chat`]: `/v1/chat/completions` and `/v1/embeddings`: the upstream exchange and streaming.
//! - [`cache`]: the response cache: keys, memory and Redis backends, coalescing, semantic layer.
//! - [`models`]: the `/v1/models` endpoint.
//! - [`api`]: the public OpenAI types: request parsing, completion and chunk writers (the OpenAI
//!   chat dialect's [`canonical`] writers).
//! - [`canonical`]: the canonical answer, usage and stream events; the writer traits a client
//!   dialect implements.
//! - [`error`]: the OpenAI error object every client sees.
//! - [`providers`]: one file (or folder: `wire.rs` types, `translate.rs` meaning) per upstream
//!   wire format (`openai`, `anthropic/`, `gemini/`, `cohere`, `echo`), registered by name in
//!   `providers::REGISTRY`; `stream` is the one SSE stream driver, `translate` holds what the
//!   translating formats share.
//! - [`routing`]: model name -> ordered candidates (strategies, aliases, failover order).
//! - [`health`]: per-backend breakers, active checks through Pingora's load balancer.
//! - [`upstream`]: Pingora's connectors: pooled connections, TLS, h2, timeouts, DNS cache.
//! - [`discovery`]: backend URL -> real address (cached DNS), for the connector and the pools.
//! - [`pool`]: idle plain-HTTP upstream connections (no watcher task per connection).
//! - [`sse`]: SSE framing over arbitrary body chunks.
//! - [`telemetry`]: the logger and the one structured line per request.
//! - [`metrics`]: Prometheus metrics, the hooks other parts call, and `/metrics`.
//! - [`pricing`]: estimated cost in USD (built-in price table, `GATEWAY_PRICES`).
//! - [`auth`]: gateway API keys (env and reloadable file), constant-time check, key names.
//! - [`ratelimit`]: per-key request and token buckets, in memory or shared through Redis.
//! - [`tls`]: the client listeners: HTTPS (rustls, ALPN h2/http1.1, SIGHUP reload) and h2c.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod auth;
pub mod cache;
pub mod canonical;
pub mod config;
pub mod dialects;
pub mod discovery;
pub mod error;
pub mod health;
pub mod metrics;
pub mod pool;
pub mod pricing;
pub mod providers;
pub mod proxy;
pub mod ratelimit;
pub mod routing;
pub mod server;
pub mod sse;
pub mod telemetry;
pub mod tls;
pub mod upstream;
