#!/usr/bin/env bash
# What each identity source and a regex condition cost (issue 25, "Cost"): instructions per
# request under callgrind (count_instructions: 1 thread, 2 s warm-up, 8 s counted, wrk -c16 on
# CPU 0) against the load tests' nginx origins, config (VIP list + 10% rollout) and users, one
# case after another for each binary, each case beside that binary's baseline in the same run:
#
#   cookie              today's config (routing.cookie), wrk rotating 1,000 canary_user cookies
#   assign-returning    identity [cookie canary_user, assign {cookie: canary_vid}]; each request
#                       carries only a valid canary_vid (1,000 ids the gateway handed out, read
#                       from Set-Cookie before the run)
#   assign-returning-signed   the same with routing.signing_key (ids are <id>.<tag>)
#   assign-new          the same config, no cookies at all: a fresh id and a Set-Cookie each time
#   assign-new-signed   the same with routing.signing_key
#   rs256-cached        identity [cookie canary_user, jwt {keys_file, RS256/ES256, iss, aud}];
#                       300 distinct RS256 tokens rotating, each sent once before the warm-up
#                       (so verified then) and found in the cache from then on
#   rs256-fresh         every request a token never sent before (TOKENS distinct ones, each once)
#   es256-cached, es256-fresh   the same with ES256 (P-256) tokens
#   regex               today's config plus a rule `when: {header: {name: x-app-version, matches:
#                       "^5\\."}}` before the VIP rule; traffic as cookie plus x-app-version
#                       rotating over 5.1.0, 4.9.2, 5.0.3, 6.0.0
#
# A case runs only on a binary that accepts its config (`BIN -t -c FILE`): a build before
# identity or conditions gets the baseline only. Before each counted run a plain (not
# callgrind) gateway with the same config answers requests that show the config decides by the
# source it is meant to (a token routes as its `sub` cookie does; a visitor id comes back and
# keeps its group; a VIP with app 5.x goes to canary), and gateway_identity_total is read from
# the metrics listener after each counted run (every case has one, the baseline too). A failed
# check stops the script. Each line also gives the signature checks' own instructions per
# request (jsonwebtoken's verify, or the HMAC tag of a signed id), from callgrind_annotate.
# Keys are made in memory for the run; only the public JWKS and the tokens are written (under
# /tmp, removed at the end with everything else but the callgrind files).
#
# Usage: [TOKENS=30000] [CASES="cookie rs256-fresh ..."] scripts/identity-cost.sh BINARY...
# Needs /usr/bin/python3 with PyJWT and cryptography (Debian: python3-jwt, python3-cryptography).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh
if [ $# -eq 0 ]; then
  echo "usage: scripts/identity-cost.sh BINARY..." >&2
  exit 2
fi
bash scripts/setup.sh loadtest
py=/usr/bin/python3
helper=$PWD/scripts/lib/identity_bench.py
if ! $py -c 'import jwt, cryptography' 2>/dev/null; then
  echo "identity-cost: $py needs the jwt (PyJWT) and cryptography modules" >&2
  exit 1
fi
tokens=${TOKENS:-30000}
cases=${CASES:-cookie assign-returning assign-returning-signed assign-new assign-new-signed rs256-cached rs256-fresh es256-cached es256-fresh regex}

dir=$(mktemp -d /tmp/canary-identity.XXXXXX)
plain_pid=
cleanup() {
  [ -n "$plain_pid" ] && kill "$plain_pid" 2>/dev/null
  stop_nginx "$dir/origins/nginx.pid"
  rm -f "$dir"/*-cached.txt "$dir"/*-fresh.txt "$dir"/vids-*.txt
}
trap cleanup EXIT
o1=$(free_port); o2=$(free_port)
start_nginx_origins "$dir" "$o1" "$o2"
write_vip_file "$dir/vips.txt" 100000
echo "making keys and $tokens fresh tokens per algorithm..." >&2
$py "$helper" keys "$dir" "$tokens" 300

# case_mode CASE: the config mode identity_bench.py knows.
case_mode() {
  case $1 in
    cookie) echo cookie ;;
    assign-*-signed) echo assign-signed ;;
    assign-*) echo assign ;;
    rs256-* | es256-*) echo jwt ;;
    regex) echo regex ;;
    *) echo "unknown case $1" >&2; return 1 ;;
  esac
}

# write_values_lua FILE VALUES HEADER PREFIX ONCE: a wrk script sending HEADER: PREFIX<value>,
# the values read from VALUES (one a line). ONCE=0 rotates over them; ONCE=1 sends each at most
# once over all wrk runs of this script: it starts where the last run stopped (FILE.offset,
# written by `done` with a margin for requests sent but not answered) and stops the run with an
# error if the values run out, rather than repeat one.
write_values_lua() {
  local file=$1 values=$2 header=$3 prefix=$4 once=$5
  cat >"$file" <<LUA
local values = {}
if "$values" ~= "" then
  for line in io.lines("$values") do values[#values + 1] = line end
end
local offset = 0
local f = io.open("$file.offset", "r")
if f then offset = tonumber(f:read("*l")) or 0; f:close() end
local n = 0
request = function()
  n = n + 1
  local i
  if $once == 1 then
    i = offset + n
    if i > #values then error("identity-cost: out of distinct values; raise TOKENS") end
  else
    i = (n % #values) + 1
  end
  if "$header" == "" then return wrk.format("GET", "/") end
  return wrk.format("GET", "/", { ["$header"] = "$prefix" .. values[i] })
end
done = function(summary, latency, requests)
  local f = io.open("$file.offset", "w")
  f:write(string.format("%d\n", offset + summary.requests + summary.errors.timeout + 64))
  f:close()
end
LUA
}

# write_case_lua DIR CASE: DIR/rotate.lua for the case (the name count_instructions runs).
write_case_lua() {
  local d=$1 c=$2 mode
  mode=$(case_mode "$c")
  case $c in
    cookie) write_wrk_script "$d/rotate.lua" 1000 10 ;;
    regex)
      write_wrk_script "$d/rotate.lua" 1000 10
      sed -i -e '1i local versions = { "5.1.0", "4.9.2", "5.0.3", "6.0.0" }' \
        -e 's/{ \["Cookie"\] =/{ ["x-app-version"] = versions[(n % #versions) + 1], ["Cookie"] =/' \
        "$d/rotate.lua"
      grep -q x-app-version "$d/rotate.lua"
      ;;
    assign-new*) write_values_lua "$d/rotate.lua" "" "" "" 0 ;;
    assign-returning*) write_values_lua "$d/rotate.lua" "$dir/vids-$mode.txt" Cookie "canary_vid=" 0 ;;
    *-cached) write_values_lua "$d/rotate.lua" "$dir/${c%-cached}-cached.txt" Authorization "Bearer " 0 ;;
    *-fresh) write_values_lua "$d/rotate.lua" "$dir/${c%-fresh}-fresh.txt" Authorization "Bearer " 1 ;;
  esac
}

# plain_check BIN CONFIG MODE MPORT PORT: the same config on a gateway outside callgrind,
# answering identity_bench.py's checks (which also collect the visitor ids for assign).
plain_check() {
  local bin=$1 conf=$2 mode=$3 mport=$4 port=$5
  [ "$mode" = cookie ] && return 0
  RUST_LOG=warn "$bin" -c "$conf" >"$conf.log" 2>&1 &
  plain_pid=$!
  wait_port "$port" >/dev/null && wait_port "$mport" >/dev/null
  local rc=0
  $py "$helper" check "$mode" "$port" "$mport" "$dir" || rc=$?
  kill -INT "$plain_pid"; wait "$plain_pid" 2>/dev/null || true
  plain_pid=
  return $rc
}

# identity_counts NAME: run by count_instructions after the counted run, before the gateway
# stops: the gateway_identity_total counters by source, as JSON.
identity_counts() {
  $py "$helper" counts "$metrics_port" >"$counts_file" 2>/dev/null || echo '?' >"$counts_file"
}
COUNT_INSTRUCTIONS_AFTER=identity_counts
# prewarm NAME PORT: a cached case's tokens, each sent once before the warm-up, so that every
# first verification (0.4-0.8M instructions each under callgrind) is done before the count
# starts, however slowly the machine runs the 2 s warm-up.
# (count_instructions has a local `dir`, the case's folder, hence $tokens_dir.)
tokens_dir=$dir
prewarm() {
  case $1 in
    *-cached) $py "$helper" send "$2" "$tokens_dir/${1%-cached}-cached.txt" Authorization "Bearer " ;;
  esac
}
COUNT_INSTRUCTIONS_BEFORE=prewarm

results=()
i=0
for bin in "$@"; do
  i=$((i + 1))
  base_per=
  checked=" "
  for c in $cases; do
    mode=$(case_mode "$c")
    d="$dir/b$i-$c"; mkdir -p "$d"
    port=$(free_port); mport=$(free_port)
    write_gateway_config "$d/gateway" "$port" 1 "$dir/vips.txt" "$o1" "$o2"
    $py "$helper" config "$d/gateway.yaml" "$d/gateway.yaml" "$mode" "$dir" "$mport"
    if ! "$bin" -t -c "$d/gateway.yaml" >"$d/test.log" 2>&1; then
      printf "%-40s %-24s skipped: the binary does not accept this config (%s)\n" "$bin" "$c" \
        "$(grep -v '^\s*$' "$d/test.log" | tail -1 | sed 's/^.*gateway\.yaml: //' | cut -c1-120)"
      results+=("$bin $c - - - -")
      continue
    fi
    # The checks once per mode and binary: they also collect the visitor ids.
    if [[ $checked != *" $mode "* ]]; then
      cport=$(free_port); cmport=$(free_port)
      write_gateway_config "$d/check" "$cport" 1 "$dir/vips.txt" "$o1" "$o2"
      $py "$helper" config "$d/check.yaml" "$d/check.yaml" "$mode" "$dir" "$cmport"
      plain_check "$bin" "$d/check.yaml" "$mode" "$cmport" "$cport"
      checked+="$mode "
    fi
    write_case_lua "$d" "$c"
    metrics_port=$mport counts_file=$d/identity-counts.txt
    read -r _ n per file < <(count_instructions "$d" "$c" "$port" "$bin" -c "$d/gateway.yaml")
    counts=$(cat "$d/identity-counts.txt" 2>/dev/null || echo '?')
    if [ "$c" = cookie ]; then base_per=$per; fi
    if [ -n "$base_per" ]; then
      delta=$((per - base_per))
      ratio=$(awk "BEGIN{printf \"%.3f\", $per / $base_per}")
    else
      delta=-; ratio=-
    fi
    # The signature checks' share: inclusive instructions of jsonwebtoken's verify (tokens) or
    # of the HMAC tag (signed ids) per request; about 0 for a cached token.
    crypto=$(callgrind_annotate --inclusive=yes "$file" 2>/dev/null | awk -v n="$n" '
      /jsonwebtoken::crypto::verify |routing::signed::sign_tag / {gsub(",", "", $1); s += $1}
      END {printf "%d", s / n}')
    printf "%-40s %-24s %7d requests %9d instructions/request  %+8s  x%s  crypto %d  %s\n" \
      "$bin" "$c" "$n" "$per" "$delta" "$ratio" "$crypto" "$counts"
    echo "    $file" >&2
    case $c in
      *-fresh)
        used=$(cat "$d/rotate.lua.offset")
        [ "$used" -le "$tokens" ] || { echo "identity-cost: $c used $used tokens > $tokens" >&2; exit 1; }
        ;;
    esac
    results+=("$bin $c $n $per $delta $crypto")
  done
done

echo
echo "| binary | case | requests | instructions / request | vs its cookie baseline | of which signature checks |"
echo "|---|---|---|---|---|---|"
for row in "${results[@]}"; do
  read -r bin c n per delta crypto <<<"$row"
  [ "$n" = - ] && continue
  echo "| $(basename "$bin") | $c | $n | $per | $delta | $crypto |"
done
