"""The alert expression language and summary templates: values, types, missing fields, errors."""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Callable
from typing import ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from procvisor.policy.alertexpr import (
    MISSING_TEXT,
    SAMPLE_FIELDS,
    Expr,
    ExprError,
    FieldKind,
    TemplateError,
    compile_expr,
    compile_template,
    format_value,
)

MiB = 1024**2
GiB = 1024**3

WEB = {
    "service": "web",
    "instance": "web:0",
    "state": "running",
    "health": "healthy",
    "rss": 512 * MiB,
    "vms": 2 * GiB,
    "cpu": 95.5,
    "threads": 12,
    "fds": 900,
    "uptime": 400.0,
    "restarts": 2,
}


def holds(text: str, values: dict[str, object] = WEB) -> bool:
    return compile_expr(text).evaluate(values)


# --- values and operators --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rss > 400M and service == 'web'", True),
        ("rss > 400M and service == 'api'", False),
        ('service == "web"', True),
        ("rss >= 512M", True),
        ("rss > 512M", False),
        ("rss < 0.5G", False),
        ("rss <= 524288K", True),
        ("rss == 536870912", True),
        ("vms == 2GiB and vms == 2GB and vms == 2048MB", True),
        ("cpu > 90%", True),
        ("cpu > 90", True),
        ("cpu >= 96%", False),
        ("uptime > 5m", True),
        ("uptime > 6m40s", False),
        ("uptime >= 400s and uptime < 1h", True),
        ("uptime > 250ms", True),
        ("threads != 12", False),
        ("threads == 12 or fds > 5000", True),
        ("not threads == 12", False),
        ("not not threads == 12", True),
        ("service in ['web', 'api']", True),
        ("service not in ['web', 'api']", False),
        ("service in ['api',]", False),
        ("state not in ['fatal', 'backoff']", True),
        ("threads in [10, 11, 12]", True),
        ("rss in [256M, 512M]", True),
        ("cpu >= 90% or (fds > 0.8 * 1024 and state != 'backoff')", True),
        ("fds > 0.8 * 1024", True),
        ("fds + 200 > 1000", True),
        ("fds - 200 > 800", False),
        ("rss / vms > 0.2", True),
        ("rss * 2 > 1G - 1", True),
        ("-rss < -500M", True),
        ("1 + 2 * 3 == 7", True),
        ("(1 + 2) * 3 == 9", True),
        ("8 / 2 / 2 == 2", True),
        ("uptime > 30s and restarts >= 2", True),
        ("true", True),
        ("false or true", True),
        ("true and false", False),
        ("512M < rss", False),
        ("5m < uptime", True),
    ],
)
def test_expressions(text: str, expected: bool) -> None:
    assert holds(text) is expected


def test_and_binds_tighter_than_or() -> None:
    assert holds("threads == 1 and fds == 1 or cpu > 90")
    assert not holds("threads == 1 and (fds == 1 or cpu > 90)")


def test_whitespace_and_lines_do_not_matter() -> None:
    assert holds("  rss>400M\n   and\tservice=='web'  ")


def test_a_lower_case_m_is_minutes_and_an_upper_case_m_is_mebibytes() -> None:
    assert holds("uptime < 7m") and not holds("uptime < 6m")
    assert holds("rss == 512M")
    with pytest.raises(ExprError, match="lower-case m is minutes; write 512M"):
        compile_expr("rss == 512m")


def test_string_escapes() -> None:
    assert holds(r"service == 'it\'s'", {"service": "it's"})
    assert holds(r'service == "say \"hi\"\n"', {"service": 'say "hi"\n'})
    assert holds(r"service == 'a\\b'", {"service": "a\\b"})


def test_booleans_as_conditions() -> None:
    expr = compile_expr("ready and cpu > 50", {"ready": FieldKind.BOOL, "cpu": FieldKind.PERCENT})
    assert expr.evaluate({"ready": True, "cpu": 60})
    assert not expr.evaluate({"ready": False, "cpu": 60})
    assert not expr.evaluate({"ready": 1, "cpu": 60})  # only True is true
    assert compile_expr("ready == false", {"ready": FieldKind.BOOL}).evaluate({"ready": False})


def test_fields_lists_the_names_used() -> None:
    expr = compile_expr("rss > 400M and (service == 'web' or rss > 1G)")
    assert expr.fields == frozenset({"rss", "service"})
    assert compile_expr("true").fields == frozenset()


def test_evaluate_is_callable_and_repr_shows_the_source() -> None:
    expr = compile_expr("rss > 1G")
    assert expr(WEB) is False and expr.evaluate(WEB) is False
    assert repr(expr) == "Expr('rss > 1G')" and str(expr) == "rss > 1G"


