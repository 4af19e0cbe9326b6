"""The alert expression language, ``rss > 400M and service == 'web'``, and summary templates.

An alert rule's condition is a small expression over one sample of an instance: its metrics
and its labels. A hand-written tokenizer and recursive-descent parser read it (never ``eval``),
and :func:`compile_expr` turns it into closures once, at config load; :meth:`Expr.evaluate`
then runs on every sample without parsing anything::

    high_memory = compile_expr("rss > 400M and service == 'web'")
    high_memory.evaluate({"rss": 512 * 1024**2, "service": "web"})  # True
    high_memory.fields  # frozenset({'rss', 'service'})

Grammar, loosest binding first::

    expr        := and ("or" and)*
    and         := not ("and" not)*
    not         := "not" not | comparison
    comparison  := sum [ ("==" | "!=" | "<" | "<=" | ">" | ">=") sum
                       | ["not"] "in" "[" [literal ("," literal)* [","]] "]" ]
    sum         := product (("+" | "-") product)*
    product     := unary (("*" | "/") unary)*
    unary       := "-" unary | atom
    atom        := NUMBER[UNIT] | STRING | "true" | "false" | NAME | "(" expr ")"

**Values.** Numbers (``42``, ``0.5``), optionally with a unit written right after them: sizes
in bytes with 1024-based units (``512K``, ``400M``, ``1.5G``, ``10MB``, ``2GiB``), durations in
seconds (``250ms``, ``30s``, ``5m``, ``1h``, ``1m30s``) and percentages (``90%`` is 90, as the
``cpu`` field counts percent of one core). A lone lower-case ``m`` is minutes and a lone
upper-case ``M`` is mebibytes. Strings in single or double quotes, with the escapes ``\\\\``,
``\\'``, ``\\"``, ``\\n`` and ``\\t``. ``true`` and ``false``. Names are the fields passed to
:func:`compile_expr` (:data:`SAMPLE_FIELDS` by default); an unknown name is an error that
suggests the closest known one.

**Types.** Every field has a :class:`FieldKind`, and the compiler checks what it can: a size
compares with a size or a plain number but never with a duration; strings and booleans compare
only with their own kind and only with ``==``, ``!=``, ``in`` and ``not in``; arithmetic needs
numbers; the operands of ``and``, ``or`` and ``not``, and the expression as a whole, must be
conditions (a comparison, a boolean field, ``true`` or ``false``). Comparisons do not chain:
write ``1 < x and x < 5``. Fields of kind ``any`` (names passed without kinds) are checked only
at evaluation.

**Missing values.** A field absent from the mapping, or set to ``None``, is missing. Every
comparison that involves a missing value is false: ``==``, ``!=``, ``in`` and ``not in`` alike,
so an instance that has not been sampled yet matches nothing. So is a comparison whose value
turns out to have the wrong type at evaluation (a string where a number was expected).
Arithmetic on a missing value, and a division by zero, give a missing value. ``not`` negates
the result as it is: ``not (rss > 1G)`` is true when ``rss`` is missing, whereas ``rss <= 1G``
is false; prefer the direct comparison.

**Summary templates.** :func:`compile_template` reads ``"{service}:{instance} uses {rss}"``:
plain field names in braces, ``{{`` and ``}}`` for literal braces, nothing else (no attribute or
index access, no format specs). Values are formatted by their kind (sizes as ``512M``,
durations as ``1m30s``, percentages as ``93.5%``) and a missing value renders as ``?``.

Every error in an expression or template is an :class:`ExprError` (a ``ValueError``) that
names the setting, the column, and shows the text with a caret under the problem.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from procvisor.policy.units import format_duration, format_size, parse_duration, parse_size

__all__ = [
    "MISSING_TEXT",
    "SAMPLE_FIELDS",
    "Expr",
    "ExprError",
    "FieldKind",
    "Template",
    "TemplateError",
    "compile_expr",
    "compile_template",
    "format_value",
]


class FieldKind(StrEnum):
    """What a field holds; the compiler uses it to refuse comparisons that cannot make sense."""

    NUMBER = "number"
    """A plain number: a count such as ``threads`` or ``fds``."""
    SIZE = "size"
    """Bytes; literals such as ``400M``; rendered as ``400M``."""
    DURATION = "duration"
    """Seconds; literals such as ``30s``; rendered as ``1m30s``."""
    PERCENT = "percent"
    """Percent (``cpu``: 100 is one core); literals such as ``90%``."""
    STRING = "string"
    BOOL = "bool"
    ANY = "any"
    """Unknown until evaluation: every check is left to run time."""


_NUMERIC_KINDS: Final = frozenset(
    {FieldKind.NUMBER, FieldKind.SIZE, FieldKind.DURATION, FieldKind.PERCENT}
)
_UNIT_KINDS: Final = frozenset({FieldKind.SIZE, FieldKind.DURATION, FieldKind.PERCENT})
_A_KIND: Final = {
    FieldKind.NUMBER: "a number",
    FieldKind.SIZE: "a size",
    FieldKind.DURATION: "a duration",
    FieldKind.PERCENT: "a percentage",
    FieldKind.STRING: "a string",
    FieldKind.BOOL: "a boolean",
    FieldKind.ANY: "a value",
}

SAMPLE_FIELDS: Mapping[str, FieldKind] = MappingProxyType(
    {
        "cpu": FieldKind.PERCENT,
        "rss": FieldKind.SIZE,
        "vms": FieldKind.SIZE,
        "threads": FieldKind.NUMBER,
        "fds": FieldKind.NUMBER,
        "read_bytes": FieldKind.SIZE,
        "write_bytes": FieldKind.SIZE,
        "ctx_switches": FieldKind.NUMBER,
        "uptime": FieldKind.DURATION,
        "restarts": FieldKind.NUMBER,
        "pid": FieldKind.NUMBER,
        "state": FieldKind.STRING,
        "health": FieldKind.STRING,
        "service": FieldKind.STRING,
        "instance": FieldKind.STRING,
    }
)
"""The fields of an instance sample and its labels, with their kinds: the default names."""

MISSING_TEXT: Final = "?"
"""What a template renders for a missing value."""

_KEYWORDS: Final = frozenset({"and", "or", "not", "in", "true", "false"})
_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER_RE: Final = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(%|[A-Za-z][A-Za-z0-9.]*)?")
_COMPOUND_DURATION_RE: Final = re.compile(r"(?:(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:us|ms|s|m|h|d))+")
_SIZE_SUFFIXES: Final = frozenset(
    {"b", "k", "kb", "kib", "m", "mb", "mib", "g", "gb", "gib", "t", "tb", "tib"}
)
_DURATION_SUFFIXES: Final = frozenset({"us", "ms", "s", "m", "h", "d"})
_UNITS_HELP: Final = (
    "sizes take B, K, M, G, T (or KB, KiB, ...), durations take us, ms, s, m (minutes), h, d, "
    "percentages take %"
)
_OPERATORS: Final = ("==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "(", ")", "[", "]", ",")
_MISTAKES: Final = (
    ("&&", "use 'and'"),
    ("||", "use 'or'"),
    ("&", "use 'and'"),
    ("|", "use 'or'"),
    ("!", "use 'not' (or '!=' to compare)"),
    ("=", "use '==' to compare"),
)
_ESCAPES: Final = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t"}
_MAX_NESTING: Final = 32
_MAX_DEPTH: Final = 64


# --------------------------------------------------------------------------------- errors


def _rebuild_error(
    cls: type[ExprError], reason: str, text: str, position: int, end: int, hint: str, field: str
) -> ExprError:
    return cls(reason, text, position, end, hint=hint, field=field)


class ExprError(ValueError):
    """An alert expression (or summary template) is invalid; the message points at the spot.

    ``str()`` names the setting and the column, then shows the text with a caret line::

        alerts.mem.expr: unknown name 'rsss' at column 1; did you mean 'rss'?
          rsss > 400M
          ^^^^

    Attributes:
        reason: what is wrong, without the position (``"unknown name 'rsss'"``).
        hint: what to do about it, or ``""``.
        text: the whole expression.
        field: the setting it came from (``"expr"`` unless the caller named it).
        position: 0-based offset in ``text`` where the problem starts.
        end: 0-based offset just past the problem (at least ``position + 1``).
        line: 1-based line of ``position`` (expressions may span lines in TOML).
        column: 1-based column of ``position`` within its line.
    """

    def __init__(
        self,
        reason: str,
        text: str,
        position: int,
        end: int | None = None,
        *,
        hint: str = "",
        field: str = "expr",
    ) -> None:
        position = max(0, min(position, len(text)))
        self.reason = reason
        self.hint = hint
        self.text = text
        self.field = field
        self.position = position
        self.end = max(end if end is not None else 0, position + 1)
        line_start = text.rfind("\n", 0, position) + 1
        line_end = text.find("\n", position)
        if line_end == -1:
            line_end = len(text)
        self.line = text.count("\n", 0, position) + 1
        self.column = position - line_start + 1
        multiline = "\n" in text
        where = f"line {self.line}, column {self.column}" if multiline else f"column {self.column}"
        shown = text[line_start:line_end]
        pad = "".join("\t" if c == "\t" else " " for c in shown[: position - line_start])
        carets = "^" * max(1, min(self.end, line_end) - position)
        message = f"{field}: {reason} at {where}" + (f"; {hint}" if hint else "")
        super().__init__(f"{message}\n  {shown}\n  {pad}{carets}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_error,
            (type(self), self.reason, self.text, self.position, self.end, self.hint, self.field),
        )


class TemplateError(ExprError):
    """A summary template is invalid; an :class:`ExprError`, so one ``except`` catches both."""


# ------------------------------------------------------------------------------ tokenizer


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "number", "string", "name", "keyword", "op" or "end"
    text: str
    start: int
    end: int
    value: object = None
    unit: FieldKind = FieldKind.NUMBER


def _number_token(text: str, start: int, end: int, unit: str, field: str) -> _Token:
    literal = text[start:end]
    digits = literal[: len(literal) - len(unit)]

    def bad(reason: str, hint: str = _UNITS_HELP) -> ExprError:
        return ExprError(reason, text, start, end, hint=hint, field=field)

    value: float
    try:
        if not unit:
            value, kind = float(digits), FieldKind.NUMBER
        elif unit == "%":
            value, kind = float(digits), FieldKind.PERCENT
        elif unit == "m" or _COMPOUND_DURATION_RE.fullmatch(literal):
            value, kind = parse_duration(literal), FieldKind.DURATION
        elif any(c.isdigit() for c in unit):
            raise bad(f"'{literal}' is not a number with a unit")
        elif unit.lower() in _SIZE_SUFFIXES:
            value, kind = float(parse_size(literal)), FieldKind.SIZE
        elif unit.lower() in _DURATION_SUFFIXES:
            value, kind = parse_duration(literal.lower()), FieldKind.DURATION
        else:
            raise bad(f"unknown unit '{unit}' in '{literal}'")
    except (ValueError, OverflowError) as exc:
        if isinstance(exc, ExprError):
            raise
        raise bad(f"'{literal}' is not a number with a unit") from None
    if not math.isfinite(value):
        raise bad(f"'{literal}' is too large", "")
    return _Token("number", literal, start, end, value, kind)


def _string_token(text: str, start: int, field: str) -> _Token:
    quote = text[start]
    chars: list[str] = []
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == quote:
            return _Token("string", text[start : i + 1], start, i + 1, "".join(chars))
        if c == "\\" and i + 1 < len(text):
            escaped = _ESCAPES.get(text[i + 1])
            if escaped is None:
                raise ExprError(
                    f"unknown escape '\\{text[i + 1]}' in a string",
                    text,
                    i,
                    i + 2,
                    hint="use \\\\, \\', \\\", \\n or \\t",
                    field=field,
                )
            chars.append(escaped)
            i += 2
            continue
        chars.append(c)
        i += 1
    raise ExprError(
        "unterminated string", text, start, len(text), hint=f"close it with {quote}", field=field
    )


def _tokenize(text: str, field: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
            continue
        m = _NUMBER_RE.match(text, i)
        if m is not None:
            tokens.append(_number_token(text, i, m.end(), m.group(1) or "", field))
            i = m.end()
            continue
        if c in "'\"":
            token = _string_token(text, i, field)
            tokens.append(token)
            i = token.end
            continue
        m = _NAME_RE.match(text, i)
        if m is not None:
            word = m.group()
            tokens.append(_Token("keyword" if word in _KEYWORDS else "name", word, i, m.end()))
            i = m.end()
            continue
        op = next((o for o in _OPERATORS if text.startswith(o, i)), None)
        if op is not None:
            tokens.append(_Token("op", op, i, i + len(op)))
            i += len(op)
            continue
        for wrong, hint in _MISTAKES:
            if text.startswith(wrong, i):
                raise ExprError(
                    f"unexpected '{wrong}'", text, i, i + len(wrong), hint=hint, field=field
                )
        raise ExprError(
            f"unexpected character {c!r}",
            text,
            i,
            hint="expressions use names, numbers, quoted strings and operators",
            field=field,
        )
    tokens.append(_Token("end", "", n, n))
    return tokens


# ------------------------------------------------------------------------ compiled nodes

_Values = Mapping[str, object]
_Fn = Callable[[_Values], Any]
_NOT_CONST: Final = object()
_NUMBER_TYPES: Final = frozenset({int, float})
_REAL: Final = (int, float)


def _is_number(x: object) -> bool:
    return x.__class__ in _NUMBER_TYPES or (isinstance(x, _REAL) and not isinstance(x, bool))


@dataclass(slots=True)
class _Node:
    """A compiled sub-expression: its static kind, its closure and where it is in the text."""

    kind: FieldKind
    fn: _Fn
    start: int
    end: int
    depth: int = 1
    const: object = _NOT_CONST
    name: str | None = None
    predicate: bool = False  # fn returns a truth value (not a raw field value)

    @property
    def is_const(self) -> bool:
        return self.const is not _NOT_CONST


def _const_node(kind: FieldKind, value: object, start: int, end: int) -> _Node:
    return _Node(kind, lambda _v: value, start, end, const=value, predicate=kind is FieldKind.BOOL)


_COMPARE: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_FLIPPED: Final = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_ORDERING: Final = frozenset({"<", "<=", ">", ">="})
_ARITHMETIC: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
}


def _compare_values(cmp: Callable[[Any, Any], Any], ordering: bool, a: object, b: object) -> bool:
    """Compare two run-time values under the module's rules (missing or mismatched: false)."""
    if a is None or b is None:
        return False
    if _is_number(a):
        return _is_number(b) and bool(cmp(a, b))
    if _is_number(b) or ordering:
        return False
    if isinstance(a, str):
        return isinstance(b, str) and bool(cmp(a, b))
    if isinstance(a, bool):
        return isinstance(b, bool) and bool(cmp(a, b))
    return False


