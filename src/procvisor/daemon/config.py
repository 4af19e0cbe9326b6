"""The daemon's configuration: one TOML file, validated into frozen pydantic models.

Loading has three steps, each with its own function:

``find_config(explicit)``
    which file: ``-c FILE``, else ``$PROCVISOR_CONFIG``, else ``./procvisor.toml``.
``parse_config(text)``
    the text alone: TOML syntax, keys, types, values, service names, dependencies. Pure: it
    looks at nothing on the machine, so a config can be checked anywhere.
``check_runtime(config)``
    the machine: ``user``/``group`` need the daemon to run as root and must exist, ``cwd``
    must be a directory. :func:`load_config` runs it, so ``procvisor check-config`` reports
    what the daemon itself would refuse at start.

Every problem is a :class:`ConfigError`, which lists *all* the problems found, one line
each: ``procvisor.toml: services.web.backoff.initial: 'fast' is not a duration; use ...``.
Each line names the file, the key path and what is accepted. Cross-service checks (unknown
dependencies, cycles) run even when other keys are wrong, so one pass shows everything.

Values are normalized: durations become float seconds, sizes int bytes, signals their
numbers, commands an argv tuple (a string is split with :func:`shlex.split`, or becomes
``("/bin/sh", "-c", text)`` when the service sets ``shell = true``), relative paths are
resolved against the directory of the config file, and ``limits`` is a
:class:`procvisor.Limits`. Every field carries a description and its default, so the
reference documentation can be generated from the models (``Service.model_fields``).
"""

from __future__ import annotations

import difflib
import functools
import grp
import json
import os
import pwd
import re
import shlex
import sys
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple, TypeVar, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from procvisor.daemon._envfile import EnvFileError, read_env_files
from procvisor.daemon._files import (
    DEFAULT_CONFIG_NAME,
    ENV_CONFIG,
    ENV_STATE_DIR,
    STATE_DIR_NAME,
    ConfigError,
    ConfigProblem,
    default_state_dir,
    find_config,
)
from procvisor.policy.cron import check_cron
from procvisor.policy.units import (
    DURATION_FORMS,
    SIZE_FORMS,
    format_duration,
    parse_duration,
    parse_size,
)
from procvisor.process import Limits, parse_signal

if TYPE_CHECKING:
    from procvisor.policy.alerts import AlertRule, WatchLimits
    from procvisor.policy.notifiers import NotifierSpec

_T = TypeVar("_T")

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "ENV_CONFIG",
    "ENV_STATE_DIR",
    "STATE_DIR_NAME",
    "AlertsSection",
    "Backoff",
    "CapacitySection",
    "CommandPoolSection",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "DaemonSection",
    "Endpoint",
    "ExecProbe",
    "Hooks",
    "HttpProbe",
    "JobsSection",
    "Logs",
    "MonitorSection",
    "QuotaSection",
    "Service",
    "SocketSection",
    "TcpProbe",
    "check_runtime",
    "find_config",
    "load_config",
    "parse_config",
    "state_dir",
]

_SHELL = ("/bin/sh", "-c")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_BARE_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_TOML_POSITION_RE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_TOML_END = " (at end of document)"
_ERROR_TYPE = "procvisor_config"


# --------------------------------------------------------------------------- errors


def _problem(message: str, *keys: str | int) -> PydanticCustomError:
    """A validation error the converter reports at the validated key plus ``keys``."""
    return PydanticCustomError(_ERROR_TYPE, "{message}", {"message": message, "keys": keys})


# --------------------------------------------------------------------------- value types


def _toml_type(value: object) -> str:
    """How TOML names the type of ``value`` (``tomllib`` makes only these)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date or time"


def _toml_repr(value: object) -> str:
    """``value`` as it would look in the file (short)."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict):
        text = "{...}"
    else:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _got(value: object) -> str:
    if isinstance(value, dict):
        return "a table"
    return f"{_toml_type(value)} {_toml_repr(value)}"


def _strip_field(message: str, field: str) -> str:
    """The parsers name the field first; the error line names the whole key path instead."""
    return message.removeprefix(f"{field}: ")


def _field_name(info: ValidationInfo) -> str:
    return info.field_name or "value"


def _parsed(
    parse: Callable[..., _T],
    value: Any,
    info: ValidationInfo,
    kinds: tuple[type, ...],
    expected: str,
) -> _T:
    """Check ``value``'s TOML type, then parse it with the shared parser under this key."""
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise _problem(expected.format(got=_got(value)))
    field = _field_name(info)
    try:
        return parse(value, field=field)
    except ValueError as exc:
        raise _problem(_strip_field(str(exc), field)) from None


def _duration(value: Any, info: ValidationInfo) -> float:
    expected = f"expected a duration, got {{got}}; use {DURATION_FORMS}"
    return _parsed(parse_duration, value, info, (int, float, str), expected)


def _positive_duration(value: Any, info: ValidationInfo) -> float:
    seconds = _duration(value, info)
    if seconds <= 0:
        raise _problem(f"{_toml_repr(value)} must be more than 0 seconds, e.g. '500ms' or '10s'")
    return seconds


def _size(value: Any, info: ValidationInfo) -> int:
    expected = f"expected a size, got {{got}}; use {SIZE_FORMS}"
    return _parsed(parse_size, value, info, (int, float, str), expected)


def _signal(value: Any, info: ValidationInfo) -> int:
    expected = "expected a signal name like 'TERM' or a number, got {got}"
    return _parsed(parse_signal, value, info, (int, str), expected)


def _argv(value: Any) -> tuple[str, ...]:
    """A command: an array of strings, or a string split like a shell would (no shell runs)."""
    example = "e.g. ['python3', 'app.py'] or 'python3 app.py'"
    if isinstance(value, str):
        if "\0" in value:
            raise _problem("contains a NUL character, which no argument can hold")
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            raise _problem(
                f"{_toml_repr(value)} cannot be split into arguments ({str(exc).lower()}); "
                "check the quotes, or give the command as an array of strings"
            ) from None
        if not argv:
            raise _problem(f"is empty; give the program and its arguments, {example}")
        return tuple(argv)
    if isinstance(value, list | tuple):  # a tuple: an already validated command
        if not value:
            raise _problem(f"is empty; give the program and its arguments, {example}")
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise _problem(f"expected a string, got {_got(item)}", index)
            if "\0" in item:
                raise _problem("contains a NUL character, which no argument can hold", index)
        if not value[0]:
            raise _problem("the program name is empty", 0)
        return tuple(value)
    raise _problem(f"expected a string or an array of strings, got {_got(value)}; {example}")


def _tuple(value: Any) -> Any:
    """TOML arrays arrive as lists; the models keep tuples, so they stay immutable."""
    return tuple(value) if isinstance(value, list) else value


def _instances(value: Any) -> Any:
    """``"max"`` is one instance per CPU this process may run on (PM2's ``-i max``)."""
    if value == "max":
        return len(os.sched_getaffinity(0))
    if isinstance(value, str):
        raise _problem(f"{_toml_repr(value)} is not a count; give a whole number or 'max'")
    return value


def _dependencies(value: Any) -> Any:
    """``depends_on`` as ``{name: condition}``: an array means every name is ``started``."""
    if isinstance(value, list | tuple):
        if all(isinstance(name, str) for name in value):
            return dict.fromkeys(value, "started")
        raise _problem(f"expected an array of service names, got {_got(value)}")
    if isinstance(value, dict):
        return value
    raise _problem(
        "expected an array of service names or a table of name = 'started' | 'healthy' | "
        f"'completed', got {_got(value)}"
    )


def _one_or_many(value: Any) -> Any:
    """A string stands for an array of one; arrays become tuples (see :func:`_tuple`)."""
    return (value,) if isinstance(value, str) else _tuple(value)


def _service_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise _problem(
            f"{name!r} is not a valid service name; use letters, digits, '-' and '_', "
            "starting with a letter or digit (instances are named like 'web:0')"
        )
    return name


