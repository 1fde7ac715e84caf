"""`agent-identity devcluster`: build, start and stop the local control plane.

stdout carries only what scripts consume (`export ...` lines, paths); progress
goes to stderr, so `eval "$(agent-identity devcluster up)"` works.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from agent_identity.devcluster import (
    ETCD_VERSION,
    K8S_VERSION,
    BuildError,
    ClusterError,
    DevCluster,
    binaries_dir,
    default_state_dir,
    ensure_built,
    is_built,
)

_state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Cluster state directory (default: ~/.cache/agent-identity/clusters/default).",
)


def _exports(cluster: DevCluster) -> str:
    kubeconfig = shlex.quote(str(cluster.kubeconfig))
    bin_dir = shlex.quote(str(cluster.bin_dir))
    return f"export KUBECONFIG={kubeconfig}\nexport PATH={bin_dir}:$PATH"


def _attach_or_fail(state_dir: Path | None) -> DevCluster:
    cluster = DevCluster.attach(state_dir)
    if cluster is None:
        where = state_dir or default_state_dir()
        raise click.ClickException(f"no cluster runs from {where}: agent-identity devcluster up")
    return cluster


@click.group()
def devcluster() -> None:
    """A real local Kubernetes cluster: control plane, and a node unless --no-node."""


@devcluster.command("build")
@click.option("--force", is_flag=True, help="Rebuild even if the binaries are cached.")
@click.option("--node/--no-node", default=True, help="Also the node's binaries (default).")
def build_cmd(force: bool, node: bool) -> None:
    """Build the binaries once per version (first time ~11 min on 2 cores, node +3 min)."""
    try:
        if is_built(node=node) and not force:
            click.echo(f"binaries present: {binaries_dir()}", err=True)
        else:
            ensure_built(progress=True, force=force, node=node)
        if node:
            from agent_identity.devcluster.pause import ensure_pause_image

            ensure_pause_image(progress=True)
    except BuildError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(str(binaries_dir()))


@devcluster.command()
@_state_dir_option
@click.option(
    "--node/--no-node",
    default=True,
    show_default=True,
    help="Also run a node (containerd, kubelet, kube-proxy, CoreDNS; needs root).",
)
@click.option(
    "--image",
    "build_image",
    is_flag=True,
    help="Build the project image first when it is missing (make image), so pods can use it.",
)
def up(state_dir: Path | None, node: bool, build_image: bool) -> None:
    """Start the cluster detached; print `export KUBECONFIG=...` once ready.

    With the node (default) it returns once the node is Ready, with every image OCI
    archive of ~/.cache/agent-identity/images/ imported into it.
    """
    if build_image:
        _ensure_project_image()
    cluster = DevCluster.attach(state_dir)
    if (
        cluster is not None
        and cluster.is_running()
        and cluster.is_ready()
        and cluster.has_node == node
    ):
        click.echo(f"already running at {cluster.server}", err=True)
    else:
        try:
            cluster = DevCluster.start(state_dir, detached=True, progress=True, node=node)
        except (BuildError, ClusterError) as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(_exports(cluster))


def _ensure_project_image() -> None:
    """The shipping build's `make image`, when its archive is missing or stale."""
    from agent_identity.devcluster import image

    try:
        archive, rebuilt = image.ensure_image()
    except image.ImageError as exc:
        raise click.ClickException(str(exc)) from exc
    if not rebuilt:
        click.echo(f"project image current: {archive}", err=True)


@devcluster.command()
@_state_dir_option
def down(state_dir: Path | None) -> None:
    """Stop the control plane and free its ports."""
    cluster = DevCluster.attach(state_dir)
    if cluster is None:
        click.echo("not running", err=True)
        return
    cluster.stop()
    click.echo(f"stopped the cluster at {cluster.server}", err=True)


@devcluster.command()
@_state_dir_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(state_dir: Path | None, as_json: bool) -> None:
    """Whether the control plane runs, where, and with which binaries. Exit 1 if not running."""
    cluster = DevCluster.attach(state_dir)
    info: dict[str, object] = {
        "running": False,
        "stateDir": str(state_dir or default_state_dir()),
        "binaries": str(binaries_dir()),
        "built": is_built(),
        "kubernetes": K8S_VERSION,
        "etcd": ETCD_VERSION,
    }
    if cluster is not None:
        info.update(
            running=cluster.is_running(),
            ready=cluster.is_ready(),
            server=cluster.server,
            kubeconfig=str(cluster.kubeconfig),
            processes=cluster.processes(),
            node=cluster.has_node,
        )
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            click.echo(f"{key}: {value}")
    if not info["running"]:
        sys.exit(1)


@devcluster.command()
@_state_dir_option
def env(state_dir: Path | None) -> None:
    """Print the exports for a running cluster: `eval "$(agent-identity devcluster env)"`."""
    click.echo(_exports(_attach_or_fail(state_dir)))


@devcluster.command()
@_state_dir_option
@click.argument("name")
@click.option("--group", "-g", "groups", multiple=True, help="A group of the user (repeatable).")
def user(state_dir: Path | None, name: str, groups: tuple[str, ...]) -> None:
    """Mint a kubeconfig for user NAME (client certificate); print its path."""
    cluster = _attach_or_fail(state_dir)
    click.echo(str(cluster.user_kubeconfig(name, list(groups))))
