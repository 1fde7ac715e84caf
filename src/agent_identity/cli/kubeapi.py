"""The Kubernetes side of `kubectl agent`: client setup (kubeconfig, context, impersonation)
and the few API calls the plugin makes, with API errors turned into messages a person can act on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from agent_identity import GROUP, VERSION
from agent_identity.cli.report import EXIT_DENIED, EXIT_ERROR

AGENTS = "agents"
SCOPES = "authorityscopes"
POLICIES = "approvalpolicies"
APPROVALS = "approvalrequests"
KIND_OF = {
    AGENTS: "Agent",
    SCOPES: "AuthorityScope",
    POLICIES: "ApprovalPolicy",
    APPROVALS: "ApprovalRequest",
}


class CliError(Exception):
    """A failure to report to the user: the message, and the exit code to leave with."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


@dataclass
class KubeOptions:
    """The kubectl-style global options, wherever they appear on the command line."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    all_namespaces: bool = False
    as_user: str | None = None
    as_groups: list[str] = field(default_factory=list)
    output: str | None = None


def api_message(exc: Any) -> str:
    """The ``message`` of a Kubernetes Status body, else the raw body or reason."""
    body = getattr(exc, "body", None)
    if body:
        try:
            status = json.loads(body)
            if isinstance(status, dict) and status.get("message"):
                return str(status["message"])
        except ValueError:
            return str(body).strip()
    return f"{getattr(exc, 'status', '')} {getattr(exc, 'reason', '')}".strip()


WEBHOOK_MARKER = "denied the request: "


def refusal_message(exc: Any) -> str:
    """What an admission webhook (or RBAC) said, without the API server's wrapping."""
    message = api_message(exc)
    if WEBHOOK_MARKER in message:
        return message.split(WEBHOOK_MARKER, 1)[1]
    return message


