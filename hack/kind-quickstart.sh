#!/usr/bin/env bash
# The webhook on a local kind cluster, end to end: creates the cluster, builds the image and loads
# it into kind, generates the webhook's certificates (renewed when they near their end), installs
# manifests/overlays/kind with that image (the webhook, and the credentials agent in namespace
# pod-identity-agent), then runs a demo: a pod whose ServiceAccount has an association gets the
# credential env vars and token volume, the AWS CLI in such a pod obtains credentials from the
# agent and prints the role it assumed, and a pod without one is rejected in an enforced namespace.
#
#   hack/kind-quickstart.sh            set up (idempotent) and run the demo
#   hack/kind-quickstart.sh --helm     the same, installing the Helm chart charts/pod-identity-webhook
#                                      with examples/kind.yaml instead of applying the kustomize overlay
#   hack/kind-quickstart.sh --delete   delete the cluster and its certificates
#   hack/kind-quickstart.sh --help     this text
#
# Needs docker (with a running daemon), kind, kubectl and openssl; with --helm, helm too (v3.8 or
# newer; hack/helm.sh builds the pinned one). Settings, from the environment:
#   KIND_CLUSTER_NAME  the kind cluster, also the agent's cluster name in session tags and session
#                      names (default pod-identity-webhook)
#   IMAGE              NAME:TAG of the image built, loaded into kind and run by every container of
#                      the overlay (default pod-identity-webhook:dev)
#   AGENT_STS          stand-in (default): moto in the cluster plays STS, and the Secret
#                      pod-identity-agent/pod-identity-agent-aws gets throw-away keys if it does
#                      not exist. aws: real STS with the keys you put in that Secret (docs/agent.md);
#                      the AWS CLI step of the demo is then yours to run with your own role.
#   CERT_RENEW_DAYS    new certificates when the current ones end within this many days (default 30)
# The Secret pod-identity-agent-aws is only ever created, never replaced.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPT="$ROOT/hack/kind-quickstart.sh"

# The comment block above, without its leading "# ".
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$SCRIPT"; }

USE_HELM=""
case "${1:-}" in
  "") ;;
  --delete) DELETE=1 ;;
  --helm) USE_HELM=1 ;;
  -h | --help) usage; exit 0 ;;
  *) usage >&2; exit 2 ;;
esac
[ $# -le 1 ] || { usage >&2; exit 2; }

cd "$ROOT"

say() { printf '\n==> %s\n' "$*"; }
fail() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }

CLUSTER="${KIND_CLUSTER_NAME:-pod-identity-webhook}"
IMAGE="${IMAGE:-pod-identity-webhook:dev}"
AGENT_STS="${AGENT_STS:-stand-in}"
CERT_RENEW_DAYS="${CERT_RENEW_DAYS:-30}"
NS="pod-identity-webhook"
AGENT_NS="pod-identity-agent"

# Every setting ends up in a path, a YAML file or a command line: only well-formed values pass.
[[ $CLUSTER =~ ^[a-z0-9]([a-z0-9-]{0,48}[a-z0-9])?$ ]] ||
  fail "KIND_CLUSTER_NAME must be lowercase letters, digits and '-' (at most 50): got '$CLUSTER'"
