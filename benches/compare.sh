#!/usr/bin/env bash
# The whole load comparison in one run, on loopback: the backend directly, weir-proxy
# (--workers 1), HAProxy (1 thread) and nginx (1 worker), visited in rotated order in every
# round so that drift on a shared machine falls on all alike. Prints requests/s, p50 and p99
# (medians over rounds) per workload, then weir's ratios to HAProxy, nginx and the direct path,
# then memory.
#
#   benches/compare.sh                       # 3 rounds of 5 s per target and workload
#   ROUNDS=5 DURATION=10s benches/compare.sh
#   ONLY="h1 h2" benches/compare.sh          # some workloads: h1 close h2 grpc stream memory
#
# Workloads:
#   h1       HTTP/1.1 keep-alive, small responses (wrk, 1 thread, 64 connections)
#   close    HTTP/1.1 with a new connection per request (wrk, Connection: close, 16 connections)
#   h2       HTTP/2 h2c, 64 connections x 10 streams (h2load); HAProxy speaks h2 -> h2, nginx
#            h2 -> HTTP/1.1 (it cannot proxy HTTP/2 upstream)
#   grpc     gRPC unary (ghz, 16 connections); nginx through grpc_pass
#   stream   a 1 MiB response (wrk, 8 connections): MB/s, and the proxy's CPU seconds per GB
#            (the other workloads give the proxy's CPU microseconds per request)
#   memory   resident memory per idle keep-alive connection (IDLE, 10000 where the fd limit allows), and weir-proxy's
#            resident memory at idle with 100 routes
#
# It installs nginx, haproxy, wrk, h2load, curl and pgrep with apt-get when they are missing, builds
# ghz from Go modules into weir's cache once, binds loopback only, and stops everything it
# started when it exits.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-3}
# HAProxy reserves two descriptors per connection and refuses to start when the limit cannot
# hold them, so on a machine whose hard limit is under 22000 the idle workload holds fewer.
fd_limit=$(ulimit -Hn)
[ "$fd_limit" = unlimited ] && fd_limit=1048576
IDLE=${IDLE:-$(( fd_limit / 2 - 1000 < 10000 ? fd_limit / 2 - 1000 : 10000 ))}
ONLY=${ONLY:-h1 close h2 grpc stream memory}
seconds=${DURATION%s}
[[ $seconds =~ ^[0-9]+$ ]] || { echo "DURATION is whole seconds, like 5s (got $DURATION)" >&2; exit 2; }
# ghz counts the calls a time limit cuts off as failures, so it runs a count instead.
GRPC_CALLS=${GRPC_CALLS:-$((seconds * 8000))}
weir_bin="${XDG_CACHE_HOME:-$HOME/.cache}/weir/bin"

need=()
for tool in nginx haproxy wrk h2load curl python3 pgrep; do
  command -v "$tool" >/dev/null || need+=("$tool")
done
if ((${#need[@]})); then
  pkgs=()
  for t in "${need[@]}"; do
    case $t in h2load) pkgs+=(nghttp2-client) ;; pgrep) pkgs+=(procps) ;; *) pkgs+=("$t") ;; esac
  done
  echo "installing ${pkgs[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
if [ ! -x "$weir_bin/ghz" ]; then
  echo "building ghz v0.93.0 into $weir_bin" >&2
  GOBIN="$weir_bin" go install github.com/bojand/ghz/cmd/ghz@v0.93.0
fi
# Every proxy and client here holds IDLE connections open at once.
ulimit -n "$(ulimit -Hn)"

cargo build --release -q -p weir-proxy -p weir-benches
bin=target/release
# Another build of weir-proxy to compare, e.g. one from before a change.
weir_proxy=${WEIR_PROXY:-$bin/weir-proxy}

# shellcheck source=benches/lib.sh
. benches/lib.sh

backend=$(free_port)
"$bin/bench-backend" "127.0.0.1:$backend" >"$work/backend.log" &
pids+=($!)

# Each proxy is started by a function that sets <name>_pid, so that the memory workload can
# measure fresh processes: the load before leaves allocator pools behind that would hide what
# an idle connection costs.

