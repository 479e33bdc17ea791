#!/usr/bin/env bash
# A/B load benchmark: the two baselines (examples/baseline_server.rs: borrowed reads, and
# --value: the review read into a serde_json::Value) and one or more webhook binaries, driven in
# interleaved rounds (baseline, value, A, B, baseline, value, A, B, ...) so that a noisy neighbour
# on a shared machine hits every server alike. Reports per server the median throughput, server
# and load-generator CPU per request (user + system from /proc), and the medians of the
# per-round ratios to each baseline.
#
#   scripts/ab-bench.sh ROUNDS SECONDS PROTOCOL BINARY...
#   PROTOCOL is "" for HTTP/1.1 or --h2 for HTTP/2 (always given, empty or not), e.g.
#        cp target/release/pod-identity-webhook /tmp/before   # then change, rebuild, and:
#        scripts/ab-bench.sh 5 3 "" /tmp/before target/release/pod-identity-webhook
#        scripts/ab-bench.sh 5 3 --h2 /tmp/before target/release/pod-identity-webhook
#
# Closed loop, 64 connections, TLS with keep-alive, the captured *.mutate.json pods, 5,000
# associations (as scripts/load-bench.sh); ENDPOINT=validate drives /validate with the
# *.validate.json captures instead. Fixtures: $POD_IDENTITY_FIXTURES, else
# tests/fixtures/apiserver-v1.24.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 4 ] || { sed -n '2,13p' "$0" >&2; exit 2; }
case "$3" in "" | --h2) ;; *) echo "PROTOCOL (the third argument) is \"\" or --h2, not $3" >&2; exit 2 ;; esac
ROUNDS=$1 SECONDS_PER_RUN=$2
PROTO=()
[ -n "$3" ] && PROTO=("$3")
shift 3
# shellcheck source=scripts/bench-common.sh
source scripts/bench-common.sh
FIXTURES=$(bench_fixtures)
command -v /usr/bin/time >/dev/null || { echo "needs /usr/bin/time (Debian package: time)" >&2; exit 1; }

cargo build --release --locked --example baseline_server --example loadgen >&2
BIN=target/release
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
bench_workdir "$1" "$WORK"

"$BIN/examples/baseline_server" 127.0.0.1:19443 "$WORK/certs/tls.crt" "$WORK/certs/tls.key" 2>/dev/null &
PIDS=($!) PORTS=(19443) NAMES=(baseline)
"$BIN/examples/baseline_server" 127.0.0.1:19444 "$WORK/certs/tls.crt" "$WORK/certs/tls.key" --value 2>/dev/null &
PIDS+=($!) PORTS+=(19444) NAMES+=(value)
i=0
for b in "$@"; do
  i=$((i + 1))
  RUST_LOG=info "$b" serve --listen "127.0.0.1:$((19445 + i))" --admin-listen "127.0.0.1:$((19081 + i))" \
    --tls-cert "$WORK/certs/tls.crt" --tls-key "$WORK/certs/tls.key" \
    --associations "$WORK/associations.yaml" --log-format json 2>"$WORK/webhook$i.log" &
  PIDS+=($!) PORTS+=($((19445 + i))) NAMES+=("$i:$(basename "$b")")
done
sleep 2
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for _ in $(seq "$ROUNDS"); do
  for j in "${!PIDS[@]}"; do
    before=$(ticks "${PIDS[$j]}")
    out=$({ /usr/bin/time -f "LGTIME %U %S" "$BIN/examples/loadgen" --addr "127.0.0.1:${PORTS[$j]}" \
      --ca "$WORK/certs/ca.crt" --fixtures "$FIXTURES" --connections 64 --seconds "$SECONDS_PER_RUN" \
      --label x --warmup 0 --endpoint "${ENDPOINT:-mutate}" "${PROTO[@]}"; } 2>&1)
    after=$(ticks "${PIDS[$j]}")
    n=$(sed -n 's/.* requests=\([0-9]*\).*/\1/p' <<<"$out")
    rps=$(sed -n 's/.* rps=\([0-9]*\).*/\1/p' <<<"$out")
    lg=$(awk '/LGTIME/ {printf "%d", ($2 + $3) * 1000000}' <<<"$out")
    # CPU in tenths of a microsecond per request (clock ticks are 1/100 s).
    echo "${NAMES[$j]} $rps $(((after - before) * 100000 / n)) $((lg * 10 / n))"
  done
done > "$WORK/results"
python3 - "$WORK/results" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, rps, cpu, lg = line.split()
    runs[name].append((int(rps), int(cpu) / 10, int(lg) / 10))
base, value = runs["baseline"], runs["value"]
for name, v in runs.items():
    ratios = [a[0] / b[0] for a, b in zip(v, base)]
    to_value = [a[0] / b[0] for a, b in zip(v, value)]
    print(f"{name:24s} rps median {statistics.median(x[0] for x in v):8.0f} | "
          f"server CPU/req median {statistics.median(x[1] for x in v):5.1f} us (min {min(x[1] for x in v):5.1f}) | "
          f"loadgen CPU/req median {statistics.median(x[2] for x in v):5.1f} us | "
          f"x baseline median {statistics.median(ratios):.2f} (rounds: {' '.join(f'{r:.2f}' for r in ratios)}) | "
          f"x value median {statistics.median(to_value):.2f} (rounds: {' '.join(f'{r:.2f}' for r in to_value)})")
PY
