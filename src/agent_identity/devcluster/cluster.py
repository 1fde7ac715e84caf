"""The local control plane: etcd -> kube-apiserver -> kube-controller-manager.

Like controller-runtime's envtest, but with a controller-manager (namespaces
really delete, ServiceAccounts and their tokens exist) and usable both as a
context manager (tests) and detached (`agent-identity devcluster up`).

State directory layout::

    pki/                       CAs, serving cert, SA signing key (reused across starts)
    etcd/                      etcd data (wiped on every start: a dev cluster starts empty)
    logs/<process>.log         each process' stdout+stderr
    kubeconfig                 admin (system:masters)
    users/<user>.kubeconfig    minted by user_kubeconfig()
    cluster.json               pids, ports, server: how `down`/`status` find a detached cluster
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import yaml

from agent_identity.devcluster import build, node
from agent_identity.devcluster.node import NodeError, NodeHost, NodePaths, NodePorts
from agent_identity.devcluster.pause import ensure_pause_image, image_archives
from agent_identity.devcluster.pki import ClusterPKI

HOST = "127.0.0.1"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
STATE_FILE = "cluster.json"

# The controllers the local control plane runs: enough for namespaces to delete,
# garbage collection through ownerReferences, default ServiceAccounts and the
# kube-root-ca.crt ConfigMap, and Deployments -> ReplicaSets -> Pods objects.
CONTROLLERS: tuple[str, ...] = (
    "namespace-controller",
    "garbage-collector-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "deployment-controller",
    "replicaset-controller",
)
# With a node: its lifecycle (the not-ready taint goes once the kubelet reports Ready),
# Services' endpoints, and the workload controllers pods of real apps need.
NODE_CONTROLLERS: tuple[str, ...] = (
    "node-lifecycle-controller",
    "taint-eviction-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "daemonset-controller",
    "statefulset-controller",
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    "disruption-controller",
    "pod-garbage-collector-controller",
    "replicationcontroller-controller",
    "ephemeral-volume-controller",
    "persistentvolumeclaim-protection-controller",
    "persistentvolume-protection-controller",
    "clusterrole-aggregation-controller",
)

START_TIMEOUT = 90.0
STOP_TIMEOUT = 10.0


class ClusterError(RuntimeError):
    """The control plane failed to start; the message carries the failing log's tail."""


def clusters_root() -> Path:
    return build.cache_root() / "clusters"


def default_state_dir(name: str = "default") -> Path:
    return clusters_root() / name


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int

    @classmethod
    def allocate(cls) -> Ports:
        ports: set[int] = set()
        while len(ports) < 4:
            ports.add(free_port())
        a, b, c, d = sorted(ports)
        return cls(a, b, c, d)


# --- pure flag builders (unit-tested) -------------------------------------------------


