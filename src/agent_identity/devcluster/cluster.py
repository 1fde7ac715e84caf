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

from agent_identity.devcluster import build
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


def apiserver_args(bin_dir: Path, state_dir: Path, pki: ClusterPKI, ports: Ports) -> list[str]:
    server = f"https://{HOST}:{ports.apiserver}"
    return [
        str(bin_dir / "kube-apiserver"),
        f"--etcd-servers=http://{HOST}:{ports.etcd_client}",
        f"--bind-address={HOST}",
        f"--advertise-address={HOST}",
        f"--secure-port={ports.apiserver}",
        f"--cert-dir={state_dir / 'apiserver-certs'}",
        f"--tls-cert-file={pki.serving_cert}",
        f"--tls-private-key-file={pki.serving_key}",
        f"--client-ca-file={pki.client_ca_cert}",
        f"--service-account-issuer={server}",
        f"--service-account-key-file={pki.sa_pub}",
        f"--service-account-signing-key-file={pki.sa_key}",
        # Node is there for when a kubelet joins (a later issue); RBAC is the point.
        "--authorization-mode=Node,RBAC",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        # No kubelet/endpoints to reconcile the `kubernetes` Service against.
        "--endpoint-reconciler-type=none",
        "--allow-privileged=true",
        "--profiling=false",
        "--v=1",
    ]


def controller_manager_args(
    bin_dir: Path, state_dir: Path, pki: ClusterPKI, ports: Ports, kubeconfig: Path
) -> list[str]:
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
        f"--controllers={','.join(CONTROLLERS)}",
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
    ) -> None:
        self.state_dir = state_dir
        self.bin_dir = bin_dir
        self.ports = ports
        self.server = f"https://{HOST}:{ports.apiserver}"
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
    ) -> DevCluster:
        """Start etcd, kube-apiserver and kube-controller-manager; return once usable.

        Usable means `/readyz` answers ok and the `default` ServiceAccount exists.
        Attached (the default), the processes die with this Python process; detached
        they run in their own session until `stop()` / `agent-identity devcluster down`.
        """
        sd = Path(state_dir) if state_dir is not None else default_state_dir()
        sd.mkdir(parents=True, exist_ok=True)
        say = _sayer(progress)
        if build_if_missing:
            bin_dir = build.ensure_built(progress=progress)
        elif build.is_built():
            bin_dir = build.binaries_dir()
        else:
            raise ClusterError(
                "control plane binaries are not built: agent-identity devcluster build"
            )
        stale = cls.attach(sd)
        if stale is not None:
            say(f"stopping the cluster already running from {sd}")
            stale.stop()
        t0 = time.monotonic()
        last_error: ClusterError | None = None
        # Free ports are picked before the processes bind them; on the rare race
        # with another process, try again with new ports.
        for _attempt in range(3):
            cluster = cls._prepare(sd, bin_dir, owned=not detached)
            try:
                cluster._launch(detached=detached, say=say)
            except ClusterError as exc:
                cluster.stop()
                last_error = exc
                if "address already in use" not in str(exc):
                    raise
                continue
            except BaseException:
                cluster.stop()
                raise
            say(f"control plane ready at {cluster.server} in {time.monotonic() - t0:.1f}s")
            return cluster
        assert last_error is not None
        raise last_error

    @classmethod
    def _prepare(cls, sd: Path, bin_dir: Path, *, owned: bool) -> DevCluster:
        ClusterPKI(sd / "pki").ensure()
        (sd / "logs").mkdir(exist_ok=True)
        shutil.rmtree(sd / "etcd", ignore_errors=True)
        cluster = cls(sd, bin_dir, Ports.allocate(), [], owned=owned)
        cluster._write_kubeconfig(cluster.kubeconfig, "kubernetes-admin", ["system:masters"])
        return cluster

    def _launch(self, *, detached: bool, say: Callable[[str], None]) -> None:
        """Start each process once the one it depends on is ready."""
        if not detached:
            self._install_cleanup()
        sd, bin_dir, ports = self.state_dir, self.bin_dir, self.ports
        deadline = time.monotonic() + START_TIMEOUT
        etcd_health = f"http://{HOST}:{ports.etcd_client}/health"

        self._spawn("etcd", etcd_args(bin_dir, sd / "etcd", ports), detached, say)
        self._poll(deadline, "etcd health", lambda: _etcd_healthy(etcd_health))

        self._spawn("kube-apiserver", apiserver_args(bin_dir, sd, self.pki, ports), detached, say)
        self._poll(deadline, "kube-apiserver /readyz", lambda: self._get("/readyz") == "ok")

        # Only now: the controller-manager exits if RBAC's bootstrap roles are missing.
        kcm_kubeconfig = sd / "kube-controller-manager.kubeconfig"
        self._write_kubeconfig(kcm_kubeconfig, "system:kube-controller-manager", [])
        kcm = controller_manager_args(bin_dir, sd, self.pki, ports, kcm_kubeconfig)
        self._spawn("kube-controller-manager", kcm, detached, say)
        self._poll(
            deadline,
            "the default ServiceAccount",
            lambda: self._get("/api/v1/namespaces/default/serviceaccounts/default") is not None,
        )

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

    def _poll(self, deadline: float, what: str, ready: Callable[[], bool]) -> None:
        while True:
            for p in self._procs:
                if not p.alive():
                    raise ClusterError(f"{p.name} exited during start; {p.log}:\n{p.log_tail()}")
            if ready():
                return
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {p.name}\n{p.log_tail(10)}" for p in self._procs)
                raise ClusterError(f"no {what} after {START_TIMEOUT:.0f}s\n{tails}")
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
        for p in reversed(self._procs):
            terminate(p.pid, p.args[0])
            if p.popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.popen.wait(timeout=1)
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
            procs = [
                _Proc(p["name"], list(p["args"]), sd / "logs" / f"{p['name']}.log", int(p["pid"]))
                for p in state["processes"]
            ]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not any(p.alive() for p in procs):
            with contextlib.suppress(OSError):
                (sd / STATE_FILE).unlink()
            return None
        return cls(sd, Path(state["bin_dir"]), ports, procs, owned=False)

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