def _field_vs_const(name: str, op: str, const: object) -> _Fn:
    """The hot path, ``rss > 400M``: read one field, check its type, compare."""
    cmp = _COMPARE[op]
    if isinstance(const, bool):

        def compare_bool(values: _Values) -> Any:
            x = values.get(name)
            return isinstance(x, bool) and cmp(x, const)

        return compare_bool
    if isinstance(const, str):

        def compare_str(values: _Values) -> Any:
            x = values.get(name)
            return isinstance(x, str) and cmp(x, const)

        return compare_str

    def compare_number(values: _Values) -> Any:
        x = values.get(name)
        if x.__class__ in _NUMBER_TYPES or (isinstance(x, _REAL) and not isinstance(x, bool)):
            return cmp(x, const)
        return False

    return compare_number


def _compile_compare(op: str, left: _Node, right: _Node) -> _Fn:
    if right.is_const and left.name is not None:
        return _field_vs_const(left.name, op, right.const)
    if left.is_const and right.name is not None:
        return _field_vs_const(right.name, _FLIPPED[op], left.const)
    cmp, ordering = _COMPARE[op], op in _ORDERING
    lf, rf = left.fn, right.fn
    return lambda values: _compare_values(cmp, ordering, lf(values), rf(values))


def _compile_arithmetic(op: str, left: _Node, right: _Node) -> _Fn:
    apply = _ARITHMETIC[op]
    lf, rf = left.fn, right.fn

    def arithmetic(values: _Values) -> Any:
        a, b = lf(values), rf(values)
        if _is_number(a) and _is_number(b):
            try:
                return apply(a, b)
            except ArithmeticError:  # division by zero, or an int too large for a float
                return None
        return None

    return arithmetic


