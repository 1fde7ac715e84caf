"""Who is calling: TokenReview and SubjectAccessReview, cached.

A bearer token is verified by the API server (TokenReview with our audience); we only
decode the JWT payload, without verifying it, to read ``exp`` (how long the review may be
cached) and ``jti`` (the credential id for the audit record). Reviews are cached by
sha256(token) (the token itself is never a key) until the token's ``exp``, and for at most
``MAX_CACHE_SECONDS`` (so a token the API server stops accepting, because its pod or
ServiceAccount was deleted, is refused within that time even when its ``exp`` is far away:
a long TTL, or the API server's extended expiry of service account tokens); the lifecycle is
checked on every call elsewhere, so caching the review does not let a retired agent act.
A failed review is never cached. SubjectAccessReviews (allowed or not) are cached for
``SAR_TTL`` seconds.

Both caches are LRU with a fixed number of entries (``MAX_TOKENS``, ``MAX_SARS``), so a
caller sending many distinct tokens cannot grow the process without bound; an entry that
is evicted or expired costs one more review, nothing else. Concurrent identical reviews
(same token, or same SubjectAccessReview) share one API call: the first starts it as a
task of its own, the others wait for that task, and a caller that goes away (its request
cancelled) does not cancel the review for the others.

The Kubernetes client is synchronous; calls run in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from agent_identity import GROUP
from agent_identity.api.common import DEFAULT_AUDIENCE
from agent_identity.identity.names import agent_name_from_service_account

SA_PREFIX = "system:serviceaccount:"
MAX_CACHE_SECONDS = 600.0
SAR_TTL = 5.0
# About 1.7 KB per cached review (a Caller with a service account's groups and extra
# values): 10,000 entries is ~17 MB, ten times the tokens of 1,000 agents with rotation.
MAX_TOKENS = 10_000
MAX_SARS = 10_000

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class AuthError(Exception):
    """An authentication (401) or authorization (403) refusal with a message for people."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Caller:
    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: dict[str, list[str]] = field(default_factory=dict)
    jti: str | None = None
    exp: float | None = None

    def service_account(self) -> tuple[str, str] | None:
        """(namespace, name) when the caller is a ServiceAccount."""
        if not self.username.startswith(SA_PREFIX):
            return None
        parts = self.username[len(SA_PREFIX) :].split(":")
        return (parts[0], parts[1]) if len(parts) == 2 and all(parts) else None

    def agent_key(self) -> tuple[str, str] | None:
        """(namespace, agent name) when the caller is an agent's ServiceAccount by name."""
        sa = self.service_account()
        if sa is None:
            return None
        agent = agent_name_from_service_account(sa[1])
        return (sa[0], agent) if agent else None


def token_hash(token: str) -> str:
    """The token cache's key for ``token`` (hex SHA-256)."""
    return hashlib.sha256(token.encode()).hexdigest()


