#!/usr/bin/env bash
# RSS of the credentials agent idle (BENCHMARKS.md, "Credentials agent"): the release binary on
# loopback with examples/associations.yaml, nothing cached and nobody asking, its Kubernetes API and
# STS clients made (both point at a closed port, so it stays unready; an idle agent on a node has
# nothing more in memory than that). Prints VmRSS after SECONDS and VmHWM.
#
#   scripts/agent-idle-rss.sh [SECONDS] [BINARY]   (BINARY: default the release build, built first)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-common.sh
source scripts/bench-common.sh
WAIT_SECONDS="${1:-10}"
BINARY="${2:-}"
PORT="${PORT:-19480}"
ADMIN_PORT="${ADMIN_PORT:-19481}"

if [ -z "$BINARY" ]; then
  cargo build --release --locked --bin pod-identity-webhook >&2
  BINARY=target/release/pod-identity-webhook
fi
WORK="$(mktemp -d)"
bench_cleanup_on_exit "$WORK"
cat >"$WORK/kubeconfig" <<'EOF'
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: none, user: {token: none}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
EOF

AWS_ACCESS_KEY_ID=AKIDEXAMPLE AWS_SECRET_ACCESS_KEY=example "$BINARY" agent \
  --bind "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" --associations examples/associations.yaml \
  --cluster-name bench --cluster-arn arn:aws:eks:us-east-1:111122223333:cluster/bench --region us-east-1 \
  --kubeconfig "$WORK/kubeconfig" --sts-endpoint http://127.0.0.1:1 --startup-taint "" 2>"$WORK/log" &
PID=$!
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$ADMIN_PORT") 2>/dev/null && break
  sleep 0.2
done
kill -0 "$PID" 2>/dev/null || { cat "$WORK/log" >&2; exit 1; }
sleep "$WAIT_SECONDS"
grep -E '^(VmRSS|VmHWM)' "/proc/$PID/status"
