#!/usr/bin/env bash
# Side-by-side load test: canary-gateway vs nginx doing the same cookie routing, in one run,
# on the same fast origins (nginx `return 200`, 1 worker, two ports).
#
# Targets (1 worker each, pinned to CPU 1; wrk and the origins share CPU 0):
#   gateway      canary-gateway (release build), threads: 1, VIP users_file + 10% rollout
#   nginx-map    nginx: map $cookie_canary_user (VIP list) + split_clients (10%)
#   openresty    nginx + libnginx-mod-http-lua: Lua table of VIPs + crc32 percentage
#                (the OpenResty equivalent; all ratios are to this one)
#   pingora-bare examples/bare_proxy.rs: Pingora with no routing at all (one upstream), to
#                tell the gateway's own cost from Pingora's
#   nginx-plain  nginx proxy_pass to one upstream with the same headers and no routing: nginx's
#                floor, beside bare Pingora's
#   haproxy      HAProxy (Debian's 2.6), nbthread 1: the QA header, req.cook() against the VIP
#                list as a pattern file, crc32 of the cookie mod 100 for the 10%, the same
#                forwarding headers (option forwardfor, X-Real-IP, X-Forwarded-Proto, X-Request-Id)
#   seed         the setup this gateway replaces: nginx + Lua asking a local redis-server
#                `SISMEMBER canary:users:vip <id>` on every request (pooled ngx.socket.tcp, RESP
#                written by hand: Debian has no lua-resty-redis); its CPU per request counts
#                Redis's time too
# wrk: 1 thread, 64 connections, 1,000 rotating users (every 10th a VIP), 100,000-id VIP list.
# Targets alternate over ROUNDS rounds of SECONDS each; then a threads sweep of the gateway (1
# and 2 threads; with COMPARE_BIN=path also that binary, alternating), a 2-worker round (no pinning),
# a gateway round with metrics + access log on, instruction counts per request under
# callgrind (gateway, bare Pingora, bare Pingora with the gateway's upstream timeouts, OpenResty),
# and memory figures (idle RSS, RSS with a
# 1,000,000-id list, RSS holding 10,000 idle keep-alive connections).
#
# Usage: scripts/loadtest.sh [SECONDS per run (10)] [ROUNDS (3)]
# Traffic goes to 127.0.0.1 only; everything it starts is stopped when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh
secs=${1:-10}
rounds=${2:-3}
bash scripts/setup.sh loadtest
cargo build --release --quiet
cargo build --release --quiet --example bare_proxy
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/canary-gateway
bare=${CARGO_TARGET_DIR:-$PWD/target}/release/examples/bare_proxy
ulimit -n 65536 2>/dev/null || true

