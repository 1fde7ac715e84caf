"""The local cluster's one node: containerd + runc + CNI, kubelet, kube-proxy, CoreDNS.

Everything runs as host processes of this machine (no Docker), bound to 127.0.0.1
or to the cluster's own bridge `agentid0` (10.244.0.1/24, the pod subnet's gateway),
never to an external interface:

    agentid0 10.244.0.1/24     bridge made here; pods' veths join it (CNI bridge plugin)
    kube-apiserver             --bind-address/--advertise-address 10.244.0.1, so pods
                               reach it as the `kubernetes` Service (10.0.0.1:443)
    containerd                 own config/socket/root/state under <state>/containerd
    kubelet                    node `localhost`, listens on 127.0.0.1, --node-ip 10.244.0.1
    kube-proxy                 iptables mode; NodePorts only on the bridge
    CoreDNS                    10.244.0.1:53, behind the `kube-dns` Service (10.0.0.10)

Teardown (`stop`) deletes the pods through the API first so the kubelet tears their
sandboxes down (CNI DEL, netns, mounts), then stops the processes, then sweeps what
could remain: shims, runc containers, mounts under the state dir, our iptables chains,
the bridge and its veths, the sysctls the kubelet changes, containerd's state.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agent_identity.devcluster import apt
from agent_identity.devcluster.pause import PAUSE_IMAGE

BRIDGE = "agentid0"
POD_CIDR = "10.244.0.0/24"
BRIDGE_IP = "10.244.0.1"
SERVICE_IP = "10.0.0.1"  # first address of the service CIDR: the `kubernetes` Service
CLUSTER_DNS_IP = "10.0.0.10"
CLUSTER_DOMAIN = "cluster.local"
NODE_NAME = "localhost"
CNI_BIN_DIR = "/usr/lib/cni"
CNI_NETWORK = "agentid"
CNI_PLUGINS = ("bridge", "host-local", "portmap", "loopback")
# Host tools the node needs, and the Debian package of each.
HOST_TOOLS = {
    "containerd": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "iptables": "iptables",
    "ip6tables": "iptables",
    "iptables-save": "iptables",
    "conntrack": "conntrack",
    "ip": "iproute2",
    "ss": "iproute2",  # tests check what the node listens on
}
# The kubelet sets these kernel tunables at start (protectKernelDefaults: false);
# kube-proxy may touch the conntrack ones. Saved at start and restored at stop.
SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/conf/all/route_localnet",
    "net/netfilter/nf_conntrack_max",
)
# Chains of ours in iptables: kube-proxy's and the kubelet's (KUBE-*), CNI plugins' (CNI-*).
OUR_CHAINS = re.compile(r"^(KUBE|CNI)-")
# The kubelet hard-codes this directory for its per-container log symlinks.
CONTAINER_LOG_LINKS = Path("/var/log/containers")
NETNS_DIR = Path("/var/run/netns")
# containerd-shim-runc-v2 hard-codes its socket directory.
SHIM_SOCKET_DIR = Path("/run/containerd/s")

NODE_TIMEOUT = 120.0


class NodeError(RuntimeError):
    """The node could not be set up; the message says what to do."""


@dataclass(frozen=True)
class NodePorts:
    kubelet: int
    kubelet_healthz: int
    scheduler: int
    proxy_healthz: int
    proxy_metrics: int
    coredns_health: int
    coredns_ready: int


@dataclass(frozen=True)
class NodePaths:
    """Where the node's state lives, all under the cluster's state directory."""

    state_dir: Path

    @property
    def containerd(self) -> Path:
        return self.state_dir / "containerd"

    @property
    def containerd_config(self) -> Path:
        return self.containerd / "config.toml"

    @property
    def containerd_root(self) -> Path:
        return self.containerd / "root"

    @property
    def containerd_state(self) -> Path:
        return self.containerd / "state"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd / "containerd.sock"

    @property
    def runc_root(self) -> Path:
        return self.containerd / "runc"

    @property
    def cni_conf_dir(self) -> Path:
        return self.state_dir / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.state_dir / "cni" / "ipam"

    @property
    def kubelet_root(self) -> Path:
        return self.state_dir / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.state_dir / "kubelet-config.yaml"

    @property
    def pod_logs(self) -> Path:
        return self.state_dir / "pod-logs"

    @property
    def corefile(self) -> Path:
        return self.state_dir / "Corefile"

    def kubeconfig(self, component: str) -> Path:
        return self.state_dir / f"{component}.kubeconfig"

    def wiped_at_stop(self) -> list[Path]:
        return [
            self.containerd_root,
            self.containerd_state,
            self.runc_root,
            self.state_dir / "cni",
            self.kubelet_root,
            self.pod_logs,
        ]


# --- pure builders (unit-tested) ----------------------------------------------------------


def containerd_config(paths: NodePaths, sandbox_image: str = PAUSE_IMAGE) -> str:
    """containerd 1.6's config (version 2): everything of ours under the state dir."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    runc = f"{cri}.containerd.runtimes.runc"
    return "\n".join(
        [
            "version = 2",
            f'root = "{paths.containerd_root}"',
            f'state = "{paths.containerd_state}"',
            # No OOM-score changes: this machine lacks CAP_SYS_RESOURCE.
            "oom_score = 0",
            "",
            "[grpc]",
            f'  address = "{paths.containerd_socket}"',
            "",
            "[ttrpc]",
            f'  address = "{paths.containerd_socket}.ttrpc"',
            "",
            "[debug]",
            '  address = ""',
            "",
            "[metrics]",
            '  address = ""',
            "",
            '[plugins."io.containerd.internal.v1.opt"]',
            f'  path = "{paths.containerd / "opt"}"',
            "",
            f"[{cri}]",
            f'  sandbox_image = "{sandbox_image}"',
            # Without it every sandbox fails: "can't get final child's PID from pipe".
            "  restrict_oom_score_adj = true",
            '  stream_server_address = "127.0.0.1"',
            '  stream_server_port = "0"',
            "  enable_selinux = false",
            "  disable_apparmor = true",
            "",
            f"[{cri}.containerd]",
            '  snapshotter = "overlayfs"',
            '  default_runtime_name = "runc"',
            "",
            f"[{runc}]",
            '  runtime_type = "io.containerd.runc.v2"',
            "",
            f"[{runc}.options]",
            "  SystemdCgroup = false",
            f'  Root = "{paths.runc_root}"',
            "",
            f"[{cri}.cni]",
            f'  bin_dir = "{CNI_BIN_DIR}"',
            f'  conf_dir = "{paths.cni_conf_dir}"',
            "  max_conf_num = 1",
            "",
        ]
    )


