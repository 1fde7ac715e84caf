"""The operator's clock: deadlines (expiresAt / sunsetAt) and retries, without a cluster."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from kubernetes import client

from agent_identity.controller.children import ChildApplier
from agent_identity.controller.handlers import run_clock
from agent_identity.controller.reconciler import Reconciler

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def reconciler() -> Reconciler:
    api = client.ApiClient()  # never called here
    return Reconciler(api, applier=ChildApplier(api))


def test_due_and_seconds_to_next() -> None:
    rec = reconciler()
    assert rec.due(NOW) == [] and rec.seconds_to_next(NOW, cap=1.0) == 1.0
    rec._deadlines[("ns", "later")] = NOW + timedelta(seconds=30)
    rec._deadlines[("ns", "now")] = NOW
    rec._deadlines[("ns", "past")] = NOW - timedelta(seconds=5)
    assert rec.due(NOW) == [("ns", "now"), ("ns", "past")]
    assert rec.seconds_to_next(NOW, cap=60) == 0.0  # something is due already
    del rec._deadlines[("ns", "now")], rec._deadlines[("ns", "past")]
    assert rec.seconds_to_next(NOW, cap=60) == 30.0
    assert rec.seconds_to_next(NOW, cap=1.0) == 1.0  # never sleeps past the cap
    rec.forget("ns", "later")
    assert rec.due(NOW + timedelta(days=1)) == []


class FakeReconciler:
    """Records reconciles; the first one of `flaky` fails once."""

    def __init__(self, due: list[tuple[str, str]], flaky: str = "") -> None:
        self.pending = list(due)
        self.flaky = flaky
        self.reconciled: list[str] = []
        self.retries: list[tuple[str, float]] = []
        self.published = 0

    def due(self, now: datetime) -> list[tuple[str, str]]:
        out, self.pending = self.pending, []
        return out

    def reconcile(self, namespace: str, name: str) -> None:
        if name == self.flaky:
            self.flaky = ""
            raise RuntimeError("API server unavailable")
        self.reconciled.append(name)

    def retry_later(self, namespace: str, name: str, seconds: float) -> None:
        self.retries.append((name, seconds))
        self.pending.append((namespace, name))

    def publish_metrics(self, now: datetime | None = None) -> None:
        self.published += 1

    def seconds_to_next(self, now: datetime, cap: float) -> float:
        return 0.0 if self.pending else 0.01


def test_run_clock_reconciles_what_is_due_and_retries_failures() -> None:
    fake = FakeReconciler([("ns", "a"), ("ns", "b")], flaky="b")

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_clock(fake, stop))  # type: ignore[arg-type]
        for _ in range(200):
            if "b" in fake.reconciled:
                break
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, timeout=5)

    asyncio.run(main())
    assert fake.reconciled == ["a", "b"]  # b failed once, was retried, then reconciled
    assert [name for name, _ in fake.retries] == ["b"]
    assert fake.published >= 1  # the overdue gauge is refreshed every round
