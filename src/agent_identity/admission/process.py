"""Running the admission process: servers, watches, readiness, and (dev) self-installation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from agent_identity.admission.selfcert import (
    SelfManagedTLS,
    chart_dns_names,
    start_self_managed_tls,
)
from agent_identity.admission.server import (
    PROBE_PREFIX,
    Admission,
    add_health_routes,
    decision_app_factory,
)
from agent_identity.admission.tls import CertificateFiles, ServingCert, make_serving_cert
from agent_identity.admission.watch import RegistryFeeder
from agent_identity.admission.webhookconfig import DEFAULT_NAME, webhook_configurations
from agent_identity.api.common import AGENT_LABEL
from agent_identity.audit import AuditLog
from agent_identity.registry import Registry

log = logging.getLogger(__name__)

SYNC_TIMEOUT = 120.0


@dataclass
class Options:
    dev: bool = False
    host: str = "0.0.0.0"
    port: int = 8443
    metrics_port: int = 8080
    decisions_port: int = 8444
    kubeconfig: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    # The CA of --tls-cert-file, injected into agent pods (default: ca.crt beside it).
    tls_ca_file: str | None = None
    # Self-managed serving certificate (the chart without cert-manager): the Secret in
    # operator_namespace, the Lease under which one replica writes it, the cert's names.
    tls_secret: str | None = None
    tls_lease: str | None = None
    tls_dns_names: tuple[str, ...] = ()
    decisions_url: str | None = None
    webhook_name: str = DEFAULT_NAME
    operator_namespace: str = "agent-identity-system"
    cluster_name: str = "local"
    audit_file: str | None = None
    install: bool = True  # --dev: install the webhook configurations pointing at us


def _system_users(app: web.Application) -> list[str]:
    """The decision API's own identity (it writes Expired to ApprovalRequests)."""
    from agent_identity.authz.service import SERVICE_KEY

    name = getattr(app[SERVICE_KEY], "system_username", None)
    return [name] if name else []


def say(msg: str) -> None:
    print(msg, flush=True)


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(512)
    sock.setblocking(False)
    return sock


@dataclass
class FileText:
    """A small file's text, re-read only when it changes (cert-manager renews it in place);
    None while it does not exist."""

    path: Path
    _stamp: tuple[int, int] | None = None
    _text: str | None = None

    def read(self) -> str | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._text = self.path.read_text()
            self._stamp = stamp
        return self._text or None


def dev_bridge_host(api: client.ApiClient) -> str | None:
    """--dev with the local cluster's node up: the bridge address agent pods reach us on.

    The node registers with the bridge address (``--node-ip``); without such a node, or
    when this host does not own that address (another cluster's node), None: loopback only.
    """
    from agent_identity.devcluster.node import BRIDGE_IP

    try:
        nodes: Any = client.CoreV1Api(api).list_node(_request_timeout=10)
    except (ApiException, OSError) as exc:
        log.info("not serving agent pods on the bridge: cannot list nodes (%s)", exc)
        return None
    addresses = {a.address for n in nodes.items for a in (n.status.addresses or [])}
    if BRIDGE_IP not in addresses:
        return None
    try:
        _bind(BRIDGE_IP, 0).close()
    except OSError:
        return None  # a node of another cluster's API server, not of this host
    return BRIDGE_IP


def _bind_near(host: str, port: int) -> socket.socket:
    """``port`` on ``host`` when free, else any port."""
    try:
        return _bind(host, port)
    except OSError:
        return _bind(host, 0)


def _api_client_factory(opts: Options) -> Callable[[], client.ApiClient]:
    if opts.kubeconfig or opts.dev:
        cfg = client.Configuration()
        config.load_kube_config(config_file=opts.kubeconfig, client_configuration=cfg)  # type: ignore[no-untyped-call]
    else:
        try:
            cfg = client.Configuration()
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            cfg = client.Configuration()
            config.load_kube_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    cfg.connection_pool_maxsize = 32
    return lambda: client.ApiClient(cfg)


