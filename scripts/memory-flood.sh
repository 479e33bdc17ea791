#!/usr/bin/env bash
# Memory under a flood of the largest reviews (docs/contract.md §12): starts the release webhook on loopback
# with 5,000 associations, has THREADS clients post 6 MiB reviews to /mutate as fast as they can
# for SECONDS per shape, and prints the webhook's peak RSS (VmHWM). The peak must stay under the
# Deployment's memory limit (manifests/base/deployment.yaml), or a flood OOM-kills the webhook
# and `failurePolicy: Ignore` admits pods unchecked. Extra arguments go to `serve`:
#
#   scripts/memory-flood.sh [SECONDS] [THREADS] [-- SERVE-ARGS...]
#   e.g. scripts/memory-flood.sh 20 48 -- --body-memory-bytes 16777216
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_SHAPE="${1:-20}"
THREADS="${2:-48}"
shift $(( $# < 2 ? $# : 2 ))
[ "${1:-}" = "--" ] && shift
PORT="${PORT:-19444}"
ADMIN_PORT="${ADMIN_PORT:-19081}"
# shellcheck source=scripts/bench-common.sh
source scripts/bench-common.sh
FIXTURES=$(bench_fixtures)

cargo build --release --locked --bin pod-identity-webhook >&2
BIN=target/release
WORK="$(mktemp -d)"
bench_cleanup_on_exit "$WORK"
bench_workdir "$BIN/pod-identity-webhook" "$WORK"

"$BIN/pod-identity-webhook" serve --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
  --tls-cert "$WORK/certs/tls.crt" --tls-key "$WORK/certs/tls.key" \
  --associations "$WORK/associations.yaml" --log-format json "$@" 2>"$WORK/webhook.log" &
PID=$!
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done
echo "machine: $(nproc) cores; serve $*"
echo "after start-up: $(awk '/^(VmRSS|VmHWM)/ {printf "%s=%.1fMiB ", $1, $2/1024}' "/proc/$PID/status")"
for shape in annotations env; do
  python3 scripts/memory_flood.py "$PORT" "$WORK/certs/ca.crt" "$PID" "$shape" \
    "$SECONDS_PER_SHAPE" "$THREADS" "$FIXTURES/pod-create-carts.mutate.json"
done
