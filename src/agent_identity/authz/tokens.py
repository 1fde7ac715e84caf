"""Who is calling: TokenReview and SubjectAccessReview, cached.

A bearer token is verified by the API server (TokenReview with our audience); we only
decode the JWT payload, without verifying it, to read ``exp`` (how long the review may be
cached) and ``jti`` (the credential id for the audit record). Reviews are cached by
sha256(token) until the token's ``exp`` (at most ``MAX_CACHE_SECONDS`` when it has none);
the lifecycle is checked on every call elsewhere, so caching the review does not let a
retired agent act. SubjectAccessReviews are cached for ``SAR_TTL`` seconds.

The Kubernetes client is synchronous; calls run in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent_identity import GROUP
from agent_identity.api.common import DEFAULT_AUDIENCE
from agent_identity.identity.names import agent_name_from_service_account

SA_PREFIX = "system:serviceaccount:"
MAX_CACHE_SECONDS = 600.0
SAR_TTL = 5.0
MAX_ENTRIES = 100_000


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
    return hashlib.sha256(token.encode()).hexdigest()


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
        self._tokens: dict[str, tuple[Caller, float]] = {}
        self._inflight: dict[str, asyncio.Future[Caller]] = {}
        self._sars: dict[tuple[Any, ...], tuple[bool, str, float]] = {}

    # tokens ------------------------------------------------------------------------------

    def seed(self, token: str, caller: Caller, until: float) -> None:
        """Put a reviewed token in the cache (benchmarks and tests of the HTTP layer)."""
        self._tokens[token_hash(token)] = (caller, until)

    def cached(self, token: str) -> Caller | None:
        hit = self._tokens.get(token_hash(token))
        if hit is not None and hit[1] > self._clock():
            return hit[0]
        return None

    async def review(self, token: str) -> Caller:
        """The authenticated caller of ``token`` or AuthError(401)."""
        key = token_hash(token)
        now = self._clock()
        hit = self._tokens.get(key)
        if hit is not None:
            if hit[1] > now:
                return hit[0]
            del self._tokens[key]
        claims = jwt_claims(token)
        exp = claims.get("exp")
        if isinstance(exp, int | float) and exp <= now:
            raise AuthError(401, "the bearer token has expired; request a fresh token")
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Caller] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            caller = await asyncio.to_thread(self._token_review, token, claims)
            until = float(exp) if isinstance(exp, int | float) else now + MAX_CACHE_SECONDS
            if len(self._tokens) >= MAX_ENTRIES:
                self._evict()
            self._tokens[key] = (caller, until)
            future.set_result(caller)
            return caller
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters (if any) re-raise it themselves
            raise
        finally:
            self._inflight.pop(key, None)

    def _evict(self) -> None:
        now = self._clock()
        for k in [k for k, (_, until) in self._tokens.items() if until <= now]:
            del self._tokens[k]
        while len(self._tokens) >= MAX_ENTRIES:
            self._tokens.pop(next(iter(self._tokens)))

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
        key = (caller.username, caller.groups, verb, resource, namespace, name)
        now = self._clock()
        hit = self._sars.get(key)
        if hit is not None and hit[2] > now:
            return hit[0], hit[1]
        allowed, reason = await asyncio.to_thread(
            self._sar, caller, verb, resource, namespace, name
        )
        if len(self._sars) >= MAX_ENTRIES:
            self._sars.clear()
        self._sars[key] = (allowed, reason, now + SAR_TTL)
        return allowed, reason

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
