# The postchat server: built in a Rust image, run in a slim Debian one.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
# engineioxide with our one patch (vendor/README.md), used through [patch.crates-io].
COPY vendor ./vendor
COPY src ./src
# The workspace names the load generator; it is not built here.
COPY tools ./tools
COPY migrations ./migrations
# The dev-mode demo page is embedded in the binary.
COPY client-demo/web ./client-demo/web
RUN cargo build --release --locked --bin postchat

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/postchat --create-home postchat
COPY --from=build /src/target/release/postchat /usr/local/bin/postchat
USER postchat
WORKDIR /var/lib/postchat
# On 0.0.0.0 the server refuses dev mode: run it with JWT_SECRET (32 bytes or more), e.g.
#   docker run -e JWT_SECRET=$(openssl rand -hex 32) -p 3000:3000 postchat
ENV HOST=0.0.0.0 PORT=3000 DATA_DIR=/var/lib/postchat/data
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD curl -fsS http://127.0.0.1:3000/healthz || exit 1
ENTRYPOINT ["postchat"]
