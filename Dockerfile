# syntax=docker/dockerfile:1
# drsink: multi-stage build. The runtime image holds only the binary, the CA
# certificates and a non-root user.
#   docker build -t drsink .
#   docker run --rm drsink worker --help

FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && mkdir -p mappings && echo '{}' > mappings/elasticsearch.json && echo '{}' > mappings/opensearch.json \
    && cargo build --release --locked --bin drsink \
    && rm -rf src mappings
COPY src ./src
COPY mappings ./mappings
# Make sure cargo sees the real sources as newer than the placeholder build.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin drsink \
    && install -D -m 0755 target/release/drsink /out/drsink

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/drsink --create-home \
       --shell /usr/sbin/nologin drsink
COPY --from=build /out/drsink /usr/local/bin/drsink
# Dead letters and the embedded dedup ledger go under the working directory
# unless --dead-letter / --dedup-ledger-path say otherwise: mount a volume here.
WORKDIR /var/lib/drsink
USER 10001:10001
ENTRYPOINT ["drsink"]
CMD ["worker"]
