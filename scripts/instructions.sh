#!/usr/bin/env bash
# Instructions per request under callgrind for one or more gateway binaries, in one run, against
# the same nginx origins, config and traffic as scripts/loadtest.sh (1 thread, 1,000 rotating
# users, every 10th on a 100k-id VIP list). A figure the noisy machine cannot move much: use it
# to compare a change with the commit before it (build the other commit's binary elsewhere).
# Only 127.0.0.1 is contacted; every process stops by itself.
# Usage: scripts/instructions.sh [BINARY...]   (default: target/release/canary-gateway)
#   ROUTES=N scripts/instructions.sh ...   the same rules as the last of N routes: N-1 routes for
#   hosts site<i>.test and *.site<i>.test (paths / and /api/) come first, so every request takes
#   the whole lookup (an exact miss, a wildcard per label, then the catch-all's prefixes).
#   BARE=1 scripts/instructions.sh ...   also bare Pingora (examples/bare_proxy.rs) without and
#   with the gateway's upstream timeouts (--timeouts), and each build's ratio to both.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh
bash scripts/setup.sh loadtest
if [ $# -eq 0 ]; then
  cargo build --release --quiet
  set -- "${CARGO_TARGET_DIR:-$PWD/target}/release/canary-gateway"
fi

dir=$(mktemp -d /tmp/canary-instructions.XXXXXX)
trap 'stop_nginx "$dir/origins/nginx.pid"' EXIT
o1=$(free_port); o2=$(free_port)
start_nginx_origins "$dir" "$o1" "$o2"
write_vip_file "$dir/vips.txt" 100000
write_wrk_script "$dir/rotate.lua" 1000 10

i=1
counts=(); bare_counts=()
for bin in "$@"; do
  port=$(free_port)
  write_gateway_config "$dir/gateway" "$port" 1 "$dir/vips.txt" "$o1" "$o2"
  if [ -n "${ROUTES:-}" ]; then
    python3 - "$dir/gateway.yaml" "$ROUTES" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
text = open(path).read()
head, routing = text.split("  routing:\n", 1)
rules = "".join("    " + line + "\n" for line in routing.rstrip("\n").split("\n"))
routes = ["  routes:\n"]
for i in range(n - 1):
    routes.append(
        f"    - name: site{i}\n      hosts: [\"site{i}.test\", \"*.site{i}.test\"]\n"
        f"      paths: [\"/\", \"/api/\"]\n      routing: {{ default: stable }}\n")
routes.append("    - name: catch-all\n      routing:\n" + rules)
open(path, "w").write(head + "".join(routes))
PY
  fi
  read -r _ n per_request file < <(count_instructions "$dir" "run$i" "$port" "$bin" -c "$dir/gateway.yaml")
  printf "%-50s %7d requests %7d instructions/request  %s\n" "$bin" "$n" "$per_request" "$file"
  counts+=("$bin $per_request")
  i=$((i + 1))
done

if [ -n "${BARE:-}" ]; then
  cargo build --release --quiet --example bare_proxy
  bare=${CARGO_TARGET_DIR:-$PWD/target}/release/examples/bare_proxy
  for flags in "" "--timeouts"; do
    port=$(free_port)
    # $flags unquoted: empty, or the one word --timeouts.
    read -r _ n per_request file < <(count_instructions "$dir" "bare$flags" "$port" "$bare" "127.0.0.1:$port" "127.0.0.1:$o1" $flags)
    printf "%-50s %7d requests %7d instructions/request  %s\n" "bare_proxy $flags" "$n" "$per_request" "$file"
    bare_counts+=("$per_request")
  done
  for row in "${counts[@]}"; do
    read -r bin per_request <<<"$row"
    printf "%-50s / bare %.3f   / bare --timeouts %.3f\n" "$bin" \
      "$(awk "BEGIN{print $per_request / ${bare_counts[0]}}")" "$(awk "BEGIN{print $per_request / ${bare_counts[1]}}")"
  done
fi
