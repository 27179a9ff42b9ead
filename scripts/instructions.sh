#!/usr/bin/env bash
# Instructions per request under callgrind for one or more gateway binaries, in one run, against
# the same nginx origins, config and traffic as scripts/loadtest.sh (1 thread, 1,000 rotating
# users, every 10th on a 100k-id VIP list). A figure the noisy machine cannot move much: use it
# to compare a change with the commit before it (build the other commit's binary elsewhere).
# Only 127.0.0.1 is contacted; every process stops by itself.
# Usage: scripts/instructions.sh [BINARY...]   (default: target/release/canary-gateway)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh
bash scripts/setup.sh loadtest
if [ $# -eq 0 ]; then
  cargo build --release --quiet
  set -- "$PWD/target/release/canary-gateway"
fi

dir=$(mktemp -d /tmp/canary-instructions.XXXXXX)
trap 'stop_nginx "$dir/origins/nginx.pid"' EXIT
o1=$(free_port); o2=$(free_port)
start_nginx_origins "$dir" "$o1" "$o2"
write_vip_file "$dir/vips.txt" 100000
write_wrk_script "$dir/rotate.lua" 1000 10

for bin in "$@"; do
  port=$(free_port)
  cat >"$dir/gateway.yaml" <<YAML
version: 1
threads: 1
work_stealing: false
upstream_keepalive_pool_size: 256
pid_file: $dir/gateway.pid
upgrade_sock: $dir/gateway.upgrade.sock
gateway:
  listen: ["127.0.0.1:$port"]
  groups:
    stable: { servers: ["127.0.0.1:$o1"], health_check: { type: tcp, interval: 5s } }
    canary: { servers: ["127.0.0.1:$o2"], health_check: { type: tcp, interval: 5s } }
  routing:
    cookie: canary_user
    default: stable
    rules:
      - name: qa
        header: x-canary-group
      - name: vip
        users_file: $dir/vips.txt
        group: stable
      - name: rollout
        percent: 10
        seed: loadtest
        group: canary
YAML
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.%p" \
    "$bin" -c "$dir/gateway.yaml" >"$dir/callgrind.log" 2>&1 &
  vpid=$!
  wait_port "$port" >/dev/null
  taskset -c 0 wrk -t1 -c16 -d2s -s "$dir/rotate.lua" "http://127.0.0.1:$port/" >/dev/null 2>&1
  callgrind_control -z "$vpid" >/dev/null 2>&1
  n=$(taskset -c 0 wrk -t1 -c16 -d8s -s "$dir/rotate.lua" "http://127.0.0.1:$port/" | awk '/requests in/ {print $1}')
  callgrind_control -d "$vpid" >/dev/null 2>&1
  kill -INT "$vpid"; wait "$vpid" 2>/dev/null || true
  total=$(callgrind_annotate "$dir/callgrind.$vpid.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  printf "%-50s %7d requests %7d instructions/request  %s\n" "$bin" "$n" "$((total / n))" "$dir/callgrind.$vpid.1"
done
