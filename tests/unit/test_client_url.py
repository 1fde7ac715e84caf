"""Which decision API URL agent pods get from `admission --dev` (admission/process.py).

With the local cluster's node up (a node registered with the bridge address, which this
host owns), agent pods get the bridge URL; otherwise loopback only. The API is a stub
here; the real paths are tests/e2e/test_agent_pods.py (node) and
tests/integration/test_killswitch.py (no node: the injected URL is loopback).
"""

from __future__ import annotations

import socket
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from agent_identity.admission import process
from agent_identity.devcluster.node import BRIDGE_IP


def nodes(*addresses: str) -> Any:
    addrs = [SimpleNamespace(address=a, type="InternalIP") for a in addresses]
    return SimpleNamespace(items=[SimpleNamespace(status=SimpleNamespace(addresses=addrs))])


class StubCore:
    answer: Any = None

    def __init__(self, api: Any) -> None:
        pass

    def list_node(self, **_: Any) -> Any:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> type[StubCore]:
    class Core(StubCore):
        pass

    monkeypatch.setattr(process.client, "CoreV1Api", Core)
    return Core


def test_no_node_means_loopback_only(stub: type[StubCore]) -> None:
    stub.answer = SimpleNamespace(items=[])
    assert process.dev_bridge_host(None) is None  # type: ignore[arg-type]


def test_a_node_on_another_address_means_loopback_only(stub: type[StubCore]) -> None:
    stub.answer = nodes("192.168.1.7")
    assert process.dev_bridge_host(None) is None  # type: ignore[arg-type]


def test_nodes_unreadable_means_loopback_only(stub: type[StubCore]) -> None:
    stub.answer = ApiException(status=403, reason="Forbidden")
    assert process.dev_bridge_host(None) is None  # type: ignore[arg-type]


def test_the_bridge_node_gives_the_bridge_when_this_host_owns_it(
    stub: type[StubCore], monkeypatch: pytest.MonkeyPatch
) -> None:
    stub.answer = nodes(BRIDGE_IP)
    bound: list[str] = []

    def fake_bind(host: str, port: int) -> socket.socket:
        bound.append(host)
        return socket.socket()

    monkeypatch.setattr(process, "_bind", fake_bind)
    assert process.dev_bridge_host(None) == BRIDGE_IP  # type: ignore[arg-type]
    assert bound == [BRIDGE_IP]


def test_the_bridge_node_of_another_host_gives_loopback(
    stub: type[StubCore], monkeypatch: pytest.MonkeyPatch
) -> None:
    stub.answer = nodes(BRIDGE_IP)

    def fake_bind(host: str, port: int) -> socket.socket:
        raise OSError(99, "Cannot assign requested address")

    monkeypatch.setattr(process, "_bind", fake_bind)
    assert process.dev_bridge_host(None) is None  # type: ignore[arg-type]


def test_bind_near_falls_back_to_any_port() -> None:
    first = process._bind("127.0.0.1", 0)
    port = first.getsockname()[1]
    try:
        second = process._bind_near("127.0.0.1", port)
        try:
            assert second.getsockname()[1] not in (0, port)
        finally:
            second.close()
    finally:
        first.close()