dir=$(mktemp -d /tmp/canary-loadtest.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in "$dir"/*/nginx.pid; do stop_nginx "$f"; done
  for f in "$dir"/*/haproxy.pid; do [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  [ -s "$dir/redis.pid" ] && kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
}
trap cleanup EXIT

o1=$(free_port); o2=$(free_port)
start_nginx_origins "$dir" "$o1" "$o2"

write_vip_file "$dir/vips.txt" 100000
# The seed's Redis, with the same 100,000 VIP ids in canary:users:vip, pinned with the origins.
rport=$(free_port)
taskset -c 0 redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no \
  --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir"
wait_port "$rport" >/dev/null
awk '{printf "*3\r\n$4\r\nSADD\r\n$16\r\ncanary:users:vip\r\n$%d\r\n%s\r\n", length($0), $0}' "$dir/vips.txt" \
  | redis-cli -p "$rport" --pipe >/dev/null
echo "seed's redis: $(redis-cli -p "$rport" SCARD canary:users:vip) ids in canary:users:vip"

write_wrk_script "$dir/rotate.lua" 1000 10
# nginx map include: "vip-10 stable;" per line.
sed 's/$/ 1;/' "$dir/vips.txt" >"$dir/vips.map"

# --- canary-gateway ---------------------------------------------------------------------
gateway_config() {  # gateway_config NAME PORT THREADS USERS_FILE EXTRA
  write_gateway_config "$dir/$1" "$2" "$3" "$4" "$o1" "$o2" "$5"
}

# --- nginx proxies (map / lua) ------------------------------------------------------------
nginx_conf() {  # nginx_conf NAME PORT WORKERS ROUTING_BLOCK HTTP_EXTRA [PROCESS_LINES]
  mkdir -p "$dir/$1"
  cat >"$dir/$1/nginx.conf" <<NGINX
$( [ "$1" != "${1#openresty}" ] || [ "$1" != "${1#seed}" ] && echo "load_module /usr/lib/nginx/modules/ndk_http_module.so; load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;" )
worker_processes $3;
${6:-daemon on;}
pid $dir/$1/nginx.pid;
error_log $dir/$1/error.log warn;
events { worker_connections 20000; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream stable { server 127.0.0.1:$o1; keepalive 256; }
  upstream canary { server 127.0.0.1:$o2; keepalive 256; }
  $5
  server {
    listen 127.0.0.1:$2 reuseport backlog=4096;
    location / {
      $4
      proxy_pass http://\$backend;
      $NGINX_PROXY_HEADERS
      proxy_set_header X-Request-Id \$request_id;
      add_header x-request-id \$request_id;
      add_header x-canary-group \$backend;
    }
  }
}
NGINX
}
nginx_proxy() {  # nginx_proxy NAME PORT WORKERS ROUTING_BLOCK HTTP_EXTRA: writes and starts
  nginx_conf "$@"
  nginx -q -p "$dir/$1" -c "$dir/$1/nginx.conf"
}

MAP_HTTP=$(nginx_map_http "$dir/vips.map")
LUA_HTTP='
  init_by_lua_block {
    VIPS = {}
    for line in io.lines("'"$dir"'/vips.txt") do VIPS[line] = true end
  }'
LUA_ROUTE='set $backend stable;
      access_by_lua_block {
        local qa = ngx.var.http_x_canary_group
        if qa == "stable" or qa == "canary" then ngx.var.backend = qa return end
        local user = ngx.var.cookie_canary_user
        if not user or user == "" then return end
        if VIPS[user] then return end
        if ngx.crc32_short("loadtest:" .. user) % 100 < 10 then ngx.var.backend = "canary" end
      }'

# The seed's recipe: the QA header, then Redis for the VIP list, then the 10% (same hash as the
# OpenResty target). One pooled connection per worker and request, RESP written by hand.
SEED_ROUTE='set $backend stable;
      access_by_lua_block {
        local qa = ngx.var.http_x_canary_group
        if qa == "stable" or qa == "canary" then ngx.var.backend = qa return end
        local user = ngx.var.cookie_canary_user
        if not user or user == "" then return end
        local sock = ngx.socket.tcp()
        sock:settimeout(1000)
        local ok = sock:connect("127.0.0.1", '"$rport"')
        if not ok then return end
        local key = "canary:users:vip"
        sock:send("*3\r\n$9\r\nSISMEMBER\r\n$" .. #key .. "\r\n" .. key .. "\r\n$" .. #user .. "\r\n" .. user .. "\r\n")
        local line = sock:receive("*l")
        sock:setkeepalive(10000, 64)
        if line == ":1" then return end
        if ngx.crc32_short("loadtest:" .. user) % 100 < 10 then ngx.var.backend = "canary" end
      }'
PLAIN_ROUTE='set $backend stable;'

# --- HAProxy ------------------------------------------------------------------------------
haproxy_proxy() {  # haproxy_proxy NAME PORT THREADS CPUS: writes, starts and pins one process
  mkdir -p "$dir/$1"
  write_haproxy_config "$dir/$1" "$3" "$4" "$dir/vips.txt" "$o1" "$o2" "bind 127.0.0.1:$2"
  haproxy -q -f "$dir/$1/haproxy.cfg"
}

pin_nginx() {  # pin_nginx NAME CPUS: pins the master's workers (waits for the pid file)
  local pidfile=$dir/$1/nginx.pid
  for _ in $(seq 1 100); do [ -s "$pidfile" ] && break; sleep 0.05; done
  [ -s "$pidfile" ] || { echo "nginx $1 did not start: $(tail -3 "$dir/$1/error.log" 2>/dev/null)" >&2; return 1; }
  for _ in $(seq 1 100); do pgrep -P "$(cat "$pidfile")" >/dev/null && break; sleep 0.05; done
  for w in $(pgrep -P "$(cat "$pidfile")"); do taskset -pc "$2" "$w" >/dev/null; done
}

start_target() {  # start_target NAME WORKERS CPUSET -> prints port
  local name=$1 workers=$2 cpus=$3 port
  port=$(free_port)
  case $name in
    gateway*)
      local extra=""
      [ "$name" = gateway-observed ] && extra="  metrics: { listen: \"127.0.0.1:$(free_port)\" }
  access_log: { path: $dir/access.log }"
      gateway_config "$name" "$port" "$workers" "$dir/vips.txt" "$extra"
      RUST_LOG=warn taskset -c "$cpus" "$bin" -c "$dir/$name.yaml" >>"$dir/$name.log" 2>&1 &
      pids+=($!); echo $! >"$dir/$name.run.pid" ;;
    pingora-bare*)
      RUST_LOG=warn taskset -c "$cpus" "$bare" "127.0.0.1:$port" "127.0.0.1:$o1" >>"$dir/$name.log" 2>&1 &
      pids+=($!); echo $! >"$dir/$name.run.pid" ;;
    nginx-map*) nginx_proxy "$name" "$port" "$workers" "" "$MAP_HTTP"; pin_nginx "$name" "$cpus" ;;
    openresty*) nginx_proxy "$name" "$port" "$workers" "$LUA_ROUTE" "$LUA_HTTP"; pin_nginx "$name" "$cpus" ;;
    seed*) nginx_proxy "$name" "$port" "$workers" "$SEED_ROUTE" ""; pin_nginx "$name" "$cpus" ;;
    nginx-plain*) nginx_proxy "$name" "$port" "$workers" "$PLAIN_ROUTE" ""; pin_nginx "$name" "$cpus" ;;
    haproxy*) haproxy_proxy "$name" "$port" "$workers" "$cpus" ;;
  esac
  wait_port "$port" >/dev/null
  echo "$port"
}

