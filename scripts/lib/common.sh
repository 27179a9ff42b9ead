# Shared helpers for the load-test scripts (sourced, not run). Everything listens on 127.0.0.1.

# A port nothing listens on right now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Waits (bounded, 20 s) until something accepts on 127.0.0.1:$1.
wait_port() {
  for _ in $(seq 1 400); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listening on 127.0.0.1:$1" >&2
  return 1
}

# start_nginx_origins DIR PORT1 PORT2: two fast origins (nginx `return 200`), 1 worker.
start_nginx_origins() {
  local dir=$1 p1=$2 p2=$3
  mkdir -p "$dir/origins"
  cat >"$dir/origins/nginx.conf" <<NGINX
worker_processes 1;
daemon on;
pid $dir/origins/nginx.pid;
error_log $dir/origins/error.log warn;
events { worker_connections 20000; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$p1 reuseport backlog=4096; location / { return 200 "This is version 1\n"; } }
  server { listen 127.0.0.1:$p2 reuseport backlog=4096; location / { return 200 "This is version 2\n"; } }
}
NGINX
  nginx -q -p "$dir/origins" -c "$dir/origins/nginx.conf"
  wait_port "$p1" && wait_port "$p2"
}

# The headers nginx sets when it proxies as the gateway does (inside a `location`).
NGINX_PROXY_HEADERS='proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;'

# start_pinned_nginx DIR PORT: nginx with 1 worker pinned to CPU 1, from DIR/nginx.conf made
# of the shared head and the `http { }` body read from stdin; waits until PORT accepts and
# prints the worker's pid.
start_pinned_nginx() {
  start_nginx_on_cpus 10 "$@"
}

# start_nginx_on_cpus MASK DIR PORT: start_pinned_nginx with the worker on the CPUs of MASK
# (nginx's worker_cpu_affinity: 01 is CPU 0, 10 is CPU 1).
start_nginx_on_cpus() {
  local mask=$1 dir=$2 port=$3
  mkdir -p "$dir"
  {
    cat <<NGINX
worker_processes 1;
worker_cpu_affinity $mask;
daemon on;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 20000; }
NGINX
    echo "http {"
    cat
    echo "}"
  } >"$dir/nginx.conf"
  nginx -q -p "$dir" -c "$dir/nginx.conf"
  wait_port "$port" >/dev/null
  pgrep -P "$(cat "$dir/nginx.pid")" | head -1
}

# write_bench_certificate DIR: an ECDSA P-256 certificate for bench.test, made for this run
# (never kept), as DIR/bench.pem and DIR/bench.key.
write_bench_certificate() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
    -keyout "$1/bench.key" -out "$1/bench.pem" 2>/dev/null
}

stop_nginx() {  # stop_nginx PIDFILE
  [ -f "$1" ] && kill "$(cat "$1")" 2>/dev/null || true
}

# write_wrk_script FILE USERS VIP_EVERY: a wrk Lua script that rotates the canary_user cookie
# over USERS ids; every VIP_EVERY-th id is a VIP ("vip-N"), the others "user-N".
write_wrk_script() {
  cat >"$1" <<LUA
local users = {}
for i = 1, $2 do
  if i % $3 == 0 then users[i] = "vip-" .. i else users[i] = "user-" .. i end
end
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/", { ["Cookie"] = "theme=dark; canary_user=" .. users[(n % #users) + 1] })
end
done = function(summary, latency, requests)
  io.write(string.format("SUMMARY requests=%d duration_us=%d non2xx=%d connect=%d read=%d write=%d timeout=%d status=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, 0, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, summary.errors.status,
    latency:percentile(50), latency:percentile(99)))
end
LUA
}

# write_vip_file FILE COUNT: vip-10, vip-20, ... (COUNT ids), matching write_wrk_script's VIPs
# with VIP_EVERY=10, padded with ids no request uses.
write_vip_file() {
  python3 - "$1" "$2" <<'PY'
import sys
path, count = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    for i in range(1, count + 1):
        f.write(f"vip-{i * 10}\n")
PY
}

# write_gateway_config BASE PORT THREADS USERS_FILE ORIGIN1 ORIGIN2 [EXTRA]: the load tests'
# gateway config at BASE.yaml (pid file and upgrade socket beside it): stable and canary on the
# two origins, the QA header, a VIP list from USERS_FILE and a 10% rollout; EXTRA is appended to
# the gateway section.
write_gateway_config() {
  cat >"$1.yaml" <<YAML
version: 1
threads: $3
work_stealing: false
upstream_keepalive_pool_size: 256
pid_file: $1.pid
upgrade_sock: $1.upgrade.sock
gateway:
  listen: ["127.0.0.1:$2"]
  groups:
    stable: { servers: ["127.0.0.1:$5"], health_check: { type: tcp, interval: 5s } }
    canary: { servers: ["127.0.0.1:$6"], health_check: { type: tcp, interval: 5s } }
  routing:
    cookie: canary_user
    default: stable
    rules:
      - name: qa
        header: x-canary-group
      - name: vip
        users_file: $4
        group: stable
      - name: rollout
        percent: 10
        seed: loadtest
        group: canary
${7:-}
YAML
}

