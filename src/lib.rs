//! # ai-gateway
//!
//! One OpenAI-compatible endpoint in front of OpenAI, Anthropic, Gemini, Ollama, Hugging Face,
//! vLLM and any OpenAI-compatible host, built on Cloudflare's Pingora.
//!
//! # Layout
//!
//! A request goes down through these layers and its answer comes back up; each module imports
//! only the ones below it (`tests/architecture.rs` checks there is no cycle).
//!
//! - [`server`]: Pingora bootstrap, listeners, background services, signals, graceful shutdown.
//! - [`proxy`]: the request lifecycle, and the only code that sees Pingora's session, the
//!   per-request `Ctx` and the shared `Gateway`: the `HttpServerApp` (`proxy/app.rs`), admit
//!   (key, rate limits), one file per endpoint family (`chat.rs` runs every dialect,
//!   `responses.rs`, `count_tokens.rs`, `embeddings.rs`, `models.rs`, `passthrough.rs` for
//!   completions, moderations, images, audio and rerank with `multipart.rs` for their uploads),
//!   the cache glue and the log line.
//!   Everything below takes and returns plain values and never writes to a client.
//! - [`dialects`]: inbound client APIs, one file each, registered by path in
//!   `dialects::DIALECTS`: parse a request into the canonical request, write answers, stream
//!   events and errors in the client's format (`openai_chat`, `anthropic_messages`).
//! - [`providers`]: outbound wire formats, one file (or folder: `wire.rs` types apart from
//!   `translate.rs`) each, registered by name in `providers::REGISTRY` (`openai`,
//!   `anthropic/`, `gemini/`, `cohere`, `azure`, `bedrock/`, `vertex/`, `echo`): encode the
//!   canonical request, decode answers and streams into the dialect's writers; `stream` is the
//!   one SSE stream driver (Bedrock's event-stream frames have their own decoder), `translate`
//!   what the translating formats share. OpenAI-compatible vendors are rows of
//!   `config::providers::PRESETS`, not code.
//! - [`canonical`]: the canonical answer, usage and stream events; the writer traits a dialect
//!   implements. [`api`]: the OpenAI types (the canonical request `ChatRequest`, its parser,
//!   and the OpenAI chat writers).
//! - [`routing`]: model name -> ordered candidates (strategies, aliases, failover order).
//! - [`health`]: per-backend breakers, active checks through Pingora's load balancer.
//! - [`balance`]: how a pool picks a replica (`round_robin`, `least_requests`, `inference`):
//!   in-flight counts, scraped queue and KV-cache figures, the prefix affinity table.
//! - [`discovery`]: backend URL -> real address (one cached resolver), for the connector and
//!   the pools' load balancers.
//! - [`upstream`]: Pingora's connectors: pooled connections, TLS, h2, timeouts.
//! - [`pool`]: idle plain-HTTP upstream connections (no watcher task per connection).
//! - [`cache`]: the response cache: keys, memory and Redis backends, coalescing, semantic layer;
//!   plain data in and out.
//! - [`auth`]: gateway API keys (env and reloadable file), constant-time check, key names.
//! - [`ratelimit`]: per-key request and token buckets, in memory or shared through Redis.
//! - [`redis_link`]: how every Redis user reaches it (one node, Cluster, Sentinel; TLS): one
//!   cloneable connection handle for commands and scripts, `gateway_redis_up`.
//! - [`tenants`]: per-key USD budgets with reservations, model allow-lists, admin-made keys
//!   and their usage (local file with `GATEWAY_STATE_DIR`, or Redis); the admin API.
//! - [`state`]: state kept between requests (stored Responses), by key with a TTL, in memory
//!   or shared through Redis (`GATEWAY_STATE_BACKEND`).
//! - [`telemetry`]: the logger and the one structured line per request. [`metrics`]:
//!   Prometheus metrics and the hooks other parts call. [`pricing`]: estimated cost in USD.
//!   [`trace`]: OpenTelemetry spans (server, attempts, cache, limits) exported over OTLP.
//! - [`tls`]: the client listeners: HTTPS (rustls, ALPN h2/http1.1, SIGHUP reload) and h2c.
//! - [`error`]: the error every client sees (an `ErrorKind`, boxed details, a metrics label).
//! - [`sse`]: SSE framing over arbitrary body chunks.
//! - [`config`]: every environment variable, parsed once into a validated `Config`; one file per
//!   feature (`providers`, `routing`, `auth`, `ratelimit`, `tls`, `cache`, `pricing`). A leaf:
//!   it imports no other module of the gateway.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
// rustc's layout query for the request future (admit, cache, exchange, each awaiting Redis
// calls through redis-rs 1.x) nests deeper than the default 128 since the redis upgrade.
#![recursion_limit = "256"]

pub mod api;
pub mod auth;
pub mod balance;
pub mod breaker;
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
pub mod redact;
pub mod redis_link;
pub mod routing;
pub mod server;
pub mod sse;
pub mod state;
pub mod telemetry;
pub mod tenants;
pub mod tls;
pub mod trace;
pub mod upstream;