# weir-proxy on $1 with HTTP/1.1 upstreams and 100 routes, as a small gateway has, and on $2
# with h2c upstreams (gRPC, h2), in two processes.
start_weir() {
  {
    echo "listen: 127.0.0.1:$1"
    echo "admin: 127.0.0.1:$(free_port)"
    echo "routes:"
    for i in $(seq 1 99); do
      echo "  - { name: other-$i, match: { host: other-$i.example }, stable: { backend: v1 } }"
    done
    echo "  - { name: bench, stable: { backend: v1 }, candidate: { backend: v2 }, candidateWeight: 0 }"
    echo "backends:"
    echo "  v1: { endpoints: [\"127.0.0.1:$backend\"] }"
    echo "  v2: { endpoints: [\"127.0.0.1:$backend\"] }"
  } >"$work/weir-$1.yaml"
  cat >"$work/weir-$2.yaml" <<YAML
listen: 127.0.0.1:$2
admin: 127.0.0.1:$(free_port)
routes:
  - { name: bench, stable: { backend: v1 }, candidate: { backend: v2 }, candidateWeight: 0 }
backends:
  v1: { endpoints: ["127.0.0.1:$backend"], protocol: h2c }
  v2: { endpoints: ["127.0.0.1:$backend"], protocol: h2c }
YAML
  "$weir_proxy" --check --config "$work/weir-$1.yaml" >/dev/null
  WEIR_LOG=warn "$weir_proxy" --config "$work/weir-$1.yaml" --workers 1 &
  weir_pid=$!; pids+=("$weir_pid")
  WEIR_LOG=warn "$weir_proxy" --config "$work/weir-$2.yaml" --workers 1 &
  weir_h2_pid=$!; pids+=("$weir_h2_pid")
  wait_port "$1"; wait_port "$2"
}

# HAProxy, one thread: HTTP/1.1 on $1, h2 -> h2 on $2.
start_haproxy() {
  cat >"$work/haproxy-$1.cfg" <<CFG
global
  nbthread 1
  maxconn $((IDLE + 500))
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend h1
  bind 127.0.0.1:$1
  default_backend h1
frontend h2
  bind 127.0.0.1:$2 proto h2
  default_backend h2
backend h1
  server b1 127.0.0.1:$backend
backend h2
  server b1 127.0.0.1:$backend proto h2
CFG
  haproxy -f "$work/haproxy-$1.cfg" -db &
  haproxy_pid=$!; pids+=("$haproxy_pid")
  wait_port "$1"; wait_port "$2"
}

