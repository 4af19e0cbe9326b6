"""Notifier settings: ``[alerts.notifiers.NAME]`` tables parsed into frozen specs.

:func:`parse_notifier` turns one table into a :class:`NotifierSpec`: a filter
(``min_severity``, ``rules``), a queue size, and a target -- :class:`WebhookSpec`,
:class:`CommandSpec`, :class:`EmailSpec` or :class:`LogSpec`. Secrets (webhook header values,
the URL's path, the SMTP password) never show in a ``repr`` or in
:meth:`NotifierSpec.describe`. Delivery is :mod:`procvisor.monitor._notify`'s; this module is
pure, so the daemon's config can check notifiers without loading HTTP or SMTP clients.
"""

from __future__ import annotations

import difflib
import math
import re
import shlex
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar, Final

from procvisor.policy.alerts import AlertEvent, Severity, parse_severity
from procvisor.policy.restart import Backoff
from procvisor.policy.units import DURATION_FORMS, parse_duration

if TYPE_CHECKING:
    pass

__all__ = [
    "CommandSpec",
    "EmailSpec",
    "LogSpec",
    "NotifierSpec",
    "NotifierType",
    "Target",
    "WebhookFormat",
    "WebhookSpec",
    "parse_notifier",
]

REDACTED: Final = "***"
_BACKOFF_MAX: Final = 30.0
COMMAND_GRACE: Final = 1.0
"""Seconds a timed-out notification command gets between its stop signal and SIGKILL."""

# ----------------------------------------------------------------------------------- specs


class NotifierType(StrEnum):
    """The ``type`` of a notifier in the configuration."""

    WEBHOOK = "webhook"
    COMMAND = "command"
    EMAIL = "email"
    LOG = "log"


class WebhookFormat(StrEnum):
    """The body a webhook POSTs (see :func:`webhook_payload`)."""

    JSON = "json"
    """procvisor's own: the event as a JSON object (:func:`alert_payload`)."""
    SLACK = "slack"
    """A Slack incoming-webhook message with a severity colour (:func:`slack_payload`)."""
    ALERTMANAGER = "alertmanager"
    """A list of one alert, as Alertmanager's ``POST /api/v2/alerts`` takes it."""


