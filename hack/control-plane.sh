#!/usr/bin/env bash
# Builds the test control plane from the Go module proxy: kube-apiserver, kube-controller-manager and
# kubectl of the Kubernetes release pinned in hack/control-plane/go.mod, and etcd.
# The binaries land in target/control-plane/<kubernetes version>/ and are rebuilt only when that
# version changes (or with --force). Prints the directory on its last line.
#
#   hack/control-plane.sh            build if missing, print the directory
#   hack/control-plane.sh --force    rebuild
#   hack/control-plane.sh --help
set -euo pipefail

# shellcheck source=hack/lib/force-option.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/force-option.sh"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mod="$root/hack/control-plane"
version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2; exit }' "$mod/go.mod")"
etcd_version="$(awk '$1 == "go.etcd.io/etcd/server/v3" && $2 ~ /^v/ { print $2; exit }' "$mod/go.mod")"
out="${CONTROL_PLANE_DIR:-$root/target/control-plane/$version-etcd$etcd_version}"
bins=(kube-apiserver kube-controller-manager kubectl etcd)

complete=1
for bin in "${bins[@]}"; do
  [[ -x "$out/$bin" ]] || complete=0
done
if [[ $force == 0 && $complete == 1 ]]; then
  echo "$out"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "control-plane: go not found; install Go 1.24 or newer to build the test control plane" >&2
  exit 1
fi
mkdir -p "$out"
echo "control-plane: building Kubernetes $version and etcd $etcd_version into $out (a few minutes the first time)" >&2
cd "$mod"
export CGO_ENABLED=0 GOFLAGS="-mod=readonly -trimpath"
# -ldflags -s -w: no symbol tables, smaller binaries and quicker links.
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$version" | cut -d. -f2)"
for cmd in kube-apiserver kube-controller-manager kubectl; do
  go build -ldflags "$ldflags" -o "$out/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
  mv "$out/$cmd.tmp" "$out/$cmd"
done
go build -ldflags "-s -w" -o "$out/etcd.tmp" go.etcd.io/etcd/server/v3
mv "$out/etcd.tmp" "$out/etcd"
echo "$out"
