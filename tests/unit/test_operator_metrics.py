"""The operator's registry gauges, from what each agent's last reconcile saw (no cluster)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kubernetes import client
from prometheus_client import REGISTRY

from agent_identity.api import Phase
from agent_identity.controller.children import ChildApplier
from agent_identity.controller.reconciler import Reconciler
from agent_identity.lifecycle import OVERDUE_GRACE

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
NS = "metrics-unit"


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_gauges_count_phases_owners_and_overdue_agents() -> None:
    api = client.ApiClient()  # never called: only the bookkeeping is exercised
    rec = Reconciler(api, applier=ChildApplier(api))
    rec._observe(NS, "ok", Phase.ACTIVE, 2, lifetime=NOW + timedelta(days=1))
    rec._observe(NS, "late", Phase.ACTIVE, 1, lifetime=NOW)
    rec._observe(NS, "orphan", Phase.PENDING, 0, owner_missing=True)
    rec.publish_metrics(NOW + OVERDUE_GRACE)
    assert gauge("agent_identity_agents", namespace=NS, phase="Active") == 2
    assert gauge("agent_identity_agents", namespace=NS, phase="Pending") == 1
    assert gauge("agent_identity_scope_bindings", namespace=NS) == 3
    assert gauge("agent_identity_agents_without_owner", namespace=NS) == 1
    assert gauge("agent_identity_agents_overdue", namespace=NS) == 1

    # Retired by the clock: no longer overdue; an owner set: no longer counted; deleted:
    # its phase series drops to 0 rather than vanishing (dashboards see the change).
    rec._observe(NS, "late", Phase.RETIRED, 1, lifetime=None)
    rec._observe(NS, "orphan", Phase.ACTIVE, 0, owner_missing=False)
    rec.forget(NS, "ok")
    rec.publish_metrics(NOW + OVERDUE_GRACE)
    assert gauge("agent_identity_agents_overdue", namespace=NS) == 0
    assert gauge("agent_identity_agents_without_owner", namespace=NS) == 0
    assert gauge("agent_identity_agents", namespace=NS, phase="Pending") == 0
    assert gauge("agent_identity_agents", namespace=NS, phase="Active") == 1
    assert gauge("agent_identity_agents", namespace=NS, phase="Retired") == 1


def test_reconcile_error_series_exist_from_the_start() -> None:
    api = client.ApiClient()
    Reconciler(api, applier=ChildApplier(api))
    for kind in ("Agent", "AuthorityScope"):
        assert gauge("agent_identity_reconcile_errors_total", kind=kind) is not None, kind
