#!/usr/bin/env bash
# TLS side by side: canary-gateway against nginx terminating TLS with the same certificate
# (ECDSA P-256, made here) and proxying to the same origin, in one run, alternating targets.
#
#   handshakes  wrk with `Connection: close`: every request a new TCP connection and a full
#               TLS handshake (no resumption), so requests/s = handshakes/s
#   keep-alive  wrk over TLS, 64 keep-alive connections (HTTP/1.1)
#   h2          h2load, 8 connections x 100 concurrent streams (HTTP/2)
#
# Both proxies: 1 worker (gateway threads: 1, nginx worker_processes 1) pinned to CPU 1; wrk,
# h2load and the origin share CPU 0. CPU µs per request = the proxy's utime+stime over the
# run (from /proc/PID/stat) / requests.
#
# Usage: [COMPARE_BIN=other-build] scripts/tls-loadtest.sh [SECONDS per run (10)] [ROUNDS (3)]
# Traffic goes to 127.0.0.1 only; everything it starts is stopped when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh
secs=${1:-10}
rounds=${2:-3}
bash scripts/setup.sh loadtest
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/canary-gateway
ulimit -n 65536 2>/dev/null || true

dir=$(mktemp -d /tmp/canary-tls-loadtest.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in "$dir"/*/nginx.pid; do stop_nginx "$f"; done
}
trap cleanup EXIT

o1=$(free_port); o2=$(free_port)
start_nginx_origins "$dir" "$o1" "$o2"
taskset -p -c 0 "$(cat "$dir/origins/nginx.pid")" >/dev/null
for child in $(pgrep -P "$(cat "$dir/origins/nginx.pid")"); do taskset -p -c 0 "$child" >/dev/null; done

# The certificate both serve, made for this run (never kept).
write_bench_certificate "$dir"

# start_gateway NAME BIN: a gateway (threads: 1) with a TLS listener, pinned to CPU 1; sets
# port_NAME and pid_NAME.
start_gateway() {
  local name=$1 binary=$2 port plain
  port=$(free_port); plain=$(free_port)
  cat >"$dir/$name.yaml" <<YAML
version: 1
threads: 1
upstream_keepalive_pool_size: 256
pid_file: $dir/$name.pid
upgrade_sock: $dir/$name.upgrade.sock
gateway:
  listen:
    - "127.0.0.1:$plain"
    - addr: "127.0.0.1:$port"
      tls:
        certificates: [{ cert: "$dir/bench.pem", key: "$dir/bench.key" }]
  groups:
    stable: { servers: ["127.0.0.1:$o1"], health_check: { type: tcp, interval: 5s } }
  routing:
    cookie: canary_user
    default: stable
YAML
  RUST_LOG=warn taskset -c 1 "$binary" -c "$dir/$name.yaml" >"$dir/$name.log" 2>&1 &
  pids+=("$!")
  printf -v "pid_$name" '%s' "$!"
  printf -v "port_$name" '%s' "$port"
  wait_port "$port" >/dev/null
}
start_gateway gateway "$bin"
gw_pid=$pid_gateway; gw_port=$port_gateway
# COMPARE_BIN=path: a second build ("compare"), measured alternately with the others.
if [ -n "${COMPARE_BIN:-}" ]; then
  start_gateway compare "$COMPARE_BIN"
fi
nx_port=$(free_port)

nx_pid=$(start_pinned_nginx "$dir/nginx" "$nx_port" <<NGINX
  access_log off;
  keepalive_requests 1000000;
  upstream stable { server 127.0.0.1:$o1; keepalive 256; }
  server {
    listen 127.0.0.1:$nx_port ssl http2 reuseport backlog=4096;
    ssl_certificate $dir/bench.pem;
    ssl_certificate_key $dir/bench.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    http2_max_concurrent_streams 128;
    location / {
      proxy_pass http://stable;
      $NGINX_PROXY_HEADERS
    }
  }
NGINX
)

# Both answer over TLS 1.3 with the same certificate.
for port in "$gw_port" "$nx_port"; do
  curl -sk --http2 -o /dev/null -w "127.0.0.1:$port %{http_version} %{http_code}\n" "https://127.0.0.1:$port/"
done

ticks_per_s=$(getconf CLK_TCK)
# run NAME PID KIND PORT: one measurement; prints "NAME KIND requests req/s cpu_us_per_req errors".
run() {
  local name=$1 pid=$2 kind=$3 port=$4 before after out n rps errors
  before=$(cpu_ticks "$pid")
  case $kind in
    handshakes)
      out=$(taskset -c 0 wrk -t1 -c32 -d"${secs}s" -H "Connection: close" "https://127.0.0.1:$port/")
      n=$(awk '/requests in/ {print $1}' <<<"$out")
      errors=$(awk '/Socket errors|Non-2xx/ {print}' <<<"$out" | tr '\n' ' ') ;;
    keepalive)
      out=$(taskset -c 0 wrk -t1 -c64 -d"${secs}s" "https://127.0.0.1:$port/")
      n=$(awk '/requests in/ {print $1}' <<<"$out")
      errors=$(awk '/Socket errors|Non-2xx/ {print}' <<<"$out" | tr '\n' ' ') ;;
    h2)
      out=$(taskset -c 0 h2load -D "$secs" -c 8 -m 100 -t 1 "https://127.0.0.1:$port/" 2>&1)
      # "requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout";
      # with -D the streams still open when time is up (up to 8 x 100) count as failed.
      n=$(awk '/^requests:/ {print $8}' <<<"$out")
      errors=$(awk '/^requests:/ {if ($10 > 800 || $12 > 0) print "failed=" $10 " errored=" $12}' <<<"$out") ;;
  esac
  after=$(cpu_ticks "$pid")
  rps=$((n / secs))
  local us=$(( (after - before) * 1000000 / ticks_per_s * 10 / (n > 0 ? n : 1) ))
  printf '%-8s %-10s %9d %8d %5d.%d %s\n' "$name" "$kind" "$n" "$rps" $((us / 10)) $((us % 10)) "${errors:-}"
}

echo
echo "target   test        requests    req/s  cpu_us/req  errors   (${secs}s runs, ${rounds} rounds, alternating)"
for r in $(seq 1 "$rounds"); do
  for kind in handshakes keepalive h2; do
    run gateway "$gw_pid" "$kind" "$gw_port"
    if [ -n "${COMPARE_BIN:-}" ]; then run compare "$pid_compare" "$kind" "$port_compare"; fi
    run nginx "$nx_pid" "$kind" "$nx_port"
  done
done | tee "$dir/results.txt"

echo
echo "gateway (and compare) / nginx, by test (mean of the rounds):"
awk '{sum[$1" "$2]+=$4; cpu[$1" "$2]+=$5; n[$1" "$2]++}
     END { for (k in sum) { split(k, p, " "); if (p[1]=="gateway" || p[1]=="compare") {
       g=sum[k]/n[k]; x=sum["nginx "p[2]]/n["nginx "p[2]];
       gc=cpu[k]/n[k]; xc=cpu["nginx "p[2]]/n["nginx "p[2]];
       printf "  %-8s %-10s req/s %8.0f vs %8.0f = %.2fx   cpu_us/req %6.1f vs %6.1f = %.2fx\n", p[1], p[2], g, x, g/x, gc, xc, gc/xc } } }' \
  "$dir/results.txt" | sort
echo "files: $dir"
