#!/usr/bin/env bash
# CPU µs per request of several gateway builds, alternating in one run: what a change saves on
# the machine, beside the instruction counts of scripts/instructions.sh. Each build runs the load
# tests' configuration (1 worker on CPU 1; 100,000-id VIP list, 10% rollout) against the same two
# nginx origins; wrk (1 thread, 64 keep-alive connections, 1,000 rotating users) and the origins
# share CPU 0. Every round runs each build once, for SECONDS, the first build of the round
# rotating; CPU µs per request is the build's utime+stime (/proc/PID/stat) over the requests.
# Prints each run, then per build the median over the rounds and the median of its per-round
# ratio to the first build (a pair of runs moments apart sees the same machine, so that ratio is
# the figure to quote on a noisy machine).
# Usage: scripts/cpu-compare.sh [-r ROUNDS (16)] [-s SECONDS (3)] BINARY...
# Only 127.0.0.1 is contacted; everything it starts is stopped when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh
rounds=16 secs=3
while getopts "r:s:" o; do
  case $o in r) rounds=$OPTARG ;; s) secs=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || { echo "usage: scripts/cpu-compare.sh [-r ROUNDS] [-s SECONDS] BINARY..." >&2; exit 2; }
bash scripts/setup.sh loadtest

dir=$(mktemp -d /tmp/canary-cpu-compare.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  stop_nginx "$dir/origins/nginx.pid"
}
trap cleanup EXIT

o1=$(free_port); o2=$(free_port)
start_nginx_origins "$dir" "$o1" "$o2"
for p in $(cat "$dir/origins/nginx.pid") $(pgrep -P "$(cat "$dir/origins/nginx.pid")"); do
  taskset -pc 0 "$p" >/dev/null
done
write_vip_file "$dir/vips.txt" 100000
write_wrk_script "$dir/rotate.lua" 1000 10
bins=("$@"); ports=()
for i in "${!bins[@]}"; do
  p=$(free_port); ports+=("$p")
  write_gateway_config "$dir/g$i" "$p" 1 "$dir/vips.txt" "$o1" "$o2"
  RUST_LOG=warn taskset -c 1 "${bins[$i]}" -c "$dir/g$i.yaml" >"$dir/g$i.log" 2>&1 &
  pids+=($!)
  wait_port "$p"
  # Warm each build (its pool to the origins, the allocator's pages) before counting.
  taskset -c 0 wrk -t1 -c64 -d1s -s "$dir/rotate.lua" "http://127.0.0.1:$p/" >/dev/null
done

hz=$(getconf CLK_TCK)
n_bins=${#bins[@]}
echo "round build requests us/req"
for r in $(seq 1 "$rounds"); do
  for j in $(seq 0 $((n_bins - 1))); do
    k=$(( (j + r) % n_bins ))
    before=$(cpu_ticks "${pids[$k]}")
    n=$(taskset -c 0 wrk -t1 -c64 -d"${secs}s" -s "$dir/rotate.lua" "http://127.0.0.1:${ports[$k]}/" | awk '/requests in/ {print $1}')
    after=$(cpu_ticks "${pids[$k]}")
    awk -v r="$r" -v k="$k" -v n="${n:-0}" -v d=$((after - before)) -v hz="$hz" \
      'BEGIN { printf "%d %d %d %.2f\n", r, k, n, (n > 0 ? d / hz * 1e6 / n : 0) }' | tee -a "$dir/runs.txt"
  done
done

echo; echo "per build: median CPU us/req over $rounds rounds, and the median of its per-round ratio to build 0:"
for k in $(seq 0 $((n_bins - 1))); do
  med=$(median "$(awk -v k="$k" '$2 == k {printf "%s ", $4}' "$dir/runs.txt")")
  ratio=$(median "$(awk -v k="$k" '$2 == 0 {b[$1] = $4} $2 == k {c[$1] = $4} END {for (r in c) if (b[r] > 0) printf "%s ", c[r] / b[r]}' "$dir/runs.txt")")
  printf "  %d  %8s us/req  %.3fx   %s\n" "$k" "$med" "$ratio" "${bins[$k]}"
done