def test_compiled_expressions_compare_and_pickle_by_source() -> None:
    expr = compile_expr("rss > 400M and service == 'web'")
    again = pickle.loads(pickle.dumps(expr))
    assert again == expr and hash(again) == hash(expr)
    assert again.evaluate(WEB) is True
    assert expr != compile_expr("rss > 400M")


# --- missing values and run-time types -------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "rss > 1",
        "rss < 1",
        "rss == 1",
        "rss != 1",
        "service == 'web'",
        "service != 'web'",
        "service in ['web']",
        "service not in ['web']",
        "rss + 1 > 0",
        "-rss < 0",
        "rss > vms",
        "rss != vms",
    ],
)
def test_every_comparison_with_a_missing_field_is_false(text: str) -> None:
    assert not holds(text, {})
    assert not holds(text, {"rss": None, "service": None, "vms": 5})


def test_not_negates_a_comparison_that_was_false_for_a_missing_field() -> None:
    assert holds("not (rss > 1G)", {}) is True
    assert holds("rss <= 1G", {}) is False


def test_division_by_zero_at_evaluation_is_a_missing_value() -> None:
    expr = compile_expr("rss / threads > 1M")
    assert not expr.evaluate({"rss": GiB, "threads": 0})
    assert expr.evaluate({"rss": GiB, "threads": 2})


@pytest.mark.parametrize(
    "values",
    [
        {"rss": "big"},
        {"rss": True},
        {"rss": [1, 2]},
        {"rss": {"a": 1}},
        {"rss": b"x"},
        {"service": 5},
    ],
)
def test_a_value_of_the_wrong_type_makes_comparisons_false(values: dict[str, object]) -> None:
    for text in ("rss > 1", "rss != 1", "rss in [1, 2]", "service == 'web'", "service != 'x'"):
        assert not holds(text, values)


def test_untyped_fields_are_checked_at_evaluation() -> None:
    expr = compile_expr("a > b or a == 'x' or flag", ["a", "b", "flag"])
    assert expr.evaluate({"a": 2, "b": 1})
    assert not expr.evaluate({"a": 1, "b": 2})
    assert not expr.evaluate({"a": "z", "b": 1})  # string against number: false
    assert not expr.evaluate({"a": "z", "b": "y"})  # strings are not ordered
    assert expr.evaluate({"a": "x"})
    assert expr.evaluate({"flag": True}) and not expr.evaluate({"flag": "yes"})


def test_numbers_of_any_python_numeric_type_compare() -> None:
    assert holds("rss > 400M", {"rss": float(GiB)})
    assert holds("threads == 12", {"threads": 12.0})


