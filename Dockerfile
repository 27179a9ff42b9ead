# canary-gateway container image.
#   docker build -t canary-gateway .
#   docker run -p 8080:8080 -v $PWD/conf:/etc/canary-gateway:ro canary-gateway
# The config is read from /etc/canary-gateway/gateway.yaml (mount your own folder there; relative
# users_file paths resolve against it). Ports: 8080 proxy, 9901 admin API, 9902 metrics.

FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY conf conf
COPY benches benches
RUN cargo build --release --locked --bin canary-gateway

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin canary \
    && mkdir -p /etc/canary-gateway /run/canary-gateway /var/lib/canary-gateway \
    && chown canary /run/canary-gateway /var/lib/canary-gateway
COPY --from=build /src/target/release/canary-gateway /usr/local/bin/canary-gateway
COPY conf/docker.yaml /etc/canary-gateway/gateway.yaml
COPY conf/vip-users.txt /etc/canary-gateway/vip-users.txt
USER canary
EXPOSE 8080 9901 9902
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/canary-gateway"]
CMD ["-c", "/etc/canary-gateway/gateway.yaml"]
