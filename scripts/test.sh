#!/usr/bin/env bash
# nodelet's whole test suite: lint, unit and integration tests (as root, on the real kernel),
# the end-to-end test, then a check that no test left anything on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "test.sh: the integration tests create namespaces, mounts, cgroups and BPF programs: run as root" >&2
  exit 1
fi

./scripts/setup.sh

# A clean clone gains nothing from incremental compilation, and its cache doubles the disk the
# build needs.
if [ "${CI:-}" = true ]; then
  export CARGO_INCREMENTAL=0
fi

echo "== format"
cargo fmt --all --check
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests"
cargo test --workspace --locked --no-fail-fast
echo "== leftovers"
./scripts/check-leftovers.sh
