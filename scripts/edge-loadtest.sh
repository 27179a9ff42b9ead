#!/usr/bin/env bash
# The edge as it is used: canary-gateway, nginx and HAProxy side by side, each terminating TLS
# with the same ECDSA P-256 certificate (made for this run) and routing by the same cookie map
# (QA header, 100,000-id VIP list, 10% rollout) to the same two origins, in one run, targets
# alternating, medians over rounds. CPU µs per request = the target's utime+stime (from
# /proc/PID/stat) over a run / requests.
#
#   keepalive  capacity over 64 keep-alive connections, plaintext and TLS (HTTP/1.1, wrk)
#   h2         HTTP/2 over TLS, 8 connections x 100 streams (h2load)
#   new N%     TLS HTTP/1.1 where N% of the requests end their connection (`Connection: close`
#              every 100/N-th request; wrk reconnects with a full handshake): N = 1, 10, 50
#   conn-full  one request per connection, full handshake (openssl s_time -new), and
#   conn-resumed the same with session resumption (s_time -reuse): the mix with resumption,
#              cost(N%) = (1-N) x keepalive + N x conn-resumed, is computed from these
#   rate       latency at a fixed rate (oha -q, open loop, latency corrected): p50/p99/p99.9 at
#              shares of nginx's keep-alive capacity measured above (RATES, in %: 25 and 50),
#              plaintext and TLS; the requests of the first WARMUP seconds (1) are not counted;
#              ">2ms" and "windows": the requests over 2 ms and the 100 ms windows holding them
#   idle       IDLE idle keep-alive connections (after one request each), plaintext and TLS:
#              RSS per connection, and a probe's latency (100 requests) while they are held
#
# Pinning: the proxies on PROXY_CPUS (1), clients and origins on CLIENT_CPUS (0). W workers
# each (gateway `threads`, nginx `worker_processes`, HAProxy `nbthread`).
#
# Usage: [W=1] [IDLE=10000] [BIN=path] [COMPARE_BIN=path] [PARTS="throughput rate idle"] [RATES="25 50"] \
#        scripts/edge-loadtest.sh [SECONDS per run (10)] [ROUNDS (3)]
# COMPARE_BIN: a second gateway build (`gateway-cmp`, e.g. the commit before a change), run with
# the same configuration and alternated with the others in every round; the tables add its
# ratio to the first build's.
# Traffic goes to 127.0.0.1 only; everything it starts is stopped when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh
secs=${1:-10}
rounds=${2:-3}
W=${W:-1}
IDLE=${IDLE:-}
PROXY_CPUS=${PROXY_CPUS:-1}
CLIENT_CPUS=${CLIENT_CPUS:-0}
PARTS=${PARTS:-throughput rate idle}
RATES=${RATES:-25 50}
WARMUP=${WARMUP:-1}
part() { [[ " $PARTS " == *" $1 "* ]]; }
bash scripts/setup.sh loadtest
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/canary-gateway
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# HAProxy reserves two descriptors for each connection of its maxconn: by default, 10,000 idle
# connections where the open-files limit allows, fewer where it does not (said below).
if [ -z "$IDLE" ]; then
  IDLE=$(( ($(ulimit -n) - 1000) / 2 )); [ "$IDLE" -gt 10000 ] && IDLE=10000
fi
echo "machine: $(nproc) cores, $(uname -r); open-files limit $(ulimit -n); W=$W; ${secs}s runs, $rounds rounds; IDLE=$IDLE"
if [ $((2 * IDLE + 1000)) -gt "$(ulimit -n)" ]; then
  echo "edge-loadtest: IDLE=$IDLE needs about $((2 * IDLE + 1000)) descriptors (HAProxy's maxconn); the limit here is $(ulimit -n)" >&2
  exit 1
fi

