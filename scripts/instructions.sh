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

i=1
for bin in "$@"; do
  port=$(free_port)
  write_gateway_config "$dir/gateway" "$port" 1 "$dir/vips.txt" "$o1" "$o2"
  read -r _ n per_request file < <(count_instructions "$dir" "run$i" "$port" "$bin" -c "$dir/gateway.yaml")
  printf "%-50s %7d requests %7d instructions/request  %s\n" "$bin" "$n" "$per_request" "$file"
  i=$((i + 1))
done
