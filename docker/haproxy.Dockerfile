# HAProxy 2.6 from Debian's packages, laid out like the official haproxy image: the configuration
# is read from /usr/local/etc/haproxy/haproxy.cfg. Used only where no registry can be reached.
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /usr/local/etc/haproxy /var/lib/haproxy
STOPSIGNAL SIGUSR1
USER haproxy
CMD ["haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