def test_long_chains_evaluate_without_deep_recursion() -> None:
    text = " and ".join(["rss > 1"] * 3000)
    assert holds(text) and not holds(text, {})
    assert holds(" or ".join(["rss < 1"] * 3000 + ["rss > 1"]))


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason", "column", "hint"),
    [
        ("", "the expression is empty", 1, "rss > 400M"),
        ("rsss > 400M", "unknown name 'rsss'", 1, "did you mean 'rss'?"),
        ("RSS > 1", "unknown name 'RSS'", 1, "case-sensitive; did you mean 'rss'"),
        ("rss > 1 AND cpu > 2", "unexpected name AND", 9, "write 'and' in lower case"),
        ("rss > null", "unknown name 'null'", 7, "no null"),
        ("rss > 400X", "unknown unit 'X' in '400X'", 7, "sizes take B, K, M, G"),
        ("rss > 1e9", "'1e9' is not a number with a unit", 7, ""),
        ("uptime > 1m30x", "'1m30x' is not a number with a unit", 10, ""),
        ("rss > 400M &&  cpu > 1", "unexpected '&&'", 12, "use 'and'"),
        ("rss > 1 || cpu > 1", "unexpected '||'", 9, "use 'or'"),
        ("rss = 5", "unexpected '='", 5, "use '=='"),
        ("!(rss > 1)", "unexpected '!'", 1, "use 'not'"),
        ("rss > 1 # comment", "unexpected character '#'", 9, ""),
        ("service == 'web", "unterminated string", 12, "close it with '"),
        (r"service == 'a\qb'", "unknown escape '\\q'", 14, ""),
        ("(rss > 1", "unclosed '('", 1, "add ')'"),
        ("(rss > 1 cpu", "unexpected name cpu", 10, "expected ')'"),
        ("rss > 1)", "unexpected ')'", 8, ""),
        ("rss >", "the expression ends too soon", 6, "expected a value"),
        ("rss > 1 > 0", "comparisons do not chain", 9, "join them with 'and'"),
        ("rss", "the expression needs a condition, but rss is a size", 1, "rss > 400M"),
        ("rss + 1M", "the expression needs a condition", 1, ""),
        ("service and rss > 1", "'and' needs a condition, but service is a string", 1, ""),
        ("not uptime", "'not' needs a condition, but uptime is a duration", 5, "uptime > 5m"),
        ("rss > 30s", "cannot compare rss (a size) with 30s (a duration)", 1, ""),
        ("cpu > 1K", "cannot compare cpu (a percentage) with 1K (a size)", 1, ""),
        ("service == 1", "cannot compare service (a string) with 1 (a number)", 1, ""),
        ("service < 'a'", "'<' orders numbers, but service is a string", 1, "== or !="),
        ("true > false", "'>' orders numbers, but true is a boolean", 1, ""),
        ("rss + uptime > 1", "cannot add a size and a duration", 1, ""),
        ("service + 1 > 1", "'+' needs numbers, but service is a string", 1, ""),
        ("1 / 0 > rss", "division by zero", 1, ""),
        ("service in 'web'", "unexpected string 'web'", 12, "takes a list"),
        ("service in ['web' 'api']", "unexpected string 'api'", 19, "expected ',' or ']'"),
        ("service in ['web', rss]", "unexpected name rss", 20, "literals"),
        ("rss in [1M, 'a']", "cannot compare rss (a size) with 'a' (a string)", 1, ""),
        ("a in [1, 'x']", "the list mixes a number and a string", 10, ""),
        ("rss in [- 'x']", "unexpected string 'x'", 11, "expected a number after '-'"),
        ("rss > 9" + "9" * 400, "is too large", 7, ""),
    ],
)
def test_errors_name_the_problem_and_the_column(
    text: str, reason: str, column: int, hint: str
) -> None:
    with pytest.raises(ExprError) as caught:
        compile_expr(text, [*SAMPLE_FIELDS, "a"] if text.startswith("a ") else SAMPLE_FIELDS)
    error = caught.value
    assert reason in error.reason
    assert error.column == column
    assert hint in error.hint
    assert isinstance(error, ValueError)


def test_the_message_names_the_setting_and_draws_a_caret_under_the_problem() -> None:
    with pytest.raises(ExprError) as caught:
        compile_expr("rss > 400M and servce == 'web'", field="alerts.mem.expr")
    assert str(caught.value) == (
        "alerts.mem.expr: unknown name 'servce' at column 16; did you mean 'service'?\n"
        "  rss > 400M and servce == 'web'\n"
        "                 ^^^^^^"
    )
    assert (caught.value.position, caught.value.end) == (15, 21)


def test_errors_in_multi_line_expressions_give_the_line() -> None:
    with pytest.raises(ExprError) as caught:
        compile_expr("rss > 400M\n  and cpu > 30s")
    error = caught.value
    assert (error.line, error.column) == (2, 7)
    assert str(error).splitlines()[1:] == ["    and cpu > 30s", "        ^^^^^^^^^"]
    assert "at line 2, column 7" in str(error)


def test_unknown_names_without_a_close_match_list_the_known_ones() -> None:
    with pytest.raises(ExprError, match="known names: cpu, ctx_switches, fds"):
        compile_expr("zzz > 1")


def test_errors_survive_pickling() -> None:
    with pytest.raises(ExprError) as caught:
        compile_expr("rss > 30s", field="alerts.x.expr")
    again = pickle.loads(pickle.dumps(caught.value))
    assert type(again) is ExprError and str(again) == str(caught.value)
    assert again.field == "alerts.x.expr"


def test_deep_nesting_is_refused_cleanly() -> None:
    with pytest.raises(ExprError, match="nests too deeply"):
        compile_expr("(" * 200 + "rss > 1" + ")" * 200)
    with pytest.raises(ExprError, match="nests too deeply"):
        compile_expr("not " * 200 + "rss > 1")
    with pytest.raises(ExprError, match="too large"):
        compile_expr(" + ".join(["rss"] * 200) + " > 1")
    assert holds("(" * 20 + "rss > 1" + ")" * 20)


def test_non_strings_and_bad_field_names_are_misuse() -> None:
    with pytest.raises(ValueError, match=r"alerts.x.expr: 5 is not an expression"):
        compile_expr(5, field="alerts.x.expr")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'in' cannot be used as a name"):
        compile_expr("x > 1", ["x", "in"])
    with pytest.raises(ValueError, match=r"'a\.b' cannot be used as a name"):
        compile_expr("x > 1", {"x": FieldKind.NUMBER, "a.b": FieldKind.NUMBER})
    with pytest.raises(TypeError):
        compile_expr("x > 1", "x")


