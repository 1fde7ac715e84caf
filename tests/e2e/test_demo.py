"""The demo `make run` shows (hack/demo.sh), run for real on the session's node.

examples/ applied as a user would (`kubectl apply -f examples/`), with the operator and
`admission --dev` running on the host as `make run` runs them, then the very script
`make run` calls: the release-bot pod is admitted and asks the decision API; it is allowed
to deploy to staging, denied an admin action, denied production outside a change window,
and inside the window escalated until a named approver approves with `kubectl agent
approve`, after which its waiting check answers allow. The script checks each outcome
itself and fails when one differs; this test checks that it ran to the end, in order.
The same demo against the chart installed in-cluster: tests/e2e/test_incluster.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import figure
from tests.e2e.demo_support import (
    IMAGE,
    ROOT,
    apply_examples,
    assert_demo_story,
    delete_examples,
    run_demo,
)


@pytest.fixture
def examples_applied(
    cluster: Any, operator: Any, admission: Any, shipped_roles: None, project_image: str
) -> Iterator[None]:
    if cluster.devcluster is None or not cluster.devcluster.has_node:
        pytest.skip("the demo runs the agent as a pod on the local cluster's node")
    assert project_image == IMAGE
    try:
        apply_examples(cluster)
        yield
    finally:
        delete_examples(cluster)


def test_make_run_demo(cluster: Any, examples_applied: None, tmp_path: Path) -> None:
    start = time.monotonic()
    proc = run_demo(cluster, tmp_path)
    assert_demo_story(proc)
    took = time.monotonic() - start
    figure(f"make run demo (host processes): pod Running, four checks, one approval in {took:.1f}s")


def test_example_pod_runs_this_version_of_the_image() -> None:
    # examples/pods/ names the image by tag; it must be the one `make image` builds now.
    text = (ROOT / "examples" / "pods" / "release-bot.yaml").read_text()
    assert f"image: {IMAGE}" in text