def _compile_membership(left: _Node, items: list[_Node], negate: bool) -> _Fn:
    choices = frozenset(item.const for item in items)
    lf = left.fn
    if not items:
        return (lambda v: lf(v) is not None) if negate else (lambda _v: False)
    sample = items[0].const
    check: Callable[[object], bool]
    if isinstance(sample, bool):
        check = lambda x: isinstance(x, bool)  # noqa: E731
    elif isinstance(sample, str):
        check = lambda x: isinstance(x, str)  # noqa: E731
    else:
        check = _is_number
    if negate:
        return lambda v: check(x := lf(v)) and x not in choices
    return lambda v: check(x := lf(v)) and x in choices


def _all_of(fns: list[_Fn]) -> _Fn:
    if len(fns) == 2:
        a, b = fns
        return lambda v: bool(a(v) and b(v))

    def all_of(values: _Values) -> bool:
        return all(fn(values) for fn in fns)

    return all_of


def _any_of(fns: list[_Fn]) -> _Fn:
    if len(fns) == 2:
        a, b = fns
        return lambda v: bool(a(v) or b(v))

    def any_of(values: _Values) -> bool:
        return any(fn(values) for fn in fns)

    return any_of


def _arithmetic_kind(op: str, a: FieldKind, b: FieldKind) -> FieldKind | None:
    """The kind of ``a op b``, or None when the units do not combine (a size plus a duration)."""
    if op in "+-":
        if FieldKind.ANY in (a, b):
            other = b if a is FieldKind.ANY else a
            return other if other in _UNIT_KINDS else FieldKind.ANY
        if a == b or b is FieldKind.NUMBER:
            return a
        return b if a is FieldKind.NUMBER else None
    if FieldKind.ANY in (a, b):
        return FieldKind.ANY
    if b is FieldKind.NUMBER:
        return a
    if op == "*" and a is FieldKind.NUMBER:
        return b
    return FieldKind.NUMBER


