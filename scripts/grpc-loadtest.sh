#!/usr/bin/env bash
# HTTP/2 to the origins side by side: h2load over cleartext HTTP/2 (prior knowledge), 8
# connections x 100 concurrent streams, through
#
#   gateway-h2c  the gateway's h2c listener to an h2c origin (`protocol: h2c`,
#                max_streams_per_connection 100)
#   gateway-h1   the same listener and load to an HTTP/1.1 origin (`protocol: h1`): what the
#                gateway did before HTTP/2 upstreams
#   nginx        nginx `listen ... http2` (h2c) with `grpc_pass` to the same h2c origin
#                (nginx's proxy_pass cannot speak HTTP/2 upstream)
#
# The origins are one nginx (1 worker): `return 200` over h2c and over HTTP/1.1. Both proxies
# run 1 worker (gateway threads: 1, nginx worker_processes 1) pinned to CPU 1; h2load and the
# origins share CPU 0. CPU µs per request = the proxy's utime+stime over the run (from
# /proc/PID/stat) / requests. Targets alternate within each round.
#
# Usage: [BIN=path/to/canary-gateway] scripts/grpc-loadtest.sh [SECONDS per run (10)] [ROUNDS (3)]
# Without BIN the release build is made and used. Traffic goes to 127.0.0.1 only; everything it
# starts is stopped when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh
secs=${1:-10}
rounds=${2:-3}
bash scripts/setup.sh loadtest
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/canary-gateway
fi
ulimit -n 65536 2>/dev/null || true

dir=$(mktemp -d /tmp/canary-grpc-loadtest.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in "$dir"/*/nginx.pid; do stop_nginx "$f"; done
}
trap cleanup EXIT

# The origins: h2c on $h2c_origin, HTTP/1.1 on $h1_origin, both `return 200`, on CPU 0.
h2c_origin=$(free_port); h1_origin=$(free_port)
start_nginx_on_cpus 01 "$dir/origins" "$h2c_origin" >/dev/null <<NGINX
  access_log off;
  keepalive_requests 1000000;
  http2_max_concurrent_streams 1000;
  server { listen 127.0.0.1:$h2c_origin http2 reuseport backlog=4096; location / { return 200 "This is version 1\n"; } }
  server { listen 127.0.0.1:$h1_origin reuseport backlog=4096; location / { return 200 "This is version 1\n"; } }
NGINX
wait_port "$h1_origin"

# start_gateway NAME PROTOCOL ORIGIN: a gateway (threads: 1) with an h2c listener, pinned to
# CPU 1, whose one group speaks PROTOCOL to 127.0.0.1:ORIGIN; sets port_NAME and pid_NAME.
start_gateway() {
  local name=$1 protocol=$2 origin=$3 port plain streams=""
  port=$(free_port); plain=$(free_port)
  [ "$protocol" = h2c ] && streams="max_streams_per_connection: 100, "
  cat >"$dir/$name.yaml" <<YAML
version: 1
threads: 1
upstream_keepalive_pool_size: 1024
pid_file: $dir/$name.pid
upgrade_sock: $dir/$name.upgrade.sock
gateway:
  listen:
    - "127.0.0.1:$plain"
    - { addr: "127.0.0.1:$port", h2c: true }
  groups:
    stable: { servers: ["127.0.0.1:$origin"], protocol: $protocol, ${streams}health_check: { type: tcp, interval: 5s } }
  routing:
    cookie: canary_user
    default: stable
YAML
  RUST_LOG=warn taskset -c 1 "$BIN" -c "$dir/$name.yaml" >"$dir/$name.log" 2>&1 &
  pids+=("$!")
  printf -v "pid_${name//-/_}" '%s' "$!"
  printf -v "port_${name//-/_}" '%s' "$port"
  wait_port "$port" >/dev/null
}
start_gateway gateway-h2c h2c "$h2c_origin"
start_gateway gateway-h1 h1 "$h1_origin"

nx_port=$(free_port)
nx_pid=$(start_pinned_nginx "$dir/nginx" "$nx_port" <<NGINX
  access_log off;
  keepalive_requests 1000000;
  http2_max_concurrent_streams 128;
  upstream stable { server 127.0.0.1:$h2c_origin; keepalive 256; }
  server {
    listen 127.0.0.1:$nx_port http2 reuseport backlog=4096;
    location / {
      grpc_pass grpc://stable;
      grpc_set_header Host \$host;
      grpc_set_header X-Real-IP \$remote_addr;
      grpc_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      grpc_set_header X-Forwarded-Proto \$scheme;
    }
  }
NGINX
)

# Each answers over h2c with the origin's 200.
for port in "$port_gateway_h2c" "$port_gateway_h1" "$nx_port"; do
  curl -s --http2-prior-knowledge -o /dev/null -w "127.0.0.1:$port %{http_version} %{http_code}\n" "http://127.0.0.1:$port/"
done

ticks_per_s=$(getconf CLK_TCK)
# run NAME PID PORT: one measurement; prints "NAME requests req/s cpu_us_per_req errors".
run() {
  local name=$1 pid=$2 port=$3 before after out n rps errors
  before=$(cpu_ticks "$pid")
  out=$(taskset -c 0 h2load -D "$secs" -c 8 -m 100 -t 1 "http://127.0.0.1:$port/" 2>&1)
  after=$(cpu_ticks "$pid")
  # "requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout"; with
  # -D the streams still open when time is up (up to 8 x 100) count as failed.
  n=$(awk '/^requests:/ {print $8}' <<<"$out")
  errors=$(awk '/^requests:/ {if ($10 > 800 || $12 > 0) print "failed=" $10 " errored=" $12}' <<<"$out")
  rps=$((n / secs))
  local us=$(( (after - before) * 1000000 / ticks_per_s * 10 / (n > 0 ? n : 1) ))
  printf '%-12s %9d %8d %5d.%d %s\n' "$name" "$n" "$rps" $((us / 10)) $((us % 10)) "${errors:-}"
}

echo
echo "target        requests    req/s  cpu_us/req  errors   (h2load h2c -c 8 -m 100, ${secs}s runs, ${rounds} rounds, alternating)"
for r in $(seq 1 "$rounds"); do
  run gateway-h2c "$pid_gateway_h2c" "$port_gateway_h2c"
  run gateway-h1 "$pid_gateway_h1" "$port_gateway_h1"
  run nginx "$nx_pid" "$nx_port"
done | tee "$dir/results.txt"

echo
echo "each / nginx grpc_pass (mean of the rounds):"
awk '{sum[$1]+=$3; cpu[$1]+=$4; n[$1]++}
     END { x=sum["nginx"]/n["nginx"]; xc=cpu["nginx"]/n["nginx"];
       for (k in sum) if (k != "nginx") {
         g=sum[k]/n[k]; gc=cpu[k]/n[k];
         printf "  %-12s req/s %8.0f vs %8.0f = %.2fx   cpu_us/req %6.1f vs %6.1f = %.2fx\n", k, g, x, g/x, gc, xc, gc/xc } }' \
  "$dir/results.txt" | sort
echo "files: $dir"
