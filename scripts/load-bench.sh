#!/usr/bin/env bash
# Load benchmark of the admission endpoint (issue 6). Builds in release, starts the baseline
# (examples/baseline_server.rs) and the webhook on loopback with the same certificate, drives both
# with examples/loadgen.rs over TLS with keep-alive (HTTP/1.1 and HTTP/2, 64 connections closed
# loop, then a fixed 5,000 req/s open loop), then reports the webhook's memory with 5,000
# associations loaded. Everything listens on 127.0.0.1 and every run is bounded.
#
#   scripts/load-bench.sh [SECONDS]        (default 10 s per run, plus 2 s warm-up)
#   ROUNDS=3 scripts/load-bench.sh 10     (the open-loop runs three times: their p99 varies by round)
#
# Fixtures: $POD_IDENTITY_FIXTURES, else tests/fixtures/apiserver-v1.24.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN="${1:-10}"
RATE="${RATE:-5000}"
CONNS="${CONNS:-64}"
ROUNDS="${ROUNDS:-1}"
# shellcheck source=scripts/bench-common.sh
source scripts/bench-common.sh
FIXTURES=$(bench_fixtures)

BASE_PORT="${BASE_PORT:-18443}"
OURS_PORT="${OURS_PORT:-18444}"
ADMIN_PORT="${ADMIN_PORT:-18081}"

cargo build --release --locked --bin pod-identity-webhook --example baseline_server --example loadgen >&2
BIN=target/release
WORK="$(mktemp -d)"
bench_cleanup_on_exit "$WORK"

bench_workdir "$BIN/pod-identity-webhook" "$WORK"

wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listening on port $1" >&2; cat "$WORK"/*.log >&2; exit 1
}

"$BIN/examples/baseline_server" "127.0.0.1:$BASE_PORT" "$WORK/certs/tls.crt" "$WORK/certs/tls.key" 2>"$WORK/baseline.log" &
BASE_PID=$!
# Logs on, as in production (JSON, one line per decision), written to a file.
RUST_LOG="${WEBHOOK_RUST_LOG:-info}" "$BIN/pod-identity-webhook" serve \
  --listen "127.0.0.1:$OURS_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
  --tls-cert "$WORK/certs/tls.crt" --tls-key "$WORK/certs/tls.key" \
  --associations "$WORK/associations.yaml" --log-format json 2>"$WORK/webhook.log" &
OURS_PID=$!
wait_port "$BASE_PORT"
wait_port "$OURS_PORT"

rss() { awk '/^(VmRSS|VmHWM)/ {printf "%s=%.1fMiB ", $1, $2/1024}' "/proc/$OURS_PID/status"; echo; }
echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(uname -sr)"
echo "webhook after start-up with 5,000 associations: $(rss)"

run() { # label port extra-args...
  local label=$1 port=$2; shift 2
  "$BIN/examples/loadgen" --addr "127.0.0.1:$port" --ca "$WORK/certs/ca.crt" --fixtures "$FIXTURES" \
    --connections "$CONNS" --seconds "$SECONDS_PER_RUN" --label "$label" "$@"
}
for proto in "" "--h2"; do
  run baseline "$BASE_PORT" $proto
  run webhook "$OURS_PORT" $proto
done
# The webhook's own time per review (its admission_duration_seconds histogram: from the body read to
# the answer built), and the CPU the hypervisor took from this VM (steal, from /proc/stat) while the
# run lasted: on a shared VM the end-to-end tail is mostly scheduling, which these two tell apart.
buckets() {
  curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" |
    sed -n 's/^pod_identity_webhook_admission_duration_seconds_bucket{le="\([^"]*\)",endpoint="mutate"} \([0-9]*\).*/\1 \2/p'
}
steal() { awk '/^cpu / {print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
for round in $(seq 1 "$ROUNDS"); do
for proto in "" "--h2"; do
  if [ "$ROUNDS" -gt 1 ]; then echo "open loop, round $round of $ROUNDS:"; fi
  run baseline "$BASE_PORT" $proto --rate "$RATE"
  before=$(buckets) stolen=$(steal)
  run webhook "$OURS_PORT" $proto --rate "$RATE"
  paste <(echo "$before") <(buckets) | awk -v s0="$stolen" -v s1="$(steal)" '
    { n[$1] = $4 - $2; total = $4 - $2 }
    END {
      split(s0, a, " "); split(s1, b, " ")
      printf "webhook own time per review: %.2f%% within 250us, %.2f%% within 1ms, %.2f%% within 2.5ms; CPU stolen by the hypervisor: %.0f%%\n",
        100 * n["0.00025"] / total, 100 * n["0.001"] / total, 100 * n["0.0025"] / total,
        100 * (b[1] - a[1]) / (b[2] - a[2])
    }'
done
done
# Server CPU per request (user + system, from /proc), closed loop over HTTP/1.1 without warm-up so
# every request the CPU time covers is counted. Less sensitive than throughput to what else the
# machine runs, since the load generator's own CPU is not in it.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
cpu_per_request() { # label port pid
  local before after out requests
  before=$(ticks "$3")
  out=$(run "$1" "$2" --warmup 0)
  after=$(ticks "$3")
  requests=$(sed -n 's/.* requests=\([0-9]*\).*/\1/p' <<<"$out")
  echo "$out"
  echo "$1 server CPU per request: $(( (after - before) * 1000000 / $(getconf CLK_TCK) / requests )) us"
}
cpu_per_request baseline "$BASE_PORT" "$BASE_PID"
cpu_per_request webhook "$OURS_PORT" "$OURS_PID"
echo "webhook after the runs: $(rss)"
echo "decision log lines written: $(wc -l < "$WORK/webhook.log")"
