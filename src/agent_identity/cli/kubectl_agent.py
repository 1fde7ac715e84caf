"""`kubectl agent`: the kubectl plugin for people (executable `kubectl-agent`).

A thin shell: read objects from the API server, parse them into the API models, hand them
to pure code (``cli/report.py`` for shaping, ``authz.engine`` for decisions), render.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import yaml
from pydantic import ValidationError

from agent_identity.api import (
    ADMITTING_PHASES,
    Agent,
    ApprovalPolicy,
    ApprovalRequest,
    AuthorityScope,
    Phase,
    PlatformType,
)
from agent_identity.cli import report
from agent_identity.cli.kubeapi import (
    AGENTS,
    APPROVALS,
    POLICIES,
    SCOPES,
    CliError,
    Kube,
    KubeOptions,
)
from agent_identity.cli.report import (
    EXIT_DENIED,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    OUTCOME_EXIT,
    CanIRequest,
    UsageError,
)
from agent_identity.identity.names import service_account_name

F = TypeVar("F", bound=Callable[..., Any])
OUTPUTS = ("table", "wide", "json", "yaml", "markdown")
CONFLICT_RETRIES = 5

EXIT_CODES_HELP = """\b
Exit codes (every command):
  0  done; can-i: allowed
  1  can-i: denied; a change refused by the API server, RBAC or the admission webhook
  2  bad options or arguments
  3  can-i: needs a person's approval (escalate)
  4  no answer: object not found, cluster unreachable, unexpected API error
