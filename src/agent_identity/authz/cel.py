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
No Python CEL library offers a cost or time limit, and native evaluation cannot be
interrupted from Python, so the limit is static and enforced before evaluation:

* ``MAX_EXPRESSION_LENGTH`` characters of source, ``MAX_NESTING`` levels of nesting;
* a static cost estimate, at most ``MAX_COST``: every node costs 1, a comprehension
  (``all``, ``exists``, ``exists_one``, ``map``, ``filter``) costs its range's size times
  its body, ``in`` and list ``+`` cost the size of the list. A list or map literal has its
  own size; any other list or map (from the input) counts as ``MAX_COLLECTION_SIZE``;
* at evaluation, every list and map in the input has at most ``MAX_COLLECTION_SIZE``
  entries (otherwise ``CelError``), which makes the estimate an upper bound.

So ``[0, ..., 99].all(x, [0, ..., 99].all(y, [0, ..., 99].all(z, ...)))`` is refused at
compile time, and any admitted expression evaluates in at most about ``MAX_COST`` steps
(well under 0.2 s on one slow core).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import cel as _cel

__all__ = [
    "ALLOWED_VARIABLES",
    "MAX_COLLECTION_SIZE",
    "MAX_COST",
    "MAX_EXPRESSION_LENGTH",
    "MAX_NESTING",
    "CelError",
    "CompiledExpression",
    "check_expression",
    "check_expressions",
    "compile_expression",
]

ALLOWED_VARIABLES: Final = frozenset({"subject", "action", "resource", "context", "request"})
MAX_EXPRESSION_LENGTH: Final = 4096
MAX_NESTING: Final = 32
MAX_COST: Final = 1_000_000
MAX_COLLECTION_SIZE: Final = 256

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
            return _Node("lit", tok.literal, [], tok.pos)
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


def _size(node: _Node) -> int:
    """Upper bound of the number of entries of a list or map this node can produce."""
    if node.kind == "list":
        return len(node.children)
    if node.kind == "map":
        return len(node.children) // 2
    if node.kind == "mcall" and node.value in ("map", "filter") and node.children:
        return _size(node.children[0])
    if node.kind == "binary" and node.value == "+":
        return _size(node.children[0]) + _size(node.children[1])
    if node.kind == "cond":
        return max(_size(node.children[1]), _size(node.children[2]))
    return MAX_COLLECTION_SIZE


def _cost(node: _Node) -> int:
    """Static estimate of evaluation steps (see the module docstring)."""
    if node.kind == "mcall" and node.value in _MACROS and len(node.children) >= 3:
        target, _var, *body = node.children
        per_item = 1 + sum(_cost(child) for child in body)
        return 1 + _cost(target) + _size(target) * per_item
    own = 1
    if node.kind == "binary" and node.value == "in":
        own += _size(node.children[1])
    elif node.kind == "binary" and node.value == "+":
        left, right = node.children
        if "list" in (_kind(left), _kind(right)):
            own += _size(left) + _size(right)
    return own + sum(_cost(child) for child in node.children)


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


def _to_cel(value: Any, path: str) -> Any:
    if value is None or isinstance(value, bool | int | float | str | bytes | dt.timedelta):
        return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)  # CEL accessors without a zone mean UTC
    if isinstance(value, Mapping):
        if len(value) > MAX_COLLECTION_SIZE:
            raise CelError(
                f"{path} has {len(value)} entries; at most {MAX_COLLECTION_SIZE} are allowed"
            )
        out: dict[Any, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str | int | bool):
                raise CelError(f"{path} has a key of type {type(key).__name__}")
            out[key] = _to_cel(item, f"{path}.{key}")
        return out
    if isinstance(value, list | tuple):
        if len(value) > MAX_COLLECTION_SIZE:
            raise CelError(
                f"{path} has {len(value)} entries; at most {MAX_COLLECTION_SIZE} are allowed"
            )
        return [_to_cel(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise CelError(f"{path} is a {type(value).__name__}, which CEL cannot represent")


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


class CompiledExpression:
    """A compiled, checked expression; evaluate it as often as needed."""

    __slots__ = ("_program", "cost", "result_type", "source")

    def __init__(self, source: str, program: _cel.Program, cost: int, result_type: str) -> None:
        self.source = source
        self.cost = cost
        self.result_type = result_type
        self._program = program

    def __repr__(self) -> str:
        return f"CompiledExpression({_quote(self.source)}, cost={self.cost})"

    def evaluate(self, activation: Mapping[str, Any]) -> bool:
        """Evaluate against ``activation`` (variable name -> Python value).

        Raises ``CelError`` on any evaluation error or a result that is not a boolean.
        """
        variables = {name: _to_cel(value, name) for name, value in activation.items()}
        try:
            result = self._program.execute(variables)
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
    be a boolean, or an expression over the length, nesting or cost limit.
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
    cost = _cost(tree)
    if cost > MAX_COST:
        raise CelError(
            f"expression {_quote(source)} is too expensive: estimated cost {cost} exceeds "
            f"the limit {MAX_COST} (each list or map from the input counts as "
            f"{MAX_COLLECTION_SIZE} entries; avoid nested comprehensions over large lists)",
            source,
        )
    return CompiledExpression(source, program, cost, kind)


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