class Kube:
    """A connected client for one invocation (lazy: commands that fail early never connect)."""

    def __init__(self, opts: KubeOptions) -> None:
        self.opts = opts
        self._client: Any = None
        self._namespace: str | None = None

    # setup ---------------------------------------------------------------------------

    def _load(self) -> None:
        from kubernetes import config
        from kubernetes.config.config_exception import ConfigException

        try:
            contexts, current = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                config_file=self.opts.kubeconfig
            )
            name = self.opts.context or (current or {}).get("name")
            chosen = next((c for c in contexts if c.get("name") == name), None)
            if self.opts.context and chosen is None:
                known = ", ".join(sorted(str(c.get("name")) for c in contexts))
                raise CliError(
                    f"context {self.opts.context!r} is not in the kubeconfig "
                    f"(known contexts: {known or 'none'})"
                )
            self._namespace = ((chosen or {}).get("context") or {}).get("namespace") or "default"
            client = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=self.opts.kubeconfig, context=self.opts.context
            )
        except ConfigException as exc:
            where = self.opts.kubeconfig or "$KUBECONFIG or ~/.kube/config"
            raise CliError(f"cannot load the kubeconfig ({where}): {exc}") from exc
        except OSError as exc:
            raise CliError(f"cannot read the kubeconfig: {exc}") from exc
        if self.opts.as_user or self.opts.as_groups:
            _impersonate(client, self.opts.as_user, self.opts.as_groups)
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._load()
        return self._client

    @property
    def namespace(self) -> str:
        """-n, else the kubeconfig context's namespace, else default."""
        if self.opts.namespace:
            return self.opts.namespace
        if self._namespace is None:
            self._load()
        assert self._namespace is not None
        return self._namespace

    def list_namespace(self) -> str | None:
        """The namespace a list covers: None with -A."""
        return None if self.opts.all_namespaces else self.namespace

    @property
    def custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.client)

    @property
    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.client)

    # calls ---------------------------------------------------------------------------

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            raise self._api_error(what, exc) from exc
        except HTTPError as exc:
            host = getattr(self.client.configuration, "host", "the API server")
            raise CliError(f"cannot reach the API server at {host} ({what}): {exc}") from exc

    def _api_error(self, what: str, exc: Any) -> CliError:
        status = getattr(exc, "status", 0)
        message = api_message(exc)
        if status == 401:
            return CliError(f"{what}: not authenticated ({message}); check your kubeconfig")
        if status == 403:
            return CliError(f"{what}: forbidden: {refusal_message(exc)}", EXIT_DENIED)
        if status == 404 and "the server could not find the requested resource" in message:
            return CliError(
                f"{what}: the API server does not serve {GROUP}/{VERSION}; install the CRDs "
                "(agent-identity crds install)"
            )
        if status == 404:
            return CliError(f"{what}: {message}")
        if status in (400, 422) or WEBHOOK_MARKER in message:
            return CliError(f"{what}: denied: {refusal_message(exc)}", EXIT_DENIED)
        return CliError(f"{what}: {message}")

    def list_objects(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        what = f"listing {plural}" + (f" in namespace {namespace}" if namespace else "")
        if namespace is None:
            out = self._call(what, self.custom.list_cluster_custom_object, GROUP, VERSION, plural)
        else:
            out = self._call(
                what,
                self.custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                plural,
            )
        items: list[dict[str, Any]] = out.get("items", [])
        for item in items:
            item.setdefault("kind", KIND_OF[plural])
            item.setdefault("apiVersion", f"{GROUP}/{VERSION}")
        return items

    def get(self, plural: str, namespace: str, name: str, hint: str = "") -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        kind = KIND_OF[plural]
        try:
            obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name
            )
            return obj
        except ApiException as exc:
            if exc.status == 404 and "could not find the requested resource" not in api_message(
                exc
            ):
                raise CliError(
                    f"{kind} {name!r} not found in namespace {namespace!r}"
                    + (f"; {hint}" if hint else "")
                ) from exc
            raise self._api_error(f"reading {kind} {namespace}/{name}", exc) from exc
        except Exception as exc:
            from urllib3.exceptions import HTTPError

            if isinstance(exc, HTTPError):
                raise CliError(f"cannot reach the API server: {exc}") from exc
            raise

    def get_optional(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.get(plural, namespace, name)
        except CliError as exc:
            if "not found in namespace" in exc.message:
                return None
            raise

    def merge_patch(
        self, plural: str, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        out: dict[str, Any] = self._call(
            f"changing {KIND_OF[plural]} {namespace}/{name}",
            self.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            plural,
            name,
            body,
            _content_type="application/merge-patch+json",
        )
        return out

    def replace_status_raw(
        self, plural: str, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """PUT the status subresource; ApiException propagates (the caller handles 409)."""
        out: dict[str, Any] = self.custom.replace_namespaced_custom_object_status(
            GROUP, VERSION, namespace, plural, name, body
        )
        return out

    def api_error(self, what: str, exc: Any) -> CliError:
        return self._api_error(what, exc)

    def token_request(
        self, namespace: str, service_account: str, ttl: int, audiences: list[str]
    ) -> dict[str, Any]:
        from kubernetes import client

        body = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=audiences, expiration_seconds=ttl)
        )
        out = self._call(
            f"requesting a token for ServiceAccount {namespace}/{service_account}",
            self.core.create_namespaced_service_account_token,
            service_account,
            namespace,
            body,
        )
        exp = out.status.expiration_timestamp
        return {
            "token": out.status.token,
            "expirationTimestamp": exp.isoformat().replace("+00:00", "Z") if exp else None,
            "audiences": list(out.spec.audiences or audiences),
        }


def _impersonate(client: Any, user: str | None, groups: list[str]) -> None:
    """Send Impersonate-User / Impersonate-Group (one header line per group, as kubectl does).

    The generated client keeps default headers in a plain dict, which cannot repeat a
    header, so the groups are added per request on the connection pool.
    """
    from urllib3 import HTTPHeaderDict

    if user:
        client.set_default_header("Impersonate-User", user)
    if not groups:
        return
    pool = client.rest_client.pool_manager
    original = pool.request

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        headers = HTTPHeaderDict(kwargs.get("headers") or {})
        headers.discard("Impersonate-Group")
        for group in groups:
            headers.add("Impersonate-Group", group)
        kwargs["headers"] = headers
        return original(method, url, *args, **kwargs)

    pool.request = request
