"""kopf settings, each chosen on purpose (pinned by tests/unit/test_operator_settings.py)."""

from __future__ import annotations

import logging

import kopf

from agent_identity import GROUP

# kopf's finalizer name if a handler ever needed one. Today none does, so no finalizer is
# added: the garbage collector deletes the children through ownerReferences, and a
# finalizer would block deleting Agents (and whole namespaces) whenever the operator is down.
FINALIZER = f"{GROUP}/finalizer"
# Handler progress and the last-handled spec live in annotations under our group, so
# `kubectl get -o yaml` shows whose they are, and status stays ours alone (never kopf's).
STATE_PREFIX = GROUP
# The API server ends a watch after this many seconds; kopf then re-lists. Bounded watches
# recover from silently stalled connections (a proxy or API server restart).
WATCH_SERVER_TIMEOUT = 300
# The client gives up a little after the server would: a dead TCP connection is noticed.
WATCH_CLIENT_TIMEOUT = 330
# One API call (not a watch) may take this long; kopf's default (300 s) would stall a
# worker for minutes on a hung API server.
REQUEST_TIMEOUT = 30
CONNECT_TIMEOUT = 10
# Threads for the sync handlers. Reconciles wait on the API server, not the CPU, so more
# threads than cores help, yet few enough to stay polite to a small control plane.
MAX_WORKERS = 8
# kopf turns its own log lines into Kubernetes Events at this level and above. We post the
# lifecycle Events ourselves; an Event per "handler succeeded" line (INFO) would flood etcd.
POSTING_LEVEL = logging.WARNING


def operator_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    configure(settings)
    return settings


def configure(settings: kopf.OperatorSettings) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=STATE_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=STATE_PREFIX, key="last-handled-configuration"
    )
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT
    settings.watching.connect_timeout = CONNECT_TIMEOUT
    settings.networking.request_timeout = REQUEST_TIMEOUT
    settings.networking.connect_timeout = CONNECT_TIMEOUT
    settings.execution.max_workers = MAX_WORKERS
    settings.posting.level = POSTING_LEVEL
