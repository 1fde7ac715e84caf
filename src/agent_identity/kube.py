"""Kubernetes client configuration: --kubeconfig, $KUBECONFIG, ~/.kube/config or in-cluster.

One place decides where the credentials come from, for both the sync
`kubernetes` client and kopf's own login.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kubernetes import client, config

IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def kubeconfig_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The kubeconfig to use, or None for in-cluster configuration."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("KUBECONFIG")
    if env:
        return Path(env.split(os.pathsep)[0])
    default = Path.home() / ".kube" / "config"
    if default.exists() or not IN_CLUSTER_TOKEN.exists():
        return default
    return None


def use_kubeconfig(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """Make the choice visible to libraries that read $KUBECONFIG (kopf's login); return it."""
    path = kubeconfig_path(explicit)
    if path is not None:
        os.environ["KUBECONFIG"] = str(path)
    return path


def load_configuration(explicit: str | os.PathLike[str] | None = None) -> client.Configuration:
    """A client Configuration from the chosen kubeconfig or the pod's ServiceAccount."""
    path = kubeconfig_path(explicit)
    configuration = client.Configuration()
    if path is None:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(path), client_configuration=configuration
        )
    return configuration


def api_client(explicit: str | os.PathLike[str] | None = None) -> Any:
    """A sync `kubernetes.client.ApiClient` (thread-safe; share one per process)."""
    return client.ApiClient(load_configuration(explicit))