# --- properties ------------------------------------------------------------------------------

_PIECES = [
    *SAMPLE_FIELDS,
    "and",
    "or",
    "not",
    "in",
    "true",
    "false",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "+",
    "-",
    "*",
    "/",
    "(",
    ")",
    "[",
    "]",
    ",",
    "'web'",
    '"x"',
    "400M",
    "1.5G",
    "30s",
    "5m",
    "90%",
    "12",
    "0",
    ".5",
    "=",
    "!",
    "'",
    "1m30s",
    "7X",
]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_random_text_raises_nothing_but_expr_error(text: str) -> None:
    with contextlib.suppress(ExprError):
        compile_expr(text)


@settings(max_examples=600, deadline=None)
@given(
    st.lists(st.sampled_from(_PIECES), max_size=14),
    st.dictionaries(
        st.sampled_from(sorted(SAMPLE_FIELDS)),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(),
            st.text(max_size=4),
            st.sampled_from(["web", "x"]),
        ),
    ),
)
def test_token_soup_compiles_or_fails_cleanly_and_evaluation_never_raises(
    pieces: list[str], values: dict[str, object]
) -> None:
    try:
        expr = compile_expr(" ".join(pieces))
    except ExprError:
        return
    assert expr.evaluate(values) in (True, False)
    assert expr.fields <= set(SAMPLE_FIELDS)


class TestComparisonsAgreeWithPython:
    OPS: ClassVar[dict[str, object]] = {
        "==": lambda a, b: a == b,
        "!=": lambda a, b: a != b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
    }

    @given(
        st.sampled_from(sorted(OPS)),
        st.integers(min_value=0, max_value=10**6),
        st.one_of(st.integers(min_value=0, max_value=10**6), st.floats(allow_nan=False)),
    )
    def test_field_against_a_literal(self, op: str, literal: int, value: float) -> None:
        expected = self.OPS[op](value, literal)  # type: ignore[operator]
        assert compile_expr(f"threads {op} {literal}").evaluate({"threads": value}) is expected
        flipped = compile_expr(f"{literal} {op} threads").evaluate({"threads": value})
        assert flipped is self.OPS[op](literal, value)  # type: ignore[operator]

    @given(st.sampled_from(sorted(OPS)), st.integers(), st.integers())
    def test_field_against_a_field(self, op: str, a: int, b: int) -> None:
        got = compile_expr(f"threads {op} fds").evaluate({"threads": a, "fds": b})
        assert got is self.OPS[op](a, b)  # type: ignore[operator]


_Cond = tuple[str, Callable[[dict[str, object]], bool]]


def _compare_leaf() -> st.SearchStrategy[_Cond]:
    ops = TestComparisonsAgreeWithPython.OPS

    def numeric(name: str, op: str, n: int) -> _Cond:
        def check(v: dict[str, object]) -> bool:
            x = v.get(name)
            return isinstance(x, int) and ops[op](x, n)  # type: ignore[operator]

        return f"{name} {op} {n}", check

    def member(names: list[str], negate: bool) -> _Cond:
        listed = ", ".join(repr(n) for n in names)

        def check(v: dict[str, object]) -> bool:
            x = v.get("service")
            return isinstance(x, str) and ((x in names) != negate)

        return f"service {'not in' if negate else 'in'} [{listed}]", check

    return st.one_of(
        st.builds(
            numeric,
            st.sampled_from(["threads", "fds"]),
            st.sampled_from(sorted(ops)),
            st.integers(0, 5),
        ),
        st.builds(
            member, st.lists(st.sampled_from(["web", "api", "db"]), max_size=3), st.booleans()
        ),
    )


def _combine(children: st.SearchStrategy[_Cond]) -> st.SearchStrategy[_Cond]:
    def both(a: _Cond, b: _Cond, word: str) -> _Cond:
        fa, fb = a[1], b[1]
        if word == "and":
            return f"({a[0]}) and ({b[0]})", lambda v: fa(v) and fb(v)
        return f"({a[0]}) or ({b[0]})", lambda v: fa(v) or fb(v)

    def negated(a: _Cond) -> _Cond:
        fa = a[1]
        return f"not ({a[0]})", lambda v: not fa(v)

    return st.one_of(
        st.builds(both, children, children, st.sampled_from(["and", "or"])),
        st.builds(negated, children),
    )


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(_compare_leaf(), _combine, max_leaves=12),
    st.fixed_dictionaries(
        {},
        optional={
            "threads": st.integers(0, 5),
            "fds": st.integers(0, 5),
            "service": st.sampled_from(["web", "api", "db"]),
        },
    ),
)
def test_generated_expressions_agree_with_a_reference_evaluator(
    cond: _Cond, values: dict[str, object]
) -> None:
    text, reference = cond
    assert compile_expr(text).evaluate(values) is bool(reference(values))


