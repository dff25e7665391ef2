#!/usr/bin/env bash
# HTTP/2 and gRPC through weir-proxy next to the direct path, on loopback, in one run:
# h2load (h2c, small responses) and ghz (unary gRPC, benches/echo.proto) against bench-backend
# directly and through `weir-proxy --workers 1` (route to the backend over h2c). Prints
# requests/s and p99 of each, and the proxy's ratio to direct.
#
#   benches/h2-grpc.sh                  # 200000 h2 requests, 100000 gRPC calls
#   H2_REQUESTS=500000 CLIENTS=32 STREAMS=32 benches/h2-grpc.sh
#
# It installs h2load (nghttp2-client) with apt-get and builds ghz from Go modules when they are
# missing, binds loopback only, and stops everything it started when it exits.
set -euo pipefail
cd "$(dirname "$0")/.."

H2_REQUESTS=${H2_REQUESTS:-200000}
GRPC_CALLS=${GRPC_CALLS:-100000}
CLIENTS=${CLIENTS:-16}
STREAMS=${STREAMS:-16}
weir_bin="${XDG_CACHE_HOME:-$HOME/.cache}/weir/bin"

command -v h2load >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client >/dev/null; }
if [ ! -x "$weir_bin/ghz" ]; then
  echo "building ghz v0.93.0" >&2
  GOBIN="$weir_bin" go install github.com/bojand/ghz/cmd/ghz@v0.93.0
fi
cargo build --release -q -p weir-proxy -p weir-benches
bin=target/release

# shellcheck source=benches/lib.sh
. benches/lib.sh

backend=$(free_port)
"$bin/bench-backend" "127.0.0.1:$backend" >/dev/null &
pids+=($!)
proxy=$(free_port); admin=$(free_port)
cat >"$work/weir.yaml" <<YAML
listen: 127.0.0.1:$proxy
admin: 127.0.0.1:$admin
routes:
  - name: bench
    stable: { backend: v1 }
    candidate: { backend: v2 }
backends:
  v1: { endpoints: ["127.0.0.1:$backend"], protocol: h2c }
  v2: { endpoints: ["127.0.0.1:$backend"], protocol: h2c }
YAML
WEIR_LOG=warn "$bin/weir-proxy" --config "$work/weir.yaml" --workers 1 2>"$work/weir.log" &
pids+=($!)
wait_port "$backend"; wait_port "$proxy"

# Prints "requests_per_second p99_ms" for one h2load run (p99 from its per-request log).
h2() {
  local log="$work/h2load-$1.log" out
  out=$(h2load -n "$H2_REQUESTS" -c "$CLIENTS" -m "$STREAMS" --log-file="$log" "http://127.0.0.1:$1/")
  grep -q " 0 failed" <<<"$(grep '^requests:' <<<"$out")" || { echo "h2load saw failures on port $1: $out" >&2; return 1; }
  local rps
  rps=$(sed -n 's/^finished in .*, \([0-9.]*\) req\/s.*/\1/p' <<<"$out")
  python3 - "$log" "$rps" <<'PY'
import sys
micros = sorted(int(line.split("\t")[2]) for line in open(sys.argv[1]) if line.strip())
p99 = micros[int(len(micros) * 0.99) - 1] / 1000
print(f"{float(sys.argv[2]):.0f} {p99:.3f}")
PY
}

# Prints "requests_per_second p99_ms" for one ghz run.
grpc() {
  "$weir_bin/ghz" --insecure --proto benches/echo.proto --call weir.bench.Echo/Say -d '{"text":"hi"}' \
    -n "$GRPC_CALLS" -c "$CLIENTS" --connections "$CLIENTS" --format json "127.0.0.1:$1" >"$work/ghz-$1.json"
  python3 - "$work/ghz-$1.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
bad = {k: v for k, v in r.get("statusCodeDistribution", {}).items() if k != "OK"}
if bad:
    sys.exit(f"ghz saw errors: {bad}")
p99 = next(d["latency"] for d in r["latencyDistribution"] if d["percentage"] == 99) / 1e6
print(f"{r['rps']:.0f} {p99:.3f}")
PY
}

# Warm both paths once, then measure.
h2load -n 20000 -c "$CLIENTS" -m "$STREAMS" "http://127.0.0.1:$proxy/" >/dev/null
read -r h2_direct_rps h2_direct_p99 < <(h2 "$backend")
read -r h2_proxy_rps h2_proxy_p99 < <(h2 "$proxy")
read -r grpc_direct_rps grpc_direct_p99 < <(grpc "$backend")
read -r grpc_proxy_rps grpc_proxy_p99 < <(grpc "$proxy")

echo
echo "loopback, $(nproc) cores, $CLIENTS connections; h2load -m $STREAMS streams each, $H2_REQUESTS requests; ghz unary, $GRPC_CALLS calls"
printf '%-22s %12s %10s %10s\n' path "req/s" "p99 ms" "ratio"
printf '%-22s %12s %10s %10s\n' "h2 direct" "$h2_direct_rps" "$h2_direct_p99" "1.00"
printf '%-22s %12s %10s %10s\n' "h2 via weir-proxy" "$h2_proxy_rps" "$h2_proxy_p99" "$(python3 -c "print(f'{$h2_proxy_rps/$h2_direct_rps:.2f}')")"
printf '%-22s %12s %10s %10s\n' "gRPC direct" "$grpc_direct_rps" "$grpc_direct_p99" "1.00"
printf '%-22s %12s %10s %10s\n' "gRPC via weir-proxy" "$grpc_proxy_rps" "$grpc_proxy_p99" "$(python3 -c "print(f'{$grpc_proxy_rps/$grpc_direct_rps:.2f}')")"