def _path(value: Any, info: ValidationInfo) -> Path:
    if isinstance(value, Path):  # already validated
        value = str(value)
    if not isinstance(value, str):
        raise _problem(f"expected a path as a string, got {_got(value)}")
    if not value or "\0" in value:
        raise _problem(f"{_toml_repr(value)} is not a path; give a directory or file name")
    path = Path(value).expanduser()
    base = (info.context or {}).get("base_dir")
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return path


def _user_or_group(value: Any) -> str | int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _problem(f"expected a name or a numeric id, got {_got(value)}")
    if isinstance(value, int):
        if value < 0:
            raise _problem(f"{value} is not an id; ids are 0 or more")
        return value
    if not value.strip():
        raise _problem("is empty; give a name or a numeric id, or remove the key")
    return int(value) if value.isdigit() else value


def _octal(value: Any, what: str, example: str) -> int:
    accepted = (
        f"use an octal string like '{example}' or '0o{example}', or a TOML octal integer "
        f"like 0o{example}"
    )
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _problem(f"expected a {what}, got {_got(value)}; {accepted}")
    if isinstance(value, int):
        number = value
    else:
        digits = value.strip().lower().removeprefix("0o")
        if not digits or any(c not in "01234567" for c in digits):
            raise _problem(f"{value!r} is not an octal {what}; {accepted}")
        number = int(digits, 8)
    if not 0 <= number <= 0o777:
        raise _problem(f"{_toml_repr(value)} is not a {what} (0 to 0o777); {accepted}")
    return number


def _cron(value: Any, info: ValidationInfo) -> str:
    return _parsed(check_cron, value, info, (str,), "expected a cron expression, got {got}")


def _umask(value: Any) -> int:
    return _octal(value, "umask", "022")


def _file_mode(value: Any) -> int:
    return _octal(value, "file mode", "660")


