"""Pure data shaping for `kubectl agent`: parsing options, rows, descriptions, reports, cards.

No I/O and no Kubernetes client: the command shell (``kubectl_agent.py``) fetches
objects, parses them into the API models and hands them here; what comes back
is plain data (dicts, lists, strings) that the shell renders as a table, JSON,
YAML or Markdown.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from agent_identity.api import (
    Agent,
    ApprovalRequest,
    ApprovalState,
    AuthorityScope,
    LifecycleState,
    Phase,
    Verdict,
)
from agent_identity.api.common import CREATED_BY_ANNOTATION, LAST_MODIFIED_BY_ANNOTATION

# Exit codes, the same for every command (documented in `kubectl agent --help`).
EXIT_OK = 0  # done; for can-i: allowed
EXIT_DENIED = 1  # can-i: denied; a change refused by the API server or the admission webhook
EXIT_USAGE = 2  # bad options or arguments (click's own code)
EXIT_NEEDS_APPROVAL = 3  # can-i: allowed only once a person approves
EXIT_ERROR = 4  # not found, cluster unreachable, unexpected API error: no answer was given

OUTCOME_WORDS = {"allow": "yes", "deny": "no", "escalate": "needs approval"}
OUTCOME_EXIT = {"allow": EXIT_OK, "deny": EXIT_DENIED, "escalate": EXIT_NEEDS_APPROVAL}

A2A_PROTOCOL_VERSION = "0.3.0"
A2A_EXTENSION_URI = "https://agentidentity.io/a2a/governance/v1alpha1"


class UsageError(ValueError):
    """Bad input from the command line; the message says what to type instead."""


# --- parsing command-line values ---------------------------------------------------------------


def parse_value(raw: str) -> Any:
    """A command-line value: JSON when it parses (``true``, ``1500``, ``["a"]``), else the text."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def parse_kv(items: Iterable[str], option: str) -> dict[str, Any]:
    """``KEY=VALUE`` pairs (repeatable option) into a dict; values parsed with ``parse_value``.

    A dotted key builds nested maps: ``--context change.window=true`` gives
    ``{"change": {"window": true}}``.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"{option} {item!r}: expected KEY=VALUE, e.g. {option} env=production")
        target = out
        *parents, leaf = key.split(".")
        for part in parents:
            if not part:
                raise UsageError(f"{option} {item!r}: empty segment in key {key!r}")
            nxt = target.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise UsageError(f"{option} {item!r}: {part!r} is already set to a value")
            target = nxt
        if not leaf:
            raise UsageError(f"{option} {item!r}: empty segment in key {key!r}")
        target[leaf] = parse_value(raw)
    return out


def parse_resource(raw: str | None) -> tuple[str, str] | None:
    """``TYPE/ID`` (the id may contain further slashes) into (type, id)."""
    if raw is None or raw == "":
        return None
    rtype, sep, rid = raw.partition("/")
    if not sep or not rtype or not rid:
        raise UsageError(
            f"RESOURCE {raw!r}: expected TYPE/ID, e.g. service/payments-api or repo/org/app"
        )
    return rtype, rid


_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(raw: str) -> timedelta:
    """``90s``, ``15m``, ``1h30m``, ``7d``, ``2w`` into a timedelta."""
    text = raw.strip().lower()
    pos = 0
    total = 0.0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise UsageError(f"{raw!r} is not a duration such as 30m, 12h, 7d or 1h30m")
    return timedelta(seconds=total)


def parse_time(value: str | datetime | None) -> datetime | None:
    """An RFC 3339 timestamp (or datetime) as an aware UTC datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        dt = value
    else:
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def parse_since(raw: str, now: datetime) -> datetime:
    """``--since``: a duration back from now (``24h``) or a timestamp (``2026-01-31T00:00:00Z``)."""
    try:
        return now - parse_duration(raw)
    except UsageError:
        pass
    try:
        parsed = parse_time(raw)
    except ValueError:
        parsed = None
    if parsed is None:
        raise UsageError(
            f"--since {raw!r}: give a duration (30m, 24h, 7d) or an RFC 3339 timestamp "
            "(2026-01-31T00:00:00Z)"
        )
    return parsed


