"""Shared helpers of the chart tests: the helm binary and rendered objects."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from agent_identity.devcluster import helm as helmlib

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / helmlib.CHART
ALL_TOGGLES = {
    "certManager.enabled": "true",
    "serviceMonitor.enabled": "true",
    "prometheusRule.enabled": "true",
    "grafanaDashboard.enabled": "true",
}


def helm_bin() -> Path:
    return helmlib.ensure_helm(progress=True)


def render(values: dict[str, str] | None = None, **kw: Any) -> list[dict[str, Any]]:
    return helmlib.helm_template(ROOT, values, helm=helm_bin(), **kw)


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm_bin()), *args], capture_output=True, text=True, check=False)


def find(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    hits = [
        o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(hits) == 1, f"{len(hits)} {kind} {name or ''} objects"
    return hits[0]


def argocd_health(kind: str, obj: dict[str, Any]) -> dict[str, str]:
    """Run manifests/argocd/health/<kind>.lua as Argo CD does: `obj` in, {status, message} out."""
    import lupa

    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    script = (ROOT / "manifests" / "argocd" / "health" / f"{kind}.lua").read_text()
    fn = lua.eval(
        "function(obj, body) return load(body, 'health', 't', {ipairs=ipairs, "
        "tostring=tostring, pairs=pairs, obj=obj})() end"
    )
    table = lua.table_from(obj, recursive=True)
    result = fn(table, script)
    return {"status": str(result["status"]), "message": str(result["message"] or "")}
