"""Pure parts of the local node: configs, flags, route clashes, iptables parsing, stamps."""

from __future__ import annotations

from pathlib import Path

from agent_identity.devcluster import build, node
from agent_identity.devcluster.cluster import Ports, apiserver_args
from agent_identity.devcluster.pause import PAUSE_IMAGE
from agent_identity.devcluster.pki import ClusterPKI

PORTS = node.NodePorts(1001, 1002, 1003, 1004, 1005, 1006, 1007)


def test_containerd_config_keeps_everything_under_the_state_dir(tmp_path: Path) -> None:
    paths = node.NodePaths(tmp_path)
    conf = node.containerd_config(paths)
    assert "restrict_oom_score_adj = true" in conf
    assert "SystemdCgroup = false" in conf
    assert 'snapshotter = "overlayfs"' in conf
    assert f'sandbox_image = "{PAUSE_IMAGE}"' in conf
    assert f'bin_dir = "{node.CNI_BIN_DIR}"' in conf
    for line in conf.splitlines():
        if line.strip().startswith(("root", "state", "address", "path", "Root", "conf_dir")):
            value = line.split("=", 1)[1].strip().strip('"')
            assert value == "" or value.startswith(str(tmp_path)), line


def test_cni_conflist_is_bridge_host_local_portmap_loopback_on_our_bridge(tmp_path: Path) -> None:
    conf = node.cni_conflist(node.NodePaths(tmp_path))
    assert [p["type"] for p in conf["plugins"]] == ["bridge", "portmap", "loopback"]
    bridge = conf["plugins"][0]
    assert bridge["bridge"] == node.BRIDGE
    assert bridge["ipam"]["type"] == "host-local"
    assert bridge["ipam"]["ranges"] == [[{"subnet": node.POD_CIDR, "gateway": node.BRIDGE_IP}]]


def test_kubelet_config_fits_cgroup_v1_without_cap_sys_resource(tmp_path: Path) -> None:
    conf = node.kubelet_config(node.NodePaths(tmp_path), tmp_path / "ca.crt", PORTS)
    assert conf["failCgroupV1"] is False
    assert conf["cgroupDriver"] == "cgroupfs"
    assert conf["cgroupsPerQOS"] is False
    assert conf["enforceNodeAllocatable"] == []
    assert conf["evictionHard"] == {}
    assert conf["localStorageCapacityIsolation"] is False
    assert conf["address"] == "127.0.0.1"
    assert conf["readOnlyPort"] == 0
    assert conf["authentication"]["x509"]["clientCAFile"] == str(tmp_path / "ca.crt")
    assert conf["clusterDNS"] == [node.CLUSTER_DNS_IP]


def test_nothing_binds_an_external_interface(tmp_path: Path) -> None:
    paths = node.NodePaths(tmp_path)
    bin_dir = tmp_path / "bin"
    args = node.proxy_args(bin_dir, paths, PORTS) + node.scheduler_args(bin_dir, paths, PORTS)
    binds = [a for a in args if "bind-address" in a or "nodeport-addresses" in a]
    assert binds and all(("127.0.0.1" in a) or (node.POD_CIDR in a) for a in binds), binds
    corefile = node.corefile(tmp_path / "kc", PORTS)
    assert f"bind {node.BRIDGE_IP}" in corefile
    assert "health 127.0.0.1:" in corefile and "ready 127.0.0.1:" in corefile
    assert f"--hostname-override={node.NODE_NAME}" in node.kubelet_args(bin_dir, paths)


def test_apiserver_with_a_node_listens_on_the_bridge(tmp_path: Path) -> None:
    pki = ClusterPKI(tmp_path)
    args = apiserver_args(tmp_path, tmp_path, pki, Ports(1, 2, 3, 4), with_node=True)
    assert f"--bind-address={node.BRIDGE_IP}" in args
    assert f"--advertise-address={node.BRIDGE_IP}" in args
    assert "--endpoint-reconciler-type=lease" in args
    assert "--kubelet-preferred-address-types=Hostname" in args
    assert "--enable-aggregator-routing=true" in args
    alone = apiserver_args(tmp_path, tmp_path, pki, Ports(1, 2, 3, 4))
    assert "--bind-address=127.0.0.1" in alone and "--endpoint-reconciler-type=none" in alone


def test_overlapping_routes_finds_clashes_but_not_our_bridge() -> None:
    routes = [
        "default via 192.0.2.1 dev eth0",
        "10.244.0.0/16 dev other0 proto kernel scope link",
        "10.244.0.0/24 dev agentid0 proto kernel scope link src 10.244.0.1",
        "local 10.244.0.1 dev agentid0 table local proto kernel scope host",
        "192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.2",
    ]
    assert node.overlapping_routes(node.POD_CIDR, routes) == [routes[1]]


def test_node_ready_needs_the_condition_and_no_not_ready_taint() -> None:
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert node.node_is_ready(ready)
    tainted = {**ready, "spec": {"taints": [{"key": "node.kubernetes.io/not-ready"}]}}
    assert not node.node_is_ready(tainted)
    assert not node.node_is_ready(
        {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    )


SAVE = """\
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
:MINE - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -j MINE
-A KUBE-SERVICES -j RETURN
COMMIT
"""


def test_iptables_parsing_finds_only_our_chains_and_jumps() -> None:
    assert node.our_iptables_chains(SAVE) == {"nat": ["KUBE-SERVICES", "CNI-HOSTPORT-DNAT"]}
    assert node.rules_jumping_to_ours(SAVE) == [
        ("nat", 'PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES')
    ]


def test_dns_service_points_at_the_host_coredns() -> None:
    objs = {o["kind"]: o for o in node.dns_manifests()}
    assert objs["Service"]["spec"]["clusterIP"] == node.CLUSTER_DNS_IP
    assert "selector" not in objs["Service"]["spec"]
    slice_ = objs["EndpointSlice"]
    assert slice_["metadata"]["labels"]["kubernetes.io/service-name"] == "kube-dns"
    assert slice_["endpoints"][0]["addresses"] == [node.BRIDGE_IP]


def test_stamp_from_before_the_node_covers_the_control_plane_only() -> None:
    old = {"kubernetes": build.K8S_VERSION, "etcd": build.ETCD_VERSION}
    old["commands"] = ["etcd", "kube-apiserver", "kube-controller-manager", "kubectl"]  # type: ignore[assignment]
    assert build.stamp_covers(old, build.required_binaries(node=False))
    assert not build.stamp_covers(old, build.required_binaries(node=True))
    assert build.stamp_covers(build._stamp(), build.required_binaries(node=True))
    assert not build.stamp_covers({**build._stamp(), "coredns": "v0.0.1"}, ["coredns"])


def test_missing_host_packages_names_debian_packages() -> None:
    missing = node.missing_host_packages(lambda tool: None if tool == "runc" else "/bin/x")
    assert "runc" in missing
