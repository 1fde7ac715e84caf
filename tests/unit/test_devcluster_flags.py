"""Command lines and kubeconfigs of the local control plane (no processes started)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from agent_identity.devcluster.cluster import (
    CONTROLLERS,
    Ports,
    _safe_filename,
    apiserver_args,
    controller_manager_args,
    etcd_args,
    kubeconfig_dict,
)
from agent_identity.devcluster.pki import ClusterPKI

PORTS = Ports(etcd_client=2379, etcd_peer=2380, apiserver=6443, controller_manager=10257)
BIN = Path("/bin-dir")


def _flags(args: list[str]) -> dict[str, str]:
    out = {}
    for a in args[1:]:
        key, _, value = a.removeprefix("--").partition("=")
        out[key] = value
    return out


def test_etcd_listens_on_loopback_without_fsync(tmp_path: Path) -> None:
    args = etcd_args(BIN, tmp_path / "etcd", PORTS)
    assert args[0] == "/bin-dir/etcd"
    flags = _flags(args)
    assert flags["listen-client-urls"] == "http://127.0.0.1:2379"
    assert flags["initial-cluster"] == "devcluster=http://127.0.0.1:2380"
    assert "unsafe-no-fsync" in flags


def test_apiserver_serves_tokens_rbac_and_trusts_the_client_ca(tmp_path: Path) -> None:
    pki = ClusterPKI(tmp_path / "pki")
    flags = _flags(apiserver_args(BIN, tmp_path, pki, PORTS))
    assert flags["etcd-servers"] == "http://127.0.0.1:2379"
    assert flags["secure-port"] == "6443"
    assert flags["bind-address"] == "127.0.0.1"
    assert flags["service-account-issuer"] == "https://127.0.0.1:6443"
    assert flags["service-account-key-file"] == str(pki.sa_pub)
    assert flags["service-account-signing-key-file"] == str(pki.sa_key)
    assert flags["client-ca-file"] == str(pki.client_ca_cert)
    assert flags["tls-cert-file"] == str(pki.serving_cert)
    assert "RBAC" in flags["authorization-mode"].split(",")
    assert flags["endpoint-reconciler-type"] == "none"


def test_controller_manager_runs_the_controllers_we_rely_on(tmp_path: Path) -> None:
    pki = ClusterPKI(tmp_path / "pki")
    kubeconfig = tmp_path / "kcm.kubeconfig"
    flags = _flags(controller_manager_args(BIN, tmp_path, pki, PORTS, kubeconfig))
    assert flags["leader-elect"] == "false"
    assert flags["kubeconfig"] == str(kubeconfig)
    assert flags["service-account-private-key-file"] == str(pki.sa_key)
    assert flags["root-ca-file"] == str(pki.ca_cert)
    controllers = flags["controllers"].split(",")
    assert controllers == list(CONTROLLERS)
    for needed in ("namespace", "garbage-collector", "serviceaccount-token", "replicaset"):
        assert f"{needed}-controller" in controllers


def test_kubeconfig_embeds_credentials() -> None:
    config = kubeconfig_dict("https://127.0.0.1:6443", b"CA", b"CERT", b"KEY", "alice")
    assert config["current-context"] == "alice@devcluster"
    cluster = config["clusters"][0]["cluster"]
    assert cluster["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(cluster["certificate-authority-data"]) == b"CA"
    user = config["users"][0]["user"]
    assert base64.b64decode(user["client-certificate-data"]) == b"CERT"
    assert base64.b64decode(user["client-key-data"]) == b"KEY"


def test_allocated_ports_are_distinct() -> None:
    ports = Ports.allocate()
    assert len(set(ports.__dict__.values())) == 4


def test_user_file_names_are_safe() -> None:
    assert _safe_filename("alice@example.com/x y") == "alice_example.com_x_y"


def test_test_namespace_names_are_valid_and_unique() -> None:
    from tests.conftest import _namespace_name

    long = "test_something[" + "x" * 200 + "]"
    names = {_namespace_name(long) for _ in range(20)}
    assert len(names) == 20
    for name in names:
        assert len(name) <= 63
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
        assert name.startswith("t-test-something-x")
    assert _namespace_name("test_a[B_c]").startswith("t-test-a-b-c-")
