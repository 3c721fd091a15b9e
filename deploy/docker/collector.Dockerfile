# syntax=docker/dockerfile:1
# The collector image: `periscope` (OTLP receivers, WAL and stores, query API
# and the web UI embedded in the binary). Build from the repository root:
#
#   docker build -f deploy/docker/collector.Dockerfile -t periscope/collector:0.1.0 .
#
# collector.Dockerfile.dockerignore beside this file keeps target/,
# node_modules/ and other local build output out of the context.

# 1. The web UI: `npm run build` writes query-ui/web/dist, which the
#    periscope-query crate embeds at compile time. Vite needs Node 20.19+.
FROM node:22-bookworm-slim AS web
WORKDIR /src/query-ui/web
COPY query-ui/web/package.json query-ui/web/package-lock.json ./
RUN --mount=type=cache,target=/root/.npm \
    npm ci --no-audit --no-fund
COPY query-ui/web/ ./
RUN npm run build

# 2. The binary, with the UI built above in place of any local dist/.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
COPY --from=web /src/query-ui/web/dist query-ui/web/dist
# The target directory is a cache mount, so the binary is copied out of it
# in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p periscope-collector \
    && install -D -m 0755 target/release/periscope /out/periscope

# 3. The runtime: Debian slim, tini as PID 1 (forwards SIGTERM, which starts
#    the collector's drain and flush, and reaps children), a non-root user
#    whose uid the Kubernetes manifests name (runAsUser/fsGroup 10001).
FROM debian:bookworm-slim
# Unpinned on purpose: the current bookworm packages carry the security fixes.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 periscope \
    && useradd --system --uid 10001 --gid periscope --no-create-home \
        --home-dir /var/lib/periscope --shell /usr/sbin/nologin periscope \
    && install -d -o periscope -g periscope -m 0750 /var/lib/periscope
COPY --from=build /out/periscope /usr/local/bin/periscope
USER 10001:10001
WORKDIR /var/lib/periscope
# OTLP/gRPC, OTLP/HTTP, query API + web UI + /healthz, /readyz, /metrics.
EXPOSE 4317 4318 8080
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/periscope"]
CMD ["serve", "--data-dir", "/var/lib/periscope"]
