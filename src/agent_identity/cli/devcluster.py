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
    """A real local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager)."""


@devcluster.command("build")
@click.option("--force", is_flag=True, help="Rebuild even if the binaries are cached.")
def build_cmd(force: bool) -> None:
    """Build the binaries once per version (first time ~11 min on 2 cores)."""
    if is_built() and not force:
        click.echo(f"binaries present: {binaries_dir()}", err=True)
    else:
        try:
            ensure_built(progress=True, force=force)
        except BuildError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(str(binaries_dir()))


@devcluster.command()
@_state_dir_option
def up(state_dir: Path | None) -> None:
    """Start the control plane detached; print `export KUBECONFIG=...` once ready."""
    cluster = DevCluster.attach(state_dir)
    if cluster is not None and cluster.is_running() and cluster.is_ready():
        click.echo(f"already running at {cluster.server}", err=True)
    else:
        try:
            cluster = DevCluster.start(state_dir, detached=True, progress=True)
        except (BuildError, ClusterError) as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(_exports(cluster))


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
