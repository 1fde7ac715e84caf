"""List + watch of our four kinds, feeding the in-memory ``Registry``.

One thread per kind with the synchronous Kubernetes client: list (mark the kind
synced), then watch from the list's resourceVersion with bookmarks; on 410 Gone
or any error, list again after a short back-off. Every registry change is handed
to the event loop (``call_soon_threadsafe``), so only the loop thread ever
touches the registry and handlers never see a half-applied event.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from agent_identity import GROUP, VERSION
from agent_identity.metrics import WATCH_LAST_SYNC
from agent_identity.registry import KINDS, Registry

log = logging.getLogger(__name__)

PLURALS = {
    "Agent": "agents",
    "AuthorityScope": "authorityscopes",
    "ApprovalPolicy": "approvalpolicies",
    "ApprovalRequest": "approvalrequests",
}
WATCH_TIMEOUT = 290  # seconds per watch call; the server side ends it, we resume from rv
BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0)


class RegistryFeeder:
    """Runs the watches; ``stop()`` ends them (threads are daemons either way)."""

    def __init__(
        self,
        registry: Registry,
        loop: asyncio.AbstractEventLoop,
        make_client: Callable[[], client.ApiClient],
    ) -> None:
        self.registry = registry
        self.loop = loop
        self.make_client = make_client
        self._stop = threading.Event()
        self._watches: list[watch.Watch] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for kind in KINDS:
            t = threading.Thread(target=self._run, args=(kind,), name=f"watch-{kind}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for w in list(self._watches):
            w.stop()  # type: ignore[no-untyped-call]

    def _apply(self, fn: Callable[..., None], *args: Any) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(fn, *args)

    def _run(self, kind: str) -> None:
        api = client.CustomObjectsApi(self.make_client())
        plural = PLURALS[kind]
        failures = 0
        while not self._stop.is_set():
            try:
                listing: Any = api.list_cluster_custom_object(GROUP, VERSION, plural)
                rv = str(listing["metadata"]["resourceVersion"])
                self._apply(self.registry.replace_all, kind, listing.get("items") or [])
                WATCH_LAST_SYNC.labels(kind).set_to_current_time()
                failures = 0
                while not self._stop.is_set():
                    rv = self._watch(api, kind, plural, rv)
            except ApiException as exc:
                if self._stop.is_set():
                    return
                if exc.status != 410:
                    log.warning("watch of %s failed (%s); listing again", kind, exc.reason)
                    failures += 1
            except Exception as exc:  # the connection dropped: relist and carry on
                if self._stop.is_set():
                    return
                log.warning("watch of %s failed (%s); listing again", kind, exc)
                failures += 1
            if failures:
                self._stop.wait(BACKOFF[min(failures, len(BACKOFF)) - 1])

    def _watch(self, api: client.CustomObjectsApi, kind: str, plural: str, rv: str) -> str:
        w = watch.Watch()  # type: ignore[no-untyped-call]
        self._watches.append(w)
        try:
            for event in w.stream(  # type: ignore[no-untyped-call]
                api.list_cluster_custom_object,
                GROUP,
                VERSION,
                plural,
                resource_version=rv,
                allow_watch_bookmarks=True,
                timeout_seconds=WATCH_TIMEOUT,
            ):
                obj = event["object"]
                kind_of_event = event["type"]
                if kind_of_event == "ERROR":
                    code = obj.get("code") if isinstance(obj, dict) else None
                    raise ApiException(status=code or 500, reason=str(obj))
                meta = obj.get("metadata") or {}
                rv = str(meta.get("resourceVersion") or rv)
                if kind_of_event == "BOOKMARK":
                    continue
                if kind_of_event == "DELETED":
                    self._apply(
                        self.registry.delete,
                        kind,
                        str(meta.get("namespace") or ""),
                        str(meta.get("name") or ""),
                    )
                else:
                    self._apply(self.registry.upsert, {**obj, "kind": kind})
                WATCH_LAST_SYNC.labels(kind).set_to_current_time()
        finally:
            self._watches.remove(w)
        return rv