def install_webhooks(
    api: client.ApiClient, validating: dict[str, Any], mutating: dict[str, Any]
) -> None:
    reg = client.AdmissionregistrationV1Api(api)
    hooks: tuple[tuple[dict[str, Any], Any, Any, Any], ...] = (
        (
            validating,
            reg.create_validating_webhook_configuration,
            reg.replace_validating_webhook_configuration,
            reg.read_validating_webhook_configuration,
        ),
        (
            mutating,
            reg.create_mutating_webhook_configuration,
            reg.replace_mutating_webhook_configuration,
            reg.read_mutating_webhook_configuration,
        ),
    )
    for body, create, replace, read in hooks:
        name = body["metadata"]["name"]
        try:
            create(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            current = read(name)
            replace(
                name,
                {
                    **body,
                    "metadata": {
                        **body["metadata"],
                        "resourceVersion": current.metadata.resource_version,
                    },
                },
            )


def remove_webhooks(api: client.ApiClient, name: str) -> None:
    reg = client.AdmissionregistrationV1Api(api)
    for delete in (
        reg.delete_validating_webhook_configuration,
        reg.delete_mutating_webhook_configuration,
    ):
        try:
            delete(name)
        except ApiException as exc:
            if exc.status != 404:
                raise


def probe_active(api: client.ApiClient, seen: set[str], timeout: float = 30.0) -> None:
    """Wait until the API server really calls this process: a dry-run probe pod reaches us."""
    core = client.CoreV1Api(api)
    name = f"{PROBE_PREFIX}{secrets.token_hex(4)}"
    pod: Any = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {AGENT_LABEL: name}},
        "spec": {"containers": [{"name": "probe", "image": "probe"}]},
    }
    end = time.monotonic() + timeout
    while name not in seen:
        with contextlib.suppress(ApiException):
            core.create_namespaced_pod("default", pod, dry_run="All")
        if name in seen:
            return
        if time.monotonic() > end:
            raise TimeoutError("the API server does not call the webhooks yet")
        time.sleep(0.2)


