"""Unit tests of agent_identity.authz.cel (the CEL environment of constraints and policies)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_identity.authz.cel import (
    MAX_COLLECTION_SIZE,
    MAX_EXPRESSION_LENGTH,
    CelError,
    CompiledExpression,
    check_expression,
    check_expressions,
    compile_expression,
)

NOW = dt.datetime(2026, 3, 4, 15, 30, tzinfo=dt.UTC)


def activation(**overrides: Any) -> dict[str, Any]:
    act: dict[str, Any] = {
        "subject": {
            "name": "release-bot",
            "namespace": "payments",
            "owner": "team-payments",
            "platform": "kubernetes",
            "phase": "Active",
            "labels": {"tier": "prod"},
            "annotations": {},
        },
        "action": {"name": "payments.refund", "properties": {"amount": 1500, "currency": "EUR"}},
        "resource": {
            "type": "deployment",
            "id": "payments/api",
            "properties": {"env": "production", "tags": ["a", "bb", "pci"]},
        },
        "context": {"change_window": True, "approvers": ["alice", "bob"], "ticket": "CHG-1234"},
        "request": {"time": NOW, "caller": "system:serviceaccount:payments:gateway"},
    }
    act.update(overrides)
    return act


def ev(source: str, act: dict[str, Any] | None = None) -> bool:
    return compile_expression(source).evaluate(activation() if act is None else act)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("has(resource.properties.env)", True),
        ("has(resource.properties.region)", False),
        ('!has(resource.properties.region) || resource.properties.region == "eu"', True),
        ("resource.properties.tags.all(t, size(t) <= 3)", True),
        ("resource.properties.tags.all(t, size(t) <= 2)", False),
        ('subject.labels.all(k, k.startsWith("t"))', True),
        ('context.approvers.exists(a, a == "bob")', True),
        ('context.approvers.exists(a, a == "carol")', False),
        ('resource.properties.tags.exists_one(t, t.startsWith("p"))', True),
        ("resource.properties.tags.exists_one(t, size(t) >= 1)", False),
        ('"pci" in resource.properties.tags', True),
        ('"sox" in resource.properties.tags', False),
        ('"tier" in subject.labels', True),
        ('action.name.startsWith("payments.") && action.name.endsWith("refund")', True),
        ('context.ticket.contains("-")', True),
        ('context.ticket.matches("^CHG-[0-9]+$")', True),
        ('context.ticket.matches("^INC-")', False),
        ("size(context.ticket) == 8 && size(context.approvers) == 2", True),
        ("subject.labels.size() == 1", True),
        ('context.approvers[0] == "alice" && subject.labels["tier"] == "prod"', True),
        ('subject.namespace + "/" + subject.name == "payments/release-bot"', True),
        ('resource.properties.env == "production" ? context.change_window : true', True),
        ('resource.properties.env != "production" || context.change_window == true', True),
        ('resource.properties.env == "production" && resource.properties.tags.size() > 5', False),
        ('resource.properties.region == "eu" || true', True),  # errors absorbed by ||
        ("action.properties.amount > 1000", True),
        ("action.properties.amount == 1500.0", True),
        ("[1, 2, 3].map(x, x * 2).filter(x, x > 2).size() == 2", True),
    ],
)
def test_features(source: str, expected: bool) -> None:
    assert ev(source) is expected
    assert check_expression(source) is None


@pytest.mark.parametrize(("amount", "expected"), [(1000.5, True), (1001, True), (1000, False)])
def test_json_numbers_compare_across_int_and_double(amount: Any, expected: bool) -> None:
    act = activation(action={"name": "payments.refund", "properties": {"amount": amount}})
    assert ev("action.properties.amount > 1000", act) is expected


class TestTimestamps:
    def test_compare(self) -> None:
        assert ev('request.time > timestamp("2026-01-01T00:00:00Z")')
        assert not ev('request.time > timestamp("2027-01-01T00:00:00Z")')

    def test_accessors_are_utc_whatever_the_offset(self) -> None:
        paris = dt.timezone(dt.timedelta(hours=1))
        act = activation(request={"time": dt.datetime(2026, 3, 4, 16, 30, tzinfo=paris)})
        assert ev("request.time.getHours() == 15", act)
        assert ev("request.time.getDayOfWeek() == 3", act)

    def test_naive_datetime_is_utc(self) -> None:
        act = activation(request={"time": dt.datetime(2026, 3, 4, 15, 30)})
        assert ev("request.time.getHours() == 15", act)

    def test_duration_arithmetic(self) -> None:
        assert ev('request.time - timestamp("2026-03-04T12:00:00Z") > duration("3h")')
        assert ev('timestamp("2026-03-04T12:00:00Z") + duration("4h") > request.time')
        assert ev('duration("90m") > duration("1h")')

    def test_business_hours(self) -> None:
        src = "request.time.getHours() >= 8 && request.time.getHours() < 18"
        assert ev(src)
        assert not ev(src, activation(request={"time": NOW.replace(hour=22)}))

    def test_timedelta_is_a_duration(self) -> None:
        act = activation(context={"age": dt.timedelta(minutes=5)})
        assert ev('context.age < duration("10m")', act)


class TestCompileErrors:
    @pytest.mark.parametrize(
        "source",
        ["resource.properties.env ==", "(a", '"unterminated', "a.b.(c)", "1 + + ", "x ? y", ""],
    )
    def test_syntax(self, source: str) -> None:
        with pytest.raises(CelError) as info:
            compile_expression(source)
        assert info.value.message
        assert check_expression(source) == info.value.message

    def test_syntax_message_names_expression(self) -> None:
        message = check_expression("resource.properties.env ==")
        assert message is not None
        assert "syntax error" in message
        assert "resource.properties.env ==" in message

    @pytest.mark.parametrize(
        ("source", "name"),
        [
            ('foo == "bar"', "foo"),
            ('agent.name == "x"', "agent"),
            ("context.x && request.y || other", "other"),
            ("[1, 2].all(x, x > 0) && x > 0", "x"),  # x is bound only inside all()
            ("context.l.exists(i, i == j)", "j"),
        ],
    )
    def test_unknown_variable(self, source: str, name: str) -> None:
        message = check_expression(source)
        assert message is not None
        assert f"unknown variable {name!r}" in message
        assert "subject" in message  # says which variables exist

    def test_comprehension_variables_are_bound(self) -> None:
        src = "context.l.all(x, context.m.exists(y, x == y && subject.labels[y] == x))"
        assert check_expression(src) is None

    @pytest.mark.parametrize(
        ("source", "kind"),
        [
            ("1", "int"),
            ('"yes"', "string"),
            ("action.properties.amount + 1", "int"),
            ("size(context.approvers)", "int"),
            ("[true]", "list"),
            ("{'a': true}", "map"),
            ('timestamp("2026-01-01T00:00:00Z")', "timestamp"),
            ("context.x ? 1 : 2", "int"),
            ("context.l.map(x, x > 1)", "list"),
        ],
    )
    def test_non_bool_at_compile_time(self, source: str, kind: str) -> None:
        message = check_expression(source)
        assert message is not None
        assert f"returns {kind}, not a boolean" in message

    def test_non_bool_at_evaluation(self) -> None:
        compiled = compile_expression("context.ticket")  # only evaluation can tell
        with pytest.raises(CelError) as info:
            compiled.evaluate(activation())
        assert "returned string 'CHG-1234', not a boolean" in info.value.message
        assert "context.ticket" in info.value.message

    def test_too_long(self) -> None:
        source = " || ".join(["context.x == 1"] * (MAX_EXPRESSION_LENGTH // 10))
        message = check_expression(source)
        assert message is not None
        assert "characters long" in message

    def test_too_deep(self) -> None:
        message = check_expression("(" * 200 + "true" + ")" * 200)
        assert message is not None
        assert "nested" in message


class TestEvaluationErrors:
    def test_missing_key_names_key_and_expression(self) -> None:
        src = 'resource.properties.region == "eu"'
        with pytest.raises(CelError) as info:
            ev(src)
        assert "region" in info.value.message
        assert src in info.value.message
        assert "has()" in info.value.message
        assert info.value.source == src

    @pytest.mark.parametrize(
        "source",
        [
            "action.properties.currency > 1",
            "action.properties.amount / 0 > 1",
            'request.time.getHours("Europe/Paris") == 16',
            "context.approvers[5] == 'x'",
            "subject.labels.tier.nested == 1",
        ],
    )
    def test_errors_are_cel_errors(self, source: str) -> None:
        with pytest.raises(CelError):
            ev(source)

    def test_missing_variable(self) -> None:
        with pytest.raises(CelError):
            compile_expression("context.x == 1").evaluate({})

    def test_unrepresentable_value(self) -> None:
        with pytest.raises(CelError, match="cannot represent"):
            ev("context.x == 1", activation(context={"x": object()}))

    def test_collection_size_limit(self) -> None:
        act = activation(context={"l": list(range(MAX_COLLECTION_SIZE + 1))})
        with pytest.raises(CelError, match="at most"):
            ev("context.l.all(x, x >= 0)", act)
        ok = activation(context={"l": list(range(MAX_COLLECTION_SIZE))})
        assert ev("context.l.all(x, x >= 0)", ok)


class TestCostLimit:
    def test_nested_literal_comprehension_is_rejected(self) -> None:
        items = ", ".join(str(i) for i in range(100))
        src = f"[{items}].all(x, [{items}].all(y, [{items}].all(z, x + y + z >= 0)))"
        assert len(src) < MAX_EXPRESSION_LENGTH
        message = check_expression(src)
        assert message is not None
        assert "too expensive" in message

    def test_nested_input_comprehension_is_rejected(self) -> None:
        src = "context.l.all(x, context.l.all(y, context.l.all(z, x == y)))"
        message = check_expression(src)
        assert message is not None
        assert "too expensive" in message

    def test_reasonable_nesting_is_admitted_and_fast(self) -> None:
        src = "resource.properties.tags.exists(t, t in context.allowed)"
        compiled = compile_expression(src)
        act = activation(context={"allowed": [str(i) for i in range(MAX_COLLECTION_SIZE)]})
        act["resource"]["properties"]["tags"] = [f"x{i}" for i in range(MAX_COLLECTION_SIZE)]
        assert compiled.evaluate(act) is False


def test_compile_is_cached() -> None:
    first = compile_expression("context.change_window == true")
    assert compile_expression("context.change_window == true") is first
    assert isinstance(first, CompiledExpression)


def test_check_expressions_names_field_path() -> None:
    errors = check_expressions(
        [("spec.constraints[0].when", "true"), ("spec.constraints[1].when", "nope == 1")]
    )
    assert len(errors) == 1
    assert errors[0].startswith("spec.constraints[1].when: unknown variable 'nope'")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["x", "y", "z", ""]) | st.text(max_size=4), json_values))
def test_guarded_access_never_raises_anything_but_cel_error(context: dict[str, Any]) -> None:
    compiled = compile_expression("has(context.x) && context.x == 1")
    try:
        result = compiled.evaluate(activation(context=context))
    except CelError:
        return
    assert result is (context.get("x") == 1 and not isinstance(context.get("x"), bool))
