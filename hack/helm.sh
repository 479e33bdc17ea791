#!/usr/bin/env bash
# Builds the helm binary the chart tests use, from the Go module proxy: the release pinned in
# hack/helm/go.mod (helm.sh/helm/v4), into target/helm/<version>/helm, rebuilt only when that
# version changes (or with --force). Prints the binary's path on its last line.
#
#   hack/helm.sh            build if missing, print the path
#   hack/helm.sh --force    rebuild
#   hack/helm.sh --help
set -euo pipefail

# shellcheck source=hack/lib/force-option.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/force-option.sh"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mod="$root/hack/helm"
# `require helm.sh/helm/v4 vX` on one line, or inside a require ( ... ) block.
version="$(awk '$1 == "require" { $1 = "" ; $0 = $0 } $1 == "helm.sh/helm/v4" && $2 ~ /^v/ { print $2; exit }' "$mod/go.mod")"
if [[ -z $version ]]; then
  echo "helm: no helm.sh/helm/v4 version in $mod/go.mod" >&2
  exit 1
fi
out="${HELM_DIR:-$root/target/helm/$version}"

if [[ $force == 0 && -x "$out/helm" ]]; then
  echo "$out/helm"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "helm: go not found; install Go 1.24 or newer to build helm $version" >&2
  exit 1
fi
mkdir -p "$out"
echo "helm: building helm $version into $out (about a minute with a warm Go cache)" >&2
cd "$mod"
export CGO_ENABLED=0 GOFLAGS="-mod=readonly -trimpath"
# -s -w: no symbol tables, a smaller binary and a quicker link.
go build -ldflags "-s -w" -o "$out/helm.tmp" helm.sh/helm/v4/cmd/helm
mv "$out/helm.tmp" "$out/helm"
echo "$out/helm"
