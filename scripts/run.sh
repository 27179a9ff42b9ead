#!/usr/bin/env bash
# Runs the gateway (release build). With no arguments: the bundled demo on 127.0.0.1:8080 with
# its two demo origins. Any arguments go to the binary, e.g. scripts/run.sh -c conf/example.yaml
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh build
exec cargo run --release -- "$@"
