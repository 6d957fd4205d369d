# The Airbyte destination `destination-deeplake` as a container image.
#
#   podman build -t deeplake-rs/destination-deeplake:0.1.0 .      (or docker build)
#       compiles the binary in the `build` stage, then the runtime image (the last stage)
#
#   cargo build --release -p deeplake-connector --bin destination-deeplake
#   podman build --target prebuilt -t deeplake-rs/destination-deeplake:0.1.0 .
#       the same runtime image around the binary built on the host (no Rust image needed)
#
# Build arguments: RUST_IMAGE (build stage), BASE (runtime), CERTS_IMAGE (any image
# holding Debian's CA bundle at /etc/ssl/certs/ca-certificates.crt). A host binary needs
# a BASE with the same or a newer glibc than the host's. The version in the labels must
# match the workspace version in Cargo.toml and dockerImageTag in metadata.yaml; the
# image test checks all three. The daemon's image is built by daemon/Dockerfile; the
# two run together with an S3-compatible store in compose.yaml.

ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG BASE=docker.io/library/debian:bookworm-slim
ARG CERTS_IMAGE=docker.io/library/rust:1.95-slim-bookworm

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p deeplake-connector --bin destination-deeplake \
    && install -D -m 0755 target/release/destination-deeplake /out/destination-deeplake

# Only the CA bundle is taken from here: S3 over TLS checks the server against it, and
# a slim base has none. Copying the file keeps apt (and a network) out of the runtime build.
FROM ${CERTS_IMAGE} AS certs

FROM ${BASE} AS runtime-base
# uid/gid 1000 `airbyte`, as in Airbyte's own connector images, so volumes the platform
# prepares are writable. USER is numeric so that Kubernetes' runAsNonRoot can verify it.
RUN groupadd --gid 1000 airbyte \
    && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/airbyte \
        --shell /usr/sbin/nologin airbyte
COPY --from=certs /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
# The platform wraps the entrypoint on Kubernetes and reads the command from here.
ENV AIRBYTE_ENTRYPOINT="/usr/local/bin/destination-deeplake"
LABEL io.airbyte.name="deeplake-rs/destination-deeplake" \
    io.airbyte.version="0.1.0" \
    org.opencontainers.image.title="destination-deeplake" \
    org.opencontainers.image.description="Airbyte destination writing Deep Lake datasets" \
    org.opencontainers.image.version="0.1.0" \
    org.opencontainers.image.licenses="Apache-2.0"
WORKDIR /home/airbyte
USER 1000:1000
ENTRYPOINT ["/usr/local/bin/destination-deeplake"]

# The runtime image around a binary built on the host (.dockerignore lets exactly this
# file of target/ into the build context).
FROM runtime-base AS prebuilt
# Which host build to copy (the image test uses the debug build that the test run has
# already made, rather than a release build of its own).
ARG BINARY=target/release/destination-deeplake
COPY --chmod=0755 ${BINARY} /usr/local/bin/destination-deeplake

# The default target: the runtime image around the binary compiled in `build`.
FROM runtime-base AS runtime
COPY --from=build --chmod=0755 /out/destination-deeplake /usr/local/bin/destination-deeplake