class ExpiringLRU(Generic[K, V]):
    """A mapping with a deadline per entry and at most ``maxsize`` entries (LRU evicted).

    An expired entry is dropped when it is looked up, or evicted in LRU order like any
    other; nothing scans the whole cache, so a full cache costs O(1) per insertion.
    """

    def __init__(self, maxsize: int, clock: Callable[[], float]) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._clock = clock
        self._data: OrderedDict[K, tuple[V, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def keys(self) -> list[K]:
        return list(self._data)

    def deadline(self, key: K) -> float | None:
        hit = self._data.get(key)
        return None if hit is None else hit[1]

    def get(self, key: K) -> V | None:
        """The live value for ``key`` (now the most recently used), or None."""
        hit = self._data.get(key)
        if hit is None:
            return None
        if hit[1] <= self._clock():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return hit[0]

    def put(self, key: K, value: V, until: float) -> None:
        self._data[key] = (value, until)
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()


async def _single_flight(
    inflight: dict[K, asyncio.Task[V]], key: K, start: Callable[[], Awaitable[V]]
) -> V:
    """Await the one running call for ``key``, starting it if there is none.

    The call is a task of its own, so cancelling one waiter (a client that hung up) neither
    cancels it nor hands a CancelledError to the other waiters.
    """
    task = inflight.get(key)
    if task is None:

        async def run() -> V:
            return await start()

        task = asyncio.get_running_loop().create_task(run())
        inflight[key] = task

        def done(t: asyncio.Task[V]) -> None:
            if inflight.get(key) is t:
                del inflight[key]
            if not t.cancelled():
                t.exception()  # retrieved: every waiter re-raises it itself

        task.add_done_callback(done)
    return await asyncio.shield(task)


def jwt_claims(token: str) -> dict[str, Any]:
    """The JWT payload, NOT verified (TokenReview verifies); {} when it is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, json.JSONDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class TokenReviewer:
    """TokenReview + SubjectAccessReview with caches; one per process."""

    def __init__(
        self,
        api_client: Any,
        *,
        audience: str = DEFAULT_AUDIENCE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._api_client = api_client
        self.audience = audience
        self._clock = clock
        self._tokens: ExpiringLRU[str, Caller] = ExpiringLRU(MAX_TOKENS, clock)
        self._inflight: dict[str, asyncio.Task[Caller]] = {}
        self._sars: ExpiringLRU[tuple[Any, ...], tuple[bool, str]] = ExpiringLRU(MAX_SARS, clock)
        self._sar_inflight: dict[tuple[Any, ...], asyncio.Task[tuple[bool, str]]] = {}

    # tokens ------------------------------------------------------------------------------

    def seed(self, token: str, caller: Caller, until: float) -> None:
        """Put a reviewed token in the cache (benchmarks and tests of the HTTP layer)."""
        self._tokens.put(token_hash(token), caller, until)

    def cached(self, token: str) -> Caller | None:
        return self._tokens.get(token_hash(token))

    async def review(self, token: str) -> Caller:
        """The authenticated caller of ``token`` or AuthError(401)."""
        key = token_hash(token)
        hit = self._tokens.get(key)
        if hit is not None:
            return hit
        claims = jwt_claims(token)
        exp = claims.get("exp")
        if isinstance(exp, int | float) and exp <= self._clock():
            raise AuthError(401, "the bearer token has expired; request a fresh token")

        async def review_and_cache() -> Caller:
            caller = await asyncio.to_thread(self._token_review, token, claims)
            until = self._clock() + MAX_CACHE_SECONDS
            if isinstance(exp, int | float):
                until = min(until, float(exp))
            self._tokens.put(key, caller, until)  # only a successful review gets here
            return caller

        return await _single_flight(self._inflight, key, review_and_cache)

    def _token_review(self, token: str, claims: dict[str, Any]) -> Caller:
        from kubernetes import client

        body = client.V1TokenReview(
            spec=client.V1TokenReviewSpec(token=token, audiences=[self.audience])
        )
        try:
            result = client.AuthenticationV1Api(self._api_client).create_token_review(body)
        except client.ApiException as exc:
            raise AuthError(
                503 if exc.status in (0, 429) or (exc.status or 0) >= 500 else 401,
                f"the token could not be reviewed (TokenReview failed: {exc.reason})",
            ) from exc
        status = result.status
        if status is None or not status.authenticated or status.user is None:
            detail = (status.error if status is not None else None) or "not authenticated"
            raise AuthError(
                401,
                f"the bearer token is not valid for audience {self.audience} ({detail}); "
                f"use a token requested with audience {self.audience}",
            )
        if status.audiences and self.audience not in status.audiences:
            raise AuthError(401, f"the bearer token is not valid for audience {self.audience}")
        user = status.user
        jti = claims.get("jti")
        extra = {k: list(v) for k, v in (user.extra or {}).items()}
        if not isinstance(jti, str):
            ids = extra.get("authentication.kubernetes.io/credential-id") or []
            jti = next((i.removeprefix("JTI=") for i in ids if i.startswith("JTI=")), None)
        exp = claims.get("exp")
        return Caller(
            username=user.username or "",
            uid=user.uid or "",
            groups=tuple(user.groups or ()),
            extra=extra,
            jti=jti,
            exp=float(exp) if isinstance(exp, int | float) else None,
        )

    # SubjectAccessReview ----------------------------------------------------------------------

    async def may(
        self, caller: Caller, verb: str, resource: str, namespace: str, name: str = ""
    ) -> tuple[bool, str]:
        """Whether ``caller`` may ``verb`` ``resource``.agentidentity.io (cached briefly)."""
        extra = tuple(sorted((k, tuple(v)) for k, v in caller.extra.items()))
        # Everything the review is asked with is in the key: uid and extra too, since an
        # authorizer may decide on them.
        key = (caller.username, caller.uid, caller.groups, extra, verb, resource, namespace, name)
        hit = self._sars.get(key)
        if hit is not None:
            return hit

        async def review_and_cache() -> tuple[bool, str]:
            answer = await asyncio.to_thread(self._sar, caller, verb, resource, namespace, name)
            self._sars.put(key, answer, self._clock() + SAR_TTL)
            return answer

        return await _single_flight(self._sar_inflight, key, review_and_cache)

    def _sar(
        self, caller: Caller, verb: str, resource: str, namespace: str, name: str
    ) -> tuple[bool, str]:
        from kubernetes import client

        body = client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=caller.username,
                uid=caller.uid or None,
                groups=list(caller.groups),
                extra=caller.extra or None,
                resource_attributes=client.V1ResourceAttributes(
                    group=GROUP,
                    resource=resource,
                    verb=verb,
                    namespace=namespace,
                    name=name or None,
                ),
            )
        )
        try:
            result = client.AuthorizationV1Api(self._api_client).create_subject_access_review(body)
        except client.ApiException as exc:
            raise AuthError(503, f"SubjectAccessReview failed: {exc.reason}") from exc
        status = result.status
        return bool(status and status.allowed), (status.reason or "") if status else ""


def self_username(api_client: Any) -> str:
    """The user name this process acts as (SelfSubjectReview), for ``system_users``."""
    from kubernetes import client

    review = client.AuthenticationV1Api(api_client).create_self_subject_review(
        client.V1SelfSubjectReview()
    )
    info = review.status.user_info if review.status is not None else None
    return (info.username or "") if info is not None else ""
