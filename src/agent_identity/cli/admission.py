"""`agent-identity admission`: webhooks + decision API; `webhook-config` prints manifests."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from agent_identity.admission.webhookconfig import (
    DEFAULT_NAME,
    OPERATOR_NAMESPACE,
    TIMEOUT_SECONDS,
    ServiceRef,
    webhook_configurations,
)


@click.group(invoke_without_command=True)
@click.option(
    "--dev",
    is_flag=True,
    help="Serve on 127.0.0.1 with a generated certificate and "
    "install the webhook configurations into the current cluster (removed on exit). "
    "With the local cluster's node up, the decision API also listens on its bridge "
    "(10.244.0.1), and that URL is injected into agent pods.",
)
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False),
    default=None,
    help="Kubeconfig (default: in-cluster, else $KUBECONFIG / ~/.kube/config).",
)
@click.option(
    "--host", default="0.0.0.0", show_default=True, help="Address to listen on (not --dev)."
)
@click.option(
    "--port", type=int, default=None, help="Webhook HTTPS port (default 8443; --dev: a free port)."
)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="/metrics, /healthz, /readyz (default 8080; --dev: free).",
)
@click.option(
    "--decisions-port",
    type=int,
    default=None,
    help="Decision API port (default 8444; --dev: free).",
)
@click.option(
    "--decisions-url",
    default=None,
    envvar="AGENT_IDENTITY_DECISIONS_URL",
    help="The decision API URL injected into agent pods.",
)
@click.option(
    "--tls-cert-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Serving certificate (PEM) of the webhook and decision ports; required without --dev.",
)
@click.option(
    "--tls-key-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Its private key (PEM).",
)
@click.option(
    "--tls-ca-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="The CA (PEM) of --tls-cert-file, injected into agent pods as "
    "AGENT_IDENTITY_DECISIONS_CA so they verify the decision API (default: ca.crt "
    "beside --tls-cert-file, as cert-manager writes it).",
)
@click.option(
    "--tls-secret",
    default=None,
    envvar="AGENT_IDENTITY_TLS_SECRET",
    help="Self-managed serving certificate (no cert-manager): keep a CA and the "
    "certificate in this Secret of --operator-namespace, rotate them, and keep the "
    "webhooks' caBundle current; one replica at a time writes, under --tls-lease.",
)
@click.option(
    "--tls-lease",
    default=None,
    envvar="AGENT_IDENTITY_TLS_LEASE",
    help="The coordination.k8s.io Lease of --tls-secret's writer (default: the Secret's name).",
)
@click.option(
    "--tls-dns-names",
    default=None,
    envvar="AGENT_IDENTITY_TLS_DNS_NAMES",
    help="Comma-separated names of --tls-secret's certificate (default: the Services "
    "<webhook-name>-admission and <webhook-name>-decisions of --operator-namespace).",
)
@click.option(
    "--webhook-name",
    default=DEFAULT_NAME,
    show_default=True,
    help="Name of the webhook configurations (--dev installs them).",
)
@click.option(
    "--operator-namespace",
    default=OPERATOR_NAMESPACE,
    show_default=True,
    help="Namespace excluded from pod admission (where the operator runs).",
)
@click.option(
    "--cluster-name",
    default="local",
    envvar="AGENT_IDENTITY_CLUSTER_NAME",
    show_default=True,
    help="Cluster name in agent identity URIs.",
)
@click.option(
    "--audit-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also append audit records (JSON lines) to this file.",
)
@click.pass_context
def admission(
    ctx: click.Context,
    dev: bool,
    kubeconfig: str | None,
    host: str,
    port: int | None,
    metrics_port: int | None,
    decisions_port: int | None,
    decisions_url: str | None,
    tls_cert_file: str | None,
    tls_key_file: str | None,
    tls_ca_file: str | None,
    tls_secret: str | None,
    tls_lease: str | None,
    tls_dns_names: str | None,
    webhook_name: str,
    operator_namespace: str,
    cluster_name: str,
    audit_file: str | None,
) -> None:
    """Run the admission webhooks and the decision API."""
    if ctx.invoked_subcommand is not None:
        return
    from agent_identity.admission.process import Options, main

    def pick(value: int | None, default: int) -> int:
        return value if value is not None else (0 if dev else default)

    main(
        Options(
            dev=dev,
            host=host,
            port=pick(port, 8443),
            metrics_port=pick(metrics_port, 8080),
            decisions_port=pick(decisions_port, 8444),
            kubeconfig=kubeconfig,
            tls_cert_file=tls_cert_file,
            tls_key_file=tls_key_file,
            tls_ca_file=tls_ca_file,
            tls_secret=tls_secret,
            tls_lease=tls_lease,
            tls_dns_names=tuple(n.strip() for n in (tls_dns_names or "").split(",") if n.strip()),
            decisions_url=decisions_url,
            webhook_name=webhook_name,
            operator_namespace=operator_namespace,
            cluster_name=cluster_name,
            audit_file=audit_file,
        )
    )


@admission.command("webhook-config")
@click.option(
    "--service",
    "service_name",
    default="agent-identity",
    show_default=True,
    help="The Service in front of the admission pods.",
)
@click.option(
    "--namespace",
    default=OPERATOR_NAMESPACE,
    show_default=True,
    help="The Service's namespace (also excluded from pod admission).",
)
@click.option("--port", type=int, default=443, show_default=True, help="The Service port.")
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="PEM CA of the serving certificate (omit to leave caBundle for cert-manager's "
    "CA injector: an empty placeholder is written).",
)
@click.option("--url", default=None, help="Point at a URL instead of a Service.")
@click.option("--name", default=DEFAULT_NAME, show_default=True)
@click.option("--timeout-seconds", type=int, default=TIMEOUT_SECONDS, show_default=True)
def webhook_config(
    service_name: str,
    namespace: str,
    port: int,
    ca_file: str | None,
    url: str | None,
    name: str,
    timeout_seconds: int,
) -> None:
    """Print the Validating/MutatingWebhookConfiguration as YAML (for manifests/)."""
    ca = Path(ca_file).read_bytes() if ca_file else b""
    validating, mutating = webhook_configurations(
        ca_bundle=ca,
        url=url,
        service=None if url else ServiceRef(service_name, namespace, port),
        name=name,
        operator_namespace=namespace,
        timeout_seconds=timeout_seconds,
    )
    if not ca_file:
        for doc in (validating, mutating):
            for hook in doc["webhooks"]:
                del hook["clientConfig"]["caBundle"]
    click.echo(yaml.safe_dump_all([validating, mutating], sort_keys=False), nl=False)
