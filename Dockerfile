# ztgate container image. Build: docker build -t ztgate .
# Run (certificates and policy mounted, audit log on a volume):
#   docker run --read-only -p 8443:8443 -p 9090:9090 \
#     -v "$PWD/tls:/etc/ztgate/tls:ro" -v "$PWD/policy:/etc/ztgate/policy:ro" \
#     -v ztgate-audit:/var/lib/ztgate/audit ztgate
# scripts/check-dockerfile.sh runs these same steps on a host without a Docker engine.

# --- build -------------------------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin ztgate
# An empty, nonroot-owned audit directory for the runtime stage (distroless has no shell).
RUN install -d -o 65532 -g 65532 -m 0750 /out/var/lib/ztgate/audit

# --- runtime -----------------------------------------------------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/ztgate /usr/local/bin/ztgate
COPY --from=build --chown=65532:65532 /out/var/lib/ztgate /var/lib/ztgate
COPY deploy/container/ztgate.toml /etc/ztgate/ztgate.toml
COPY config/policy.toml /etc/ztgate/policy/policy.toml
USER 65532:65532
VOLUME ["/var/lib/ztgate/audit"]
# 8443: mTLS listener. 9090: admin (/metrics, /healthz, /readyz).
EXPOSE 8443 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/ztgate", "healthcheck", "--url", "http://127.0.0.1:9090/healthz"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ztgate"]
CMD ["run", "--config", "/etc/ztgate/ztgate.toml"]