# --- templates -------------------------------------------------------------------------------


def test_a_template_formats_fields_by_their_kind() -> None:
    template = compile_template("{service}:{instance} uses {rss} of memory")
    assert template.render(WEB) == "web:web:0 uses 512M of memory"
    assert template.fields == frozenset({"service", "instance", "rss"})
    full = compile_template("{cpu} cpu, up {uptime}, {threads} threads, {vms} virtual")
    assert full.render(WEB) == "95.5% cpu, up 6m40s, 12 threads, 2G virtual"


def test_missing_values_render_as_a_question_mark() -> None:
    template = compile_template("{service} uses {rss}")
    assert template.render({}) == f"{MISSING_TEXT} uses {MISSING_TEXT}"
    assert template.render({"service": None, "rss": object()}) == "? uses ?"


def test_literal_braces_and_spaces_inside_placeholders() -> None:
    assert compile_template("{{x}} { rss } }}").render(WEB) == "{x} 512M }"
    assert compile_template("no fields").render({}) == "no fields"


@pytest.mark.parametrize(
    ("text", "reason", "column"),
    [
        ("{a.b}", "'{a.b}' is not a plain field name", 1),
        ("uses {rss[0]}", "'{rss[0]}' is not a plain field name", 6),
        ("{rss.__class__}", "is not a plain field name", 1),
        ("{rss:>10}", "has a format spec or conversion", 1),
        ("{rss!r}", "has a format spec or conversion", 1),
        ("{}", "empty placeholder", 1),
        ("{0}", "'{0}' is not a field name", 1),
        ("{rss", "unclosed '{'", 1),
        ("{a{rss}}", "unclosed '{'", 1),
        ("x } y", "single '}'", 3),
        ("{rsss}", "unknown name 'rsss'", 2),
    ],
)
def test_template_errors(text: str, reason: str, column: int) -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template(text, field="alerts.mem.summary")
    assert reason in caught.value.reason
    assert caught.value.column == column
    assert str(caught.value).startswith("alerts.mem.summary: ")
    assert isinstance(caught.value, ExprError)


def test_unknown_template_names_suggest_a_known_one() -> None:
    with pytest.raises(TemplateError, match=r"did you mean 'service'\?"):
        compile_template("{servce}")


def test_templates_pickle_and_compare() -> None:
    template = compile_template("{service}: {rss}")
    assert pickle.loads(pickle.dumps(template)) == template
    assert repr(template) == "Template('{service}: {rss}')"


@pytest.mark.parametrize(
    ("value", "kind", "text"),
    [
        (1536, FieldKind.SIZE, "1.5K"),
        (90.0, FieldKind.DURATION, "1m30s"),
        (93.456, FieldKind.PERCENT, "93.5%"),
        (12, FieldKind.NUMBER, "12"),
        (12.0, FieldKind.NUMBER, "12"),
        (0.1234, FieldKind.NUMBER, "0.123"),
        (1234.5, FieldKind.ANY, "1234"),
        (True, FieldKind.ANY, "true"),
        ("web", FieldKind.STRING, "web"),
        (None, FieldKind.SIZE, "?"),
        (float("nan"), FieldKind.SIZE, "nan"),
        (-5.0, FieldKind.DURATION, "-5"),
        (10**40, FieldKind.NUMBER, "1e+40"),
        (10**400, FieldKind.SIZE, "?"),
    ],
)
def test_format_value(value: object, kind: FieldKind, text: str) -> None:
    assert format_value(value, kind) == text


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(["{", "}", "a", " ", "rss", "cpu", "uptime", ".", ":"])).map("".join),
    st.dictionaries(
        st.sampled_from(["rss", "cpu", "uptime"]),
        st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=3), st.booleans()),
    ),
)
def test_templates_compile_or_fail_cleanly_and_rendering_never_raises(
    text: str, values: dict[str, object]
) -> None:
    try:
        template = compile_template(text)
    except TemplateError:
        return
    assert isinstance(template.render(values), str)


def test_expr_is_exported_type() -> None:
    assert isinstance(compile_expr("true"), Expr)
