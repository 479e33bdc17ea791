#!/usr/bin/env bash
# Runs the fuzz harness (tests/fuzz.rs) over N generated inputs in an optimised build with debug
# assertions and overflow checks (profile `fuzz`): scripts/fuzz.sh N [SEED] [FROM].
# The inputs FROM..FROM+N are split into FUZZ_JOBS contiguous shares (default: one per core), each
# run by its own process; every process prints its progress each million inputs and a summary.
# A finding prints its seed, input number and body; replay it with: scripts/fuzz.sh 1 SEED INPUT.
# The test binary is copied to a temporary directory first, so a rebuild during a long run
# (e.g. `cargo test`) cannot change what runs. Exit status 0 only when every share found nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:?usage: scripts/fuzz.sh N [SEED] [FROM]}
seed=${2:-1}
from=${3:-0}
jobs=${FUZZ_JOBS:-$(nproc)}
if [ "$jobs" -gt "$n" ]; then jobs=$n; fi
if [ "$jobs" -lt 1 ]; then jobs=1; fi

# The test's executable (the package's binary is built too, and listed in any order).
built=$(cargo test --profile fuzz --test fuzz --no-run --message-format=json |
  grep '"kind":\["test"\]' | grep -o '"executable":"[^"]*"' | tail -n 1 | cut -d '"' -f 4)
[ -x "$built" ] || { echo "fuzz.sh: no test binary built" >&2; exit 2; }
run=$(mktemp -d -t pod-identity-webhook-fuzz.XXXXXX)
trap 'rm -rf "$run"' EXIT
cp "$built" "$run/fuzz"

echo "fuzz.sh: $n inputs from $from, seed $seed, $jobs processes, commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src tests Cargo.toml Cargo.lock || echo ' (with local changes)')"
started=$(date +%s)
pids=()
for ((j = 0; j < jobs; j++)); do
  start=$((from + n * j / jobs))
  end=$((from + n * (j + 1) / jobs))
  (FUZZ_INPUTS=$((end - start)) FUZZ_SEED=$seed FUZZ_FROM=$start \
    "$run/fuzz" fuzz_reviews --exact --nocapture --test-threads 1 2>&1 |
    sed -u "s/^/[share $j: $start..$end] /") &
  pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do
  wait "$pid" || failed=1
done
elapsed=$(($(date +%s) - started))
if [ "$failed" = 0 ]; then
  echo "fuzz.sh: $n inputs (seed $seed, from $from) in ${elapsed}s, no finding"
else
  echo "fuzz.sh: FINDINGS (see above) after ${elapsed}s" >&2
  exit 1
fi