def _positive(value: float, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{key}: {value!r} must be a finite number of seconds")
    if value <= 0:
        raise ValueError(f"{key}: {value!r} must be a duration of more than 0, e.g. '10s'")


def redact_url(url: str) -> str:
    """Keep the scheme, host and port: a webhook URL's path or query often is the secret."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    hidden = parts.path not in ("", "/") or parts.query or parts.username
    return f"{parts.scheme}://{netloc}" + (f"/{REDACTED}" if hidden else "")


@dataclass(frozen=True, slots=True, repr=False)
class WebhookSpec:
    """POST each notification as JSON to ``url``.

    Attributes:
        url: an ``http://`` or ``https://`` URL.
        format: the body's format.
        headers: extra request headers as ``(name, value)`` pairs (e.g. ``Authorization``);
            their values are secrets and never shown.
        timeout: seconds each attempt may take.
        attempts: how many tries in all; connection errors, timeouts and 5xx answers are
            retried, any other answer is not.
        backoff: seconds before the first retry, doubling each retry (at most 30 s).
        generator_url: the ``generatorURL`` of Alertmanager alerts (a link back to procvisor).

    Raises:
        ValueError: a value is invalid; the message starts with its configuration key.
    """

    url: str
    format: WebhookFormat = WebhookFormat.JSON
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 10.0
    attempts: int = 3
    backoff: float = 0.5
    generator_url: str | None = None
    type: ClassVar[NotifierType] = NotifierType.WEBHOOK

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url) if isinstance(self.url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"url: {self.url!r} is not an http(s) URL; write e.g. 'https://hooks.example.com/x'"
            )
        if not isinstance(self.format, WebhookFormat):
            raise ValueError(f"format: {self.format!r} is not a WebhookFormat")
        for name, value in self.headers:
            if not isinstance(name, str) or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
                raise ValueError(f"headers: {name!r} is not a valid header name")
            if not isinstance(value, str) or "\r" in value or "\n" in value:
                raise ValueError(f"headers.{name}: the value must be a string on one line")
        _positive(self.timeout, "timeout")
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise ValueError(f"attempts: {self.attempts!r} must be a whole number of 1 or more")
        if self.attempts < 1:
            raise ValueError(f"attempts: {self.attempts!r} must be a whole number of 1 or more")
        _positive(self.backoff, "backoff")
        if self.generator_url is not None and not isinstance(self.generator_url, str):
            raise ValueError(f"generator_url: {self.generator_url!r} must be a string")

    @property
    def retry_backoff(self) -> Backoff:
        """The delays between attempts: ``backoff`` doubling, capped, with 10% jitter."""
        return Backoff(self.backoff, max(self.backoff, _BACKOFF_MAX), 2.0, 0.1)

    @property
    def deadline(self) -> float:
        """The longest one delivery may take: every attempt and every backoff, plus slack."""
        waits = sum(self.retry_backoff.delay(n, 0.999) for n in range(1, self.attempts))
        return self.attempts * self.timeout + waits + 1.0

    def describe(self) -> dict[str, object]:
        """The settings, fit to show: header values and the URL's path are redacted."""
        out: dict[str, object] = {
            "url": redact_url(self.url),
            "format": self.format.value,
            "timeout": self.timeout,
            "attempts": self.attempts,
            "backoff": self.backoff,
        }
        if self.headers:
            out["headers"] = {name: REDACTED for name, _ in self.headers}
        if self.generator_url is not None:
            out["generator_url"] = self.generator_url
        return out

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.describe().items())
        return f"WebhookSpec({fields})"


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """Run a command with the event as JSON on its stdin; a non-zero exit is a failure.

    The command also gets ``PROCVISOR_ALERT_KIND``, ``_RULE``, ``_SEVERITY`` and ``_SUMMARY``
    in its environment, for scripts that would rather not parse JSON.

    Attributes:
        command: an argv tuple, or a string split like a shell would (run by ``/bin/sh -c``
            with ``shell``).
        shell: run ``command`` through ``/bin/sh -c``.
        timeout: seconds before its process group is stopped and the delivery failed.

    Raises:
        ValueError: a value is invalid; the message starts with its configuration key.
    """

    command: str | tuple[str, ...]
    shell: bool = False
    timeout: float = 30.0
    type: ClassVar[NotifierType] = NotifierType.COMMAND

    def __post_init__(self) -> None:
        if isinstance(self.command, str):
            if not self.command.strip():
                raise ValueError("command: empty; give the program to run and its arguments")
            if not self.shell:
                try:
                    shlex.split(self.command)
                except ValueError as exc:
                    raise ValueError(
                        f"command: {self.command!r} cannot be split into arguments: {exc}"
                    ) from None
        elif (
            not isinstance(self.command, tuple)
            or not self.command
            or not all(isinstance(a, str) for a in self.command)
            or not self.command[0]
        ):
            raise ValueError(f"command: {self.command!r} must be a non-empty list of strings")
        if not isinstance(self.shell, bool):
            raise ValueError(f"shell: {self.shell!r} must be true or false")
        _positive(self.timeout, "timeout")

    @property
    def deadline(self) -> float:
        """The longest one delivery may take: the timeout, the stop's grace, plus slack."""
        return self.timeout + COMMAND_GRACE + 1.0

    def describe(self) -> dict[str, object]:
        """The settings, fit to show."""
        command = self.command if isinstance(self.command, str) else list(self.command)
        return {"command": command, "shell": self.shell, "timeout": self.timeout}


@dataclass(frozen=True, slots=True, repr=False)
class EmailSpec:
    """Send a mail through an SMTP server (stdlib :mod:`smtplib`, in a thread).

    Attributes:
        host, port: the SMTP server (port 587 by default, 25 without STARTTLS).
        sender: the ``From`` address (``from`` in the configuration).
        to: the recipients.
        username, password: log in with these (both or neither); the password is never shown.
        starttls: upgrade the connection with STARTTLS before anything else is sent; a server
            that does not offer it fails the delivery rather than getting the mail in clear.
        ca_file: a PEM file of CA certificates to trust instead of the system's (for a server
            with a private CA).
        timeout: seconds one delivery may take (also the timeout of each socket operation).

    Raises:
        ValueError: a value is invalid; the message starts with its configuration key.
    """

    host: str
    sender: str
    to: tuple[str, ...]
    port: int = 587
    username: str | None = None
    password: str | None = None
    starttls: bool = True
    ca_file: str | None = None
    timeout: float = 30.0
    type: ClassVar[NotifierType] = NotifierType.EMAIL

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host.strip():
            raise ValueError(f"host: {self.host!r} must be the SMTP server's name or address")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise ValueError(f"port: {self.port!r} must be a port number from 1 to 65535")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port: {self.port!r} must be a port number from 1 to 65535")
        _check_address(self.sender, "from")
        if not isinstance(self.to, tuple) or not self.to:
            raise ValueError("to: give at least one recipient, e.g. ['ops@example.com']")
        for i, address in enumerate(self.to):
            _check_address(address, f"to[{i}]")
        if self.username is not None and self.password is None:
            raise ValueError("password: required with a username")
        if self.password is not None and self.username is None:
            raise ValueError("username: required with a password")
        if not isinstance(self.starttls, bool):
            raise ValueError(f"starttls: {self.starttls!r} must be true or false")
        _positive(self.timeout, "timeout")

    @property
    def deadline(self) -> float:
        """The longest one delivery may take."""
        return self.timeout

    def describe(self) -> dict[str, object]:
        """The settings, fit to show: the password is redacted."""
        out: dict[str, object] = {
            "host": self.host,
            "port": self.port,
            "from": self.sender,
            "to": list(self.to),
            "starttls": self.starttls,
            "timeout": self.timeout,
        }
        if self.username is not None:
            out["username"] = self.username
            out["password"] = REDACTED
        if self.ca_file is not None:
            out["ca_file"] = self.ca_file
        return out

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.describe().items())
        return f"EmailSpec({fields})"