def etcd_args(bin_dir: Path, data_dir: Path, ports: Ports) -> list[str]:
    client = f"http://{HOST}:{ports.etcd_client}"
    peer = f"http://{HOST}:{ports.etcd_peer}"
    return [
        str(bin_dir / "etcd"),
        "--name=devcluster",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=devcluster={peer}",
        # A throwaway cluster: durability buys nothing and fsync costs seconds.
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def apiserver_args(
    bin_dir: Path, state_dir: Path, pki: ClusterPKI, ports: Ports, *, with_node: bool = False
) -> list[str]:
    # With a node the API server listens on the cluster's bridge (pods reach it as the
    # `kubernetes` Service through kube-proxy); without, on loopback alone.
    host = node.BRIDGE_IP if with_node else HOST
    server = f"https://{host}:{ports.apiserver}"
    if with_node:
        node_flags = [
            "--endpoint-reconciler-type=lease",
            f"--kubelet-client-certificate={pki.kubelet_client_cert}",
            f"--kubelet-client-key={pki.kubelet_client_key}",
            # The kubelet is `localhost` and listens on 127.0.0.1.
            "--kubelet-preferred-address-types=Hostname",
            # Webhook Services are called through their endpoints (pod IPs), not ClusterIPs.
            "--enable-aggregator-routing=true",
        ]
    else:
        # No kubelet/endpoints to reconcile the `kubernetes` Service against.
        node_flags = ["--endpoint-reconciler-type=none"]
    return [
        str(bin_dir / "kube-apiserver"),
        f"--etcd-servers=http://{HOST}:{ports.etcd_client}",
        f"--bind-address={host}",
        f"--advertise-address={host}",
        f"--secure-port={ports.apiserver}",
        f"--cert-dir={state_dir / 'apiserver-certs'}",
        f"--tls-cert-file={pki.serving_cert}",
        f"--tls-private-key-file={pki.serving_key}",
        f"--client-ca-file={pki.client_ca_cert}",
        f"--service-account-issuer={server}",
        f"--service-account-key-file={pki.sa_pub}",
        f"--service-account-signing-key-file={pki.sa_key}",
        # Node authorizes the kubelet (system:node:localhost); RBAC everyone else.
        "--authorization-mode=Node,RBAC",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        *node_flags,
        "--allow-privileged=true",
        "--profiling=false",
        "--v=1",
    ]


def controller_manager_args(
    bin_dir: Path,
    state_dir: Path,
    pki: ClusterPKI,
    ports: Ports,
    kubeconfig: Path,
    *,
    with_node: bool = False,
) -> list[str]:
    controllers = (*CONTROLLERS, *NODE_CONTROLLERS) if with_node else CONTROLLERS
    return [
        str(bin_dir / "kube-controller-manager"),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={HOST}",
        f"--secure-port={ports.controller_manager}",
        f"--cert-dir={state_dir / 'controller-manager-certs'}",
        "--leader-elect=false",
        # Each controller acts as its own ServiceAccount, as in kubeadm clusters.
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki.sa_key}",
        f"--root-ca-file={pki.ca_cert}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        f"--controllers={','.join(controllers)}",
        "--profiling=false",
        "--v=1",
    ]


def kubeconfig_dict(
    server: str, ca_pem: bytes, cert: bytes, key: bytes, user: str, cluster: str = "devcluster"
) -> dict[str, Any]:
    """A self-contained kubeconfig (certificates embedded) for `user`."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    context = f"{user}@{cluster}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)},
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": cluster, "user": user}}],
        "current-context": context,
    }


def _safe_filename(user: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", user)


# --- processes -------------------------------------------------------------------------


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # PR_SET_PDEATHSIG: an attached cluster dies with its Python process even on
    # SIGKILL, so an interrupted test run never leaves an apiserver behind.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is as good as gone.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _pid_runs(pid: int, exe: str) -> bool:
    """True when `pid` is alive and still our binary (pids get reused)."""
    if not _pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return False
    return cmdline == exe


def terminate(pid: int, exe: str, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, wait, then SIGKILL: the polite way first, then the sure way."""
    if not _pid_runs(pid, exe):
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap our own child, if it is one
            if not _pid_alive(pid):
                return
            time.sleep(0.05)


@dataclass
class _Proc:
    name: str
    args: list[str]
    log: Path
    pid: int = 0
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return _pid_runs(self.pid, self.args[0])

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


# --- the cluster -----------------------------------------------------------------------