stop_target() {  # stop_target NAME
  case $1 in
    gateway*|pingora-bare*) kill -INT "$(cat "$dir/$1.run.pid")" 2>/dev/null || true ;;
    haproxy*) kill "$(cat "$dir/$1/haproxy.pid")" 2>/dev/null || true ;;
    *) stop_nginx "$dir/$1/nginx.pid" ;;
  esac
  sleep 0.5
}

# Checks that a target routes like the others: VIP -> stable, QA header -> canary.
check_routing() {
  local port=$1 vip qa
  vip=$(curl -s --cookie canary_user=vip-10 "http://127.0.0.1:$port/")
  qa=$(curl -s -H 'x-canary-group: canary' "http://127.0.0.1:$port/")
  [ "$vip" = "This is version 1" ] && [ "$qa" = "This is version 2" ] || {
    echo "routing check failed on :$port (vip=$vip qa=$qa)" >&2; return 1; }
}

run_wrk() {  # run_wrk PORT WRKCPUS -> "rps p50_us p99_us errors non2xx requests"
  local out
  out=$(taskset -c "$2" wrk -t1 -c64 -d"${secs}s" --latency -s "$dir/rotate.lua" "http://127.0.0.1:$1/" 2>&1)
  local s rps non2xx
  s=$(grep '^SUMMARY' <<<"$out")
  rps=$(sed -n 's/^Requests\/sec:[[:space:]]*\([0-9.]*\).*/\1/p' <<<"$out")
  non2xx=$(sed -n 's/.*Non-2xx or 3xx responses: \([0-9]*\).*/\1/p' <<<"$out"); non2xx=${non2xx:-0}
  local g; g() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$s"; }
  echo "$rps $(g p50_us) $(g p99_us) $(( $(g connect) + $(g read) + $(g write) + $(g timeout) )) $non2xx $(g requests)"
}

target_pids() {  # target_pids NAME: the processes that serve a target (nginx: master and workers)
  case $1 in
    gateway*|pingora-bare*) cat "$dir/$1.run.pid" ;;
    # The seed's recipe works in Redis too: its CPU time counts.
    haproxy*) cat "$dir/$1/haproxy.pid" ;;
    seed*) local master; master=$(cat "$dir/$1/nginx.pid"); echo "$master" $(pgrep -P "$master") "$(cat "$dir/redis.pid")" ;;
    *) local master; master=$(cat "$dir/$1/nginx.pid"); echo "$master" $(pgrep -P "$master") ;;
  esac
}

