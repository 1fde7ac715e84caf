"""Test wiring: one Kubernetes API server per session for everything under tests/integration.

    --cluster=local   (default) the local cluster from agent_identity.devcluster, started
                      in a temporary state directory (never the `make run` one): with its
                      node (kubelet, containerd, kube-proxy, CoreDNS; needs root) when e2e
                      tests (tests/e2e, marker `e2e`) are collected, else the control plane
                      alone (faster; integration tests need no node)
    --cluster=kind    pytest-kind's KindCluster; skipped with a reason when there is no Docker
    --kubeconfig PATH an existing cluster (the option is pytest-kind's; we honour it too)

Fixtures: `cluster` (session) and `namespace` (per test, unique, deleted afterwards).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agent_identity.devcluster import DevCluster, binaries_dir, ensure_built, is_built

INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"
E2E_DIR = Path(__file__).resolve().parent / "e2e"
NEEDS_NODE = pytest.StashKey[bool]()
# Tests that stop the session's cluster (the leave-nothing-behind check) run last.
LAST_MARKER = "stops_cluster"
# Tests that need the cluster before the session's operator and admission process start
# (the chart's own operator in-cluster) run first.
FIRST_MARKER = "runs_first"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cluster", "the Kubernetes cluster integration tests run against")
    group.addoption(
        "--cluster",
        choices=("local", "kind"),
        default="local",
        help="local: the built-from-source control plane (default); kind: pytest-kind (Docker)",
    )
    # pytest-kind already defines --kubeconfig; define it only when that plugin is absent.
    with contextlib.suppress(ValueError):
        group.addoption(
            "--kubeconfig", default=None, help="use the existing cluster of this kubeconfig"
        )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{LAST_MARKER}: stops the session's cluster, so it runs after every other test"
    )
    config.addinivalue_line(
        "markers",
        f"{FIRST_MARKER}: runs before every other test, before the session's operator and "
        "admission process start",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    integration = pytest.mark.integration
    selected = False
    needs_node = False
    for item in items:
        parents = Path(str(item.path)).resolve().parents
        if INTEGRATION_DIR in parents:
            item.add_marker(integration)
        if E2E_DIR in parents:
            item.add_marker(pytest.mark.e2e)
        if item.get_closest_marker("e2e") is not None:
            needs_node = selected = True
        if item.get_closest_marker("integration") is not None:
            selected = True

    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker(FIRST_MARKER) is not None:
            return 0
        return 2 if item.get_closest_marker(LAST_MARKER) is not None else 1

    items.sort(key=rank)  # stable: the order within each rank is kept
    if needs_node and _mode(config) == "local" and os.geteuid() != 0:
        # The local node makes a bridge, iptables rules and mounts: root only. The rest of
        # the suite runs on the control plane alone; the e2e tests say why they did not run.
        skip = pytest.mark.skip(
            reason="the local cluster's node needs root (bridge, iptables, containerd): run "
            "the tests as root, or point them at a cluster with nodes (--kubeconfig, "
            "--cluster=kind)"
        )
        for item in items:
            if item.get_closest_marker("e2e") is not None:
                item.add_marker(skip)
        needs_node = False
    config.stash[NEEDS_NODE] = needs_node
    # Build before any test runs, so a first-time build (~11 min) is not charged to
    # one test's timeout; a run of unit tests alone never builds.
    if selected and _mode(config) == "local":
        if not is_built(node=needs_node):
            ensure_built(progress=True, node=needs_node)
        # helm (~4 min) for the chart tests, and, for the node, the project image (~1.5 min),
        # which `devcluster up` then imports: built here, not inside one test's timeout.
        from agent_identity.devcluster import helm as helmlib

        helmlib.ensure_helm(progress=True)
        if needs_node and os.geteuid() == 0:
            from agent_identity.devcluster import image as imagelib

            imagelib.ensure_image()


# Measurements the closing notes quote (times, counts): each test reports its own with
# `figure(...)`, and the run ends with all of them in one section, also in CI's log.
FIGURES: list[str] = []


def figure(text: str) -> None:
    """Record one measurement of this run (and print it, for -s)."""
    FIGURES.append(text.strip())
    print(text)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if FIGURES:
        terminalreporter.section("figures measured in this run")
        for line in FIGURES:
            terminalreporter.write_line(line)


T = TypeVar("T")


def wait_for(
    what: str, check: Callable[[], T | None], timeout: float = 60, every: float = 0.05
) -> T:
    """Poll ``check`` until it returns something truthy (returned); fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def _mode(config: pytest.Config) -> str:
    if config.getoption("kubeconfig"):
        return "external"
    return str(config.getoption("cluster"))