class DevCluster:
    """A running local control plane. Create with `DevCluster.start()` or `attach()`."""

    def __init__(
        self,
        state_dir: Path,
        bin_dir: Path,
        ports: Ports,
        procs: list[_Proc],
        *,
        owned: bool,
        node_ports: NodePorts | None = None,
        node_host: NodeHost | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.bin_dir = bin_dir
        self.ports = ports
        # With a node the API server listens on the cluster bridge (see node.py).
        self.host = node.BRIDGE_IP if node_ports is not None else HOST
        self.server = f"https://{self.host}:{ports.apiserver}"
        self.node_ports = node_ports
        self._node_host = node_host or NodeHost()
        self.node_paths = NodePaths(state_dir)
        self.kubeconfig = state_dir / "kubeconfig"
        self.pki = ClusterPKI(state_dir / "pki")
        self._procs = procs
        # `owned`: started by this Python process and stopped when it exits.
        self._owned = owned
        self._stopped = False
        self._ssl: ssl.SSLContext | None = None

    # -- lifecycle ------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        state_dir: Path | str | None = None,
        *,
        detached: bool = False,
        progress: bool = True,
        build_if_missing: bool = True,
        node: bool = False,
    ) -> DevCluster:
        """Start etcd, kube-apiserver and kube-controller-manager; return once usable.

        Usable means `/readyz` answers ok and the `default` ServiceAccount exists.
        With `node=True` also containerd, kubelet, kube-scheduler, kube-proxy and CoreDNS
        (needs root), and usable means the node `localhost` is Ready and untainted.
        Attached (the default), the processes die with this Python process; detached
        they run in their own session until `stop()` / `agent-identity devcluster down`.
        """
        sd = Path(state_dir) if state_dir is not None else default_state_dir()
        sd.mkdir(parents=True, exist_ok=True)
        say = _sayer(progress)
        if node:
            try:
                _node_module().check_can_run()
                _node_module().ensure_host_packages(say)
            except NodeError as exc:
                raise ClusterError(str(exc)) from exc
        if build_if_missing:
            bin_dir = build.ensure_built(progress=progress, node=node)
        elif build.is_built(node=node):
            bin_dir = build.binaries_dir()
        else:
            raise ClusterError(
                "control plane binaries are not built: agent-identity devcluster build"
            )
        archives: list[Path] = []
        if node:
            try:
                ensure_pause_image(progress=progress)
            except build.BuildError as exc:
                raise ClusterError(str(exc)) from exc
            archives = image_archives()
        stale = cls.attach(sd)
        if stale is not None:
            say(f"stopping the cluster already running from {sd}")
            stale.stop()
        else:
            cls._sweep_leftovers(sd)
        if node:
            other = _running_node_elsewhere(sd)
            if other is not None:
                raise ClusterError(
                    f"a local cluster with a node already runs from {other} (one node per "
                    f"machine: it owns the bridge {_node_module().BRIDGE}); stop it with "
                    f"`agent-identity devcluster down --state-dir {other}` or use --no-node"
                )
        t0 = time.monotonic()
        last_error: ClusterError | None = None
        # Free ports are picked before the processes bind them; on the rare race
        # with another process, try again with new ports.
        for _attempt in range(3):
            cluster = cls._prepare(sd, bin_dir, owned=not detached, with_node=node)
            try:
                cluster._launch(detached=detached, say=say, archives=archives)
            except ClusterError as exc:
                cluster.stop()
                last_error = exc
                if "address already in use" not in str(exc):
                    raise
                continue
            except BaseException:
                cluster.stop()
                raise
            what = "cluster with its node" if node else "control plane"
            say(f"{what} ready at {cluster.server} in {time.monotonic() - t0:.1f}s")
            return cluster
        assert last_error is not None
        raise last_error

    @classmethod
    def _prepare(cls, sd: Path, bin_dir: Path, *, owned: bool, with_node: bool) -> DevCluster:
        ClusterPKI(sd / "pki").ensure()
        (sd / "logs").mkdir(exist_ok=True)
        shutil.rmtree(sd / "etcd", ignore_errors=True)
        node_ports = None
        if with_node:
            free: set[int] = set()
            while len(free) < 7:
                free.add(free_port())
            node_ports = NodePorts(*sorted(free))
        cluster = cls(sd, bin_dir, Ports.allocate(), [], owned=owned, node_ports=node_ports)
        cluster._write_kubeconfig(cluster.kubeconfig, "kubernetes-admin", ["system:masters"])
        return cluster

    @property
    def has_node(self) -> bool:
        return self.node_ports is not None

    def _launch(
        self, *, detached: bool, say: Callable[[str], None], archives: Sequence[Path] = ()
    ) -> None:
        """Start each process once the one it depends on is ready."""
        if not detached:
            self._install_cleanup()
        sd, bin_dir, ports = self.state_dir, self.bin_dir, self.ports
        deadline = time.monotonic() + START_TIMEOUT
        etcd_health = f"http://{HOST}:{ports.etcd_client}/health"
        with_node = self.has_node
        nm = _node_module()
        if with_node:
            # Recorded before anything changes, so `stop` can put the host back.
            self._node_host = NodeHost(
                sysctls=nm.read_sysctls(), nft_tables=nm.nft_tables(), netns=nm.cri_netns()
            )
            self._save_state()
            try:
                nm.setup_bridge()  # the API server binds the bridge address
            except NodeError as exc:
                raise ClusterError(str(exc)) from exc

        self._spawn("etcd", etcd_args(bin_dir, sd / "etcd", ports), detached, say)
        self._poll(deadline, "etcd health", lambda: _etcd_healthy(etcd_health))

        api = apiserver_args(bin_dir, sd, self.pki, ports, with_node=with_node)
        self._spawn("kube-apiserver", api, detached, say)
        self._poll(deadline, "kube-apiserver /readyz", lambda: self._get("/readyz") == "ok")

        if with_node:
            self._start_containerd(detached, say, archives)

        # Only now: the controller-manager exits if RBAC's bootstrap roles are missing.
        kcm_kubeconfig = sd / "kube-controller-manager.kubeconfig"
        self._write_kubeconfig(kcm_kubeconfig, "system:kube-controller-manager", [])
        kcm = controller_manager_args(
            bin_dir, sd, self.pki, ports, kcm_kubeconfig, with_node=with_node
        )
        self._spawn("kube-controller-manager", kcm, detached, say)
        self._poll(
            deadline,
            "the default ServiceAccount",
            lambda: self._get("/api/v1/namespaces/default/serviceaccounts/default") is not None,
        )
        if with_node:
            self._start_node(detached, say)

    # -- the node ---------------------------------------------------------------------

    def _start_containerd(
        self, detached: bool, say: Callable[[str], None], archives: Sequence[Path]
    ) -> None:
        nm, paths, np = _node_module(), self.node_paths, self.node_ports
        assert np is not None
        nm.write_node_files(paths, self.pki.client_ca_cert, np)
        self._spawn("containerd", nm.containerd_args(paths), detached, say)
        self._poll(time.monotonic() + 30, "containerd", lambda: nm.containerd_ready(paths))
        try:
            nm.import_images(paths, archives, say)
        except NodeError as exc:
            raise ClusterError(str(exc)) from exc

    def _start_node(self, detached: bool, say: Callable[[str], None]) -> None:
        nm, paths, np, bin_dir = _node_module(), self.node_paths, self.node_ports, self.bin_dir
        assert np is not None
        deadline = time.monotonic() + nm.NODE_TIMEOUT
        kubeconfigs = {
            "kubelet": (f"system:node:{nm.NODE_NAME}", ["system:nodes"]),
            "kube-scheduler": ("system:kube-scheduler", []),
            "kube-proxy": ("system:kube-proxy", []),
            "coredns": ("system:coredns", []),
        }
        for component, (user, groups) in kubeconfigs.items():
            self._write_kubeconfig(paths.kubeconfig(component), user, groups)
        manifests = "\n---\n".join(yaml.safe_dump(m) for m in nm.dns_manifests())
        proc = subprocess.run(
            [str(bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig), "apply", "-f", "-"],
            input=manifests,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise ClusterError(f"applying the cluster DNS objects failed: {proc.stderr}")
        self._spawn("kube-scheduler", nm.scheduler_args(bin_dir, paths, np), detached, say)
        self._spawn("kube-proxy", nm.proxy_args(bin_dir, paths, np), detached, say)
        self._spawn("coredns", nm.coredns_args(bin_dir, paths), detached, say)
        self._spawn("kubelet", nm.kubelet_args(bin_dir, paths), detached, say)
        ready_url = f"http://127.0.0.1:{np.coredns_ready}/ready"
        self._poll(deadline, "CoreDNS ready", lambda: nm.http_ok(ready_url), nm.NODE_TIMEOUT)
        self._poll(deadline, f"node {nm.NODE_NAME} Ready", self._node_ready, nm.NODE_TIMEOUT)

    def _node_ready(self) -> bool:
        body = self._get(f"/api/v1/nodes/{_node_module().NODE_NAME}")
        return body is not None and _node_module().node_is_ready(json.loads(body))

    def _drain(self) -> None:
        """Delete every pod through the API so the kubelet tears its sandbox down
        (CNI DEL, netns, volume mounts); controllers stop first so none come back."""
        for p in self._procs:
            if p.name in ("kube-controller-manager", "kube-scheduler"):
                terminate(p.pid, p.args[0])
        if not any(p.name == "kubelet" and p.alive() for p in self._procs) or not any(
            p.name == "kube-apiserver" and p.alive() for p in self._procs
        ):
            return
        kubectl = [str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig)]
        subprocess.run(
            [*kubectl, "delete", "pods", "--all", "-A", "--grace-period=1", "--wait=false"],
            capture_output=True,
            check=False,
            timeout=30,
        )
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            out = subprocess.run(
                [*kubectl, "get", "pods", "-A", "-o", "name"],
                capture_output=True,
                text=True,
                check=False,
                timeout=30,
            )
            tasks = _node_module().ctr(self.node_paths, "tasks", "ls", check=False).stdout
            running = [ln for ln in tasks.splitlines()[1:] if "RUNNING" in ln.split()[2:3]]
            if out.returncode == 0 and not out.stdout.strip() and not running:
                return
            time.sleep(0.5)

    @classmethod
    def _sweep_leftovers(cls, sd: Path) -> None:
        """A node whose processes died without `stop` (SIGKILL): clean the host now."""
        try:
            state = json.loads((sd / STATE_FILE).read_text())
        except (OSError, ValueError):
            state = {}
        if state.get("node"):
            host = NodeHost.from_json(state.get("node", {}).get("host", {}))
            _node_module().sweep(NodePaths(sd), host, Path(state.get("bin_dir", sd)))
        with contextlib.suppress(OSError):
            (sd / STATE_FILE).unlink()

    def _spawn(
        self, name: str, args: list[str], detached: bool, say: Callable[[str], None]
    ) -> None:
        say(f"starting {name}")
        log = self.state_dir / "logs" / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                # Own session: Ctrl-C in the terminal reaches us, not them, so they
                # stop in order; detached, they outlive the CLI.
                start_new_session=True,
                preexec_fn=None if detached else _die_with_parent,
            )
        self._procs.append(_Proc(name, args, log, popen.pid, popen))
        self._save_state()

    def _poll(
        self,
        deadline: float,
        what: str,
        ready: Callable[[], bool],
        timeout: float = START_TIMEOUT,
    ) -> None:
        while True:
            for p in self._procs:
                if not p.alive():
                    raise ClusterError(f"{p.name} exited during start; {p.log}:\n{p.log_tail()}")
            if ready():
                return
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {p.name}\n{p.log_tail(10)}" for p in self._procs)
                raise ClusterError(f"no {what} after {timeout:.0f}s\n{tails}")
            time.sleep(0.2)

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is not None:
            return self._ssl
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        admin = self.state_dir / "pki" / "admin.pem"
        if not admin.exists():
            cert, key = self.pki.client_cert("kubernetes-admin", ["system:masters"])
            admin.touch(mode=0o600)
            admin.write_bytes(cert + key)
        ctx.load_cert_chain(str(admin))
        self._ssl = ctx
        return ctx

    def _get(self, path: str) -> str | None:
        """GET as admin; None on any error (the server may still be starting)."""
        try:
            with urllib.request.urlopen(
                self.server + path, context=self._ssl_context(), timeout=5
            ) as resp:
                return str(resp.read().decode())
        except (urllib.error.URLError, OSError, ssl.SSLError):
            return None

    def stop(self) -> None:
        """Stop the processes in reverse order (SIGTERM, wait, SIGKILL). Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self.has_node:
            with contextlib.suppress(Exception):
                self._drain()
        for p in reversed(self._procs):
            terminate(p.pid, p.args[0])
            if p.popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.popen.wait(timeout=1)
        if self.has_node:
            _node_module().sweep(self.node_paths, self._node_host, self.bin_dir)
        with contextlib.suppress(OSError):
            (self.state_dir / STATE_FILE).unlink()
        # The next start wipes it anyway; do it now so stopped clusters (and pytest's
        # kept temp dirs) do not hold etcd's preallocated WAL.
        shutil.rmtree(self.state_dir / "etcd", ignore_errors=True)

    def __enter__(self) -> DevCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _install_cleanup(self) -> None:
        atexit.register(self.stop)
        # SIGTERM/SIGHUP would otherwise end Python without running atexit; turn them
        # into SystemExit so context managers, fixtures and atexit all unwind.
        for sig in (signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(ValueError):  # not in the main thread
                if signal.getsignal(sig) in (signal.SIG_DFL, None):
                    signal.signal(sig, _exit_on_signal)

    # -- state file (detached clusters) -----------------------------------------------

    def _save_state(self) -> None:
        state = {
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "bin_dir": str(self.bin_dir),
            "ports": self.ports.__dict__,
            "processes": [{"name": p.name, "pid": p.pid, "args": p.args} for p in self._procs],
            "owner_pid": os.getpid() if self._owned else None,
            "node": None
            if self.node_ports is None
            else {"ports": self.node_ports.__dict__, "host": self._node_host.to_json()},
        }
        tmp = self.state_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, self.state_dir / STATE_FILE)

    @classmethod
    def attach(cls, state_dir: Path | str | None = None) -> DevCluster | None:
        """The cluster running from `state_dir` (any of its processes alive), or None."""
        sd = Path(state_dir) if state_dir is not None else default_state_dir()
        try:
            state = json.loads((sd / STATE_FILE).read_text())
            ports = Ports(**state["ports"])
            node_state = state.get("node")
            node_ports = NodePorts(**node_state["ports"]) if node_state else None
            node_host = NodeHost.from_json(node_state["host"]) if node_state else None
            procs = [
                _Proc(p["name"], list(p["args"]), sd / "logs" / f"{p['name']}.log", int(p["pid"]))
                for p in state["processes"]
            ]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not any(p.alive() for p in procs):
            return None  # start() or sweep_leftovers() cleans up after it
        return cls(
            sd,
            Path(state["bin_dir"]),
            ports,
            procs,
            owned=False,
            node_ports=node_ports,
            node_host=node_host,
        )

    def is_running(self) -> bool:
        return not self._stopped and all(p.alive() for p in self._procs)

    def is_ready(self) -> bool:
        return self._get("/readyz") == "ok"

    def processes(self) -> dict[str, int]:
        return {p.name: p.pid for p in self._procs}

    # -- credentials ------------------------------------------------------------------

    def _write_kubeconfig(self, path: Path, user: str, groups: Sequence[str]) -> Path:
        cert, key = self.pki.client_cert(user, groups)
        config = kubeconfig_dict(self.server, self.pki.ca_cert.read_bytes(), cert, key, user)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def user_kubeconfig(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig acting as `user` in `groups` (a client certificate from the client CA).

        The user has exactly the rights RBAC grants it: none unless you bind some.
        """
        suffix = "" if not groups else "-" + "-".join(sorted(groups))
        path = self.state_dir / "users" / f"{_safe_filename(user + suffix)}.kubeconfig"
        return self._write_kubeconfig(path, user, list(groups))

    def env(self) -> dict[str, str]:
        """Environment for tools: the admin kubeconfig, the matching kubectl first on PATH."""
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def __repr__(self) -> str:
        return f"DevCluster(server={self.server!r}, state_dir={str(self.state_dir)!r})"


def _node_module() -> Any:
    """node.py (a function so tests can see every use of the host-changing shell)."""
    return node


def _running_node_elsewhere(sd: Path) -> Path | None:
    """The state dir of another running cluster that has a node, if any."""
    root = clusters_root()
    candidates = [p.parent for p in root.glob(f"*/{STATE_FILE}")] if root.is_dir() else []
    for other in candidates:
        if other.resolve() == sd.resolve():
            continue
        running = DevCluster.attach(other)
        if running is not None and running.has_node:
            return other
    return None


def _etcd_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(json.loads(resp.read()).get("health") == "true")
    except (OSError, ValueError):
        return False


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _sayer(enabled: bool) -> Callable[[str], None]:
    t0 = time.monotonic()

    def say(msg: str) -> None:
        if enabled:
            print(f"[devcluster {time.monotonic() - t0:5.1f}s] {msg}", file=sys.stderr)

    return say