dir=$(mktemp -d /tmp/canary-edge-loadtest.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in "$dir"/*/nginx.pid "$dir"/nginx.pid; do stop_nginx "$f"; done
  for f in "$dir"/*/haproxy.pid; do [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
}
trap cleanup EXIT

o1=$(free_port); o2=$(free_port)
start_nginx_origins "$dir" "$o1" "$o2"
for p in $(cat "$dir/origins/nginx.pid") $(pgrep -P "$(cat "$dir/origins/nginx.pid")"); do
  taskset -pc "$CLIENT_CPUS" "$p" >/dev/null
done
write_bench_certificate "$dir"
cat "$dir/bench.pem" "$dir/bench.key" >"$dir/bench.both.pem"
write_vip_file "$dir/vips.txt" 100000
sed 's/$/ 1;/' "$dir/vips.txt" >"$dir/vips.map"
write_wrk_script "$dir/rotate.lua" 1000 10
# mix-N.lua: the rotating users, and `Connection: close` on every N-th request of a connection's
# thread, so 1/N of the requests are the last on their connection.
for n in 100 10 2; do
  sed "s/^  return wrk.format(\"GET\", \"\/\", { \[\"Cookie\"\] = \(.*\) })$/  local h = { [\"Cookie\"] = \1 }\n  if n % $n == 0 then h[\"Connection\"] = \"close\" end\n  return wrk.format(\"GET\", \"\/\", h)/" \
    "$dir/rotate.lua" >"$dir/mix-$n.lua"
  grep -q '"close"' "$dir/mix-$n.lua" || { echo "edge-loadtest: could not write mix-$n.lua" >&2; exit 1; }
done

# Each target: one process (group) with a plaintext port and a TLS port (ALPN h2, http/1.1).
declare -A plain_port tls_port
start_target() {  # start_target NAME
  local name=$1 p t
  p=$(free_port); t=$(free_port)
  plain_port[$name]=$p; tls_port[$name]=$t
  case $name in
    gateway|gateway-cmp)
      local bin=$BIN; [ "$name" = gateway-cmp ] && bin=$COMPARE_BIN
      write_gateway_config "$dir/$name" "$p" "$W" "$dir/vips.txt" "$o1" "$o2"
      sed -i "s|^  listen: \[\"127.0.0.1:$p\"\]$|  listen:\n    - \"127.0.0.1:$p\"\n    - addr: \"127.0.0.1:$t\"\n      tls:\n        certificates: [{ cert: \"$dir/bench.pem\", key: \"$dir/bench.key\" }]|" "$dir/$name.yaml"
      RUST_LOG=warn taskset -c "$PROXY_CPUS" "$bin" -c "$dir/$name.yaml" >>"$dir/$name.log" 2>&1 &
      pids+=($!); echo $! >"$dir/$name.run.pid" ;;
    nginx)
      mkdir -p "$dir/nginx"
      cat >"$dir/nginx/nginx.conf" <<NGINX
worker_processes $W;
daemon on;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log warn;
events { worker_connections 19000; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  upstream stable { server 127.0.0.1:$o1; keepalive 256; }
  upstream canary { server 127.0.0.1:$o2; keepalive 256; }
  $(nginx_map_http "$dir/vips.map")
  ssl_certificate $dir/bench.pem;
  ssl_certificate_key $dir/bench.key;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_session_cache shared:SSL:10m;
  http2_max_concurrent_streams 128;
  server {
    listen 127.0.0.1:$p reuseport backlog=4096;
    listen 127.0.0.1:$t ssl http2 reuseport backlog=4096;
    location / {
      proxy_pass http://\$backend;
      $NGINX_PROXY_HEADERS
      proxy_set_header X-Request-Id \$request_id;
      add_header x-request-id \$request_id;
      add_header x-canary-group \$backend;
    }
  }
}
NGINX
      nginx -q -p "$dir/nginx" -c "$dir/nginx/nginx.conf"
      for _ in $(seq 1 100); do [ -s "$dir/nginx/nginx.pid" ] && pgrep -P "$(cat "$dir/nginx/nginx.pid")" >/dev/null && break; sleep 0.05; done
      for w in $(cat "$dir/nginx/nginx.pid") $(pgrep -P "$(cat "$dir/nginx/nginx.pid")"); do taskset -pc "$PROXY_CPUS" "$w" >/dev/null; done ;;
    haproxy)
      mkdir -p "$dir/haproxy"
      HAPROXY_MAXCONN=$((IDLE + 200)) write_haproxy_config "$dir/haproxy" "$W" "$PROXY_CPUS" "$dir/vips.txt" "$o1" "$o2" \
        "bind 127.0.0.1:$p" "bind 127.0.0.1:$t ssl crt $dir/bench.both.pem alpn h2,http/1.1"
      haproxy -q -f "$dir/haproxy/haproxy.cfg" ;;
  esac
  wait_port "$p" >/dev/null; wait_port "$t" >/dev/null
}
target_pids() {  # target_pids NAME: every process serving a target
  case $1 in
    gateway|gateway-cmp) cat "$dir/$1.run.pid" ;;
    nginx) echo "$(cat "$dir/nginx/nginx.pid")" $(pgrep -P "$(cat "$dir/nginx/nginx.pid")") ;;
    haproxy) cat "$dir/haproxy/haproxy.pid" ;;
  esac
}
rss_kb() {  # rss_kb PID...: summed VmRSS
  local t=0 p
  for p in "$@"; do t=$((t + $(awk '/VmRSS/ {print $2}' "/proc/$p/status"))); done
  echo "$t"
}