# count_instructions DIR NAME PORT CMD...: runs CMD under callgrind, warms it with 2 s of wrk,
# then counts 8 s of wrk -c16 driven by DIR/rotate.lua on 127.0.0.1:PORT. Prints NAME, the
# requests, the user-space instructions per request and the callgrind file.
# With COUNT_INSTRUCTIONS_BEFORE set, that command is run with NAME and PORT once CMD listens,
# before the warm-up (e.g. to fill a cache deterministically); with COUNT_INSTRUCTIONS_AFTER,
# with NAME after the counted run (and its dump), before CMD stops (e.g. to read metrics).
# Their output is not printed.
count_instructions() {
  local dir=$1 name=$2 port=$3; shift 3
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.$name.%p" "$@" \
    >"$dir/$name.callgrind.log" 2>&1 &
  local vpid=$!
  wait_port "$port" >/dev/null
  if [ -n "${COUNT_INSTRUCTIONS_BEFORE:-}" ]; then "$COUNT_INSTRUCTIONS_BEFORE" "$name" "$port" >/dev/null 2>&1 || echo "count_instructions: $COUNT_INSTRUCTIONS_BEFORE $name failed" >&2; fi
  taskset -c 0 wrk -t1 -c16 -d2s -s "$dir/rotate.lua" "http://127.0.0.1:$port/" >/dev/null 2>&1
  callgrind_control -z "$vpid" >/dev/null 2>&1
  local n total
  n=$(taskset -c 0 wrk -t1 -c16 -d8s -s "$dir/rotate.lua" "http://127.0.0.1:$port/" | awk '/requests in/ {print $1}')
  callgrind_control -d "$vpid" >/dev/null 2>&1
  if [ -n "${COUNT_INSTRUCTIONS_AFTER:-}" ]; then "$COUNT_INSTRUCTIONS_AFTER" "$name" >/dev/null 2>&1 || true; fi
  kill -INT "$vpid"; wait "$vpid" 2>/dev/null || true
  total=$(callgrind_annotate "$dir/callgrind.$name.$vpid.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  echo "$name $n $((total / n)) $dir/callgrind.$name.$vpid.1"
}

# cpu_ticks PID...: user + system CPU time of the processes, in clock ticks (getconf CLK_TCK
# per second), from /proc/PID/stat (fields 14 and 15, counted after the command name).
cpu_ticks() {
  local total=0 pid stat
  for pid in "$@"; do
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    stat=${stat##*) }
    # After ") ": state is field 3, so utime and stime are the 12th and 13th words here.
    total=$(( total + $(awk '{print $12 + $13}' <<<"$stat") ))
  done
  echo "$total"
}

# median "V1 V2 ...": the median of the numbers (the upper one of the middle two for an even count).
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }

# write_haproxy_config DIR THREADS CPUS VIPS_FILE ORIGIN1 ORIGIN2 BIND_LINE...: DIR/haproxy.cfg,
# HAProxy doing the load tests' routing: the QA header, then the VIP list (exact match against
# a pattern file, which HAProxy indexes), then 10% of the other users by a hash of the cookie;
# no cookie -> stable. Forwarding headers as nginx sets them, a request id per request, one
# process (pid in DIR/haproxy.pid) with THREADS threads on CPUS. Each BIND_LINE is a frontend
# `bind` line, e.g. "bind 127.0.0.1:8443 ssl crt DIR/bench.both.pem alpn h2,http/1.1".
write_haproxy_config() {
  local dir=$1 threads=$2 cpus=$3 vips=$4 o1=$5 o2=$6; shift 6
  {
    cat <<HAPROXY
global
  nbthread $threads
  cpu-map auto:1/1-$threads $cpus
  maxconn ${HAPROXY_MAXCONN:-9000}
  pidfile $dir/haproxy.pid
  daemon
  tune.ssl.default-dh-param 2048
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 75s
  option http-keep-alive
  http-reuse always
frontend edge
HAPROXY
    local line
    for line in "$@"; do echo "  $line"; done
    cat <<HAPROXY
  unique-id-format %{+X}o%[rand,hex]%[rand,hex]
  http-request set-header X-Request-Id %[unique-id]
  option forwardfor
  http-request set-header X-Real-IP %[src]
  http-request set-header X-Forwarded-Proto https if { ssl_fc }
  http-request set-header X-Forwarded-Proto http if !{ ssl_fc }
  http-request set-var(txn.qa) req.hdr(x-canary-group)
  http-request set-var(txn.bucket) req.cook(canary_user),crc32(1),mod(100) if { req.cook(canary_user) -m len gt 0 }
  use_backend stable if { var(txn.qa) -m str stable }
  use_backend canary if { var(txn.qa) -m str canary }
  use_backend stable if { req.cook(canary_user) -m str -f $vips }
  use_backend canary if { var(txn.bucket) -m int lt 10 }
  default_backend stable
  http-response set-header x-request-id %[unique-id]
backend stable
  http-response set-header x-canary-group stable
  server s1 127.0.0.1:$o1
backend canary
  http-response set-header x-canary-group canary
  server c1 127.0.0.1:$o2
HAPROXY
  } >"$dir/haproxy.cfg"
}

# nginx_map_http VIPS_MAP: the `http { }` lines that give nginx the load tests' routing in
# $backend: the QA header, then the VIP list (VIPS_MAP: "vip-10 1;" per line), then 10% of the
# other users (split_clients on the cookie); no cookie -> stable.
nginx_map_http() {
  cat <<NGINX
map_hash_max_size 262144;
  map_hash_bucket_size 64;
  map \$cookie_canary_user \$is_vip { default 0; include $1; }
  split_clients "loadtest:\${cookie_canary_user}" \$rollout { 10% canary; * stable; }
  map "\$http_x_canary_group|\$is_vip|\$cookie_canary_user" \$backend {
    default \$rollout;
    "~^stable\|" stable;
    "~^canary\|" canary;
    "~^\|1\|" stable;
    "~^\|0\|\$" stable;
  }
NGINX
}
