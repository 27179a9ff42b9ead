#!/usr/bin/env bash
# Which TLS library handshakes fastest here: the same one-thread HTTPS responder
# (scripts/tls-library-bench, a standalone crate) on OpenSSL 3.6 (built as Pingora's openssl
# backend builds it), rustls with aws-lc-rs and rustls with ring, beside nginx (`return 200`,
# Debian's OpenSSL 3.0), all with the same ECDSA P-256 certificate. wrk opens a new
# connection per request (`Connection: close`, no resumption): requests/s = full handshakes/s.
# Servers pinned to CPU 1, wrk to CPU 0; targets alternate over ROUNDS.
#
# Usage: scripts/tls-library-bench.sh [SECONDS per run (8)] [ROUNDS (3)]
# Traffic goes to 127.0.0.1 only; everything it starts is stopped when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh
secs=${1:-8}
rounds=${2:-3}
bash scripts/setup.sh loadtest
target=${CARGO_TARGET_DIR:-$PWD/target}/tls-library-bench
cargo build --release --quiet --manifest-path scripts/tls-library-bench/Cargo.toml --target-dir "$target"
bench=$target/release/tls-library-bench
ulimit -n 65536 2>/dev/null || true

dir=$(mktemp -d /tmp/canary-tls-library.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  stop_nginx "$dir/nginx/nginx.pid"
}
trap cleanup EXIT

write_bench_certificate "$dir"

declare -A port pid
for lib in openssl rustls-aws-lc rustls-ring; do
  port[$lib]=$(free_port)
  taskset -c 1 "$bench" "$lib" "127.0.0.1:${port[$lib]}" "$dir/bench.pem" "$dir/bench.key" 2>"$dir/$lib.log" &
  pid[$lib]=$!; pids+=("$!")
  wait_port "${port[$lib]}" >/dev/null
done
port[nginx]=$(free_port)
pid[nginx]=$(start_pinned_nginx "$dir/nginx" "${port[nginx]}" <<NGINX
  access_log off;
  server {
    listen 127.0.0.1:${port[nginx]} ssl reuseport backlog=4096;
    ssl_certificate $dir/bench.pem;
    ssl_certificate_key $dir/bench.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / { return 200 "ok\n"; }
  }
NGINX
)
echo "OpenSSL in the responder: $(cat "$dir/openssl.log"); nginx: $(nginx -V 2>&1 | awk '/built with OpenSSL/ {print $4}')"

ticks_per_s=$(getconf CLK_TCK)
echo "target         handshakes   per_s  cpu_us/handshake"
for r in $(seq 1 "$rounds"); do
  for t in openssl rustls-aws-lc rustls-ring nginx; do
    before=$(cpu_ticks "${pid[$t]}")
    n=$(taskset -c 0 wrk -t1 -c32 -d"${secs}s" -H "Connection: close" "https://127.0.0.1:${port[$t]}/" \
        | awk '/requests in/ {print $1}')
    after=$(cpu_ticks "${pid[$t]}")
    us=$(( (after - before) * 1000000 / ticks_per_s / (n > 0 ? n : 1) ))
    printf '%-14s %10d %7d %8d\n' "$t" "$n" $((n / secs)) "$us"
  done
done | tee "$dir/results.txt"
echo
echo "mean handshakes/s and CPU per handshake, and the ratio to nginx:"
awk '{s[$1]+=$3; c[$1]+=$4; k[$1]++} END {
  for (t in s) printf "  %-14s %7.0f/s  %5.0f us  %.2fx nginx\n", t, s[t]/k[t], c[t]/k[t], (s[t]/k[t])/(s["nginx"]/k["nginx"]) }' \
  "$dir/results.txt" | sort
