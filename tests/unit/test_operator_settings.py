"""The kopf settings are chosen on purpose; this pins them."""

from __future__ import annotations

import logging

import kopf

from agent_identity.controller import handlers
from agent_identity.controller.settings import operator_settings


def test_settings_are_pinned() -> None:
    s = operator_settings()
    assert s.persistence.finalizer == "agentidentity.io/finalizer"
    progress = s.persistence.progress_storage
    assert isinstance(progress, kopf.AnnotationsProgressStorage)
    assert progress.prefix == "agentidentity.io"
    diffbase = s.persistence.diffbase_storage
    assert isinstance(diffbase, kopf.AnnotationsDiffBaseStorage)
    assert diffbase.prefix == "agentidentity.io"
    assert diffbase.key == "last-handled-configuration"
    assert s.watching.server_timeout == 300
    assert s.watching.client_timeout == 330
    assert s.watching.client_timeout > s.watching.server_timeout
    assert s.networking.request_timeout == 30
    assert s.execution.max_workers == 8
    assert s.posting.level == logging.WARNING


def test_no_handler_adds_a_finalizer() -> None:
    """Children go with the garbage collector; nothing may block an Agent's deletion."""
    for resource_handlers in (handlers.registry._changing, handlers.registry._spawning):
        for handler in resource_handlers.get_all_handlers():
            assert not handler.requires_finalizer, handler.id


def test_every_agent_trigger_is_registered() -> None:
    ids = {h.id for h in handlers.registry._changing.get_all_handlers()}
    assert {"agent_changed", "scope_changed", "scope_resumed"} <= ids
    watching = {h.id for h in handlers.registry._watching.get_all_handlers()}
    assert {"child-serviceaccounts", "child-roles", "child-rolebindings"} <= watching
    assert "child-networkpolicies" in watching
    # No per-object daemons or timers: kopf would give each Agent a finalizer.
    assert list(handlers.registry._spawning.get_all_handlers()) == []
    activities = {h.id for h in handlers.registry._activities.get_all_handlers()}
    assert {"login", "start_clock", "stop_clock"} <= activities
    assert {h.id for h in handlers.registry._indexing.get_all_handlers()} == {"agents_by_scope"}
