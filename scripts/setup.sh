#!/usr/bin/env bash
# Installs what building and testing canary-gateway needs, only when it is missing:
#   cmake      - Pingora's zlib-ng build
#   redis-server, wrk - the store tests and the access-log load test
#   chromium   - the web page's tests drive a real headless browser
#   curl, openssl, libssl-dev, pkg-config - the TLS tests (HTTP/2 over TLS, s_client; the
#              tests' own TLS client and certificates use the system OpenSSL)
#   nghttp2-client - h2load, the TLS load test's HTTP/2 client
#   apache2-utils - htpasswd, which writes the access tests' bcrypt and SHA-crypt users
#   python3-grpcio - the gRPC origins and clients of tests/grpc.rs (run by /usr/bin/python3,
#              the system Python the Debian package installs into)
#   nginx + lua module - the import tests' reverse check (tests/nginx_import.rs) and the load tests
#   haproxy, curl, valgrind - the load-test scripts
#   oha (built with cargo) - the fixed-rate latency client of scripts/edge-loadtest.sh
#   pebble     - the ACME test server tests/acme.rs orders certificates from
# Usage: scripts/setup.sh [build|test|loadtest]   (default: build)
set -euo pipefail

what=${1:-build}
need=()
have() { command -v "$1" >/dev/null 2>&1; }

have cmake || need+=(cmake)
have cc || need+=(gcc)
if [ "$what" = test ] || [ "$what" = loadtest ]; then
  have redis-server || need+=(redis-server)
  have wrk || need+=(wrk)
  have chromium || need+=(chromium)
  have curl || need+=(curl)
  have openssl || need+=(openssl)
  have pkg-config || need+=(pkg-config)
  dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
  have htpasswd || need+=(apache2-utils)
  /usr/bin/python3 -c 'import grpc' >/dev/null 2>&1 || need+=(python3-grpcio)
  have nginx || need+=(nginx-light)
  [ -x /usr/bin/pebble ] || need+=(pebble)
  dpkg -s libnginx-mod-http-lua >/dev/null 2>&1 || need+=(libnginx-mod-http-lua)
  # Text in the page's screenshots (the tests need none).
  dpkg -s fonts-dejavu-core >/dev/null 2>&1 || need+=(fonts-dejavu-core)
fi
if [ "$what" = loadtest ]; then
  have wrk || need+=(wrk)
  have curl || need+=(curl)
  have python3 || need+=(python3)
  have valgrind || need+=(valgrind)
  have h2load || need+=(nghttp2-client)
  have haproxy || need+=(haproxy)
fi

if ! have cargo; then
  echo "setup: cargo is not installed; install a Rust toolchain (rustup) first" >&2
  exit 1
fi

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    have sudo || { echo "setup: need root (or sudo) to install: ${need[*]}" >&2; exit 1; }
    sudo=sudo
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The constant-rate HTTP client the edge load test needs (not packaged by Debian 12).
if [ "$what" = loadtest ] && ! have oha; then
  echo "setup: building oha (cargo install --locked oha)" >&2
  cargo install --locked --quiet oha
fi
