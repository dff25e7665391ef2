#!/usr/bin/env bash
# Builds weir's container image on this machine, with no registry and no daemon: the binaries
# statically linked on the host, then the image assembled with buildah as the Dockerfile's final
# stage makes it (FROM scratch, CA roots, /weir and /weir-proxy, user 65532). Then it runs both
# binaries inside the image, as that user, to prove the image works.
#
#   scripts/image.sh [TAG]        default TAG: localhost/weir:<version>
#
# Needs buildah (Debian: apt-get install buildah) and root, or a rootless buildah setup.
# STORAGE_DRIVER defaults to vfs, which works everywhere, overlay or not.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v buildah >/dev/null || { echo "image.sh: buildah is not installed (apt-get install buildah)" >&2; exit 1; }
export STORAGE_DRIVER="${STORAGE_DRIVER:-vfs}"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
tag="${1:-localhost/weir:$version}"
target="$(uname -m)-unknown-linux-gnu"
certs=/etc/ssl/certs/ca-certificates.crt
[ -f "$certs" ] || { echo "image.sh: $certs is missing (apt-get install ca-certificates)" >&2; exit 1; }

echo "== building weir and weir-proxy for $target, statically linked"
# -p: only these packages' features; the whole workspace would bring the test harness's crash
# points (weir's fault-injection feature) into the binary.
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked --target "$target" -p weir -p weir-proxy --bin weir --bin weir-proxy
bin="target/$target/release"
if grep -a -q 'stopped at crash point' "$bin/weir"; then
  echo "image.sh: $bin/weir was built with the fault-injection feature" >&2
  exit 1
fi
for b in weir weir-proxy; do
  # A dynamic binary would fail in an empty image with a bare "no such file or directory".
  if ldd "$bin/$b" 2>&1 | grep -q '=>'; then
    echo "image.sh: $bin/$b is dynamically linked" >&2
    exit 1
  fi
done

echo "== assembling $tag"
ctr=$(buildah from scratch)
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
buildah copy "$ctr" "$certs" /etc/ssl/certs/ca-certificates.crt >/dev/null
buildah copy --chmod 0555 "$ctr" "$bin/weir" "$bin/weir-proxy" / >/dev/null
buildah config --user 65532:65532 --entrypoint '["/weir"]' --cmd '["--help"]' \
  --label org.opencontainers.image.title=weir \
  --label "org.opencontainers.image.version=$version" "$ctr"
buildah commit --quiet "$ctr" "$tag" >/dev/null
buildah rm "$ctr" >/dev/null
trap - EXIT

echo "== running both binaries in $tag"
run=$(buildah from "$tag")
trap 'buildah rm "$run" >/dev/null 2>&1 || true' EXIT
in_image() { buildah run --isolation chroot "$run" "$@"; }
user=$(buildah inspect --format '{{.OCIv1.Config.User}}' "$tag")
[ "$user" = "65532:65532" ] || { echo "image.sh: the image runs as '$user', not 65532:65532" >&2; exit 1; }
weir_version=$(in_image /weir --version)
proxy_version=$(in_image /weir-proxy --version)
[ "$weir_version" = "weir $version" ] || { echo "image.sh: /weir --version said '$weir_version'" >&2; exit 1; }
[ "$proxy_version" = "weir-proxy $version" ] || { echo "image.sh: /weir-proxy --version said '$proxy_version'" >&2; exit 1; }
# The chart's CRD is the one the image's weir generates.
in_image /weir crd | cmp -s - charts/weir/crds/rollouts.weir.dev.yaml \
  || { echo "image.sh: the image's 'weir crd' differs from charts/weir/crds" >&2; exit 1; }
size=$(buildah images --format '{{.Size}}' "$tag" | head -n1)
echo "ok: $weir_version and $proxy_version run in $tag ($size) as user $user"
