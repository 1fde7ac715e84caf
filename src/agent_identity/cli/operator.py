"""`agent-identity operator`: the reconciler, in the foreground, installing nothing.

Runs kopf standalone (no peering): one active replica at a time. kopf has no
lease-based leader election, so deployments use `strategy: Recreate`; two
replicas at once would both reconcile (harmless writes, duplicated Events).
The CRDs must already be installed (`agent-identity crds install`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path

import click

from agent_identity.identity.network import DECISION_API_NAMESPACE


@click.command("operator")
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False),
    default=None,
    help="Kubeconfig to use (default: $KUBECONFIG, ~/.kube/config, else in-cluster).",
)
@click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    help="Watch only this namespace (repeatable; default: all namespaces).",
)
@click.option(
    "--cluster-name",
    default="local",
    envvar="AGENT_IDENTITY_CLUSTER_NAME",
    show_default=True,
    help="Cluster name in identity URIs agent://<cluster>/<namespace>/<name>.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Serve Prometheus /metrics on this port (0: off).",
)
@click.option(
    "--audit-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also append audit records (JSON lines) to this file.",
)
@click.option(
    "--decision-namespace",
    default=DECISION_API_NAMESPACE,
    show_default=True,
    help="Namespace of the decision API pods agents may always reach.",
)
@click.option(
    "--health-port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Serve kopf's liveness probe at http://0.0.0.0:PORT/healthz (0: off); it answers "
    "only once the operator's watches run.",
)
@click.option("--verbose", is_flag=True, help="Debug logging.")
def operator(
    kubeconfig: str | None,
    namespaces: tuple[str, ...],
    cluster_name: str,
    metrics_port: int,
    audit_file: Path | None,
    decision_namespace: str,
    health_port: int,
    verbose: bool,
) -> None:
    """Reconcile Agents into ServiceAccounts, RBAC and NetworkPolicies; drive their lifecycle."""
    import kopf
    from kopf._core.engines.peering import Identity  # kopf exports no public name for it
    from prometheus_client import start_http_server

    from agent_identity import kube
    from agent_identity.audit import AuditLog
    from agent_identity.controller.children import ChildApplier
    from agent_identity.controller.handlers import registry
    from agent_identity.controller.reconciler import Reconciler
    from agent_identity.controller.settings import operator_settings

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        # kopf logs a line per handler call at INFO; our own lines say what changed.
        logging.getLogger("kopf").setLevel(logging.WARNING)
    kube.use_kubeconfig(kubeconfig)
    api = kube.api_client(kubeconfig)
    reconciler = Reconciler(
        api,
        cluster_name=cluster_name,
        audit=AuditLog(path=audit_file),
        applier=ChildApplier(api, decision_namespace=decision_namespace),
    )
    if metrics_port:
        start_http_server(metrics_port)
    asyncio.run(
        kopf.operator(
            registry=registry,
            settings=operator_settings(),
            standalone=True,
            clusterwide=not namespaces,
            namespaces=list(namespaces),
            memo=kopf.Memo(reconciler=reconciler),
            # kopf would derive it from getpass.getuser(), which raises for a uid with no
            # passwd entry (OpenShift's random uids, any --user): name the pod instead.
            identity=Identity(os.environ.get("POD_NAME") or socket.gethostname()),
            liveness_endpoint=f"http://0.0.0.0:{health_port}/healthz" if health_port else None,
        )
    )
