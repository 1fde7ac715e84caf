"""A real local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager).

    from agent_identity.devcluster import DevCluster
    with DevCluster.start() as cluster:
        subprocess.run([cluster.bin_dir / "kubectl", "--kubeconfig", cluster.kubeconfig, ...])

The binaries are built from source once per version (`ensure_built()`), see build.py.
"""

from agent_identity.devcluster.build import (
    ETCD_VERSION,
    K8S_COMMANDS,
    K8S_VERSION,
    BuildError,
    binaries_dir,
    cache_root,
    ensure_built,
    is_built,
)
from agent_identity.devcluster.cluster import ClusterError, DevCluster, default_state_dir

__all__ = [
    "ETCD_VERSION",
    "K8S_COMMANDS",
    "K8S_VERSION",
    "BuildError",
    "ClusterError",
    "DevCluster",
    "binaries_dir",
    "cache_root",
    "default_state_dir",
    "ensure_built",
    "is_built",
]