def cni_conflist(paths: NodePaths) -> dict[str, Any]:
    """bridge + host-local for the pod subnet on our bridge, portmap, loopback."""
    return {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                # No masquerading: pods talk to the node and each other only, and the
                # CNI's own NAT chains would be one more thing to clean up.
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": BRIDGE_IP}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(paths.cni_ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "loopback"},
        ],
    }


def kubelet_config(paths: NodePaths, client_ca: Path, ports: NodePorts) -> dict[str, Any]:
    """KubeletConfiguration for this cgroup v1 machine without CAP_SYS_RESOURCE."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": "127.0.0.1",
        "port": ports.kubelet,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports.kubelet_healthz,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(client_ca)},
        },
        # The API server's kubelet client is in system:masters: SubjectAccessReview allows it.
        "authorization": {"mode": "Webhook"},
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupsPerQOS": False,
        "enforceNodeAllocatable": [],
        "evictionHard": {},
        "localStorageCapacityIsolation": False,
        "clusterDNS": [CLUSTER_DNS_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "podLogsDir": str(paths.pod_logs),
        "volumePluginDir": str(paths.kubelet_root / "volume-plugins"),
        "serializeImagePulls": False,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "resolvConf": "/etc/resolv.conf",
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
    }


def kubelet_args(bin_dir: Path, paths: NodePaths) -> list[str]:
    return [
        str(bin_dir / "kubelet"),
        f"--config={paths.kubelet_config}",
        f"--kubeconfig={paths.kubeconfig('kubelet')}",
        f"--root-dir={paths.kubelet_root}",
        f"--cert-dir={paths.kubelet_root / 'pki'}",
        f"--hostname-override={NODE_NAME}",
        # The kubelet refuses a loopback node IP; the bridge address is ours alone.
        f"--node-ip={BRIDGE_IP}",
        "--v=1",
    ]


def scheduler_args(bin_dir: Path, paths: NodePaths, ports: NodePorts) -> list[str]:
    kubeconfig = paths.kubeconfig("kube-scheduler")
    return [
        str(bin_dir / "kube-scheduler"),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports.scheduler}",
        "--leader-elect=false",
        "--profiling=false",
        "--v=1",
    ]


def proxy_args(bin_dir: Path, paths: NodePaths, ports: NodePorts) -> list[str]:
    return [
        str(bin_dir / "kube-proxy"),
        f"--kubeconfig={paths.kubeconfig('kube-proxy')}",
        f"--hostname-override={NODE_NAME}",
        "--proxy-mode=iptables",
        f"--cluster-cidr={POD_CIDR}",
        "--bind-address=127.0.0.1",
        f"--healthz-bind-address=127.0.0.1:{ports.proxy_healthz}",
        f"--metrics-bind-address=127.0.0.1:{ports.proxy_metrics}",
        # NodePorts on the bridge only: no external interface, no route_localnet.
        f"--nodeport-addresses={POD_CIDR}",
        # Leave the host's conntrack sysctls alone.
        "--conntrack-max-per-core=0",
        "--conntrack-tcp-timeout-established=0",
        "--conntrack-tcp-timeout-close-wait=0",
        "--v=1",
    ]


def corefile(kubeconfig: Path, ports: NodePorts) -> str:
    return f"""\
