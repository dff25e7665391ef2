#!/usr/bin/env bash
# Load comparison on loopback: wrk against the backend directly, then through weir-proxy
# (--workers 1), HAProxy (1 thread) and nginx (1 worker), all in one run, printing requests/s,
# p99 and each one's ratio to the direct path. Then the peak RSS of weir-proxy while 64 MiB
# bodies stream through it.
#
#   benches/load.sh            # 5 rounds of 10 s per target, 64 connections
#   DURATION=30s CONNECTIONS=128 ROUNDS=3 benches/load.sh
#
# Loopback numbers on a small shared machine are noisy, so each round visits the targets in a
# rotated order and the table gives the median over rounds.
#
# It installs nginx, haproxy and wrk with apt-get when they are missing, binds loopback only,
# and stops everything it started when it exits.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
ROUNDS=${ROUNDS:-5}
WARMUP=${WARMUP:-2s}

need=()
for tool in nginx haproxy wrk curl python3; do
  command -v "$tool" >/dev/null || need+=("$tool")
done
if ((${#need[@]})); then
  pkgs=()
  for t in "${need[@]}"; do case $t in nginx) pkgs+=(nginx-light) ;; *) pkgs+=("$t") ;; esac; done
  echo "installing ${pkgs[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

cargo build --release -q -p weir-proxy -p weir-benches
bin=target/release

# shellcheck source=benches/lib.sh
. benches/lib.sh

backend_port=$(free_port)
"$bin/bench-backend" "127.0.0.1:$backend_port" >"$work/backend.log" &
pids+=($!)
wait_port "$backend_port"

weir_port=$(free_port); weir_admin=$(free_port)
cat >"$work/weir.yaml" <<YAML
listen: 127.0.0.1:$weir_port
admin: 127.0.0.1:$weir_admin
routes:
  - name: bench
    stable: { backend: v1 }
    candidate: { backend: v2 }
    candidateWeight: 0
backends:
  v1: { endpoints: ["127.0.0.1:$backend_port"] }
  v2: { endpoints: ["127.0.0.1:$backend_port"] }
YAML
WEIR_LOG=warn "$bin/weir-proxy" --config "$work/weir.yaml" --workers 1 2>"$work/weir.log" &
weir_pid=$!
pids+=("$weir_pid")

haproxy_port=$(free_port)
cat >"$work/haproxy.cfg" <<CFG
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend bench
  bind 127.0.0.1:$haproxy_port
  default_backend upstream
backend upstream
  http-reuse always
  server b1 127.0.0.1:$backend_port
CFG
haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
pids+=($!)

nginx_port=$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx.conf" <<CFG
daemon off;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  upstream upstream { server 127.0.0.1:$backend_port; keepalive 128; }
  server {
    listen 127.0.0.1:$nginx_port;
    location / {
      proxy_pass http://upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CFG
nginx -p "$work/nginx" -c "$work/nginx.conf" &
pids+=($!)

wait_port "$weir_port"; wait_port "$haproxy_port"; wait_port "$nginx_port"

# Prints "requests_per_second p99_ms" for one wrk run.
measure() {
  local out
  out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$1/")
  if ! grep -q '^Requests/sec' <<<"$out"; then echo "wrk failed on port $1: $out" >&2; return 1; fi
  if grep -q 'Non-2xx' <<<"$out"; then echo "non-2xx answers on port $1: $out" >&2; return 1; fi
  awk '
    /^Requests\/sec/ { rps = $2 }
    $1 == "99%" { v = $2; unit = v; sub(/[0-9.]+/, "", unit); sub(/[a-z]+$/, "", v)
                  ms = (unit == "us") ? v / 1000 : (unit == "s") ? v * 1000 : v }
    END { printf "%.0f %.3f\n", rps, ms }' <<<"$out"
}

targets=("direct:$backend_port" "weir-proxy:$weir_port" "haproxy:$haproxy_port" "nginx:$nginx_port")
for t in "${targets[@]}"; do wrk -t1 -c"$CONNECTIONS" -d"$WARMUP" "http://127.0.0.1:${t#*:}/" >/dev/null; done

declare -A rps_all p99_all
for round in $(seq 1 "$ROUNDS"); do
  shift_by=$(( (round - 1) % ${#targets[@]} ))
  order=("${targets[@]:$shift_by}" "${targets[@]:0:$shift_by}")
  for t in "${order[@]}"; do
    read -r rps p99 < <(measure "${t#*:}")
    name=${t%%:*}
    echo "round $round: $name $rps req/s, p99 $p99 ms" >&2
    rps_all[$name]="${rps_all[$name]:-} $rps"
    p99_all[$name]="${p99_all[$name]:-} $p99"
  done
done

median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo
echo "wrk -t1 -c$CONNECTIONS -d$DURATION, median of $ROUNDS round(s), small responses, loopback, $(nproc) cores"
printf '%-12s %12s %10s %16s\n' target "req/s" "p99 ms" "ratio to direct"
direct=$(median "${rps_all[direct]}")
for t in "${targets[@]}"; do
  name=${t%%:*}
  rps=$(median "${rps_all[$name]}")
  printf '%-12s %12.0f %10.3f %16s\n' "$name" "$rps" "$(median "${p99_all[$name]}")" "$(python3 -c "print(f'{$rps/$direct:.2f}')")"
done

# Peak RSS while 64 MiB streams up and down through weir-proxy.
size=$((64 * 1024 * 1024))
head -c "$size" /dev/zero >"$work/upload.bin"
uploaded=$(curl -sS -T "$work/upload.bin" -H 'content-type: application/octet-stream' "http://127.0.0.1:$weir_port/upload")
downloaded=$(curl -sS -o /dev/null -w '%{size_download}' "http://127.0.0.1:$weir_port/download/$size")
hwm=$(awk '/VmHWM/ { print $2 }' "/proc/$weir_pid/status")
echo
echo "64 MiB streamed through weir-proxy: upload ${uploaded} bytes, download ${downloaded} bytes; peak RSS $((hwm / 1024)) MiB"
