"""Smoke tests: the API server does what the rest of the product relies on.

Everything here talks to a real kube-apiserver (the local control plane by default).
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from agent_identity.devcluster.pki import CertificateAuthority, cert_pem, key_pem
from tests.conftest import TestCluster, figure

AUDIENCE = "agentidentity.io"


# --- ServiceAccount tokens ---------------------------------------------------------------


def _request_token(api: client.CoreV1Api, namespace: str, sa: str) -> Any:
    spec = client.V1TokenRequestSpec(audiences=[AUDIENCE], expiration_seconds=600)
    resp = api.create_namespaced_service_account_token(
        sa, namespace, client.AuthenticationV1TokenRequest(spec=spec)
    )
    return resp.status


def _review(authn: client.AuthenticationV1Api, token: str) -> Any:
    review = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token, audiences=[AUDIENCE]))
    return authn.create_token_review(review).status


def _seconds_until_rejected(authn: client.AuthenticationV1Api, token: str, since: float) -> float:
    deadline = since + 30
    while time.monotonic() < deadline:
        if not _review(authn, token).authenticated:
            return time.monotonic() - since
        time.sleep(0.1)
    pytest.fail("the token still authenticates 30 s after its ServiceAccount was deleted")


def _seconds_until_rejected_fresh(
    authn: client.AuthenticationV1Api, tokens: list[str], since: float
) -> float:
    """Seconds until a token never reviewed before fails (one new token per poll)."""
    for token in tokens:
        if not _review(authn, token).authenticated:
            return time.monotonic() - since
        time.sleep(0.05)
    pytest.fail(f"{len(tokens)} never-reviewed tokens still authenticated after the delete")


def test_token_request_review_and_revocation(cluster: TestCluster, namespace: str) -> None:
    api_client = cluster.api_client()
    core, authn = client.CoreV1Api(api_client), client.AuthenticationV1Api(api_client)
    sa = "smoke-agent"
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=sa))
    )

    issued = _request_token(core, namespace, sa)
    token: str = issued.token
    assert token.count(".") == 2, "a TokenRequest returns a JWT"
    lifetime = issued.expiration_timestamp.timestamp() - time.time()
    assert 540 < lifetime <= 600, f"asked for 600 s, got {lifetime:.0f} s"
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert payload["aud"] == [AUDIENCE]

    status = _review(authn, token)
    assert status.authenticated is True, status.error
    assert status.user.username == f"system:serviceaccount:{namespace}:{sa}"
    assert f"system:serviceaccounts:{namespace}" in status.user.groups
    assert status.audiences == [AUDIENCE]

    # Tokens never reviewed: nothing about them is cached by the API server. Each poll uses
    # a new one, since a review that still succeeds (the API server's ServiceAccount
    # informer lags the delete by a moment) would be cached for 10 s itself.
    fresh: list[str] = [_request_token(core, namespace, sa).token for _ in range(60)]
    core.delete_namespaced_service_account(sa, namespace)
    deleted_at = time.monotonic()

    never_reviewed = _seconds_until_rejected_fresh(authn, fresh, deleted_at)
    reviewed = _seconds_until_rejected(authn, token, deleted_at)
    figure(
        f"\nTokenReview stops authenticating after the ServiceAccount is deleted: "
        f"never-reviewed token {never_reviewed:.2f} s, reviewed token {reviewed:.2f} s"
    )
    assert never_reviewed < 2
    # The API server caches a successful authentication for 10 s.
    assert reviewed <= 15


# --- admission webhooks ------------------------------------------------------------------


@dataclass
class _Webhook:
    url: str
    ca_bundle: bytes
    calls: list[dict[str, Any]] = field(default_factory=list)


DENIAL = "smoke webhook says no to pod"


@pytest.fixture
def denying_webhook(tmp_path: Path) -> Iterator[_Webhook]:
    """An HTTPS admission webhook on 127.0.0.1 that denies everything and records calls."""
    ca = CertificateAuthority.create("smoke-webhook-ca")
    cert, key = ca.issue("smoke-webhook", ip_addresses=["127.0.0.1"], server=True)
    (tmp_path / "tls.pem").write_bytes(cert_pem(cert) + key_pem(key))
    calls: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            req = review["request"]
            calls.append(req)
            name = req["object"]["metadata"].get("name", "")
            body = json.dumps(
                {
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "response": {
                        "uid": req["uid"],
                        "allowed": False,
                        "status": {"code": 403, "message": f"{DENIAL} {name}"},
                    },
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(tmp_path / "tls.pem"))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield _Webhook(f"https://127.0.0.1:{server.server_port}/validate", ca.cert_pem, calls)
    finally:
        server.shutdown()
        server.server_close()


def test_validating_webhook_denial_reaches_the_client(
    cluster: TestCluster, namespace: str, denying_webhook: _Webhook
) -> None:
    config_name = f"smoke-{namespace}"
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": config_name},
        "webhooks": [
            {
                "name": "smoke.agentidentity.io",
                "clientConfig": {
                    "url": denying_webhook.url,
                    "caBundle": base64.b64encode(denying_webhook.ca_bundle).decode(),
                },
                "rules": [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods"],
                    }
                ],
                # Only this test's namespace: a cluster-wide deny-all would break others.
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "failurePolicy": "Fail",
                "timeoutSeconds": 5,
            }
        ],
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "denied", "namespace": namespace},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(config))
    try:
        # The API server picks up a new webhook configuration from a watch; retry briefly.
        deadline = time.monotonic() + 20
        while True:
            proc = cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(pod), check=False)
            if DENIAL in proc.stderr or time.monotonic() > deadline:
                break
            if proc.returncode == 0:  # admitted before the webhook was active: try again
                cluster.kubectl("delete", "pod", "denied", "-n", namespace, "--wait=false")
            time.sleep(0.2)
        assert proc.returncode != 0
        assert f"{DENIAL} denied" in proc.stderr, proc.stderr
        assert "admission webhook" in proc.stderr and "smoke.agentidentity.io" in proc.stderr
        call = denying_webhook.calls[-1]
        assert (call["operation"], call["namespace"]) == ("CREATE", namespace)
        assert call["kind"] == {"group": "", "version": "v1", "kind": "Pod"}
        assert call["userInfo"]["username"]  # the API server tells the webhook who asks
        got = cluster.kubectl("get", "pod", "denied", "-n", namespace, check=False)
        assert got.returncode != 0 and "NotFound" in got.stderr
    finally:
        cluster.kubectl("delete", "validatingwebhookconfiguration", config_name, check=False)


# --- controller-manager ------------------------------------------------------------------


def test_namespace_deletion_completes(cluster: TestCluster, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "payload", "-n", namespace, "--from-literal=k=v")
    cluster.kubectl("create", "serviceaccount", "someone", "-n", namespace)
    started = time.monotonic()
    cluster.kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=60s")
    elapsed = time.monotonic() - started
    got = cluster.kubectl("get", "namespace", namespace, check=False)
    assert got.returncode != 0 and "NotFound" in got.stderr
    figure(f"\nnamespace with content deleted in {elapsed:.2f} s")


def test_owned_objects_are_garbage_collected(cluster: TestCluster, namespace: str) -> None:
    owner = cluster.kubectl("create", "configmap", "owner", "-n", namespace, "-o", "json")
    uid = json.loads(owner.stdout)["metadata"]["uid"]
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "dependent",
            "namespace": namespace,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}
            ],
        },
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(dependent))
    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)
    deadline = time.monotonic() + 30
    while (
        cluster.kubectl("get", "configmap", "dependent", "-n", namespace, check=False).returncode
        == 0
    ):
        assert time.monotonic() < deadline, "the garbage collector did not delete the dependent"
        time.sleep(0.2)


# --- RBAC ---------------------------------------------------------------------------------


def test_user_without_rights_is_refused_until_bound(cluster: TestCluster, namespace: str) -> None:
    user = "stranger@example.com"
    kubeconfig = cluster.user_kubeconfig(user, ["strangers"])

    whoami = cluster.kubectl("auth", "whoami", "-o", "json", as_user=kubeconfig)
    info = json.loads(whoami.stdout)["status"]["userInfo"]
    assert info["username"] == user
    assert "strangers" in info["groups"]

    can = cluster.kubectl(
        "auth", "can-i", "list", "pods", "-n", namespace, as_user=kubeconfig, check=False
    )
    assert (can.returncode, can.stdout.strip()) == (1, "no")
    denied = cluster.kubectl("get", "pods", "-n", namespace, as_user=kubeconfig, check=False)
    assert denied.returncode != 0
    assert f'User "{user}" cannot list resource "pods"' in denied.stderr, denied.stderr

    # Positive control: the same user, once its group is bound, may list pods.
    cluster.kubectl(
        "create", "role", "pod-reader", "-n", namespace, "--verb=list", "--resource=pods"
    )
    cluster.kubectl(
        "create",
        "rolebinding",
        "strangers-read",
        "-n",
        namespace,
        "--role=pod-reader",
        "--group=strangers",
    )
    deadline = time.monotonic() + 10
    while cluster.kubectl(
        "get", "pods", "-n", namespace, as_user=kubeconfig, check=False
    ).returncode:
        assert time.monotonic() < deadline, "RBAC did not honour the new RoleBinding"
        time.sleep(0.1)
    still_denied = cluster.kubectl(
        "get", "secrets", "-n", namespace, as_user=kubeconfig, check=False
    )
    assert still_denied.returncode != 0 and "Forbidden" in still_denied.stderr