class KubectlError(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout: {self.stdout}\nstderr: {self.stderr}"


@dataclass
class TestCluster:
    """What a test needs of a cluster, whichever kind it is."""

    __test__ = False  # not a test class, despite the name

    kubeconfig: Path
    kubectl_bin: str
    mode: str
    devcluster: DevCluster | None = None
    # The host as it was before the local node started (for the leave-nothing check).
    host_before: dict[str, Any] | None = None
    # Session processes that talk to this cluster (the operator, the admission process),
    # stopped cleanly by `stop_clients` before a test stops the cluster itself.
    stop_hooks: list[Callable[[], object]] = field(default_factory=list, repr=False)
    _api_client: Any = field(default=None, repr=False)

    def stop_clients(self) -> None:
        """Stop every session process using the cluster, newest first (so it exits cleanly)."""
        while self.stop_hooks:
            self.stop_hooks.pop()()

    @property
    def has_node(self) -> bool:
        """Pods really run: the local cluster's node, or any other cluster's nodes."""
        return self.devcluster is None or self.devcluster.has_node

    def kubectl(
        self,
        *args: str,
        as_user: Path | None = None,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl as admin, or with the kubeconfig `as_user`."""
        cmd = [self.kubectl_bin, "--kubeconfig", str(as_user or self.kubeconfig), *args]
        proc = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def user_kubeconfig(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig for `user` in `groups` (client certificate; local cluster only)."""
        if self.devcluster is None:
            pytest.skip(
                f"minting users needs the local control plane's client CA (cluster: {self.mode})"
            )
        return self.devcluster.user_kubeconfig(user, list(groups))

    def api_client(self) -> Any:
        """A `kubernetes.client.ApiClient` acting as the admin (one per session)."""
        if self._api_client is None:
            from kubernetes import config

            self._api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=str(self.kubeconfig)
            )
        return self._api_client


def _docker_usable() -> str | None:
    """None when a Docker engine answers, else why not."""
    if shutil.which("docker") is None:
        return "no `docker` executable on PATH"
    proc = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return f"`docker info` failed: {proc.stderr.strip()[:200]}"
    return None


@pytest.fixture(scope="session")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestCluster]:
    mode = _mode(request.config)
    external_kubectl = shutil.which("kubectl") or str(binaries_dir() / "kubectl")
    if mode == "external":
        kubeconfig = Path(request.config.getoption("kubeconfig")).resolve()
        # The admin kubeconfig of a running `devcluster up`: its client CA can mint users.
        dev = DevCluster.attach(kubeconfig.parent) if kubeconfig.name == "kubeconfig" else None
        if dev is not None and dev.kubeconfig == kubeconfig:
            yield TestCluster(kubeconfig, str(dev.bin_dir / "kubectl"), mode, dev)
        else:
            yield TestCluster(kubeconfig, external_kubectl, mode)
    elif mode == "kind":
        why = _docker_usable()
        if why is not None:
            pytest.skip(f"--cluster=kind needs a Docker engine: {why}")
        from pytest_kind import KindCluster

        kind = KindCluster("agent-identity-tests")
        kind.create()
        try:
            yield TestCluster(Path(kind.kubeconfig_path), str(kind.kubectl_path), mode)
        finally:
            kind.delete()
    else:
        # A state directory of its own: tests never touch the `make run` cluster.
        state_dir = tmp_path_factory.mktemp("devcluster")
        node = request.config.stash.get(NEEDS_NODE, False)
        before = host_snapshot() if node else None
        with DevCluster.start(state_dir, node=node) as dev:
            yield TestCluster(dev.kubeconfig, str(dev.bin_dir / "kubectl"), mode, dev, before)


def host_snapshot() -> dict[str, Any]:
    """What a node changes on the host: links, our mounts, iptables rules, netns, nft tables."""

    def out(*args: str) -> str:
        if shutil.which(args[0]) is None:
            return ""
        return subprocess.run(args, capture_output=True, text=True, check=False).stdout

    def rules(save: str) -> list[str]:
        # Counters and comments change on their own; rules and chains are what matter.
        return sorted(
            re.sub(r"\[\d+:\d+\]", "", ln)
            for ln in save.splitlines()
            if ln and not ln.startswith("#")
        )

    mounts = Path("/proc/self/mounts").read_text().splitlines()
    return {
        "links": sorted(ln.split(":")[1].strip() for ln in out("ip", "-o", "link").splitlines()),
        "mounts": sorted(
            m for m in mounts if re.search(r"netns|containerd|kubelet|devcluster|/pods/", m)
        ),
        "iptables": rules(out("iptables-save")),
        "ip6tables": rules(out("ip6tables-save")),
        "netns": sorted(p.name for p in Path("/var/run/netns").glob("*")),
        "nft_tables": sorted(out("nft", "list", "tables").splitlines()),
    }


def _namespace_name(test_name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")
    suffix = secrets.token_hex(3)
    slug = slug[: 63 - len("t--") - len(suffix)].rstrip("-")
    return f"t-{slug}-{suffix}"


@pytest.fixture
def namespace(cluster: TestCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test (with its `default` ServiceAccount); deleted afterwards."""
    name = _namespace_name(request.node.name)
    cluster.kubectl("create", "namespace", name)
    # Pods are refused until the ServiceAccount controller created `default`.
    deadline = time.monotonic() + 30
    while cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no default ServiceAccount in namespace {name} after 30 s")
        time.sleep(0.1)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


# Every part's session fixtures (tests/fixtures/*.py: CRDs, the operator, the admission
# process, the image), registered once here: registered in both tests/integration and
# tests/e2e, each conftest would start its own operator and admission process in one run,
# and two of each would fight over the same objects and webhook configurations.
from tests.fixtures import fixtures_of_every_part  # noqa: E402

globals().update(fixtures_of_every_part())
