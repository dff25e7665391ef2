# weir's container image: both binaries, statically linked, in an otherwise empty image that
# runs as a non-root user. The Helm chart (charts/weir) runs /weir controller and /weir-proxy.
#
#   docker build -t registry.example.com/weir:0.1.0 .
#
# Without a registry or a daemon, scripts/image.sh builds the same image with buildah from
# binaries built on the host; keep the final stage and that script in step.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# glibc linked statically (+crt-static needs only the gnu target): nothing to load at run time;
# glibc 2.34 and later resolve names (/etc/hosts, DNS) without loading NSS modules. -p keeps
# the test harness's features (the crash points) out of the build.
RUN target="$(uname -m)-unknown-linux-gnu" \
 && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target "$target" -p weir -p weir-proxy --bin weir --bin weir-proxy \
 && mkdir /out \
 && cp "target/$target/release/weir" "target/$target/release/weir-proxy" /out/

FROM scratch
# The controller's Prometheus source over https trusts the system roots.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/weir /out/weir-proxy /
USER 65532:65532
ENTRYPOINT ["/weir"]
CMD ["--help"]
