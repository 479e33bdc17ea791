#!/usr/bin/env bash
# The whole test suite RUNS times in a row (default 5) while both cores are kept busy by
# another process, as on a loaded CI machine: a test that passes only on an idle machine fails
# here. Usage: scripts/suite-under-load.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
cores="$(nproc)"

# Build first, unloaded: the runs measure the tests, not the compiler.
cargo test --locked --no-run

burners=()
stop_burners() { for pid in "${burners[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap stop_burners EXIT
for _ in $(seq "$cores"); do
  # A busy loop per core, bounded: it ends by itself after two hours.
  timeout 7200 sh -c 'while :; do :; done' &
  burners+=("$!")
done

for run in $(seq "$runs"); do
  echo "== run $run of $runs (with $cores busy loops)"
  if ! cargo test --locked --no-fail-fast >"target/suite-under-load.$run.log" 2>&1; then
    grep -E "^test .* FAILED|panicked|^error" "target/suite-under-load.$run.log" | head -40 || true
    echo "run $run failed; its whole output is in target/suite-under-load.$run.log"
    exit 1
  fi
  grep -c "^test result: ok" "target/suite-under-load.$run.log" | sed 's/^/test binaries passed: /'
done
echo "$runs runs passed under load"
