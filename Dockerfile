# syntax=docker/dockerfile:1
# Builds the devart binary; see compose.yaml for the full stack.

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the registry and build artefacts between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --bin devart \
    && cp target/release/devart /devart

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder /devart /usr/local/bin/devart
EXPOSE 8787
CMD ["devart", "serve"]