.:53 {{
    bind {BRIDGE_IP}
    errors
    health 127.0.0.1:{ports.coredns_health}
    ready 127.0.0.1:{ports.coredns_ready}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    forward . /etc/resolv.conf
    cache 5
    loadbalance
}}
"""


def coredns_args(bin_dir: Path, paths: NodePaths) -> list[str]:
    return [str(bin_dir / "coredns"), "-conf", str(paths.corefile)]


def dns_manifests() -> list[dict[str, Any]]:
    """RBAC for CoreDNS (a host process) and the `kube-dns` Service pointing at it."""
    labels = {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}
    ports = [
        {"name": "dns", "port": 53, "protocol": "UDP"},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
    ]
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:coredns",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:coredns"}
            ],
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
            # No selector: the endpoint is the host process on the bridge, listed below.
            "spec": {"clusterIP": CLUSTER_DNS_IP, "ports": ports},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kube-dns-host",
                "namespace": "kube-system",
                "labels": {
                    "kubernetes.io/service-name": "kube-dns",
                    "endpointslice.kubernetes.io/managed-by": "devcluster.agentidentity.io",
                },
            },
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": [BRIDGE_IP], "conditions": {"ready": True}, "nodeName": NODE_NAME}
            ],
            "ports": ports,
        },
    ]


def overlapping_routes(cidr: str, routes: Iterable[str]) -> list[str]:
    """Lines of `ip -o -4 route show` (table all) whose destination overlaps `cidr`.

    Routes on our own bridge are ours (a previous run) and do not count.
    """
    net = ipaddress.ip_network(cidr)
    clashes = []
    for line in routes:
        fields = line.split()
        if not fields or f"dev {BRIDGE}" in line:
            continue
        dest = fields[1] if fields[0] in {"local", "broadcast", "unicast"} else fields[0]
        if dest == "default":
            continue
        with contextlib.suppress(ValueError):
            if ipaddress.ip_network(dest, strict=False).overlaps(net):
                clashes.append(line.strip())
    return clashes


def node_is_ready(node: dict[str, Any]) -> bool:
    """Ready condition True and the not-ready/unreachable taints gone."""
    conditions = node.get("status", {}).get("conditions", [])
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    taints = node.get("spec", {}).get("taints") or []
    blocking = {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}
    return ready and not any(t.get("key") in blocking for t in taints)


def our_iptables_chains(save_output: str) -> dict[str, list[str]]:
    """table -> our chains (KUBE-*, CNI-*) in `iptables-save` output."""
    chains: dict[str, list[str]] = {}
    table = ""
    for line in save_output.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(":"):
            name = line[1:].split()[0]
            if OUR_CHAINS.match(name):
                chains.setdefault(table, []).append(name)
    return chains


def rules_jumping_to_ours(save_output: str) -> list[tuple[str, str]]:
    """(table, rule spec after `-A`) of rules in other chains that jump to our chains."""
    out = []
    table = ""
    for line in save_output.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith("-A "):
            chain = line.split()[1]
            target = re.search(r"(?:-j|-g|--jump|--goto) (\S+)", line)
            if not OUR_CHAINS.match(chain) and target and OUR_CHAINS.match(target.group(1)):
                out.append((table, line[3:]))
    return out


# --- the shell ------------------------------------------------------------------------------


def _run(args: Sequence[str], check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), capture_output=True, text=True, check=False, **kw)
    if check and proc.returncode != 0:
        raise NodeError(f"{' '.join(args)} failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return proc


def missing_host_packages(which: Callable[[str], str | None] = shutil.which) -> list[str]:
    """Debian packages to install so the node can run (tools and CNI plugins)."""
    missing = set(apt.missing_packages(HOST_TOOLS, which))
    if not all(os.access(Path(CNI_BIN_DIR) / p, os.X_OK) for p in CNI_PLUGINS):
        missing.add("containernetworking-plugins")
    return sorted(missing)


def ensure_host_packages(say: Callable[[str], None]) -> None:
    """Install containerd, runc, the CNI plugins, iptables, conntrack when missing."""
    try:
        apt.install(
            missing_host_packages(),
            say,
            "the node",
            "or start the control plane alone with --no-node",
        )
    except apt.PackageError as exc:
        raise NodeError(str(exc)) from exc


def check_can_run() -> None:
    if os.geteuid() != 0:
        raise NodeError(
            "the node (kubelet, containerd, the pod network) needs root; "
            "run as root or start the control plane alone with --no-node"
        )


def read_sysctls(names: Sequence[str] = SYSCTLS) -> dict[str, str]:
    values = {}
    for name in names:
        with contextlib.suppress(OSError):
            values[name] = Path("/proc/sys", name).read_text().strip()
    return values


def restore_sysctls(values: dict[str, str]) -> None:
    for name, value in values.items():
        path = Path("/proc/sys", name)
        with contextlib.suppress(OSError):
            if path.read_text().strip() != value:
                path.write_text(value + "\n")


def nft_tables() -> list[str]:
    """`family name` of every nftables table (iptables-nft keeps its tables there)."""
    if shutil.which("nft") is None:
        return []
    proc = _run(["nft", "-j", "list", "tables"], check=False)
    try:
        items = json.loads(proc.stdout)["nftables"]
    except (ValueError, KeyError):
        return []
    return [f"{i['table']['family']} {i['table']['name']}" for i in items if "table" in i]


def _nft_table_empty(table: str) -> bool:
    proc = _run(["nft", "-j", "list", "table", *table.split()], check=False)
    try:
        items = json.loads(proc.stdout)["nftables"]
    except (ValueError, KeyError):
        return False
    return not any("rule" in i for i in items)


@dataclass
class NodeHost:
    """Host state the node changes, recorded at start so `stop` can put it back."""

    sysctls: dict[str, str] = field(default_factory=dict)
    nft_tables: list[str] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NodeHost:
        return cls(
            sysctls=dict(data.get("sysctls", {})),
            nft_tables=list(data.get("nft_tables", [])),
            netns=list(data.get("netns", [])),
        )


def bridge_exists() -> bool:
    return Path("/sys/class/net", BRIDGE).exists()


def setup_bridge() -> None:
    """Our bridge with the pod subnet's gateway address; forwarding on it only."""
    if not bridge_exists():
        routes = _run(["ip", "-o", "-4", "route", "show", "table", "all"]).stdout.splitlines()
        clashes = overlapping_routes(POD_CIDR, routes)
        if clashes:
            raise NodeError(
                f"the pod subnet {POD_CIDR} is already routed on this machine "
                f"({'; '.join(clashes)}): the local node cannot use it"
            )
        _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    addrs = _run(["ip", "-o", "-4", "addr", "show", "dev", BRIDGE]).stdout
    if f"{BRIDGE_IP}/" not in addrs:
        _run(["ip", "addr", "add", f"{BRIDGE_IP}/24", "dev", BRIDGE])
    _run(["ip", "link", "set", BRIDGE, "up"])
    # IPv4 forwarding is decided per input interface: pod -> Service -> pod traffic
    # enters on the bridge. The global ip_forward stays as it is.
    Path(f"/proc/sys/net/ipv4/conf/{BRIDGE}/forwarding").write_text("1\n")


