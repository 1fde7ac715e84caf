"""The Argo CD health checks (Lua, run with lupa) on hand-made status shapes.

tests/integration/test_argocd_health.py runs them on real objects from the cluster.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.chart_support import argocd_health


def _agent(
    phase: str | None, ready: str | None, gen: int = 2, observed: int = 2, **extra: Any
) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": "a", "generation": gen}}
    if phase is None:
        return obj
    conds = (
        [{"type": "Ready", "status": ready, "reason": "R", "message": f"ready={ready}"}]
        if ready
        else []
    )
    conds += extra.pop("conditions", [])
    obj["status"] = {"phase": phase, "observedGeneration": observed, "conditions": conds}
    return obj


@pytest.mark.parametrize(
    ("obj", "status"),
    [
        (_agent(None, None), "Progressing"),
        (_agent("Active", "True"), "Healthy"),
        (_agent("Deprecated", "True"), "Healthy"),
        (_agent("Active", "True", gen=3, observed=2), "Progressing"),
        (_agent("Pending", "False"), "Progressing"),
        (_agent("Pending", "Unknown"), "Progressing"),
        (_agent("Suspended", "False"), "Suspended"),
        (_agent("Retired", "False"), "Degraded"),
        (
            _agent(
                "Pending",
                "False",
                conditions=[{"type": "Stalled", "status": "True", "message": "no owner"}],
            ),
            "Degraded",
        ),
    ],
)
def test_agent(obj: dict[str, Any], status: str) -> None:
    assert argocd_health("Agent", obj)["status"] == status


@pytest.mark.parametrize(
    ("state", "status"),
    [(None, "Progressing"), ("Pending", "Progressing"), ("Approved", "Healthy"),
     ("Denied", "Degraded"), ("Expired", "Degraded"), ("Weird", "Unknown")],
)  # fmt: skip
def test_approval_request(state: str | None, status: str) -> None:
    obj: dict[str, Any] = {"metadata": {"name": "r"}}
    if state:
        obj["status"] = {"state": state, "decisions": [{"verdict": "approve"}]}
    health = argocd_health("ApprovalRequest", obj)
    assert health["status"] == status
    if state:
        assert "(1 decisions)" in health["message"]


@pytest.mark.parametrize("kind", ["AuthorityScope", "ApprovalPolicy"])
def test_configuration_kinds(kind: str) -> None:
    assert argocd_health(kind, {"metadata": {"generation": 1}})["status"] == "Healthy"
    ready = {"type": "Ready", "status": "True", "message": "ok"}
    obj = {
        "metadata": {"generation": 2},
        "status": {"observedGeneration": 2, "conditions": [ready]},
    }
    assert argocd_health(kind, obj)["status"] == "Healthy"
    obj["metadata"]["generation"] = 3
    assert argocd_health(kind, obj)["status"] == "Progressing"
    obj["metadata"]["generation"] = 2
    obj["status"]["conditions"] = [{**ready, "status": "False"}]
    assert argocd_health(kind, obj)["status"] == "Degraded"