targets=(gateway nginx haproxy)
[ -n "${COMPARE_BIN:-}" ] && targets=(gateway gateway-cmp nginx haproxy)
for t in "${targets[@]}"; do start_target "$t"; done
# Every target routes alike: a VIP to stable, the QA header to canary, over both ports.
for t in "${targets[@]}"; do
  for url in "http://127.0.0.1:${plain_port[$t]}/" "https://127.0.0.1:${tls_port[$t]}/"; do
    vip=$(curl -sk --cookie canary_user=vip-10 "$url"); qa=$(curl -sk -H 'x-canary-group: canary' "$url")
    [ "$vip" = "This is version 1" ] && [ "$qa" = "This is version 2" ] || {
      echo "routing check failed: $t $url (vip=$vip qa=$qa)" >&2; exit 1; }
  done
  echo "$t: routes alike on :${plain_port[$t]} and TLS :${tls_port[$t]} ($(curl -sk --http2 -o /dev/null -w '%{http_version}' "https://127.0.0.1:${tls_port[$t]}/") over TLS)"
done

ticks=$(getconf CLK_TCK)
results=$dir/results.txt
# measure TARGET WORKLOAD: one run; appends "TARGET WORKLOAD requests req/s cpu_us_per_req errors".
measure() {
  local t=$1 w=$2 before after out n errors="" p=${plain_port[$1]} s=${tls_port[$1]}
  local pids; pids=$(target_pids "$t")
  before=$(cpu_ticks $pids)
  case $w in
    keepalive-plain) out=$(taskset -c "$CLIENT_CPUS" wrk -t1 -c64 -d"${secs}s" -s "$dir/rotate.lua" "http://127.0.0.1:$p/" 2>&1) ;;
    keepalive-tls|new-0) out=$(taskset -c "$CLIENT_CPUS" wrk -t1 -c64 -d"${secs}s" -s "$dir/rotate.lua" "https://127.0.0.1:$s/" 2>&1) ;;
    new-1) out=$(taskset -c "$CLIENT_CPUS" wrk -t1 -c64 -d"${secs}s" -s "$dir/mix-100.lua" "https://127.0.0.1:$s/" 2>&1) ;;
    new-10) out=$(taskset -c "$CLIENT_CPUS" wrk -t1 -c64 -d"${secs}s" -s "$dir/mix-10.lua" "https://127.0.0.1:$s/" 2>&1) ;;
    new-50) out=$(taskset -c "$CLIENT_CPUS" wrk -t1 -c64 -d"${secs}s" -s "$dir/mix-2.lua" "https://127.0.0.1:$s/" 2>&1) ;;
    h2) out=$(taskset -c "$CLIENT_CPUS" h2load -D "$secs" -c 8 -m 100 -t 1 -H 'cookie: canary_user=user-7' "https://127.0.0.1:$s/" 2>&1) ;;
    conn-full|conn-resumed)
      local mode=-new; [ "$w" = conn-resumed ] && mode=-reuse
      out=$(taskset -c "$CLIENT_CPUS" openssl s_time -connect "127.0.0.1:$s" -www / "$mode" -time "$secs" 2>&1) ;;
  esac
  after=$(cpu_ticks $pids)
  case $w in
    h2) n=$(awk '/^requests:/ {print $8}' <<<"$out")
        errors=$(awk '/^requests:/ {if ($10 > 800 || $12 > 0) print "failed=" $10 ",errored=" $12}' <<<"$out") ;;
    conn-*) n=$(awk '/connections in [0-9.]+ real/ {print $1}' <<<"$out" | tail -1) ;;
    *) n=$(awk '/requests in/ {print $1}' <<<"$out")
       errors=$(awk '/Socket errors|Non-2xx/ {printf "%s,", $0}' <<<"$out" | tr -d ' ') ;;
  esac
  n=${n:-0}
  awk -v t="$t" -v w="$w" -v n="$n" -v s="$secs" -v d=$((after - before)) -v hz="$ticks" -v e="${errors:--}" \
    'BEGIN { printf "%-11s %-14s %9d %9.0f %8.1f %s\n", t, w, n, n / s, (n > 0 ? d / hz * 1e6 / n : 0), e }' | tee -a "$results"
}
col() {  # col TARGET WORKLOAD FIELD: the median of a column over the rounds (4 req/s, 5 CPU)
  median "$(awk -v t="$1" -v w="$2" -v f="$3" '$1 == t && $2 == w {printf "%s ", $f}' "$results")"
}