IMAGE_NAME="${IMAGE%:*}"
IMAGE_TAG="${IMAGE##*:}"
if [[ $IMAGE != *:* || $IMAGE_TAG == */* ]] ||
  ! [[ $IMAGE_NAME =~ ^[a-z0-9]+([._-]+[a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)*$ ]] ||
  ! [[ $IMAGE_TAG =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]]; then
  fail "IMAGE must be NAME:TAG (lowercase name, optional registry, a tag): got '$IMAGE'"
fi
case "$AGENT_STS" in
  stand-in | aws) ;;
  *) fail "AGENT_STS must be stand-in or aws: got '$AGENT_STS'" ;;
esac
[[ $CERT_RENEW_DAYS =~ ^[0-9]{1,4}$ ]] || fail "CERT_RENEW_DAYS must be a number of days: got '$CERT_RENEW_DAYS'"

# Per cluster, git-ignored: the certificates and the kustomization the script applies.
STATE="certs/out/kind-$CLUSTER"

check_prerequisites() {
  local missing=()
  command -v docker >/dev/null 2>&1 ||
    missing+=("docker: install Docker Engine or Docker Desktop (https://docs.docker.com/engine/install/)")
  command -v kind >/dev/null 2>&1 ||
    missing+=("kind: go install sigs.k8s.io/kind@latest, or see https://kind.sigs.k8s.io/docs/user/quick-start/#installation")
  command -v kubectl >/dev/null 2>&1 ||
    missing+=("kubectl: see https://kubernetes.io/docs/tasks/tools/#kubectl")
  command -v openssl >/dev/null 2>&1 ||
    missing+=("openssl: your system's openssl package (checks when the certificates end)")
  if [ -n "$USE_HELM" ]; then
    command -v helm >/dev/null 2>&1 ||
      missing+=("helm (for --helm): hack/helm.sh builds the pinned one (needs Go) and prints its path; put it on PATH, or see https://helm.sh/docs/intro/install/")
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    printf 'missing prerequisites:\n' >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 1
  fi
  if ! docker info >/dev/null 2>&1; then
    fail "docker is installed but its daemon does not answer (start Docker, or check that your user may use it: docker info)"
  fi
}

check_prerequisites
KUBECTL=(kubectl --context "kind-$CLUSTER")

if [ -n "${DELETE:-}" ]; then
  say "deleting kind cluster $CLUSTER"
  kind delete cluster --name "$CLUSTER"
  rm -rf "$STATE"
  exit 0
fi

# What a workload that did not become ready left behind: its status and events (a DaemonSet whose
# pods are refused says why here), its pods' and their events, and their logs.
diagnose() {
  local ns="$1" workload="$2" selector="$3"
  {
    printf '\n--- %s (namespace %s): status and events\n' "$workload" "$ns"
    "${KUBECTL[@]}" -n "$ns" describe "$workload" || true
    printf '\n--- its pods and their events\n'
    "${KUBECTL[@]}" -n "$ns" get pods -l "$selector" -o wide || true
    "${KUBECTL[@]}" -n "$ns" describe pods -l "$selector" || true
    printf '\n--- logs\n'
    "${KUBECTL[@]}" -n "$ns" logs "$workload" --all-containers --tail=50 || true
  } >&2
}

# Waits for a pod to succeed; returns at once when it cannot (failed, or a container that cannot
# be created), else after `seconds`.
wait_for_pod() {
  local ns="$1" pod="$2" seconds="$3" phase reasons
  local deadline=$((SECONDS + seconds))
  while :; do
    phase="$("${KUBECTL[@]}" -n "$ns" get pod "$pod" -o jsonpath='{.status.phase}' 2>/dev/null || true)"
    case "$phase" in
      Succeeded) return 0 ;;
      Failed) echo "pod $pod failed" >&2; return 1 ;;
    esac
    reasons="$("${KUBECTL[@]}" -n "$ns" get pod "$pod" \
      -o jsonpath='{.status.containerStatuses[*].state.waiting.reason}' 2>/dev/null || true)"
    case "$reasons" in
      *InvalidImageName* | *CreateContainerConfigError* | *CreateContainerError*)
        echo "pod $pod cannot start: $reasons" >&2; return 1 ;;
    esac
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "pod $pod is still ${phase:-not there} after ${seconds}s" >&2
      return 1
    fi
    sleep 2
  done
}

say "kind cluster $CLUSTER"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  echo "exists; reusing it"
else
  kind create cluster --name "$CLUSTER" --wait 120s
fi

say "building $IMAGE and loading it into kind"
docker build -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

say "certificates for Service $NS/$NS"
mkdir -p "$STATE"
# -checkend: fails when the certificate ends within that many seconds (or cannot be read).
if [ -s "$STATE/ca.crt" ] && [ -s "$STATE/tls.key" ] && [ -s "$STATE/tls.crt" ] &&
  openssl x509 -checkend $((CERT_RENEW_DAYS * 86400)) -noout -in "$STATE/tls.crt" >/dev/null 2>&1; then
  echo "valid for more than $CERT_RENEW_DAYS days; reusing $STATE"
else
  echo "none, or ending within $CERT_RENEW_DAYS days: new ones in $STATE"
  # The image has the binary (no Rust toolchain needed here). The files are made inside a
  # container and copied out: no bind mount, so rootless Docker and SELinux hosts work alike.
  CID="$(docker create "$IMAGE" certs --out /tmp/certs --service "$NS" --namespace "$NS")"
  NEW="$(mktemp -d "$STATE/new.XXXXXX")"
  trap 'docker rm -f "$CID" >/dev/null 2>&1 || true; rm -rf "$NEW"' EXIT
  docker start -a "$CID" >/dev/null
  docker cp "$CID:/tmp/certs/." "$NEW/"
  for f in ca.crt tls.crt tls.key; do
    [ -s "$NEW/$f" ] || fail "the image's certs command did not write $f"
  done
  chmod 600 "$NEW/tls.key" "$NEW/ca.key" 2>/dev/null || true
  for f in ca.crt ca.key tls.crt tls.key; do
    if [ -e "$NEW/$f" ]; then mv -f "$NEW/$f" "$STATE/$f"; fi
  done
  docker rm -f "$CID" >/dev/null 2>&1 || true
  rm -rf "$NEW"
  trap - EXIT
fi
CA_BUNDLE="$(base64 < "$STATE/ca.crt" | tr -d '\n')"

if [ "$AGENT_STS" = stand-in ]; then
  say "STS stand-in: moto in server mode (namespace sts-demo)"
  "${KUBECTL[@]}" apply -f hack/demo/sts-moto.yaml
  if ! "${KUBECTL[@]}" -n sts-demo rollout status deployment/moto --timeout=180s; then
    diagnose sts-demo deployment/moto app.kubernetes.io/name=moto
    fail "moto did not become ready"
  fi
fi

if [ -n "$USE_HELM" ]; then
  say "installing charts/pod-identity-webhook (examples/kind.yaml) with $IMAGE"
else
  say "installing manifests/overlays/kind with $IMAGE"
fi
"${KUBECTL[@]}" apply -f manifests/base/namespace.yaml -f manifests/agent/namespace.yaml
# The agent's own AWS credentials: created when missing, never replaced (real keys a user put
# there stay). moto takes any keys.
if "${KUBECTL[@]}" -n "$AGENT_NS" get secret pod-identity-agent-aws >/dev/null 2>&1; then
  echo "Secret $AGENT_NS/pod-identity-agent-aws exists; left as it is"
elif [ "$AGENT_STS" = stand-in ]; then
  "${KUBECTL[@]}" -n "$AGENT_NS" create secret generic pod-identity-agent-aws \
    --from-literal=AWS_ACCESS_KEY_ID=AKIAMOTODEMO00000000 \
    --from-literal=AWS_SECRET_ACCESS_KEY=moto-demo-not-a-secret
else
  fail "AGENT_STS=aws needs the agent's keys first: ${KUBECTL[*]} -n $AGENT_NS create secret generic pod-identity-agent-aws --from-literal=AWS_ACCESS_KEY_ID=... --from-literal=AWS_SECRET_ACCESS_KEY=... (docs/agent.md)"
fi
"${KUBECTL[@]}" -n "$NS" create secret tls pod-identity-webhook-tls \
  --cert "$STATE/tls.crt" --key "$STATE/tls.key" --dry-run=client -o yaml |
  "${KUBECTL[@]}" apply -f -

if [ -n "$USE_HELM" ]; then
  # The chart with examples/kind.yaml (the same objects as manifests/overlays/kind), the image
  # just loaded, this cluster's name and the CA of the Secret above; with real STS, without the
  # stand-in's endpoint. The script made the agent's namespace (its Secret lives there), so the
  # chart does not. Every value is one the checks above let through (no commas, no quotes).
  HELM_ARGS=(upgrade --install pod-identity-webhook "$ROOT/charts/pod-identity-webhook"
    --namespace "$NS" --kube-context "kind-$CLUSTER"
    -f "$ROOT/charts/pod-identity-webhook/examples/kind.yaml"
    --set-string "image.repository=$IMAGE_NAME" --set-string "image.tag=$IMAGE_TAG"
    --set-string "agent.clusterName=$CLUSTER" --set-string "certificates.caBundle=$CA_BUNDLE"
    --set agent.createNamespace=false)
  if [ "$AGENT_STS" = aws ]; then
    HELM_ARGS+=(--set-string agent.stsEndpoint=)
  fi
  if ! helm "${HELM_ARGS[@]}"; then
    fail "helm could not install the chart (objects an earlier kustomize install made are not Helm's: hack/kind-quickstart.sh --delete, then again with --helm)"
  fi
fi
# Without --helm (the block is not indented: its here-documents are the file as written).
if [ -z "$USE_HELM" ]; then
# manifests/overlays/kind, with the image just loaded and this cluster's name; with real STS,
# without the stand-in's endpoint. Written next to the certificates (kustomize wants a relative
# path to the overlay).
OVERLAY="$STATE/overlay"
mkdir -p "$OVERLAY"
{
  cat <<EOF
# Written by hack/kind-quickstart.sh for kind cluster $CLUSTER; rewritten on every run.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../../../manifests/overlays/kind
images:
  - name: pod-identity-webhook
    newName: "$IMAGE_NAME"
    newTag: "$IMAGE_TAG"
patches:
  - patch: |-
      apiVersion: apps/v1
      kind: DaemonSet
      metadata: {name: pod-identity-agent, namespace: $AGENT_NS}
      spec:
        template:
          spec:
            containers:
              - name: agent
                env:
                  - {name: POD_IDENTITY_AGENT_CLUSTER_NAME, value: "$CLUSTER"}
EOF
  if [ "$AGENT_STS" = aws ]; then
    cat <<'EOF'
                  - {name: POD_IDENTITY_AGENT_STS_ENDPOINT, $patch: delete}
EOF
  fi
} >"$OVERLAY/kustomization.yaml"
"${KUBECTL[@]}" apply -k "$OVERLAY"
for kind in mutatingwebhookconfiguration validatingwebhookconfiguration; do
  "${KUBECTL[@]}" patch "$kind" pod-identity-webhook --type=json \
    -p "[{\"op\":\"add\",\"path\":\"/webhooks/0/clientConfig/caBundle\",\"value\":\"$CA_BUNDLE\"}]"
done
fi
# A new image under the same tag: restart so the pods run what was just built.
"${KUBECTL[@]}" -n "$NS" rollout restart deployment/pod-identity-webhook
if ! "${KUBECTL[@]}" -n "$NS" rollout status deployment/pod-identity-webhook --timeout=180s; then
  diagnose "$NS" deployment/pod-identity-webhook app.kubernetes.io/name=pod-identity-webhook
  fail "the webhook did not become ready"
fi
"${KUBECTL[@]}" -n "$AGENT_NS" rollout restart daemonset/pod-identity-agent
if ! "${KUBECTL[@]}" -n "$AGENT_NS" rollout status daemonset/pod-identity-agent --timeout=180s; then
  diagnose "$AGENT_NS" daemonset/pod-identity-agent app.kubernetes.io/name=pod-identity-agent
  fail "the credentials agent did not become ready"
fi

say "demo: namespace team-a (enforced), ServiceAccounts carts (associated) and nobody"
"${KUBECTL[@]}" apply -f hack/demo/namespace.yaml
"${KUBECTL[@]}" -n team-a delete pod carts carts-aws no-identity --ignore-not-found --wait=true >/dev/null

say "demo: a pod on ServiceAccount carts gets its credentials"
"${KUBECTL[@]}" apply -f hack/demo/pod-carts.yaml
ENV_NAMES="$("${KUBECTL[@]}" -n team-a get pod carts -o jsonpath='{.spec.containers[0].env[*].name}')"
VOLUMES="$("${KUBECTL[@]}" -n team-a get pod carts -o jsonpath='{.spec.volumes[*].name}')"
echo "env: $ENV_NAMES"
echo "volumes: $VOLUMES"
for want in AWS_CONTAINER_CREDENTIALS_FULL_URI AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE; do
  grep -qw "$want" <<<"$ENV_NAMES" ||
    fail "pod carts lacks $want: is the webhook reachable? ${KUBECTL[*]} -n $NS logs deploy/pod-identity-webhook"
done
grep -qw eks-pod-identity-token <<<"$VOLUMES" || fail "pod carts lacks the eks-pod-identity-token volume"

if [ "$AGENT_STS" = stand-in ]; then
  say "demo: the AWS CLI in a pod on ServiceAccount carts obtains credentials from the agent"
  "${KUBECTL[@]}" apply -f hack/demo/pod-carts-aws.yaml
  if ! wait_for_pod team-a carts-aws 180; then
    "${KUBECTL[@]}" -n team-a describe pod carts-aws >&2 || true
    "${KUBECTL[@]}" -n team-a logs carts-aws >&2 || true
    "${KUBECTL[@]}" -n "$AGENT_NS" logs daemonset/pod-identity-agent --tail=20 >&2 || true
    fail "the AWS CLI in pod carts-aws did not obtain credentials"
  fi
  ASSUMED="$("${KUBECTL[@]}" -n team-a logs carts-aws)"
  echo "the pod is: $ASSUMED"
  grep -q ':assumed-role/carts/eks-' <<<"$ASSUMED" ||
    fail "pod carts-aws is not running as the association's role (arn:aws:iam::111122223333:role/carts)"
else
  say "demo: real STS (AGENT_STS=aws): the AWS CLI step is skipped"
  echo "The demo's role arn:aws:iam::111122223333:role/carts is not in your account. Associate a role of"
  echo "yours and give it the trust policy (docs/agent.md, \"kind with real STS\"), then run the AWS CLI there."
fi

say "demo: a pod on ServiceAccount nobody is rejected"
if OUTPUT="$("${KUBECTL[@]}" apply -f hack/demo/pod-no-identity.yaml 2>&1)"; then
  echo "$OUTPUT"
  fail "pod no-identity was admitted; it should have been denied in the enforced namespace team-a"
fi
echo "$OUTPUT"
grep -q 'has no Pod Identity association or IRSA role' <<<"$OUTPUT" ||
  fail "pod no-identity was refused, but not by the webhook's policy"

say "done"
cat <<EOF
The webhook runs in namespace $NS of kind cluster $CLUSTER, the credentials agent in namespace
$AGENT_NS (its session tags name the cluster $CLUSTER), both from image $IMAGE.
  ${KUBECTL[*]} -n $NS logs deploy/pod-identity-webhook          # one line per admission decision
  ${KUBECTL[*]} -n $NS port-forward svc/pod-identity-webhook 8080  # then curl localhost:8080/metrics
  ${KUBECTL[*]} -n $AGENT_NS logs ds/pod-identity-agent          # the credentials agent (docs/agent.md)
Associations: the ConfigMaps $NS/pod-identity-webhook-config and $AGENT_NS/pod-identity-agent-associations
(the same list in both; re-read without a restart). Certificates: $STATE (renewed by a rerun when they
end within $CERT_RENEW_DAYS days). Delete everything: hack/kind-quickstart.sh --delete
EOF
