#!/usr/bin/env bash
# Instructions per admission, counted by valgrind's callgrind: the baseline and one or more
# webhook binaries, each driven over TLS (HTTP/1.1, keep-alive) with the captured *.mutate.json
# pods. Unlike timings, the counts repeat from run to run whatever else the machine is doing, so
# they compare builds on a noisy shared machine. They leave out the kernel (syscalls, loopback
# TCP) and memory stalls: a cost model of our own code, not a throughput figure.
#
#   scripts/instructions.sh SECONDS BINARY...
#   e.g. scripts/instructions.sh 10 target/release/pod-identity-webhook
#
# Writes callgrind files to $OUT (default: a temporary directory, removed) for
# `callgrind_annotate --inclusive=yes FILE` when OUT is set. With
# VALGRIND_OPTS="--cache-sim=yes --branch-sim=yes" it also prints simulated L1 instruction and
# data cache misses and branch mispredictions per request (slower). With ENDPOINT=validate it
# sends the *.validate.json captures to /validate (the default policy: warn). Fixtures:
# $POD_IDENTITY_FIXTURES, else tests/fixtures/apiserver-v1.24.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '2,14p' "$0" >&2; exit 2; }
SECONDS_PER_RUN=$1
shift
command -v valgrind >/dev/null || { echo "needs valgrind (Debian package: valgrind)" >&2; exit 1; }
# shellcheck source=scripts/bench-common.sh
source scripts/bench-common.sh
FIXTURES=$(bench_fixtures)

cargo build --release --locked --example baseline_server --example loadgen >&2
BIN=target/release
WORK="$(mktemp -d)"
KEEP="${OUT:-}"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
bench_workdir "$1" "$WORK"

load() {
  "$BIN/examples/loadgen" --addr 127.0.0.1:19643 --ca "$WORK/certs/ca.crt" --fixtures "$FIXTURES" \
    --connections 4 --seconds "$1" --label x --warmup 0 --endpoint "${ENDPOINT:-mutate}" 2>&1 | sed -n 's/.* requests=\([0-9]*\).*/\1/p'
}

# count NAME COMMAND...: starts COMMAND under callgrind, warms it up, counts one measured run.
count() {
  local name=$1
  shift
  valgrind --tool=callgrind --callgrind-out-file="$WORK/$name.out" "$@" 2>"$WORK/$name.log" &
  local pid=$!
  for _ in $(seq 60); do
    (exec 3<>/dev/tcp/127.0.0.1/19643) 2>/dev/null && break
    sleep 1
  done
  load 2 >/dev/null # connections, TLS sessions, caches: not what we count
  callgrind_control --zero "$pid" >/dev/null 2>&1
  local n
  n=$(load "$SECONDS_PER_RUN")
  callgrind_control --dump "$pid" >/dev/null 2>&1
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  # "events: Ir ..." names the columns of "summary: ..."; written as NAME:COUNT pairs.
  local events totals
  read -ra events < <(sed -n 's/^events: //p' "$WORK/$name.out".1)
  read -ra totals < <(sed -n 's/^summary: //p' "$WORK/$name.out".1)
  local pairs=() j
  for j in "${!events[@]}"; do pairs+=("${events[$j]}:${totals[$j]}"); done
  echo "$name $n ${pairs[*]}"
  if [ -n "$KEEP" ]; then mkdir -p "$KEEP" && cp "$WORK/$name.out.1" "$KEEP/$name.callgrind"; fi
}

{
  count baseline "$BIN/examples/baseline_server" 127.0.0.1:19643 "$WORK/certs/tls.crt" "$WORK/certs/tls.key"
  i=0
  for b in "$@"; do
    i=$((i + 1))
    RUST_LOG=info count "$i-$(basename "$b")" "$b" serve --listen 127.0.0.1:19643 \
      --admin-listen 127.0.0.1:19644 --tls-cert "$WORK/certs/tls.crt" --tls-key "$WORK/certs/tls.key" \
      --associations "$WORK/associations.yaml" --log-format json
  done
} > "$WORK/results"
awk '{ delete e; for (i = 3; i <= NF; i++) { split($i, kv, ":"); e[kv[1]] = kv[2] / $2 }
       if (NR == 1) base = e["Ir"]
       line = sprintf("%-32s %6d requests  %8.1f k instructions per request  %.2f x baseline", $1, $2, e["Ir"] / 1000, e["Ir"] / base)
       if ("I1mr" in e) line = line sprintf("  L1i misses %.0f  L1d misses %.0f  mispredicts %.0f", e["I1mr"], e["D1mr"] + e["D1mw"], e["Bcm"] + e["Bim"])
       print line }' "$WORK/results"
