# Folio runtime image: Debian bookworm-slim with CA certificates, the release binary, running as
# a non-root user, data on a volume, configuration from /etc/folio/folio.properties (mount your
# own over it) and environment variables (CLUSTER_MODE, CLUSTER_SHARED_SECRET, ...).
#
# The binary is built on the host first, so no Rust image is needed:
#   cargo build --release && docker build -t folio:latest .
# (scripts/docker-build does both, and docker-compose.yml's `build:` does the second; on bookworm
# hosts the binary's glibc matches the image's.)

# The build context holds only the release binary and the example configuration (.dockerignore);
# without the binary the build stops here saying what to run.
FROM debian:bookworm-slim AS binary
COPY . /context
RUN test -x /context/target/release/folio || { \
      echo "error: no Folio binary at target/release/folio: run 'cargo build --release', then 'docker-compose up -d' again (or scripts/compose-up, which does both)" >&2; \
      exit 1; }

FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/folio --shell /usr/sbin/nologin folio \
 && mkdir -p /var/lib/folio /etc/folio \
 && chown folio:folio /var/lib/folio
COPY --from=binary /context/target/release/folio /usr/local/bin/folio
COPY conf/folio.properties /etc/folio/folio.properties
ENV SERVER_LISTEN=0.0.0.0:8080 \
    SERVER_DATA_DIR=/var/lib/folio
USER folio
WORKDIR /var/lib/folio
VOLUME /var/lib/folio
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 CMD ["folio", "--config", "/etc/folio/folio.properties", "probe"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["folio", "--config", "/etc/folio/folio.properties"]