def _check_address(value: object, key: str) -> None:
    if (
        not isinstance(value, str)
        or "@" not in value
        or any(c in value for c in "\r\n")
        or not value.strip()
    ):
        raise ValueError(f"{key}: {value!r} is not a mail address, e.g. 'ops@example.com'")


@dataclass(frozen=True, slots=True)
class LogSpec:
    """Write one line per notification to the ``procvisor.alerts`` logger.

    The level follows the severity: info → INFO, warning → WARNING, critical → ERROR,
    emergency → CRITICAL; a resolved alert logs at INFO.
    """

    type: ClassVar[NotifierType] = NotifierType.LOG

    @property
    def deadline(self) -> float | None:
        """None: writing a log line has no timeout."""
        return None

    def describe(self) -> dict[str, object]:
        """The settings, fit to show (none)."""
        return {}


Target = WebhookSpec | CommandSpec | EmailSpec | LogSpec
"""Where a notifier delivers."""


@dataclass(frozen=True, slots=True)
class NotifierSpec:
    """One configured notifier: which alerts it takes and where it delivers them.

    Attributes:
        name: its name (the key under ``[alerts.notifiers]``).
        target: where it delivers.
        min_severity: it takes alerts of this severity or worse.
        rules: it takes only alerts of these rules (None: every rule).
        queue_size: notifications waiting beyond this many drop the oldest.

    Raises:
        ValueError: ``name`` is empty or ``queue_size`` is below 1.
    """

    name: str
    target: Target
    min_severity: Severity = Severity.INFO
    rules: frozenset[str] | None = None
    queue_size: int = 100

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"name: {self.name!r} must be a non-empty string")
        if not isinstance(self.min_severity, Severity):
            raise ValueError(f"min_severity: {self.min_severity!r} is not a Severity")
        if isinstance(self.queue_size, bool) or not isinstance(self.queue_size, int):
            raise ValueError(f"queue_size: {self.queue_size!r} must be a whole number of 1 or more")
        if self.queue_size < 1:
            raise ValueError(f"queue_size: {self.queue_size!r} must be a whole number of 1 or more")

    @property
    def type(self) -> NotifierType:
        """The target's type."""
        return self.target.type

    def accepts(self, event: AlertEvent) -> bool:
        """Return whether this notifier takes ``event`` (by severity and rule)."""
        if event.severity.rank < self.min_severity.rank:
            return False
        return self.rules is None or event.rule in self.rules

    def describe(self) -> dict[str, object]:
        """The notifier as a listing shows it, secrets redacted."""
        out: dict[str, object] = {
            "name": self.name,
            "type": self.type.value,
            "min_severity": self.min_severity.value,
        }
        if self.rules is not None:
            out["rules"] = sorted(self.rules)
        out["queue_size"] = self.queue_size
        out.update(self.target.describe())
        return out


# --------------------------------------------------------------------------------- parsing

_COMMON_KEYS: Final = ("type", "min_severity", "rules", "queue_size")
_TYPE_KEYS: Final[Mapping[NotifierType, tuple[str, ...]]] = {
    NotifierType.WEBHOOK: (
        "url",
        "format",
        "headers",
        "timeout",
        "attempts",
        "backoff",
        "generator_url",
    ),
    NotifierType.COMMAND: ("command", "shell", "timeout"),
    NotifierType.EMAIL: (
        "host",
        "port",
        "from",
        "to",
        "username",
        "password",
        "starttls",
        "ca_file",
        "timeout",
    ),
    NotifierType.LOG: (),
}