# --------------------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, text: str, kinds: Mapping[str, FieldKind], field: str) -> None:
        self.text = text
        self.kinds = kinds
        self.field = field
        self.tokens = _tokenize(text, field)
        self.i = 0
        self.nesting = 0
        self.used: set[str] = set()

    # -- helpers

    def error(self, reason: str, start: int, end: int | None = None, hint: str = "") -> ExprError:
        return ExprError(reason, self.text, start, end, hint=hint, field=self.field)

    @property
    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        if token.kind != "end":
            self.i += 1
        return token

    def at(self, kind: str, text: str) -> bool:
        token = self.tokens[self.i]
        return token.kind == kind and token.text == text

    def accept(self, kind: str, text: str) -> _Token | None:
        return self.take() if self.at(kind, text) else None

    def source(self, node: _Node) -> str:
        text = " ".join(self.text[node.start : node.end].split())
        return text if len(text) <= 40 else text[:37] + "..."

    def enter(self, token: _Token) -> None:
        self.nesting += 1
        if self.nesting > _MAX_NESTING:
            raise self.error(
                "the expression nests too deeply",
                token.start,
                token.end,
                f"use at most {_MAX_NESTING} levels of parentheses, 'not' and '-'",
            )

    def node(self, kind: FieldKind, fn: _Fn, parts: Iterable[_Node], **extra: Any) -> _Node:
        children = list(parts)
        depth = 1 + max(child.depth for child in children)
        start, end = children[0].start, children[-1].end
        if depth > _MAX_DEPTH:
            raise self.error(
                "the expression is too large",
                start,
                end,
                f"split it; at most {_MAX_DEPTH} operations may nest",
            )
        return _Node(kind, fn, start, end, depth, **extra)

    def unexpected(self, token: _Token, hint: str) -> ExprError:
        if token.kind == "name" and token.text.lower() in _KEYWORDS:
            hint = f"write '{token.text.lower()}' in lower case"
        if token.kind == "end":
            return self.error("the expression ends too soon", token.start, hint=hint)
        return self.error(f"unexpected {self.describe(token)}", token.start, token.end, hint)

    @staticmethod
    def describe(token: _Token) -> str:
        if token.kind in ("op", "keyword"):
            return f"'{token.text}'"
        return f"{token.kind} {token.text}" if token.kind != "string" else f"string {token.text}"

    def condition(self, node: _Node, where: str) -> _Node:
        """``node`` as a truth-valued closure, or an error if it cannot be a condition."""
        if node.kind in (FieldKind.BOOL, FieldKind.ANY):
            if node.predicate:
                return node
            fn = node.fn
            return replace(node, fn=lambda v: fn(v) is True, predicate=True)
        src = self.source(node)
        example = {
            FieldKind.SIZE: f"{src} > 400M",
            FieldKind.DURATION: f"{src} > 5m",
            FieldKind.PERCENT: f"{src} > 90%",
            FieldKind.STRING: f"{src} == 'web'",
        }.get(node.kind, f"{src} > 100")
        raise self.error(
            f"{where} needs a condition, but {src} is {_A_KIND[node.kind]}",
            node.start,
            node.end,
            f"compare it, e.g. {example}",
        )

    # -- grammar

    def parse(self) -> _Node:
        if self.peek.kind == "end":
            raise self.error(
                "the expression is empty", 0, hint="write a condition, e.g. rss > 400M"
            )
        node = self.or_()
        token = self.peek
        if token.kind != "end":
            if token.kind == "op" and token.text in _COMPARE:
                raise self.error(
                    "comparisons do not chain",
                    token.start,
                    token.end,
                    "join them with 'and', e.g. 1 < x and x < 5",
                )
            raise self.unexpected(token, "expected 'and', 'or', an operator or the end")
        return self.condition(node, "the expression")

    def or_(self) -> _Node:
        first = self.and_()
        if not self.at("keyword", "or"):
            return first
        parts = [self.condition(first, "'or'")]
        while self.accept("keyword", "or"):
            parts.append(self.condition(self.and_(), "'or'"))
        return self.node(FieldKind.BOOL, _any_of([p.fn for p in parts]), parts, predicate=True)

    def and_(self) -> _Node:
        first = self.not_()
        if not self.at("keyword", "and"):
            return first
        parts = [self.condition(first, "'and'")]
        while self.accept("keyword", "and"):
            parts.append(self.condition(self.not_(), "'and'"))
        return self.node(FieldKind.BOOL, _all_of([p.fn for p in parts]), parts, predicate=True)

    def not_(self) -> _Node:
        token = self.accept("keyword", "not")
        if token is None:
            return self.comparison()
        self.enter(token)
        operand = self.condition(self.not_(), "'not'")
        self.nesting -= 1
        fn = operand.fn
        node = self.node(FieldKind.BOOL, lambda v: not fn(v), [operand], predicate=True)
        node.start = token.start
        return node

    def comparison(self) -> _Node:
        left = self.sum_()
        token = self.peek
        if token.kind == "op" and token.text in _COMPARE:
            self.take()
            right = self.sum_()
            self.check_comparable(token.text, left, right)
            fn = _compile_compare(token.text, left, right)
            if left.is_const and right.is_const:
                return _const_node(FieldKind.BOOL, bool(fn({})), left.start, right.end)
            return self.node(FieldKind.BOOL, fn, [left, right], predicate=True)
        if self.at("keyword", "in"):
            return self.membership(left, self.take(), negate=False)
        if self.at("keyword", "not") and self.tokens[self.i + 1].text == "in":
            self.take()
            return self.membership(left, self.take(), negate=True)
        return left

    def membership(self, left: _Node, token: _Token, *, negate: bool) -> _Node:
        opening = self.accept("op", "[")
        if opening is None:
            raise self.unexpected(self.peek, "'in' takes a list, e.g. service in ['web', 'api']")
        items: list[_Node] = []
        while True:
            closing = self.accept("op", "]")
            if closing is not None:
                break
            item = self.literal()
            self.check_comparable("==", left, item)
            if items and not _same_kind_family(items[0].kind, item.kind):
                raise self.error(
                    f"the list mixes {_A_KIND[items[0].kind]} and {_A_KIND[item.kind]}",
                    item.start,
                    item.end,
                    "use values of one kind",
                )
            items.append(item)
            if not self.accept("op", ","):
                closing = self.accept("op", "]")
                if closing is None:
                    raise self.unexpected(self.peek, "expected ',' or ']' in the list")
                break
        fn = _compile_membership(left, items, negate)
        end = _Node(FieldKind.BOOL, fn, closing.start, closing.end)
        return self.node(FieldKind.BOOL, fn, [left, end], predicate=True)

    def literal(self) -> _Node:
        token = self.take()
        sign = 1.0
        start = token.start
        if token.kind == "op" and token.text == "-":
            sign, token = -1.0, self.take()
            if token.kind != "number":
                raise self.unexpected(token, "expected a number after '-'")
        if token.kind == "number":
            assert isinstance(token.value, float)
            return _const_node(token.unit, sign * token.value, start, token.end)
        if token.kind == "string":
            return _const_node(FieldKind.STRING, token.value, start, token.end)
        if token.kind == "keyword" and token.text in ("true", "false"):
            return _const_node(FieldKind.BOOL, token.text == "true", start, token.end)
        raise self.unexpected(token, "list items are literals: numbers, strings, true or false")

    def sum_(self) -> _Node:
        node = self.product()
        while self.peek.kind == "op" and self.peek.text in ("+", "-"):
            token = self.take()
            node = self.arithmetic(token, node, self.product())
        return node

    def product(self) -> _Node:
        node = self.unary()
        while self.peek.kind == "op" and self.peek.text in ("*", "/"):
            token = self.take()
            node = self.arithmetic(token, node, self.unary())
        return node

    def unary(self) -> _Node:
        token = self.accept("op", "-")
        if token is None:
            return self.atom()
        self.enter(token)
        operand = self.unary()
        self.nesting -= 1
        self.check_numeric("-", operand)
        if operand.is_const:
            assert isinstance(operand.const, float)
            return _const_node(operand.kind, -operand.const, token.start, operand.end)
        fn = operand.fn
        node = self.node(operand.kind, lambda v: -x if _is_number(x := fn(v)) else None, [operand])
        node.start = token.start
        return node

    def atom(self) -> _Node:
        token = self.take()
        if token.kind == "number":
            return _const_node(token.unit, token.value, token.start, token.end)
        if token.kind == "string":
            return _const_node(FieldKind.STRING, token.value, token.start, token.end)
        if token.kind == "keyword" and token.text in ("true", "false"):
            return _const_node(FieldKind.BOOL, token.text == "true", token.start, token.end)
        if token.kind == "name":
            return self.name(token)
        if token.kind == "op" and token.text == "(":
            self.enter(token)
            inner = self.or_()
            closing = self.accept("op", ")")
            if closing is None:
                if self.peek.kind == "end":
                    raise self.error("unclosed '('", token.start, token.end, "add ')'")
                raise self.unexpected(self.peek, "expected ')' or an operator")
            self.nesting -= 1
            return replace(inner, start=token.start, end=closing.end)
        raise self.unexpected(token, "expected a value: a name, a number, a string or '('")

    def name(self, token: _Token) -> _Node:
        name = token.text
        kind = self.kinds.get(name)
        if kind is None:
            raise self.error(
                f"unknown name '{name}'", token.start, token.end, _name_hint(name, self.kinds)
            )
        self.used.add(name)
        return _Node(kind, lambda v: v.get(name), token.start, token.end, name=name)

    # -- type checks

    def check_numeric(self, op: str, node: _Node) -> None:
        if node.kind not in _NUMERIC_KINDS and node.kind is not FieldKind.ANY:
            raise self.error(
                f"'{op}' needs numbers, but {self.source(node)} is {_A_KIND[node.kind]}",
                node.start,
                node.end,
            )

    def arithmetic(self, token: _Token, left: _Node, right: _Node) -> _Node:
        op = token.text
        self.check_numeric(op, left)
        self.check_numeric(op, right)
        kind = _arithmetic_kind(op, left.kind, right.kind)
        if kind is None:
            verb = "add" if op == "+" else "subtract"
            raise self.error(
                f"cannot {verb} {_A_KIND[left.kind]} and {_A_KIND[right.kind]}",
                left.start,
                right.end,
                _unit_hint(self.text, left, right) or "use values of the same kind",
            )
        fn = _compile_arithmetic(op, left, right)
        if left.is_const and right.is_const:
            value = fn({})
            if value is None:
                raise self.error("division by zero", left.start, right.end)
            return _const_node(kind, float(value), left.start, right.end)
        return self.node(kind, fn, [left, right])

    def check_comparable(self, op: str, left: _Node, right: _Node) -> None:
        lk, rk = left.kind, right.kind
        if op in _ORDERING:
            for node in (left, right):
                if node.kind in (FieldKind.STRING, FieldKind.BOOL):
                    raise self.error(
                        f"'{op}' orders numbers, but {self.source(node)} is {_A_KIND[node.kind]}",
                        left.start,
                        right.end,
                        "compare strings and booleans with == or !=",
                    )
        if FieldKind.ANY in (lk, rk) or _same_kind_family(lk, rk):
            return
        raise self.error(
            f"cannot compare {self.source(left)} ({_A_KIND[lk]}) "
            f"with {self.source(right)} ({_A_KIND[rk]})",
            left.start,
            right.end,
            _unit_hint(self.text, left, right) or "compare values of the same kind",
        )


