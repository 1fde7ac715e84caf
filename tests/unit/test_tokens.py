"""Unit tests of the TokenReview and SubjectAccessReview caches (agent_identity.authz.tokens).

No API server: a reviewer whose ``_token_review`` / ``_sar`` (the two methods that call the
Kubernetes API, in a worker thread) are replaced by a table, with a fake clock.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from typing import Any

import pytest

from agent_identity.authz import tokens
from agent_identity.authz.tokens import (
    MAX_CACHE_SECONDS,
    MAX_SARS,
    MAX_TOKENS,
    SAR_TTL,
    AuthError,
    Caller,
    ExpiringLRU,
    TokenReviewer,
    token_hash,
)

T0 = 1_800_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def jwt(**claims: Any) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


def caller_for(token: str) -> Caller:
    return Caller(username=f"system:serviceaccount:payments:agent-{token_hash(token)[:8]}")


class FakeReviewer(TokenReviewer):
    """Counts API calls; a token in ``invalid`` fails its review; ``gate`` can hold calls."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(None, clock=clock)
        self.token_calls: list[str] = []
        self.sar_calls: list[tuple[str, str, str, str, str]] = []
        self.invalid: set[str] = set()
        self.allowed = True
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def _wait(self) -> None:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10), "the test never opened the gate"

    def _token_review(self, token: str, claims: dict[str, Any]) -> Caller:
        self.token_calls.append(token)
        self._wait()
        if token in self.invalid:
            raise AuthError(401, "the bearer token is not valid (not authenticated)")
        return caller_for(token)

    def _sar(
        self, caller: Caller, verb: str, resource: str, namespace: str, name: str
    ) -> tuple[bool, str]:
        self.sar_calls.append((caller.username, verb, resource, namespace, name))
        self._wait()
        return self.allowed, "" if self.allowed else "no RBAC rule"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def reviewer(clock: Clock) -> FakeReviewer:
    return FakeReviewer(clock)


# TokenReview cache ----------------------------------------------------------------------


async def test_review_is_cached_until_the_tokens_exp_and_not_after(
    reviewer: FakeReviewer, clock: Clock
) -> None:
    token = jwt(exp=T0 + 300, jti="j1")
    first = await reviewer.review(token)
    assert first == caller_for(token)
    assert reviewer.token_calls == [token]

    clock.now = T0 + 299.9
    assert await reviewer.review(token) == first
    assert reviewer.cached(token) == first
    assert reviewer.token_calls == [token]  # served from the cache

    clock.now = T0 + 300  # exp reached: no longer cached, and refused without a review
    assert reviewer.cached(token) is None
    with pytest.raises(AuthError) as info:
        await reviewer.review(token)
    assert info.value.status == 401
    assert "expired" in info.value.message
    assert reviewer.token_calls == [token]


async def test_far_exp_is_cached_at_most_max_cache_seconds(
    reviewer: FakeReviewer, clock: Clock
) -> None:
    # Extended-expiry service account tokens carry an exp a year away; the API server stops
    # accepting one as soon as its pod is deleted, so the review is redone now and then.
    token = jwt(exp=T0 + 365 * 86400)
    await reviewer.review(token)
    clock.now = T0 + MAX_CACHE_SECONDS - 1
    await reviewer.review(token)
    assert len(reviewer.token_calls) == 1
    clock.now = T0 + MAX_CACHE_SECONDS
    await reviewer.review(token)
    assert len(reviewer.token_calls) == 2


async def test_token_without_exp_is_cached_max_cache_seconds(
    reviewer: FakeReviewer, clock: Clock
) -> None:
    token = "not-a-jwt-static-token"
    await reviewer.review(token)
    clock.now = T0 + MAX_CACHE_SECONDS - 0.5
    await reviewer.review(token)
    assert len(reviewer.token_calls) == 1
    clock.now = T0 + MAX_CACHE_SECONDS
    await reviewer.review(token)
    assert len(reviewer.token_calls) == 2


