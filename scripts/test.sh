#!/usr/bin/env bash
# The whole test suite: installs what the tests need when missing, then runs every unit,
# end-to-end and bench-smoke test. Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
cargo test --all-targets "$@"