def _env(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _problem(f'expected a table of NAME = "value", got {_got(value)}')
    out: dict[str, str] = {}
    for key, item in value.items():
        if not key or "=" in key or "\0" in key:
            raise _problem("is not a valid environment variable name (empty, '=' or NUL)", key)
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise _problem(
                f'expected a string, got {_got(item)}; quote it, e.g. {key} = "value"', key
            )
        text = str(item)
        if "\0" in text:
            raise _problem("contains a NUL character, which the environment cannot hold", key)
        out[key] = text
    return out


_LIMIT_KEYS = (
    "memory",
    "cpu_time",
    "wall_time",
    "open_files",
    "processes",
    "core",
    "cpus",
    "nice",
)
_LIMIT_ERROR_RE = re.compile(r"^limits\.(\w+): (.*)$", re.DOTALL)


def _limits(value: Any) -> Limits:
    """``[services.X.limits]`` checked by :class:`procvisor.Limits` itself."""
    if isinstance(value, Limits):
        return value
    if not isinstance(value, dict):
        raise _problem(f"expected a table of limits, got {_got(value)}")
    for key in value:
        if key not in _LIMIT_KEYS:
            raise _problem(_unknown_key_message(key, _LIMIT_KEYS), key)
    for key, item in value.items():
        if isinstance(item, bool) or not isinstance(item, int | float | str):
            raise _problem(f"expected a number or a string, got {_got(item)}", key)
    try:
        return Limits(**value)
    except ValueError as exc:
        match = _LIMIT_ERROR_RE.match(str(exc))
        if match is None:
            raise _problem(str(exc)) from None
        raise _problem(match.group(2), match.group(1)) from None


_POLICY_PATH = "\x00"
"""The ``field`` handed to the policy parsers, so their key paths can be cut off again."""


def _policy_problem(exc: ValueError, *prefix: str | int) -> PydanticCustomError:
    """A policy parser's ``"\x00.a.b: message"`` as a problem at keys ``prefix + (a, b)``.

    Only the first line of the message is kept: an expression's caret lines go with the
    column number the first line already gives.
    """
    text = str(exc).split("\n", 1)[0]
    where, sep, message = text.partition(": ")
    if not sep or not where.startswith(_POLICY_PATH):
        return _problem(text, *prefix)
    keys = [k for k in where.removeprefix(_POLICY_PATH).split(".") if k]
    return _problem(message, *prefix, *keys)


def _policy_key(table: Mapping[str, Any]) -> str:
    return json.dumps(table, sort_keys=True)


@functools.lru_cache(maxsize=256)
def _parsed_watch(key: str) -> WatchLimits:
    # The alert and notifier parsers load only for a config that has such tables: they
    # are not worth their import time before the services start (see bench/RESULTS.md).
    from procvisor.policy.alerts import parse_watch  # noqa: PLC0415

    return parse_watch(json.loads(key), field=_POLICY_PATH)


@functools.lru_cache(maxsize=1024)
def _parsed_rule(name: str, key: str) -> AlertRule:
    from procvisor.policy.alerts import parse_alert_rule  # noqa: PLC0415

    return parse_alert_rule(name, json.loads(key), field=_POLICY_PATH)


@functools.lru_cache(maxsize=256)
def _parsed_notifier(name: str, key: str) -> NotifierSpec:
    from procvisor.policy.notifiers import parse_notifier  # noqa: PLC0415

    return parse_notifier(name, json.loads(key), field=_POLICY_PATH)


def _watch(value: Any) -> dict[str, Any]:
    """``[services.X.watch]``, checked by :func:`procvisor.policy.alerts.parse_watch`.

    The table is kept as written (so a config dumps and loads again unchanged);
    :attr:`Service.watch_limits` is the parsed form.
    """
    if not isinstance(value, dict):
        raise _problem(f"expected a table of limits, got {_got(value)}")
    try:
        _parsed_watch(_policy_key(value))
    except ValueError as exc:
        raise _policy_problem(exc) from None
    return dict(value)


def _named_tables(value: Any, what: str, parse: Callable[[str, str], Any]) -> dict[str, Any]:
    """``[alerts.rules.NAME]`` or ``[alerts.notifiers.NAME]`` tables, each checked by
    ``parse(name, key)``, and kept as written."""
    if not isinstance(value, dict):
        raise _problem(f"expected tables of {what}s, got {_got(value)}")
    for name, table in value.items():
        if not _NAME_RE.match(name):
            raise _problem(f"{name!r} is not a {what} name; use letters, digits, '-' and '_'", name)
        if not isinstance(table, dict):
            raise _problem(f"expected a table, got {_got(table)}", name)
        try:
            parse(name, _policy_key(table))
        except ValueError as exc:
            raise _policy_problem(exc, name) from None
    return {name: dict(table) for name, table in value.items()}


def _rules(value: Any) -> dict[str, Any]:
    """``[alerts.rules.NAME]`` tables, checked by :func:`parse_alert_rule`."""
    return _named_tables(value, "rule", _parsed_rule)


def _notifiers(value: Any) -> dict[str, Any]:
    """``[alerts.notifiers.NAME]`` tables, checked by :func:`parse_notifier`."""
    return _named_tables(value, "notifier", _parsed_notifier)


def _limits_table(limits: Limits) -> dict[str, int | float]:
    """The limits that are set, as the table they are read from."""
    values = {key: getattr(limits, key) for key in _LIMIT_KEYS}
    return {key: value for key, value in values.items() if value is not None}


class Endpoint(NamedTuple):
    """A TCP address to listen on."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _endpoint(value: Any) -> Endpoint:
    accepted = "use 'HOST:PORT', e.g. '127.0.0.1:9876' or '[::1]:9876'"
    if isinstance(value, Endpoint):
        return value
    if not isinstance(value, str):
        raise _problem(f"expected a string, got {_got(value)}; {accepted}")
    host, colon, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise _problem(f"{value!r} is not an address; {accepted} (port 1 to 65535)")
    return Endpoint(host, int(port))


def _endpoint_text(endpoint: Endpoint) -> str:
    return str(endpoint)


_UNIX_PATH_MAX = 107  # sun_path holds 108 bytes with the trailing NUL


def _listen_address(value: Any, info: ValidationInfo) -> Endpoint | Path:
    """A TCP ``HOST:PORT``, or the path of a Unix socket (any value with a '/')."""
    if isinstance(value, Endpoint | Path):
        return value
    if isinstance(value, str) and "/" in value:
        path = _path(value, info)
        if len(os.fsencode(path)) > _UNIX_PATH_MAX:
            raise _problem(
                f"{str(path)!r} is {len(os.fsencode(path))} bytes long; a Unix socket's "
                f"path can have at most {_UNIX_PATH_MAX}: choose a shorter one"
            )
        return path
    try:
        return _endpoint(value)
    except PydanticCustomError:
        raise _problem(
            f"{_toml_repr(value)} is not an address; use 'HOST:PORT' for TCP (e.g. "
            "'127.0.0.1:8000', '[::]:8000'), or a path with a '/' for a Unix socket "
            "(e.g. './web.sock')"
        ) from None


def _listen_text(address: Endpoint | Path) -> str:
    return str(address)


def _http_url(value: str) -> str:
    if not re.match(r"^https?://[^/\s]+", value):
        raise _problem(f"{value!r} is not an http URL; use e.g. 'http://127.0.0.1:8000/health'")
    return value


# The JSON schemas describe what the file may hold (before normalization), for generated
# reference documentation and editor completion.
_NUMBER_OR_STRING: dict[str, Any] = {"anyOf": [{"type": "number"}, {"type": "string"}]}
_INT_OR_STRING: dict[str, Any] = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
_STRING: dict[str, Any] = {"type": "string"}
_COMMAND: dict[str, Any] = {
    "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]
}

Duration = Annotated[float, BeforeValidator(_duration), WithJsonSchema(_NUMBER_OR_STRING)]
PositiveDuration = Annotated[
    float, BeforeValidator(_positive_duration), WithJsonSchema(_NUMBER_OR_STRING)
]
Size = Annotated[int, BeforeValidator(_size), WithJsonSchema(_NUMBER_OR_STRING)]
Signal = Annotated[int, BeforeValidator(_signal), WithJsonSchema(_INT_OR_STRING)]
Argv = Annotated[tuple[str, ...], BeforeValidator(_argv), WithJsonSchema(_COMMAND)]
ConfigPath = Annotated[Path, PlainValidator(_path), WithJsonSchema(_STRING)]
UserOrGroup = Annotated[str | int, PlainValidator(_user_or_group), WithJsonSchema(_INT_OR_STRING)]
ServiceName = Annotated[str, AfterValidator(_service_name)]
EnvFiles = Annotated[
    tuple[ConfigPath, ...],
    BeforeValidator(_one_or_many),
    WithJsonSchema({"anyOf": [_STRING, {"type": "array", "items": _STRING}]}),
]
EnvTable = Annotated[
    dict[str, str],
    PlainValidator(_env),
    WithJsonSchema({"type": "object", "additionalProperties": _NUMBER_OR_STRING}),
]


# --------------------------------------------------------------------------- models


def _with_default_cwd(data: Any, info: ValidationInfo) -> Any:
    """A copy of the table ``data`` with ``cwd`` set to the config file's directory if unset."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    if "cwd" not in data and info.context and info.context.get("base_dir") is not None:
        data["cwd"] = str(info.context["base_dir"])
    return data


class _Section(BaseModel):
    """A table of the file: unknown keys are errors, TOML types are taken strictly."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, defer_build=True)


class DaemonSection(_Section):
    """``[daemon]``: where the daemon keeps its state and how it can be reached."""

    state_dir: ConfigPath | None = Field(
        default=None,
        description=(
            "Directory for the control socket, the store, logs and the pidfile; created "
            "with mode 0700. Relative paths are relative to the config file's directory. "
            "Default: $PROCVISOR_STATE_DIR, else '.procvisor/' beside the config file."
        ),
    )
    http: (
        Annotated[
            Endpoint,
            PlainValidator(_endpoint),
            PlainSerializer(_endpoint_text),
            WithJsonSchema(_STRING),
        ]
        | None
    ) = Field(
        default=None,
        description=(
            "Optional TCP listener for the HTTP API, as 'HOST:PORT' (e.g. '127.0.0.1:9876'). "
            "Every request on it must carry the bearer token of token_file. The Unix socket "
            "in state_dir is always there. Default: no TCP listener."
        ),
    )
    token_file: ConfigPath | None = Field(
        default=None,
        description=(
            "File holding the bearer token the TCP listener requires. Default: "
            "'<state_dir>/token', generated with mode 0600 on first start."
        ),
    )


class Backoff(_Section):
    """``[services.X] backoff``: delay before each restart after a failure."""

    initial: PositiveDuration = Field(
        default=0.5, description="Delay before the first restart. Default '500ms'."
    )
    max: PositiveDuration = Field(
        default=30.0, description="Cap on the delay, however many failures. Default '30s'."
    )
    multiplier: float = Field(
        default=2.0, ge=1.0, description="Factor applied per consecutive failure. Default 2.0."
    )
    jitter: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="Random spread as a fraction of the delay (0 to 1). Default 0.1.",
    )

    @model_validator(mode="after")
    def _initial_within_max(self) -> Backoff:
        if self.initial > self.max:
            raise _problem(
                f"{format_duration(self.initial)!r} is more than max "
                f"({format_duration(self.max)!r}); raise max or lower initial",
                "initial",
            )
        return self


class Hooks(_Section):
    """``[services.X.hooks]``: commands run around an instance's life.

    Each hook runs with the service's cwd and environment plus ``PROCVISOR_SERVICE``,
    ``PROCVISOR_INSTANCE``, ``PROCVISOR_PID`` and ``PROCVISOR_EXIT_CODE`` (empty when they do
    not apply), and is stopped (as a process group) after ``timeout``.
    """

    pre_start: Argv | None = Field(
        default=None,
        description=(
            "Runs before each start of an instance; if it fails or times out, the start "
            "fails (and counts against the restart budget)."
        ),
    )
    post_start: Argv | None = Field(
        default=None,
        description="Runs once the instance has stayed up for min_uptime; failures are logged.",
    )
    pre_stop: Argv | None = Field(
        default=None,
        description="Runs before the stop signal is sent; failures are logged.",
    )
    post_stop: Argv | None = Field(
        default=None, description="Runs after the instance has exited; failures are logged."
    )
    on_failure: Argv | None = Field(
        default=None,
        description=(
            "Runs when an instance exits with a code not in success_exit_codes, is killed by "
            "a signal, or exits before min_uptime."
        ),
    )
    timeout: PositiveDuration = Field(
        default=30.0,
        description="How long each hook may run before its group is stopped. Default '30s'.",
    )


class _Probe(_Section):
    interval: PositiveDuration = Field(
        default=10.0, description="Time between probes. Default '10s'."
    )
    timeout: PositiveDuration = Field(
        default=5.0, description="How long one probe may take before it fails. Default '5s'."
    )
    start_period: Duration = Field(
        default=0.0,
        description=(
            "Grace time after start during which failed probes do not count. Default '0s'."
        ),
    )
    failure_threshold: int = Field(
        default=3, ge=1, description="Consecutive failures that make it unhealthy. Default 3."
    )
    success_threshold: int = Field(
        default=1, ge=1, description="Consecutive successes that make it healthy. Default 1."
    )
    on_unhealthy: Literal["restart", "none"] = Field(
        default="restart",
        description=(
            "'restart': restart the unhealthy instance (stop, then start); 'none': only "
            "report it. Default 'restart'."
        ),
    )


class HttpProbe(_Probe):
    """``type = "http"``: healthy when a GET of ``url`` answers 2xx or 3xx in time."""

    type: Literal["http"] = Field(description="Probe kind: 'http', 'tcp' or 'exec'.")
    url: Annotated[str, AfterValidator(_http_url)] = Field(
        description="URL to GET, e.g. 'http://127.0.0.1:8000/health'. Required."
    )


class TcpProbe(_Probe):
    """``type = "tcp"``: healthy when a TCP connection to ``host:port`` opens in time."""

    type: Literal["tcp"] = Field(description="Probe kind: 'http', 'tcp' or 'exec'.")
    host: str = Field(default="127.0.0.1", description="Host to connect to. Default '127.0.0.1'.")
    port: int = Field(ge=1, le=65535, description="Port to connect to. Required.")


class ExecProbe(_Probe):
    """``type = "exec"``: healthy when ``command`` exits 0 in time."""

    type: Literal["exec"] = Field(description="Probe kind: 'http', 'tcp' or 'exec'.")
    command: Argv = Field(
        description=(
            "Command to run, as an array or a string (split like the service's command, "
            "through /bin/sh when the service sets shell = true). Required."
        )
    )


Probe = Annotated[HttpProbe | TcpProbe | ExecProbe, Field(discriminator="type")]


def _existing(paths: tuple[Path, ...]) -> tuple[Path, ...]:
    if not paths:
        raise _problem("is empty; give at least one file or directory to watch")
    for path in paths:
        if not path.exists():
            raise _problem(f"'{path}' does not exist; give a file or directory")
    return paths


class ChangeWatchSection(_Section):
    """``[services.X.restart_on_change]``: files whose changes restart the service."""

    paths: Annotated[
        tuple[ConfigPath, ...],
        BeforeValidator(_one_or_many),
        AfterValidator(_existing),
        WithJsonSchema({"anyOf": [_STRING, {"type": "array", "items": _STRING}]}),
    ] = Field(
        description=(
            "Files and directories (watched recursively) whose changes restart the running "
            "instances, one at a time; relative to the config file's directory. Required."
        ),
    )
    ignore: Annotated[tuple[str, ...], BeforeValidator(_one_or_many)] = Field(
        default=(),
        description=(
            "Glob patterns of changes that do not count, matched against the path under a "
            "watched one and each of its parts: '*.log', 'tmp', 'build/*'. .git, "
            "__pycache__, node_modules and the daemon's state directory never count. "
            "Default: none."
        ),
    )
    debounce: PositiveDuration = Field(
        default=0.5,
        description="Changes within this of each other make one restart. Default '500ms'.",
    )


class Logs(_Section):
    """``[services.X.logs]``: the instance's stdout and stderr, kept in files in state_dir."""

    max_size: Size = Field(
        default=10 * 1024 * 1024,
        description="Size at which a log file is rotated; 0 never rotates. Default '10M'.",
    )
    backups: int = Field(
        default=5, ge=0, description="Rotated files kept per log (oldest deleted). Default 5."
    )
    timestamps: bool = Field(
        default=False,
        description=(
            "Start every line with the time the daemon read it, in ISO 8601 local time with "
            "milliseconds ('2026-12-07T19:30:01.123+00:00 '), as PM2's --time. Default false."
        ),
    )
    merge_stderr: bool = Field(
        default=False,
        description=(
            "Send stderr to the stdout log, in the order written (supervisord's "
            "redirect_stderr); logs --stderr then shows that one log. Default false."
        ),
    )


class SocketSection(_Section):
    """``[sockets.NAME]``: a listening socket the daemon holds and hands to services."""

    address: Annotated[
        Endpoint | Path,
        PlainValidator(_listen_address),
        PlainSerializer(_listen_text),
        WithJsonSchema(_STRING),
    ] = Field(
        description=(
            "Where to listen: 'HOST:PORT' for TCP (e.g. '127.0.0.1:8000', '[::]:8000'), or "
            "a path with a '/' for a Unix socket (relative to the config file's directory). "
            "Required."
        )
    )
    backlog: int = Field(
        default=128,
        ge=1,
        le=65535,
        description="Connections the kernel queues until a service accepts them. Default 128.",
    )
    mode: Annotated[int, PlainValidator(_file_mode), WithJsonSchema(_INT_OR_STRING)] = Field(
        default=0o600,
        description=(
            "A Unix socket file's mode, as an octal string like '660'. Default '600' (only "
            "the daemon's user may connect)."
        ),
    )


class Service(_Section):
    """``[services.NAME]``: a long-running program, kept alive in ``instances`` copies."""

    command: Argv = Field(
        description=(
            "The program and its arguments: an array of strings, or a string split with "
            "shell-like quoting (shlex). A string runs through /bin/sh -c only with "
            "shell = true. Required."
        )
    )
    instances: Annotated[
        int,
        BeforeValidator(_instances),
        WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 1}, {"const": "max"}]}),
    ] = Field(
        default=1,
        ge=1,
        description=(
            "Copies to run, named NAME:0, NAME:1, ...; 'max': one per CPU this machine lets "
            "procvisor use. Default 1."
        ),
    )
    cwd: ConfigPath | None = Field(
        default=None,
        description=(
            "Working directory; relative paths are relative to the config file's directory. "
            "Default: the config file's directory."
        ),
    )
    env: EnvTable = Field(
        default_factory=dict,
        description=(
            "Environment variables to set, as a table; numbers are turned into strings. "
            "Default: none."
        ),
    )
    env_file: EnvFiles = Field(
        default=(),
        description=(
            "Files of KEY=VALUE lines (docker compose's and systemd's format; '#' comments, "
            "'export' and quotes accepted, nothing expanded), read at 'up' and at every reload; "
            "a path or an array of paths, relative to the config file, later ones winning. "
            "env wins over them. Default: none."
        ),
    )
    inherit_env: bool = Field(
        default=True,
        description=(
            "Start from the daemon's environment (true) or from an empty one plus env "
            "(false). Default true."
        ),
    )
    user: UserOrGroup | None = Field(
        default=None,
        description=(
            "Run as this user (name or uid); the group defaults to the user's primary group. "
            "Only when the daemon runs as root. Default: the daemon's user."
        ),
    )
    group: UserOrGroup | None = Field(
        default=None,
        description="Run with this group (name or gid). Only when the daemon runs as root.",
    )
    umask: Annotated[int, PlainValidator(_umask), WithJsonSchema(_INT_OR_STRING)] | None = Field(
        default=None,
        description="File mode creation mask, as an octal string like '022'. Default: inherited.",
    )
    restart: Literal["always", "on-failure", "never", "unless-stopped"] = Field(
        default="on-failure",
        description=(
            "When an exited instance is started again: 'always'; 'on-failure' (an exit code "
            "not in success_exit_codes, or a signal); 'never'; 'unless-stopped' (as always, "
            "and an instance stopped by hand stays stopped across daemon restarts). "
            "Default 'on-failure'."
        ),
    )
    success_exit_codes: Annotated[
        tuple[Annotated[int, Field(ge=0, le=255)], ...], BeforeValidator(_tuple)
    ] = Field(default=(0,), description="Exit codes that count as success. Default [0].")
    min_uptime: Duration = Field(
        default=1.0,
        description="An instance exiting sooner than this counts as a failed start. Default '1s'.",
    )
    backoff: Backoff = Field(
        default_factory=Backoff,
        description=(
            "Restart delay: { initial = '500ms', max = '30s', multiplier = 2.0, jitter = 0.1 }."
        ),
    )
    max_restarts: int = Field(
        default=5,
        ge=0,
        description=(
            "Failures within restart_window after which the service goes fatal (no more "
            "restarts until cooldown). Default 5."
        ),
    )
    restart_window: PositiveDuration = Field(
        default=60.0,
        description="Window in which max_restarts failures are counted. Default '60s'.",
    )
    cooldown: Duration = Field(
        default=300.0,
        description="Time a fatal service waits before one half-open attempt. Default '5m'.",
    )
    restart_cron: Annotated[str, PlainValidator(_cron), WithJsonSchema(_STRING)] | None = Field(
        default=None,
        description=(
            "Restart the running instances on this cron schedule, one at a time, each ready "
            "before the next (PM2's cron_restart), e.g. '0 4 * * *': for a program that "
            "leaks. 5 fields, or 6 with seconds last; local time. Default: never."
        ),
    )
    restart_on_change: ChangeWatchSection | None = Field(
        default=None,
        description=(
            "{ paths = ['src'], ignore = ['*.log'], debounce = '500ms' }: restart the running "
            "instances, rolling, when those files change (PM2's watch). Default: off."
        ),
    )
    stop_signal: Signal = Field(
        default=15,
        description="Signal that asks the process group to stop, e.g. 'TERM', 'INT'. Default TERM.",
    )
    stop_timeout: Duration = Field(
        default=10.0,
        description="Grace time after stop_signal before SIGKILL to the group. Default '10s'.",
    )
    depends_on: Annotated[
        dict[str, Literal["started", "healthy", "completed"]],
        BeforeValidator(_dependencies),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "array", "items": _STRING},
                    {
                        "type": "object",
                        "additionalProperties": {"enum": ["started", "healthy", "completed"]},
                    },
                ]
            }
        ),
    ] = Field(
        default_factory=dict,
        description=(
            "Services started before this one and stopped after it: an array of names (each "
            "started first), or a table of name = 'started' | 'healthy' | 'completed' "
            "('healthy': every instance of it passed its health probe first, as docker "
            "compose's condition: service_healthy; 'completed': every instance of it exited "
            "with a success code first, as service_completed_successfully, for a migration "
            "or set-up step). Default: none."
        ),
    )
    sockets: Annotated[tuple[str, ...], BeforeValidator(_tuple)] = Field(
        default=(),
        description=(
            "Names of [sockets.NAME] the instances get, as fds 3, 4, ... in this order, with "
            "LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID set as systemd's socket activation "
            "does. Every instance shares the same listening sockets. Default: none."
        ),
    )
    autostart: bool = Field(
        default=True, description="Start with the daemon (false: only on request). Default true."
    )
    notify: bool = Field(
        default=False,
        description=(
            "systemd's Type=notify: the instances get $NOTIFY_SOCKET and are 'starting' "
            "until they send READY=1 (sd_notify); STATUS= text shows in status. Default false."
        ),
    )
    start_timeout: PositiveDuration = Field(
        default=90.0,
        description=(
            "With notify: the time an instance has to send READY=1 before it is stopped as a "
            "failed start (EXTEND_TIMEOUT_USEC= extends it). Default '90s'."
        ),
    )
    watchdog: PositiveDuration | None = Field(
        default=None,
        description=(
            "With notify: the longest time between WATCHDOG=1 pings once ready, as systemd's "
            "WatchdogSec (WATCHDOG_USEC and WATCHDOG_PID are set); an instance that misses "
            "one is stopped and restarted as a failure. Default: none."
        ),
    )
    shell: bool = Field(
        default=False,
        description=(
            "Run string commands (command, hooks, exec probe) through /bin/sh -c. The "
            "command must then be a string. Default false."
        ),
    )
    hooks: Hooks = Field(default_factory=Hooks, description="Lifecycle hooks. Default: none.")
    health: Probe | None = Field(
        default=None, description="Health probe (http, tcp or exec). Default: none."
    )
    limits: Annotated[
        Limits,
        PlainValidator(_limits),
        PlainSerializer(_limits_table),
        WithJsonSchema(
            {
                "type": "object",
                "properties": {
                    "memory": _NUMBER_OR_STRING,
                    "cpu_time": _NUMBER_OR_STRING,
                    "wall_time": _NUMBER_OR_STRING,
                    "open_files": _INT_OR_STRING,
                    "processes": _INT_OR_STRING,
                    "core": _NUMBER_OR_STRING,
                    "cpus": _NUMBER_OR_STRING,
                    "nice": _INT_OR_STRING,
                },
                "additionalProperties": False,
            }
        ),
    ] = Field(
        default_factory=Limits,
        description=(
            "Resource limits per instance, as procvisor.Limits: memory (size), cpu_time "
            "(duration), wall_time (duration), open_files, processes, core (size), cpus "
            "(number), nice (-20 to 19). Default: none."
        ),
    )
    on_oom: Literal["restart", "none"] = Field(
        default="restart",
        description=(
            "When the kernel's OOM killer kills any process of an instance at its cgroup "
            "memory limit: restart the instance (systemd's OOMPolicy=stop), or none (only an "
            "'oom' event, for a master that replaces its own workers). Default 'restart'."
        ),
    )
    logs: Logs = Field(
        default_factory=Logs,
        description="Log files: { max_size = '10M', backups = 5, timestamps = false }.",
    )
    watch: Annotated[dict[str, Any], PlainValidator(_watch), _TABLE_SCHEMA] | None = Field(
        default=None,
        description=(
            "Sampled limits with an action: max_memory (size, on RSS), max_cpu (percent of "
            "one core), max_fds, max_threads, for (how long a breach must last), action = "
            "restart | stop | alert | throttle. Default: none."
        ),
    )

    @property
    def watch_limits(self) -> WatchLimits | None:
        """:attr:`watch`, parsed (:func:`procvisor.policy.alerts.parse_watch`)."""
        return None if self.watch is None else _parsed_watch(_policy_key(self.watch))

    @model_validator(mode="before")
    @classmethod
    def _prepare(cls, data: Any, info: ValidationInfo) -> Any:
        """Fill in the default ``cwd``; with ``shell = true``, wrap string commands in a shell.

        The default ``cwd`` is the config file's directory (``base_dir`` in the validation
        context). String commands (the command, hooks, an exec probe) become
        ``/bin/sh -c STRING`` here, before the fields are checked, because whether a string is
        split depends on another key; malformed values are left for the field checks.
        """
        if not isinstance(data, dict):
            return data
        data = _with_default_cwd(data, info)
        if data.get("shell") is not True:
            return data

        def wrap(value: Any) -> Any:
            return [*_SHELL, value] if isinstance(value, str) and value.strip() else value

        data["command"] = wrap(data.get("command"))
        hooks = data.get("hooks")
        if isinstance(hooks, dict):
            data["hooks"] = {k: v if k == "timeout" else wrap(v) for k, v in hooks.items()}
        health = data.get("health")
        if isinstance(health, dict) and health.get("type") == "exec":
            data["health"] = {**health, "command": wrap(health.get("command"))}
        return data

    @model_validator(mode="after")
    def _watchdog_needs_notify(self) -> Service:
        if self.watchdog is not None and not self.notify:
            raise _problem(
                "the pings come through $NOTIFY_SOCKET: set notify = true, or remove watchdog",
                "watchdog",
            )
        return self

    @model_validator(mode="after")
    def _shell_needs_string(self) -> Service:
        if self.shell and self.command[:2] != _SHELL:
            raise _problem(
                "shell = true runs a string command through /bin/sh; give command as one "
                "string, or remove shell",
                "shell",
            )
        return self


