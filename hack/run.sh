#!/usr/bin/env bash
# `make run`: bring up the local stack and keep it up until Ctrl-C.
# Each step is its own marked section; later steps (CRDs, operator, admission
# webhook, examples) are added as new sections before "wait".
set -euo pipefail
cd "$(dirname "$0")/.."

AI="${AI:-.venv/bin/agent-identity}"
STATE_DIR="${STATE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/agent-identity/clusters/default}"

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

# --- section: control plane ----------------------------------------------------------
echo "== starting the local control plane" >&2
eval "$("$AI" devcluster up --state-dir "$STATE_DIR")"
export KUBECONFIG PATH

# --- section: CRDs (later issue) -----------------------------------------------------

# --- section: operator and admission webhook (later issue) ---------------------------

# --- section: examples (later issue) -------------------------------------------------

# --- ready ------------------------------------------------------------------------------
cat >&2 <<MSG

== the control plane is up ($(kubectl version -o json | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tail -1))
In another terminal:

  export KUBECONFIG=$KUBECONFIG
  export PATH=$(dirname "$(command -v kubectl)"):\$PATH
  kubectl get namespaces

Logs: $STATE_DIR/logs/. Press Ctrl-C to stop.
MSG
echo "KUBECONFIG=$KUBECONFIG"

# Stay up until Ctrl-C; `sleep & wait` lets the trap run at once.
while true; do
  sleep 3600 &
  SLEEP_PID=$!
  wait "$SLEEP_PID" || true
done
