#!/usr/bin/env bash
# Figures for the Redis store: load time and RSS with a 1,000,000-member set, and how long a
# change made through one node's admin API takes to reach a second node.
# Starts its own redis-server and two gateway nodes on 127.0.0.1; stops them when done.
# Usage: scripts/store-figures.sh [MEMBERS (1000000)]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh
members=${1:-1000000}
bash scripts/setup.sh test
command -v redis-cli >/dev/null || { echo "redis-cli missing (package redis-tools)" >&2; exit 1; }
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/canary-gateway

dir=$(mktemp -d /tmp/canary-store.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" >/dev/null 2>&1 &
pids+=($!)
wait_port "$rport"
python3 - "$members" <<'PY' | redis-cli -p "$rport" --pipe >/dev/null
import sys
n = int(sys.argv[1])
out = sys.stdout.buffer
batch = []
def flush():
    args = [b"SADD", b"fig:users:vip"] + batch
    out.write(b"*%d\r\n" % len(args))
    for a in args:
        out.write(b"$%d\r\n%s\r\n" % (len(a), a))
    batch.clear()
for i in range(n):
    batch.append(b"customer-%07d" % i)
    if len(batch) == 10000:
        flush()
if batch:
    flush()
PY
echo "redis set fig:users:vip: $(redis-cli -p "$rport" SCARD fig:users:vip) members"

token=figures-token-0123456789
node() {  # node NAME -> starts a gateway node, prints "port admin pid"
  local port admin o
  port=$(free_port); admin=$(free_port); o=$(free_port)
  cat >"$dir/$1.yaml" <<YAML
version: 1
threads: 1
pid_file: $dir/$1.pid
upgrade_sock: $dir/$1.sock
gateway:
  listen: ["127.0.0.1:$port"]
  groups:
    stable: { servers: ["127.0.0.1:$o"], health_check: { type: none } }
    canary: { servers: ["127.0.0.1:$o"], health_check: { type: none } }
  routing:
    default: stable
    rules:
      - name: vip
        users_store: vip
        group: canary
  store: { redis: "redis://127.0.0.1:$rport/0", prefix: "fig:", timeout: 10s }
  admin: { listen: "127.0.0.1:$admin", token: "$token" }
  demo_origins: [ { listen: "127.0.0.1:$o", body: "origin" } ]
YAML
  RUST_LOG=info "$bin" -c "$dir/$1.yaml" >"$dir/$1.log" 2>&1 &
  pids+=($!)
  echo "$port $admin $!"
}
status() { curl -s -H "Authorization: Bearer $token" "http://127.0.0.1:$1/status"; }
loaded() { status "$1" | python3 -c 'import json,sys; s=json.load(sys.stdin)["store"]["sets"][0]; print(s["members"] if s["loaded"] else 0)' 2>/dev/null || echo 0; }

start=$(date +%s%N)
read -r port_a admin_a pid_a < <(node a)
wait_port "$admin_a"
for _ in $(seq 1 600); do [ "$(loaded "$admin_a")" -ge "$members" ] && break; sleep 0.05; done
echo "node start to $(loaded "$admin_a") members loaded: $(( ($(date +%s%N) - start) / 1000000 )) ms"
grep "store: loaded set" "$dir/a.log" | sed 's/.*store: /  log: /'
sleep 1
echo "RSS of the node with the set loaded: $(awk '/VmRSS/ {print $2}' "/proc/$pid_a/status") kB"

read -r port_b admin_b pid_b < <(node b)
wait_port "$admin_b"
for _ in $(seq 1 600); do [ "$(loaded "$admin_b")" -ge "$members" ] && break; sleep 0.05; done
# Alternately adds a new user and removes an existing member, each timed until node b routes
# that user accordingly (VIPs go to canary, everyone else to stable).
lat=()
for i in $(seq 1 20); do
  if [ $((i % 2)) -eq 1 ]; then
    user=new-user-$i; change="{\"add\": [\"$user\"]}"; want=canary
  else
    user=$(printf 'customer-%07d' "$i"); change="{\"remove\": [\"$user\"]}"; want=stable
  fi
  t0=$(date +%s%N)
  curl -s -o /dev/null -H "Authorization: Bearer $token" -X POST -d "$change" "http://127.0.0.1:$admin_a/rules/vip/users"
  for _ in $(seq 1 2000); do
    curl -s -D - -o /dev/null --cookie "canary_user=$user" "http://127.0.0.1:$port_b/" | grep -qi "^x-canary-group: $want" && break
  done
  lat+=($(( ($(date +%s%N) - t0) / 1000000 )))
done
sorted=$(printf '%s\n' "${lat[@]}" | sort -n)
echo "propagation node a -> node b over 20 changes, 10 adds and 10 removes (ms, includes the admin call and polling): min $(head -1 <<<"$sorted"), median $(sed -n 10p <<<"$sorted"), max $(tail -1 <<<"$sorted")"