def rfc3339(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def format_age(then: datetime | None, now: datetime) -> str:
    """kubectl-style age: 45s, 12m, 5h, 3d, 2y; '<unknown>' without a time."""
    if then is None:
        return "<unknown>"
    secs = int((now - then).total_seconds())
    if secs < 0:
        return "0s"
    if secs < 120:
        return f"{secs}s"
    if secs < 3600 * 2:
        return f"{secs // 60}m"
    if secs < 86400 * 2:
        return f"{secs // 3600}h"
    if secs < 86400 * 365 * 2:
        return f"{secs // 86400}d"
    return f"{secs // (86400 * 365)}y"


def format_until(when: datetime | None, now: datetime) -> str:
    """When a deadline falls: '<none>', 'in 3d' or 'passed 2h ago'."""
    if when is None:
        return "<none>"
    if when <= now:
        return f"passed {format_age(when, now)} ago"
    return "in " + format_age(now, when)


# --- agents -----------------------------------------------------------------------------------


def condition_status(agent: Agent, ctype: str) -> str:
    for cond in agent.status.conditions:
        if cond.type == ctype:
            return cond.status
    return "Unknown"


def phase_of(agent: Agent) -> str:
    return agent.status.phase.value if agent.status.phase else Phase.PENDING.value


def agent_row(agent: Agent, now: datetime, wide: bool = False) -> dict[str, str]:
    """One row of `kubectl agent list`."""
    spec = agent.spec
    platform = spec.platform.type.value
    if spec.platform.provider:
        platform += f"/{spec.platform.provider}"
    row = {
        "NAME": agent.metadata.name,
        "NAMESPACE": agent.metadata.namespace or "",
        "OWNER": spec.owner,
        "PLATFORM": platform,
        "PHASE": phase_of(agent),
        "READY": condition_status(agent, "Ready"),
        "SCOPES": ",".join(r.name for r in spec.scope_refs) or "<none>",
        "EXPIRES": rfc3339(parse_time(spec.lifecycle.expires_at)) or "<none>",
        "AGE": format_age(parse_time(agent.metadata.creation_timestamp), now),
    }
    if wide:
        identity = agent.status.identity
        row["STATE"] = spec.lifecycle.state.value
        row["IDENTITY"] = identity.uri if identity else "<pending>"
        row["SERVICEACCOUNT"] = (identity.service_account if identity else None) or "<none>"
        row["DIGEST"] = (
            agent.status.effective_authority.digest[:12]
            if agent.status.effective_authority
            else "<none>"
        )
    return row


def sort_agents(agents: Iterable[Agent]) -> list[Agent]:
    return sorted(agents, key=lambda a: (a.metadata.namespace or "", a.metadata.name))


def scope_authority(scope: AuthorityScope) -> dict[str, Any]:
    """What one scope grants, in wire field names."""
    spec = scope.spec.to_wire()
    return {
        "scope": scope.metadata.name,
        "generation": scope.metadata.generation,
        "rules": spec.get("rules", []),
        "tools": {"allow": scope.spec.tools.allow, "deny": scope.spec.tools.deny},
        "sensitive": scope.spec.sensitive,
        "constraints": spec.get("constraints", []),
        "egress": spec.get("network", {}).get("egress", []),
        "maxTokenTTLSeconds": scope.spec.max_token_ttl_seconds,
    }


def effective_authority(scopes: Sequence[AuthorityScope]) -> dict[str, Any]:
    """The union the agent holds (deny wins at decision time; listed here as declared)."""

    def union(values: Iterable[Iterable[str]]) -> list[str]:
        seen: dict[str, None] = {}
        for vals in values:
            for v in vals:
                seen.setdefault(v, None)
        return list(seen)

    return {
        "allow": union(s.spec.tools.allow for s in scopes),
        "deny": union(s.spec.tools.deny for s in scopes),
        "sensitive": union(s.spec.sensitive for s in scopes),
        "maxTokenTTLSeconds": min((s.spec.max_token_ttl_seconds for s in scopes), default=None),
    }


def provenance(agent: Agent) -> dict[str, str | None]:
    ann = agent.metadata.annotations
    return {
        "createdBy": ann.get(CREATED_BY_ANNOTATION),
        "lastModifiedBy": ann.get(LAST_MODIFIED_BY_ANNOTATION),
    }


def history_entries(agent: Agent, since: datetime | None = None) -> list[dict[str, Any]]:
    out = []
    for h in agent.status.history:
        at = parse_time(h.at)
        if since is not None and at is not None and at < since:
            continue
        out.append(
            {
                "from": h.from_,
                "to": h.to,
                "actor": h.actor,
                "at": rfc3339(at),
                "reason": h.reason,
                "message": h.message,
            }
        )
    return out


def describe_agent(
    agent: Agent,
    scopes: Sequence[AuthorityScope],
    missing_scopes: Sequence[str],
    approvals: Sequence[ApprovalRequest],
    now: datetime,
    state_of: StateFn,
) -> dict[str, Any]:
    """Everything `kubectl agent describe` shows, as data."""
    identity = agent.status.identity
    lifecycle = agent.spec.lifecycle
    pending = [
        approval_view(r, now, state_of)
        for r in approvals
        if state_of(r, now) == ApprovalState.PENDING.value
    ]
    return {
        "name": agent.metadata.name,
        "namespace": agent.metadata.namespace,
        "owner": agent.spec.owner,
        "description": agent.spec.description,
        "platform": agent.spec.platform.to_wire(),
        "parent": agent.spec.parent_ref.name if agent.spec.parent_ref else None,
        "identity": {
            "uri": identity.uri if identity else None,
            "serviceAccount": identity.service_account if identity else None,
            "uid": (identity.uid if identity else None) or agent.metadata.uid,
        },
        "token": agent.spec.token.to_wire(),
        "authority": {
            "digest": agent.status.effective_authority.digest
            if agent.status.effective_authority
            else None,
            "summary": agent.status.effective_authority.summary
            if agent.status.effective_authority
            else None,
            "missingScopes": list(missing_scopes),
            "effective": effective_authority(scopes),
            "scopes": [scope_authority(s) for s in scopes],
        },
        "lifecycle": {
            "state": lifecycle.state.value,
            "phase": phase_of(agent),
            "expiresAt": rfc3339(parse_time(lifecycle.expires_at)),
            "sunsetAt": rfc3339(parse_time(lifecycle.sunset_at)),
            "conditions": [
                {
                    "type": c.type,
                    "status": c.status,
                    "reason": c.reason,
                    "message": c.message,
                    "lastTransitionTime": rfc3339(parse_time(c.last_transition_time)),
                }
                for c in agent.status.conditions
            ],
            "history": history_entries(agent),
        },
        "provenance": {
            **provenance(agent),
            "createdAt": rfc3339(parse_time(agent.metadata.creation_timestamp)),
        },
        "pendingApprovals": pending,
    }


def _kv_lines(pairs: Sequence[tuple[str, Any]], indent: int = 0) -> list[str]:
    width = max((len(k) for k, _ in pairs), default=0) + 2
    pad = " " * indent
    return [
        f"{pad}{(k + ':').ljust(width)}{'<none>' if v in (None, '', []) else v}" for k, v in pairs
    ]


def describe_text(d: Mapping[str, Any]) -> str:
    """kubectl-describe-like text of ``describe_agent``'s data."""
    lines = _kv_lines(
        [
            ("Name", d["name"]),
            ("Namespace", d["namespace"]),
            ("Owner", d["owner"]),
            ("Description", d["description"]),
            ("Platform", ", ".join(f"{k}={v}" for k, v in d["platform"].items())),
            ("Parent", d["parent"]),
        ]
    )
    ident = d["identity"]
    lines.append("Identity:")
    lines += _kv_lines(
        [
            ("URI", ident["uri"]),
            ("ServiceAccount", ident["serviceAccount"]),
            ("UID", ident["uid"]),
            ("Token", f"audience={d['token'].get('audience')} ttl={d['token'].get('ttlSeconds')}s"),
        ],
        2,
    )
    auth = d["authority"]
    eff = auth["effective"]
    lines.append("Authority:")
    lines += _kv_lines(
        [
            ("Digest", auth["digest"]),
            ("Summary", auth["summary"]),
            ("Allow", ", ".join(eff["allow"])),
            ("Deny", ", ".join(eff["deny"])),
            ("Sensitive", ", ".join(eff["sensitive"])),
            (
                "Max token TTL",
                f"{eff['maxTokenTTLSeconds']}s" if eff["maxTokenTTLSeconds"] else None,
            ),
            ("Missing scopes", ", ".join(auth["missingScopes"])),
        ],
        2,
    )
    for s in auth["scopes"]:
        lines.append(f"  Scope {s['scope']} (generation {s['generation']}):")
        for r in s["rules"]:
            groups = ",".join(g or '""' for g in r.get("apiGroups", [])) or '""'
            names = f" names={','.join(r['resourceNames'])}" if r.get("resourceNames") else ""
            lines.append(
                f"    Rule: groups={groups} resources={','.join(r['resources'])} "
                f"verbs={','.join(r['verbs'])}{names}"
            )
        if s["tools"]["allow"]:
            lines.append(f"    Tools allow: {', '.join(s['tools']['allow'])}")
        if s["tools"]["deny"]:
            lines.append(f"    Tools deny:  {', '.join(s['tools']['deny'])}")
        if s["sensitive"]:
            lines.append(f"    Sensitive:   {', '.join(s['sensitive'])}")
        for c in s["constraints"]:
            msg = f" ({c['message']})" if c.get("message") else ""
            lines.append(f"    Constraint:  {', '.join(c['tools'])} when {c['when']}{msg}")
        for e in s["egress"]:
            to = ", ".join(
                p.get("cidr") or json.dumps({k: v for k, v in p.items() if k != "cidr"})
                for p in e.get("to", [])
            )
            ports = ", ".join(
                f"{p.get('port', '*')}/{p.get('protocol', 'TCP')}" for p in e.get("ports", [])
            )
            lines.append(f"    Egress:      to {to or 'anywhere'} ports {ports or 'all'}")
        lines.append(f"    Max TTL:     {s['maxTokenTTLSeconds']}s")
    lc = d["lifecycle"]
    lines.append("Lifecycle:")
    lines += _kv_lines(
        [
            ("State", lc["state"]),
            ("Phase", lc["phase"]),
            ("Expires at", lc["expiresAt"]),
            ("Sunset at", lc["sunsetAt"]),
        ],
        2,
    )
    lines.append("  Conditions:")
    if not lc["conditions"]:
        lines.append("    <none>")
    for c in lc["conditions"]:
        lines.append(
            f"    {c['type']}={c['status']} {c['reason']} ({c['lastTransitionTime']}) "
            f"{c['message']}"
        )
    lines.append("  History:")
    if not lc["history"]:
        lines.append("    <none>")
    for h in lc["history"]:
        lines.append(
            f"    {h['at']}  {h['from'] or '-'} -> {h['to']}  by {h['actor']}  "
            f"{h['reason']}{': ' + h['message'] if h['message'] else ''}"
        )
    prov = d["provenance"]
    lines.append("Provenance:")
    lines += _kv_lines(
        [
            ("Created by", prov["createdBy"]),
            ("Created at", prov["createdAt"]),
            ("Last modified by", prov["lastModifiedBy"]),
        ],
        2,
    )
    lines.append("Pending approvals:")
    if not d["pendingApprovals"]:
        lines.append("  <none>")
    for a in d["pendingApprovals"]:
        lines.append(
            f"  {a['name']}: {a['action']} on {a['resource']} "
            f"({a['approvals']} approvals, expires {a['expiresAt']})"
        )
    return "\n".join(lines) + "\n"


# --- approvals --------------------------------------------------------------------------------

# effective state of an ApprovalRequest at a time (the approvals module's ``effective_state``)
StateFn = Any


def approvals_given(req: ApprovalRequest) -> int:
    """Distinct people who approved (the quorum counts people, not entries)."""
    return len({d.approver for d in req.status.decisions if d.verdict == Verdict.APPROVE})


def approval_view(req: ApprovalRequest, now: datetime, state_of: StateFn) -> dict[str, Any]:
    spec = req.spec
    grant = req.status.grant
    return {
        "name": req.metadata.name,
        "namespace": req.metadata.namespace,
        "agent": spec.agent.name,
        "action": spec.action,
        "resource": f"{spec.resource.type}/{spec.resource.id}",
        "state": state_of(req, now),
        "storedState": req.status.state.value,
        "approvals": f"{approvals_given(req)}/{spec.min_approvals}",
        "requestedBy": spec.requested_by,
        "requestedAt": rfc3339(parse_time(spec.requested_at)),
        "expiresAt": rfc3339(parse_time(spec.expires_at)),
        "grantExpiresAt": rfc3339(parse_time(grant.expires_at)) if grant else None,
        "approvers": spec.approvers.to_wire(),
        "policies": spec.policies,
        "decisions": [
            {
                "approver": d.approver,
                "verdict": d.verdict.value,
                "reason": d.reason,
                "at": rfc3339(parse_time(d.at)),
            }
            for d in req.status.decisions
        ],
    }


def approval_row(req: ApprovalRequest, now: datetime, state_of: StateFn) -> dict[str, str]:
    v = approval_view(req, now, state_of)
    return {
        "NAME": v["name"],
        "NAMESPACE": v["namespace"] or "",
        "AGENT": v["agent"],
        "ACTION": v["action"],
        "RESOURCE": v["resource"],
        "STATE": v["state"],
        "APPROVALS": v["approvals"],
        "AGE": format_age(
            parse_time(req.metadata.creation_timestamp) or parse_time(req.spec.requested_at), now
        ),
    }


def decision_entry(verdict: str, reason: str, now: datetime) -> dict[str, str]:
    """The entry `approve`/`deny` appends; the webhook overwrites approver and at."""
    return {"verdict": verdict, "reason": reason, "approver": "", "at": rfc3339(now) or ""}


# --- can-i ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CanIRequest:
    action: str
    resource: tuple[str, str] | None
    context: dict[str, Any]
    resource_props: dict[str, Any]
    action_props: dict[str, Any]


def approvers_list(approvers: Any) -> list[str]:
    """Who could approve, from whatever shape the engine returns (Approvers, list, dict)."""
    if approvers is None:
        return []
    if isinstance(approvers, str):
        return [approvers]
    users = getattr(approvers, "users", None)
    groups = getattr(approvers, "groups", None)
    if isinstance(approvers, Mapping):
        users, groups = approvers.get("users"), approvers.get("groups")
    if users is not None or groups is not None:
        return [*(users or []), *(f"group:{g}" for g in groups or [])]
    return [str(a) for a in approvers]


def decision_view(
    agent: Agent, request: CanIRequest, outcome: str, reason: str, rule: str | None, approvers: Any
) -> dict[str, Any]:
    resource = f"{request.resource[0]}/{request.resource[1]}" if request.resource else None
    return {
        "agent": f"{agent.metadata.namespace}/{agent.metadata.name}",
        "identity": agent.status.identity.uri if agent.status.identity else None,
        "action": request.action,
        "resource": resource,
        "outcome": outcome,
        "answer": OUTCOME_WORDS.get(outcome, outcome),
        "decision": outcome == "allow",
        "reason": reason,
        "rule": rule,
        "approvers": approvers_list(approvers),
    }


def decision_text(v: Mapping[str, Any]) -> str:
    lines = [str(v["answer"])]
    lines += _kv_lines(
        [
            ("reason", v["reason"]),
            ("rule", v["rule"]),
        ]
    )
    if v["outcome"] == "escalate":
        lines.append(f"approvers: {', '.join(v['approvers']) or '<none>'}")
    return "\n".join(lines) + "\n"


# --- lifecycle changes ------------------------------------------------------------------------

TARGET_STATE = {
    "suspend": LifecycleState.SUSPENDED,
    "resume": LifecycleState.ACTIVE,
    "retire": LifecycleState.RETIRED,
}


def lifecycle_patch(agent: Agent, verb: str) -> dict[str, Any] | None:
    """The merge patch for suspend/resume/retire, or None when there is nothing to change.

    Retire keeps ``sunsetAt``; suspend and resume drop it (the CRD allows it only with
    Deprecated or Retired), so the admission webhook, not a schema rule, judges the move.
    """
    target = TARGET_STATE[verb]
    current = agent.spec.lifecycle.state
    if current == target:
        return None
    lifecycle: dict[str, Any] = {"state": target.value}
    if target != LifecycleState.RETIRED and agent.spec.lifecycle.sunset_at is not None:
        lifecycle["sunsetAt"] = None
    return {"spec": {"lifecycle": lifecycle}}


def bulk_targets(agents: Iterable[Agent], verb: str, owner: str | None) -> list[Agent]:
    """The agents a bulk suspend/resume acts on: of the owner (if given), in the state to leave."""
    leave = {"suspend": LifecycleState.ACTIVE, "resume": LifecycleState.SUSPENDED}[verb]
    return [
        a
        for a in sort_agents(agents)
        if (owner is None or a.spec.owner == owner) and a.spec.lifecycle.state == leave
    ]


# --- audit report -----------------------------------------------------------------------------


def _in_window(at: datetime | None, since: datetime | None, until: datetime | None) -> bool:
    if at is None:
        return since is None
    return (since is None or at >= since) and (until is None or at <= until)


def _action_name(value: Any) -> str | None:
    if isinstance(value, Mapping):
        name = value.get("name")
        return str(name) if name is not None else None
    return None if value is None else str(value)


def _resource_name(value: Any) -> str | None:
    if isinstance(value, Mapping):
        if "type" in value or "id" in value:
            return f"{value.get('type', '')}/{value.get('id', '')}"
        return json.dumps(value, sort_keys=True)
    return None if value is None else str(value)


def decision_record_view(rec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "at": rec.get("at"),
        "requestId": rec.get("requestId"),
        "namespace": rec.get("namespace"),
        "agent": rec.get("gen_ai.agent.name") or rec.get("agentName") or rec.get("agent"),
        "identity": rec.get("agent"),
        "actor": rec.get("actor"),
        "action": _action_name(rec.get("action")),
        "resource": _resource_name(rec.get("resource")),
        "outcome": rec.get("outcome"),
        "rule": rec.get("rule"),
        "reason": rec.get("reason"),
        "jti": rec.get("jti"),
        "approvalRequest": rec.get("approvalRequest"),
    }


def audit_report(
    agents: Sequence[Agent],
    approvals: Sequence[ApprovalRequest],
    records: Iterable[Mapping[str, Any]],
    *,
    now: datetime,
    since: datetime | None,
    state_of: StateFn,
    sources: Sequence[str] = (),
) -> dict[str, Any]:
    """The auditor's report: agents with owner, authority, history and approvals; decisions."""
    by_agent: dict[tuple[str, str], list[ApprovalRequest]] = {}
    for req in approvals:
        by_agent.setdefault((req.metadata.namespace or "", req.spec.agent.name), []).append(req)
    agent_views: list[dict[str, Any]] = []
    for agent in sort_agents(agents):
        ns = agent.metadata.namespace or ""
        reqs = [
            r
            for r in by_agent.get((ns, agent.metadata.name), [])
            if _in_window(_approval_last_activity(r), since, None)
        ]
        ea = agent.status.effective_authority
        agent_views.append(
            {
                "namespace": ns,
                "name": agent.metadata.name,
                "identity": agent.status.identity.uri if agent.status.identity else None,
                "uid": agent.metadata.uid,
                "owner": agent.spec.owner,
                "platform": agent.spec.platform.type.value,
                "state": agent.spec.lifecycle.state.value,
                "phase": phase_of(agent),
                "scopes": [r.name for r in agent.spec.scope_refs],
                "authorityDigest": ea.digest if ea else None,
                "authoritySummary": ea.summary if ea else None,
                **provenance(agent),
                "history": history_entries(agent, since),
                "approvals": [approval_view(r, now, state_of) for r in reqs],
            }
        )
    decisions: list[dict[str, Any]] = []
    other: list[dict[str, Any]] = []
    for rec in records:
        at = parse_time(rec.get("at")) if isinstance(rec.get("at"), str) else None
        if not _in_window(at, since, now):
            continue
        if rec.get("kind") == "decision":
            decisions.append(decision_record_view(rec))
        else:
            other.append(dict(rec))
    decisions.sort(key=lambda d: str(d["at"] or ""))
    other.sort(key=lambda d: str(d.get("at") or ""))
    outcomes: dict[str, int] = {}
    for d in decisions:
        outcomes[str(d["outcome"])] = outcomes.get(str(d["outcome"]), 0) + 1
    return {
        "generatedAt": rfc3339(now),
        "window": {"since": rfc3339(since), "until": rfc3339(now)},
        "sources": list(sources),
        "summary": {
            "agents": len(agent_views),
            "approvalRequests": sum(len(a["approvals"]) for a in agent_views),
            "decisions": len(decisions),
            "outcomes": dict(sorted(outcomes.items())),
        },
        "agents": agent_views,
        "decisions": decisions,
        "otherRecords": other,
    }


def _approval_last_activity(req: ApprovalRequest) -> datetime | None:
    times = [parse_time(d.at) for d in req.status.decisions]
    times.append(parse_time(req.spec.requested_at))
    known = [t for t in times if t is not None]
    return max(known) if known else None


def _md(value: Any) -> str:
    if value is None or value == "" or value == []:
        return "—"
    text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return out


def audit_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown, to hand to an auditor."""
    w = report["window"]
    s = report["summary"]
    lines = [
        "# Agent identity audit report",
        "",
        f"- Generated: {report['generatedAt']}",
        f"- Window: {w['since'] or 'beginning of records'} to {w['until']}",
        f"- Audit record sources: {_md(report['sources'])}",
        f"- Agents: {s['agents']}; approval requests: {s['approvalRequests']}; "
        f"decisions: {s['decisions']} "
        f"({', '.join(f'{k}: {v}' for k, v in s['outcomes'].items()) or 'none'})",
        "",
        "## Agents",
        "",
    ]
    lines += _md_table(
        ["Namespace", "Agent", "Owner", "Phase", "Scopes", "Authority digest", "Created by"],
        (
            [
                a["namespace"],
                a["name"],
                a["owner"],
                a["phase"],
                a["scopes"],
                (a["authorityDigest"] or "")[:16],
                a["createdBy"],
            ]
            for a in report["agents"]
        ),
    )
    for a in report["agents"]:
        lines += ["", f"### {a['namespace']}/{a['name']}", ""]
        lines += [
            f"- Identity: {_md(a['identity'])} (uid {_md(a['uid'])})",
            f"- Owner: {_md(a['owner'])}; platform: {a['platform']}",
            f"- Authority: scopes {_md(a['scopes'])}; digest {_md(a['authorityDigest'])}; "
            f"{_md(a['authoritySummary'])}",
            f"- Created by {_md(a['createdBy'])}; last modified by {_md(a['lastModifiedBy'])}",
            "",
            "Lifecycle history:",
            "",
        ]
        if a["history"]:
            lines += _md_table(
                ["At", "From", "To", "Actor", "Reason"],
                ([h["at"], h["from"], h["to"], h["actor"], h["reason"]] for h in a["history"]),
            )
        else:
            lines.append("_no transitions in the window_")
        lines += ["", "Approvals:", ""]
        if a["approvals"]:
            lines += _md_table(
                ["Request", "Action", "Resource", "State", "Requested by", "Decisions"],
                (
                    [
                        r["name"],
                        r["action"],
                        r["resource"],
                        r["state"],
                        r["requestedBy"],
                        "; ".join(
                            f"{d['verdict']} by {d['approver']} at {d['at']}"
                            + (f" ({d['reason']})" if d["reason"] else "")
                            for d in r["decisions"]
                        ),
                    ]
                    for r in a["approvals"]
                ),
            )
        else:
            lines.append("_no approval requests in the window_")
    lines += ["", "## Decisions", ""]
    if report["decisions"]:
        lines += _md_table(
            ["At", "Request ID", "Agent", "Actor", "Action", "Resource", "Outcome", "Rule"],
            (
                [
                    d["at"],
                    d["requestId"],
                    f"{d['namespace']}/{d['agent']}" if d["namespace"] else d["agent"],
                    d["actor"],
                    d["action"],
                    d["resource"],
                    d["outcome"],
                    d["rule"],
                ]
                for d in report["decisions"]
            ),
        )
    elif not report["sources"]:
        lines.append("_no audit files given (--audit-file); decisions are not in the cluster_")
    else:
        lines.append("_no decisions in the window_")
    if report["otherRecords"]:
        lines += ["", "## Other audit records", ""]
        lines += _md_table(
            ["At", "Kind", "Agent", "Actor", "Outcome", "Reason"],
            (
                [
                    r.get("at"),
                    r.get("kind"),
                    r.get("gen_ai.agent.name") or r.get("agent"),
                    r.get("actor"),
                    r.get("outcome"),
                    r.get("reason"),
                ]
                for r in report["otherRecords"]
            ),
        )
    return "\n".join(lines) + "\n"


# --- A2A agent cards --------------------------------------------------------------------------


def a2a_card(agent: Agent, scopes: Sequence[AuthorityScope]) -> dict[str, Any]:
    """An A2A AgentCard (protocol 0.3 field names) for a registered agent.

    Skills are the tool patterns the agent may use (allowed or sensitive, minus those
    a deny pattern names exactly); governance data (owner, identity, lifecycle,
    authority digest) travels in a card extension, as A2A intends for extra data.
    """
    eff = effective_authority(scopes)
    denied = set(eff["deny"])
    identity = agent.status.identity
    uri = identity.uri if identity else f"agent:///{agent.metadata.namespace}/{agent.metadata.name}"
    skills: list[dict[str, Any]] = []
    for pattern in eff["allow"]:
        if pattern in denied:
            continue
        needs = pattern in eff["sensitive"]
        skills.append(_skill(pattern, needs))
    for pattern in eff["sensitive"]:
        if pattern not in eff["allow"] and pattern not in denied:
            skills.append(_skill(pattern, True))
    ea = agent.status.effective_authority
    lifecycle = agent.spec.lifecycle
    platform = agent.spec.platform
    return {
        "protocolVersion": A2A_PROTOCOL_VERSION,
        "name": agent.metadata.name,
        "description": agent.spec.description
        or f"Agent {agent.metadata.name} owned by {agent.spec.owner}",
        "url": uri,
        "version": str(agent.metadata.generation or 1),
        "provider": {
            "organization": agent.spec.owner,
            "url": uri,
        },
        "capabilities": {
            "streaming": False,
            "pushNotifications": False,
            "stateTransitionHistory": False,
            "extensions": [
                {
                    "uri": A2A_EXTENSION_URI,
                    "description": "Governed identity: owner, identity, lifecycle and authority",
                    "required": False,
                    "params": {
                        "namespace": agent.metadata.namespace,
                        "owner": agent.spec.owner,
                        "platform": platform.to_wire(),
                        "identity": {
                            "uri": uri,
                            "serviceAccount": identity.service_account if identity else None,
                            "uid": (identity.uid if identity else None) or agent.metadata.uid,
                        },
                        "lifecycle": {
                            "state": lifecycle.state.value,
                            "phase": phase_of(agent),
                            "expiresAt": rfc3339(parse_time(lifecycle.expires_at)),
                            "sunsetAt": rfc3339(parse_time(lifecycle.sunset_at)),
                        },
                        "authority": {
                            "scopes": [r.name for r in agent.spec.scope_refs],
                            "digest": ea.digest if ea else None,
                            "deny": eff["deny"],
                        },
                    },
                }
            ],
        },
        "securitySchemes": {
            "kubernetes": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "A Kubernetes ServiceAccount token of the agent "
                f"(audience {agent.spec.token.audience})",
            }
        },
        "security": [{"kubernetes": []}],
        "defaultInputModes": ["application/json"],
        "defaultOutputModes": ["application/json"],
        "skills": skills,
        "supportsAuthenticatedExtendedCard": False,
    }


def _skill(pattern: str, needs_approval: bool) -> dict[str, Any]:
    tags = [pattern.split(".")[0], "approval-required" if needs_approval else "tool"]
    return {
        "id": pattern,
        "name": pattern,
        "description": f"Tool actions matching {pattern}"
        + (" (each needs a person's approval)" if needs_approval else ""),
        "tags": tags,
    }