# nginx, one worker: HTTP/1.1 on $1; h2c on $2, to HTTP/1.1 upstreams (nginx proxies no
# HTTP/2 upstream but gRPC's).
start_nginx() {
  local dir="$work/nginx-$1"
  mkdir -p "$dir"
  cat >"$dir/nginx.conf" <<CFG
daemon off;
worker_processes 1;
worker_rlimit_nofile $fd_limit;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections $((IDLE + 500)); }
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  keepalive_requests 1000000;
  upstream h1 { server 127.0.0.1:$backend; keepalive 128; }
  server {
    listen 127.0.0.1:$1;
    location / { proxy_pass http://h1; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
  server {
    listen 127.0.0.1:$2 http2;
    location / { proxy_pass http://h1; proxy_http_version 1.1; proxy_set_header Connection ""; }
    location /weir.bench.Echo/ { grpc_pass grpc://127.0.0.1:$backend; }
  }
}
CFG
  nginx -p "$dir" -c "$dir/nginx.conf" &
  pids+=($!)
  wait_port "$1"; wait_port "$2"
  # The worker serves; the master only watches it.
  nginx_pid=$(pgrep -P "$(cat "$dir/nginx.pid")" | head -1)
}

wait_port "$backend"
weir_h1=$(free_port); weir_h2=$(free_port)
haproxy_h1=$(free_port); haproxy_h2=$(free_port)
nginx_h1=$(free_port); nginx_h2=$(free_port)
start_weir "$weir_h1" "$weir_h2"; weir_h1_pid=$weir_pid
start_haproxy "$haproxy_h1" "$haproxy_h2"
start_nginx "$nginx_h1" "$nginx_h2"

# CPU seconds (user + system) a process has used so far.
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f\n", ($14 + $15) / hz }' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

# wrk's latency line ("99%  1.23ms") in milliseconds.
wrk_ms() {
  awk -v p="$1" '$1 == p { v = $2; unit = v; sub(/[0-9.]+/, "", unit); sub(/[a-z]+$/, "", v)
    printf "%.3f", (unit == "us") ? v / 1000 : (unit == "s") ? v * 1000 : v }'
}

# One wrk run: prints "requests/s p50_ms p99_ms requests".
wrk_run() {
  local port=$1 path=$2 connections=$3; shift 3
  local out
  out=$(wrk -t1 -c"$connections" -d"$DURATION" --latency "$@" "http://127.0.0.1:$port$path")
  if ! grep -q '^Requests/sec' <<<"$out"; then echo "wrk failed on port $port: $out" >&2; return 1; fi
  if grep -q -E 'Non-2xx|Socket errors' <<<"$out"; then echo "errors on port $port: $out" >&2; return 1; fi
  echo "$(awk '/^Requests\/sec/ { printf "%.0f", $2 }' <<<"$out") $(wrk_ms 50% <<<"$out") $(wrk_ms 99% <<<"$out") $(awk '/requests in/ { print $1 }' <<<"$out")"
}

h2_run() {
  local port=$1 log="$work/h2load.log" out
  # h2load appends to its log.
  rm -f "$log"
  out=$(h2load -D "$seconds" -c 64 -m 10 -t 1 --log-file="$log" "http://127.0.0.1:$port/")
  if ! grep -q -E '^requests:.* 0 failed, 0 errored' <<<"$out"; then echo "h2load saw failures on port $port: $out" >&2; return 1; fi
  python3 - "$log" <<'PY'
import sys
rows = [line.split("\t") for line in open(sys.argv[1]) if line.strip()]
micros = sorted(int(r[2]) for r in rows)
span = (max(int(r[0]) for r in rows) - min(int(r[0]) for r in rows)) / 1e6 or 1
def pct(p): return micros[max(0, int(len(micros) * p) - 1)] / 1000
print(f"{len(micros) / span:.0f} {pct(0.5):.3f} {pct(0.99):.3f} {len(micros)}")
PY
}

grpc_run() {
  "$weir_bin/ghz" --insecure --proto benches/echo.proto --call weir.bench.Echo/Say -d '{"text":"hi"}' \
    -n "$GRPC_CALLS" -c 16 --connections 16 --format json "127.0.0.1:$1" >"$work/ghz.json"
  python3 - "$work/ghz.json" "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
bad = {k: v for k, v in r.get("statusCodeDistribution", {}).items() if k != "OK"}
if bad:
    sys.exit(f"ghz saw errors on {sys.argv[2]}: {bad}")
lat = {d["percentage"]: d["latency"] / 1e6 for d in r["latencyDistribution"]}
print(f"{r['rps']:.0f} {lat[50]:.3f} {lat[99]:.3f} {r['count']}")
PY
}

declare -A result_rps result_p50 result_p99 result_extra
median() { tr ' ' '\n' <<<"$1" | awk NF | sort -g | awk '{ v[NR] = $1 } END { if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Runs one workload over targets ("name:port:pid" each) in rotated order per round.
# $1 workload, $2 runner function (given port), then targets.
compare() {
  local workload=$1 runner=$2; shift 2
  local targets=("$@") t name port pid cpu0 cpu1 line rps p50 p99 count
  declare -A rps_all=() p50_all=() p99_all=() extra_all=()
  # Warm every path once (connections, pools, caches).
  for t in "${targets[@]}"; do IFS=: read -r name port pid <<<"$t"; $runner "$port" >/dev/null; done
  for round in $(seq 1 "$ROUNDS"); do
    local shift_by=$(( (round - 1) % ${#targets[@]} ))
    for t in "${targets[@]:$shift_by}" "${targets[@]:0:$shift_by}"; do
      IFS=: read -r name port pid <<<"$t"
      cpu0=$( [ "$pid" = - ] && echo 0 || cpu_seconds "$pid")
      # A failed run stops the comparison (set -e), rather than leaving a gap in the table.
      line=$($runner "$port")
      read -r rps p50 p99 count <<<"$line"
      cpu1=$( [ "$pid" = - ] && echo 0 || cpu_seconds "$pid")
      echo "$workload round $round: $name $rps req/s, p50 $p50 ms, p99 $p99 ms" >&2
      rps_all[$name]+=" $rps"; p50_all[$name]+=" $p50"; p99_all[$name]+=" $p99"
      # The proxy's CPU seconds per request.
      [ "$pid" = - ] || extra_all[$name]+=" $(python3 -c "print(($cpu1 - $cpu0) / $count)")"
    done
  done
  for t in "${targets[@]}"; do
    IFS=: read -r name port pid <<<"$t"
    result_rps[$workload/$name]=$(median "${rps_all[$name]}")
    result_p50[$workload/$name]=$(median "${p50_all[$name]}")
    result_p99[$workload/$name]=$(median "${p99_all[$name]}")
    result_extra[$workload/$name]=$(median "${extra_all[$name]:-}")
  done
}

h1_run() { wrk_run "$1" / 64; }
close_run() { wrk_run "$1" / 16 -H 'Connection: close'; }
stream_run() { wrk_run "$1" /download/1048576 8; }

wants() { [[ " $ONLY " == *" $1 "* ]]; }
# The targets of each workload: HTTP/1.1 listeners, or the h2 ones for h2c and gRPC.
h1_targets=("direct:$backend:-" "weir:$weir_h1:$weir_h1_pid" "haproxy:$haproxy_h1:$haproxy_pid" "nginx:$nginx_h1:$nginx_pid")
h2_targets=("direct:$backend:-" "weir:$weir_h2:$weir_h2_pid" "haproxy:$haproxy_h2:$haproxy_pid" "nginx:$nginx_h2:$nginx_pid")
workloads=()
for w in h1 close h2 grpc stream; do
  wants "$w" || continue
  case $w in
    h2 | grpc) compare "$w" "${w}_run" "${h2_targets[@]}" ;;
    *) compare "$w" "${w}_run" "${h1_targets[@]}" ;;
  esac
  workloads+=("$w")
done

cat >"$work/idle.py" <<'PY'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
conns = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n")
    got = b""
    while not got.endswith(b"hello from the backend\n"):
        chunk = s.recv(4096)
        if not chunk:
            sys.exit(f"connection closed after {len(conns)} connections")
        got += chunk
    conns.append(s)
print("ready", flush=True)
sys.stdin.readline()
PY

# Resident memory per idle keep-alive connection: IDLE clients each make one request and then
# hold their connection open while the proxy's RSS is read.
idle_per_connection() {
  local port=$1 pid=$2 before during
  curl -sf "http://127.0.0.1:$port/" >/dev/null
  before=$(rss_kib "$pid")
  coproc IDLERS { python3 "$work/idle.py" "$port" "$IDLE"; }
  local line
  read -r line <&"${IDLERS[0]}"
  [ "$line" = ready ] || { echo "idle clients failed on port $port" >&2; return 1; }
  sleep 1
  during=$(rss_kib "$pid")
  echo done >&"${IDLERS[1]}"
  wait "$IDLERS_PID" 2>/dev/null || true
  python3 -c "print(f'{$before / 1024:.1f} {($during - $before) / $IDLE:.1f} {$during / 1024:.1f}')"
}

echo
echo "weir-proxy $("$bin/weir-proxy" --version | awk '{ print $2 }'), $(haproxy -v | head -1 | awk '{ print "HAProxy", $3 }'), $(nginx -v 2>&1 | sed 's/.*\///; s/^/nginx /'); $(nproc) cores, $(date -u +%Y-%m-%d)"
echo "median of $ROUNDS round(s) of $DURATION per target, loopback"
echo
label() {
  case $1 in
    h1) echo "HTTP/1.1 keep-alive, wrk -c64" ;;
    close) echo "HTTP/1.1 new connection each, -c16" ;;
    h2) echo "HTTP/2 h2c, h2load -c64 -m10" ;;
    grpc) echo "gRPC unary, ghz -c16" ;;
    stream) echo "1 MiB response, wrk -c8" ;;
  esac
}
ratio() { python3 -c "a, b = '$1', '$2'; print(f'{float(a) / float(b):.2f}' if a and b and float(b) else '-')"; }

