#!/usr/bin/env bash
# Runs the fuzz harness (tests/fuzz.rs) over N generated inputs in an optimised build with debug
# assertions: scripts/fuzz.sh N [SEED] [FROM]. A finding prints its seed, input number and body;
# replay it with: scripts/fuzz.sh 1 SEED INPUT.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:?usage: scripts/fuzz.sh N [SEED] [FROM]}
export FUZZ_INPUTS=$n FUZZ_SEED=${2:-1} FUZZ_FROM=${3:-0}
if [ -z "${POD_IDENTITY_FIXTURES:-}" ] && [ -d ../shared/fixtures/apiserver-v1.24 ]; then
  export POD_IDENTITY_FIXTURES=$PWD/../shared/fixtures/apiserver-v1.24
fi
exec cargo test --profile fuzz --test fuzz -- --nocapture --test-threads 1
