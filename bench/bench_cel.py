"""Compare the CEL libraries on PyPI on the expressions the operator documents.

Run with ``.venv/bin/python bench/bench_cel.py`` (bounded: well under a minute).

It prints four tables:

1. correctness: library x feature -> ok / wrong (what came back) / error (what was raised);
2. evaluation time: µs per evaluation, p50 and p99, and the ratio to the fastest library,
   for typical 2-3 clause expressions compiled once and evaluated with fresh Python data
   (the conversion of the activation is part of every evaluation, as it is in the engine);
3. a pathological nested comprehension: how long one evaluation takes when nothing stops it;
4. the per-evaluation limit of ``agent_identity.authz.cel`` (the library we ship has no
   limit of its own, and holds the GIL while it evaluates: measured here too): for a set of
   expressions and inputs, the cost bound computed before evaluation beside the measured
   time, in µs per unit of cost (the model assumes at most about 0.1), and how long it
   takes to refuse an expression over the limit.

A library that cannot be imported is reported as "not installed".
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

UTC = dt.UTC
VARIABLES = ("subject", "action", "resource", "context", "request")


class _Raises:
    def __init__(self, phase: str) -> None:
        self.phase = phase

    def __repr__(self) -> str:
        return f"<raises at {self.phase}>"


COMPILE_ERROR = _Raises("compile")
EVAL_ERROR = _Raises("eval")  # an error at compile time is accepted as well (earlier is better)


def base_activation(amount: Any = 1500) -> dict[str, Any]:
    return {
        "subject": {
            "name": "release-bot",
            "namespace": "payments",
            "owner": "team-payments",
            "platform": "kubernetes",
            "phase": "Active",
            "labels": {"tier": "prod"},
            "annotations": {},
        },
        "action": {
            "name": "payments.refund",
            "properties": {"amount": amount, "currency": "EUR"},
        },
        "resource": {
            "type": "deployment",
            "id": "payments/api",
            "properties": {"env": "production", "tags": ["a", "bb", "pci"]},
        },
        "context": {
            "change_window": True,
            "approvers": ["alice", "bob"],
            "ticket": "CHG-1234",
            "nothing": None,
        },
        "request": {
            "time": dt.datetime(2026, 3, 4, 15, 30, tzinfo=UTC),
            "caller": "system:serviceaccount:payments:gateway",
        },
    }


@dataclass(frozen=True)
class Case:
    name: str
    source: str
    expected: Any
    activation: Mapping[str, Any]


A = base_activation()
CASES: list[Case] = [
    Case("has() present", "has(resource.properties.env)", True, A),
    Case("has() absent", "has(resource.properties.region)", False, A),
    Case(
        "has() guard",
        '!has(resource.properties.region) || resource.properties.region == "eu"',
        True,
        A,
    ),
    Case("all() on list", "resource.properties.tags.all(t, size(t) <= 3)", True, A),
    Case("all() on map keys", 'subject.labels.all(k, k.startsWith("t"))', True, A),
    Case("exists()", 'context.approvers.exists(a, a == "bob")', True, A),
    Case("exists_one()", 'resource.properties.tags.exists_one(t, t.startsWith("p"))', True, A),
    Case("in list", '"pci" in resource.properties.tags', True, A),
    Case("in map", '"tier" in subject.labels', True, A),
    Case(
        "startsWith/endsWith/contains",
        'action.name.startsWith("payments.") && action.name.endsWith("refund")'
        ' && context.ticket.contains("-")',
        True,
        A,
    ),
    Case("matches()", 'context.ticket.matches("^CHG-[0-9]+$")', True, A),
    Case(
        "size() str/list/map",
        "size(context.ticket) == 8 && size(context.approvers) == 2 && subject.labels.size() == 1",
        True,
        A,
    ),
    Case(
        "index list/map",
        'context.approvers[0] == "alice" && subject.labels["tier"] == "prod"',
        True,
        A,
    ),
    Case(
        "string concat", 'subject.namespace + "/" + subject.name == "payments/release-bot"', True, A
    ),
    Case("null", "context.nothing == null", True, A),
    Case(
        "ternary", 'resource.properties.env == "production" ? context.change_window : true', True, A
    ),
    Case("timestamp compare", 'request.time > timestamp("2026-01-01T00:00:00Z")', True, A),
    Case("getHours() UTC", "request.time.getHours() == 15", True, A),
    Case("getHours(tz)", 'request.time.getHours("Europe/Paris") == 16', True, A),
    Case("getDayOfWeek()", "request.time.getDayOfWeek() == 3", True, A),
    Case(
        "timestamp - timestamp",
        'request.time - timestamp("2026-03-04T12:00:00Z") > duration("3h")',
        True,
        A,
    ),
    Case(
        "timestamp + duration",
        'timestamp("2026-03-04T12:00:00Z") + duration("4h") > request.time',
        True,
        A,
    ),
    Case("int > int (JSON int)", "action.properties.amount > 1000", True, A),
    Case(
        "double > int (JSON float)",
        "action.properties.amount > 1000",
        True,
        base_activation(1000.5),
    ),
    Case("int == double", "action.properties.amount == 1500.0", True, A),
    Case("error absorbed by ||", 'resource.properties.region == "eu" || true', True, A),
    Case("missing key -> error", 'resource.properties.region == "eu"', EVAL_ERROR, A),
    Case("string > int -> error", "action.properties.currency > 1", EVAL_ERROR, A),
    Case("division by zero -> error", "action.properties.amount / 0 > 1", EVAL_ERROR, A),
    Case("non-bool result seen", "action.properties.amount + 1", 1501, A),
    Case("syntax error at compile", "resource.properties.env ==", COMPILE_ERROR, A),
    Case("undeclared var at compile", 'foo == "bar"', COMPILE_ERROR, A),
]

TIMED = [
    ("2 clauses", 'resource.properties.env != "production" || context.change_window == true'),
    (
        "3 clauses",
        "has(action.properties.amount) && action.properties.amount > 1000"
        ' && action.name.startsWith("payments.")',
    ),
    ("macro+time", 'context.approvers.exists(a, a == "bob") && request.time.getHours() >= 8'),
]


def pathological(n: int) -> str:
    items = ", ".join(str(i) for i in range(n))
    return f"[{items}].all(x, [{items}].all(y, [{items}].all(z, x + y + z >= 0)))"


# --------------------------------------------------------------------------- adapters


class Adapter:
    label = "?"
    package = "?"

    def compile(self, source: str) -> Any:
        raise NotImplementedError

    def evaluate(self, program: Any, activation: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    def static_type(self, program: Any) -> str | None:
        """The result type known at compile time, when the library has a checker."""
        return None


class RustCel(Adapter):
    label = "common-expression-language"
    package = "cel"

    def __init__(self) -> None:
        import cel

        self.cel = cel

    def compile(self, source: str) -> Any:
        return self.cel.compile(source)

    def evaluate(self, program: Any, activation: Mapping[str, Any]) -> Any:
        return program.execute(dict(activation))


class CelPy(Adapter):
    label = "cel-python"
    package = "celpy"

    def __init__(self) -> None:
        import celpy
        from celpy import celtypes

        self.celpy = celpy
        self.t = celtypes
        self.env = celpy.Environment()

    def _conv(self, value: Any) -> Any:
        t = self.t
        if isinstance(value, bool):
            return t.BoolType(value)
        if isinstance(value, int):
            return t.IntType(value)
        if isinstance(value, float):
            return t.DoubleType(value)
        if isinstance(value, str):
            return t.StringType(value)
        if isinstance(value, dt.datetime):
            return t.TimestampType(value)
        if isinstance(value, Mapping):
            return t.MapType({t.StringType(k): self._conv(v) for k, v in value.items()})
        if isinstance(value, list | tuple):
            return t.ListType([self._conv(v) for v in value])
        return value

    def compile(self, source: str) -> Any:
        return self.env.program(self.env.compile(source))

    def evaluate(self, program: Any, activation: Mapping[str, Any]) -> Any:
        result = program.evaluate({k: self._conv(v) for k, v in activation.items()})
        if isinstance(result, Exception):  # celpy may return its error objects
            raise result
        if isinstance(result, self.t.BoolType):
            return bool(result)
        if isinstance(result, self.t.IntType):
            return int(result)
        return result


class CelExpr(Adapter):
    label = "cel-expr-python"
    package = "cel_expr_python"

    def __init__(self) -> None:
        from cel_expr_python import cel as cx

        self.cx = cx
        self.env = cx.NewEnv(variables={name: cx.Type.DYN for name in VARIABLES})

    def compile(self, source: str) -> Any:
        return self.env.compile(source)

    def evaluate(self, program: Any, activation: Mapping[str, Any]) -> Any:
        value = program.eval(data=dict(activation))
        if value.type().name() == "ERROR":  # errors come back as values, not exceptions
            raise RuntimeError(str(value.value()))
        return value.value()

    def static_type(self, program: Any) -> str | None:
        return str(program.return_type().name())


def load_adapters() -> list[tuple[str, Adapter | None, str]]:
    out: list[tuple[str, Adapter | None, str]] = []
    for cls in (RustCel, CelPy, CelExpr):
        try:
            out.append((cls.label, cls(), _version(cls.label)))
        except ImportError as exc:
            out.append((cls.label, None, f"not installed ({exc.name})"))
    return out


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


# --------------------------------------------------------------------------- checks


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:60]}"


def run_case(adapter: Adapter, case: Case) -> str:
    try:
        program = adapter.compile(case.source)
    except BaseException as exc:  # pyo3 panics derive from BaseException
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        if case.expected is COMPILE_ERROR or case.expected is EVAL_ERROR:
            return "ok (compile error)"
        return f"error ({_short(exc)})"
    if case.expected is COMPILE_ERROR:
        try:
            adapter.evaluate(program, case.activation)
        except Exception as exc:
            return f"wrong (compiled; eval error {type(exc).__name__})"
        return "wrong (compiled and ran)"
    try:
        result = adapter.evaluate(program, case.activation)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        if case.expected is EVAL_ERROR:
            return "ok (raised)"
        return f"error ({_short(exc)})"
    if case.expected is EVAL_ERROR:
        return f"wrong (returned {result!r})"
    if type(result) is type(case.expected) and result == case.expected:
        return "ok"
    return f"wrong (returned {result!r})"


def compile_time_non_bool(adapter: Adapter) -> str:
    try:
        program = adapter.compile("action.properties.amount + 1")
    except Exception as exc:
        return f"error ({_short(exc)})"
    kind = adapter.static_type(program)
    if kind is None:
        return "no (no type checker)"
    return f"partly (1+1 -> {adapter.static_type(adapter.compile('1 + 1'))}, dyn+1 -> {kind})"


def time_expression(adapter: Adapter, source: str, budget_s: float = 0.6) -> list[float] | str:
    activation = base_activation()
    try:
        program = adapter.compile(source)
        first = adapter.evaluate(program, activation)
    except Exception as exc:
        return f"error ({_short(exc)})"
    if first is not True:
        return f"wrong ({first!r})"
    samples: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(samples) < 20000 and time.perf_counter() < deadline:
        fresh = base_activation()  # new Python objects every time, as per request
        start = time.perf_counter_ns()
        adapter.evaluate(program, fresh)
        samples.append((time.perf_counter_ns() - start) / 1000.0)
    return samples


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    sep = "-+-".join("-" * w for w in widths)
    body = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join([line, sep, *body])


def main() -> None:
    started = time.perf_counter()
    adapters = load_adapters()
    print("Libraries:")
    for label, _adapter, ver in adapters:
        print(f"  {label}: {ver}")
    live = [(label, a) for label, a, _ in adapters if a is not None]
    labels = [label for label, _, _ in adapters]

    print("\n1. Correctness (ok / wrong / error)\n")
    rows = []
    score = dict.fromkeys(labels, 0)
    for case in CASES:
        row = [case.name]
        for label, adapter, _ver in adapters:
            if adapter is None:
                row.append("not installed")
                continue
            outcome = run_case(adapter, case)
            score[label] += outcome.startswith("ok")
            row.append(outcome)
        rows.append(row)
    row = ["non-bool found at compile"]
    for _label, adapter, _ in adapters:
        row.append(compile_time_non_bool(adapter) if adapter else "not installed")
    rows.append(row)
    rows.append(["SCORE"] + [f"{score[lb]}/{len(CASES)}" if a else "-" for lb, a, _ in adapters])
    print(table(["feature", *labels], rows))

    print(
        "\n2. Evaluation time, compiled once, µs per evaluation (activation conversion included)\n"
    )
    trows = []
    for name, source in TIMED:
        results = {label: time_expression(adapter, source) for label, adapter in live}
        p50s = {lb: pct(s, 0.5) for lb, s in results.items() if isinstance(s, list)}
        fastest = min(p50s.values()) if p50s else 1.0
        for label, _, _ in adapters:
            res = results.get(label, "not installed")
            if isinstance(res, str):
                trows.append([name, label, res, "", "", ""])
                continue
            trows.append(
                [
                    name,
                    label,
                    f"{pct(res, 0.5):.1f}",
                    f"{pct(res, 0.99):.1f}",
                    f"x{pct(res, 0.5) / fastest:.1f}",
                    str(len(res)),
                ]
            )
    print(table(["expression", "library", "p50 µs", "p99 µs", "vs fastest", "n"], trows))

    print("\n3. Pathological expression: 3 nested all() over list literals, n^3 steps, one run\n")
    prow = []
    for label, adapter in live:
        n = 20 if label == "cel-python" else 40  # keep the pure-Python library bounded
        source = pathological(n)
        try:
            program = adapter.compile(source)
            start = time.perf_counter()
            adapter.evaluate(program, base_activation())
            ms = (time.perf_counter() - start) * 1000
            prow.append([label, str(n**3), f"{ms:.1f}", f"{ms * 1000 / n**3:.3f}"])
        except Exception as exc:
            prow.append([label, str(n**3), f"error ({_short(exc)})", ""])
    print(table(["library", "steps", "ms", "µs/step"], prow))
    print(
        "\nNo library exposes a configurable cost or time limit to Python (cel-expr-python has"
        "\na fixed internal iteration budget); native evaluation cannot be interrupted from"
        "\nPython. agent_identity.authz.cel therefore bounds the cost of every evaluation"
        "\nbefore it runs, from the input it reads (see its docstring, and table 4)."
    )
    limit_table()
    print(f"\n(total {time.perf_counter() - started:.1f} s)")


LIMIT_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("2 nested all, 300", "context.xs.all(a, context.xs.all(b, true))", {"xs": list(range(300))}),
    (
        "2 nested, ==, 300",
        "context.xs.all(a, context.xs.exists(b, a == b))",
        {"xs": list(range(300))},
    ),
    (
        "in, 300 x 300 str",
        "context.ys.all(t, t in context.xs)",
        {"xs": [f"i-{i}" for i in range(300)], "ys": [f"i-{i}" for i in range(300)]},
    ),
    ("read 20k strings", "size(context.xs) > 0", {"xs": [f"s{i}" for i in range(20000)]}),
    ("read 20k ints", "size(context.xs) > 0", {"xs": list(range(20000))}),
    ("read 5k maps", "size(context.xs) > 0", {"xs": [{"a": i, "b": "x"} for i in range(5000)]}),
    ("map(), 1000", "context.xs.map(x, x).size() > 0", {"xs": list(range(1000))}),
    (
        "map index, 300",
        "context.m.all(k, context.m[k] >= 0)",
        {"m": {f"k{i}": i for i in range(300)}},
    ),
    (
        "matches simple, 300",
        "context.xs.all(x, x.matches('^item-[0-9]+$'))",
        {"xs": [f"item-{i}" for i in range(300)]},
    ),
    ("matches \\w{4}, 50", "context.xs.all(x, x.matches('^\\\\w{4}-'))", {"xs": ["abcd-x"] * 50}),
    ("matches input \\w{30}", "'abc'.matches(context.p)", {"p": "\\w{30}"}),
    (
        "matches, hostile text",
        "context.t.matches('[ab]*a[ab]{30}c')",
        {"t": "".join(random.Random(0).choices("ab", k=100_000))},  # defeats the lazy DFA
    ),
    (
        "big unread list",
        "context.flag == true",
        {"flag": True, "audit": list(range(200_000))},
    ),
]


def limit_table() -> None:
    try:
        from agent_identity.authz.cel import (
            MAX_EVALUATION_COST,
            CelError,
            EvaluationLimit,
            compile_expression,
        )
    except ImportError:  # run from a checkout without the package installed
        print("\n4. (agent_identity is not importable: skipped)")
        return
    import threading

    print(f"\n4. The per-evaluation limit ({MAX_EVALUATION_COST} units): bound vs time\n")
    # The library holds the GIL while it evaluates: another thread does not run meanwhile.
    program = compile_expression("context.xs.all(a, context.xs.all(b, true))")
    act = {"context": {"xs": list(range(700))}}
    ticks: list[float] = []
    stop = threading.Event()

    def ticker() -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    thread = threading.Thread(target=ticker)
    thread.start()
    time.sleep(0.01)
    start = time.perf_counter()
    program.evaluate(act, EvaluationLimit(10**9))
    spent = time.perf_counter() - start
    stop.set()
    thread.join()
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    print(
        f"GIL: a {spent * 1000:.0f} ms evaluation; the longest pause of a 1 ms ticker thread "
        f"meanwhile was {max(gaps, default=0) * 1000:.0f} ms\n"
    )
    rows = []
    worst = 0.0
    unlimited = EvaluationLimit(10**12)
    for name, source, context in LIMIT_CASES:
        compiled = compile_expression(source)
        activation = {"context": context}
        bound = compiled.cost_bound(activation)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            compiled.evaluate(activation, unlimited)
            best = min(best, time.perf_counter() - start)
        ratio = best * 1e6 / bound
        if best > 0.001:  # below a millisecond the fixed overhead decides the ratio
            worst = max(worst, ratio)
        verdict = "runs" if bound <= MAX_EVALUATION_COST else "refused"
        rows.append([name, str(bound), verdict, f"{best * 1000:.2f}", f"{ratio:.3f}"])
    print(table(["case", "cost bound", "default", "ms", "µs/unit"], rows))
    print(f"\nlargest µs per unit over 1 ms: {worst:.3f} (the documented bound assumes about 0.1)")
    pathological_source = "context.xs.all(a, context.xs.all(b, context.xs.all(c, true)))"
    act = {"context": {"xs": list(range(3000))}}
    start = time.perf_counter()
    try:
        compile_expression(pathological_source).evaluate(act)
        outcome = "ran (unexpected)"
    except CelError as exc:
        outcome = exc.message
    print(
        f"\n{pathological_source} over 3000 items (2.7e10 iterations if it ran) was refused "
        f"in {(time.perf_counter() - start) * 1000:.1f} ms:\n  {outcome}"
    )


if __name__ == "__main__":
    main()
