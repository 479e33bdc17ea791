# syntax=docker/dockerfile:1
# Multi-stage build: a Rust toolchain image compiles the release binary; the runtime image is
# distroless (glibc + libgcc, no shell, no package manager) and runs as a non-root user.
#
#   docker build -t pod-identity-webhook:dev .
#   docker run --rm pod-identity-webhook:dev serve --help

FROM rust:1-bookworm AS build
# aws-lc-rs (the TLS crypto provider) builds C code.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake clang \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the registry and build directory between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin pod-identity-webhook \
 && install -D -m 0755 target/release/pod-identity-webhook /out/pod-identity-webhook

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/pod-identity-webhook /usr/local/bin/pod-identity-webhook
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/pod-identity-webhook"]
CMD ["serve", "--help"]