# measure NAME PORT WRKCPUS: one wrk run with the CPU time the target's processes spent on it
# (utime + stime from /proc/PID/stat): "rps p50 p99 errors non2xx cpu_us_per_request".
measure() {
  local pids before after out
  pids=$(target_pids "$1")
  before=$(cpu_ticks $pids)
  out=$(run_wrk "$2" "$3")
  after=$(cpu_ticks $pids)
  read -r rps p50 p99 err non requests <<<"$out"
  echo "$rps $p50 $p99 $err $non $(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$requests" 'BEGIN{printf "%.1f", (n > 0 ? t / hz * 1e6 / n : 0)}')"
}

declare -A rps_sum rps_list p50_list p99_list err_sum cpu_list
record() {  # record NAME "rps p50 p99 err non2xx cpu_us_per_request"
  read -r rps p50 p99 err non cpu <<<"$2"
  rps_sum[$1]=$(awk "BEGIN{print ${rps_sum[$1]:-0} + $rps}")
  rps_list[$1]="${rps_list[$1]:-} $rps"
  p50_list[$1]="${p50_list[$1]:-} $p50"; p99_list[$1]="${p99_list[$1]:-} $p99"
  cpu_list[$1]="${cpu_list[$1]:-} ${cpu:-0}"
  err_sum[$1]=$(( ${err_sum[$1]:-0} + err + non ))
  printf "  %-18s %10.0f req/s  p50 %6.0f us  p99 %6.0f us  CPU %6.1f us/req  errors %d\n" "$1" "$rps" "$p50" "$p99" "${cpu:-0}" $((err + non))
}

pin_nginx origins 0
echo "machine: $(nproc) cores, $(uname -r); wrk -t1 -c64, ${secs}s per run, $rounds rounds"
targets=(gateway pingora-bare nginx-plain seed haproxy nginx-map openresty)
for round in $(seq 1 "$rounds"); do
  echo "round $round"
  for t in "${targets[@]}"; do
    port=$(start_target "$t" 1 1)
    case $t in pingora-bare|nginx-plain) ;; *) check_routing "$port" ;; esac
    taskset -c 0 wrk -t1 -c64 -d2s -s "$dir/rotate.lua" "http://127.0.0.1:$port/" >/dev/null 2>&1  # warm-up
    record "$t" "$(measure "$t" "$port" 0)"
    stop_target "$t"
  done
done

summary() {  # summary TITLE ROUNDS names... (medians over rounds: the machine is shared and noisy)
  local title=$1; shift 2
  echo; echo "$title"
  printf "  %-18s %12s %10s %10s %12s %8s %10s\n" target "req/s" "p50 us" "p99 us" "CPU us/req" errors "vs last"
  local base; base=$(median "${rps_list[${@: -1}]}")  # the last target listed
  for t in "$@"; do
    local avg; avg=$(median "${rps_list[$t]}")
    printf "  %-18s %12.0f %10s %10s %12s %8d %10.2fx\n" "$t" "$avg" "$(median "${p50_list[$t]}")" "$(median "${p99_list[$t]}")" "$(median "${cpu_list[$t]}")" "${err_sum[$t]}" "$(awk "BEGIN{print $avg / $base}")"
  done
}
summary "1 worker each (medians over $rounds rounds):" "$rounds" gateway pingora-bare nginx-plain seed haproxy nginx-map openresty

