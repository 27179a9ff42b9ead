#!/usr/bin/env bash
# Response compression side by side (issue 26): canary-gateway with `compress` beside nginx
# `gzip on` at the same level, proxying the same ~20 KB HTML page from the same origin, in one
# run, alternating targets.
#
#   gw_off     gateway, no `compress`                  wrk -H 'Accept-Encoding: gzip'
#   gw_gzip    gateway, compress [gzip] level 6        wrk -H 'Accept-Encoding: gzip'
#   gw_br      gateway, compress [br] level 6          wrk -H 'Accept-Encoding: br'
#   nx_off     nginx proxy_pass, gzip off              wrk -H 'Accept-Encoding: gzip'
#   nx_gzip    nginx proxy_pass, gzip on, level 6      wrk -H 'Accept-Encoding: gzip'
#
# (Debian's nginx has no brotli module, so br has no nginx target; with one installed, add it.)
# Every proxy: 1 worker (gateway threads: 1, nginx worker_processes 1) pinned to CPU 1; wrk
# (1 thread, 16 keep-alive connections) and the origin (nginx, 1 worker, serving the page as a
# static file with Content-Length) share CPU 0. CPU µs per request = the proxy's utime+stime
# over the run (from /proc/PID/stat) / requests. Bytes per response: one curl request per
# target with the same Accept-Encoding (body bytes as sent, header bytes).
#
# Usage: [BIN=canary-gateway binary] [LEVEL=1..9 (6)] scripts/compress-loadtest.sh [SECONDS per run (10)] [ROUNDS (3)]
# Without BIN it builds the release binary. Traffic goes to 127.0.0.1 only; everything it starts
# is stopped when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh
secs=${1:-10}
rounds=${2:-3}
level=${LEVEL:-6}
bash scripts/setup.sh loadtest
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/canary-gateway
fi
ulimit -n 65536 2>/dev/null || true

