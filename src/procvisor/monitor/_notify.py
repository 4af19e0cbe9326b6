"""Alert notifiers: deliver the :class:`~procvisor.policy.alerts.AlertEvent` s that alert
rules produce to webhooks, commands, mail and the log, without ever holding up supervision.

**Specs.** :mod:`procvisor.policy.notifiers` parses ``[alerts.notifiers.<name>]`` tables into
frozen :class:`NotifierSpec` objects (re-exported here).

**Delivery.** A :class:`Dispatcher`, owned by the daemon's event loop, gives every notifier a
bounded queue and one worker task::

    dispatch(event) ─┬─▶ [queue ops ] ─▶ worker ─▶ webhook (retries, per-attempt timeout)
     (returns at     ├─▶ [queue mail] ─▶ worker ─▶ SMTP in a thread
      once)          └─▶ [queue log ] ─▶ worker ─▶ procvisor.alerts logger

- :meth:`Dispatcher.dispatch` only enqueues: it never waits and never raises for a delivery
  problem. A full queue drops its *oldest* notification (counted as ``dropped``): the newest
  state of an incident is the one worth sending.
- Each delivery runs under its notifier's deadline (:attr:`WebhookSpec.deadline`...), so a
  receiver that hangs costs one worker that long and no more; other notifiers go on.
- Failures are logged on ``procvisor.monitor.notify`` and counted; :meth:`Dispatcher.stats`
  gives ``delivered``/``failed``/``dropped`` per notifier (for the metrics endpoint).
- :meth:`Dispatcher.aclose` lets queued notifications drain for a short time, then cancels the
  workers and waits for them (a command notifier's process group is stopped on the way).

:func:`deliver` sends one notification at once and raises :class:`NotifyError` on failure
(for a "test this notifier" command).

Times: alert events carry ``time.monotonic()`` values; a :class:`Notification` pairs an event
with the wall-clock times receivers need, converted when it is dispatched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import re
import shlex
import socket
import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from enum import StrEnum
from typing import TYPE_CHECKING, Final, Protocol

from procvisor.errors import ProcessError, TimeoutExpired
from procvisor.policy.alerts import AlertEvent, AlertEventKind, Severity
from procvisor.policy.notifiers import (
    COMMAND_GRACE,
    CommandSpec,
    EmailSpec,
    LogSpec,
    NotifierSpec,
    NotifierType,
    Target,
    WebhookFormat,
    WebhookSpec,
    parse_notifier,
    redact_url,
)
from procvisor.policy.units import format_duration
from procvisor.process import arun

if TYPE_CHECKING:
    import smtplib

    import httpx

    from procvisor.process import Result

__all__ = [
    "CommandSpec",
    "Dispatcher",
    "DispatcherState",
    "EmailSpec",
    "LogSpec",
    "Notification",
    "NotifierSpec",
    "NotifierStats",
    "NotifierType",
    "NotifyError",
    "Target",
    "WebhookFormat",
    "WebhookSpec",
    "alert_payload",
    "alertmanager_payload",
    "deliver",
    "email_message",
    "email_subject",
    "parse_notifier",
    "slack_payload",
    "webhook_payload",
]

_log = logging.getLogger("procvisor.monitor.notify")
ALERTS_LOGGER: Final = "procvisor.alerts"
"""The logger the ``log`` notifier writes to."""

_MAX_COMMAND_OUTPUT: Final = 64 * 1024


class NotifyError(Exception):
    """A notification could not be delivered.

    Attributes:
        notifier: the notifier's name (``""`` when not known).
        message: what went wrong and, where it helps, what to check.
    """

    def __init__(self, message: str, *, notifier: str = "") -> None:
        super().__init__(f"notifier {notifier!r}: {message}" if notifier else message)
        self.message = message
        self.notifier = notifier

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_notify_error, (self.message, self.notifier))


def _rebuild_notify_error(message: str, notifier: str) -> NotifyError:
    return NotifyError(message, notifier=notifier)


# -------------------------------------------------------------------------------- payloads


@dataclass(frozen=True, slots=True)
class Notification:
    """An alert event to deliver, with the wall-clock times receivers need.

    Attributes:
        event: the event.
        at: when it happened (``event.at``), as an aware UTC datetime.
        fired_at: when the alert fired (``event.fired_at``), likewise.
        host: the machine it comes from.
    """

    event: AlertEvent
    at: datetime
    fired_at: datetime
    host: str

    @classmethod
    def of(
        cls,
        event: AlertEvent,
        *,
        monotonic_now: float | None = None,
        wall_now: float | None = None,
        host: str | None = None,
    ) -> Notification:
        """Pair ``event`` with wall-clock times, read now unless ``monotonic_now`` and
        ``wall_now`` (``time.monotonic()`` and ``time.time()`` taken together) are given."""
        mono = time.monotonic() if monotonic_now is None else monotonic_now
        wall = time.time() if wall_now is None else wall_now
        offset = wall - mono
        return cls(
            event,
            datetime.fromtimestamp(event.at + offset, UTC),
            datetime.fromtimestamp(event.fired_at + offset, UTC),
            host if host is not None else socket.gethostname(),
        )

    @property
    def resolved(self) -> bool:
        """Whether the alert resolved (else it fired)."""
        return self.event.kind is AlertEventKind.RESOLVED


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _headline(note: Notification) -> str:
    """``high_memory: web:0 uses 500M``; the rule is not repeated when the summary has it."""
    event = note.event
    summary = _one_line(event.summary)
    if not summary:
        return event.rule
    if summary == event.rule or summary.startswith(f"{event.rule}:"):
        return summary
    return f"{event.rule}: {summary}"


def email_subject(note: Notification) -> str:
    """The subject of a notification: ``[CRITICAL] high_memory: web:0 uses 500M`` when it
    fired, ``[RESOLVED] [CRITICAL] ...`` when it resolved."""
    severity = f"[{note.event.severity.value.upper()}]"
    prefix = f"[RESOLVED] {severity}" if note.resolved else severity
    return f"{prefix} {_headline(note)}"


def alert_payload(note: Notification) -> dict[str, object]:
    """procvisor's own JSON form of a notification (the ``json`` format and command stdin).

    Keys: ``version`` (1), ``kind`` (``fired``/``resolved``), ``status`` (``firing``/
    ``resolved``), ``rule``, ``severity``, ``summary``, ``labels`` (an object), ``at`` and
    ``fired_at`` (RFC 3339, UTC), ``host``.
    """
    event = note.event
    return {
        "version": 1,
        "kind": event.kind.value,
        "status": "resolved" if note.resolved else "firing",
        "rule": event.rule,
        "severity": event.severity.value,
        "summary": event.summary,
        "labels": dict(event.labels),
        "at": _iso(note.at),
        "fired_at": _iso(note.fired_at),
        "host": note.host,
    }


_SLACK_COLORS: Final = {
    Severity.INFO: "#439fe0",
    Severity.WARNING: "#daa038",
    Severity.CRITICAL: "#d00000",
    Severity.EMERGENCY: "#7a0099",
}
_SLACK_RESOLVED: Final = "#2eb886"


def slack_payload(note: Notification) -> dict[str, object]:
    """A Slack incoming-webhook message: ``text`` plus one attachment coloured by severity
    (green once resolved) with the labels as fields."""
    event = note.event
    title = email_subject(note)
    fields = [{"title": k, "value": v, "short": True} for k, v in event.labels]
    fields.append({"title": "severity", "value": event.severity.value, "short": True})
    if note.resolved:
        lasted = format_duration(max(0.0, event.at - event.fired_at))
        fields.append({"title": "firing for", "value": lasted, "short": True})
    attachment: dict[str, object] = {
        "color": _SLACK_RESOLVED if note.resolved else _SLACK_COLORS[event.severity],
        "fallback": title,
        "title": title,
        "text": event.summary,
        "fields": fields,
        "footer": f"procvisor on {note.host}",
        "ts": int(note.at.timestamp()),
    }
    return {"text": title, "attachments": [attachment]}


def _label_name(name: str) -> str:
    cleaned = re.sub(r"[^a-zA-Z0-9_]", "_", name)
    return cleaned if re.match(r"[a-zA-Z_]", cleaned) else f"_{cleaned}"


def alertmanager_payload(
    note: Notification, generator_url: str | None = None
) -> list[dict[str, object]]:
    """A list of one alert as Alertmanager's ``POST /api/v2/alerts`` takes it.

    ``labels`` holds ``alertname`` (the rule), ``severity`` and the event's labels (names
    made valid); ``annotations`` the ``summary``; ``startsAt`` when it fired; ``endsAt`` only
    once resolved. Alertmanager resolves an alert that is not sent again within its
    ``resolve_timeout``; procvisor sends an alert when it fires and when it resolves.
    """
    event = note.event
    labels = {_label_name(k): v for k, v in event.labels}
    labels["alertname"] = event.rule
    labels["severity"] = event.severity.value
    alert: dict[str, object] = {
        "labels": labels,
        "annotations": {"summary": event.summary},
        "startsAt": _iso(note.fired_at),
    }
    if note.resolved:
        alert["endsAt"] = _iso(note.at)
    if generator_url is not None:
        alert["generatorURL"] = generator_url
    return [alert]


def webhook_payload(spec: WebhookSpec, note: Notification) -> object:
    """The JSON body ``spec`` POSTs for ``note``, in its format."""
    if spec.format is WebhookFormat.SLACK:
        return slack_payload(note)
    if spec.format is WebhookFormat.ALERTMANAGER:
        return alertmanager_payload(note, spec.generator_url)
    return alert_payload(note)


def email_message(spec: EmailSpec, note: Notification) -> EmailMessage:
    """The mail ``spec`` sends for ``note``: subject from :func:`email_subject`, a plain body."""
    event = note.event
    message = EmailMessage()
    message["Subject"] = email_subject(note)
    message["From"] = spec.sender
    message["To"] = ", ".join(spec.to)
    message["Date"] = formatdate(note.at.timestamp(), usegmt=True)
    message["Message-ID"] = make_msgid(domain=note.host or None)
    message["X-Procvisor-Alert"] = _one_line(f"{event.rule} {event.kind.value}")
    lines = [
        f"Alert {event.rule} {event.kind.value} ({event.severity.value}) on {note.host}.",
        "",
        f"Summary:  {event.summary}",
    ]
    if event.labels:
        lines.append("Labels:   " + ", ".join(f"{k}={v}" for k, v in event.labels))
    lines.append(f"Fired:    {_iso(note.fired_at)}")
    if note.resolved:
        lasted = format_duration(max(0.0, event.at - event.fired_at))
        lines.append(f"Resolved: {_iso(note.at)} (after {lasted})")
    message.set_content("\n".join(lines) + "\n")
    return message


def _log_level(note: Notification) -> int:
    if note.resolved:
        return logging.INFO
    return {
        Severity.INFO: logging.INFO,
        Severity.WARNING: logging.WARNING,
        Severity.CRITICAL: logging.ERROR,
        Severity.EMERGENCY: logging.CRITICAL,
    }[note.event.severity]


def _log_line(note: Notification) -> str:
    event = note.event
    labels = " ".join(f"{k}={_one_line(v)}" for k, v in event.labels)
    text = f"alert {event.kind.value}: {email_subject(note)}"
    return f"{text} [{labels}]" if labels else text


# --------------------------------------------------------------------------------- senders


class _Sender(Protocol):
    async def send(self, note: Notification) -> None:
        """Deliver ``note`` or raise NotifyError."""


class _WebhookSender:
    def __init__(self, spec: WebhookSpec, client: httpx.AsyncClient) -> None:
        self.spec = spec
        self.client = client
        self.rand = random.Random()

    async def send(self, note: Notification) -> None:
        import httpx  # noqa: PLC0415 - see _http_client

        spec = self.spec
        content = json.dumps(webhook_payload(spec, note)).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "procvisor"}
        headers.update(spec.headers)
        where = redact_url(spec.url)
        for attempt in range(1, spec.attempts + 1):
            retryable = True
            try:
                async with asyncio.timeout(spec.timeout):
                    response = await self.client.post(
                        spec.url, content=content, headers=headers, timeout=spec.timeout
                    )
            except TimeoutError:
                problem = f"no answer from {where} within {format_duration(spec.timeout)}"
            except httpx.TransportError as exc:
                problem = f"cannot reach {where}: {type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    return
                retryable = response.status_code >= 500
                body = _one_line(response.text)[:200]
                problem = f"{where} answered {response.status_code} {response.reason_phrase}" + (
                    f": {body}" if body else ""
                )
            if not retryable or attempt == spec.attempts:
                tries = f" (attempt {attempt} of {spec.attempts})" if spec.attempts > 1 else ""
                raise NotifyError(problem + tries)
            delay = spec.retry_backoff.delay(attempt, self.rand.random())
            _log.info("webhook attempt %d failed, retrying in %.2fs: %s", attempt, delay, problem)
            await asyncio.sleep(delay)


def _tail(data: bytes, lines: int = 5, chars: int = 500) -> str:
    text = " | ".join(data.decode("utf-8", "replace").strip().splitlines()[-lines:])
    return text if len(text) <= chars else "..." + text[-chars:]


def _describe_outcome(result: Result) -> str:
    if result.returncode is None:
        return "ended with an unknown status"
    if result.signal is not None:
        return f"was killed by {result.signal}"
    return f"exited with code {result.returncode}"


class _CommandSender:
    def __init__(self, spec: CommandSpec) -> None:
        self.spec = spec

    async def send(self, note: Notification) -> None:
        spec = self.spec
        data = json.dumps(alert_payload(note)).encode() + b"\n"
        event = note.event
        env = {
            "PROCVISOR_ALERT_KIND": event.kind.value,
            "PROCVISOR_ALERT_RULE": event.rule,
            "PROCVISOR_ALERT_SEVERITY": event.severity.value,
            "PROCVISOR_ALERT_SUMMARY": event.summary,
        }
        shown = spec.command if isinstance(spec.command, str) else shlex.join(spec.command)
        try:
            result = await arun(
                spec.command,
                input=data,
                shell=spec.shell,
                env=env,
                timeout=spec.timeout,
                grace=COMMAND_GRACE,
                max_output=_MAX_COMMAND_OUTPUT,
            )
        except TimeoutExpired:
            raise NotifyError(
                f"{shown!r} did not finish within {format_duration(spec.timeout)}; it was stopped"
            ) from None
        except ProcessError as exc:
            raise NotifyError(f"{shown!r}: {exc}") from None
        if result.returncode != 0:
            tail = _tail(result.stderr)
            raise NotifyError(
                f"{shown!r} {_describe_outcome(result)}" + (f": {tail}" if tail else "")
            )


class _EmailSender:
    def __init__(self, spec: EmailSpec) -> None:
        self.spec = spec

    async def send(self, note: Notification) -> None:
        message = email_message(self.spec, note)
        await asyncio.to_thread(self._send, message)

    def _send(self, message: EmailMessage) -> None:
        import smtplib  # noqa: PLC0415 - only a daemon that sends mail needs it

        spec = self.spec
        where = f"{spec.host}:{spec.port}"
        try:
            with smtplib.SMTP(spec.host, spec.port, timeout=spec.timeout) as smtp:
                smtp.ehlo()
                if spec.starttls:
                    if not smtp.has_extn("starttls"):
                        raise NotifyError(
                            f"{where} does not offer STARTTLS; the mail was not sent in clear "
                            "(set starttls = false only for a server on a trusted network)"
                        )
                    context = ssl.create_default_context(cafile=spec.ca_file)
                    smtp.starttls(context=context)
                    smtp.ehlo()
                if spec.username is not None and spec.password is not None:
                    smtp.login(spec.username, spec.password)
                refused = smtp.send_message(message, from_addr=spec.sender, to_addrs=list(spec.to))
        except smtplib.SMTPAuthenticationError as exc:
            raise NotifyError(
                f"{where} refused the login of {spec.username!r}: {_smtp(exc)}"
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise NotifyError(
                f"{where} refused every recipient: {_refusals(exc.recipients)}"
            ) from None
        except smtplib.SMTPResponseException as exc:
            raise NotifyError(f"{where} answered {_smtp(exc)}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise NotifyError(f"cannot send through {where}: {type(exc).__name__}: {exc}") from None
        if refused:
            _log.warning("mail through %s: some recipients refused: %s", where, _refusals(refused))


def _smtp(exc: smtplib.SMTPResponseException) -> str:
    text = (
        exc.smtp_error.decode("utf-8", "replace")
        if isinstance(exc.smtp_error, bytes)
        else str(exc.smtp_error)
    )
    return f"{exc.smtp_code} {_one_line(text)}"


def _refusals(refused: Mapping[str, tuple[int, bytes]]) -> str:
    return ", ".join(
        f"{addr} ({code} {_one_line(msg.decode('utf-8', 'replace'))})"
        for addr, (code, msg) in refused.items()
    )


class _LogSender:
    def __init__(self) -> None:
        self.logger = logging.getLogger(ALERTS_LOGGER)

    async def send(self, note: Notification) -> None:
        self.logger.log(_log_level(note), "%s", _log_line(note))


def _http_client() -> httpx.AsyncClient:
    """A new HTTP client for webhooks. httpx is imported only by a daemon that has one: it
    takes about 0.1 s and a few MiB, which a daemon without webhooks should not pay."""
    import httpx  # noqa: PLC0415

    return httpx.AsyncClient()


def _sender(target: Target, client: httpx.AsyncClient | None) -> _Sender:
    if isinstance(target, WebhookSpec):
        if client is None:
            raise RuntimeError("a webhook notifier needs an HTTP client")
        return _WebhookSender(target, client)
    if isinstance(target, CommandSpec):
        return _CommandSender(target)
    if isinstance(target, EmailSpec):
        return _EmailSender(target)
    return _LogSender()


async def _send_within(sender: _Sender, note: Notification, deadline: float | None) -> None:
    """Send, cut at ``deadline`` seconds; every failure comes out as NotifyError."""
    try:
        async with asyncio.timeout(deadline):
            await sender.send(note)
    except TimeoutError:
        assert deadline is not None
        raise NotifyError(f"timed out after {format_duration(deadline)}") from None


async def deliver(
    spec: NotifierSpec, note: Notification, *, client: httpx.AsyncClient | None = None
) -> None:
    """Deliver one notification through ``spec`` now (filters not applied), within its
    deadline.

    Args:
        client: the HTTP client for a webhook; a new one is used (and closed) without it.

    Raises:
        NotifyError: it could not be delivered; the message says why.
    """
    async with contextlib.AsyncExitStack() as stack:
        if client is None and isinstance(spec.target, WebhookSpec):
            client = await stack.enter_async_context(_http_client())
        try:
            await _send_within(_sender(spec.target, client), note, spec.target.deadline)
        except NotifyError as exc:
            raise NotifyError(exc.message, notifier=spec.name) from None


# ------------------------------------------------------------------------------ dispatcher


@dataclass(frozen=True, slots=True)
class NotifierStats:
    """What one notifier has done since its dispatcher was made.

    Attributes:
        name, type: the notifier.
        delivered: notifications delivered.
        failed: notifications that could not be delivered (after all retries).
        dropped: notifications discarded undelivered: pushed out of a full queue, dispatched
            after close, or still queued or in flight when the dispatcher closed.
        queued: notifications waiting now (the one being delivered not included).
        last_error: the last failure's message, if any.
    """

    name: str
    type: NotifierType
    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    queued: int = 0
    last_error: str | None = None


class _Worker:
    """One notifier's queue, counters and task."""

    def __init__(self, spec: NotifierSpec) -> None:
        self.spec = spec
        self.queue: asyncio.Queue[Notification] = asyncio.Queue(spec.queue_size)
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self.last_error: str | None = None
        self.task: asyncio.Task[None] | None = None

    def stats(self) -> NotifierStats:
        return NotifierStats(
            self.spec.name,
            self.spec.type,
            self.delivered,
            self.failed,
            self.dropped,
            self.queue.qsize(),
            self.last_error,
        )

    def discard_queued(self) -> int:
        count = 0
        while not self.queue.empty():
            self.queue.get_nowait()
            self.queue.task_done()
            count += 1
        self.dropped += count
        return count


