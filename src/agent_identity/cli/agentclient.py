"""`agent-identity whoami` and `agent-identity check`: the agent client from inside an agent pod.

Thin shell over ``agent_identity.client``. Exit codes are those of `kubectl agent can-i`:
0 allow, 1 deny, 3 needs approval (escalate, not approved within --wait), 4 no answer
(no token, decision API unreachable or refusing the caller), 2 bad arguments.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from agent_identity.cli.report import (
    EXIT_DENIED,
    EXIT_ERROR,
    EXIT_NEEDS_APPROVAL,
    EXIT_OK,
    UsageError,
    parse_kv,
    parse_resource,
)
from agent_identity.client import AgentClient, ClientError, Decision, WhoAmI

F = TypeVar("F", bound=Callable[..., Any])

OUTCOME_EXIT = {"allow": EXIT_OK, "deny": EXIT_DENIED, "escalate": EXIT_NEEDS_APPROVAL}

EXIT_CODES_HELP = """\b
Exit codes:
  0  allowed (whoami: answered)
  1  denied
  2  bad options or arguments
  3  needs a person's approval, not approved (within --wait)
  4  no answer: no agent token, decision API unreachable or refusing the token
"""


def connection_options(f: F) -> F:
    """--url, --token-file, --ca-file, --timeout, -o (shared by whoami and check)."""
    f = click.option(
        "-o",
        "--output",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="Output format.",
    )(f)
    f = click.option(
        "--timeout",
        type=click.FloatRange(min=0.1),
        default=10.0,
        show_default=True,
        help="Seconds per HTTP request.",
    )(f)
    f = click.option(
        "--ca-file",
        type=click.Path(dir_okay=False),
        default=None,
        envvar="AGENT_IDENTITY_DECISIONS_CA_FILE",
        help="PEM CA that signed the decision API's certificate (HTTPS).",
    )(f)
    f = click.option(
        "--token-file",
        type=click.Path(dir_okay=False),
        default=None,
        help="The agent token (default: the mount the admission webhook adds, "
        "/var/run/secrets/agentidentity.io/token/token).",
    )(f)
    f = click.option(
        "--url",
        default=None,
        help="Decision API URL (default: $AGENT_IDENTITY_DECISIONS_URL, set in agent pods).",
    )(f)
    return f


def _client(url: str | None, token_file: str | None, ca_file: str | None, timeout: float) -> Any:
    return AgentClient(url, token_path=token_file, ca_file=ca_file, timeout=timeout)


def _fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.command("whoami", epilog=EXIT_CODES_HELP)
@connection_options
def whoami(
    url: str | None, token_file: str | None, ca_file: str | None, timeout: float, output: str
) -> None:
    """Print this pod's agent (<namespace>/<name>) and identity URI, as the decision API sees it."""
    try:
        me = _client(url, token_file, ca_file, timeout).whoami()
    except ClientError as exc:
        _fail(str(exc))
    if output == "json":
        click.echo(json.dumps(whoami_view(me), indent=2))
        return
    click.echo(whoami_text(me), nl=False)
    if me.agent is None:
        sys.exit(EXIT_DENIED)


def whoami_view(me: WhoAmI) -> dict[str, Any]:
    return {
        "agent": me.agent,
        "identity": me.identity,
        "uid": me.uid,
        "phase": me.phase,
        "username": me.username,
        "groups": list(me.groups),
    }


def whoami_text(me: WhoAmI) -> str:
    if me.agent is None:
        return f"{me.username} (not a registered agent)\n"
    lines = [me.agent, f"identity: {me.identity}"]
    if me.phase:
        lines.append(f"phase:    {me.phase}")
    lines.append(f"user:     {me.username}")
    return "\n".join(lines) + "\n"