class CommandPoolSection(_Section):
    """``[pools.NAME]``: persistent workers that answer JSON requests line by line.

    The protocol is in docs/worker-protocol.md; ``procvisor pool submit NAME JSON`` sends a
    task. Workers' stderr goes to ``STATE_DIR/logs/pool-NAME.log``.
    """

    command: Argv = Field(
        description=(
            "The worker program and its arguments: an array of strings, or a string split "
            "with shell-like quoting (no shell runs). Required."
        )
    )
    workers: int | None = Field(
        default=None,
        ge=1,
        description=(
            "A fixed number of workers. Default: the number of CPUs, unless min_workers or "
            "max_workers is given."
        ),
    )
    min_workers: int | None = Field(
        default=None, ge=0, description="Autoscaling: never fewer workers than this. Default 0."
    )
    max_workers: int | None = Field(
        default=None,
        ge=1,
        description="Autoscaling: never more workers than this. Default max(min_workers, 1).",
    )
    cwd: ConfigPath | None = Field(
        default=None,
        description="Working directory. Default: the config file's directory.",
    )
    env: EnvTable = Field(default_factory=dict, description="Environment variables to set.")
    env_file: EnvFiles = Field(
        default=(),
        description=(
            "Files of KEY=VALUE lines (docker compose's and systemd's format; '#' comments, "
            "'export' and quotes accepted, nothing expanded), read when the pool starts; "
            "a path or an array of paths, relative to the config file, later ones winning. "
            "env wins over them. Default: none."
        ),
    )
    inherit_env: bool = Field(
        default=True, description="Start from the daemon's environment. Default true."
    )
    timeout: PositiveDuration | None = Field(
        default=None,
        description=(
            "Default per-task timeout; past it the worker is killed and replaced. Default: none."
        ),
    )
    idle_timeout: PositiveDuration = Field(
        default=60.0,
        description="A worker idle this long above min_workers is retired. Default '60s'.",
    )
    max_tasks_per_worker: int | None = Field(
        default=None, ge=1, description="Replace a worker after this many tasks. Default: never."
    )
    max_memory_per_worker: Size | None = Field(
        default=None,
        description="Replace a worker whose RSS exceeds this after a task. Default: never.",
    )
    max_worker_age: PositiveDuration | None = Field(
        default=None,
        description="Replace a worker older than this, between tasks. Default: never.",
    )
    ping_interval: Duration = Field(
        default=30.0,
        description=("A worker idle this long gets a health ping; 0 sends none. Default '30s'."),
    )
    ping_timeout: PositiveDuration = Field(
        default=5.0,
        description="A ping not answered within this replaces the worker. Default '5s'.",
    )
    prefetch: int = Field(
        default=0,
        ge=0,
        le=8,
        description="Tasks sent ahead to a busy worker (0 to 8). Default 0.",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_cwd(cls, data: Any, info: ValidationInfo) -> Any:
        return _with_default_cwd(data, info)

    @model_validator(mode="after")
    def _sizing(self) -> CommandPoolSection:
        if self.workers is not None and (
            self.min_workers is not None or self.max_workers is not None
        ):
            raise _problem("give either workers, or min_workers/max_workers, not both", "workers")
        if (
            self.min_workers is not None
            and self.max_workers is not None
            and self.min_workers > self.max_workers
        ):
            raise _problem(
                f"{self.min_workers} is more than max_workers ({self.max_workers})",
                "min_workers",
            )
        return self


class MonitorSection(_Section):
    """``[monitor]``: how often managed processes are sampled, and how long history is kept."""

    interval: PositiveDuration = Field(
        default=2.0,
        description=(
            "Time between two samples of every process, at most often (see cpu_budget). "
            "Default '2s'."
        ),
    )
    cpu_budget: float = Field(
        default=0.05,
        ge=0.0,
        le=100.0,
        description=(
            "Percent of one core that sampling may use on average: when a round costs more, "
            "the next waits longer than interval (not while `top` or `inspect` is watching). "
            "0: no budget. Default 0.05."
        ),
    )
    history: PositiveDuration = Field(
        default=600.0,
        description="Full-resolution samples kept in memory per instance. Default '10m'.",
    )
    retention: PositiveDuration = Field(
        default=86400.0,
        description="1-minute averages kept in the store. Default '24h'.",
    )


_TABLE_SCHEMA = WithJsonSchema({"type": "object"})


def _resources(value: Any) -> dict[str, float]:
    """``[jobs.capacity]`` keys other than cpu and memory: named amounts such as ``gpu = 2``."""
    if not isinstance(value, dict):
        raise _problem(f"expected a table, got {_got(value)}")
    for key, item in value.items():
        if isinstance(item, bool) or not isinstance(item, int | float) or item < 0:
            raise _problem(f"{_toml_repr(item)} must be a number, 0 or more", key)
    return {str(k): float(v) for k, v in value.items()}


class CapacitySection(_Section):
    """``[jobs.capacity]``: what this node offers to jobs; defaults from the machine."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    cpu: float | None = Field(
        default=None, gt=0, description="Cores for jobs. Default: every core of the machine."
    )
    memory: Size | None = Field(
        default=None, description="Memory for jobs. Default: all of the machine's memory."
    )

    @property
    def resources(self) -> dict[str, float]:
        """The other keys (``gpu = 2``): named resources jobs may request."""
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _numbers(self) -> CapacitySection:
        _resources(self.model_extra or {})
        return self


class JobsSection(_Section):
    """``[jobs]``: the scheduler of command jobs (``procvisor submit``)."""

    policy: Literal["fifo", "priority", "fair", "edf"] = Field(
        default="priority",
        description=(
            "Queue discipline: fifo; priority (five levels with aging); fair (weighted fair "
            "share of CPU-seconds between tenants); edf (earliest deadline first). "
            "Default 'priority'."
        ),
    )
    max_running: int | None = Field(
        default=None, ge=1, description="The most jobs running at once. Default: no limit."
    )
    capacity: CapacitySection = Field(
        default_factory=CapacitySection,
        description="{ cpu = 2, memory = '16G', gpu = 1 }: what jobs may use together.",
    )
    aging: Duration = Field(
        default=10.0,
        description="Waiting this long raises a job's priority a level. Default '10s'.",
    )
    half_life: PositiveDuration | None = Field(
        default=None,
        description="Fair share forgets half of a tenant's CPU-seconds this often. Default: never.",
    )
    preempt: Literal["off", "suspend", "requeue"] = Field(
        default="off",
        description=(
            "What a waiting higher-priority job may do to --preemptible ones: suspend "
            "(SIGSTOP) or requeue them (priority policy only). Default 'off'."
        ),
    )
    grace: Duration = Field(
        default=10.0, description="Stop signal to SIGKILL when a job is stopped. Default '10s'."
    )
    log_max_size: Size = Field(
        default=8 * 1024 * 1024, description="Output kept per job (its tail). Default '8M'."
    )
    enforce: list[Literal["cpu", "memory"]] = Field(
        default_factory=list,
        description=(
            "Requests that are also limits of a job's process tree (cgroups): cpu (a CPU "
            "quota of the cores requested), memory (the OOM killer ends a job over its "
            "request). Default: none, requests only decide admission."
        ),
    )

    @model_validator(mode="after")
    def _preempt_needs_priority(self) -> JobsSection:
        if self.preempt != "off" and self.policy != "priority":
            raise _problem(
                f"preempt = '{self.preempt}' works only with policy = 'priority' (a requeued "
                "job could overtake the one it was stopped for); set preempt = 'off'",
                "preempt",
            )
        return self


class QuotaSection(_Section):
    """``[quotas.TENANT]``: what one tenant's running jobs may take together."""

    max_running: int | None = Field(default=None, ge=1, description="Jobs running at once.")
    cpu: float | None = Field(default=None, gt=0, description="Cores.")
    memory: Size | None = Field(default=None, description="Memory.")
    weight: float = Field(
        default=1.0, gt=0, description="Share under policy = 'fair', relative. Default 1."
    )


class AlertsSection(_Section):
    """``[alerts]``: alert rules, the built-in ones, and the notifiers alerts go to."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    builtin: bool = Field(
        default=True,
        description=(
            "Evaluate the built-in rules: service fatal, flapping, probe failing, restart "
            "storm. Default true."
        ),
    )
    # The tables are kept as written, so that a config dumps and validates again unchanged;
    # rule_list() and notifier_list() give the parsed forms.
    rules: Annotated[dict[str, Any], PlainValidator(_rules), _TABLE_SCHEMA] = Field(
        default_factory=dict,
        description=(
            "Rules by name: expr (e.g. \"rss > 400M and service == 'web'\") or kind "
            "(fatal, flapping, probe-failing, restart-storm), for, severity, summary."
        ),
    )
    notifiers: Annotated[dict[str, Any], PlainValidator(_notifiers), _TABLE_SCHEMA] = Field(
        default_factory=dict,
        description=(
            "Where alerts go, by name: type = webhook (url, format = json | slack | "
            "alertmanager, headers, timeout, attempts, backoff), command (command, timeout), "
            "email (host, port, from, to, username, password, starttls) or log; each with "
            "min_severity and rules to filter."
        ),
    )

    def rule_list(self) -> list[AlertRule]:
        """The configured rules, parsed, in file order."""
        return [_parsed_rule(n, _policy_key(t)) for n, t in self.rules.items()]

    def notifier_list(self) -> list[NotifierSpec]:
        """The configured notifiers, parsed, in file order."""
        return [_parsed_notifier(n, _policy_key(t)) for n, t in self.notifiers.items()]


class Config(_Section):
    """A whole config file: ``[daemon]``, ``[services.NAME]`` and ``[pools.NAME]`` tables."""

    daemon: DaemonSection = Field(
        default_factory=DaemonSection, description="Settings of the daemon itself."
    )
    services: dict[ServiceName, Service] = Field(
        default_factory=dict,
        description=("Services by name (letters, digits, '-', '_'), in the order of the file."),
    )
    pools: dict[ServiceName, CommandPoolSection] = Field(
        default_factory=dict,
        description="Command pools by name (letters, digits, '-', '_').",
    )
    sockets: dict[ServiceName, SocketSection] = Field(
        default_factory=dict,
        description=(
            "Listening sockets by name, bound by the daemon and passed to the services that "
            "name them. Default: none."
        ),
    )
    monitor: MonitorSection = Field(
        default_factory=MonitorSection, description="Sampling of managed processes."
    )
    alerts: AlertsSection = Field(
        default_factory=AlertsSection, description="Alert rules and notifiers."
    )
    jobs: JobsSection = Field(default_factory=JobsSection, description="The job scheduler.")
    quotas: dict[ServiceName, QuotaSection] = Field(
        default_factory=dict,
        description=(
            "Quotas by tenant; 'default' applies to every tenant without its own. Default: none."
        ),
    )

    @model_validator(mode="after")
    def _dependencies_resolve(self) -> Config:
        problems = _dependency_problems(
            {name: tuple(service.depends_on) for name, service in self.services.items()}
        )
        if problems:
            first = problems[0]
            raise _problem(first.message, *first.keys)
        for name, service in self.services.items():
            for dependency, condition in service.depends_on.items():
                keys = ("services", name, "depends_on", dependency)
                if condition == "healthy" and self.services[dependency].health is None:
                    raise _problem(
                        f"'healthy' needs a health probe, and [services.{dependency}] has "
                        f"none; add [services.{dependency}.health] or use 'started'",
                        *keys,
                    )
                restart = self.services[dependency].restart
                if condition == "completed" and restart in ("always", "unless-stopped"):
                    raise _problem(
                        f"'completed' waits for {dependency} to end, and its restart = "
                        f"'{restart}' starts it again; use restart = 'on-failure' or "
                        "'never' there, or 'started' here",
                        *keys,
                    )
        return self

    @model_validator(mode="after")
    def _sockets_resolve(self) -> Config:
        for name, service in self.services.items():
            for i, socket_name in enumerate(service.sockets):
                keys = ("services", name, "sockets", i)
                if socket_name not in self.sockets:
                    hint = _choice_hint(socket_name, list(self.sockets), "sockets")
                    raise _problem(f"no [sockets.{socket_name}] in this file; {hint}", *keys)
                if socket_name in service.sockets[:i]:
                    raise _problem(f"{socket_name!r} is listed twice", *keys)
        addresses: dict[str, str] = {}
        for name, sock in self.sockets.items():
            address = str(sock.address)
            if address in addresses:
                raise _problem(
                    f"{address} is the address of [sockets.{addresses[address]}] too; "
                    "one socket can serve several services: list it in each",
                    "sockets",
                    name,
                    "address",
                )
            addresses[address] = name
        return self

    def start_order(self) -> tuple[str, ...]:
        """Service names, each after the services it depends on (file order otherwise)."""
        order: list[str] = []
        seen: set[str] = set()

        def visit(name: str) -> None:
            if name in seen:
                return
            seen.add(name)
            for dependency in self.services[name].depends_on:
                visit(dependency)
            order.append(name)

        for name in self.services:
            visit(name)
        return tuple(order)

    def stop_order(self) -> tuple[str, ...]:
        """The reverse of :meth:`start_order`: dependents stop before their dependencies."""
        return tuple(reversed(self.start_order()))


# --------------------------------------------------------------------------- dependencies


class _DependencyProblem(NamedTuple):
    keys: tuple[str, ...]
    message: str


def _dependency_problems(graph: Mapping[str, Sequence[str]]) -> list[_DependencyProblem]:
    """Unknown dependencies and cycles in ``{service: depends_on}``, in file order."""
    problems: list[_DependencyProblem] = []
    for name, dependencies in graph.items():
        for dependency in dependencies:
            if dependency not in graph:
                problems.append(
                    _DependencyProblem(
                        ("services", name, "depends_on"),
                        f"{dependency!r} is not a service; "
                        + _choice_hint(dependency, list(graph), "defined services"),
                    )
                )

    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    stack: list[str] = []
    reported: set[frozenset[str]] = set()

    def visit(name: str) -> None:
        colour[name] = grey
        stack.append(name)
        for dependency in graph[name]:
            if dependency not in graph:
                continue
            if colour[dependency] == grey:
                cycle = [*stack[stack.index(dependency) :], dependency]
                if frozenset(cycle) not in reported:
                    reported.add(frozenset(cycle))
                    problems.append(
                        _DependencyProblem(
                            ("services", cycle[0], "depends_on"),
                            "dependency cycle: "
                            + " -> ".join(cycle)
                            + "; remove one of these dependencies",
                        )
                    )
            elif colour[dependency] == white:
                visit(dependency)
        stack.pop()
        colour[name] = black

    for name in graph:
        if colour[name] == white:
            visit(name)
    return problems


def _raw_dependency_graph(raw: Mapping[str, Any]) -> dict[str, list[str]] | None:
    """``{service: depends_on}`` from the parsed TOML, skipping what the models will reject."""
    services = raw.get("services")
    if not isinstance(services, dict):
        return None
    graph: dict[str, list[str]] = {}
    for name, table in services.items():
        depends_on = table.get("depends_on", []) if isinstance(table, dict) else []
        if not isinstance(depends_on, list | dict):
            depends_on = []
        graph[name] = [d for d in depends_on if isinstance(d, str)]
    return graph


# --------------------------------------------------------------------------- error reports


def _unknown_key_message(key: str, accepted: Iterable[str]) -> str:
    return "unknown key; " + _choice_hint(str(key), list(accepted), "accepted keys")


def _choice_hint(word: str, choices: list[str], what: str) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    if not choices:
        return f"there are no {what}"
    return f"{what}: " + ", ".join(choices)


def _strip_optional(annotation: Any) -> Any:
    """Peel ``Annotated[...]`` and ``X | None`` down to the type that holds the keys."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _walk(loc: Sequence[str | int]) -> tuple[tuple[str | int, ...], Any]:
    """The keys of the file that ``loc`` names, and the type found at the end of it.

    pydantic's ``loc`` also holds the tag of a tagged union (``health.tcp.port``), which is
    not a key of the file; it is dropped here.
    """
    keys: list[str | int] = []
    node: Any = Config
    for item in loc:
        node = _strip_optional(node)
        if typing.get_origin(node) in (Union, types.UnionType):
            tagged = [m for m in typing.get_args(node) if _is_model(m) and "type" in m.model_fields]
            match = [m for m in tagged if _tag(m) == item]
            if match:
                node = match[0]
                continue
        keys.append(item)
        if _is_model(node):
            field = node.model_fields.get(str(item))
            node = field.annotation if field is not None else None
        elif typing.get_origin(node) is dict:
            node = typing.get_args(node)[1]
        elif typing.get_origin(node) is tuple:
            node = typing.get_args(node)[0]
        else:
            node = None
    return tuple(keys), _strip_optional(node)


def _tag(model: Any) -> object:
    """The ``type`` value that selects ``model`` in a tagged union."""
    return typing.get_args(model.model_fields["type"].annotation)[0]


def _key_path(keys: Iterable[str | int]) -> str:
    """``("services", "web", "env", "A B")`` -> ``services.web.env."A B"``; indices as ``[1]``."""
    shown = ""
    for key in keys:
        if isinstance(key, int):
            shown += f"[{key}]"
            continue
        text = key if _BARE_KEY_RE.match(key) else '"' + key.replace('"', '\\"') + '"'
        shown = f"{shown}.{text}" if shown else text
    return shown


def _file_position(raw: Any, keys: Sequence[str | int]) -> tuple[int, ...]:
    """Where ``keys`` sit in the parsed file (tables keep the file's order), for sorting."""
    position: list[int] = []
    node = raw
    for key in keys:
        if isinstance(node, dict) and key in node:
            position.append(list(node).index(key))
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
            position.append(key)
            node = node[key]
        else:
            position.append(sys.maxsize)  # a missing key: after the keys that are there
            break
    return tuple(position)


_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "tuple_type": "an array",
    "list_type": "an array",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}


