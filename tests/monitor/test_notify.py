"""Alert notifiers: config parsing, payloads, and delivery to real receivers on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope

from helpers import await_for
from procvisor.monitor._notify import (
    CommandSpec,
    Dispatcher,
    DispatcherState,
    EmailSpec,
    LogSpec,
    Notification,
    NotifierSpec,
    NotifierType,
    NotifyError,
    WebhookFormat,
    WebhookSpec,
    alert_payload,
    alertmanager_payload,
    deliver,
    email_subject,
    parse_notifier,
    slack_payload,
)
from procvisor.policy.alerts import AlertEvent, AlertEventKind, Severity

DEADLINE = 5.0


def event(
    kind: AlertEventKind = AlertEventKind.FIRED,
    *,
    rule: str = "high_memory",
    severity: Severity = Severity.CRITICAL,
    summary: str = "web:0 uses 500M",
    at: float | None = None,
    fired_at: float | None = None,
    notify: bool = True,
) -> AlertEvent:
    now = time.monotonic()
    at = now if at is None else at
    fired_at = (
        (at - 90.0 if kind is AlertEventKind.RESOLVED else at) if fired_at is None else fired_at
    )
    return AlertEvent(
        kind, rule, (("instance", "0"), ("service", "web")), severity, at, fired_at, summary, notify
    )


def note(ev: AlertEvent) -> Notification:
    return Notification.of(ev, monotonic_now=1000.0, wall_now=1_700_000_000.0, host="node1")


# ----------------------------------------------------------------------- a real HTTP receiver


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A tiny HTTP/1.1 server on 127.0.0.1: answers each path from a script of statuses
    (the last one repeats); ``"hang"`` reads the request and never answers."""

    scripts: dict[str, list[int | str]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    async def wait(self, path: str, count: int = 1) -> list[Request]:
        async with asyncio.timeout(DEADLINE), self._arrived:
            await self._arrived.wait_for(lambda: len(self.on(path)) >= count)
        return self.on(path)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                line, *rest = head.decode("latin-1").split("\r\n")
                method, path, _ = line.split(" ", 2)
                headers = {}
                for item in rest:
                    if item:
                        name, value = item.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                script = self.scripts.get(path, [200])
                answer = script.pop(0) if len(script) > 1 else script[0]
                async with self._arrived:
                    self.requests.append(Request(method, path, headers, body))
                    self._arrived.notify_all()
                if answer == "hang":
                    await asyncio.Event().wait()
                text = b"no" if answer != 200 else b""
                writer.write(
                    f"HTTP/1.1 {answer} X\r\nContent-Length: {len(text)}\r\n\r\n".encode() + text
                )
                await writer.drain()
        finally:
            writer.close()
            self._handlers.discard(task)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.close()


def webhook(name: str, url: str, *, queue_size: int = 100, **kwargs: object) -> NotifierSpec:
    return NotifierSpec(name, WebhookSpec(url, **kwargs), queue_size=queue_size)  # type: ignore[arg-type]


# -------------------------------------------------------------------------------- webhooks


async def test_webhook_posts_each_payload_format(receiver: Receiver) -> None:
    notifiers = [
        webhook("own", receiver.url("/json"), headers=(("Authorization", "Bearer s3cret"),)),
        webhook("chat", receiver.url("/slack"), format=WebhookFormat.SLACK),
        webhook(
            "am",
            receiver.url("/am"),
            format=WebhookFormat.ALERTMANAGER,
            generator_url="http://procvisor.local/alerts",
        ),
    ]
    async with Dispatcher(notifiers, host="node1") as dispatcher:
        assert dispatcher.dispatch(event(AlertEventKind.RESOLVED)) == 3
        [own] = await receiver.wait("/json")
        [chat] = await receiver.wait("/slack")
        [am] = await receiver.wait("/am")
        await dispatcher.join()
        stats = dispatcher.stats()
    assert {name: s.delivered for name, s in stats.items()} == {"own": 1, "chat": 1, "am": 1}

    assert own.method == "POST"
    assert own.headers["authorization"] == "Bearer s3cret"
    assert own.headers["content-type"] == "application/json"
    body = own.json()
    assert isinstance(body, dict)
    assert body["kind"] == "resolved"
    assert body["status"] == "resolved"
    assert body["rule"] == "high_memory"
    assert body["severity"] == "critical"
    assert body["summary"] == "web:0 uses 500M"
    assert body["labels"] == {"instance": "0", "service": "web"}
    assert body["host"] == "node1"
    assert body["at"].endswith("Z") and body["fired_at"] < body["at"]

    slack = chat.json()
    assert isinstance(slack, dict)
    assert slack["text"] == "[RESOLVED] [CRITICAL] high_memory: web:0 uses 500M"
    [attachment] = slack["attachments"]
    assert attachment["color"] == "#2eb886"  # green once resolved
    assert {"title": "service", "value": "web", "short": True} in attachment["fields"]

    alerts = am.json()
    assert isinstance(alerts, list)
    [alert] = alerts
    assert alert["labels"] == {
        "alertname": "high_memory",
        "severity": "critical",
        "instance": "0",
        "service": "web",
    }
    assert alert["annotations"] == {"summary": "web:0 uses 500M"}
    assert alert["startsAt"] == body["fired_at"]
    assert alert["endsAt"] == body["at"]
    assert alert["generatorURL"] == "http://procvisor.local/alerts"


async def test_a_hanging_receiver_is_cut_by_its_timeout_and_holds_up_nobody(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.scripts["/hang"] = ["hang"]
    notifiers = [
        webhook("stuck", receiver.url("/hang"), timeout=0.3, attempts=1),
        webhook("fine", receiver.url("/ok")),
        NotifierSpec("journal", LogSpec()),
    ]
    async with Dispatcher(notifiers) as dispatcher:
        started = time.monotonic()
        assert dispatcher.dispatch(event()) == 3
        assert time.monotonic() - started < 0.2
        # nothing was delivered inside dispatch(): it only queued
        assert all(s.delivered == s.failed == 0 for s in dispatcher.stats().values())

        await receiver.wait("/hang")
        await receiver.wait("/ok")
        # while "stuck" hangs, dispatch still returns at once and the others still deliver
        started = time.monotonic()
        assert dispatcher.dispatch(event(AlertEventKind.RESOLVED)) == 3
        assert time.monotonic() - started < 0.2
        await receiver.wait("/ok", 2)
        await dispatcher.join()
        stats = dispatcher.stats()
    assert stats["fine"].delivered == 2
    assert stats["journal"].delivered == 2
    assert stats["stuck"].failed == 2
    assert stats["stuck"].delivered == 0
    assert "no answer" in (stats["stuck"].last_error or "")
    assert any(
        "'stuck'" in r.getMessage() and "no answer" in r.getMessage() for r in caplog.records
    )


async def test_5xx_is_retried_with_backoff_until_delivered(receiver: Receiver) -> None:
    receiver.scripts["/flaky"] = [500, 503, 200]
    spec = webhook("ops", receiver.url("/flaky"), attempts=3, backoff=0.01)
    async with Dispatcher([spec]) as dispatcher:
        dispatcher.dispatch(event())
        await dispatcher.join()
        stats = dispatcher.stats()["ops"]
    assert (stats.delivered, stats.failed) == (1, 0)
    assert len(receiver.on("/flaky")) == 3
    assert len({r.body for r in receiver.on("/flaky")}) == 1  # the same body each time


async def test_5xx_fails_once_the_attempts_are_spent(receiver: Receiver) -> None:
    receiver.scripts["/down"] = [502]
    spec = webhook("ops", receiver.url("/down"), attempts=2, backoff=0.01)
    async with Dispatcher([spec]) as dispatcher:
        dispatcher.dispatch(event())
        await dispatcher.join()
        stats = dispatcher.stats()["ops"]
    assert (stats.delivered, stats.failed) == (0, 1)
    assert len(receiver.on("/down")) == 2
    assert "502" in (stats.last_error or "") and "attempt 2 of 2" in (stats.last_error or "")


async def test_4xx_is_not_retried(receiver: Receiver) -> None:
    receiver.scripts["/bad"] = [400, 200]
    spec = webhook("ops", receiver.url("/bad"), attempts=3, backoff=0.01)
    async with Dispatcher([spec]) as dispatcher:
        dispatcher.dispatch(event())
        await dispatcher.join()
        stats = dispatcher.stats()["ops"]
    assert (stats.delivered, stats.failed) == (0, 1)
    assert len(receiver.on("/bad")) == 1
    assert "answered 400" in (stats.last_error or "")


async def test_connection_refused_is_retried_then_reported() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    spec = webhook("ops", f"http://127.0.0.1:{port}/x", attempts=2, backoff=0.01)
    async with Dispatcher([spec]) as dispatcher:
        dispatcher.dispatch(event())
        await dispatcher.join()
        stats = dispatcher.stats()["ops"]
    assert stats.failed == 1
    assert "cannot reach http://127.0.0.1" in (stats.last_error or "")


async def test_deliver_sends_once_and_raises_with_the_notifier_name(receiver: Receiver) -> None:
    receiver.scripts["/bad"] = [404]
    await deliver(webhook("ok", receiver.url("/ok")), note(event()))
    assert len(receiver.on("/ok")) == 1
    with pytest.raises(NotifyError, match=r"notifier 'nope': .*answered 404") as caught:
        await deliver(webhook("nope", receiver.url("/bad")), note(event()))
    assert caught.value.notifier == "nope"


# -------------------------------------------------------------------------------- commands

WRITE_STDIN = (
    "import json, os, sys; data = json.load(sys.stdin); "
    "data['env_rule'] = os.environ['PROCVISOR_ALERT_RULE']; "
    "open(sys.argv[1], 'w').write(json.dumps(data))"
)


async def test_command_gets_the_alert_json_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "alert.json"
    spec = NotifierSpec("script", CommandSpec((sys.executable, "-c", WRITE_STDIN, str(out))))
    async with Dispatcher([spec], host="node1") as dispatcher:
        ev = event()
        dispatcher.dispatch(ev)
        await dispatcher.join()
        stats = dispatcher.stats()["script"]
    assert (stats.delivered, stats.failed) == (1, 0), stats.last_error
    data = json.loads(out.read_text())
    assert data["env_rule"] == "high_memory"
    del data["env_rule"]
    expected = alert_payload(Notification.of(ev, host="node1"))
    assert {k: v for k, v in data.items() if k not in ("at", "fired_at")} == {
        k: v for k, v in expected.items() if k not in ("at", "fired_at")
    }


async def test_a_failing_command_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    fail = "import sys; sys.stdin.read(); sys.stderr.write('pager is down'); sys.exit(1)"
    spec = NotifierSpec("pager", CommandSpec((sys.executable, "-c", fail)))
    async with Dispatcher([spec]) as dispatcher:
        dispatcher.dispatch(event())
        await dispatcher.join()
        stats = dispatcher.stats()["pager"]
    assert (stats.delivered, stats.failed) == (0, 1)
    assert "exited with code 1: pager is down" in (stats.last_error or "")
    [record] = [r for r in caplog.records if r.name == "procvisor.monitor.notify"]
    assert record.levelno == logging.ERROR
    assert "'pager'" in record.getMessage() and "pager is down" in record.getMessage()


async def test_a_command_that_hangs_is_stopped_at_its_timeout() -> None:
    spec = NotifierSpec(
        "slow", CommandSpec((sys.executable, "-c", "import time; time.sleep(60)"), timeout=0.3)
    )
    async with Dispatcher([spec]) as dispatcher:
        dispatcher.dispatch(event())
        await dispatcher.join()
        stats = dispatcher.stats()["slow"]
    assert stats.failed == 1
    assert "did not finish within" in (stats.last_error or "")


async def test_close_cancels_a_delivery_in_flight_and_its_process() -> None:
    spec = NotifierSpec("slow", CommandSpec("sleep 60", timeout=30))
    dispatcher = Dispatcher([spec])
    await dispatcher.start()
    dispatcher.dispatch(event())
    dispatcher.dispatch(event(AlertEventKind.RESOLVED))
    started = time.monotonic()
    await dispatcher.aclose(drain_timeout=0.2)
    assert time.monotonic() - started < 3.0
    assert dispatcher.state is DispatcherState.CLOSED
    stats = dispatcher.stats()["slow"]
    assert (stats.delivered, stats.failed, stats.dropped, stats.queued) == (0, 0, 2, 0)
    # after close, events are dropped and counted, never raised
    assert dispatcher.dispatch(event()) == 0
    assert dispatcher.stats()["slow"].dropped == 3
    await dispatcher.aclose()  # again: a no-op


async def test_cancelling_aclose_still_finishes_the_shutdown() -> None:
    spec = NotifierSpec("slow", CommandSpec("sleep 60", timeout=30))
    dispatcher = Dispatcher([spec])
    await dispatcher.start()
    dispatcher.dispatch(event())
    closer = asyncio.create_task(dispatcher.aclose(drain_timeout=30))
    await await_for(lambda: dispatcher.state is DispatcherState.CLOSING)
    closer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closer
    async with asyncio.timeout(DEADLINE):
        await dispatcher.aclose()  # waits for the shielded shutdown
    assert dispatcher.state is DispatcherState.CLOSED
    assert dispatcher.stats()["slow"].dropped == 1


# ------------------------------------------------------------------------------------ email


@dataclass
class Mailbox:
    port: int
    messages: list[Envelope]
    arrived: asyncio.Event
    ca: trustme.CA
    ca_file: str


class _Handler:
    def __init__(self, box: list[Envelope], arrived: asyncio.Event) -> None:
        self.box = box
        self.arrived = arrived

    async def handle_DATA(self, server: SMTP, session: object, envelope: Envelope) -> str:
        self.box.append(envelope)
        self.arrived.set()
        return "250 OK"


def _authenticate(
    server: SMTP, session: object, envelope: object, mechanism: str, auth_data: object
) -> AuthResult:
    login = getattr(auth_data, "login", b"")
    password = getattr(auth_data, "password", b"")
    ok = (login, password) == (b"alerts", b"hunter2")
    return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535


async def _smtp_server(tmp_path: Path, *, tls: bool) -> AsyncIterator[Mailbox]:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    messages: list[Envelope] = []
    arrived = asyncio.Event()
    handler = _Handler(messages, arrived)
    loop = asyncio.get_running_loop()
    options: dict[str, object] = (
        {"tls_context": server_ctx, "require_starttls": True, "authenticator": _authenticate}
        if tls
        else {}
    )
    server = await loop.create_server(lambda: SMTP(handler, **options), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield Mailbox(port, messages, arrived, ca, str(ca_file))
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def smtp_tls(tmp_path: Path) -> AsyncIterator[Mailbox]:
    async for box in _smtp_server(tmp_path, tls=True):
        yield box


@pytest.fixture
async def smtp_plain(tmp_path: Path) -> AsyncIterator[Mailbox]:
    async for box in _smtp_server(tmp_path, tls=False):
        yield box


async def test_email_goes_through_starttls_with_login(smtp_tls: Mailbox) -> None:
    spec = parse_notifier(
        "mail",
        {
            "type": "email",
            "host": "127.0.0.1",
            "port": smtp_tls.port,
            "from": "procvisor@example.com",
            "to": ["ops@example.com", "oncall@example.com"],
            "username": "alerts",
            "password": "hunter2",
            "ca_file": smtp_tls.ca_file,
            "timeout": "3s",
        },
    )
    async with Dispatcher([spec], host="node1") as dispatcher:
        dispatcher.dispatch(event())
        await dispatcher.join()
        stats = dispatcher.stats()["mail"]
    assert (stats.delivered, stats.failed) == (1, 0), stats.last_error
    [envelope] = smtp_tls.messages
    assert envelope.mail_from == "procvisor@example.com"
    assert envelope.rcpt_tos == ["ops@example.com", "oncall@example.com"]
    content = envelope.content
    assert isinstance(content, bytes)
    assert b"Subject: [CRITICAL] high_memory: web:0 uses 500M\r\n" in content
    assert b"Labels:   instance=0, service=web" in content


async def test_email_with_a_wrong_password_is_reported(smtp_tls: Mailbox) -> None:
    target = EmailSpec(
        "127.0.0.1",
        "procvisor@example.com",
        ("ops@example.com",),
        port=smtp_tls.port,
        username="alerts",
        password="wrong",
        ca_file=smtp_tls.ca_file,
        timeout=3.0,
    )
    with pytest.raises(NotifyError, match="refused the login of 'alerts'"):
        await deliver(NotifierSpec("mail", target), note(event()))
    assert smtp_tls.messages == []


async def test_email_is_not_sent_in_clear_when_starttls_is_missing(smtp_plain: Mailbox) -> None:
    target = EmailSpec(
        "127.0.0.1", "p@example.com", ("ops@example.com",), port=smtp_plain.port, timeout=3.0
    )
    with pytest.raises(NotifyError, match="does not offer STARTTLS"):
        await deliver(NotifierSpec("mail", target), note(event()))
    assert smtp_plain.messages == []

    plain = EmailSpec(
        "127.0.0.1",
        "p@example.com",
        ("ops@example.com",),
        port=smtp_plain.port,
        starttls=False,
        timeout=3.0,
    )
    await deliver(NotifierSpec("mail", plain), note(event(AlertEventKind.RESOLVED)))
    [envelope] = smtp_plain.messages
    assert isinstance(envelope.content, bytes)
    assert b"Subject: [RESOLVED] [CRITICAL] high_memory: web:0 uses 500M" in envelope.content


# -------------------------------------------------------------------------- log and filters


async def test_log_notifier_writes_one_line_at_the_severity_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="procvisor.alerts")
    async with Dispatcher([NotifierSpec("journal", LogSpec())]) as dispatcher:
        dispatcher.dispatch(event())
        dispatcher.dispatch(event(AlertEventKind.RESOLVED))
        await dispatcher.join()
    records = [r for r in caplog.records if r.name == "procvisor.alerts"]
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (
            logging.ERROR,
            "alert fired: [CRITICAL] high_memory: web:0 uses 500M [instance=0 service=web]",
        ),
        (
            logging.INFO,
            "alert resolved: [RESOLVED] [CRITICAL] high_memory: web:0 uses 500M "
            "[instance=0 service=web]",
        ),
    ]


async def test_notifiers_get_only_the_severities_and_rules_they_ask_for() -> None:
    notifiers = [
        NotifierSpec("all", LogSpec()),
        NotifierSpec("pager", LogSpec(), min_severity=Severity.CRITICAL),
        NotifierSpec("mem", LogSpec(), rules=frozenset({"high_memory"})),
    ]
    async with Dispatcher(notifiers) as dispatcher:
        assert dispatcher.dispatch(event(severity=Severity.WARNING)) == 2  # all, mem
        assert dispatcher.dispatch(event(rule="disk", severity=Severity.EMERGENCY)) == 2
        assert dispatcher.dispatch(event(rule="disk", severity=Severity.INFO)) == 1
        assert dispatcher.dispatch(event(notify=False)) == 0  # silenced
        await dispatcher.join()
        delivered = {name: s.delivered for name, s in dispatcher.stats().items()}
    assert delivered == {"all": 3, "pager": 1, "mem": 1}


async def test_a_full_queue_drops_the_oldest(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="procvisor.alerts")
    dispatcher = Dispatcher([NotifierSpec("journal", LogSpec(), queue_size=2)])
    for rule in ("first", "second", "third"):
        assert dispatcher.dispatch(event(rule=rule)) == 1  # not started: they wait
    stats = dispatcher.stats()["journal"]
    assert (stats.queued, stats.dropped) == (2, 1)
    async with dispatcher:
        await dispatcher.join()
    logged = [r.getMessage() for r in caplog.records if r.name == "procvisor.alerts"]
    assert len(logged) == 2
    assert "] second:" in logged[0]
    assert "] third:" in logged[1]
    assert dispatcher.stats()["journal"].delivered == 2


async def test_dispatcher_lifecycle_misuse() -> None:
    dispatcher = Dispatcher([NotifierSpec("journal", LogSpec())])
    assert repr(dispatcher) == "<Dispatcher new notifiers=[journal]>"
    with pytest.raises(RuntimeError, match="start it first"):
        await dispatcher.join()
    async with dispatcher:
        assert dispatcher.state is DispatcherState.RUNNING
        with pytest.raises(RuntimeError, match="start it once"):
            await dispatcher.start()
    assert dispatcher.state is DispatcherState.CLOSED
    with pytest.raises(ValueError, match="two are named 'a'"):
        Dispatcher([NotifierSpec("a", LogSpec()), NotifierSpec("a", LogSpec())])


# ----------------------------------------------------------------------------- payloads


def test_notification_converts_monotonic_times_to_wall_clock() -> None:
    n = note(event(AlertEventKind.RESOLVED, at=990.0, fired_at=900.0))
    assert n.at.timestamp() == 1_700_000_000.0 - 10.0
    assert n.fired_at.timestamp() == 1_700_000_000.0 - 100.0
    payload = alert_payload(n)
    assert payload["at"] == "2023-11-14T22:13:10.000Z"
    assert payload["fired_at"] == "2023-11-14T22:11:40.000Z"


def test_alertmanager_payload_of_a_firing_alert_has_no_end() -> None:
    [alert] = alertmanager_payload(note(event(at=1000.0)))
    assert "endsAt" not in alert and "generatorURL" not in alert
    assert alert["startsAt"] == "2023-11-14T22:13:20.000Z"


def test_slack_colour_follows_severity() -> None:
    colours = {
        sev: slack_payload(note(event(severity=sev)))["attachments"][0]["color"]  # type: ignore[index]
        for sev in Severity
    }
    assert len(set(colours.values())) == 4
    assert colours[Severity.CRITICAL] == "#d00000"


def test_subject_does_not_repeat_the_rule_already_in_the_summary() -> None:
    ev = event(summary="high_memory: rss > 400M [service=web]", severity=Severity.WARNING)
    assert email_subject(note(ev)) == "[WARNING] high_memory: rss > 400M [service=web]"
    multi = event(summary="two\nlines")
    assert email_subject(note(multi)) == "[CRITICAL] high_memory: two lines"


def test_notify_error_survives_pickling() -> None:
    err = pickle.loads(pickle.dumps(NotifyError("boom", notifier="ops")))
    assert (str(err), err.notifier, err.message) == ("notifier 'ops': boom", "ops", "boom")


# ----------------------------------------------------------------------------- config


def test_parse_each_notifier_type() -> None:
    ops = parse_notifier(
        "ops",
        {
            "type": "webhook",
            "url": "https://hooks.example.com/services/T0/B0/XyZ",
            "format": "alertmanager",
            "headers": {"Authorization": "Bearer s3cret"},
            "timeout": "5s",
            "attempts": 4,
            "backoff": "250ms",
            "generator_url": "http://node1/alerts",
            "min_severity": "critical",
            "rules": ["high_memory", "fatal"],
            "queue_size": 10,
        },
    )
    assert ops.type is NotifierType.WEBHOOK
    assert ops.min_severity is Severity.CRITICAL
    assert ops.rules == frozenset({"high_memory", "fatal"})
    assert ops.queue_size == 10
    assert ops.target == WebhookSpec(
        "https://hooks.example.com/services/T0/B0/XyZ",
        WebhookFormat.ALERTMANAGER,
        (("Authorization", "Bearer s3cret"),),
        5.0,
        4,
        0.25,
        "http://node1/alerts",
    )

    script = parse_notifier("script", {"type": "command", "command": "notify --loud"})
    assert script.target == CommandSpec("notify --loud", False, 30.0)
    assert parse_notifier(
        "s", {"type": "command", "command": ["a", "b c"], "shell": True, "timeout": 2}
    ).target == CommandSpec(("a", "b c"), True, 2.0)

    mail = parse_notifier(
        "mail", {"type": "email", "host": "smtp", "from": "a@x", "to": "b@y", "starttls": False}
    )
    assert mail.target == EmailSpec("smtp", "a@x", ("b@y",), port=25, starttls=False)
    assert parse_notifier(
        "m", {"type": "email", "host": "h", "from": "a@x", "to": ["b@y"]}
    ).target == (EmailSpec("h", "a@x", ("b@y",), port=587))

    journal = parse_notifier("journal", {"type": "log"})
    assert journal == NotifierSpec("journal", LogSpec())


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({}, "alerts.notifiers.ops.type: required; one of 'webhook', 'command', 'email', 'log'"),
        (
            {"type": "webhok"},
            "alerts.notifiers.ops.type: 'webhok' is not a notifier type; did you mean 'webhook'?",
        ),
        ({"type": "webhook"}, "alerts.notifiers.ops.url: required, e.g. url = "),
        (
            {"type": "webhook", "ulr": "http://x"},
            "alerts.notifiers.ops.ulr: unknown key; did you mean 'url'? type 'webhook' accepts: ",
        ),
        (
            {"type": "log", "url": "http://x"},
            "alerts.notifiers.ops.url: not used with type 'log' (it is a key of type 'webhook')",
        ),
        (
            {"type": "webhook", "url": "ftp://x"},
            "alerts.notifiers.ops.url: 'ftp://x' is not an http(s) URL",
        ),
        (
            {"type": "webhook", "url": "http://x", "format": "slak"},
            "alerts.notifiers.ops.format: 'slak' is not a format; did you mean 'slack'?",
        ),
        (
            {"type": "webhook", "url": "http://x", "timeout": 0},
            "alerts.notifiers.ops.timeout: 0 must be a duration of more than 0",
        ),
        (
            {"type": "webhook", "url": "http://x", "timeout": "soon"},
            "alerts.notifiers.ops.timeout: 'soon' is not a duration",
        ),
        (
            {"type": "webhook", "url": "http://x", "attempts": 0},
            "alerts.notifiers.ops.attempts: 0 must be a whole number of 1 or more",
        ),
        (
            {"type": "webhook", "url": "http://x", "generator_url": "http://y"},
            "alerts.notifiers.ops.generator_url: only used with format = 'alertmanager'",
        ),
        (
            {"type": "webhook", "url": "http://x", "headers": {"X-Token": 12}},
            "alerts.notifiers.ops.headers.X-Token: must be a string, not int",
        ),
        (
            {"type": "webhook", "url": "http://x", "min_severity": "loud"},
            "alerts.notifiers.ops.min_severity: 'loud' is not a severity",
        ),
        (
            {"type": "log", "rules": "fatal"},
            "alerts.notifiers.ops.rules: 'fatal' must be a non-empty list of strings",
        ),
        (
            {"type": "log", "rules": ["ok", 3]},
            "alerts.notifiers.ops.rules[1]: 3 must be a non-empty string",
        ),
        (
            {"type": "log", "queue_size": 0},
            "alerts.notifiers.ops.queue_size: 0 must be a whole number of 1 or more",
        ),
        ({"type": "command"}, "alerts.notifiers.ops.command: required"),
        (
            {"type": "command", "command": []},
            "alerts.notifiers.ops.command: [] must be a non-empty list",
        ),
        (
            {"type": "command", "command": "a 'b"},
            'alerts.notifiers.ops.command: "a \'b" cannot be split',
        ),
        (
            {"type": "command", "command": "a", "shell": "yes"},
            "alerts.notifiers.ops.shell: 'yes' must be true or false",
        ),
        ({"type": "email", "from": "a@x", "to": "b@y"}, "alerts.notifiers.ops.host: required"),
        ({"type": "email", "host": "h", "from": "a@x"}, "alerts.notifiers.ops.to: required"),
        (
            {"type": "email", "host": "h", "from": "nobody", "to": "b@y"},
            "alerts.notifiers.ops.from: 'nobody' is not a mail address",
        ),
        (
            {"type": "email", "host": "h", "from": "a@x", "to": ["b@y", "c"]},
            "alerts.notifiers.ops.to[1]: 'c' is not a mail address",
        ),
        (
            {"type": "email", "host": "h", "from": "a@x", "to": "b@y", "username": "u"},
            "alerts.notifiers.ops.password: required with a username",
        ),
        (
            {"type": "email", "host": "h", "from": "a@x", "to": "b@y", "port": 0},
            "alerts.notifiers.ops.port: 0 must be a whole number of 1 or more",
        ),
    ],
)
def test_config_errors_name_the_key_path(table: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_notifier("ops", table)
    assert str(caught.value).startswith(message), str(caught.value)


def test_config_error_path_follows_field() -> None:
    with pytest.raises(ValueError, match=r"^daemon\.alerting\.x\.url: required"):
        parse_notifier("x", {"type": "webhook"}, field="daemon.alerting.x")


def test_secrets_never_show_in_repr_or_listing() -> None:
    hook = parse_notifier(
        "ops",
        {
            "type": "webhook",
            "url": "https://hooks.slack.com/services/T0/B0/XyZsecret?token=abc",
            "headers": {"Authorization": "Bearer s3cret"},
        },
    )
    mail = parse_notifier(
        "mail",
        {
            "type": "email",
            "host": "h",
            "from": "a@x",
            "to": "b@y",
            "username": "u",
            "password": "pw!",
        },
    )
    for shown in (repr(hook), repr(hook.describe()), repr(mail), repr(mail.describe())):
        for secret in ("s3cret", "XyZsecret", "token=abc", "pw!"):
            assert secret not in shown
    assert hook.describe()["url"] == "https://hooks.slack.com/***"
    assert hook.describe()["headers"] == {"Authorization": "***"}
    assert mail.describe()["password"] == "***"
    assert "password='***'" in repr(mail.target)