async def test_expired_token_is_refused_without_a_review(reviewer: FakeReviewer) -> None:
    with pytest.raises(AuthError) as info:
        await reviewer.review(jwt(exp=T0 - 1))
    assert info.value.status == 401
    assert reviewer.token_calls == []


async def test_the_cache_key_is_a_hash_never_the_token(reviewer: FakeReviewer) -> None:
    token = jwt(exp=T0 + 300, sub="system:serviceaccount:payments:agent-bot")
    await reviewer.review(token)
    keys = reviewer._tokens.keys()
    assert keys == [token_hash(token)]
    assert token not in keys
    assert len(keys[0]) == 64 and keys[0] != token
    # ... and the token is nowhere in what the cache holds (key or value)
    assert token not in repr(keys) + repr(reviewer._tokens.get(keys[0]))


async def test_a_failed_review_is_not_cached(reviewer: FakeReviewer) -> None:
    token = jwt(exp=T0 + 300)
    reviewer.invalid.add(token)
    for _ in range(2):
        with pytest.raises(AuthError) as info:
            await reviewer.review(token)
        assert info.value.status == 401
    assert reviewer.token_calls == [token, token]  # reviewed again, not answered from a cache
    assert reviewer.cached(token) is None
    assert len(reviewer._tokens) == 0

    reviewer.invalid.clear()  # once the API server accepts it, it is accepted
    assert await reviewer.review(token) == caller_for(token)


async def test_an_api_failure_is_not_cached(reviewer: FakeReviewer) -> None:
    token = jwt(exp=T0 + 300)
    calls = 0

    def unavailable(token: str, claims: dict[str, Any]) -> Caller:
        nonlocal calls
        calls += 1
        raise AuthError(503, "the token could not be reviewed (TokenReview failed: timeout)")

    reviewer._token_review = unavailable  # type: ignore[method-assign]
    for _ in range(2):
        with pytest.raises(AuthError, match="could not be reviewed"):
            await reviewer.review(token)
    assert calls == 2
    assert reviewer.cached(token) is None


async def test_concurrent_identical_reviews_make_one_api_call(reviewer: FakeReviewer) -> None:
    token = jwt(exp=T0 + 300)
    reviewer.gate = threading.Event()
    first = asyncio.create_task(reviewer.review(token))
    await asyncio.to_thread(reviewer.entered.wait, 10)  # the first review is in the API call
    others = [asyncio.create_task(reviewer.review(token)) for _ in range(5)]
    await asyncio.sleep(0)
    reviewer.gate.set()
    results = await asyncio.gather(first, *others)
    assert reviewer.token_calls == [token]
    assert all(r == caller_for(token) for r in results)
    assert reviewer._inflight == {}


async def test_concurrent_identical_failed_reviews_share_the_failure(
    reviewer: FakeReviewer,
) -> None:
    token = jwt(exp=T0 + 300)
    reviewer.invalid.add(token)
    reviewer.gate = threading.Event()
    tasks = [asyncio.create_task(reviewer.review(token)) for _ in range(3)]
    await asyncio.to_thread(reviewer.entered.wait, 10)
    reviewer.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, AuthError) and r.status == 401 for r in results)
    assert reviewer.token_calls == [token]
    assert reviewer.cached(token) is None
    assert reviewer._inflight == {}


async def test_a_cancelled_caller_does_not_cancel_the_shared_review(
    reviewer: FakeReviewer,
) -> None:
    token = jwt(exp=T0 + 300)
    reviewer.gate = threading.Event()
    first = asyncio.create_task(reviewer.review(token))
    await asyncio.to_thread(reviewer.entered.wait, 10)
    second = asyncio.create_task(reviewer.review(token))
    await asyncio.sleep(0)
    first.cancel()  # the first client hung up
    await asyncio.sleep(0)
    reviewer.gate.set()
    assert await second == caller_for(token)
    assert first.cancelled()
    assert reviewer.token_calls == [token]
    assert reviewer.cached(token) == caller_for(token)  # the review still filled the cache


