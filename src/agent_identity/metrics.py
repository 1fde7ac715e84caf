"""Prometheus metrics (prefix ``agent_identity_``), defined once for both processes.

The operator exports the agent and reconcile series, the admission process the
admission, decision and approval series; each process serves whichever it
updates on ``/metrics`` (``--metrics-port``). Label values are bounded: no
agent names on high-volume series.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

# operator
AGENTS = Gauge("agent_identity_agents", "Agents by namespace and phase.", ["namespace", "phase"])
RECONCILE_DURATION = Histogram(
    "agent_identity_reconcile_duration_seconds",
    "Time to reconcile one object.",
    ["kind"],
    buckets=_LATENCY_BUCKETS,
)
RECONCILE_ERRORS = Counter(
    "agent_identity_reconcile_errors_total", "Reconciles that failed, by kind.", ["kind"]
)
SCOPE_BINDINGS = Gauge(
    "agent_identity_scope_bindings", "Agent-to-scope bindings by namespace.", ["namespace"]
)
AGENTS_WITHOUT_OWNER = Gauge(
    "agent_identity_agents_without_owner",
    "Agents held Pending because spec.owner is missing or invalid, by namespace.",
    ["namespace"],
)
AGENTS_OVERDUE = Gauge(
    "agent_identity_agents_overdue",
    "Agents past expiresAt or sunsetAt whose status still admits them (Active or Deprecated), "
    "by namespace: the operator has not retired them yet.",
    ["namespace"],
)

# admission
ADMISSION_REQUESTS = Counter(
    "agent_identity_admission_requests_total",
    "Admission reviews answered.",
    ["webhook", "outcome", "reason"],
)
ADMISSION_LATENCY = Histogram(
    "agent_identity_admission_duration_seconds",
    "Time to answer one admission review.",
    ["webhook"],
    buckets=_LATENCY_BUCKETS,
)
TOKEN_TTL_ISSUED = Histogram(
    "agent_identity_token_ttl_seconds",
    "expirationSeconds of the agent tokens injected into pods.",
    buckets=(600, 900, 1800, 3600, 7200, 21600, 43200, 86400),
)
WATCH_LAST_SYNC = Gauge(
    "agent_identity_watch_last_sync_timestamp_seconds",
    "When a watch of the process last delivered its initial list or an event.",
    ["kind"],
)

# decision API and approvals
DECISIONS = Counter("agent_identity_decisions_total", "Decisions made.", ["outcome"])
DECISION_LATENCY = Histogram(
    "agent_identity_decision_duration_seconds",
    "Time to answer one evaluation (after authentication).",
    buckets=_LATENCY_BUCKETS,
)
APPROVALS_PENDING = Gauge(
    "agent_identity_approval_requests_pending", "ApprovalRequests waiting for a decision."
)
APPROVALS_DECIDED = Counter(
    "agent_identity_approval_decisions_total", "Approval decisions recorded.", ["verdict"]
)
APPROVAL_WAIT = Histogram(
    "agent_identity_approval_wait_seconds",
    "Time from an ApprovalRequest's creation to its final state.",
    buckets=(1, 10, 60, 300, 900, 1800, 3600, 7200, 86400),
)