def _same_kind_family(a: FieldKind, b: FieldKind) -> bool:
    """Whether values of kinds ``a`` and ``b`` may be compared (a plain number goes with units)."""
    if a == b or FieldKind.ANY in (a, b):
        return True
    return a in _NUMERIC_KINDS and b in _NUMERIC_KINDS and FieldKind.NUMBER in (a, b)


def _unit_hint(text: str, a: _Node, b: _Node) -> str:
    for minutes, other in ((a, b), (b, a)):
        literal = text[minutes.start : minutes.end]
        if (
            minutes.is_const
            and minutes.kind is FieldKind.DURATION
            and literal.endswith("m")
            and other.kind is FieldKind.SIZE
        ):
            return f"a lower-case m is minutes; write {literal[:-1]}M for mebibytes"
    return ""


def _name_hint(name: str, kinds: Mapping[str, FieldKind]) -> str:
    lower = name.lower()
    if lower in _KEYWORDS:
        return f"write '{lower}' in lower case"
    if lower in kinds:
        return f"names are case-sensitive; did you mean '{lower}'?"
    if lower in ("none", "null", "nil"):
        return "there is no null: a comparison with a missing field is false"
    close = difflib.get_close_matches(name, list(kinds), n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    known = sorted(kinds)
    listed = ", ".join(known[:30]) + (", ..." if len(known) > 30 else "")
    return f"known names: {listed}" if known else "no names are known here"


def _field_kinds(fields: Mapping[str, FieldKind] | Iterable[str]) -> dict[str, FieldKind]:
    if isinstance(fields, str):
        raise TypeError("fields: pass a mapping of names to kinds or a list of names, not a str")
    if isinstance(fields, Mapping):
        pairs = [(name, FieldKind(kind)) for name, kind in fields.items()]
    else:
        pairs = [(name, FieldKind.ANY) for name in fields]
    for name, _ in pairs:
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name in _KEYWORDS:
            raise ValueError(
                f"fields: {name!r} cannot be used as a name; names are letters, digits and _, "
                "not starting with a digit, and not one of " + ", ".join(sorted(_KEYWORDS))
            )
    return dict(pairs)


# ------------------------------------------------------------------------------ public API


class Expr:
    """A compiled alert expression; :func:`compile_expr` makes one.

    Evaluating runs closures only, without parsing or type dispatch on the syntax tree. An
    ``Expr`` compares equal to another compiled from the same text with the same field kinds,
    and pickles by its source.

    Attributes:
        source: the text it was compiled from.
        fields: the names of the fields it reads.
    """

    __slots__ = ("_fn", "_kinds", "fields", "source")

    def __init__(self, source: str, fn: _Fn, kinds: Mapping[str, FieldKind]) -> None:
        self.source = source
        self._fn = fn
        self._kinds = dict(kinds)
        self.fields = frozenset(kinds)

    def evaluate(self, values: Mapping[str, object]) -> bool:
        """Return whether the condition holds for ``values`` (a sample's fields and labels).

        Never raises for any mapping: missing and mistyped values make comparisons false
        (see the module docstring).
        """
        return bool(self._fn(values))

    __call__ = evaluate

    def __repr__(self) -> str:
        return f"Expr({self.source!r})"

    def __str__(self) -> str:
        return self.source

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Expr):
            return NotImplemented
        return (self.source, self._kinds) == (other.source, other._kinds)

    def __hash__(self) -> int:
        return hash((self.source, self.fields))

    def __reduce__(self) -> tuple[Any, ...]:
        return (compile_expr, (self.source, self._kinds))