def _choices(values: Iterable[str]) -> str:
    return ", ".join(repr(v) for v in values)


class _Table:
    """Typed reads from one TOML table, with errors that name the key's path."""

    def __init__(self, table: Mapping[str, object], prefix: str) -> None:
        self.table = table
        self.prefix = prefix

    def error(self, key: str, message: str) -> ValueError:
        return ValueError(f"{self.prefix}.{key}: {message}")

    def string(self, key: str, *, required: bool = False, example: str = "") -> str | None:
        if key not in self.table:
            if required:
                hint = f", e.g. {key} = {example}" if example else ""
                raise ValueError(f"{self.prefix}.{key}: required{hint}")
            return None
        value = self.table[key]
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"{value!r} must be a non-empty string")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"{value!r} must be true or false")
        return value

    def integer(self, key: str, default: int, low: int, high: int | None = None) -> int:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self.error(key, f"{value!r} must be a whole number of {low} or more")
        if high is not None and value > high:
            raise self.error(key, f"{value!r} must be at most {high}")
        return value

    def duration(self, key: str, default: float) -> float:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise self.error(key, f"{value!r} is not a duration; use {DURATION_FORMS}")
        seconds = parse_duration(value, field=f"{self.prefix}.{key}")
        if seconds <= 0:
            raise self.error(key, f"{value!r} must be a duration of more than 0, e.g. '10s'")
        return seconds

    def strings(self, key: str, *, one_is_enough: bool) -> tuple[str, ...] | None:
        if key not in self.table:
            return None
        value = self.table[key]
        if one_is_enough and isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not value:
            raise self.error(key, f"{value!r} must be a non-empty list of strings")
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise ValueError(f"{self.prefix}.{key}[{i}]: {item!r} must be a non-empty string")
        return tuple(value)

    def mapping(self, key: str) -> tuple[tuple[str, str], ...]:
        value = self.table.get(key, {})
        if not isinstance(value, Mapping):
            raise self.error(
                key, f"{value!r} must be a table of strings, e.g. {{ X-Token = '...' }}"
            )
        out = []
        for name, item in value.items():
            if not isinstance(item, str):
                # the value may be a secret: name its type only
                raise ValueError(
                    f"{self.prefix}.{key}.{name}: must be a string, not {type(item).__name__}"
                )
            out.append((str(name), item))
        return tuple(out)


def _did_you_mean(word: object, choices: Iterable[str]) -> str:
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"did you mean '{close[0]}'? " if close else ""


def _check_keys(table: Mapping[str, object], kind: NotifierType, prefix: str) -> None:
    accepted = (*_COMMON_KEYS, *_TYPE_KEYS[kind])
    for key in table:
        if key in accepted:
            continue
        owners = [t.value for t, keys in _TYPE_KEYS.items() if key in keys]
        if owners:
            raise ValueError(
                f"{prefix}.{key}: not used with type '{kind}' (it is a key of type "
                f"{' and '.join(repr(o) for o in owners)}); remove it or change the type"
            )
        hint = _did_you_mean(key, accepted)
        raise ValueError(
            f"{prefix}.{key}: unknown key; {hint}type '{kind}' accepts: {', '.join(accepted)}"
        )