# Threads sweep: the gateway's CPU per request at 1 and 2 threads, alternating, same run. With
# 2 threads the proxy uses both cores (wrk and the origins share them), so compare CPU us per
# request, not req/s.
echo; echo "threads sweep (gateway, $rounds alternating rounds${COMPARE_BIN:+; also $COMPARE_BIN as gateway-cmp}):"
sweep=(gateway); [ -n "${COMPARE_BIN:-}" ] && sweep+=(gateway-cmp)
for round in $(seq 1 "$rounds"); do
  for g in "${sweep[@]}"; do
    for w in 1 2; do
      cpus=1; [ "$w" = 2 ] && cpus=0-1
      saved=$bin; [ "$g" = gateway-cmp ] && bin=$COMPARE_BIN
      port=$(start_target "$g-t$w" "$w" "$cpus")
      bin=$saved
      taskset -c 0 wrk -t1 -c64 -d2s -s "$dir/rotate.lua" "http://127.0.0.1:$port/" >/dev/null 2>&1
      record "$g-t$w" "$(measure "$g-t$w" "$port" 0)"
      stop_target "$g-t$w"
    done
  done
done
for g in "${sweep[@]}"; do
  summary "threads sweep, $g (medians):" "$rounds" "$g-t2" "$g-t1"
  t1=$(median "${cpu_list[$g-t1]}"); t2=$(median "${cpu_list[$g-t2]}")
  echo "  CPU us per request, 2 threads / 1 thread: $(awk "BEGIN{printf \"%.2f\", $t2 / $t1}") (target <= 1.10)"
done

# Instructions per request, counted by callgrind: unlike req/s this does not depend on what
# else the shared machine is doing, so it shows small changes and where the time goes. It
# counts user space only; the kernel's share (about half of the CPU, see docs/performance.md) is alike
# for all three.
instructions() {  # instructions NAME PORT CMD...: prints NAME, requests, instructions/request, file
  count_instructions "$dir" "$@"
}
echo; echo "instructions per request (callgrind, user space, 8 s of wrk -c16 after a 2 s warm-up):"
port=$(free_port); gateway_config gateway-cg "$port" 1 "$dir/vips.txt" ""
read -r _ n_gw ir_gw cg_gw < <(instructions gateway "$port" "$bin" -c "$dir/gateway-cg.yaml")
port=$(free_port)
read -r _ n_bare ir_bare _ < <(instructions pingora-bare "$port" "$bare" "127.0.0.1:$port" "127.0.0.1:$o1")
# The same with the gateway's default upstream timeouts on the peer (connect 2 s, read, write
# and idle 60 s): what Pingora charges for them (a timer per upstream read, an idle timer per
# pooled connection) is part of its floor for a proxy that has them, not of the hooks.
port=$(free_port)
read -r _ n_baret ir_baret _ < <(instructions pingora-bare-timeouts "$port" "$bare" "127.0.0.1:$port" "127.0.0.1:$o1" --timeouts)
port=$(free_port); nginx_conf openresty-cg "$port" 1 "$LUA_ROUTE" "$LUA_HTTP" "daemon off; master_process off;"
read -r _ n_or ir_or _ < <(instructions openresty "$port" nginx -p "$dir/openresty-cg" -c "$dir/openresty-cg/nginx.conf")
printf "  %-22s %8s %10s %12s\n" target requests "Ir/req" "vs openresty"
for row in "gateway $n_gw $ir_gw" "pingora-bare $n_bare $ir_bare" "pingora-bare-timeouts $n_baret $ir_baret" "openresty $n_or $ir_or"; do
  read -r t n ir <<<"$row"
  printf "  %-22s %8d %10d %11.2fx\n" "$t" "$n" "$ir" "$(awk "BEGIN{print $ir / $ir_or}")"