def compile_expr(
    text: str,
    fields: Mapping[str, FieldKind] | Iterable[str] = SAMPLE_FIELDS,
    *,
    field: str = "expr",
) -> Expr:
    """Parse and type-check an alert expression; return it compiled, ready to evaluate.

    Args:
        text: the expression, e.g. ``"rss > 400M and service == 'web'"``.
        fields: the names the expression may use, with their kinds; names given without kinds
            are of kind ``any`` (checked at evaluation only).
        field: the setting the text came from (``"alerts.mem.expr"``), for error messages.

    Raises:
        ExprError: the text is not a valid expression: a syntax error, an unknown name or
            unit, or a comparison of kinds that cannot match (a size with a duration, a string
            with a number). The message gives the column and a caret line.
        ValueError: ``text`` is not a string, or ``fields`` holds a name that could never be
            written in an expression.
    """
    if not isinstance(text, str):
        raise ValueError(f"{field}: {text!r} is not an expression; write a string like 'cpu > 90%'")
    kinds = _field_kinds(fields)
    parser = _Parser(text, kinds, field)
    node = parser.parse()
    return Expr(text, node.fn, {name: kinds[name] for name in sorted(parser.used)})


def _format_number(x: float) -> str:
    if isinstance(x, int):
        if -(10**18) < x < 10**18:
            return str(x)
        try:
            x = float(x)
        except OverflowError:
            return MISSING_TEXT
    if not math.isfinite(x):
        return str(x)
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.0f}" if 100 <= abs(x) < 1e15 else f"{x:.3g}"


