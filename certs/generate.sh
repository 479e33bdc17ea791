#!/usr/bin/env bash
# Makes a CA and a serving certificate for the webhook Service with the binary's `certs`
# subcommand, writes them to certs/out/ (git-ignored) and prints the base64 caBundle.
#
#   certs/generate.sh                 # Service pod-identity-webhook in namespace pod-identity-webhook
#   SERVICE=webhook NAMESPACE=platform certs/generate.sh certs/out-platform
#
# Uses `pod-identity-webhook` from PATH, else POD_IDENTITY_WEBHOOK_BIN, else `cargo run`.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${1:-certs/out}"
SERVICE="${SERVICE:-pod-identity-webhook}"
NAMESPACE="${NAMESPACE:-pod-identity-webhook}"

if [ -n "${POD_IDENTITY_WEBHOOK_BIN:-}" ]; then
  BIN=("$POD_IDENTITY_WEBHOOK_BIN")
elif command -v pod-identity-webhook >/dev/null 2>&1; then
  BIN=(pod-identity-webhook)
elif command -v cargo >/dev/null 2>&1; then
  BIN=(cargo run --quiet --locked --bin pod-identity-webhook --)
else
  echo "need the pod-identity-webhook binary (on PATH or POD_IDENTITY_WEBHOOK_BIN) or cargo to build it" >&2
  exit 1
fi

mkdir -p "$OUT"
# Extra names so the same pair also serves local runs (`serve --tls-cert certs/out/tls.crt ...`).
"${BIN[@]}" certs --out "$OUT" --service "$SERVICE" --namespace "$NAMESPACE" \
  --san localhost --san 127.0.0.1 > "$OUT/ca-bundle.b64"
echo "wrote $OUT/{ca.crt,ca.key,tls.crt,tls.key}; caBundle in $OUT/ca-bundle.b64:" >&2
cat "$OUT/ca-bundle.b64"