dir=$(mktemp -d /tmp/canary-compress.XXXXXX)
chmod 755 "$dir"  # the origin's worker (another user) reads $dir/origin/www
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in "$dir"/*/nginx.pid; do stop_nginx "$f"; done
}
trap cleanup EXIT

# The page: about 20 KB of HTML, the same every run (a catalogue list with some repetition, as
# a real page has; the same shape as tests/compression.rs's page).
mkdir -p "$dir/origin/www"
python3 - "$dir/origin/www/page.html" <<'PY'
import sys
parts = ["<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Catalogue</title>\n"
         "<link rel=\"stylesheet\" href=\"/static/site.css\"></head><body>\n"
         "<header><nav><a href=\"/\">Home</a> <a href=\"/items\">Items</a> <a href=\"/about\">About</a></nav></header>\n"
         "<main><h1>Catalogue</h1><ul class=\"items\">\n"]
words = ["red", "blue", "steel", "oak", "linen", "small", "large", "classic", "travel", "garden"]
size = sum(len(p) for p in parts)
i = 0
while size < 20_000:
    line = (f"<li class=\"item\" data-id=\"{i}\"><a href=\"/items/{i}\">{words[i % 10].title()} "
            f"{words[(i * 7) % 10]} item {i}</a> <span class=\"price\">{(i * 7919) % 1000}.{(i * 31) % 100:02d}</span></li>\n")
    parts.append(line)
    size += len(line)
    i += 1
parts.append("</ul></main><footer><p>&copy; Example shop</p></footer></body></html>\n")
with open(sys.argv[1], "w") as f:
    f.write("".join(parts))
PY
page_bytes=$(stat -c %s "$dir/origin/www/page.html")

# The origin: nginx, 1 worker on CPU 0, the page as a static file (text/html, Content-Length).
origin=$(free_port)
start_nginx_on_cpus 01 "$dir/origin" "$origin" >/dev/null <<NGINX
  access_log off;
  keepalive_requests 1000000;
  open_file_cache max=16;
  default_type text/html;
  server {
    listen 127.0.0.1:$origin reuseport backlog=4096;
    root $dir/origin/www;
  }
NGINX

# start_gateway NAME [COMPRESS]: a gateway (threads: 1) pinned to CPU 1, with COMPRESS as its
# `gateway.compress` (none: no compression); sets port_NAME and pid_NAME.
start_gateway() {
  local name=$1 compress=${2:-} port
  port=$(free_port)
  cat >"$dir/$name.yaml" <<YAML
version: 1
threads: 1
upstream_keepalive_pool_size: 256
pid_file: $dir/$name.pid
upgrade_sock: $dir/$name.upgrade.sock
gateway:
  listen: ["127.0.0.1:$port"]
  groups:
    stable: { servers: ["127.0.0.1:$origin"], health_check: { type: tcp, interval: 5s } }
  routing:
    cookie: canary_user
    default: stable
${compress:+  compress: $compress}
YAML
  RUST_LOG=warn taskset -c 1 "$BIN" -c "$dir/$name.yaml" >"$dir/$name.log" 2>&1 &
  pids+=("$!")
  printf -v "pid_$name" '%s' "$!"
  printf -v "port_$name" '%s' "$port"
  wait_port "$port" >/dev/null
}
start_gateway gw_off
start_gateway gw_gzip "{ algorithms: [gzip], level: $level }"
start_gateway gw_br "{ algorithms: [br], level: $level }"

# start_nginx NAME GZIP: nginx (1 worker on CPU 1) proxying to the origin, GZIP the directives
# of its compression; sets port_NAME and pid_NAME.
start_nginx() {
  local name=$1 gzip=$2 port pid
  port=$(free_port)
  pid=$(start_pinned_nginx "$dir/$name" "$port" <<NGINX
  access_log off;
  keepalive_requests 1000000;
  upstream stable { server 127.0.0.1:$origin; keepalive 256; }
  $gzip
  server {
    listen 127.0.0.1:$port reuseport backlog=4096;
    location / {
      proxy_pass http://stable;
      $NGINX_PROXY_HEADERS
    }
  }
NGINX
)
  printf -v "pid_$name" '%s' "$pid"
  printf -v "port_$name" '%s' "$port"
}
start_nginx nx_off "gzip off;"
# gzip_proxied any: nginx leaves proxied responses alone unless told (the gateway has no such
# switch); gzip_min_length 1024 is the gateway's `min_size: 1k`; text/html is always in
# gzip_types (naming it again only draws a warning).
start_nginx nx_gzip "gzip on; gzip_comp_level $level; gzip_proxied any; gzip_min_length 1024; gzip_vary on;"

# The targets, in the order they run; each one's Accept-Encoding, port and pid.
targets=(gw_off gw_gzip gw_br nx_off nx_gzip)
coding() { case $1 in *_br) echo br ;; *) echo gzip ;; esac; }
port_of() { local v="port_$1"; echo "${!v}"; }
pid_of() { local v="pid_$1"; echo "${!v}"; }

# What each sends for one request: Content-Encoding, body bytes, header bytes; and that the
# body decodes to the page.
echo
echo "page: $page_bytes bytes of HTML; level $level"
echo "target    accept  content-encoding  body_bytes  header_bytes  %of_page  decodes"
for t in "${targets[@]}"; do
  c=$(coding "$t"); p=$(port_of "$t")
  read -r body head < <(curl -s -o "$dir/$t.body" -D "$dir/$t.head" -H "Accept-Encoding: $c" \
    -w '%{size_download} %{size_header}\n' "http://127.0.0.1:$p/page.html")
  enc=$(awk -F': *' 'tolower($1)=="content-encoding" {gsub("\r", "", $2); print $2}' "$dir/$t.head")
  # curl --compressed decodes what it received (gzip and br); the same Accept-Encoding.
  decoded=$(curl -s --compressed -H "Accept-Encoding: $c" "http://127.0.0.1:$p/page.html" |
    cmp -s - "$dir/origin/www/page.html" && echo yes || echo NO)
  printf '%-9s %-7s %-17s %10d  %12d  %7.1f%%  %s\n' "$t" "$c" "${enc:-none}" "$body" "$head" \
    "$(awk -v b="$body" -v p="$page_bytes" 'BEGIN {print 100 * b / p}')" "$decoded"
done | tee "$dir/bytes.txt"

ticks_per_s=$(getconf CLK_TCK)
# run NAME: one wrk run against target NAME; prints "NAME requests req/s cpu_us_per_req errors".
run() {
  local name=$1 pid port c before after out n rps errors
  pid=$(pid_of "$name"); port=$(port_of "$name"); c=$(coding "$name")
  before=$(cpu_ticks "$pid")
  out=$(taskset -c 0 wrk -t1 -c16 -d"${secs}s" -H "Accept-Encoding: $c" "http://127.0.0.1:$port/page.html")
  after=$(cpu_ticks "$pid")
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  errors=$(awk '/Socket errors|Non-2xx/ {print}' <<<"$out" | tr '\n' ' ')
  rps=$((n / secs))
  local us=$(( (after - before) * 1000000 / ticks_per_s * 10 / (n > 0 ? n : 1) ))
  printf '%-9s %9d %8d %5d.%d %s\n' "$name" "$n" "$rps" $((us / 10)) $((us % 10)) "${errors:-}"
}

echo
echo "target     requests    req/s  cpu_us/req  errors   (${secs}s runs, ${rounds} rounds, alternating)"
for _ in $(seq 1 "$rounds"); do
  for t in "${targets[@]}"; do run "$t"; done
done | tee "$dir/results.txt"

echo
echo "mean of the rounds:"
awk '{rps[$1]+=$3; cpu[$1]+=$4; n[$1]++}
     END { for (t in rps) printf "  %-9s req/s %8.0f   cpu_us/req %6.1f\n", t, rps[t]/n[t], cpu[t]/n[t] }' \
  "$dir/results.txt" | sort
echo "files: $dir"