def format_value(value: object, kind: FieldKind = FieldKind.ANY) -> str:
    """Render one value for people, by its kind: ``536870912`` as a size is ``"512M"``.

    Sizes use :func:`~procvisor.policy.units.format_size`, durations
    :func:`~procvisor.policy.units.format_duration`, percentages get a ``%``; booleans are
    ``true``/``false``; a missing value (``None``) or one of no known type is
    :data:`MISSING_TEXT`. Never raises.
    """
    if value is None:
        return MISSING_TEXT
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if not isinstance(value, int | float):
        return MISSING_TEXT
    finite = isinstance(value, int) or math.isfinite(value)
    if kind is FieldKind.SIZE and finite and abs(value) < 2**80:
        return format_size(int(value))
    if kind is FieldKind.DURATION and finite and 0 <= value < 1e15:
        return format_duration(float(value))
    if kind is FieldKind.PERCENT:
        return _format_number(value) + "%"
    return _format_number(value)


class Template:
    """A compiled summary template; :func:`compile_template` makes one.

    Attributes:
        source: the text it was compiled from.
        fields: the names of the fields it shows.
    """

    __slots__ = ("_kinds", "_parts", "fields", "source")

    def __init__(
        self,
        source: str,
        parts: Iterable[str | tuple[str, FieldKind]],
        kinds: Mapping[str, FieldKind],
    ) -> None:
        self.source = source
        self._parts = tuple(parts)
        self._kinds = dict(kinds)
        self.fields = frozenset(kinds)

    def render(self, values: Mapping[str, object]) -> str:
        """Fill the template from ``values``; a missing field shows as ``?``. Never raises."""
        return "".join(
            part if isinstance(part, str) else format_value(values.get(part[0]), part[1])
            for part in self._parts
        )

    def __repr__(self) -> str:
        return f"Template({self.source!r})"

    def __str__(self) -> str:
        return self.source

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Template):
            return NotImplemented
        return (self.source, self._kinds) == (other.source, other._kinds)

    def __hash__(self) -> int:
        return hash((self.source, self.fields))

    def __reduce__(self) -> tuple[Any, ...]:
        return (compile_template, (self.source, self._kinds))


