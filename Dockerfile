# syntax=docker/dockerfile:1
# Multi-stage: a static (musl) binary built with scripts/build-release, the same command
# CI runs, copied into a minimal non-root image.
#   docker build -t namespace-offloading:0.1.0 .
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
# The workspace's other members (never in the binary): cargo resolves the whole workspace.
COPY testbed testbed
COPY bench bench
COPY scripts/build-release scripts/build-release
RUN scripts/build-release

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/namespace-offloading /namespace-offloading
USER 65532:65532
EXPOSE 9443 8080
ENTRYPOINT ["/namespace-offloading"]
CMD ["run"]
