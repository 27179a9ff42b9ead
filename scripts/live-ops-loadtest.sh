#!/usr/bin/env bash
# Load test of live operations: wrk (64 connections, rotating user cookies) against the gateway
# while it is hot-restarted 3 times (-u + SIGQUIT, scripts/hot-restart.sh) and its rollout
# percentage is changed 20 times through the admin API. Prints requests, non-2xx and socket
# errors; the target is 0 errors. Traffic goes to 127.0.0.1 only; it stops by itself.
# Usage: scripts/live-ops-loadtest.sh [SECONDS (default 30)] [THREADS (proxy workers, default 1)]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh
duration=${1:-30}
threads=${2:-1}
bash scripts/setup.sh loadtest
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/canary-gateway

dir=$(mktemp -d /tmp/canary-liveops.XXXXXX)
gw_pid=""
cleanup() {
  [ -n "$gw_pid" ] && kill -INT "$gw_pid" 2>/dev/null || true
  pkill -INT -f "$dir/gateway.yaml" 2>/dev/null || true
  stop_nginx "$dir/origins/nginx.pid"
}
trap cleanup EXIT

o1=$(free_port); o2=$(free_port); gw=$(free_port); adm=$(free_port)
start_nginx_origins "$dir" "$o1" "$o2"
token=liveops-token-$(date +%s%N)
export CANARY_ADMIN_TOKEN=$token
cat >"$dir/gateway.yaml" <<YAML
version: 1
threads: $threads
pid_file: $dir/gateway.pid
upgrade_sock: $dir/upgrade.sock
grace_period_seconds: 10
graceful_shutdown_timeout_seconds: 2
gateway:
  listen: ["127.0.0.1:$gw"]
  groups:
    stable: { servers: ["127.0.0.1:$o1"] }
    canary: { servers: ["127.0.0.1:$o2"] }
  routing:
    default: stable
    rules:
      - name: vip
        users_file: vips.txt
        group: stable
      - name: rollout
        percent: 10
        group: canary
  admin: { listen: "127.0.0.1:$adm", token_env: CANARY_ADMIN_TOKEN, state_file: state.json }
YAML
write_vip_file "$dir/vips.txt" 100000
write_wrk_script "$dir/rotate.lua" 1000 10

RUST_LOG=warn "$bin" -c "$dir/gateway.yaml" >>"$dir/gateway.log" 2>&1 &
gw_pid=$!
wait_port "$gw"; wait_port "$adm"

wrk -t1 -c64 -d"${duration}s" --latency -s "$dir/rotate.lua" "http://127.0.0.1:$gw/" >"$dir/wrk.out" 2>&1 &
wrk_pid=$!
sleep 1

changes=0 change_fail=0
change_percent() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H "Authorization: Bearer $token" \
    -d "{\"percent\": $1}" "http://127.0.0.1:$adm/rules/rollout/percent") || code=000
  changes=$((changes + 1)); [ "$code" = 200 ] || change_fail=$((change_fail + 1))
}
restarts=0
for round in 1 2 3; do
  for p in 5 15 25 35 45 20 10; do
    [ $changes -lt 20 ] && change_percent "$p"
    sleep 0.2
  done
  gw_pid=$(scripts/hot-restart.sh -c "$dir/gateway.yaml" -p "$gw_pid" -b "$bin" -l "$dir/gateway.log")
  restarts=$((restarts + 1))
done
while [ $changes -lt 20 ]; do change_percent $((changes * 3)); sleep 0.2; done
wait "$wrk_pid"

summary=$(grep '^SUMMARY' "$dir/wrk.out")
non2xx=$(sed -n 's/.*Non-2xx or 3xx responses: \([0-9]*\).*/\1/p' "$dir/wrk.out"); non2xx=${non2xx:-0}
get() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$summary"; }
requests=$(get requests); secs=$(awk "BEGIN{print $(get duration_us)/1e6}")
socket_errors=$(( $(get connect) + $(get read) + $(get write) + $(get timeout) ))
echo "live-ops load test: ${duration}s, wrk -t1 -c64, 1,000 rotating users, 100k-id VIP file"
echo "  hot restarts:        $restarts"
echo "  admin % changes:     $changes ($change_fail failed)"
echo "  requests:            $requests ($(awk "BEGIN{printf \"%.0f\", $requests/$secs}") req/s)"
echo "  non-2xx responses:   $non2xx"
echo "  socket errors:       $socket_errors (connect $(get connect), read $(get read), write $(get write), timeout $(get timeout))"
echo "  latency p50 / p99:   $(get p50_us) us / $(get p99_us) us"
echo "  final generation:    $(curl -s -H "Authorization: Bearer $token" "http://127.0.0.1:$adm/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["generation"])')"
if [ "$non2xx" -ne 0 ] || [ "$socket_errors" -ne 0 ] || [ "$change_fail" -ne 0 ]; then
  echo "FAIL: errors during live operations (logs in $dir)"; trap - EXIT; cleanup; exit 1
fi
echo "PASS: 0 errors"
