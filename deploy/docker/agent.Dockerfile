# syntax=docker/dockerfile:1
# The node agent image: `periscope-agent`. Build from the repository root:
#
#   docker build -f deploy/docker/agent.Dockerfile -t periscope/agent:0.1.0 .
#
# agent.Dockerfile.dockerignore beside this file keeps target/,
# node_modules/ and other local build output out of the context.

# 1. The binary. The agent depends on periscope-proto only: no web UI here.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The target directory is a cache mount, so the binary is copied out of it
# in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p periscope-agent \
    && install -D -m 0755 target/release/periscope-agent /out/periscope-agent

# 2. The runtime: Debian slim (ca-certificates for a TLS endpoint), tini as
#    PID 1 (forwards SIGTERM, on which the agent persists its checkpoints).
FROM debian:bookworm-slim
# Unpinned on purpose: the current bookworm packages carry the security fixes.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -m 0755 /var/lib/periscope-agent
COPY --from=build /out/periscope-agent /usr/local/bin/periscope-agent
# No USER: the agent reads the node's container logs, which the kubelet
# writes root-owned and not world-readable, so it runs as root. The
# DaemonSet drops every capability and mounts the logs read-only (see
# deploy/base/agent-daemonset.yaml); elsewhere, run it as any user that can
# read the files it tails.
WORKDIR /var/lib/periscope-agent
# Node-local OTLP relay (gRPC, HTTP), then /metrics and /healthz.
EXPOSE 4317 4318 8686
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/periscope-agent"]
CMD ["--data-dir", "/var/lib/periscope-agent"]
