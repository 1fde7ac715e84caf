"""Audit records: one JSON line per decision, approval decision, lifecycle change and admission.

Records go to stdout and, optionally, to a file (append-only JSON lines) that
`kubectl agent audit` reads back. Keys follow one schema for every record kind
so a report can join them; OpenTelemetry-style ``gen_ai.agent.id`` /
``gen_ai.agent.name`` name the agent as tracing backends expect.
"""

from __future__ import annotations

import json
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO

RecordKind = Literal["decision", "approval", "lifecycle", "admission", "pod-deleted"]


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_request_id() -> str:
    return uuid.uuid4().hex


def record(
    kind: RecordKind,
    *,
    agent_uri: str | None = None,
    agent_uid: str | None = None,
    agent_name: str | None = None,
    namespace: str | None = None,
    actor: str | None = None,
    outcome: str | None = None,
    reason: str | None = None,
    rule: str | None = None,
    request_id: str | None = None,
    at: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Build one audit record (pure: the caller writes it with ``AuditLog.write``)."""
    out: dict[str, Any] = {
        "kind": kind,
        "at": at or now_rfc3339(),
        "requestId": request_id or new_request_id(),
        "namespace": namespace,
        "agent": agent_uri,
        "agentUid": agent_uid,
        "gen_ai.agent.id": agent_uid,
        "gen_ai.agent.name": agent_name,
        "actor": actor,
        "outcome": outcome,
        "reason": reason,
        "rule": rule,
    }
    out.update(extra)
    return {k: v for k, v in out.items() if v is not None}


@dataclass
class AuditLog:
    """Writes records as JSON lines to a stream (stdout by default) and optionally a file."""

    stream: TextIO | None = field(default_factory=lambda: sys.stdout)
    path: Path | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # The file stays open (append mode) and is flushed per record: opening it per record
    # was the largest cost of a decision.
    _fh: TextIO | None = field(default=None, repr=False)

    def write(self, rec: dict[str, Any]) -> None:
        line = json.dumps(rec, separators=(",", ":"), sort_keys=True, default=str)
        with self._lock:
            if self.stream is not None:
                self.stream.write("AUDIT " + line + "\n")
                self.stream.flush()
            if self.path is not None:
                if self._fh is None or self._fh.closed:
                    self._fh = self.path.open("a", encoding="utf-8")
                self._fh.write(line + "\n")
                self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Records from an audit file (or a log with ``AUDIT {...}`` lines), skipping other lines."""
    with path.open(encoding="utf-8") as fh:
        for raw in fh:
            line = raw.strip()
            if line.startswith("AUDIT "):
                line = line[len("AUDIT ") :]
            if not line.startswith("{"):
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and "kind" in rec:
                yield rec
