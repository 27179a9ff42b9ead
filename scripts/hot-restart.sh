#!/usr/bin/env bash
# Hot restart (graceful upgrade) of a running canary-gateway with no refused connection:
#   1. start the new binary with -u: it waits on `upgrade_sock` for the listening sockets;
#   2. send SIGQUIT to the old process: it hands its sockets over, keeps serving for Pingora's
#      5 s close period, then drains the requests in flight and exits;
#   3. wait (bounded) for the old process to exit.
#
# Usage: scripts/hot-restart.sh -c CONFIG -p OLD_PID [-b BINARY] [-l LOG]
#   -c CONFIG  the config file (the new process reads it, so config changes apply too)
#   -p OLD_PID the running process (default: the pid in the config's pid_file)
#   -b BINARY  the new binary (default: target/release/canary-gateway, else canary-gateway on PATH)
#   -l LOG     run the new process in the foreground of this script's background, logging to LOG,
#              instead of as a daemon (-d); prints the new pid
set -euo pipefail

conf="" old_pid="" bin="" log=""
while getopts "c:p:b:l:" opt; do
  case $opt in
    c) conf=$OPTARG ;; p) old_pid=$OPTARG ;; b) bin=$OPTARG ;; l) log=$OPTARG ;;
    *) sed -n '2,16p' "$0" >&2; exit 2 ;;
  esac
done
[ -n "$conf" ] || { echo "hot-restart: -c CONFIG is required" >&2; exit 2; }
here=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "$bin" ]; then
  if [ -x "$here/target/release/canary-gateway" ]; then bin=$here/target/release/canary-gateway
  else bin=$(command -v canary-gateway) || { echo "hot-restart: no binary; pass -b" >&2; exit 2; }; fi
fi
key() { sed -n "s/^$1:[[:space:]]*\([^#[:space:]]*\).*/\1/p" "$conf" | head -n1; }
sock=$(key upgrade_sock); sock=${sock:-/tmp/pingora_upgrade.sock}
if [ -z "$old_pid" ]; then
  pid_file=$(key pid_file); pid_file=${pid_file:-/tmp/pingora.pid}
  old_pid=$(cat "$pid_file" 2>/dev/null) || { echo "hot-restart: no -p and no pid file $pid_file" >&2; exit 2; }
fi
kill -0 "$old_pid" 2>/dev/null || { echo "hot-restart: process $old_pid is not running" >&2; exit 1; }

# Refuse to hand over to a binary that cannot load the config.
"$bin" -t -c "$conf" >/dev/null

rm -f "$sock"
if [ -n "$log" ]; then
  "$bin" -u -c "$conf" >>"$log" 2>&1 &
  new_pid=$!
else
  "$bin" -u -d -c "$conf" &
  new_pid=$!
fi

# The new process creates the upgrade socket when it is ready to receive.
for _ in $(seq 1 200); do [ -S "$sock" ] && break; sleep 0.05; done
[ -S "$sock" ] || { echo "hot-restart: new process never opened $sock" >&2; kill "$new_pid" 2>/dev/null; exit 1; }
kill -QUIT "$old_pid"

# Pingora's close period (5 s) + the drain; bounded.
for _ in $(seq 1 600); do kill -0 "$old_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$old_pid" 2>/dev/null; then
  echo "hot-restart: old process $old_pid still running after 60 s" >&2; exit 1
fi
if [ -z "$log" ]; then
  # A daemon forks: its pid is the one it wrote to the pid file.
  pid_file=$(key pid_file); new_pid=$(cat "${pid_file:-/tmp/pingora.pid}" 2>/dev/null || echo "$new_pid")
fi
echo "$new_pid"
