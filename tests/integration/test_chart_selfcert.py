"""The self-managed serving certificate (agent_identity.admission.selfcert) on the real API server.

Two replicas' certificate managers race over one Lease, as the chart deploys them (the chart
creates the empty Secret and Lease): exactly one writes the Secret and the webhooks'
caBundle, both load the same certificate, the other takes over when the holder stops, and
a rotation keeps the CA.

Then the wiring: two real `agent-identity admission --tls-secret` processes (as the chart
runs them without cert-manager) serve the certificate from the Secret on their webhook and
decision ports, and the API server, trusting only the caBundle they published, calls them.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from agent_identity.admission import selfcert as sc

pytestmark = pytest.mark.timeout(180)

LEASE_SECONDS = 2


def _webhooks(name: str) -> list[dict[str, Any]]:
    # Configurations that can never match anything (an object label nobody sets).
    hook = {
        "name": "never.selfcert.agentidentity.io",
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": "Ignore",
        "clientConfig": {"service": {"name": "nowhere", "namespace": "default", "port": 443}},
        "rules": [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["configmaps"],
            }
        ],
        "objectSelector": {"matchLabels": {"agentidentity.io/never": name}},
    }
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": kind,
            "metadata": {"name": name},
            "webhooks": [hook],
        }
        for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
    ]


async def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.2)


async def test_two_replicas_share_one_certificate(cluster: Any, namespace: str) -> None:
    from kubernetes import client

    api = cluster.api_client()
    core, coord = client.CoreV1Api(api), client.CoordinationV1Api(api)
    adm = client.AdmissionregistrationV1Api(api)
    name = f"selfcert-{secrets.token_hex(3)}"
    # What the chart creates: an empty Secret and an empty Lease.
    core.create_namespaced_secret(namespace, {"metadata": {"name": name}, "type": "Opaque"})
    coord.create_namespaced_lease(namespace, {"metadata": {"name": name}, "spec": {}})
    validating, mutating = _webhooks(name)
    adm.create_validating_webhook_configuration(validating)
    adm.create_mutating_webhook_configuration(mutating)
    dns = sc.service_dns_names("agent-identity-admission", namespace)
    loaded: dict[str, list[bytes]] = {"a": [], "b": []}
    stops = {r: asyncio.Event() for r in loaded}

    def start(replica: str, clock: Any = None) -> asyncio.Task[None]:
        kw = {"clock": clock} if clock else {}
        return asyncio.create_task(
            sc.run_certificate_manager(
                api, namespace, name, name, [name], dns, replica,
                on_certificate=lambda cert, _key, _ca, r=replica: loaded[r].append(cert),
                lease_seconds=LEASE_SECONDS, stop=stops[replica], **kw,
            )
        )  # fmt: skip

    def secret_data() -> dict[str, str] | None:
        return core.read_namespaced_secret(name, namespace).data

    def holder() -> str | None:
        return coord.read_namespaced_lease(name, namespace).spec.holder_identity

    tasks = {r: start(r) for r in loaded}
    try:
        data = await _wait(secret_data, 30, "the Secret to be filled")
        material = sc.Material.from_secret_data(data)
        assert (
            material is not None
            and sc.rotation_reason(material, dns, dt.datetime.now(dt.UTC)) is None
        )
        await _wait(lambda: all(loaded.values()), 30, "both replicas to load it")
        assert loaded["a"][-1] == loaded["b"][-1] == material.cert
        # The caBundle of both configurations is the Secret's CA.
        want = base64.b64encode(material.ca_bundle)
        for read in (
            adm.read_validating_webhook_configuration,
            adm.read_mutating_webhook_configuration,
        ):
            assert read(name).webhooks[0].client_config.ca_bundle == want.decode()
        # One holder; the Secret was written once (no fight).
        first = holder()
        assert first in ("a", "b")
        version = core.read_namespaced_secret(name, namespace).metadata.resource_version
        await asyncio.sleep(LEASE_SECONDS * 2)
        assert core.read_namespaced_secret(name, namespace).metadata.resource_version == version

        # The holder stops: the other takes over within about a lease period.
        other = "b" if first == "a" else "a"
        stops[first].set()
        await tasks[first]
        await _wait(lambda: holder() == other, LEASE_SECONDS * 6, "the other replica to lead")
        assert sc.Material.from_secret_data(secret_data()) == material  # nothing to rotate

        # 70 days later the serving certificate is renewed, under the same CA.
        stops[other].set()
        await tasks[other]
        later = lambda: dt.datetime.now(dt.UTC) + dt.timedelta(days=70)  # noqa: E731
        stops["a"] = asyncio.Event()
        loaded["a"].clear()
        tasks["a"] = start("a", clock=later)
        rotated = await _wait(
            lambda: (
                (m := sc.Material.from_secret_data(secret_data())) and m.cert != material.cert and m
            ),
            LEASE_SECONDS * 6,
            "the rotation",
        )
        assert rotated.ca_bundle == material.ca_bundle
        cert = x509.load_pem_x509_certificate(rotated.cert)
        assert cert.not_valid_after_utc > later() + dt.timedelta(days=80)
        await _wait(lambda: loaded["a"] and loaded["a"][-1] == rotated.cert, 10, "reload")
    finally:
        for r, stop in stops.items():
            stop.set()
            if not tasks[r].done():
                await tasks[r]
        adm.delete_validating_webhook_configuration(name)
        adm.delete_mutating_webhook_configuration(name)


AGENT_IDENTITY = str(Path(sys.executable).with_name("agent-identity"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _peer_cert(port: int, ca_bundle: bytes, hostname: str = "localhost") -> bytes:
    """The certificate served on 127.0.0.1:port, verified against the bundle for `hostname`."""
    ctx = ssl.create_default_context(cadata=ca_bundle.decode())
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=hostname) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return ssl.DER_cert_to_PEM_cert(der).encode()


class _Replica:
    """One `agent-identity admission --tls-secret` process, as a chart replica runs it."""

    def __init__(self, cluster: Any, workdir: Path, pod_name: str, name: str, namespace: str):
        self.ports = {k: _free_port() for k in ("webhook", "decisions", "metrics")}
        self.log = workdir / f"{pod_name}.log"
        args = [
            AGENT_IDENTITY, "admission",
            "--kubeconfig", str(cluster.kubeconfig),
            "--host", "127.0.0.1",
            "--port", str(self.ports["webhook"]),
            "--decisions-port", str(self.ports["decisions"]),
            "--metrics-port", str(self.ports["metrics"]),
            "--webhook-name", name,
            "--operator-namespace", namespace,
            "--cluster-name", "test",
            "--tls-secret", name,
            # The API server calls https://localhost:<port>; the chart's names come along.
            "--tls-dns-names", f"localhost,{name}-admission.{namespace}.svc",
        ]  # fmt: skip
        env = {**os.environ, "POD_NAME": pod_name, "PYTHONUNBUFFERED": "1"}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def ready(self) -> bool:
        assert self.proc.poll() is None, f"admission exited:\n{self.text()}"
        url = f"http://127.0.0.1:{self.ports['metrics']}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return int(self.proc.returncode)


@pytest.fixture
def enforced_namespace(cluster: Any, namespace: str) -> Iterator[str]:
    # The test namespace's name already uses all 63 characters: shorten it, then suffix.
    name = f"{namespace[:59].rstrip('-')}-enf"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("label", "namespace", name, "agentidentity.io/enforce=deny")
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


def _wait_sync(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_admission_processes_serve_the_self_managed_certificate(
    cluster: Any, crds: None, namespace: str, enforced_namespace: str, tmp_path: Path
) -> None:
    from kubernetes import client

    api = cluster.api_client()
    core, coord = client.CoreV1Api(api), client.CoordinationV1Api(api)
    adm = client.AdmissionregistrationV1Api(api)
    name = f"selfcert-{secrets.token_hex(3)}"
    # What the chart creates: the empty Secret and Lease (the processes may not create them).
    core.create_namespaced_secret(namespace, {"metadata": {"name": name}, "type": "Opaque"})
    coord.create_namespaced_lease(namespace, {"metadata": {"name": name}, "spec": {}})
    replicas = [_Replica(cluster, tmp_path, pod, name, namespace) for pod in ("rep-a", "rep-b")]
    # Our webhook configurations, without caBundle (the chart's ship none): the deny
    # webhook of enforcing namespaces, called by URL on replica a; the mutating one never
    # matches (its caBundle is checked).
    validating, mutating = _webhooks(name)
    hook = validating["webhooks"][0]
    hook.update(
        name="enforce-deny.selfcert.agentidentity.io",
        failurePolicy="Fail",
        clientConfig={
            "url": f"https://localhost:{replicas[0].ports['webhook']}/validate/pods/deny"
        },
        rules=[{**hook["rules"][0], "resources": ["pods"]}],
        namespaceSelector={"matchLabels": {"kubernetes.io/metadata.name": enforced_namespace}},
    )
    del hook["objectSelector"]
    adm.create_validating_webhook_configuration(validating)
    adm.create_mutating_webhook_configuration(mutating)
    try:
        for r in replicas:
            _wait_sync(r.ready, 90, f"{r.log.name} to be ready")
        material = sc.Material.from_secret_data(core.read_namespaced_secret(name, namespace).data)
        assert material is not None
        names = ["localhost", f"{name}-admission.{namespace}.svc"]
        assert sc.rotation_reason(material, names, dt.datetime.now(dt.UTC)) is None
        holder = coord.read_namespaced_lease(name, namespace).spec.holder_identity
        assert holder in ("rep-a", "rep-b")
        # Both replicas serve the Secret's certificate, on the webhook and decision ports,
        # and it verifies against the published CA for the Service name too.
        want = x509.load_pem_x509_certificate(material.cert)
        for r in replicas:
            for port in (r.ports["webhook"], r.ports["decisions"]):
                got = x509.load_pem_x509_certificate(_peer_cert(port, material.ca_bundle))
                assert got == want, f"{r.log.name} port {port}"
        _peer_cert(replicas[1].ports["webhook"], material.ca_bundle, names[1])
        # The holder published the CA as caBundle of both configurations.
        bundle = base64.b64encode(material.ca_bundle).decode()
        for read in (
            adm.read_validating_webhook_configuration,
            adm.read_mutating_webhook_configuration,
        ):
            hooks = _wait_sync(
                lambda read=read: all(
                    h.client_config.ca_bundle == bundle for h in read(name).webhooks
                ),
                30,
                "the caBundle",
            )
            assert hooks
        # The API server calls replica a over TLS, trusting only that caBundle: the pod is
        # refused with our webhook's own message (a TLS failure would read "x509" instead).
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "unregistered", "namespace": enforced_namespace},
            "spec": {"containers": [{"name": "c", "image": "registry.invalid/x:1"}]},
        }
        refused = cluster.kubectl(
            "create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False
        )
        assert refused.returncode != 0
        assert "only runs registered agents" in refused.stderr, refused.stderr
        assert "x509" not in refused.stderr
        # The Secret was written once: the follower never fought the holder.
        assert "writing a new one" in "".join(r.text() for r in replicas)
        writes = sum(r.text().count("writing a new one") for r in replicas)
        assert writes == 1, [r.text()[-2000:] for r in replicas]
    finally:
        codes = [r.stop() for r in replicas]
        adm.delete_validating_webhook_configuration(name)
        adm.delete_mutating_webhook_configuration(name)
    assert codes == [0, 0], [r.text()[-3000:] for r in replicas]
    for r in replicas:
        assert "Traceback" not in r.text(), r.text()[-4000:]