async def test_distinct_tokens_are_reviewed_separately(reviewer: FakeReviewer) -> None:
    a, b = jwt(exp=T0 + 300, jti="a"), jwt(exp=T0 + 300, jti="b")
    assert await reviewer.review(a) != await reviewer.review(b)
    assert reviewer.token_calls == [a, b]


async def test_token_cache_is_bounded_lru(
    reviewer: FakeReviewer, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    assert 1_000 <= MAX_TOKENS <= 100_000
    assert reviewer._tokens.maxsize == MAX_TOKENS
    reviewer._tokens.maxsize = 3  # the same code path as MAX_TOKENS, with fewer tokens
    t1, t2, t3, t4 = (jwt(exp=T0 + 300, jti=str(i)) for i in range(4))
    for t in (t1, t2, t3):
        await reviewer.review(t)
    await reviewer.review(t1)  # t1 is now the most recently used; t2 the least
    assert len(reviewer.token_calls) == 3
    await reviewer.review(t4)  # evicts t2
    assert len(reviewer._tokens) == 3
    assert reviewer.cached(t2) is None
    assert all(reviewer.cached(t) is not None for t in (t1, t3, t4))
    await reviewer.review(t2)  # reviewed again
    assert reviewer.token_calls[-1] == t2
    assert len(reviewer._tokens) == 3


async def test_many_distinct_tokens_never_exceed_the_bound(reviewer: FakeReviewer) -> None:
    reviewer._tokens.maxsize = 50
    for i in range(500):  # what an attacker with many valid tokens could send
        await reviewer.review(jwt(exp=T0 + 300, jti=f"t{i}"))
    assert len(reviewer._tokens) == 50
    assert len(reviewer.token_calls) == 500


def test_seed_goes_through_the_same_bound(reviewer: FakeReviewer) -> None:
    reviewer._tokens.maxsize = 2
    for i in range(5):
        reviewer.seed(f"tok-{i}", Caller(username=f"u{i}"), T0 + 60)
    assert len(reviewer._tokens) == 2
    assert reviewer.cached("tok-4") == Caller(username="u4")
    assert reviewer.cached("tok-0") is None


class TestExpiringLRU:
    def test_expiry_and_order(self, clock: Clock) -> None:
        cache: ExpiringLRU[str, int] = ExpiringLRU(2, clock)
        cache.put("a", 1, T0 + 10)
        cache.put("b", 2, T0 + 5)
        assert cache.get("a") == 1  # b is now the least recently used
        cache.put("c", 3, T0 + 10)
        assert "b" not in cache and cache.keys() == ["a", "c"]
        clock.now = T0 + 10
        assert cache.get("a") is None and "a" not in cache  # expired entries are dropped
        assert cache.deadline("c") == T0 + 10

    def test_rejects_empty_bound(self, clock: Clock) -> None:
        with pytest.raises(ValueError):
            ExpiringLRU(0, clock)


# SubjectAccessReview cache --------------------------------------------------------------

GATEWAY = Caller(username="system:serviceaccount:gateways:mcp", groups=("system:authenticated",))


async def test_sar_is_cached_for_its_ttl(reviewer: FakeReviewer, clock: Clock) -> None:
    assert await reviewer.may(GATEWAY, "evaluate", "agents", "payments", "bot") == (True, "")
    clock.now = T0 + SAR_TTL - 0.01
    assert await reviewer.may(GATEWAY, "evaluate", "agents", "payments", "bot") == (True, "")
    assert len(reviewer.sar_calls) == 1
    reviewer.allowed = False  # RBAC changed; seen once the TTL has passed
    clock.now = T0 + SAR_TTL
    allowed, reason = await reviewer.may(GATEWAY, "evaluate", "agents", "payments", "bot")
    assert (allowed, reason) == (False, "no RBAC rule")
    assert len(reviewer.sar_calls) == 2


async def test_sar_denial_is_cached_briefly_too(reviewer: FakeReviewer, clock: Clock) -> None:
    reviewer.allowed = False
    for _ in range(3):
        assert (await reviewer.may(GATEWAY, "evaluate", "agents", "payments"))[0] is False
    assert len(reviewer.sar_calls) == 1
    reviewer.allowed = True
    clock.now = T0 + SAR_TTL
    assert (await reviewer.may(GATEWAY, "evaluate", "agents", "payments"))[0] is True


async def test_sar_key_covers_everything_the_review_is_asked_with(
    reviewer: FakeReviewer,
) -> None:
    base = ("evaluate", "agents", "payments", "bot")
    await reviewer.may(GATEWAY, *base)
    await reviewer.may(GATEWAY, "evaluate", "agents", "payments", "other")
    await reviewer.may(GATEWAY, "evaluate", "agents", "billing", "bot")
    await reviewer.may(GATEWAY, "get", "agents", "payments", "bot")
    await reviewer.may(Caller(username=GATEWAY.username, groups=("system:masters",)), *base)
    await reviewer.may(Caller(username=GATEWAY.username, groups=GATEWAY.groups, uid="u2"), *base)
    other_pod = Caller(
        username=GATEWAY.username,
        groups=GATEWAY.groups,
        extra={"authentication.kubernetes.io/pod-name": ["mcp-2"]},
    )
    await reviewer.may(other_pod, *base)
    assert len(reviewer.sar_calls) == 7
    await reviewer.may(GATEWAY, *base)
    assert len(reviewer.sar_calls) == 7


async def test_sar_failure_is_not_cached(reviewer: FakeReviewer) -> None:
    calls = 0

    def failing(*args: Any) -> tuple[bool, str]:
        nonlocal calls
        calls += 1
        raise AuthError(503, "SubjectAccessReview failed: Service Unavailable")

    reviewer._sar = failing  # type: ignore[method-assign]
    for _ in range(2):
        with pytest.raises(AuthError):
            await reviewer.may(GATEWAY, "evaluate", "agents", "payments")
    assert calls == 2


async def test_concurrent_identical_sars_make_one_api_call(reviewer: FakeReviewer) -> None:
    reviewer.gate = threading.Event()
    first = asyncio.create_task(reviewer.may(GATEWAY, "evaluate", "agents", "payments", "bot"))
    await asyncio.to_thread(reviewer.entered.wait, 10)
    others = [
        asyncio.create_task(reviewer.may(GATEWAY, "evaluate", "agents", "payments", "bot"))
        for _ in range(4)
    ]
    await asyncio.sleep(0)
    reviewer.gate.set()
    assert await asyncio.gather(first, *others) == [(True, "")] * 5
    assert len(reviewer.sar_calls) == 1
    assert reviewer._sar_inflight == {}


async def test_sar_cache_is_bounded(reviewer: FakeReviewer) -> None:
    assert 1_000 <= MAX_SARS <= 100_000
    assert reviewer._sars.maxsize == MAX_SARS
    reviewer._sars.maxsize = 10
    for i in range(100):
        await reviewer.may(GATEWAY, "evaluate", "agents", f"ns-{i}")
    assert len(reviewer._sars) == 10
    await reviewer.may(GATEWAY, "evaluate", "agents", "ns-99")  # recent: still cached
    assert len(reviewer.sar_calls) == 100
    await reviewer.may(GATEWAY, "evaluate", "agents", "ns-0")  # evicted long ago
    assert len(reviewer.sar_calls) == 101


def test_module_constants_are_documented() -> None:
    doc = tokens.__doc__ or ""
    for name in ("MAX_CACHE_SECONDS", "SAR_TTL", "MAX_TOKENS", "MAX_SARS"):
        assert name in doc
