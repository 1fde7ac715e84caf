"""The local cluster's node: pods really run, with logs, exec, Services and DNS.

The session's cluster has its node because these tests are e2e (tests/conftest.py).
The last test stops that cluster and checks the host is as it was before it started.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from agent_identity.devcluster import node as devnode
from tests.conftest import TestCluster, figure, host_snapshot

NODE = devnode.NODE_NAME


@pytest.fixture
def app_image(project_image: str) -> str:
    return project_image


def _wait_running(cluster: TestCluster, ns: str, selector: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = cluster.kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "json").stdout
        for pod in json.loads(out)["items"]:
            ready = any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in pod["status"].get("conditions", [])
            )
            if pod["status"].get("phase") == "Running" and ready:
                return str(pod["metadata"]["name"])
        time.sleep(0.25)
    describe = cluster.kubectl("describe", "pods", "-n", ns, "-l", selector, check=False)
    raise AssertionError(f"no Running pod for {selector} in {timeout}s\n{describe.stdout}")


def _deployment(name: str, image: str, command: list[str], port: int | None = None) -> str:
    container: dict[str, object] = {
        "name": name,
        "image": image,
        "imagePullPolicy": "Never",
        "command": command,
    }
    if port is not None:
        container["ports"] = [{"containerPort": port}]
        container["readinessProbe"] = {"tcpSocket": {"port": port}, "periodSeconds": 1}
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"terminationGracePeriodSeconds": 1, "containers": [container]},
                },
            },
        }
    )


def test_node_is_ready_and_untainted(cluster: TestCluster) -> None:
    node = json.loads(cluster.kubectl("get", "node", NODE, "-o", "json").stdout)
    assert devnode.node_is_ready(node), node["status"]["conditions"]
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == devnode.BRIDGE_IP
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")


def _listening(pids: set[int]) -> list[tuple[str, str]]:
    """(process, local address) of every TCP/UDP socket in LISTEN (or bound, for UDP) that
    one of ``pids`` holds, from `ss`."""
    out = subprocess.run(
        ["ss", "-H", "-l", "-n", "-p", "-t", "-u"], capture_output=True, text=True, check=True
    ).stdout
    found = []
    for line in out.splitlines():
        cols = line.split()
        users = " ".join(cols[6:])
        owners = {int(p) for p in re.findall(r"pid=(\d+)", users)}
        if owners & pids:
            name = re.search(r'\(\("([^"]+)"', users)
            found.append((name.group(1) if name else "?", cols[4]))
    return found


def test_nothing_listens_on_an_external_interface(cluster: TestCluster) -> None:
    # Every process of the local cluster (control plane, node, CoreDNS) listens on loopback
    # or on the cluster bridge only: nothing is reachable from the machine's network.
    assert cluster.devcluster is not None
    pids = set(cluster.devcluster.processes().values())
    sockets = _listening(pids)
    assert {name for name, _ in sockets} >= {"kube-apiserver", "etcd", "kubelet"}, sockets
    allowed = ("127.0.0.1:", "[::1]:", f"{devnode.BRIDGE_IP}:")
    external = [(n, a) for n, a in sockets if not a.startswith(allowed)]
    assert external == [], f"listening beyond loopback and the bridge: {external}"


def test_a_pod_runs_the_project_image_with_logs_exec_services_and_dns(
    cluster: TestCluster, namespace: str, app_image: str
) -> None:
    server = _deployment(
        "web", app_image, ["python3", "-u", "-m", "http.server", "8080"], port=8080
    )
    t0 = time.monotonic()
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=server)
    pod = _wait_running(cluster, namespace, "app=web")
    figure(
        f"\nkubectl apply of a Deployment -> Running and Ready pod: {time.monotonic() - t0:.1f}s"
    )
    cluster.kubectl(
        "expose", "deployment", "web", "-n", namespace, "--port=80", "--target-port=8080"
    )

    # kubectl exec (API server -> kubelet -> CRI streaming) runs in the container.
    whoami = cluster.kubectl("exec", "-n", namespace, pod, "--", "id", "-u").stdout.strip()
    assert whoami.isdigit()

    # From inside the pod: DNS names of the `kubernetes` and `web` Services resolve
    # (CoreDNS behind kube-dns), HTTPS to the API server through kube-proxy authenticates
    # with the pod's ServiceAccount token, and the `web` Service answers by DNS name.
    probe = f"""
import json, socket, ssl, time, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
api = socket.gethostbyname("kubernetes.default.svc.cluster.local")
web = socket.gethostbyname("web.{namespace}.svc.cluster.local")
ctx = ssl.create_default_context(cafile=sa + "/ca.crt")
req = urllib.request.Request(
    "https://kubernetes.default.svc/api/v1/namespaces/{namespace}/services/web",
    headers={{"Authorization": "Bearer " + open(sa + "/token").read()}},
)
try:
    status = urllib.request.urlopen(req, context=ctx, timeout=10).status
except urllib.error.HTTPError as exc:
    status = exc.code
for _ in range(20):  # the Service's rules may land a moment after `expose`
    try:
        body = urllib.request.urlopen("http://web/", timeout=5).read()
        break
    except OSError:
        time.sleep(0.5)
print(json.dumps({{"api": api, "web": web, "status": status, "listing": b"Directory" in body}}))
"""
    out = cluster.kubectl("exec", "-n", namespace, pod, "--", "python3", "-c", probe).stdout
    result = json.loads(out.strip().splitlines()[-1])
    cluster_ip = cluster.kubectl(
        "get", "service", "web", "-n", namespace, "-o", "jsonpath={.spec.clusterIP}"
    ).stdout
    assert result["api"] == devnode.SERVICE_IP
    assert result["web"] == cluster_ip
    # 403: the API server authenticated the pod's token and RBAC refused the default SA.
    assert result["status"] == 403
    assert result["listing"] is True

    # kubectl logs (API server -> kubelet) shows the request the probe made.
    logs = cluster.kubectl("logs", "-n", namespace, pod).stdout
    assert '"GET / HTTP/1.1" 200' in logs, logs


@pytest.mark.stops_cluster
def test_down_leaves_nothing_behind(cluster: TestCluster) -> None:
    """Stops the session's cluster (so it runs last) and compares the host with before."""
    dev = cluster.devcluster
    if dev is None or not dev.has_node or cluster.host_before is None:
        pytest.skip("checks the local node's teardown (--cluster=local)")
    cluster.stop_clients()  # the operator and admission fixtures, if they run
    pids = list(dev.processes().values())
    paths = dev.node_paths
    t0 = time.monotonic()
    dev.stop()
    figure(f"\nstop with the node: {time.monotonic() - t0:.1f}s")
    after = host_snapshot()
    for key, before in cluster.host_before.items():
        assert after[key] == before, f"{key} differs after stop:\n{before}\n!=\n{after[key]}"
    assert not any(Path(f"/proc/{pid}").exists() and _not_zombie(pid) for pid in pids)
    shims = [
        cmd
        for cmd in _cmdlines()
        if "containerd-shim" in cmd and str(paths.containerd_socket) in cmd
    ]
    assert shims == []
    for leftover in paths.wiped_at_stop():
        assert not leftover.exists(), leftover
    assert not Path("/sys/class/net", devnode.BRIDGE).exists()


def _not_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cmdlines() -> list[str]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                raw = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            out.append(shlex.join(raw.decode(errors="replace").split("\0")))
    return out
