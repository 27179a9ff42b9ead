#!/usr/bin/env bash
# A normal visitor's latency while the proxy is under attack: canary-gateway beside nginx, in one
# run, with the same certificate (made here) and the same origin.
#
# For each attack, a normal client (scripts/lib/attack.py normal: 50 requests a second on a fixed
# schedule, each on a new connection, latency counted from the scheduled time, a failure or a
# wait over 5 s counted as an error at 5 s) runs for SECONDS while the attacker holds its
# pressure, first against the gateway, then against nginx. Attacks (attack.py's list):
#
#   none          the baseline
#   slowloris     500 connections sending one header byte every 2 s        -> plain port
#   idle-h1       1,000 keep-alive connections silent after one request    -> plain port
#   idle-h2       1,000 TLS h2 connections silent after SETTINGS           -> TLS port
#   zero-window   20 h2 connections x 100 GETs of a 1 MiB object, window 0 -> TLS port
#   continuation  20 h2 connections sending CONTINUATION frames without end -> TLS port
#   rapid-reset   20 h2 connections opening and cancelling streams         -> TLS port
#   fd-flood      1,100 silent connections on the plain port; the normal client uses the second
#                 plain port (another listener of the same process)
#   admin-flood   1,100 slow heads on the admin port (nginx: a second server block standing in
#                 for it); the normal client uses the plain port
#
# Both proxies run with 1,024 descriptors (prlimit before start; nginx worker_connections 1024,
# the gateway's own budget from its limit), 1 worker pinned to CPU 1; the attacker, the normal
# client and the origin share CPU 0. The table shows, per attack and target: requests, errors,
# p50 / p99 / max in ms, the proxy's peak RSS in MB, and the attacker's counters
# (connections opened, closed by the proxy, GOAWAY and RST_STREAM frames seen).
#
# Usage: scripts/attack-loadtest.sh [SECONDS per attack (20)] [ATTACK...]
# Traffic goes to 127.0.0.1 only; everything it starts is stopped when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh
secs=${1:-20}
shift || true
attacks=("$@")
[ ${#attacks[@]} -gt 0 ] || attacks=(none slowloris idle-h1 idle-h2 zero-window continuation rapid-reset fd-flood admin-flood)
bash scripts/setup.sh loadtest
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/canary-gateway
fi
ulimit -n 65536 2>/dev/null || true
fd_limit=${FD_LIMIT:-1024}
attack_py=$PWD/scripts/lib/attack.py

dir=$(mktemp -d /tmp/canary-attack.XXXXXX)
chmod 755 "$dir"  # the origin's worker (another user) reads $dir/origin/www
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in "$dir"/*/nginx.pid; do stop_nginx "$f"; done
}
trap cleanup EXIT

# The origin: `/` answers a short body, `/big` a 1 MiB file; 1 worker on CPU 0.
origin=$(free_port)
mkdir -p "$dir/origin/www"
head -c 1048576 /dev/zero >"$dir/origin/www/big"
start_nginx_on_cpus 01 "$dir/origin" "$origin" >/dev/null <<NGINX
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$origin reuseport backlog=4096;
    location = /big { root $dir/origin/www; }
    location / { return 200 "This is version 1\n"; }
  }
NGINX
write_bench_certificate "$dir"

# Ports: plain, second plain, TLS, admin; one set per target.
for t in gw nx; do
  for k in plain plain2 tls admin; do printf -v "${t}_$k" '%s' "$(free_port)"; done
done

cat >"$dir/gateway.yaml" <<YAML
version: 1
threads: 1
upstream_keepalive_pool_size: 256
pid_file: $dir/gateway.pid
upgrade_sock: $dir/gateway.upgrade.sock
gateway:
  listen:
    - "127.0.0.1:$gw_plain"
    - "127.0.0.1:$gw_plain2"
    - addr: "127.0.0.1:$gw_tls"
      tls:
        certificates: [{ cert: "$dir/bench.pem", key: "$dir/bench.key" }]
  admin:
    listen: "127.0.0.1:$gw_admin"
    token: "attack-test-token"
  groups:
    stable: { servers: ["127.0.0.1:$origin"], health_check: { type: tcp, interval: 5s } }
  routing:
    cookie: canary_user
    default: stable
YAML
RUST_LOG=warn prlimit --nofile="$fd_limit:$fd_limit" taskset -c 1 "$BIN" -c "$dir/gateway.yaml" \
  >"$dir/gateway.log" 2>&1 &
gw_pid=$!
pids+=("$gw_pid")
wait_port "$gw_tls" >/dev/null

mkdir -p "$dir/nginx"
cat >"$dir/nginx/nginx.conf" <<NGINX
worker_processes 1;
worker_cpu_affinity 10;
worker_rlimit_nofile $fd_limit;
daemon on;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log warn;
events { worker_connections $fd_limit; }
http {
  access_log off;
  upstream stable { server 127.0.0.1:$origin; keepalive 256; }
  server {
    listen 127.0.0.1:$nx_plain;
    listen 127.0.0.1:$nx_plain2;
    listen 127.0.0.1:$nx_tls ssl http2;
    ssl_certificate $dir/bench.pem;
    ssl_certificate_key $dir/bench.key;
    location / {
      proxy_pass http://stable;
      $NGINX_PROXY_HEADERS
    }
  }
  server { listen 127.0.0.1:$nx_admin; location / { return 200 "admin stand-in\n"; } }
}
NGINX
prlimit --nofile="$fd_limit:$fd_limit" nginx -q -p "$dir/nginx" -c "$dir/nginx/nginx.conf"
wait_port "$nx_tls" >/dev/null
nx_pid=$(pgrep -P "$(cat "$dir/nginx/nginx.pid")" | head -1)

for port in "$gw_tls" "$nx_tls"; do
  curl -sk --http2 -o /dev/null -w "127.0.0.1:$port %{http_version} %{http_code}\n" "https://127.0.0.1:$port/big"
done

rss_mb() { awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$1/status" 2>/dev/null || echo 0; }

# measure TARGET PID ATTACK: one row.
measure() {
  local t=$1 pid=$2 kind=$3 aport conns=500 nport nflag="" akind=$3 peak=0 r
  local plain plain2 tls admin
  eval "plain=\$${t}_plain plain2=\$${t}_plain2 tls=\$${t}_tls admin=\$${t}_admin"
  nport=$plain
  case $kind in
    slowloris) aport=$plain ;;
    idle-h1) aport=$plain; conns=1000 ;;
    idle-h2) aport=$tls; conns=1000; nport=$tls; nflag=--tls ;;
    zero-window|continuation|rapid-reset) aport=$tls; conns=20; nport=$tls; nflag=--tls ;;
    fd-flood) aport=$plain; akind=silent; conns=1100; nport=$plain2 ;;
    admin-flood) aport=$admin; akind=slowloris; conns=1100 ;;
    none) aport= ;;
  esac
  local apid=""
  if [ -n "$aport" ]; then
    rm -f "$dir/ready"
    taskset -c 0 python3 "$attack_py" "$akind" "$aport" $((secs + 40)) --conns "$conns" \
      --ready "$dir/ready" >"$dir/$t.$kind.attack" 2>&1 &
    apid=$!
    # The attacker says when its connections are open (it gives up waiting after 30 s).
    for _ in $(seq 1 700); do [ -s "$dir/ready" ] && break; sleep 0.05; done
  fi
  (while sleep 1; do r=$(rss_mb "$pid"); echo "$r"; done) >"$dir/$t.$kind.rss" &
  local spid=$!
  local out
  out=$(taskset -c 0 python3 "$attack_py" normal "$nport" "$secs" $nflag)
  kill "$spid" 2>/dev/null || true
  # The attacker stops now (SIGINT: it prints its counters and closes its connections).
  if [ -n "$apid" ]; then
    kill -INT "$apid" 2>/dev/null || true
    wait "$apid" 2>/dev/null || true
  fi
  peak=$(sort -n "$dir/$t.$kind.rss" | tail -1)
  printf '%-13s %-8s %s rss_peak_mb=%s | %s\n' "$kind" "$t" "$out" "${peak:-0}" \
    "$( [ -n "$apid" ] && echo "ready_with=$(cat "$dir/ready" 2>/dev/null | tr -d '\n') $(cat "$dir/$t.$kind.attack")" || echo -)"
  # Let the proxy settle before the next row: its connections from this attack close.
  sleep 2
}

echo
echo "attack        target   normal client (50 req/s, new connection each)          | attacker"
for kind in "${attacks[@]}"; do
  measure gw "$gw_pid" "$kind"
  measure nx "$nx_pid" "$kind"
done | tee "$dir/results.txt"
echo "gateway /status open_files: $(curl -s -H 'Authorization: Bearer attack-test-token' "http://127.0.0.1:$gw_admin/status" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("open_files"))' 2>/dev/null || echo '?')"
echo "files: $dir"