done
echo "  gateway / pingora-bare: $(awk "BEGIN{printf \"%.3f\", $ir_gw / $ir_bare}"); gateway / pingora-bare-timeouts: $(awk "BEGIN{printf \"%.3f\", $ir_gw / $ir_baret}") (target <= 1.15)"
echo "  where the gateway's instructions go (per request; inclusive, so a row contains the rows it calls):"
callgrind_annotate --inclusive=yes --threshold=100 "$cg_gw" 2>/dev/null | awk -v n="$n_gw" '
  { name = $0; sub(/^.*\?\?\?:/, "", name); sub(/ \[.*$/, "", name); sub(/^.*\.S:/, "", name) }
  name ~ /CanaryProxy as pingora_proxy::proxy_trait::ProxyHttp>::[a-z_]+::\{\{closure\}\}$/ ||
  name ~ /GuardedStream as tokio::io::async_read::AsyncRead>::poll_read$/ ||
  name ~ /^(pingora_http::insert_header_value|__memcpy_avx_unaligned_erms|mi_free|mi_malloc_aligned)$/ ||
  name ~ /^canary_gateway::proxy::(forwarding::set_forwarding_headers|set_response_headers)$/ ||
  name ~ /Connector<C>::(get|release)_http_session::\{\{closure\}\}$/ ||
  name ~ /HttpSession::read_request::\{\{closure\}\}$/ || name ~ /read_resp_header_parts::\{\{closure\}\}$/ ||
  name ~ /pingora_timeout::timer::TimerManager::register_timer$/ {
    gsub(",", "", $1); sub(/<canary_gateway::proxy::CanaryProxy as pingora_proxy::proxy_trait::ProxyHttp>::/, "hook ", name)
    printf "    %8d  %s\n", $1 / n, name }' | head -20

echo; echo "2 workers each (no pinning, 1 round):"
for t in gateway seed haproxy nginx-map openresty; do
  port=$(start_target "$t" 2 0-1)
  taskset -c 0-1 wrk -t1 -c64 -d2s -s "$dir/rotate.lua" "http://127.0.0.1:$port/" >/dev/null 2>&1
  record "$t-2w" "$(measure "$t" "$port" 0-1)"
  stop_target "$t"
done
summary "2 workers each:" 1 gateway-2w seed-2w haproxy-2w nginx-map-2w openresty-2w

echo; echo "cost of metrics + access log (gateway, 1 worker, alternating over $rounds rounds):"
for round in $(seq 1 "$rounds"); do
  port=$(start_target gateway-observed 1 1)
  record gateway-observed "$(measure gateway-observed "$port" 0)"
  stop_target gateway-observed
  port=$(start_target gateway 1 1)
  record gateway-plain "$(measure gateway "$port" 0)"
  stop_target gateway
done
echo "  access log lines (all rounds): $(wc -l <"$dir/access.log")"
echo "  ratio observed / plain (medians): $(awk "BEGIN{printf \"%.3f\", $(median "${rps_list[gateway-observed]}") / $(median "${rps_list[gateway-plain]}")}")"

echo; echo "memory (gateway, 1 worker):"
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
port=$(start_target gateway 1 1); pid=$(cat "$dir/gateway.run.pid")
sleep 1; echo "  idle RSS, 100k-id VIP list:            $(rss "$pid") kB"
python3 - "$port" <<'PY' &
import socket, sys, time
port = int(sys.argv[1]); conns = []
for i in range(10000):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nCookie: canary_user=user-%d\r\n\r\n" % i)
    conns.append(s)
ok = 0
for s in conns:
    s.settimeout(10)
    if s.recv(4096).startswith(b"HTTP/1.1 200"): ok += 1
print(f"  idle keep-alive connections held:       {ok} of 10000", flush=True)
time.sleep(4)
PY
holder=$!
sleep 3
wait_for_conns() { for _ in $(seq 1 100); do [ "$(ls /proc/"$pid"/fd | wc -l)" -gt 10000 ] && return 0; sleep 0.1; done; }
wait_for_conns
echo "  RSS with 10,000 idle keep-alive conns:  $(rss "$pid") kB"
wait "$holder" || true
stop_target gateway
python3 - "$dir/million.txt" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    for i in range(1_000_000):
        f.write(f"customer-{i:07d}\n")
PY
gateway_config gateway-million "$(free_port)" 1 "$dir/million.txt" ""
port=$(sed -n 's/.*listen: \["127.0.0.1:\([0-9]*\)"\].*/\1/p' "$dir/gateway-million.yaml")
start=$(date +%s%N)
RUST_LOG=warn "$bin" -c "$dir/gateway-million.yaml" >>"$dir/gateway-million.log" 2>&1 &
pids+=($!); mpid=$!
wait_port "$port"
echo "  start to listening, 1,000,000-id list:  $(( ($(date +%s%N) - start) / 1000000 )) ms"
taskset -c 0 wrk -t1 -c64 -d3s -s "$dir/rotate.lua" "http://127.0.0.1:$port/" >/dev/null 2>&1
echo "  RSS with a 1,000,000-id list (after load): $(rss "$mpid") kB"
kill -INT "$mpid"