: >"$results"
workloads=(keepalive-plain keepalive-tls h2 new-1 new-10 new-50 conn-full conn-resumed)
if part throughput; then
echo; echo "target   workload        requests     req/s   us/req  errors"
for r in $(seq 1 "$rounds"); do
  for w in "${workloads[@]}"; do
    for t in "${targets[@]}"; do measure "$t" "$w"; done
  done
done

echo; echo "CPU us per request (medians of $rounds rounds), and the gateway's ratio to each:"
printf "  %-14s %9s %9s %9s %12s %12s\n" workload gateway nginx haproxy "gw/nginx" "gw/haproxy"
for w in "${workloads[@]}"; do
  g=$(col gateway "$w" 5); x=$(col nginx "$w" 5); h=$(col haproxy "$w" 5)
  printf "  %-14s %9s %9s %9s %11.2fx %11.2fx" "$w" "$g" "$x" "$h" "$(awk "BEGIN{print $g / $x}")" "$(awk "BEGIN{print $g / $h}")"
  if [ -n "${COMPARE_BIN:-}" ]; then
    c=$(col gateway-cmp "$w" 5)
    printf "   gateway-cmp %6s, gateway/gateway-cmp %.3fx" "$c" "$(awk "BEGIN{print $g / $c}")"
  fi
  echo
done
echo "  with resumption (computed: (1-N) x keepalive-tls + N x conn-resumed):"
for share in 1 10 50; do
  row="  resumed-$share%"
  for t in "${targets[@]}"; do
    row="$row $(awk -v k="$(col "$t" keepalive-tls 5)" -v c="$(col "$t" conn-resumed 5)" -v s="$share" 'BEGIN{printf "%9.1f", (1 - s / 100) * k + s / 100 * c}')"
  done
  echo "$row"
done
fi

# --- latency at a fixed rate ------------------------------------------------------------------
if part rate && ! command -v oha >/dev/null 2>&1; then
  echo "edge-loadtest: oha is not installed (scripts/setup.sh loadtest installs it)" >&2
  exit 1
fi
if part rate; then
  # nginx's keep-alive capacity, which the rates are a share of (measured here when the
  # throughput part did not run).
  if ! grep -q '^nginx ' "$results"; then
    # One run can land on a busy moment of a shared machine: the median of ROUNDS runs.
    echo; echo "nginx's keep-alive capacity ($rounds runs each, the median is used):"
    for _ in $(seq 1 "$rounds"); do measure nginx keepalive-plain; measure nginx keepalive-tls; done
  fi
  echo; echo "latency at a fixed rate (oha -q, 64 connections, ${secs}s, latency corrected, the first ${WARMUP}s not counted), ms:"
  printf "  %-11s %-6s %8s %9s %9s %9s %8s %7s %8s\n" target scheme "req/s" p50 p99 p99.9 errors ">2ms" windows
  for scheme in plain tls; do
    wl=keepalive-$scheme
    cap=$(col nginx "$wl" 4)
    for pct in $RATES; do
      rate=$(awk -v c="$cap" -v p="$pct" 'BEGIN{printf "%d", c * p / 100}')
      for r in $(seq 1 "$rounds"); do
        for t in "${targets[@]}"; do
          url="http://127.0.0.1:${plain_port[$t]}/"; [ "$scheme" = tls ] && url="https://127.0.0.1:${tls_port[$t]}/"
          rm -f "$dir/oha.db"
          taskset -c "$CLIENT_CPUS" oha --no-tui --insecure --latency-correction \
            -c 64 -q "$rate" -z "${secs}s" -H 'Cookie: canary_user=user-7' --output-format json \
            --db-url "$dir/oha.db" "$url" >"$dir/oha.json" 2>/dev/null || true
          python3 - "$dir/oha.json" "$dir/oha.db" "$t" "$scheme-$pct" "$WARMUP" >>"$dir/rate.txt" <<'PY'