def _describe_error(error: Any) -> tuple[tuple[str | int, ...], str]:
    """One pydantic error as the keys of the file it concerns and a message."""
    kind: str = error["type"]
    loc: list[str | int] = list(error["loc"])
    ctx: dict[str, Any] = error.get("ctx") or {}
    value = error.get("input")
    if loc and loc[-1] == "[key]":
        loc.pop()
    if kind == _ERROR_TYPE:
        loc.extend(ctx.get("keys", ()))
        message = str(ctx["message"])
    elif kind == "extra_forbidden":
        _, parent = _walk(loc[:-1])
        accepted = list(parent.model_fields) if _is_model(parent) else []
        message = _unknown_key_message(str(loc[-1]), accepted)
    elif kind == "missing":
        message = "is required but missing"
    elif kind in _EXPECTED:
        message = f"expected {_EXPECTED[kind]}, got {_got(value)}"
    elif kind == "literal_error":
        message = f"{_toml_repr(value)} is not accepted; use {ctx['expected']}"
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        loc.append(ctx["discriminator"].strip("'"))
        _, union = _walk(loc[:-1])
        tags = ", ".join(repr(_tag(m)) for m in typing.get_args(union) if _is_model(m))
        if kind == "union_tag_invalid":
            message = f"{_toml_repr(ctx['tag'])} is not accepted; use one of {tags}"
        else:
            message = f"is required but missing; use one of {tags}"
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = {
            "greater_than_equal": f"{ctx.get('ge')} or more",
            "greater_than": f"more than {ctx.get('gt')}",
            "less_than_equal": f"{ctx.get('le')} or less",
            "less_than": f"less than {ctx.get('lt')}",
        }[kind]
        message = f"{_toml_repr(value)} must be {bound}"
    elif kind == "value_error":
        message = str(ctx.get("error", error["msg"]))
    else:
        message = str(error["msg"])
    keys, _ = _walk(loc)
    return keys, message