class DispatcherState(StrEnum):
    """Where a :class:`Dispatcher` is in its life: new → running → closing → closed."""

    NEW = "new"
    """Made, not started: dispatched notifications wait in the queues."""
    RUNNING = "running"
    CLOSING = "closing"
    """Draining, then cancelling its workers; dispatched notifications are dropped."""
    CLOSED = "closed"


class Dispatcher:
    """Delivers alert events to notifiers from the daemon's event loop, never blocking it.

    Use it as an async context manager, or call :meth:`start` and :meth:`aclose`; it owns
    one worker task per notifier (and the HTTP client of its webhooks) and cancels and awaits
    them on close. It does not run them in an :class:`asyncio.TaskGroup`: a TaskGroup
    cancels its owner when a child fails, and a notifier's trouble must not reach the
    daemon's main task. Workers catch and count every failure of a delivery instead.

    Args:
        notifiers: the notifiers, with distinct names.
        host: the machine name put in notifications (``socket.gethostname()`` by default).
        drain_timeout: seconds :meth:`aclose` waits for queued notifications by default.

    Raises:
        ValueError: two notifiers share a name, or ``drain_timeout`` is negative.
    """

    def __init__(
        self,
        notifiers: Iterable[NotifierSpec],
        *,
        host: str | None = None,
        drain_timeout: float = 2.0,
    ) -> None:
        self._workers: dict[str, _Worker] = {}
        for spec in notifiers:
            if spec.name in self._workers:
                raise ValueError(f"notifiers: two are named {spec.name!r}; names must differ")
            self._workers[spec.name] = _Worker(spec)
        if not math.isfinite(drain_timeout) or drain_timeout < 0:
            raise ValueError(f"drain_timeout: {drain_timeout!r} must be 0 or more seconds")
        self._host = host if host is not None else socket.gethostname()
        self._drain_timeout = drain_timeout
        self._state = DispatcherState.NEW
        self._client: httpx.AsyncClient | None = None
        self._closed = asyncio.Event()
        self._shutdown: asyncio.Task[None] | None = None

    @property
    def state(self) -> DispatcherState:
        """Where it is in its life."""
        return self._state

    @property
    def notifiers(self) -> tuple[NotifierSpec, ...]:
        """The notifiers, in the order given."""
        return tuple(w.spec for w in self._workers.values())

    def __repr__(self) -> str:
        names = ", ".join(self._workers)
        return f"<Dispatcher {self._state.value} notifiers=[{names}]>"

    async def start(self) -> None:
        """Start one worker task per notifier on the running loop.

        Raises:
            RuntimeError: it was started before.
        """
        if self._state is not DispatcherState.NEW:
            raise RuntimeError(f"Dispatcher.start: it is {self._state.value}; start it once")
        if any(isinstance(w.spec.target, WebhookSpec) for w in self._workers.values()):
            self._client = _http_client()
        for name, worker in self._workers.items():
            worker.task = asyncio.create_task(self._work(worker), name=f"procvisor-notify-{name}")
        self._state = DispatcherState.RUNNING

    async def __aenter__(self) -> Dispatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def dispatch(self, event: AlertEvent) -> int:
        """Queue ``event`` for every notifier that accepts it; return how many.

        Returns at once. Events with ``notify=False`` (silenced) go nowhere. A full queue
        drops its oldest notification; after close, the event is dropped. Neither raises:
        both are logged and counted in :meth:`stats`. Call it from the loop's thread (from
        another thread, use ``loop.call_soon_threadsafe``).
        """
        if not event.notify:
            return 0
        workers = [w for w in self._workers.values() if w.spec.accepts(event)]
        if not workers:
            return 0
        if self._state in (DispatcherState.CLOSING, DispatcherState.CLOSED):
            for worker in workers:
                worker.dropped += 1
            _log.warning(
                "alert %s %s not sent: the notifier dispatcher is %s",
                event.rule,
                event.kind.value,
                self._state.value,
            )
            return 0
        note = Notification.of(event, host=self._host)
        for worker in workers:
            if worker.queue.full():
                old = worker.queue.get_nowait()
                worker.queue.task_done()
                worker.dropped += 1
                _log.warning(
                    "notifier %r: queue full (%d), dropped the oldest notification (%s %s)",
                    worker.spec.name,
                    worker.spec.queue_size,
                    old.event.rule,
                    old.event.kind.value,
                )
            worker.queue.put_nowait(note)
        return len(workers)

    async def join(self) -> None:
        """Wait until every notification queued so far has been delivered or has failed.

        Raises:
            RuntimeError: it was never started (nothing would ever empty the queues).
        """
        if self._state is DispatcherState.NEW:
            raise RuntimeError("Dispatcher.join: start it first")
        for worker in self._workers.values():
            await worker.queue.join()

    def stats(self) -> dict[str, NotifierStats]:
        """The counters of each notifier, by name."""
        return {name: worker.stats() for name, worker in self._workers.items()}

    async def aclose(self, drain_timeout: float | None = None) -> None:
        """Let queued notifications go out for up to ``drain_timeout`` seconds (the
        dispatcher's default without it), then cancel the workers and wait for them.

        Whatever is still queued or in flight then is dropped (counted, and logged). Calling
        it again waits for the first call to finish. The shutdown, once begun, runs to its
        end even if the caller is cancelled again (it is shielded).
        """
        if self._state is DispatcherState.CLOSED:
            return
        if self._state is DispatcherState.CLOSING:
            await self._closed.wait()
            return
        started = self._state is DispatcherState.RUNNING
        self._state = DispatcherState.CLOSING
        timeout = self._drain_timeout if drain_timeout is None else drain_timeout
        try:
            if started:
                try:
                    async with asyncio.timeout(timeout):
                        await self.join()
                except TimeoutError:
                    _log.warning(
                        "notifications still pending after %s; dropping them",
                        format_duration(timeout),
                    )
        finally:
            self._shutdown = asyncio.create_task(
                self._shut_down(), name="procvisor-notify-shutdown"
            )
            await asyncio.shield(self._shutdown)

    async def _shut_down(self) -> None:
        try:
            tasks = [w.task for w in self._workers.values() if w.task is not None]
            for task in tasks:
                task.cancel()
            # A worker cancelled mid-delivery stops its command's process group before it
            # ends: waiting here is what keeps a notifier from outliving the daemon.
            await asyncio.gather(*tasks, return_exceptions=True)
            lost = sum(worker.discard_queued() for worker in self._workers.values())
            if lost:
                _log.warning("%d queued notifications dropped at close", lost)
            if self._client is not None:
                await self._client.aclose()
                self._client = None
        finally:
            self._state = DispatcherState.CLOSED
            self._closed.set()

    async def _work(self, worker: _Worker) -> None:
        sender = _sender(worker.spec.target, self._client)
        name = worker.spec.name
        while True:
            note = await worker.queue.get()
            try:
                await _send_within(sender, note, worker.spec.target.deadline)
            except asyncio.CancelledError:
                worker.dropped += 1
                raise
            except NotifyError as exc:
                worker.failed += 1
                worker.last_error = exc.message
                _log.error(
                    "notifier %r: %s %s not delivered: %s",
                    name,
                    note.event.rule,
                    note.event.kind.value,
                    exc.message,
                )
            except Exception as exc:
                # A bug in a sender must cost one notification, not the notifier.
                worker.failed += 1
                worker.last_error = f"{type(exc).__name__}: {exc}"
                _log.exception("notifier %r: unexpected error while delivering", name)
            else:
                worker.delivered += 1
            finally:
                worker.queue.task_done()