def parse_notifier(
    name: str, table: Mapping[str, object], *, field: str | None = None
) -> NotifierSpec:
    """Build a :class:`NotifierSpec` from its configuration table.

    Keys of every type: ``type`` (``webhook``, ``command``, ``email`` or ``log``; required),
    ``min_severity`` (default ``info``), ``rules`` (a list of rule names; default every
    rule), ``queue_size`` (default 100). Then per type:

    - ``webhook``: ``url`` (required), ``format`` (``json``, ``slack`` or ``alertmanager``;
      default ``json``), ``headers`` (a table), ``timeout`` (per attempt, default ``10s``),
      ``attempts`` (default 3), ``backoff`` (default ``0.5s``, doubling), ``generator_url``
      (``alertmanager`` only).
    - ``command``: ``command`` (a string or a list; required), ``shell`` (default false),
      ``timeout`` (default ``30s``).
    - ``email``: ``host``, ``from``, ``to`` (a list or one address) (required), ``port``
      (default 587, or 25 with ``starttls = false``), ``username`` and ``password`` (both or
      neither), ``starttls`` (default true), ``ca_file``, ``timeout`` (default ``30s``).
    - ``log``: nothing more.

    ::

        [alerts.notifiers.ops]
        type = "webhook"
        url = "https://hooks.slack.com/services/T000/B000/XXXX"
        format = "slack"
        min_severity = "critical"

    Args:
        name: the notifier's name.
        table: the table's keys and values as TOML gives them.
        field: the table's path for messages; ``alerts.notifiers.<name>`` by default.

    Raises:
        ValueError: a key is missing, unknown (with a did-you-mean) or invalid; the message
            starts with the key's full path, e.g. ``alerts.notifiers.ops.url: ...``.
    """
    prefix = field if field is not None else f"alerts.notifiers.{name}"
    if not isinstance(table, Mapping):
        raise ValueError(f"{prefix}: must be a table, not {type(table).__name__}")
    kinds = _choices(t.value for t in NotifierType)
    if "type" not in table:
        raise ValueError(f"{prefix}.type: required; one of {kinds}")
    raw_type = table["type"]
    try:
        kind = NotifierType(raw_type if isinstance(raw_type, str) else "")
    except ValueError:
        hint = _did_you_mean(raw_type, [t.value for t in NotifierType])
        raise ValueError(
            f"{prefix}.type: {raw_type!r} is not a notifier type; {hint}use one of {kinds}"
        ) from None
    _check_keys(table, kind, prefix)
    read = _Table(table, prefix)

    min_severity = parse_severity(table.get("min_severity", "info"), field=f"{prefix}.min_severity")
    rules = read.strings("rules", one_is_enough=False)
    queue_size = read.integer("queue_size", 100, 1)
    try:
        target = _parse_target(kind, read)
    except ValueError as exc:
        text = str(exc)
        raise ValueError(text if text.startswith(prefix) else f"{prefix}.{text}") from None
    return NotifierSpec(
        name,
        target,
        min_severity,
        frozenset(rules) if rules is not None else None,
        queue_size,
    )


def _parse_target(kind: NotifierType, read: _Table) -> Target:
    """Read the target's keys; a spec's own checks raise ``key: ...`` (prefixed by the caller)."""
    if kind is NotifierType.WEBHOOK:
        url = read.string("url", required=True, example="'https://hooks.example.com/alerts'")
        raw_format = read.table.get("format", "json")
        try:
            fmt = WebhookFormat(raw_format if isinstance(raw_format, str) else "")
        except ValueError:
            formats = _choices(f.value for f in WebhookFormat)
            hint = _did_you_mean(raw_format, [f.value for f in WebhookFormat])
            raise read.error(
                "format", f"{raw_format!r} is not a format; {hint}use one of {formats}"
            ) from None
        generator_url = read.string("generator_url")
        if generator_url is not None and fmt is not WebhookFormat.ALERTMANAGER:
            raise read.error("generator_url", "only used with format = 'alertmanager'")
        return WebhookSpec(
            url=url or "",
            format=fmt,
            headers=read.mapping("headers"),
            timeout=read.duration("timeout", 10.0),
            attempts=read.integer("attempts", 3, 1, 20),
            backoff=read.duration("backoff", 0.5),
            generator_url=generator_url,
        )
    if kind is NotifierType.COMMAND:
        shell = read.boolean("shell", False)
        raw = read.table.get("command")
        if raw is None:
            raise read.error("command", "required, e.g. command = ['/usr/local/bin/page', '--ops']")
        command: str | tuple[str, ...]
        if isinstance(raw, str):
            command = raw
        else:
            command = read.strings("command", one_is_enough=False) or ()
        return CommandSpec(command, shell, read.duration("timeout", 30.0))
    if kind is NotifierType.EMAIL:
        starttls = read.boolean("starttls", True)
        username = read.string("username")
        password = read.table.get("password")
        if password is not None and (not isinstance(password, str) or not password):
            raise read.error("password", "must be a non-empty string")
        host = read.string("host", required=True, example="'smtp.example.com'") or ""
        sender = read.string("from", required=True, example="'procvisor@example.com'") or ""
        to = read.strings("to", one_is_enough=True)
        if to is None:
            raise read.error("to", "required, e.g. to = ['ops@example.com']")
        return EmailSpec(
            host=host,
            sender=sender,
            to=to,
            port=read.integer("port", 587 if starttls else 25, 1, 65535),
            username=username,
            password=password,
            starttls=starttls,
            ca_file=read.string("ca_file"),
            timeout=read.duration("timeout", 30.0),
        )
    return LogSpec()