def write_node_files(paths: NodePaths, client_ca: Path, ports: NodePorts) -> None:
    for d in (paths.containerd, paths.cni_conf_dir, paths.kubelet_root, paths.pod_logs):
        d.mkdir(parents=True, exist_ok=True)
    paths.containerd_config.write_text(containerd_config(paths))
    for old in paths.cni_conf_dir.glob("*"):
        old.unlink()
    (paths.cni_conf_dir / f"10-{CNI_NETWORK}.conflist").write_text(
        json.dumps(cni_conflist(paths), indent=2) + "\n"
    )
    paths.kubelet_config.write_text(
        yaml.safe_dump(kubelet_config(paths, client_ca, ports), sort_keys=False)
    )
    paths.corefile.write_text(corefile(paths.kubeconfig("coredns"), ports))


def containerd_args(paths: NodePaths) -> list[str]:
    return [
        shutil.which("containerd") or "/usr/bin/containerd",
        "--config",
        str(paths.containerd_config),
    ]


def ctr(paths: NodePaths, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run(
        ["ctr", "--address", str(paths.containerd_socket), "-n", "k8s.io", *args], check=check
    )


def containerd_ready(paths: NodePaths) -> bool:
    if not paths.containerd_socket.exists():
        return False
    return ctr(paths, "version", check=False).returncode == 0


def import_images(paths: NodePaths, archives: Sequence[Path], say: Callable[[str], None]) -> None:
    """Import OCI archives into the node's containerd (the CRI's `k8s.io` namespace)."""
    for archive in archives:
        t0 = time.monotonic()
        proc = ctr(paths, "images", "import", "--no-unpack", str(archive), check=False)
        if proc.returncode != 0:
            raise NodeError(f"importing {archive} failed: {proc.stderr.strip()}")
        names = [ln.split()[1] for ln in proc.stdout.splitlines() if ln.startswith("unpacking")]
        say(f"imported {archive.name} {' '.join(names)} ({time.monotonic() - t0:.1f}s)")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


# --- teardown -------------------------------------------------------------------------------


def _proc_cmdlines() -> Iterable[tuple[int, list[str]]]:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            raw = (entry / "cmdline").read_bytes()
            if raw:
                yield int(entry.name), raw.decode(errors="replace").split("\0")


def kill_shims(paths: NodePaths) -> list[int]:
    """containerd-shim-runc-v2 processes started by *our* containerd (its socket in argv)."""
    sock = str(paths.containerd_socket)
    pids = [
        pid
        for pid, argv in _proc_cmdlines()
        if argv and argv[0].endswith("containerd-shim-runc-v2") and sock in argv
    ]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def kill_runc_containers(paths: NodePaths) -> None:
    """Containers still known to runc under our runc root (one per namespace dir)."""
    if not paths.runc_root.is_dir():
        return
    for ns_root in paths.runc_root.iterdir():
        proc = _run(["runc", "--root", str(ns_root), "list", "-q"], check=False)
        for cid in proc.stdout.split():
            _run(["runc", "--root", str(ns_root), "kill", cid, "KILL"], check=False)
            _run(["runc", "--root", str(ns_root), "delete", "--force", cid], check=False)


def mounts_under(prefixes: Sequence[Path]) -> list[str]:
    """Mount points below any of `prefixes`, deepest first."""
    points = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            point = line.split()[1].replace("\\040", " ")
            if any(point == str(p) or point.startswith(f"{p}/") for p in prefixes):
                points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def unmount_all(prefixes: Sequence[Path]) -> None:
    for _ in range(3):
        points = mounts_under(prefixes)
        if not points:
            return
        for point in points:
            if _run(["umount", point], check=False).returncode != 0:
                _run(["umount", "-l", point], check=False)


def cri_netns() -> list[str]:
    """Network namespaces named as containerd's CRI names them (cni-<uuid>)."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith("cni-"))


def flush_our_iptables() -> None:
    """Remove KUBE-*/CNI-* chains and the rules jumping to them, IPv4 and IPv6."""
    for save, tool in (("iptables-save", "iptables"), ("ip6tables-save", "ip6tables")):
        if shutil.which(save) is None:
            continue
        out = _run([save], check=False).stdout
        for table, spec in rules_jumping_to_ours(out):
            _run([tool, "-t", table, "-D", *_split_rule(spec)], check=False)
        for table, chains in our_iptables_chains(out).items():
            for chain in chains:
                _run([tool, "-t", table, "-F", chain], check=False)
            for chain in chains:
                _run([tool, "-t", table, "-X", chain], check=False)


def _split_rule(spec: str) -> list[str]:
    return shlex.split(spec)


def remove_new_empty_nft_tables(before: Sequence[str]) -> None:
    """Tables iptables-nft created for us (e.g. `ip nat`), now empty, that did not exist before."""
    for table in nft_tables():
        if table not in before and _nft_table_empty(table):
            _run(["nft", "delete", "table", *table.split()], check=False)


def delete_bridge() -> None:
    if not bridge_exists():
        return
    ports = _run(["ip", "-o", "link", "show", "master", BRIDGE], check=False).stdout
    for line in ports.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        _run(["ip", "link", "del", name], check=False)
    _run(["ip", "link", "del", BRIDGE], check=False)


def remove_log_links(paths: NodePaths) -> None:
    """The kubelet's symlinks in /var/log/containers that point into our pod logs."""
    if not CONTAINER_LOG_LINKS.is_dir():
        return
    for link in CONTAINER_LOG_LINKS.iterdir():
        with contextlib.suppress(OSError):
            if link.is_symlink() and os.readlink(link).startswith(f"{paths.pod_logs}/"):
                link.unlink()


def sweep(paths: NodePaths, host: NodeHost, bin_dir: Path) -> None:
    """After every process stopped: remove what the node may have left on the host."""
    kill_shims(paths)
    kill_runc_containers(paths)
    kill_shims(paths)
    # Pods the kubelet could not tear down leave their netns: those that appeared
    # while the node ran (there is one containerd node per machine).
    for name in cri_netns():
        if name not in host.netns:
            _run(["ip", "netns", "delete", name], check=False)
    unmount_all([paths.state_dir])
    if (bin_dir / "kube-proxy").exists():
        _run([str(bin_dir / "kube-proxy"), "--cleanup"], check=False, timeout=60)
    flush_our_iptables()
    remove_new_empty_nft_tables(host.nft_tables)
    delete_bridge()
    restore_sysctls(host.sysctls)
    remove_log_links(paths)
    for d in paths.wiped_at_stop():
        shutil.rmtree(d, ignore_errors=True)
    with contextlib.suppress(OSError):
        paths.containerd_socket.unlink()
    with contextlib.suppress(OSError):
        Path(f"{paths.containerd_socket}.ttrpc").unlink()
