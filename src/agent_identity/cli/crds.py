"""`agent-identity crds`: write the CRDs generated from the models, or install them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from agent_identity import GROUP
from agent_identity.api import crdgen


@click.group()
def crds() -> None:
    """The CustomResourceDefinitions of agentidentity.io, generated from the pydantic models."""


@crds.command()
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("crds"),
    show_default=True,
    help="Directory to write one YAML file per CRD into.",
)
def generate(output_dir: Path) -> None:
    """Write the CRDs (deterministic output; `make crds` runs this)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    files = crdgen.rendered_files()
    for name, content in files.items():
        path = output_dir / name
        if not path.exists() or path.read_text() != content:
            path.write_text(content)
        click.echo(f"wrote {path}")
    # Files of kinds we no longer generate would silently linger; say so instead.
    stale = sorted(p.name for p in output_dir.glob(f"{GROUP}_*.yaml") if p.name not in files)
    if stale:
        click.echo(f"warning: not generated any more, delete them: {', '.join(stale)}", err=True)


@crds.command()
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar="KUBECONFIG",
    default=None,
    help="Kubeconfig of the cluster (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).",
)
@click.option("--context", default=None, help="Kubeconfig context to use.")
@click.option(
    "--timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds to wait for the CRDs to become Established.",
)
def install(kubeconfig: Path | None, context: str | None, timeout: float) -> None:
    """Create or replace the CRDs in the cluster and wait until they are Established."""
    from kubernetes import config as kube_config
    from kubernetes.config.config_exception import ConfigException

    config: Any = kube_config  # the client's loaders are untyped

    try:
        if kubeconfig is not None:
            api_client = config.new_client_from_config(config_file=str(kubeconfig), context=context)
        else:
            try:
                api_client = config.new_client_from_config(context=context)
            except (ConfigException, FileNotFoundError):
                config.load_incluster_config()
                from kubernetes import client

                api_client = client.ApiClient()
    except (ConfigException, FileNotFoundError) as exc:
        raise click.ClickException(
            f"no cluster to talk to: {exc}; pass --kubeconfig or set KUBECONFIG"
        ) from exc
    try:
        names = crdgen.install_crds(api_client, timeout=timeout)
    except TimeoutError as exc:
        raise click.ClickException(str(exc)) from exc
    for name in names:
        click.echo(f"customresourcedefinition/{name} established")
