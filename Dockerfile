# syntax=docker/dockerfile:1
# Showrunner: one image for every role (api, migrate, the four workers, the operator command).
# The role is chosen by the command: `showrunner-api` (default), `showrunner-migrate`,
# `showrunner-episode-worker`, `showrunner-activity-worker`, `showrunner-notification-worker`,
# `showrunner-job-worker`.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
 && mkdir -p /out \
 && cp target/release/showrunner \
       target/release/showrunner-api \
       target/release/showrunner-migrate \
       target/release/showrunner-episode-worker \
       target/release/showrunner-activity-worker \
       target/release/showrunner-notification-worker \
       target/release/showrunner-job-worker \
       /out/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 showrunner \
 && useradd --system --uid 10001 --gid showrunner --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin showrunner \
 && mkdir -p /files && chown showrunner:showrunner /files
COPY --from=builder /out/showrunner /usr/local/bin/showrunner
COPY --from=builder /out/showrunner-api /usr/local/bin/showrunner-api
COPY --from=builder /out/showrunner-migrate /usr/local/bin/showrunner-migrate
COPY --from=builder /out/showrunner-episode-worker /usr/local/bin/showrunner-episode-worker
COPY --from=builder /out/showrunner-activity-worker /usr/local/bin/showrunner-activity-worker
COPY --from=builder /out/showrunner-notification-worker /usr/local/bin/showrunner-notification-worker
COPY --from=builder /out/showrunner-job-worker /usr/local/bin/showrunner-job-worker
USER showrunner:showrunner
ENV SHOWRUNNER__HTTP__ADDR=0.0.0.0:8080
# No transparent huge pages in these processes, also where the host's THP setting is `always`
# (the build's mimalloc `no_thp` only stops mimalloc asking for them; README, session 24: with
# them a job worker spent a fifth of its CPU zeroing huge pages).
ENV MIMALLOC_ALLOW_THP=0
EXPOSE 8080
# The processes stop gracefully on SIGTERM (what `docker stop` sends).
STOPSIGNAL SIGTERM
CMD ["showrunner-api"]