"""


def now_utc() -> datetime:
    return datetime.now(UTC)


# --- global options (accepted before or after the command, as kubectl passes them) ---------


def _opts(ctx: click.Context) -> KubeOptions:
    return ctx.ensure_object(KubeOptions)


def _set(attr: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        if value is None or value is False or value == ():
            return
        opts = _opts(ctx)
        if attr == "as_groups":
            opts.as_groups.extend(value)
        else:
            setattr(opts, attr, value)

    return callback


def kube_options(*, with_context: bool = True) -> Callable[[F], F]:
    options = [
        click.option(
            "-n",
            "--namespace",
            callback=_set("namespace"),
            expose_value=False,
            help="Namespace (default: the kubeconfig context's, else default).",
        ),
        click.option(
            "-A",
            "--all-namespaces",
            is_flag=True,
            default=False,
            callback=_set("all_namespaces"),
            expose_value=False,
            help="Every namespace.",
        ),
        click.option(
            "--kubeconfig",
            callback=_set("kubeconfig"),
            expose_value=False,
            help="Path of the kubeconfig (default: $KUBECONFIG or ~/.kube/config).",
        ),
        click.option(
            "--as",
            "as_user",
            callback=_set("as_user"),
            expose_value=False,
            help="User to impersonate.",
        ),
        click.option(
            "--as-group",
            multiple=True,
            callback=_set("as_groups"),
            expose_value=False,
            help="Group to impersonate (repeatable).",
        ),
        click.option(
            "-o",
            "--output",
            type=click.Choice(OUTPUTS),
            callback=_set("output"),
            expose_value=False,
            help="Output format (json, yaml, wide; markdown for audit).",
        ),
    ]
    if with_context:
        options.append(
            click.option(
                "--context",
                callback=_set("context"),
                expose_value=False,
                help="The kubeconfig context to use.",
            )
        )

    def deco(f: F) -> F:
        for option in reversed(options):
            f = option(f)
        return f

    return deco


def kube(ctx: click.Context) -> Kube:
    return Kube(_opts(ctx))


def output(ctx: click.Context, allowed: Sequence[str]) -> str:
    fmt = _opts(ctx).output or "table"
    if fmt not in allowed:
        raise UsageError(f"-o {fmt} is not supported here; use one of: {', '.join(allowed)}")
    return fmt


# --- rendering -------------------------------------------------------------------------------


def emit_data(data: Any, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        click.echo(
            yaml.safe_dump(_plain(data), sort_keys=False, default_flow_style=False), nl=False
        )


def _plain(data: Any) -> Any:
    return json.loads(json.dumps(data, default=str))


def emit_table(rows: list[dict[str, str]], empty: str, title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    if not rows:
        click.echo(empty, err=True)
        return
    width = None if sys.stdout.isatty() else 400
    console = Console(width=width, highlight=False, soft_wrap=False)
    table = Table(
        box=None,
        show_edge=False,
        pad_edge=False,
        header_style="bold",
        title=title,
        title_justify="left",
    )
    for col in rows[0]:
        table.add_column(col, no_wrap=True, overflow="ignore")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    console.print(table)


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


# --- object loading --------------------------------------------------------------------------

T = TypeVar("T")


def parse_all(model: Any, bodies: Iterable[dict[str, Any]]) -> list[Any]:
    """Parse each object; one that does not parse is reported and skipped, not fatal."""
    out = []
    for body in bodies:
        try:
            out.append(model.parse(body))
        except ValidationError as exc:
            meta = body.get("metadata") or {}
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err.get("loc", ()))
            click.echo(
                f"warning: {body.get('kind')} {meta.get('namespace')}/{meta.get('name')} "
                f"does not parse ({loc}: {err.get('msg')}); skipped",
                err=True,
            )
    return out


def load_agent(k: Kube, namespace: str, name: str) -> Agent:
    body = k.get(
        AGENTS,
        namespace,
        name,
        hint=f"list the agents with `kubectl agent list -n {namespace}` (or -A for every "
        "namespace)",
    )
    try:
        return Agent.parse(body)
    except ValidationError as exc:
        raise CliError(f"Agent {namespace}/{name} does not parse: {exc.errors()[0]}") from exc


def load_scopes(k: Kube, agent: Agent) -> tuple[list[AuthorityScope], list[str]]:
    namespace = agent.metadata.namespace or ""
    found: list[AuthorityScope] = []
    missing: list[str] = []
    for ref in agent.spec.scope_refs:
        body = k.get_optional(SCOPES, namespace, ref.name)
        if body is None:
            missing.append(ref.name)
        else:
            found.extend(parse_all(AuthorityScope, [body]))
    return found, missing


def scopes_by_namespace(k: Kube, namespace: str | None) -> dict[tuple[str, str], AuthorityScope]:
    scopes = parse_all(AuthorityScope, k.list_objects(SCOPES, namespace))
    return {(s.metadata.namespace or "", s.metadata.name): s for s in scopes}


def approvals_of(k: Kube, namespace: str, agent: str) -> list[ApprovalRequest]:
    reqs: list[ApprovalRequest] = parse_all(ApprovalRequest, k.list_objects(APPROVALS, namespace))
    return [r for r in reqs if r.spec.agent.name == agent]


def state_of(req: ApprovalRequest, now: datetime) -> str:
    from agent_identity.authz.approvals import effective_state

    return effective_state(req, now).value


# --- the command group -----------------------------------------------------------------------


class PluginGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CliError as exc:
            fail(exc.message, exc.exit_code)
        except UsageError as exc:
            fail(str(exc), EXIT_USAGE)


@click.group(cls=PluginGroup, epilog=EXIT_CODES_HELP)
@kube_options()
@click.version_option(package_name="agent-identity", prog_name="kubectl agent")
def cli() -> None:
    """kubectl agent: the registry, authority, approvals and audit of AI agents.

    Global options (-n, -A, --kubeconfig, --context, --as, --as-group, -o) may
    come before or after the command, as kubectl passes them to plugins.
    """


# list -----------------------------------------------------------------------------------------


@cli.command("list", epilog=EXIT_CODES_HELP)
@kube_options()
@click.pass_context
def list_cmd(ctx: click.Context) -> None:
    """The agent registry (in-cluster and external platform agents)."""
    fmt = output(ctx, ("table", "wide", "json", "yaml"))
    k = kube(ctx)
    ns = k.list_namespace()
    agents = report.sort_agents(parse_all(Agent, k.list_objects(AGENTS, ns)))
    if fmt in ("json", "yaml"):
        emit_data([a.to_wire() for a in agents], fmt)
        return
    now = now_utc()
    where = "any namespace" if ns is None else f"namespace {ns}"
    emit_table(
        [report.agent_row(a, now, wide=fmt == "wide") for a in agents],
        f"No agents found in {where}.",
    )


# describe -------------------------------------------------------------------------------------


@cli.command(epilog=EXIT_CODES_HELP)
@kube_options()
@click.argument("name")
@click.pass_context
def describe(ctx: click.Context, name: str) -> None:
    """Identity, effective authority, lifecycle and history, provenance, pending approvals."""
    fmt = output(ctx, ("table", "json", "yaml"))
    k = kube(ctx)
    agent = load_agent(k, k.namespace, name)
    scopes, missing = load_scopes(k, agent)
    approvals = approvals_of(k, k.namespace, name)
    data = report.describe_agent(agent, scopes, missing, approvals, now_utc(), state_of)
    if fmt in ("json", "yaml"):
        emit_data(data, fmt)
    else:
        click.echo(report.describe_text(data), nl=False)


# can-i ----------------------------------------------------------------------------------------

NO_RESOURCE = ("any", "*")


@cli.command("can-i", epilog=EXIT_CODES_HELP)
@kube_options(with_context=False)
@click.argument("agent_name", metavar="AGENT")
@click.argument("action", required=False)
@click.argument("resource", required=False)
@click.option(
    "--context",
    "contexts",
    multiple=True,
    help="KEY=VALUE of the request context (repeatable; VALUE as JSON when it parses, e.g. "
    "true or 1500; a dotted KEY nests). A value without '=' selects the kubeconfig context.",
)
@click.option(
    "--request-context", "request_contexts", multiple=True, help="Same as --context KEY=VALUE."
)
@click.option("--resource-prop", multiple=True, help="KEY=VALUE resource property (repeatable).")
@click.option("--action-prop", multiple=True, help="KEY=VALUE action property (repeatable).")
@click.option(
    "--caller",
    default=None,
    help="The caller identity CEL sees as request.caller (default: the agent's own "
    "ServiceAccount, as when the agent asks the decision API itself).",
)
@click.option("--list", "list_actions", is_flag=True, help="List the actions the agent may take.")
@click.pass_context
def can_i(
    ctx: click.Context,
    agent_name: str,
    action: str | None,
    resource: str | None,
    contexts: tuple[str, ...],
    request_contexts: tuple[str, ...],
    resource_prop: tuple[str, ...],
    action_prop: tuple[str, ...],
    caller: str | None,
    list_actions: bool,
) -> None:
    """May AGENT take ACTION on RESOURCE (TYPE/ID)? The decision engine's answer, computed here.

    Reads the Agent, its AuthorityScopes, the namespace's ApprovalPolicies and
    ApprovalRequests and runs the same engine the decision API runs, so the two agree.
    Prints yes / no / needs approval, the reason, the deciding rule and who could approve.
    RESOURCE defaults to any/* when omitted. With --list, ACTION is optional and RESOURCE
    may be given as the second argument.

    \b
    Exit codes: 0 yes (allow), 1 no (deny), 3 needs approval (escalate),
    2 bad arguments, 4 no answer (agent not found, cluster unreachable).
    """
    from agent_identity.authz import engine

    kv_context = [c for c in contexts if "=" in c]
    kube_contexts = [c for c in contexts if "=" not in c]
    if len(kube_contexts) > 1:
        raise UsageError("--context: give at most one kubeconfig context name")
    if kube_contexts:
        _opts(ctx).context = kube_contexts[0]
    fmt = output(ctx, ("table", "json", "yaml"))
    if list_actions and action is not None and resource is None and "/" in action:
        action, resource = None, action
    if not list_actions and not action:
        raise UsageError(
            "ACTION is required (or use --list), e.g. "
            "kubectl agent can-i bot deploy.production service/api"
        )
    request = CanIRequest(
        action=action or "",
        resource=report.parse_resource(resource),
        context=report.parse_kv([*kv_context, *request_contexts], "--context"),
        resource_props=report.parse_kv(resource_prop, "--resource-prop"),
        action_props=report.parse_kv(action_prop, "--action-prop"),
    )
    k = kube(ctx)
    ns = k.namespace
    agent = load_agent(k, ns, agent_name)
    scopes, missing = load_scopes(k, agent)
    if missing:
        click.echo(
            f"warning: AuthorityScope(s) {', '.join(missing)} of agent {ns}/{agent_name} do not "
            "exist; deciding with the others",
            err=True,
        )
    policies = parse_all(ApprovalPolicy, k.list_objects(POLICIES, ns))
    grants = approvals_of(k, ns, agent_name)
    rtype, rid = request.resource or NO_RESOURCE
    engine_request = engine.Request(
        action=request.action,
        resource_type=rtype,
        resource_id=rid,
        action_properties=request.action_props,
        resource_properties=request.resource_props,
        context=request.context,
        caller=caller or f"system:serviceaccount:{ns}:{service_account_name(agent_name)}",
    )
    now = now_utc()
    if list_actions:
        found = engine.search_actions(agent, scopes, policies, grants, engine_request, now)
        rows = [{"ACTION": a, "RULE": d.rule, "REASON": d.reason} for a, d in found]
        if fmt in ("json", "yaml"):
            emit_data([{"action": a, "rule": d.rule, "reason": d.reason} for a, d in found], fmt)
        else:
            emit_table(rows, f"agent {ns}/{agent_name} may take no concrete action now.")
        return
    decision = engine.decide(agent, scopes, policies, grants, engine_request, now)
    outcome = decision.outcome.value
    view = report.decision_view(
        agent,
        request,
        outcome,
        decision.reason,
        decision.rule,
        {"users": list(decision.approver_users), "groups": list(decision.approver_groups)},
    )
    view["minApprovals"] = decision.min_approvals if outcome == "escalate" else None
    if fmt in ("json", "yaml"):
        emit_data(view, fmt)
    else:
        click.echo(report.decision_text(view), nl=False)
    sys.exit(OUTCOME_EXIT.get(outcome, EXIT_DENIED))


# approvals ------------------------------------------------------------------------------------


@cli.command(epilog=EXIT_CODES_HELP)
@kube_options()
@click.option("--agent", "agent_name", default=None, help="Only the requests of this agent.")
@click.option(
    "--state",
    type=click.Choice(["Pending", "Approved", "Denied", "Expired"]),
    default=None,
    help="Only requests in this (effective) state.",
)
@click.pass_context
def approvals(ctx: click.Context, agent_name: str | None, state: str | None) -> None:
    """ApprovalRequests, with their effective state (expiry applied) and quorum progress."""
    fmt = output(ctx, ("table", "wide", "json", "yaml"))
    k = kube(ctx)
    ns = k.list_namespace()
    now = now_utc()
    reqs: list[ApprovalRequest] = parse_all(ApprovalRequest, k.list_objects(APPROVALS, ns))
    reqs = [
        r
        for r in reqs
        if (agent_name is None or r.spec.agent.name == agent_name)
        and (state is None or state_of(r, now) == state)
    ]
    reqs.sort(key=lambda r: (r.metadata.namespace or "", str(r.spec.requested_at), r.metadata.name))
    if fmt in ("json", "yaml"):
        views = [report.approval_view(r, now, state_of) for r in reqs]
        emit_data(views, fmt)
        return
    where = "any namespace" if ns is None else f"namespace {ns}"
    emit_table(
        [report.approval_row(r, now, state_of) for r in reqs], f"No approval requests in {where}."
    )


def _decide(ctx: click.Context, name: str, verdict: str, reason: str) -> None:
    from kubernetes.client.exceptions import ApiException

    fmt = output(ctx, ("table", "json", "yaml"))
    k = kube(ctx)
    ns = k.namespace
    hint = f"list them with `kubectl agent approvals -n {ns}`"
    for attempt in range(CONFLICT_RETRIES):
        body = k.get(APPROVALS, ns, name, hint=hint)
        status = body.setdefault("status", {})
        decisions = status.setdefault("decisions", [])
        decisions.append(report.decision_entry(verdict, reason, now_utc()))
        try:
            stored = k.replace_status_raw(APPROVALS, ns, name, body)
            break
        except ApiException as exc:
            if exc.status == 409 and attempt < CONFLICT_RETRIES - 1:
                time.sleep(0.1 * (attempt + 1))
                continue
            raise k.api_error(f"{verdict.lower()} of ApprovalRequest {ns}/{name}", exc) from exc
        except Exception as exc:
            from urllib3.exceptions import HTTPError

            if isinstance(exc, HTTPError):
                raise CliError(f"cannot reach the API server: {exc}") from exc
            raise
    req = ApprovalRequest.parse(stored)
    view = report.approval_view(req, now_utc(), state_of)
    if fmt in ("json", "yaml"):
        emit_data(view, fmt)
        return
    grant = f", grant until {view['grantExpiresAt']}" if view["grantExpiresAt"] else ""
    click.echo(
        f"approvalrequest {ns}/{name}: {verdict} recorded; state {view['state']} "
        f"({view['approvals']} approvals{grant})"
    )


@cli.command(epilog=EXIT_CODES_HELP)
@kube_options()
@click.argument("name")
@click.option("--reason", required=True, help="Why (recorded with your decision).")
@click.pass_context
def approve(ctx: click.Context, name: str, reason: str) -> None:
    """Approve ApprovalRequest NAME (you are recorded as the approver by the API server)."""
    _decide(ctx, name, "Approve", reason)


@cli.command(epilog=EXIT_CODES_HELP)
@kube_options()
@click.argument("name")
@click.option("--reason", required=True, help="Why (recorded with your decision).")
@click.pass_context
def deny(ctx: click.Context, name: str, reason: str) -> None:
    """Deny ApprovalRequest NAME."""
    _decide(ctx, name, "Deny", reason)


# token ----------------------------------------------------------------------------------------


@cli.command(epilog=EXIT_CODES_HELP)
@kube_options()
@click.argument("agent_name", metavar="AGENT")
@click.option(
    "--ttl",
    type=click.IntRange(600, 86400),
    default=None,
    help="Seconds (default: the agent's spec.token.ttlSeconds).",
)
@click.option(
    "--audience", default=None, help="Audience (default: the agent's spec.token.audience)."
)
@click.pass_context
def token(ctx: click.Context, agent_name: str, ttl: int | None, audience: str | None) -> None:
    """A short-lived token of AGENT's ServiceAccount (TokenRequest), for an external-platform agent.

    Prints the token; with -o json, also its expirationTimestamp and audiences.
    """
    fmt = output(ctx, ("table", "json", "yaml"))
    k = kube(ctx)
    ns = k.namespace
    agent = load_agent(k, ns, agent_name)
    phase = agent.status.phase or Phase.PENDING
    if phase not in ADMITTING_PHASES:
        raise CliError(
            f"agent {ns}/{agent_name} is {phase.value}; only Active or Deprecated agents get "
            "tokens",
            EXIT_DENIED,
        )
    if agent.spec.platform.type != PlatformType.EXTERNAL:
        click.echo(
            f"note: agent {ns}/{agent_name} runs in the cluster (platform kubernetes); its pods "
            "get projected tokens automatically",
            err=True,
        )
    ea = agent.status.effective_authority
    limit = ea.max_token_ttl_seconds if ea and ea.max_token_ttl_seconds else None
    ttl = ttl or agent.spec.token.ttl_seconds
    if limit is not None and ttl > limit:
        raise UsageError(
            f"--ttl {ttl} is above the maximum of agent {ns}/{agent_name} "
            f"({limit}s, maxTokenTTLSeconds of its scopes); use --ttl {limit} or less"
        )
    sa = (agent.status.identity.service_account if agent.status.identity else None) or (
        service_account_name(agent_name)
    )
    out = k.token_request(ns, sa, ttl, [audience or agent.spec.token.audience])
    if fmt in ("json", "yaml"):
        emit_data({"agent": f"{ns}/{agent_name}", "serviceAccount": sa, **out}, fmt)
    else:
        click.echo(out["token"])


# lifecycle ------------------------------------------------------------------------------------


def _lifecycle(
    ctx: click.Context, verb: str, name: str | None, owner: str | None, all_: bool
) -> None:
    fmt = output(ctx, ("table", "json", "yaml"))
    k = kube(ctx)
    if name and (owner or all_):
        raise UsageError(f"{verb}: give NAME, or --owner / --all, not both")
    if name is None and not owner and not all_:
        raise UsageError(f"{verb}: give NAME, --owner OWNER or --all (with -n or -A)")
    if verb == "retire" and name is None:
        raise UsageError("retire acts on one agent at a time: give NAME (Retired is terminal)")
    if name is not None:
        targets = [load_agent(k, k.namespace, name)]
    else:
        agents = parse_all(Agent, k.list_objects(AGENTS, k.list_namespace()))
        targets = report.bulk_targets(agents, verb, owner)
    results: list[dict[str, Any]] = []
    failed = False
    for agent in targets:
        ns = agent.metadata.namespace or ""
        before = agent.spec.lifecycle.state.value
        patch = report.lifecycle_patch(agent, verb)
        entry: dict[str, Any] = {"agent": f"{ns}/{agent.metadata.name}", "from": before}
        if patch is None:
            entry.update(state=before, phase=report.phase_of(agent), changed=False)
        else:
            try:
                stored = Agent.parse(k.merge_patch(AGENTS, ns, agent.metadata.name, patch))
                entry.update(
                    state=stored.spec.lifecycle.state.value,
                    phase=report.phase_of(stored),
                    sunsetAt=report.rfc3339(report.parse_time(stored.spec.lifecycle.sunset_at)),
                    changed=True,
                )
            except CliError as exc:
                failed = True
                entry.update(error=exc.message, changed=False)
        results.append(entry)
    if fmt in ("json", "yaml"):
        emit_data(results, fmt)
    else:
        if not results:
            scope = f"of owner {owner} " if owner else ""
            where = "any namespace" if k.list_namespace() is None else f"namespace {k.namespace}"
            click.echo(f"no agents {scope}in {where} to {verb}", err=True)
        for r in results:
            if "error" in r:
                click.echo(f"error: agent {r['agent']}: {r['error']}", err=True)
            elif not r["changed"]:
                click.echo(f"agent {r['agent']} is already {r['state']} (phase {r['phase']})")
            else:
                sunset = f", sunsetAt {r['sunsetAt']}" if r.get("sunsetAt") else ""
                click.echo(f"agent {r['agent']}: {r['from']} -> {r['state']}{sunset}")
    if failed:
        sys.exit(EXIT_DENIED)


def _lifecycle_command(verb: str, doc: str) -> None:
    @cli.command(verb, help=doc, epilog=EXIT_CODES_HELP)
    @kube_options()
    @click.argument("name", required=False)
    @click.option("--owner", default=None, help="Every agent of this owner (with -n or -A).")
    @click.option(
        "--all", "all_", is_flag=True, help="Every agent of the namespace (-n) or cluster (-A)."
    )
    @click.pass_context
    def command(ctx: click.Context, name: str | None, owner: str | None, all_: bool) -> None:
        _lifecycle(ctx, verb, name, owner, all_)


_lifecycle_command(
    "suspend",
    "Suspend agent NAME, or every Active agent of an --owner or of the namespace (--all): "
    "its RoleBinding is removed, new pods are refused and decisions deny.",
)
_lifecycle_command(
    "resume",
    "Resume agent NAME (Suspended or Deprecated before its sunset -> Active), or every "
    "Suspended agent of an --owner or of the namespace (--all): undoes a bulk suspend.",
)
_lifecycle_command(
    "retire",
    "Retire agent NAME (terminal): its ServiceAccount and RBAC are deleted, its tokens stop "
    "working; the Agent stays as an audit tombstone. sunsetAt is kept.",
)


# audit ----------------------------------------------------------------------------------------


@cli.command(epilog=EXIT_CODES_HELP)
@kube_options()
@click.option(
    "--since",
    default=None,
    help="Window start: a duration back from now (24h, 7d) or an RFC 3339 timestamp.",
)
@click.option(
    "--audit-file",
    "audit_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON-lines audit file (or a log with AUDIT lines) of the operator/admission "
    "(repeatable).",
)
@click.pass_context
def audit(ctx: click.Context, since: str | None, audit_files: tuple[Path, ...]) -> None:
    """A report an auditor can read: every agent with owner, authority (scopes and digest),
    lifecycle history and approvals with their deciders; with --audit-file, every decision
    (actor, outcome, rule, time, request id) in the window. -o table (default), json or
    markdown. Covers every namespace unless -n is given.
    """
    from agent_identity.audit import read_records

    fmt = output(ctx, ("table", "json", "yaml", "markdown"))
    now = now_utc()
    start = report.parse_since(since, now) if since else None
    k = kube(ctx)
    opts = _opts(ctx)
    ns = opts.namespace if opts.namespace and not opts.all_namespaces else None
    agents = parse_all(Agent, k.list_objects(AGENTS, ns))
    reqs = parse_all(ApprovalRequest, k.list_objects(APPROVALS, ns))
    records: list[dict[str, Any]] = []
    for path in audit_files:
        records.extend(
            r for r in read_records(path) if ns is None or r.get("namespace") in (None, ns)
        )
    data = report.audit_report(
        agents,
        reqs,
        records,
        now=now,
        since=start,
        state_of=state_of,
        sources=[str(p) for p in audit_files],
    )
    if fmt in ("json", "yaml"):
        emit_data(data, fmt)
    elif fmt == "markdown":
        click.echo(report.audit_markdown(data), nl=False)
    else:
        _audit_tables(data)


def _audit_tables(data: dict[str, Any]) -> None:
    w = data["window"]
    click.echo(f"Audit report {data['generatedAt']} (window {w['since'] or 'all'} .. {w['until']})")
    emit_table(
        [
            {
                "NAMESPACE": a["namespace"],
                "AGENT": a["name"],
                "OWNER": a["owner"],
                "PHASE": a["phase"],
                "SCOPES": ",".join(a["scopes"]) or "<none>",
                "DIGEST": (a["authorityDigest"] or "<none>")[:12],
                "CREATED-BY": a["createdBy"] or "<unknown>",
                "TRANSITIONS": str(len(a["history"])),
                "APPROVALS": str(len(a["approvals"])),
            }
            for a in data["agents"]
        ],
        "No agents.",
        title="Agents",
    )
    hist = [
        {
            "AGENT": f"{a['namespace']}/{a['name']}",
            "AT": h["at"],
            "FROM": h["from"] or "-",
            "TO": h["to"],
            "ACTOR": h["actor"],
            "REASON": h["reason"],
        }
        for a in data["agents"]
        for h in a["history"]
    ]
    emit_table(hist, "No lifecycle transitions in the window.", title="Lifecycle history")
    appr = [
        {
            "AGENT": f"{a['namespace']}/{a['name']}",
            "REQUEST": r["name"],
            "ACTION": r["action"],
            "RESOURCE": r["resource"],
            "STATE": r["state"],
            "REQUESTED-BY": r["requestedBy"],
            "DECIDERS": "; ".join(f"{d['verdict']}:{d['approver']}" for d in r["decisions"]) or "-",
        }
        for a in data["agents"]
        for r in a["approvals"]
    ]
    emit_table(appr, "No approval requests in the window.", title="Approvals")
    dec = [
        {
            "AT": d["at"] or "",
            "REQUEST-ID": d["requestId"] or "",
            "AGENT": f"{d['namespace']}/{d['agent']}",
            "ACTOR": d["actor"] or "",
            "ACTION": d["action"] or "",
            "RESOURCE": d["resource"] or "",
            "OUTCOME": d["outcome"] or "",
            "RULE": d["rule"] or "",
        }
        for d in data["decisions"]
    ]
    empty = (
        "No decisions in the window."
        if data["sources"]
        else ("No decisions: give the audit files with --audit-file.")
    )
    emit_table(dec, empty, title="Decisions")


# export ---------------------------------------------------------------------------------------


@cli.command(epilog=EXIT_CODES_HELP)
@kube_options()
@click.option(
    "--format", "export_format", type=click.Choice(["a2a"]), default="a2a", show_default=True
)
@click.pass_context
def export(ctx: click.Context, export_format: str) -> None:
    """The registry as A2A agent cards (a JSON list; -o yaml for YAML)."""
    fmt = _opts(ctx).output or "json"
    if fmt not in ("json", "yaml"):
        raise UsageError(f"-o {fmt} is not supported by export; use json or yaml")
    k = kube(ctx)
    ns = k.list_namespace()
    agents = report.sort_agents(parse_all(Agent, k.list_objects(AGENTS, ns)))
    scopes = scopes_by_namespace(k, ns)
    cards = []
    for agent in agents:
        agent_ns = agent.metadata.namespace or ""
        bound = [
            scopes[(agent_ns, r.name)]
            for r in agent.spec.scope_refs
            if (agent_ns, r.name) in scopes
        ]
        cards.append(report.a2a_card(agent, bound))
    emit_data(cards, fmt)


def main() -> None:
    try:
        cli(obj=KubeOptions())
    except CliError as exc:
        fail(exc.message, exc.exit_code)
    except UsageError as exc:
        fail(str(exc), EXIT_USAGE)
    sys.exit(EXIT_OK)


__all__ = ["EXIT_ERROR", "cli", "main"]
