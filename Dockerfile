# syntax=docker/dockerfile:1
#
# One image recipe for the three services; the build arg BIN picks which binary it holds:
#
#   docker build --build-arg BIN=payment --build-arg PORT=3001 -t saga-breaker/payment .
#
# docker-compose.yaml builds all three from here. BuildKit cache mounts keep the cargo registry
# and the target directory between builds, so the second and third service reuse the first's
# compiled dependencies.

FROM rust:1-bookworm AS builder
ARG BIN
RUN case "${BIN}" in order|payment|shipment) ;; \
      *) echo "build arg BIN must be order, payment or shipment (got '${BIN}')" >&2; exit 1 ;; \
    esac
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin "${BIN}" \
 && install -D -m 0755 "target/release/${BIN}" /out/app

FROM debian:bookworm-slim AS runtime
# ca-certificates for TLS to a hosted MongoDB; curl for the health check.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/saga --create-home saga
ARG BIN
ARG PORT=3000
ENV ID=${BIN} \
    PORT=${PORT} \
    DATA_DIR=/var/lib/saga
COPY --from=builder /out/app /usr/local/bin/app
USER 10001:10001
WORKDIR /var/lib/saga
EXPOSE ${PORT}
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=6 \
    CMD curl -fsS "http://127.0.0.1:${PORT}/health" >/dev/null || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/app"]