async def run(opts: Options) -> None:
    loop = asyncio.get_running_loop()
    make_client = _api_client_factory(opts)
    registry = Registry()
    audit = AuditLog(path=Path(opts.audit_file) if opts.audit_file else None)

    host = "127.0.0.1" if opts.dev else opts.host
    webhook_sock = _bind(host, opts.port if not opts.dev or opts.port else 0)
    decisions_sock = _bind(host, opts.decisions_port)
    metrics_sock = _bind(host, opts.metrics_port)
    webhook_port = webhook_sock.getsockname()[1]
    decisions_port = decisions_sock.getsockname()[1]
    metrics_port = metrics_sock.getsockname()[1]
    # --dev with a node: agent pods reach the decision API on the cluster bridge (never
    # an external interface); the webhook and metrics stay on loopback.
    bridge = await asyncio.to_thread(dev_bridge_host, make_client()) if opts.dev else None
    bridge_sock = _bind_near(bridge, decisions_port) if bridge else None

    managed_tls: SelfManagedTLS | None = None
    cert_files: CertificateFiles | None = None
    if opts.dev:
        cert = make_serving_cert(
            Path(tempfile.mkdtemp(prefix="agent-identity-admission-")), [host, "localhost"]
        )
        tls: ssl.SSLContext = cert.ssl_context()
    elif opts.tls_secret:
        # Made, rotated and published (caBundle) by whichever replica holds the Lease;
        # serving starts once this replica loaded it (agent_identity.admission.selfcert).
        managed_tls = await start_self_managed_tls(
            make_client(),
            opts.operator_namespace,
            opts.tls_secret,
            opts.tls_lease or opts.tls_secret,
            [opts.webhook_name],
            opts.tls_dns_names or chart_dns_names(opts.webhook_name, opts.operator_namespace),
            os.environ.get("POD_NAME") or socket.gethostname(),
            Path(tempfile.mkdtemp(prefix="agent-identity-tls-")),
        )
        cert, tls = ServingCert(b"", Path(), Path()), managed_tls.context
    else:
        if not (opts.tls_cert_file and opts.tls_key_file):
            raise SystemExit(
                "--tls-cert-file and --tls-key-file (or --tls-secret) are required outside --dev"
            )
        cert = ServingCert(b"", Path(opts.tls_cert_file), Path(opts.tls_key_file))
        cert_files = CertificateFiles.open(cert.cert_file, cert.key_file)
        tls = cert_files.context
    scheme = "http" if opts.dev else "https"
    decisions_url = opts.decisions_url or (
        f"http://{bridge}:{bridge_sock.getsockname()[1]}"
        if bridge and bridge_sock
        else f"http://{host}:{decisions_port}"
        if opts.dev
        else f"https://{opts.webhook_name}.{opts.operator_namespace}.svc:{decisions_port}"
    )

    admission = Admission(registry, make_client(), audit, decisions_url)
    if managed_tls is not None:
        admission.decisions_ca = lambda: managed_tls.ca_bundle.decode() or None
    elif not opts.dev:
        ca_file = opts.tls_ca_file or str(Path(str(opts.tls_cert_file)).with_name("ca.crt"))
        admission.decisions_ca = FileText(Path(ca_file)).read
    runners: list[web.AppRunner] = []

    async def serve(
        app: web.Application, sock: socket.socket, ssl_context: ssl.SSLContext | None
    ) -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock, ssl_context=ssl_context).start()
        runners.append(runner)

    await serve(admission.app(), webhook_sock, tls)
    metrics_app = web.Application()
    add_health_routes(metrics_app, registry)
    await serve(metrics_app, metrics_sock, None)
    factory = decision_app_factory(audit, opts.cluster_name)
    if factory is None:
        say("decision API: not available in this build (agent_identity.authz.service missing)")
    else:
        decision_app = factory(registry, make_client())
        admission.system_users = lambda: _system_users(decision_app)
        await serve(decision_app, decisions_sock, None if opts.dev else tls)
        if bridge_sock is not None:
            await web.SockSite(runners[-1], bridge_sock).start()
        also = f" (also http://{host}:{decisions_port})" if bridge_sock is not None else ""
        say(f"decision API: {decisions_url}{also}")

    feeder = RegistryFeeder(registry, loop, make_client)
    feeder.start()
    reloader = asyncio.create_task(_reload_certificates(cert_files)) if cert_files else None
    webhook_url = f"https://{host}:{webhook_port}"
    say(f"admission webhooks: serving {webhook_url}; metrics http://{host}:{metrics_port}/metrics")

    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    deadline = loop.time() + SYNC_TIMEOUT
    while not registry.is_synced():
        if loop.time() > deadline:
            raise SystemExit("the registry did not sync (are the CRDs installed?)")
        if stop.is_set():
            return
        await asyncio.sleep(0.05)
    say(f"registry synced: {len(registry.agents)} agents, {len(registry.scopes)} scopes")

    installed = False
    api = make_client()
    try:
        if opts.dev and opts.install:
            validating, mutating = webhook_configurations(
                ca_bundle=cert.ca_pem,
                url=webhook_url,
                name=opts.webhook_name,
                operator_namespace=opts.operator_namespace,
            )
            await asyncio.to_thread(install_webhooks, api, validating, mutating)
            installed = True
            await asyncio.to_thread(probe_active, api, admission.probes_seen)
            say(
                f"webhooks installed: {opts.webhook_name} -> {webhook_url} "
                f"(decisions {decisions_url}, scheme {scheme})"
            )
        await stop.wait()
    finally:
        # Only a clean stop removes them: after a crash, enforcing namespaces fail closed.
        if installed and stop.is_set():
            await asyncio.to_thread(remove_webhooks, api, opts.webhook_name)
            say(f"webhooks removed: {opts.webhook_name}")
        feeder.stop()
        if reloader is not None:
            reloader.cancel()
        if managed_tls is not None:
            await managed_tls.close()
        for runner in runners:
            await runner.cleanup()


# How often a serving pair renewed on disk (cert-manager) is looked for.
CERT_RELOAD_INTERVAL = 30.0


async def _reload_certificates(files: CertificateFiles) -> None:
    """Load a pair cert-manager renewed in place into the live TLS context."""
    while True:
        await asyncio.sleep(CERT_RELOAD_INTERVAL)
        try:
            if files.reload_if_changed():
                say(f"serving certificate reloaded from {files.cert_file}")
        except (OSError, ssl.SSLError) as exc:  # half-written: the next round retries
            log.warning("could not reload %s yet: %s", files.cert_file, exc)


def main(opts: Options) -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(run(opts))