# --------------------------------------------------------------------------- loading


def _syntax_error(exc: tomllib.TOMLDecodeError, text: str, source: str) -> ConfigError:
    """A TOML syntax error as a ``ConfigError`` naming the line and column."""
    message = str(exc)
    line = column = None
    match = _TOML_POSITION_RE.search(message)
    if match is not None:
        line, column = int(match.group(1)), int(match.group(2))
        message = message[: match.start()]
    elif message.endswith(_TOML_END):
        # tomllib reports some errors (a key set twice on the last line) "at end of document".
        last = text.rstrip("\n").split("\n")
        line, column = len(last), len(last[-1]) + 1
        message = message.removesuffix(_TOML_END)
    return ConfigError.single(source, "", f"invalid TOML: {message}", line=line, column=column)


def parse_config(
    text: str, *, source: str = DEFAULT_CONFIG_NAME, base_dir: str | os.PathLike[str] | None = None
) -> Config:
    """Validate the text of a config file; look at nothing on the machine.

    Args:
        text: the TOML text.
        source: the file's name as the user knows it, for error lines.
        base_dir: directory that relative paths (``cwd``, ``state_dir``, ...) are resolved
            against, and every service's default ``cwd``; the current directory if omitted.

    Raises:
        ConfigError: with every problem found.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(exc, text, source) from None
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    try:
        return Config.model_validate(raw, context={"base_dir": base.absolute()})
    except ValidationError as exc:
        found = [_describe_error(error) for error in exc.errors(include_url=False)]
    graph = _raw_dependency_graph(raw)
    if graph is not None:
        # The model checks dependencies only once every field is valid; check them now too,
        # so that one pass reports everything.
        found.extend(_dependency_problems(graph))
    unique = dict.fromkeys((tuple(keys), message) for keys, message in found)
    ordered = sorted(unique, key=lambda problem: _file_position(raw, problem[0]))
    raise ConfigError(
        source, [ConfigProblem(_key_path(keys), message) for keys, message in ordered]
    )


def check_runtime(
    config: Config, *, source: str = DEFAULT_CONFIG_NAME, euid: int | None = None
) -> None:
    """Check what the config asks of this machine: users, groups, working directories and
    environment files.

    Args:
        euid: the effective uid the daemon runs as; the current process's if omitted.

    Raises:
        ConfigError: with every problem found.
    """
    euid = os.geteuid() if euid is None else euid
    problems: list[ConfigProblem] = []
    for name, service in config.services.items():
        for key, value, lookup in (
            ("user", service.user, pwd.getpwnam),
            ("group", service.group, grp.getgrnam),
        ):
            if value is None:
                continue
            path = f"services.{name}.{key}"
            if euid != 0:
                problems.append(
                    ConfigProblem(
                        path,
                        f"{key} = {_toml_repr(value)} needs the daemon to run as root (it "
                        f"runs as uid {euid}); remove {key}, or start procvisor as root",
                    )
                )
            elif isinstance(value, str):
                try:
                    lookup(value)
                except KeyError:
                    problems.append(
                        ConfigProblem(
                            path, f"no {key} {value!r} on this system; use an existing one"
                        )
                    )
    env_files = [(f"services.{n}.env_file", s.env_file) for n, s in config.services.items()]
    env_files += [(f"pools.{n}.env_file", p.env_file) for n, p in config.pools.items()]
    for key, paths in env_files:
        try:
            read_env_files(paths)
        except EnvFileError as exc:
            problems.append(ConfigProblem(key, str(exc)))
    cwds = [(f"services.{n}.cwd", s.cwd) for n, s in config.services.items()]
    cwds += [(f"pools.{n}.cwd", p.cwd) for n, p in config.pools.items()]
    for key, cwd in cwds:
        if cwd is not None and not cwd.is_dir():
            problems.append(
                ConfigProblem(key, f"{str(cwd)!r} is not a directory; create it or fix the path")
            )
    if problems:
        raise ConfigError(source, problems)


def load_config(path: str | os.PathLike[str], *, runtime: bool = True) -> Config:
    """Read, validate and (with ``runtime``) check a config file against this machine.

    Relative paths in the file are resolved against the file's directory. Error lines name
    the file as ``path`` was given.

    Raises:
        ConfigError: the file cannot be read, or with every problem found in it.
    """
    source = os.fspath(path)
    file = Path(path)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError.single(source, "", "no such file") from None
    except IsADirectoryError:
        raise ConfigError.single(source, "", "is a directory; name a .toml file") from None
    except OSError as exc:
        raise ConfigError.single(source, "", f"cannot be read: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError.single(
            source, "", f"is not UTF-8 text (byte {exc.start}); TOML files are UTF-8"
        ) from None
    config = parse_config(text, source=source, base_dir=file.absolute().parent)
    if runtime:
        check_runtime(config, source=source)
    return config


def state_dir(config: Config, config_path: str | os.PathLike[str]) -> Path:
    """The daemon's state directory (an absolute path; not created here).

    ``[daemon] state_dir`` if set, else ``$PROCVISOR_STATE_DIR`` if set and not empty
    (relative to the current directory), else ``.procvisor/`` beside the config file.
    """
    if config.daemon.state_dir is not None:
        return config.daemon.state_dir.absolute()
    return default_state_dir(config_path)
