# syntax=docker/dockerfile:1
# Build: docker build -t ai-gateway .
# Run:   docker run -p 8080:8080 -e OPENAI_API_KEY=sk-... ai-gateway
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin ai-gateway

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home --uid 10001 gateway
COPY --from=build /src/target/release/ai-gateway /usr/local/bin/ai-gateway
USER gateway
ENV GATEWAY_LISTEN=0.0.0.0:8080 \
    GATEWAY_UPGRADE_SOCK=/tmp/ai-gateway-upgrade.sock \
    GATEWAY_PID_FILE=/tmp/ai-gateway.pid
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/health || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ai-gateway"]
