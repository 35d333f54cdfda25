# syntax=docker/dockerfile:1.7
#
# One image holds every Tandem binary: /usr/local/bin/operator, /usr/local/bin/signaling-pod
# and /usr/local/bin/media-pod. The operator's pods set `command` to the binary they run; the
# default entrypoint is the operator, so a Deployment may pass only `args: [run, ...]`.
#
#   docker build -t ghcr.io/tandem-voice/tandem:0.1.0 .
#
# The builder uses the Rust toolchain the tests run on; the runtime stage is distroless
# (glibc and libgcc, no shell) and runs as the non-root user 65532.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
# libopus (media-pod's Opus transcoding) is linked statically: the runtime image has no libopus.
RUN apt-get update && apt-get install -y --no-install-recommends libopus-dev \
    && rm -rf /var/lib/apt/lists/*
ENV LIBOPUS_STATIC=1
COPY . .
# The registry and target caches speed up rebuilds; the binaries are copied out of the
# cache mount so that the next stage can take them. The pods' optional features (on by default;
# the local build of `make run` leaves them out) are named so that the image always has them:
# the Kubernetes configuration source and OTLP trace export.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin operator --bin signaling-pod --bin media-pod \
        --features signaling-pod/kubernetes,signaling-pod/otlp,media-pod/otlp \
    && mkdir -p /out \
    && cp target/release/operator target/release/signaling-pod target/release/media-pod /out/

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.source="https://github.com/tandem-voice/tandem" \
      org.opencontainers.image.description="Tandem carrier voice platform: operator, signaling-pod and media-pod" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/operator /out/signaling-pod /out/media-pod /usr/local/bin/
USER 65532:65532
# Admin HTTP (/metrics, /livez, /readyz): operator 8080, signaling 9101, media 9102.
EXPOSE 8080/tcp 9101/tcp 9102/tcp
# SIP listeners (the Gateway chooses; 5060 by default) and the media pods' ng control port.
EXPOSE 5060/udp 5060/tcp 2223/udp
ENTRYPOINT ["/usr/local/bin/operator"]
CMD ["run"]
