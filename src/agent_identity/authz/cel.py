"""CEL expressions for context-aware authority (``AuthorityScope.spec.constraints[].when``
and ``ApprovalPolicy.spec.match.when``).

Pure: no I/O, no Kubernetes. Evaluation uses the Rust-backed ``common-expression-language``
package (import name ``cel``), chosen by measurement (``bench/bench_cel.py``); the checks that
library does not do (unknown variables, non-boolean results, cost) are done here on our own
parse of the expression.

The CEL environment
-------------------
Exactly five variables exist; any other root identifier is a compile error.

``subject``   the agent: ``name``, ``namespace``, ``owner``, ``platform`` (``kubernetes`` or
              ``external``), ``phase`` (lifecycle phase, e.g. ``Active``), ``labels`` and
              ``annotations`` (maps of string to string).
``action``    ``name`` (e.g. ``payments.refund``) and ``properties`` (a map from the request).
``resource``  ``type``, ``id`` and ``properties`` (a map from the request).
``context``   the caller's context object, as sent (a map).
``request``   ``time`` (a timestamp, the server clock, UTC) and ``caller`` (the authenticated
              caller's identity).

JSON numbers may arrive as int or double; CEL compares them across types
(``action.properties.amount > 1000`` holds for 1000.5 and for 1001). A key that may be
absent must be guarded with ``has()``: ``has(resource.properties.env) &&
resource.properties.env == "production"``. Reading an absent key is an evaluation error,
which the engine turns into a deny naming the expression. Errors are absorbed by ``||`` and
``&&`` as the CEL spec says (``x.missing == 1 || true`` is true).

Available: ``has``, ``all``, ``exists``, ``exists_one``, ``map``, ``filter``, ``in`` on lists
and map keys, ``size``, ``startsWith``, ``endsWith``, ``contains``, ``matches`` (RE2 syntax),
``timestamp()``, ``duration()``, timestamp and duration arithmetic and comparison,
``getHours()``, ``getDayOfWeek()`` and the other accessors in UTC. Not available: the time zone
argument (``getHours("Europe/Paris")`` is an evaluation error).

Examples::

    resource.properties.env != "production" || context.change_window == true
    has(action.properties.amount) && action.properties.amount > 1000
    request.time.getHours() >= 8 && request.time.getHours() < 18
    subject.labels.exists(k, k == "tier") && "pci" in resource.properties.tags

Limits (what stops a pathological expression)
---------------------------------------------
The library has no cost limit, no step limit, no timeout and no way to interrupt an
evaluation: ``Program.execute`` runs to the end in Rust while holding the GIL, so not even
another Python thread runs meanwhile (measured; ``bench/bench_cel.py``). The limits are
therefore computed before anything runs:

* at compile (and admission): ``MAX_EXPRESSION_LENGTH`` characters of source,
  ``MAX_NESTING`` levels of nesting, and the cost model below must fit ``MAX_COST`` when
  every list or map of the input (at any depth) has ``NOMINAL_SIZE`` entries: an expression
  that cannot even handle 50-entry lists is refused up front (three nested comprehensions
  with a real body, a unicode-class regex inside a loop...);
* at every evaluation, the **per-evaluation limit** (``EvaluationLimit``, by default
  ``MAX_EVALUATION_COST`` units): the cost model, applied to the actual input of this
  evaluation, gives an upper bound of the work; over the limit the expression is not
  evaluated, and the evaluation fails with a ``CelError`` naming the expression and the
  biggest inputs it reads. Only what the expression reads counts, and only that is handed
  to CEL: a large list in ``context`` that the expression never names (or only tests with
  ``has()``) costs nothing. There is no cap on the size of lists and maps as such.

The cost model (``_Estimate``), in units of about one interpreted step: every node costs 1;
a comprehension (``all``, ``exists``, ``exists_one``, ``map``, ``filter``) costs its range's
size times its body, and ``map`` and ``filter`` also the square of their size (the library
copies the growing result on every item); reading a list or map (a field, a variable, an
index) costs its weight (one unit per value in it), since the library copies it on every
read; ``==`` and the other comparisons, ``in`` and ``+`` cost the values they compare or
copy; string functions and conversions one unit per ``_TRAVERSAL`` characters; ``matches``
compiles its pattern on every call (the library has no regex cache), which costs an
estimate from the pattern's syntax (``_regex_shape``: unicode classes such as ``\\w`` are
the expensive part) when the pattern is known before evaluation (a literal, an input value,
a concatenation of those, an element of an input list), and ``REGEX_MAX_COST`` otherwise;
its search costs the text's length times the pattern's NFA positions (on an adversarial
text the library falls back to an NFA simulation: up to about 20 ns per character and
position); handing the input to CEL costs ``_CONVERSION`` units per value and
``_CONVERSION_STRING`` more per string. Sizes come from the input, depth by depth
(``_Shape``); computed values are bounded from them (a ``+`` of two lists has at most the
sum of their sizes, a ``map`` its range's size...). One unit is at most about 0.1 µs on one
core of the development machine (``bench/bench_cel.py`` table 4 measures 0.02 to 0.1 on
typical cases; up to 0.2 in edge cases such as an error raised on every item), so the
default limit stops an expression that would run for more than about 0.1 s (0.2 s at
worst). Stopping it takes time linear in the input it reads (3000 items: a few ms), and
converting the input stops as soon as that alone would be over the limit.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import cel as _cel

__all__ = [
    "ALLOWED_VARIABLES",
    "DEFAULT_LIMIT",
    "MAX_COST",
    "MAX_EVALUATION_COST",
    "MAX_EXPRESSION_LENGTH",
    "MAX_NESTING",
    "NOMINAL_SIZE",
    "REGEX_MAX_COST",
    "CelError",
    "CompiledExpression",
    "EvaluationLimit",
    "check_expression",
    "check_expressions",
    "compile_expression",
]

ALLOWED_VARIABLES: Final = frozenset({"subject", "action", "resource", "context", "request"})
MAX_EXPRESSION_LENGTH: Final = 4096
MAX_NESTING: Final = 32
MAX_EVALUATION_COST: Final = 1_000_000  # the default per-evaluation limit (~0.1 s)
# At admission the input is unknown: an expression must fit MAX_COST when every list or map
# from the input has NOMINAL_SIZE entries.
MAX_COST: Final = MAX_EVALUATION_COST
NOMINAL_SIZE: Final = 50
# handing the input to CEL, per unit of weight and per string (converted in Python and Rust)
_CONVERSION: Final = 10
_CONVERSION_STRING: Final = 20

_MACROS: Final = frozenset({"all", "exists", "exists_one", "map", "filter"})
_BOOL_FUNCTIONS: Final = frozenset(
    {"has", "all", "exists", "exists_one", "startsWith", "endsWith", "contains", "matches"}
)
_TYPED_FUNCTIONS: Final = {
    "size": "int",
    "int": "int",
    "uint": "uint",
    "double": "double",
    "string": "string",
    "bytes": "bytes",
    "timestamp": "timestamp",
    "duration": "duration",
    "map": "list",
    "filter": "list",
    "getFullYear": "int",
    "getMonth": "int",
    "getDayOfYear": "int",
    "getDayOfMonth": "int",
    "getDate": "int",
    "getDayOfWeek": "int",
    "getHours": "int",
    "getMinutes": "int",
    "getSeconds": "int",
    "getMilliseconds": "int",
}
_RELATIONS: Final = frozenset({"==", "!=", "<", "<=", ">", ">=", "in"})


class CelError(Exception):
    """A CEL expression that cannot be compiled or evaluated; ``message`` is for people."""

    def __init__(self, message: str, source: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.source = source


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class _Tok:
    kind: str  # "num", "str", "id", "op", "eof"
    text: str
    pos: int
    literal: str = ""  # for "num" and "str": the CEL type


_TOKEN_RE: Final = re.compile(
    r"""
    (?P<ws>\s+|//[^\n]*)
  | (?P<str>(?:[rR][bB]?|[bB][rR]?)?(?:\"\"\"|'''|"|'))
  | (?P<num>0[xX][0-9a-fA-F]+[uU]?|(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?[uU]?)
  | (?P<id>[_a-zA-Z][_a-zA-Z0-9]*)
  | (?P<op>==|!=|<=|>=|&&|\|\||[<>+\-*/%!?:.,()\[\]{}])
    """,
    re.VERBOSE,
)


def _tokenize(source: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(source):
        m = _TOKEN_RE.match(source, pos)
        if m is None:
            raise CelError(f"unexpected character {source[pos]!r} at position {pos + 1}")
        kind = m.lastgroup or ""
        if kind == "ws":
            pos = m.end()
        elif kind == "str":
            prefix = m.group().rstrip("\"'")
            quote = m.group()[len(prefix) :]
            end = _string_end(source, m.end(), quote, raw="r" in prefix.lower())
            lit = "bytes" if "b" in prefix.lower() else "string"
            tokens.append(_Tok("str", source[pos:end], pos, lit))
            pos = end
        elif kind == "num":
            text = m.group()
            if text[-1] in "uU":
                lit = "uint"
            elif text[:2].lower() != "0x" and any(c in text for c in ".eE"):
                lit = "double"
            else:
                lit = "int"
            tokens.append(_Tok("num", text, pos, lit))
            pos = m.end()
        else:
            tokens.append(_Tok(kind, m.group(), pos))
            pos = m.end()
    tokens.append(_Tok("eof", "", len(source)))
    return tokens


def _string_end(source: str, pos: int, quote: str, *, raw: bool) -> int:
    while pos < len(source):
        if source.startswith(quote, pos):
            return pos + len(quote)
        if source[pos] == "\\" and not raw:
            pos += 2
            continue
        if source[pos] == "\n" and len(quote) == 1:
            break
        pos += 1
    raise CelError("unterminated string literal")


@dataclass
class _Node:
    kind: str  # lit list map ident select index call mcall unary binary cond
    value: str = ""
    children: list[_Node] = field(default_factory=list)
    pos: int = 0
    text: str = ""  # a literal's source text
    chain: tuple[str, ...] | None = None  # set by _annotate: see _chain


class _Parser:
    """Recursive descent over the CEL grammar, for static analysis only."""

    def __init__(self, source: str) -> None:
        self.toks = _tokenize(source)
        self.i = 0
        self.depth = 0

    # helpers
    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def accept(self, text: str) -> bool:
        tok = self.peek()
        if tok.kind == "op" and tok.text == text:
            self.i += 1
            return True
        return False

    def expect(self, text: str) -> None:
        if not self.accept(text):
            tok = self.peek()
            found = "end of expression" if tok.kind == "eof" else repr(tok.text)
            raise CelError(f"expected {text!r} at position {tok.pos + 1}, found {found}")

    def parse(self) -> _Node:
        node = self.expr()
        tok = self.peek()
        if tok.kind != "eof":
            raise CelError(f"unexpected {tok.text!r} at position {tok.pos + 1}")
        return node

    # grammar
    def expr(self) -> _Node:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise CelError(f"the expression is nested more than {MAX_NESTING} levels deep")
        try:
            cond = self.binary(0)
            if self.accept("?"):
                then = self.binary(0)
                self.expect(":")
                other = self.expr()
                return _Node("cond", "?:", [cond, then, other], cond.pos)
            return cond
        finally:
            self.depth -= 1

    _LEVELS: Final = (
        ("||",),
        ("&&",),
        ("==", "!=", "<", "<=", ">", ">=", "in"),
        ("+", "-"),
        ("*", "/", "%"),
    )

    def binary(self, level: int) -> _Node:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while True:
            tok = self.peek()
            if tok.kind in ("op", "id") and tok.text in self._LEVELS[level]:
                self.take()
                right = self.binary(level + 1)
                left = _Node("binary", tok.text, [left, right], tok.pos)
            else:
                return left

    def unary(self) -> _Node:
        tok = self.peek()
        if tok.kind == "op" and tok.text in ("!", "-"):
            self.take()
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise CelError(f"the expression is nested more than {MAX_NESTING} levels deep")
            try:
                return _Node("unary", tok.text, [self.unary()], tok.pos)
            finally:
                self.depth -= 1
        return self.member()

    def member(self) -> _Node:
        node = self.primary()
        while True:
            tok = self.peek()
            if self.accept("."):
                name = self.take()
                if name.kind != "id":
                    raise CelError(f"expected a field name at position {name.pos + 1}")
                if self.accept("("):
                    args = self.args(")")
                    node = _Node("mcall", name.text, [node, *args], name.pos)
                else:
                    node = _Node("select", name.text, [node], name.pos)
            elif self.accept("["):
                key = self.expr()
                self.expect("]")
                node = _Node("index", "[]", [node, key], tok.pos)
            elif tok.kind == "op" and tok.text == "{" and node.kind in ("ident", "select"):
                self.take()  # message construction: T{field: value}
                node = _Node("map", "message", self.fields(), tok.pos)
            else:
                return node

    def args(self, close: str) -> list[_Node]:
        out: list[_Node] = []
        if self.accept(close):
            return out
        while True:
            out.append(self.expr())
            if self.accept(close):
                return out
            self.expect(",")
            if self.accept(close):  # trailing comma
                return out

    def fields(self) -> list[_Node]:
        out: list[_Node] = []
        if self.accept("}"):
            return out
        while True:
            out.append(self.expr())
            self.expect(":")
            out.append(self.expr())
            if self.accept("}"):
                return out
            self.expect(",")
            if self.accept("}"):
                return out

    def primary(self) -> _Node:
        tok = self.take()
        if tok.kind == "num":
            return _Node("lit", tok.literal, [], tok.pos)
        if tok.kind == "str":
            return _Node("lit", tok.literal, [], tok.pos, tok.text)
        if tok.kind == "id":
            if tok.text in ("true", "false"):
                return _Node("lit", "bool", [], tok.pos)
            if tok.text == "null":
                return _Node("lit", "null", [], tok.pos)
            if self.accept("("):
                return _Node("call", tok.text, self.args(")"), tok.pos)
            return _Node("ident", tok.text, [], tok.pos)
        if tok.kind == "op":
            if tok.text == ".":  # leading dot: root namespace
                name = self.take()
                if name.kind != "id":
                    raise CelError(f"expected a name at position {name.pos + 1}")
                if self.accept("("):
                    return _Node("call", name.text, self.args(")"), name.pos)
                return _Node("ident", name.text, [], name.pos)
            if tok.text == "(":
                node = self.expr()
                self.expect(")")
                return node
            if tok.text == "[":
                return _Node("list", "list", self.args("]"), tok.pos)
            if tok.text == "{":
                return _Node("map", "map", self.fields(), tok.pos)
        found = "end of expression" if tok.kind == "eof" else repr(tok.text)
        raise CelError(f"unexpected {found} at position {tok.pos + 1}")


# --------------------------------------------------------------------------- analysis


def _check_names(node: _Node, bound: frozenset[str]) -> None:
    if node.kind == "ident":
        if node.value not in bound and node.value not in ALLOWED_VARIABLES:
            allowed = ", ".join(sorted(ALLOWED_VARIABLES))
            raise CelError(
                f"unknown variable {node.value!r} at position {node.pos + 1} "
                f"(the variables are {allowed})"
            )
        return
    if node.kind == "mcall" and node.value in _MACROS and len(node.children) >= 3:
        target, var, *rest = node.children
        if var.kind != "ident":
            raise CelError(
                f"{node.value}() needs a variable name as its first argument "
                f"(position {node.pos + 1})"
            )
        _check_names(target, bound)
        for child in rest:
            _check_names(child, bound | {var.value})
        return
    for child in node.children:
        _check_names(child, bound)


def _kind(node: _Node) -> str:
    """The static result type: a CEL type name, or "dyn" when only evaluation can tell."""
    if node.kind == "lit":
        return node.value
    if node.kind == "list":
        return "list"
    if node.kind == "map":
        return "map" if node.value == "map" else "dyn"
    if node.kind == "unary":
        return "bool" if node.value == "!" else _kind(node.children[0])
    if node.kind == "binary":
        if node.value in ("&&", "||") or node.value in _RELATIONS:
            return "bool"
        left, right = (_kind(child) for child in node.children)
        for side in (left, right):
            if side not in ("dyn", "bool"):
                if {left, right} == {"timestamp"} and node.value == "-":
                    return "duration"
                return side
        return "arithmetic"  # +, -, *, /, % never yield a bool in CEL
    if node.kind == "cond":
        then, other = _kind(node.children[1]), _kind(node.children[2])
        if then == other:
            return then
        if "bool" in (then, other) or "dyn" in (then, other):
            return "dyn"
        return f"{then} or {other}"
    if node.kind in ("call", "mcall"):
        if node.value in _BOOL_FUNCTIONS:
            return "bool"
        return _TYPED_FUNCTIONS.get(node.value, "dyn")
    return "dyn"  # ident, select, index


# --------------------------------------------------------------------------- cost


_LEAF: Final = (0, 1)  # a scalar: no entries, weight 1


class _Shape(NamedTuple):
    """An upper bound of the size of a value, for the cost estimate, depth by depth.

    ``levels[0]`` is ``(size, weight)`` of the value itself, ``levels[d]`` the largest of
    the values nested ``d`` deep (elements, keys, fields); ``tail`` holds below the last
    level (a scalar, unless nothing is known). ``size``: entries of a list or map,
    characters of a string or bytes, 0 for a scalar; ``weight``: what copying it costs, one
    unit per value in it (itself and everything nested) and one per ``_TRAVERSAL``
    characters of its strings.
    """

    levels: tuple[tuple[int, int], ...] = ()
    tail: tuple[int, int] = _LEAF

    def level(self, depth: int) -> tuple[int, int]:
        return self.levels[depth] if depth < len(self.levels) else self.tail

    @property
    def size(self) -> int:
        return self.level(0)[0]

    @property
    def weight(self) -> int:
        return self.level(0)[1]

    def element(self) -> _Shape:
        """A bound of any value directly inside this one (an element, a key, a field)."""
        return _Shape(self.levels[1:], self.tail) if self.levels else self

    def join(self, other: _Shape) -> _Shape:
        """A bound of both."""
        depth = max(len(self.levels), len(other.levels))
        levels = tuple(_max2(self.level(d), other.level(d)) for d in range(depth))
        return _Shape(levels, _max2(self.tail, other.tail))

    def container(self, size: int, weight: int) -> _Shape:
        """A list or map of ``size`` entries bounded by this shape, weighing ``weight``."""
        return _Shape(((size, weight), *self.levels), self.tail)


def _max2(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return (max(a[0], b[0]), max(a[1], b[1]))


# Native work (comparing or scanning characters) costs one unit per _TRAVERSAL characters.
_TRAVERSAL: Final = 40
_SCALAR: Final = _Shape()
# At admission the input is unknown: every list or map from it, at any depth, counts as
# NOMINAL_SIZE entries of small values.
_NOMINAL: Final = _Shape(((NOMINAL_SIZE, 1 + 2 * NOMINAL_SIZE),), (NOMINAL_SIZE, 2))


def _string_shape(length: int) -> _Shape:
    return _Shape(((length, 1 + length // _TRAVERSAL),))


def _unknown(*shapes: _Shape) -> _Shape:
    """What a function we know nothing about may return: as big as all its arguments, at
    any depth."""
    total = sum(s.weight for s in shapes) + 1
    return _Shape((), (total * _TRAVERSAL, total))


# ``matches`` compiles its pattern on every call (the library keeps no cache); what a
# pattern costs is estimated from its syntax (_regex_shape); a pattern that is only known
# during evaluation is charged the worst case.
REGEX_MAX_COST: Final = 1_000_000
_REGEX_NOMINAL: Final = 2_000  # at admission: an input pattern of ordinary size
_DOMAIN_PATTERNS: Final = 1_000  # patterns from an input list examined one by one, at most
_GETTERS: Final = frozenset(n for n, t in _TYPED_FUNCTIONS.items() if n.startswith("get"))
_CONVERSIONS: Final = frozenset(
    {"int", "uint", "double", "bool", "type", "timestamp", "duration", "string", "bytes"}
)
_STRING_TESTS: Final = frozenset({"contains", "startsWith", "endsWith"})


def _chain(node: _Node, bound: frozenset[str]) -> tuple[str, ...] | None:
    """``("context", "a", "b")`` for ``context.a.b`` or ``context["a"].b``: a path into an
    input variable whose every step is a constant name; None for anything else."""
    if node.kind == "ident":
        return (node.value,) if node.value not in bound else None
    if node.kind == "select":
        base = _chain(node.children[0], bound)
        return None if base is None else (*base, node.value)
    if node.kind == "index":
        key = _literal_string(node.children[1])
        if key is None:
            return None
        base = _chain(node.children[0], bound)
        return None if base is None else (*base, key)
    return None


@functools.lru_cache(maxsize=4096)
def _unquote(text: str) -> str | None:
    """The value of a CEL string literal, as CEL reads it."""
    try:
        value = _cel.evaluate(text)
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException:
        return None
    return value if isinstance(value, str) else None


def _literal_string(node: _Node) -> str | None:
    if node.kind != "lit" or node.value != "string":
        return None
    return _unquote(node.text)


class _Paths:
    """The parts of the input an expression reads: a tree of constant paths.

    ``whole``: the value at this path is used as a value (iterated, compared, passed to a
    function, indexed with a computed key), so it is handed to CEL entire; ``presence``:
    it is only tested with ``has()``, so a placeholder will do; otherwise only the
    children listed are read.
    """

    __slots__ = ("children", "presence", "whole")

    def __init__(self) -> None:
        self.whole = False
        self.presence = False
        self.children: dict[str, _Paths] = {}

    def add(self, path: tuple[str, ...], *, presence: bool = False) -> None:
        node = self
        for part in path:
            node = node.children.setdefault(part, _Paths())
        if presence:
            node.presence = True
        else:
            node.whole = True


def _collect(node: _Node, bound: frozenset[str], paths: _Paths) -> None:
    chain = _chain(node, bound)
    if chain is not None:
        paths.add(chain)
        return
    if node.kind == "call" and node.value == "has" and len(node.children) == 1:
        arg = node.children[0]
        chain = _chain(arg, bound) if arg.kind == "select" else None
        if chain is not None:
            paths.add(chain, presence=True)
            return
    if node.kind == "mcall" and node.value in _MACROS and len(node.children) >= 3:
        target, var, *rest = node.children
        _collect(target, bound, paths)
        for child in rest:
            _collect(child, bound | {var.value}, paths)
        return
    for child in node.children:
        if child.kind != "lit":
            _collect(child, bound, paths)


def _annotate(node: _Node, bound: frozenset[str]) -> None:
    """Set ``chain`` on every node (which names are comprehension variables is static)."""
    node.chain = _chain(node, bound)
    if node.kind == "mcall" and node.value in _MACROS and len(node.children) >= 3:
        target, var, *rest = node.children
        _annotate(target, bound)
        for child in rest:
            _annotate(child, bound | {var.value})
        return
    for child in node.children:
        _annotate(child, bound)


@dataclass(frozen=True, slots=True)
class _Var:
    shape: _Shape
    domain: Sequence[Any] | None = None  # the actual items, when the range is an input


class _Estimate:
    """An upper bound of the cost of evaluating an expression (see the module docstring).

    ``chain_shape`` gives the shape of the input at a constant path and ``chain_value`` its
    value (both at evaluation; at admission every path has the nominal shape and no value).
    The library copies a list or map (deeply) each time an expression reads one, binds one
    to a comprehension variable or extends a ``map``/``filter`` result, so those copies are
    counted (measured: ``bench/bench_cel.py``).
    """

    def __init__(
        self,
        chain_shape: Callable[[tuple[str, ...]], _Shape],
        chain_value: Callable[[tuple[str, ...]], Any],
        regex_unknown: int,
    ) -> None:
        self.chain_shape = chain_shape
        self.chain_value = chain_value
        self.regex_unknown = regex_unknown

    def run(self, node: _Node, env: Mapping[str, _Var]) -> tuple[int, _Shape]:
        chain = node.chain
        if chain is not None:
            shape = self.chain_shape(chain)
            return len(chain) + shape.weight, shape
        kind = node.kind
        kids = node.children
        if kind == "lit":
            if node.value in ("string", "bytes"):
                text = _literal_string(node)
                return 1, _string_shape(len(node.text) if text is None else len(text))
            return 1, _SCALAR
        if kind == "ident":  # a comprehension variable
            var = env.get(node.value)
            shape = var.shape if var is not None else _SCALAR
            return 1 + shape.weight, shape
        if kind in ("list", "map"):
            results = [self.run(child, env) for child in kids]
            elements = _SCALAR
            for _, shape in results:
                elements = elements.join(shape)
            size = len(kids) if kind == "list" else len(kids) // 2
            weight = 1 + sum(s.weight for _, s in results)
            return weight + sum(c for c, _ in results), elements.container(size, weight)
        if kind in ("select", "index"):
            results = [self.run(child, env) for child in kids]
            shape = results[0][1].element()
            return 1 + shape.weight + sum(c for c, _ in results), shape
        if kind == "unary":
            cost, _ = self.run(kids[0], env)
            return 1 + cost, _SCALAR
        if kind == "cond":
            (c0, _), (c1, s1), (c2, s2) = (self.run(child, env) for child in kids)
            return 1 + c0 + max(c1, c2), s1.join(s2)
        if kind == "binary":
            return self._binary(node, env)
        if kind == "mcall" and node.value in _MACROS and len(kids) >= 3:
            return self._comprehension(node, env)
        if kind in ("call", "mcall"):
            return self._call(node, env)
        results = [self.run(child, env) for child in kids]
        shape = _unknown(*(s for _, s in results))
        return 1 + shape.weight + sum(c for c, _ in results), shape

    def _binary(self, node: _Node, env: Mapping[str, _Var]) -> tuple[int, _Shape]:
        (ca, sa), (cb, sb) = (self.run(child, env) for child in node.children)
        cost = 1 + ca + cb
        op = node.value
        if op in ("==", "!=", "<", "<=", ">", ">="):
            return cost + min(sa.weight, sb.weight), _SCALAR
        if op == "in":  # a list is scanned, comparing each element
            return cost + sb.size * (1 + min(sa.weight, sb.element().weight)), _SCALAR
        if op == "+":  # lists and strings are copied
            weight = sa.weight + sb.weight
            shape = sa.element().join(sb.element()).container(sa.size + sb.size, weight)
            return cost + weight, shape
        return cost, _SCALAR  # && || - * / %

    def _comprehension(self, node: _Node, env: Mapping[str, _Var]) -> tuple[int, _Shape]:
        target, var, *body = node.children
        ct, st = self.run(target, env)
        domain: Sequence[Any] | None = None
        chain = target.chain
        if chain is not None:
            value = self.chain_value(chain)
            if isinstance(value, Mapping):
                domain = list(value)
            elif isinstance(value, list | tuple):
                domain = value
        element = st.element()
        inner = {**env, var.value: _Var(element, domain)}
        results = [self.run(child, inner) for child in body]
        per_item = 1 + element.weight + sum(c for c, _ in results)
        cost = 1 + ct + st.size * per_item
        if node.value not in ("map", "filter"):
            return cost, _SCALAR
        # the result grows by copying: item i copies the i items before it
        out = results[-1][1] if node.value == "map" else element
        cost += st.size * (st.size + 1) // 2 * out.weight
        return cost, out.container(st.size, 1 + st.size * out.weight)

    def _call(self, node: _Node, env: Mapping[str, _Var]) -> tuple[int, _Shape]:
        name = node.value
        kids = node.children
        if name == "has" and len(kids) == 1 and kids[0].kind == "select":
            operand = kids[0].children[0]
            chain = operand.chain  # only tested, never read: no copy
            cost = len(chain) if chain is not None else self.run(operand, env)[0]
            return 1 + cost, _SCALAR
        results = [self.run(child, env) for child in kids]
        cost = 1 + sum(c for c, _ in results)
        shapes = [s for _, s in results]
        # method calls have their target first, as global calls have their first argument
        if name == "matches" and len(kids) == 2:
            return cost + self._matches(kids[1], env, shapes[0].size, shapes[1]), _SCALAR
        if name in _STRING_TESTS or name == "size":
            return cost + sum(s.size for s in shapes) // _TRAVERSAL, _SCALAR
        if name in _GETTERS:
            return cost, _SCALAR
        if name == "dyn" and len(shapes) == 1:
            return cost, shapes[0]
        if name in _CONVERSIONS:
            traversed = sum(s.weight + s.size // _TRAVERSAL for s in shapes)
            out = _SCALAR
            if name in ("string", "bytes"):
                out = _string_shape(max(32, sum(s.size for s in shapes)))
            return cost + traversed, out
        # anything else (none is available today): linear in its arguments, as big as them
        shape = _unknown(*shapes)
        return cost + shape.weight, shape

    def _matches(self, node: _Node, env: Mapping[str, _Var], text_size: int, shape: _Shape) -> int:
        """One ``matches`` call with pattern ``node`` (of ``shape``) on a text of
        ``text_size`` characters."""
        pattern = self._static_string(node, env)
        if pattern is not None:
            return _matches_cost(_regex_shape(pattern), text_size)
        if node.kind == "ident" and node.value in env:
            domain = env[node.value].domain
            if domain is not None and len(domain) <= _DOMAIN_PATTERNS:
                costs = [
                    _matches_cost(_regex_shape(p), text_size) for p in domain if isinstance(p, str)
                ]
                return max(costs, default=0)
        # unknown before evaluation: the worst compilation, and a search as for a pattern as
        # long as the string can be
        positions = max(1, shape.size) * _RE_UNICODE_POSITIONS
        return _matches_cost((self.regex_unknown, positions), text_size)

    def _static_string(self, node: _Node, env: Mapping[str, _Var]) -> str | None:
        """The string ``node`` evaluates to, when that is known before evaluation."""
        literal = _literal_string(node)
        if literal is not None:
            return literal
        chain = node.chain
        if chain is not None:
            value = self.chain_value(chain)
            return value if isinstance(value, str) else None
        if node.kind == "binary" and node.value == "+":
            left, right = (self._static_string(child, env) for child in node.children)
            if left is not None and right is not None:
                return left + right
        return None


# Costs of a regular expression, from measurements of the library's regex (Rust ``regex``;
# ~0.1 µs a unit). Compiling: unicode classes compile to large automata. Searching: linear
# in the text as long as the lazy DFA copes; on an adversarial text it falls back to an
# NFA simulation, 6 to 19 ns per character per NFA position measured (``[ab]*a[ab]{30}c``
# over 100,000 random a/b: 70 ms; ``(a|b)*a(a|b){60}c`` over a megabyte: 0.9 s); the bound
# assumes 20 ns.
_RE_BASE: Final = 300
_RE_CLASS_COST: Final = {
    "d": 700, "D": 1000, "w": 3500, "W": 3500, "s": 500, "S": 500, "p": 3500, "P": 3500,
}  # fmt: skip
_RE_ASCII_CLASS: Final = 200
_RE_UNICODE_POSITIONS: Final = 8  # byte-level NFA states of one unicode class, roughly
_RE_SEARCH_DIVISOR: Final = 5  # units per character per position: 1/5 (20 ns)
_RE_REPEAT_RE: Final = re.compile(r"\{(\d*)(?:(,)(\d*))?\}")
_RE_LONGEST: Final = 20_000  # a longer pattern is charged the most, without a closer look


def _count(digits: str) -> int:
    """A repetition count (the regex library refuses more than 1000 anyway)."""
    return int(digits) if 0 < len(digits) <= 7 else (10**7 if digits else 0)


def _regex_cost(pattern: str) -> int:
    """An upper bound of the units ``matches`` spends compiling ``pattern``."""
    return _regex_shape(pattern)[0]


def _matches_cost(pattern_cost: tuple[int, int], text_size: int) -> int:
    """One call of ``matches``: compiling the pattern, then searching ``text_size`` chars."""
    compile_cost, positions = pattern_cost
    return compile_cost + text_size * positions // _RE_SEARCH_DIVISOR + text_size // _TRAVERSAL


@functools.lru_cache(maxsize=4096)
def _regex_shape(pattern: str) -> tuple[int, int]:
    """(compile cost, NFA positions) of ``pattern``: upper bounds, from its syntax."""
    if len(pattern) > _RE_LONGEST:
        return REGEX_MAX_COST, len(pattern) * _RE_UNICODE_POSITIONS
    ascii_only = pattern.startswith("(?-u)")
    pos = 0
    # per open group: [cost so far, positions so far, last atom's cost, last atom's positions]
    stack: list[list[int]] = [[0, 0, 0, 0]]
    alternatives: list[list[tuple[int, int]]] = [[]]
    fold = 1
    n = len(pattern)
    while pos < n:
        ch = pattern[pos]
        top = stack[-1]
        width = 1  # NFA positions of the atom
        if ch == "\\" and pos + 1 < n:
            esc = pattern[pos + 1]
            pos += 2
            if esc in _RE_CLASS_COST:
                if esc in "pP" and pos < n and pattern[pos] == "{":
                    end = pattern.find("}", pos)
                    pos = n if end < 0 else end + 1
                elif esc in "pP":
                    pos += 1
                atom = _RE_ASCII_CLASS if ascii_only else _RE_CLASS_COST[esc]
                width = 1 if ascii_only else _RE_UNICODE_POSITIONS
            else:
                atom = 2
        elif ch == "[":
            end = pos + 1
            if end < n and pattern[end] == "^":
                end += 1
            if end < n and pattern[end] == "]":
                end += 1
            depth = 1
            while end < n and depth:
                if pattern[end] == "\\":
                    end += 2
                    continue
                if pattern[end] == "[":
                    depth += 1
                elif pattern[end] == "]":
                    depth -= 1
                end += 1
            body = pattern[pos + 1 : end - 1]
            atom = 40 + 4 * len(body)
            unicode = False
            if body.startswith("^") and not ascii_only:
                atom += 400
                unicode = True
            for esc in re.findall(r"\\([dDwWsSpP])", body):
                atom += _RE_ASCII_CLASS if ascii_only else _RE_CLASS_COST[esc]
                unicode = unicode or not ascii_only
            if "[:" in body:
                atom += 500
            width = _RE_UNICODE_POSITIONS if unicode else 1
            pos = end
        elif ch == ".":
            atom = 20 if ascii_only else 400
            width = 1 if ascii_only else _RE_UNICODE_POSITIONS
            pos += 1
        elif ch == "(":
            pos += 1
            if pattern.startswith("?", pos):  # flags or a named group
                close = pattern.find(")", pos)
                colon = pattern.find(":", pos)
                if "i" in pattern[pos : (close if close >= 0 else n)]:
                    fold = 3
                if close >= 0 and (colon < 0 or close < colon):  # (?flags) alone
                    pos = close + 1
                    continue
                pos = colon + 1 if colon >= 0 else n
            stack.append([0, 0, 0, 0])
            alternatives.append([])
            continue
        elif ch == ")":
            pos += 1
            if len(stack) == 1:
                continue
            seq = stack.pop()
            alts = alternatives.pop()
            atom = sum(c for c, _ in alts) + seq[0] + 10
            width = sum(p for _, p in alts) + seq[1] + 1
            top = stack[-1]
        elif ch == "|":
            pos += 1
            alternatives[-1].append((top[0], top[1]))
            top[0] = top[1] = top[2] = top[3] = 0
            continue
        elif ch in "*+?":
            pos += 1
            top[0] += top[2] + 15  # a loop around the last atom
            top[1] += top[3] + 1
            continue
        elif ch == "{" and (m := _RE_REPEAT_RE.match(pattern, pos)) is not None:
            low = _count(m.group(1))
            high = _count(m.group(3)) if m.group(3) else (low + 1 if m.group(2) else low)
            times = max(low, high, 1)
            top[0] += top[2] * (times - 1) + 15
            top[1] += top[3] * (times - 1) + 1
            top[2] *= times
            top[3] *= times
            pos = m.end()
            if top[0] > REGEX_MAX_COST:
                return REGEX_MAX_COST, max(top[1], 1)
            continue
        elif ch in "^$":  # anchors: no position to track
            atom = 2
            width = 0
            pos += 1
        else:
            atom = 2 * fold
            pos += 1
        top[0] += atom
        top[1] += width * fold
        top[2] = atom
        top[3] = width * fold
        if top[0] > REGEX_MAX_COST:
            return REGEX_MAX_COST, max(top[1], 1)
    while len(stack) > 1:  # unbalanced: the library refuses it, but count it anyway
        seq = stack.pop()
        alts = alternatives.pop()
        stack[-1][0] += seq[0] + sum(c for c, _ in alts)
        stack[-1][1] += seq[1] + sum(p for _, p in alts)
    cost = stack[0][0] + sum(c for c, _ in alternatives[0])
    positions = stack[0][1] + sum(p for _, p in alternatives[0]) + 2
    total = _RE_BASE + cost * (2 if fold > 1 else 1)
    return min(total, REGEX_MAX_COST), positions


# --------------------------------------------------------------------------- values


def _cel_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes):
        return "bytes"
    if isinstance(value, dt.datetime):
        return "timestamp"
    if isinstance(value, dt.timedelta):
        return "duration"
    if isinstance(value, Mapping):
        return "map"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def _where(path: Any) -> str:
    """``context.a[2]`` from the linked path ``((("context",), "a"), 2)``."""
    parts: list[str] = []
    while isinstance(path, tuple) and len(path) == 2:
        path, key = path
        parts.append(f"[{key}]" if isinstance(key, int) else f".{key}")
    parts.append(str(path[0]) if isinstance(path, tuple) and path else str(path))
    return "".join(reversed(parts))


class _TooBig(Exception):
    """The conversion of the input alone would exceed the limit (raised before doing it)."""

    def __init__(self, where: str, values: int) -> None:
        super().__init__(where)
        self.where = where
        self.values = values  # at least this many values


def _convert(
    value: Any, path: Any, budget: list[int] | None = None
) -> tuple[Any, tuple[tuple[int, int], ...], int, int]:
    """``value`` as handed to CEL, the levels of its ``_Shape``, and the number of strings
    and of their characters in it (keys included). ``path`` names it in errors.

    ``budget`` (one mutable number) is what converting may still cost: each list or map
    takes its entries from it before it is walked, and ``_TooBig`` is raised once it is
    spent, so a huge input is refused without walking it. Plain tuples, not ``_Shape``s:
    this runs once per value of the input."""
    if value is None or isinstance(value, bool | int | float | dt.timedelta):
        return value, (), 0, 0
    if isinstance(value, str | bytes):
        return value, ((len(value), 1 + len(value) // _TRAVERSAL),), 1, len(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC), (), 0, 0
        return value.astimezone(dt.UTC), (), 0, 0  # CEL accessors without a zone mean UTC
    below: list[list[int]] = []  # the largest [size, weight] at each depth below this one
    weight = 1
    strings = 0
    chars = 0
    if isinstance(value, Mapping):
        if budget is not None:
            budget[0] -= _CONVERSION * len(value)
            if budget[0] < 0:
                raise _TooBig(_where(path), len(value))
        out: dict[Any, Any] = {}
        for key, entry in value.items():
            if isinstance(key, str):
                strings += 1
                chars += len(key)
                key_weight = 1 + len(key) // _TRAVERSAL
                weight += key_weight
                _merge(below, ((len(key), key_weight),))
            elif isinstance(key, int):  # bool is an int
                weight += 1
            else:
                raise CelError(f"{_where(path)} has a key of type {type(key).__name__}")
            out[key], levels, n, c = _convert(entry, (path, key), budget)
            strings += n
            chars += c
            if levels:
                weight += levels[0][1]
                _merge(below, levels)
            else:
                weight += 1
        return out, _levels(len(out), weight, below), strings, chars
    if isinstance(value, list | tuple):
        if budget is not None:
            budget[0] -= _CONVERSION * len(value)
            if budget[0] < 0:
                raise _TooBig(_where(path), len(value))
        items: list[Any] = []
        append = items.append
        for i, entry in enumerate(value):
            converted, levels, n, c = _convert(entry, (path, i), budget)
            append(converted)
            if levels:
                strings += n
                chars += c
                weight += levels[0][1]
                if len(levels) == 1 and below:  # a string or a flat list: the usual case
                    here = below[0]
                    size, wt = levels[0]
                    if size > here[0]:
                        here[0] = size
                    if wt > here[1]:
                        here[1] = wt
                else:
                    _merge(below, levels)
            else:
                weight += 1
        return items, _levels(len(items), weight, below), strings, chars
    raise CelError(f"{_where(path)} is a {type(value).__name__}, which CEL cannot represent")


def _merge(below: list[list[int]], levels: tuple[tuple[int, int], ...]) -> None:
    for depth, (size, wt) in enumerate(levels):
        if depth == len(below):
            below.append([size, wt])
        else:
            here = below[depth]
            if size > here[0]:
                here[0] = size
            if wt > here[1]:
                here[1] = wt


def _levels(size: int, weight: int, below: list[list[int]]) -> tuple[tuple[int, int], ...]:
    return ((size, weight), *((s, w) for s, w in below))


class _Input:
    """The part of an activation an expression reads, converted for CEL, with its shapes."""

    def __init__(
        self, activation: Mapping[str, Any], paths: _Paths, budget: int | None = None
    ) -> None:
        self.activation = activation
        self.shapes: dict[tuple[str, ...], _Shape] = {}
        self.weight = 0  # of what is handed to CEL
        self.strings = 0
        self.chars = 0
        self.budget = budget  # stop converting once the conversion alone is over it
        self.too_big: _TooBig | None = None
        try:
            self.variables = self._select(activation, paths, ())
        except RecursionError:
            raise CelError("the input is nested too deeply") from None

    @property
    def conversion_cost(self) -> int:
        """Handing the input to CEL: per value, more per string (the library converts a
        string far slower than a number), and little per character (a copy)."""
        values = self.weight - self.chars // _TRAVERSAL
        return (
            _CONVERSION * values
            + _CONVERSION_STRING * self.strings
            + self.chars // (_CONVERSION * _TRAVERSAL)
        )

    def _select(self, value: Any, paths: _Paths, at: tuple[str, ...]) -> Any:
        if not paths.whole and isinstance(value, Mapping) and paths.children:
            out: dict[str, Any] = {}
            for key, sub in paths.children.items():
                if key in value:
                    out[key] = self._select(value[key], sub, (*at, key))
            self.weight += 1 + len(out)
            self.strings += len(out)
            return out
        if not paths.whole and not paths.children:
            self.weight += 1
            return None  # only tested with has(): its presence is what matters
        if self.budget is not None:
            remaining = [self.budget - self.conversion_cost]
            if self.too_big is not None or remaining[0] < 0:
                return None  # already over: the expression will not run
            try:
                converted, levels, strings, chars = _convert(value, at, remaining)
            except _TooBig:
                spent = self.budget - self.conversion_cost - remaining[0]
                self.too_big = _TooBig(".".join(at), spent // _CONVERSION)
                return None
        else:
            converted, levels, strings, chars = _convert(value, at)
        shape = _Shape(levels)
        self.shapes[at] = shape
        self.weight += shape.weight
        self.strings += strings
        self.chars += chars
        return converted

    def value(self, chain: tuple[str, ...]) -> Any:
        value: Any = self.activation
        for part in chain:
            if not isinstance(value, Mapping) or part not in value:
                return None
            value = value[part]
        return value

    def shape(self, chain: tuple[str, ...]) -> _Shape:
        shape = self.shapes.get(chain)
        if shape is None:  # a path below one read whole (or absent: an evaluation error)
            value = self.value(chain)
            shape = _SCALAR if value is None else _Shape(_convert(value, chain)[1])
            self.shapes[chain] = shape
        return shape

    def largest(self) -> str:
        """The biggest inputs read, for messages: ``context.xs (3000 entries)``."""
        if self.too_big is not None:
            return f"{self.too_big.where} (more than {self.too_big.values} values)"
        sized = sorted(
            ((s.weight, ".".join(c), s) for c, s in self.shapes.items() if s.size), reverse=True
        )
        out: list[str] = []
        for _, name, shape in sized[:3]:
            nested = max((size for size, _ in shape.levels[1:]), default=0)
            more = f"; nested, up to {nested}" if nested > shape.size else ""
            out.append(f"{name} ({shape.size} entries{more})")
        return ", ".join(out)


def _quote(source: str, limit: int = 120) -> str:
    """The expression as quoted in messages, shortened when long."""
    if len(source) > limit:
        source = source[: limit - 3] + "..."
    return repr(source)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        key = exc.args[0] if exc.args else "?"
        return f"no such key {key!r} (guard optional keys with has())"
    if isinstance(exc, ZeroDivisionError):
        return "division by zero"
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# --------------------------------------------------------------------------- API


@dataclass(frozen=True)
class EvaluationLimit:
    """The per-evaluation limit: an expression whose cost bound, computed on the input of
    this evaluation, exceeds ``max_cost`` is not evaluated (``CelError``)."""

    max_cost: int = MAX_EVALUATION_COST

    def __post_init__(self) -> None:
        if self.max_cost < 1:
            raise ValueError("max_cost must be at least 1")


DEFAULT_LIMIT: Final = EvaluationLimit()


class CompiledExpression:
    """A compiled, checked expression; evaluate it as often as needed."""

    __slots__ = ("_paths", "_program", "_tree", "cost", "result_type", "source")

    def __init__(
        self,
        source: str,
        program: _cel.Program,
        cost: int,
        result_type: str,
        tree: _Node,
        paths: _Paths,
    ) -> None:
        self.source = source
        self.cost = cost  # the estimate at admission (nominal input)
        self.result_type = result_type
        self._program = program
        _annotate(tree, frozenset())  # idempotent; the estimate depends on it
        self._tree = tree
        self._paths = paths

    def __repr__(self) -> str:
        return f"CompiledExpression({_quote(self.source)}, cost={self.cost})"

    def cost_bound(self, activation: Mapping[str, Any]) -> int:
        """The cost bound of evaluating against ``activation`` (what the limit compares)."""
        return self._prepare(activation, None)[1]

    def _prepare(self, activation: Mapping[str, Any], budget: int | None) -> tuple[_Input, int]:
        """The input to hand to CEL and the cost bound; with a ``budget``, the conversion
        stops as soon as it alone is over it (then the bound is only a lower one)."""
        data = _Input(activation, self._paths, budget)
        if budget is not None and (data.too_big is not None or data.conversion_cost > budget):
            too_big = data.too_big.values * _CONVERSION if data.too_big is not None else 0
            return data, max(data.conversion_cost, too_big, budget + 1)
        try:
            steps, result = _Estimate(data.shape, data.value, REGEX_MAX_COST).run(self._tree, {})
        except RecursionError:  # fail closed: an expression we cannot bound is not run
            raise CelError(
                f"expression {_quote(self.source)} was not evaluated: its cost could not be "
                "bounded",
                self.source,
            ) from None
        return data, steps + data.conversion_cost + result.weight

    def evaluate(
        self, activation: Mapping[str, Any], limit: EvaluationLimit = DEFAULT_LIMIT
    ) -> bool:
        """Evaluate against ``activation`` (variable name -> Python value).

        Only the parts of the activation the expression reads are handed to CEL. Raises
        ``CelError`` on any evaluation error, a result that is not a boolean, or a cost bound
        over ``limit`` (then the expression is not run at all).
        """
        data, cost = self._prepare(activation, limit.max_cost)
        if cost > limit.max_cost:
            reads = data.largest()
            partial = data.too_big is not None or data.conversion_cost > limit.max_cost
            raise CelError(
                f"expression {_quote(self.source)} was not evaluated: with this input its "
                f"cost could reach {'more than ' if partial else ''}{cost}, over the "
                f"per-evaluation limit of {limit.max_cost}"
                + (f" (it reads {reads})" if reads else ""),
                self.source,
            )
        try:
            result = self._program.execute(data.variables)
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as exc:  # the Rust layer's panics derive from BaseException
            raise CelError(
                f"expression {_quote(self.source)} failed: {_describe(exc)}", self.source
            ) from exc
        if not isinstance(result, bool):
            raise CelError(
                f"expression {_quote(self.source)} returned {_cel_type_name(result)} "
                f"{repr(result)[:80]}, not a boolean",
                self.source,
            )
        return result


@functools.lru_cache(maxsize=1024)
def compile_expression(source: str) -> CompiledExpression:
    """Compile and check ``source``; cached by source text.

    Raises ``CelError`` for a syntax error, an unknown variable, a result that is known not to
    be a boolean, or an expression over the length, nesting or admission cost limit.
    """
    if not isinstance(source, str) or not source.strip():
        raise CelError("the expression is empty", source if isinstance(source, str) else None)
    if len(source) > MAX_EXPRESSION_LENGTH:
        raise CelError(
            f"the expression is {len(source)} characters long; "
            f"at most {MAX_EXPRESSION_LENGTH} are allowed",
            source,
        )
    try:
        tree = _Parser(source).parse()
    except CelError as exc:
        raise CelError(f"syntax error in {_quote(source)}: {exc.message}", source) from None
    try:
        program = _cel.compile(source)
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:
        detail = " ".join(str(exc).split())
        raise CelError(f"syntax error in {_quote(source)}: {detail}", source) from exc
    try:
        _check_names(tree, frozenset())
    except CelError as exc:
        raise CelError(f"{exc.message} in {_quote(source)}", source) from None
    kind = _kind(tree)
    if kind not in ("bool", "dyn"):
        raise CelError(f"expression {_quote(source)} returns {kind}, not a boolean", source)
    _annotate(tree, frozenset())
    cost, _ = _Estimate(lambda _chain: _NOMINAL, lambda _chain: None, _REGEX_NOMINAL).run(tree, {})
    if cost > MAX_COST:
        raise CelError(
            f"expression {_quote(source)} is too expensive: estimated cost {cost} exceeds "
            f"the limit {MAX_COST} (each list or map from the input counts as "
            f"{NOMINAL_SIZE} entries; avoid nested comprehensions over large lists)",
            source,
        )
    paths = _Paths()
    _collect(tree, frozenset(), paths)
    return CompiledExpression(source, program, cost, kind, tree, paths)


def check_expression(source: str) -> str | None:
    """Return a message saying why ``source`` is not a valid expression, or None when it is."""
    try:
        compile_expression(source)
    except CelError as exc:
        return exc.message
    return None


def check_expressions(sources: Sequence[tuple[str, str]]) -> list[str]:
    """Check several ``(field_path, source)`` pairs; return ``"<path>: <message>"`` per error."""
    errors: list[str] = []
    for path, source in sources:
        message = check_expression(source)
        if message is not None:
            errors.append(f"{path}: {message}")
    return errors