import json, sqlite3, sys
d = json.load(open(sys.argv[1]))
# Requests still in flight when the run's time is up are cut off, not failed.
errs = sum(v for k, v in d.get("errorDistribution", {}).items() if "deadline" not in k.lower())
# Each request's latency from the moment the constant rate scheduled it (latency corrected),
# for the requests scheduled after the warm-up: the client's own connection set-up (64 TLS
# handshakes at once) otherwise lands in the tail of every target alike.
rows = sqlite3.connect(sys.argv[2]).execute(
    "SELECT s, end - s FROM (SELECT COALESCE(start_latency_correction, start) AS s, end FROM oha "
    "WHERE status = 200) WHERE s >= ?", (float(sys.argv[5]),)).fetchall()
lat = sorted(r[1] * 1000 for r in rows)
q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))] if lat else 0
# Bursts: the requests over 2 ms, and how many 100 ms windows (by scheduled time) hold them.
slow = [int(s * 10) for s, l in rows if l > 0.002]
print(sys.argv[3], sys.argv[4], len(lat), f"{q(0.5):.3f}", f"{q(0.99):.3f}", f"{q(0.999):.3f}", errs, len(slow), len(set(slow)))
PY
        done
      done
      for t in "${targets[@]}"; do
        m() { median "$(awk -v t="$t" -v k="$scheme-$pct" -v f="$1" '$1 == t && $2 == k {printf "%s ", $f}' "$dir/rate.txt")"; }
        e=$(awk -v t="$t" -v k="$scheme-$pct" '$1 == t && $2 == k {s += $7} END {print s + 0}' "$dir/rate.txt")
        printf "  %-11s %-6s %8s %9s %9s %9s %8s %7s %8s   (%d%% of nginx's %s)\n" "$t" "$scheme" "$rate" "$(m 4)" "$(m 5)" "$(m 6)" "$e" "$(m 8)" "$(m 9)" "$pct" "$cap"
      done
    done
  done
fi

# --- idle connections -------------------------------------------------------------------------
if part idle; then
echo; echo "idle keep-alive connections ($IDLE each, after one request), RSS per connection and a probe's latency:"
printf "  %-8s %-6s %10s %10s %12s %10s %10s\n" target scheme "held" "RSS kB" "per conn B" "probe p50" "probe p99"
for scheme in plain tls; do
  for t in "${targets[@]}"; do
    port=${plain_port[$t]}; [ "$scheme" = tls ] && port=${tls_port[$t]}
    tp=$(target_pids "$t")
    sleep 1
    before=$(rss_kb $tp)
    fifo=$dir/idle.$t.$scheme; mkfifo "$fifo"
    taskset -c "$CLIENT_CPUS" python3 - "$port" "$scheme" "$IDLE" "$fifo" >"$dir/idle.out" 2>&1 <<'PY' &
import socket, ssl, sys, time
port, scheme, count, fifo = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["http/1.1"])
def connect():
    s = socket.create_connection(("127.0.0.1", port))
    return ctx.wrap_socket(s) if scheme == "tls" else s
req = b"GET / HTTP/1.1\r\nHost: bench.test\r\nCookie: canary_user=user-%d\r\n\r\n"
def one(s, i):
    s.sendall(req % i)
    buf = b""
    while b"version" not in buf:
        chunk = s.recv(4096)
        if not chunk: return False
        buf += chunk
    return buf.startswith(b"HTTP/1.1 200")
held, ok = [], 0
for i in range(count):
    s = connect(); held.append(s)
    if one(s, i): ok += 1
with open(fifo, "w") as f: f.write(f"{ok}\n")
time.sleep(3)  # the script reads RSS now
probe = connect(); one(probe, 7); lat = []
for i in range(100):
    t0 = time.perf_counter(); one(probe, 7); lat.append((time.perf_counter() - t0) * 1000)
lat.sort()
print(f"{ok} {lat[49]:.3f} {lat[98]:.3f}", flush=True)
PY
    holder=$!
    ok=$(cat "$fifo")
    sleep 2
    after=$(rss_kb $tp)
    wait "$holder" || true
    read -r _ p50 p99 <"$dir/idle.out" || true
    printf "  %-11s %-6s %10s %10s %12.0f %10s %10s\n" "$t" "$scheme" "$ok" "$after" \
      "$(awk -v a="$after" -v b="$before" -v n="$ok" 'BEGIN{print (n > 0 ? (a - b) * 1024 / n : 0)}')" "${p50:-?}ms" "${p99:-?}ms"
    rm -f "$fifo"
    # Let the target close the held connections before the next one.
    sleep 2
  done
done
fi
echo "files: $dir"
