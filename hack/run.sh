#!/usr/bin/env bash
# `make run`: bring up the local stack and keep it up until Ctrl-C: the cluster (control
# plane + one node), the CRDs, the operator and the admission webhook + decision API run
# locally, the examples, and a running agent pod asking for permission that a person grants.
# Each step is its own marked section. RUN_NODE=0 skips the node (and the pod demo);
# RUN_MODE=incluster (`make run-incluster`) runs the operator and the webhooks as pods of
# the Helm chart instead of processes on this host (needs the node).
set -euo pipefail
cd "$(dirname "$0")/.."

AI="${AI:-.venv/bin/agent-identity}"
STATE_DIR="${STATE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/agent-identity/clusters/default}"
RUN_MODE="${RUN_MODE:-local}"
case "$RUN_MODE" in
  local) ;;
  incluster)
    if [ "${RUN_NODE:-1}" != 1 ]; then
      echo "RUN_MODE=incluster needs the node: unset RUN_NODE" >&2
      exit 2
    fi ;;
  *) echo "RUN_MODE is local or incluster, not '$RUN_MODE'" >&2; exit 2 ;;
esac

# Background processes started by later sections append their pid here.
PIDS=()

cleanup() {
  trap - EXIT INT TERM
  [ -n "${SLEEP_PID:-}" ] && kill "$SLEEP_PID" 2>/dev/null
  echo >&2
  echo "== stopping" >&2
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill "${PIDS[$i]}" 2>/dev/null || true
    wait "${PIDS[$i]}" 2>/dev/null || true
  done
  "$AI" devcluster down --state-dir "$STATE_DIR" || true
}
SLEEP_PID=
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

# --- section: binaries ---------------------------------------------------------------
"$AI" devcluster build >/dev/null

# --- section: control plane (and, by default, its node with the project image) ---------
# RUN_NODE=0: the control plane alone (no root needed; agents are admitted, pods never run).
if [ "${RUN_NODE:-1}" = 1 ]; then
  echo "== starting the local cluster with its node (first time: builds the project image, a few minutes)" >&2
  eval "$("$AI" devcluster up --state-dir "$STATE_DIR" --image)"
else
  echo "== starting the local control plane (no node)" >&2
  eval "$("$AI" devcluster up --state-dir "$STATE_DIR" --no-node)"
fi
export KUBECONFIG PATH

# --- section: CRDs -------------------------------------------------------------------
echo "== installing the CRDs" >&2
"$AI" crds install
LOGS="$STATE_DIR/logs"
AUDIT="$STATE_DIR/audit.jsonl"
mkdir -p "$LOGS"


if [ "$RUN_MODE" = incluster ]; then
# --- section: the operator and webhooks in-cluster, from the chart ---------------------
  # The chart brings its own roles for people (agentidentity-approver, ...).
  echo "== installing the Helm chart with the image built here (RUN_MODE=incluster)" >&2
  .venv/bin/python -m agent_identity.devcluster.helm install "$STATE_DIR"
  LOGS_HINT="kubectl logs -n agent-identity-system deploy/agent-identity-operator (and deploy/agent-identity-admission); audit records are in those logs"
else
# --- section: operator and admission webhook as processes on this host ----------------
  # Who may approve (kubectl agent approve), who may evaluate, the decision API's readers.
  kubectl apply -f manifests/rbac/ >&2
  echo "== starting the operator (log: $LOGS/operator.log)" >&2
  "$AI" operator --kubeconfig "$KUBECONFIG" --cluster-name local \
    --metrics-port "${OPERATOR_METRICS_PORT:-9090}" \
    --audit-file "$AUDIT" >"$LOGS/operator.log" 2>&1 &
  PIDS+=($!)
  echo "== starting the admission webhook and decision API (log: $LOGS/admission.log)" >&2
  "$AI" admission --dev --kubeconfig "$KUBECONFIG" --cluster-name local \
    --metrics-port "${ADMISSION_METRICS_PORT:-9091}" \
    --audit-file "$AUDIT" >"$LOGS/admission.log" 2>&1 &
  PIDS+=($!)
  # The webhook configurations are installed once the admission process serves and its
  # watches have synced; wait for them so the examples go through admission.
  for _ in $(seq 1 120); do
    kubectl get validatingwebhookconfiguration agent-identity >/dev/null 2>&1 && break
    if ! kill -0 "${PIDS[-1]}" 2>/dev/null; then
      echo "the admission process exited; see $LOGS/admission.log" >&2
      tail -20 "$LOGS/admission.log" >&2
      exit 1
    fi
    sleep 0.5
  done
  kubectl get validatingwebhookconfiguration agent-identity >/dev/null
fi


# --- section: examples ---------------------------------------------------------------
echo "== applying examples/" >&2
kubectl apply -f examples/ >&2
kubectl wait --for=condition=Ready agents --all -n payments --timeout=60s >&2
kubectl get agents,authorityscopes,approvalpolicies -n payments >&2
.venv/bin/kubectl-agent list -A >&2


# --- section: a running agent asks for permission, a person grants it (needs the node) --
DEMO=no
if [ -n "$(kubectl get nodes -o name 2>/dev/null)" ]; then
  DEMO=yes
  STATE_DIR="$STATE_DIR" LOGS="$LOGS" AI="$AI" bash hack/demo.sh
fi


# --- ready ------------------------------------------------------------------------------
cat >&2 <<MSG

== the local cluster is up, RUN_MODE=$RUN_MODE ($(kubectl version -o json | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tail -1))
In another terminal:

  export KUBECONFIG=$KUBECONFIG
  export PATH=$(dirname "$(command -v kubectl)"):\$PATH
  kubectl get agents,authorityscopes -A
  kubectl agent list -A                      # with $(pwd)/.venv/bin on PATH
  kubectl agent can-i release-bot -n payments deploy.production service/payments-api --resource-prop env=production --context change_window=true
MSG
if [ "$DEMO" = yes ]; then
  cat >&2 <<MSG
  kubectl exec -n payments deploy/release-bot -- agent-identity check deploy.staging --resource service/payments-api --resource-prop env=staging
  kubectl agent suspend release-bot -n payments    # its pods are deleted within seconds
  kubectl agent resume release-bot -n payments
MSG
fi
cat >&2 <<MSG

Logs: ${LOGS_HINT:-$STATE_DIR/logs/ (operator.log, admission.log); audit records: $AUDIT}.
Press Ctrl-C to stop.
MSG
echo "KUBECONFIG=$KUBECONFIG"

# Stay up until Ctrl-C; `sleep & wait` lets the trap run at once.
while true; do
  sleep 3600 &
  SLEEP_PID=$!
  wait "$SLEEP_PID" || true
done
