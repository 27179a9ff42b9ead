#!/usr/bin/env bash
# The import rule of src/lib.rs, checked: a layer imports only the layers before it, and
# routing/ (the pure decision) touches no Pingora, tokio, logging, locks or I/O.
# module-cycles finds circles; this finds a lower layer reaching up even where no circle forms.
set -euo pipefail
cd "$(dirname "$0")/.."
layers=(text routing upstreams config state proxy ops)
fail=0
for i in "${!layers[@]}"; do
  layer=${layers[$i]}
  path=src/$layer
  [ -d "$path" ] || path=src/$layer.rs
  for higher in "${layers[@]:$((i + 1))}"; do
    if hits=$(grep -rnE "crate::$higher\b" "$path"); then
      echo "layer $layer imports the higher layer $higher:"; echo "$hits" | sed 's/^/  /'
      fail=1
    fi
  done
done
if hits=$(grep -rnE "\b(pingora[a-z_]*|tokio|log)::|std::sync::(Mutex|RwLock)|std::(fs|net::TcpStream|io::stdout)" src/routing | grep -v '^\S*:\s*//'); then
  echo "routing/ must stay pure (no Pingora, tokio, logging, locks or I/O):"; echo "$hits" | sed 's/^/  /'
  fail=1
fi
[ "$fail" = 0 ] && echo "check-layers: every layer imports only the layers below it"
exit "$fail"