@click.command("check", epilog=EXIT_CODES_HELP)
@click.argument("action")
@click.option("--resource", default=None, metavar="TYPE/ID", help="The resource (default any/*).")
@click.option(
    "--context",
    "contexts",
    multiple=True,
    metavar="KEY=VALUE",
    help="Request context (repeatable; VALUE as JSON when it parses; a dotted KEY nests).",
)
@click.option(
    "--resource-prop",
    "resource_props",
    multiple=True,
    metavar="KEY=VALUE",
    help="A resource property (repeatable), e.g. env=production: what constraints and "
    "approval policies read as resource.properties.",
)
@click.option(
    "--action-prop",
    "action_props",
    multiple=True,
    metavar="KEY=VALUE",
    help="An action property (repeatable), e.g. amount=5000: action.properties in CEL.",
)
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="On escalate, wait this long for a person's approval, then print allow or deny.",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.05),
    default=1.0,
    show_default=True,
    help="Seconds between approval polls (with --wait).",
)
@connection_options
def check(
    action: str,
    resource: str | None,
    contexts: tuple[str, ...],
    resource_props: tuple[str, ...],
    action_props: tuple[str, ...],
    wait: float | None,
    poll_interval: float,
    url: str | None,
    token_file: str | None,
    ca_file: str | None,
    timeout: float,
    output: str,
) -> None:
    """May this pod's agent take ACTION (on --resource)? Asks the decision API.

    Prints allow, deny or escalate with the reason and rule. On escalate it prints the
    ApprovalRequest a person approves with `kubectl agent approve NAME`; with --wait it
    polls that request and, once decided, prints the final allow or deny.
    """
    try:
        res = parse_resource(resource)
        ctx = parse_kv(contexts, "--context")
        rprops = parse_kv(resource_props, "--resource-prop")
        aprops = parse_kv(action_props, "--action-prop")
    except UsageError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        client = _client(url, token_file, ca_file, timeout)
        rtype, rid = res if res is not None else (None, None)
        decision = client.check(
            action, rtype, rid, ctx, action_properties=aprops, resource_properties=rprops
        )
        if decision.outcome == "escalate" and wait is not None and decision.approval_request:
            if output == "text":
                click.echo(decision_text(decision), nl=False)
                click.echo(
                    f"waiting up to {wait:g}s for approval of {decision.approval_request} ...",
                    err=True,
                )
            decision = client.wait_for_approval(decision, wait, poll_interval=poll_interval)
    except ClientError as exc:
        _fail(str(exc))
    if output == "json":
        click.echo(json.dumps(decision_view(decision), indent=2))
    else:
        click.echo(decision_text(decision), nl=False)
    sys.exit(OUTCOME_EXIT[decision.outcome])


def decision_view(d: Decision) -> dict[str, Any]:
    out: dict[str, Any] = {
        "decision": d.allowed,
        "outcome": d.outcome,
        "reason": d.reason,
        "rule": d.rule,
        "agent": d.agent,
    }
    if d.request is not None:
        out["action"] = d.request.action
        out["resource"] = f"{d.request.resource_type}/{d.request.resource_id}"
    if d.approval_request:
        out["approvalRequest"] = d.approval_request
    if d.approvers:
        out["approvers"] = dict(d.approvers)
    return out


def decision_text(d: Decision) -> str:
    what = ""
    if d.request is not None:
        what = f" {d.request.action} on {d.request.resource_type}/{d.request.resource_id}"
    lines = [f"{d.outcome}{what}", f"  reason: {d.reason}"]
    if d.rule:
        lines.append(f"  rule:   {d.rule}")
    if d.outcome == "escalate" and d.approval_request:
        lines.append(f"  approval request: {d.approval_request}")
        users = ", ".join(d.approvers.get("users") or []) or "-"
        groups = ", ".join(d.approvers.get("groups") or []) or "-"
        quorum = d.approvers.get("minApprovals")
        lines.append(f"  approvers: users {users}; groups {groups}; min approvals {quorum or 1}")
        short = d.approval_request.split("/", 1)
        lines.append(
            f"  approve with: kubectl agent approve -n {short[0]} {short[-1]} --reason ..."
        )
    return "\n".join(lines) + "\n"