if ((${#workloads[@]})); then
  printf '%-36s %-8s %10s %9s %9s %14s\n' workload target "req/s" "p50 ms" "p99 ms" "proxy CPU"
  for w in "${workloads[@]}"; do
    for name in direct weir haproxy nginx; do
      rps=${result_rps[$w/$name]}
      [ "$w" = stream ] && rps="$(python3 -c "print(f'{$rps * 1.048576:.0f} MB/s')")"
      cpu=${result_extra[$w/$name]:-}
      if [ -n "$cpu" ] && [ "$w" = stream ]; then
        cpu=$(python3 -c "print(f'{$cpu / 1048576 * 1e9:.2f} s/GB')")
      elif [ -n "$cpu" ]; then
        cpu=$(python3 -c "print(f'{$cpu * 1e6:.1f} us/req')")
      fi
      printf '%-36s %-8s %10s %9s %9s %14s\n' "$(label "$w")" "$name" "$rps" "${result_p50[$w/$name]}" "${result_p99[$w/$name]}" "$cpu"
    done
  done
  echo
  printf '%-36s %13s %11s %12s %18s\n' "ratios (req/s, or MB/s)" weir/haproxy weir/nginx weir/direct "p99 weir/haproxy"
  for w in "${workloads[@]}"; do
    printf '%-36s %13s %11s %12s %18s\n' "$(label "$w")" \
      "$(ratio "${result_rps[$w/weir]}" "${result_rps[$w/haproxy]}")" \
      "$(ratio "${result_rps[$w/weir]}" "${result_rps[$w/nginx]}")" \
      "$(ratio "${result_rps[$w/weir]}" "${result_rps[$w/direct]}")" \
      "$(ratio "${result_p99[$w/weir]}" "${result_p99[$w/haproxy]}")"
  done
fi

if wants memory; then
  kill "$weir_h1_pid" "$weir_h2_pid" "$haproxy_pid" "$nginx_pid" 2>/dev/null || true
  mem_weir=$(free_port); mem_haproxy=$(free_port); mem_nginx=$(free_port)
  start_weir "$mem_weir" "$(free_port)"
  start_haproxy "$mem_haproxy" "$(free_port)"
  start_nginx "$mem_nginx" "$(free_port)"
  echo
  echo "memory: fresh processes, $IDLE idle keep-alive connections, one request each"
  printf '%-10s %20s %22s %28s\n' target "RSS idle (MiB)" "KiB per connection" "RSS with them open (MiB)"
  for t in "weir:$mem_weir:$weir_pid" "haproxy:$mem_haproxy:$haproxy_pid" "nginx:$mem_nginx:$nginx_pid"; do
    IFS=: read -r name port pid <<<"$t"
    read -r idle per during < <(idle_per_connection "$port" "$pid")
    printf '%-10s %20s %22s %28s\n' "$name" "$idle" "$per" "$during"
  done
  echo "(weir-proxy's idle figure is with 100 routes)"
  # Bodies stream through, never held whole: the peak memory of a fresh process stays flat
  # however large they are.
  kill "$weir_pid" "$weir_h2_pid" 2>/dev/null || true
  mem_weir=$(free_port)
  start_weir "$mem_weir" "$(free_port)"
  size=$((64 * 1024 * 1024))
  head -c "$size" /dev/zero >"$work/upload.bin"
  uploaded=$(curl -sS -T "$work/upload.bin" -H 'content-type: application/octet-stream' "http://127.0.0.1:$mem_weir/upload")
  downloaded=$(curl -sS -o /dev/null -w '%{size_download}' "http://127.0.0.1:$mem_weir/download/$size")
  echo "64 MiB up ($uploaded bytes) and down ($downloaded bytes) through a fresh weir-proxy: peak RSS $(awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$weir_pid/status") MiB"
fi
