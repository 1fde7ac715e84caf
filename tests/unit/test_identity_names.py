"""Child names: deterministic, valid DNS-1123, distinct for distinct agents."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from agent_identity.identity import names

AGENT_NAMES = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True)
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
BUILDERS = (
    names.service_account_name,
    names.role_name,
    names.role_binding_name,
    names.network_policy_name,
)


@given(AGENT_NAMES, AGENT_NAMES)
def test_distinct_agents_get_distinct_valid_child_names(a: str, b: str) -> None:
    for build in BUILDERS:
        name_a, name_b = build(a), build(b)
        assert DNS1123_SUBDOMAIN.match(name_a) and len(name_a) <= 253
        # ServiceAccount names also become usernames; keep them label-sized too.
        assert len(name_a) <= 63 + len(names.PREFIX)
        assert (name_a == name_b) == (a == b)
        assert build(a) == name_a  # deterministic


@given(AGENT_NAMES)
def test_service_account_name_round_trips(a: str) -> None:
    assert names.agent_name_from_service_account(names.service_account_name(a)) == a


def test_foreign_service_accounts_are_not_agents() -> None:
    assert names.agent_name_from_service_account("default") is None
    assert names.agent_name_from_service_account("agent-") is None
