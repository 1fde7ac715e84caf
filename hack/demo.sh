#!/usr/bin/env bash
# The agent-pod demo of `make run`, also run by tests/e2e/test_demo.py: the release-bot of
# examples/ runs as a pod, asks the decision API before it acts, and a person approves its
# production deploy with `kubectl agent approve`.
#
# Needs: KUBECONFIG of a local cluster with its node, where the operator and the admission
# process run and examples/ is applied; the project image on the node; STATE_DIR of that
# cluster (to mint the approver's kubeconfig from its client CA). Every step checks its
# outcome (allow, deny, escalate as the examples say): the script fails when one differs.
# Output: what happens, on stderr; LOGS (default: a temp dir) keeps the waiting check's log.
set -euo pipefail
cd "$(dirname "$0")/.."

AI="${AI:-.venv/bin/agent-identity}"
KUBECTL_AGENT="${KUBECTL_AGENT:-.venv/bin/kubectl-agent}"
STATE_DIR="${STATE_DIR:?set STATE_DIR to the state directory of the local cluster}"
LOGS="${LOGS:-$(mktemp -d)}"
NS=payments
APPROVER=sre-lead@example.com   # named by the prod-deploys ApprovalPolicy (examples/)

in_pod() { kubectl exec -n "$NS" deploy/release-bot -c agent -- agent-identity "$@"; }

# expect CODE WHAT ARGS...: run `agent-identity ARGS` in the pod; its exit code must be
# CODE (0 allow, 1 deny, 3 needs approval).
expect() {
  local want=$1 what=$2 got=0
  shift 2
  echo "-- $what:" >&2
  local out
  out=$(in_pod "$@" 2>&1) || got=$?
  # (kubectl exec adds a line for a non-zero exit; the answer itself says it all)
  printf '%s\n' "$out" | grep -v '^command terminated with exit code' >&2 || true
  if [ "$got" != "$want" ]; then
    echo "demo: expected exit $want from 'agent-identity $*' in the pod, got $got" >&2
    exit 1
  fi
}

echo "== running the release-bot agent as a pod (examples/pods/)" >&2
kubectl apply -f examples/pods/ >&2
kubectl rollout status deploy/release-bot -n "$NS" --timeout=180s >&2
kubectl get pods -n "$NS" -l agentidentity.io/agent=release-bot -o wide >&2

echo "== inside the pod: who am I, and may I ...?" >&2
in_pod whoami >&2
expect 0 "deploy.staging of payments-api (the deployer scope allows it)" \
  check deploy.staging --resource service/payments-api --resource-prop env=staging
expect 1 "github.admin.delete-repo (the deployer scope denies github.admin.**)" \
  check github.admin.delete-repo
expect 1 "deploy.production outside a change window (the scope's constraint says no)" \
  check deploy.production --resource service/payments-api --resource-prop env=production
echo "-- deploy.production inside the change window: sensitive, so it waits for a person" >&2
in_pod check deploy.production --resource service/payments-api --resource-prop env=production \
  --context change_window=true --wait 300 >"$LOGS/demo-check.log" 2>&1 &
CHECK_PID=$!

REQ=
for _ in $(seq 1 150); do
  REQ=$(kubectl get approvalrequests -n "$NS" -o name 2>/dev/null | head -1)
  [ -n "$REQ" ] && break
  sleep 0.2
done
if [ -z "$REQ" ]; then
  echo "demo: no ApprovalRequest appeared; the waiting check said:" >&2
  cat "$LOGS/demo-check.log" >&2
  exit 1
fi
"$KUBECTL_AGENT" approvals -n "$NS" >&2

echo "== $APPROVER approves ${REQ#*/}" >&2
kubectl create rolebinding demo-approvers -n "$NS" --clusterrole=agentidentity-approver \
  --user="$APPROVER" --dry-run=client -o yaml | kubectl apply -f - >&2
APPROVER_KUBECONFIG=$("$AI" devcluster user --state-dir "$STATE_DIR" "$APPROVER")
KUBECONFIG="$APPROVER_KUBECONFIG" "$KUBECTL_AGENT" approve "${REQ#*/}" -n "$NS" \
  --reason "make run demo: change approved" >&2

got=0
wait "$CHECK_PID" || got=$?
echo "-- the waiting check in the pod now says:" >&2
cat "$LOGS/demo-check.log" >&2
if [ "$got" != 0 ]; then
  echo "demo: the approved deploy.production check exited $got, not 0 (allow)" >&2
  exit 1
fi
echo "== demo done: allowed, denied, denied by context, escalated and approved by a person" >&2
