"""Tool and action patterns: the grammar shared by scopes, policies and the engine.

Grammar (documented in docs and in the CRD field descriptions):

- an action name is one or more *segments* separated by ``.``; a segment is
  ``[a-z0-9_-]+`` (for example ``github.pulls.create``);
- a pattern is made of segments and two wildcards, each a whole segment:
  ``*`` matches exactly one segment, ``**`` matches any number of segments
  (zero or more; a pattern that is only ``**`` matches every action);
- two ``**`` in a row are refused (they mean the same as one).

``github.pulls.*`` matches ``github.pulls.create`` but not ``github.pulls`` or
``github.pulls.review.submit``; ``github.admin.**`` matches ``github.admin``,
``github.admin.users`` and ``github.admin.users.delete``.
"""

from __future__ import annotations

import itertools
import re
from functools import lru_cache

SEGMENT = r"[a-z0-9_-]+"
ACTION_RE = re.compile(rf"^{SEGMENT}(\.{SEGMENT})*$")
_TOKEN_RE = re.compile(rf"^(\*\*|\*|{SEGMENT})$")

# The same grammar as a JSON-schema / CRD ``pattern`` (structural check only;
# the "no ``**.**``" rule is a CEL rule and a validator).
_TOK = rf"(\*\*|\*|{SEGMENT})"
PATTERN_REGEX = rf"^{_TOK}(\.{_TOK})*$"
ACTION_REGEX = ACTION_RE.pattern

PATTERN_HELP = (
    "segments of lowercase letters, digits, '_' or '-' separated by '.', where a whole "
    "segment may be '*' (one segment) or '**' (any depth), e.g. 'github.pulls.*' or "
    "'github.admin.**'"
)


def pattern_error(pattern: str) -> str | None:
    """Why ``pattern`` is not a valid tool pattern, or None when it is."""
    if not pattern:
        return "a pattern must not be empty; use " + PATTERN_HELP
    tokens = pattern.split(".")
    for token in tokens:
        if not _TOKEN_RE.match(token):
            return f"segment {token!r} of {pattern!r} is not valid; use {PATTERN_HELP}"
    for left, right in itertools.pairwise(tokens):
        if left == right == "**":
            return f"{pattern!r} has '**.**'; one '**' already matches any depth"
    return None


def is_valid_action(name: str) -> bool:
    """Whether ``name`` is a concrete action (no wildcards)."""
    return bool(ACTION_RE.match(name))


@lru_cache(maxsize=4096)
def _compile(pattern: str) -> re.Pattern[str]:
    tokens = pattern.split(".")
    parts: list[str] = []
    for i, token in enumerate(tokens):
        if token == "**":
            if len(tokens) == 1:
                parts.append(rf"{SEGMENT}(?:\.{SEGMENT})*")
            elif i == 0:
                parts.append(rf"(?:{SEGMENT}\.)*")
            else:
                parts.append(rf"(?:\.{SEGMENT})*")
            continue
        # A leading '**.' already consumed the dot before this segment.
        lead = "" if i == 0 or (i == 1 and tokens[0] == "**") else r"\."
        parts.append(lead + (SEGMENT if token == "*" else re.escape(token)))
    return re.compile("^" + "".join(parts) + "$")


def matches(pattern: str, action: str) -> bool:
    """Whether the concrete ``action`` is matched by ``pattern``."""
    return _compile(pattern).match(action) is not None


def matches_any(patterns: list[str] | tuple[str, ...], action: str) -> str | None:
    """The first pattern of ``patterns`` that matches ``action``, or None."""
    for pattern in patterns:
        if matches(pattern, action):
            return pattern
    return None


@lru_cache(maxsize=4096)
def _covers(general: tuple[str, ...], specific: tuple[str, ...]) -> bool:
    if not general:
        return not specific
    head = general[0]
    if head == "**":
        # '**' matches zero segments, or absorbs the next segment of specific
        # (including a '*' or '**' of specific).
        return _covers(general[1:], specific) or (bool(specific) and _covers(general, specific[1:]))
    if not specific:
        return False
    first = specific[0]
    if first == "**":
        return False  # only '**' covers any depth
    if first == "*" and head != "*":
        return False
    if head not in ("*", first):
        return False
    return _covers(general[1:], specific[1:])


def covers(general: str, specific: str) -> bool:
    """Whether every action matched by ``specific`` is also matched by ``general``.

    Used to check that a sub-agent's authority is a subset of its parent's.
    """
    return _covers(tuple(general.split(".")), tuple(specific.split(".")))


def covered_by_any(patterns: list[str] | tuple[str, ...], specific: str) -> bool:
    """Whether a single pattern of ``patterns`` covers ``specific`` (conservative)."""
    return any(covers(p, specific) for p in patterns)
