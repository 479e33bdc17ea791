#!/usr/bin/env bash
# The webhook on a local kind cluster, end to end:
#   creates the cluster, builds the image and loads it into kind, generates certificates, installs
#   manifests/overlays/kind (the webhook and the credentials agent, with moto in the cluster as a
#   stand-in for STS), then runs a demo: a pod whose ServiceAccount has an association gets the
#   credential env vars and token volume, and the AWS CLI in such a pod obtains credentials from
#   the agent and prints the role it assumed; a pod without one is rejected in an enforced
#   namespace.
#
#   hack/kind-quickstart.sh            # set up (idempotent) and run the demo
#   hack/kind-quickstart.sh --delete   # delete the cluster
#
# Needs docker (with a running daemon), kind and kubectl. KIND_CLUSTER_NAME overrides the cluster
# name (default pod-identity-webhook); IMAGE the image tag (default pod-identity-webhook:dev).
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER="${KIND_CLUSTER_NAME:-pod-identity-webhook}"
IMAGE="${IMAGE:-pod-identity-webhook:dev}"
NS=pod-identity-webhook
AGENT_NS=pod-identity-agent
CERTS="certs/out/kind-$CLUSTER"

say() { printf '\n==> %s\n' "$*"; }
fail() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }

case "${1:-}" in
  "" ) ;;
  --delete) DELETE=1 ;;
  -h|--help) usage; exit 0 ;;
  *) usage >&2; exit 2 ;;
esac

check_prerequisites() {
  local missing=()
  command -v docker >/dev/null 2>&1 ||
    missing+=("docker: install Docker Engine or Docker Desktop (https://docs.docker.com/engine/install/)")
  command -v kind >/dev/null 2>&1 ||
    missing+=("kind: go install sigs.k8s.io/kind@latest, or see https://kind.sigs.k8s.io/docs/user/quick-start/#installation")
  command -v kubectl >/dev/null 2>&1 ||
    missing+=("kubectl: see https://kubernetes.io/docs/tasks/tools/#kubectl")
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
  rm -rf "$CERTS"
  exit 0
fi

say "kind cluster $CLUSTER"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  echo "exists; reusing it"
else
  kind create cluster --name "$CLUSTER" --wait 120s
fi

say "building $IMAGE"
docker build -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

say "certificates for Service $NS/$NS"
if [ ! -s "$CERTS/tls.crt" ]; then
  mkdir -p "$CERTS"
  # The image has the binary: no Rust toolchain needed on this machine.
  docker run --rm --user "$(id -u):$(id -g)" -v "$PWD/$CERTS:/out" "$IMAGE" \
    certs --out /out --service "$NS" --namespace "$NS" >/dev/null
fi
CA_BUNDLE="$(base64 < "$CERTS/ca.crt" | tr -d '\n')"

say "STS stand-in: moto in server mode (namespace sts-demo)"
"${KUBECTL[@]}" apply -f hack/demo/sts-moto.yaml
"${KUBECTL[@]}" -n sts-demo rollout status deployment/moto --timeout=180s ||
  fail "moto did not become ready: ${KUBECTL[*]} -n sts-demo describe pods"

say "installing manifests/overlays/kind"
"${KUBECTL[@]}" apply -f manifests/base/namespace.yaml -f manifests/agent/namespace.yaml
# The agent's own AWS credentials. moto takes any keys; with an AWS account put real ones here
# and remove POD_IDENTITY_AGENT_STS_ENDPOINT from manifests/overlays/kind/agent.yaml.
"${KUBECTL[@]}" -n "$AGENT_NS" create secret generic pod-identity-agent-aws \
  --from-literal=AWS_ACCESS_KEY_ID=AKIAMOTODEMO00000000 \
  --from-literal=AWS_SECRET_ACCESS_KEY=moto-demo-not-a-secret --dry-run=client -o yaml |
  "${KUBECTL[@]}" apply -f -
"${KUBECTL[@]}" -n "$NS" create secret tls pod-identity-webhook-tls \
  --cert "$CERTS/tls.crt" --key "$CERTS/tls.key" --dry-run=client -o yaml |
  "${KUBECTL[@]}" apply -f -
"${KUBECTL[@]}" apply -k manifests/overlays/kind
for kind in mutatingwebhookconfiguration validatingwebhookconfiguration; do
  "${KUBECTL[@]}" patch "$kind" pod-identity-webhook --type=json \
    -p "[{\"op\":\"add\",\"path\":\"/webhooks/0/clientConfig/caBundle\",\"value\":\"$CA_BUNDLE\"}]"
done
# A new image under the same tag: restart so the pods run what was just built.
"${KUBECTL[@]}" -n "$NS" rollout restart deployment/pod-identity-webhook
if ! "${KUBECTL[@]}" -n "$NS" rollout status deployment/pod-identity-webhook --timeout=180s; then
  "${KUBECTL[@]}" -n "$NS" get pods -o wide >&2 || true
  "${KUBECTL[@]}" -n "$NS" logs deployment/pod-identity-webhook --tail=50 >&2 || true
  fail "the webhook did not become ready"
fi
"${KUBECTL[@]}" -n "$AGENT_NS" rollout restart daemonset/pod-identity-agent
if ! "${KUBECTL[@]}" -n "$AGENT_NS" rollout status daemonset/pod-identity-agent --timeout=180s; then
  "${KUBECTL[@]}" -n "$AGENT_NS" get pods -l app.kubernetes.io/name=pod-identity-agent -o wide >&2 || true
  "${KUBECTL[@]}" -n "$AGENT_NS" logs daemonset/pod-identity-agent --all-containers --tail=50 >&2 || true
  fail "the credentials agent did not become ready"
fi

say "demo: namespace team-a (enforced), ServiceAccounts carts (associated) and nobody"
"${KUBECTL[@]}" apply -f hack/demo/namespace.yaml
"${KUBECTL[@]}" -n team-a delete pod carts no-identity --ignore-not-found --wait=true >/dev/null

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

say "demo: the AWS CLI in a pod on ServiceAccount carts obtains credentials from the agent"
"${KUBECTL[@]}" -n team-a delete pod carts-aws --ignore-not-found --wait=true >/dev/null
"${KUBECTL[@]}" apply -f hack/demo/pod-carts-aws.yaml
if ! "${KUBECTL[@]}" -n team-a wait pod/carts-aws --for=jsonpath='{.status.phase}'=Succeeded --timeout=180s; then
  "${KUBECTL[@]}" -n team-a logs carts-aws >&2 || true
  "${KUBECTL[@]}" -n "$AGENT_NS" logs daemonset/pod-identity-agent --tail=20 >&2 || true
  fail "the AWS CLI in pod carts-aws did not obtain credentials"
fi
ASSUMED="$("${KUBECTL[@]}" -n team-a logs carts-aws)"
echo "the pod is: $ASSUMED"
grep -q ':assumed-role/carts/eks-' <<<"$ASSUMED" ||
  fail "pod carts-aws is not running as the association's role (arn:aws:iam::111122223333:role/carts)"

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
The webhook runs in namespace $NS of kind cluster $CLUSTER.
  ${KUBECTL[*]} -n $NS logs deploy/pod-identity-webhook          # one line per admission decision
  ${KUBECTL[*]} -n $NS port-forward svc/pod-identity-webhook 8080  # then curl localhost:8080/metrics
  ${KUBECTL[*]} -n $AGENT_NS logs ds/pod-identity-agent               # the credentials agent (docs/agent.md)
Associations: edit the ConfigMap pod-identity-webhook-config (re-read without restart).
Delete everything: hack/kind-quickstart.sh --delete
EOF