def compile_template(
    text: str,
    fields: Mapping[str, FieldKind] | Iterable[str] = SAMPLE_FIELDS,
    *,
    field: str = "summary",
) -> Template:
    """Check a summary template such as ``"{service}:{instance} uses {rss}"``; return it compiled.

    Placeholders are plain field names in braces; ``{{`` and ``}}`` are literal braces.
    Attribute and index access (``{a.b}``, ``{a[0]}``), format specs and conversions
    (``{rss:>10}``, ``{rss!r}``) are refused: values are formatted by their kind.

    Args:
        text: the template.
        fields: the names it may use, as for :func:`compile_expr`.
        field: the setting the text came from, for error messages.

    Raises:
        TemplateError: a brace is unbalanced, a placeholder is not a plain known field name.
        ValueError: ``text`` is not a string, or ``fields`` holds an unusable name.
    """
    if not isinstance(text, str):
        raise ValueError(f"{field}: {text!r} is not a template; write a string like '{{rss}}'")
    kinds = _field_kinds(fields)
    parts: list[str | tuple[str, FieldKind]] = []
    used: dict[str, FieldKind] = {}
    literal: list[str] = []

    def error(reason: str, start: int, end: int, hint: str = "") -> TemplateError:
        return TemplateError(reason, text, start, end, hint=hint, field=field)

    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c not in "{}":
            literal.append(c)
            i += 1
            continue
        if text.startswith(c * 2, i):
            literal.append(c)
            i += 2
            continue
        if c == "}":
            raise error("single '}'", i, i + 1, "write '}}' for a literal brace")
        close = text.find("}", i + 1)
        nested = text.find("{", i + 1)
        if close == -1 or (nested != -1 and nested < close):
            raise error("unclosed '{'", i, i + 1, "close it with '}', or write '{{' for a brace")
        inner = text[i + 1 : close]
        name = inner.strip()
        if not name:
            raise error("empty placeholder '{}'", i, close + 1, "name a field, e.g. {rss}")
        if "." in name or "[" in name:
            raise error(
                f"'{{{inner}}}' is not a plain field name",
                i,
                close + 1,
                "attribute and index access are not allowed; use a field such as {rss}",
            )
        if ":" in name or "!" in name:
            raise error(
                f"'{{{inner}}}' has a format spec or conversion",
                i,
                close + 1,
                "write just the name, e.g. {rss}; values are formatted by their kind",
            )
        if not _NAME_RE.fullmatch(name):
            raise error(f"'{{{inner}}}' is not a field name", i, close + 1)
        kind = kinds.get(name)
        if kind is None:
            raise error(f"unknown name '{name}'", i + 1, close, _name_hint(name, kinds))
        if literal:
            parts.append("".join(literal))
            literal.clear()
        parts.append((name, kind))
        used[name] = kind
        i = close + 1
    if literal:
        parts.append("".join(literal))
    return Template(text, parts, dict(sorted(used.items())))
