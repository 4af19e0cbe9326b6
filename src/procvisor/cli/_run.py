"""``procvisor run``: run one command in its own process group, with limits and a timeout.

The command runs through the process layer directly (``procvisor.arun``), not through the
daemon. Its stdout and stderr are inherited, so its output streams live; with ``--json`` they
are captured and printed, with everything else the run reports, as one JSON object.

Signals: SIGINT, SIGTERM and SIGHUP sent to procvisor all take one path. They are received
by the asyncio loop (``loop.add_signal_handler``), whose handler only records the signal and
cancels the task awaiting the run; the process layer answers the cancellation by stopping
the command's whole process group (stop signal, ``--grace``, SIGKILL), and a second signal
cancels again, which kills the group at once. procvisor then exits 128+N for the first
signal N. No exception is ever raised from a signal handler, so a signal that lands while
the command is being spawned cannot leave the group behind. A signal that was ignored when
procvisor started (``nohup``, a background job of a non-interactive shell) stays ignored.

Every failure prints one line on stderr, prefixed ``procvisor: ``, and never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import click

import procvisor
from procvisor.policy import parse_duration

__all__ = ["UsageLine", "as_usage_line", "execute", "run_command"]

if TYPE_CHECKING:
    _ParamType = click.ParamType[Any, Any]  # generic since click 8.2; 8.1 is still supported
else:
    _ParamType = click.ParamType

EXIT_USAGE = 2
"""An unknown option, a missing command, or an option value of the wrong form."""
EXIT_TIMEOUT = 124
"""The ``--timeout`` expired and the group was stopped (as coreutils ``timeout``)."""
EXIT_FAILED = 125
"""procvisor itself failed, for instance it could not create a pipe."""
EXIT_CANNOT_RUN = 126
"""The command exists but cannot be run: not executable, or not a format the kernel runs."""
EXIT_NOT_FOUND = 127
"""The command was not found."""
EXIT_LIMIT_FALLBACK = 137
"""A limit stopped the command but it exited 0 anyway (it caught the stop signal)."""

_SPAWN_EXITS = {
    "not_found": EXIT_NOT_FOUND,
    "permission_denied": EXIT_CANNOT_RUN,
    "exec_format": EXIT_CANNOT_RUN,
}
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_QUIET_SIGNALS = frozenset({"SIGPIPE"})  # like shells: a closed pipe is how `| head` works


def _say(message: object) -> None:
    """Print one ``procvisor: ...`` line on stderr."""
    text = " ".join(str(message).split())
    click.echo(f"procvisor: {text}", err=True)


def _describe(argv: Sequence[str]) -> str:
    text = shlex.join(argv)
    return text if len(text) <= 80 else text[:77] + "..."


class UsageLine(click.UsageError):
    """A usage error shown as one ``procvisor: ...`` line, exit status 2.

    click's own display is three lines (usage, help hint, error); procvisor prints every
    error as one line. ``hint`` adds a pointer to ``--help`` where the message alone does
    not say what is accepted.
    """

    def __init__(self, message: str, ctx: click.Context | None = None, *, hint: bool = True):
        super().__init__(message, ctx)
        self.hint = hint

    def show(self, file: IO[Any] | None = None) -> None:
        message = self.format_message()
        message = message[:1].lower() + message[1:]
        if message.endswith("."):
            message = message[:-1]
        if self.hint and self.ctx is not None:
            message += f" (see '{self.ctx.command_path} --help')"
        _say(message)


def as_usage_line(exc: click.UsageError, ctx: click.Context | None) -> UsageLine:
    """``exc`` as a :class:`UsageLine`; a bad value's message already lists what is accepted."""
    if isinstance(exc, UsageLine):
        return exc
    hint = isinstance(exc, click.MissingParameter) or not isinstance(exc, click.BadParameter)
    return UsageLine(exc.format_message(), ctx or exc.ctx, hint=hint)


class OneLineCommand(click.Command):
    """A click command whose usage errors are one line, as procvisor's other errors are.

    Every ``procvisor`` subcommand uses it.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise as_usage_line(exc, ctx) from None


class OneLineGroup(click.Group):
    """A click group whose errors are one ``procvisor: ...`` line, like the rest.

    Ctrl-C while click parses the command line exits 130 like any other Ctrl-C, not with
    click's "Aborted!" and status 1.
    """

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except KeyboardInterrupt:
            raise click.exceptions.Exit(128 + signal.SIGINT) from None

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args:
            return super().parse_args(ctx, args)  # click shows the help, as it should
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise as_usage_line(exc, ctx) from None

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            raise as_usage_line(exc, ctx) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise click.exceptions.Exit(128 + signal.SIGINT) from None


def _strip_field(message: str, field: str) -> str:
    """The library names the field (``limits.memory: ...``); click names the option instead."""
    prefix = f"{field}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


class _LimitValue(_ParamType):
    """A value of one :class:`procvisor.Limits` field, checked as ``Limits`` checks it."""

    def __init__(self, field: str, name: str) -> None:
        self.field = field
        self.name = name

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value  # already converted
        try:
            limits = procvisor.Limits(**{self.field: value})
        except ValueError as exc:
            self.fail(_strip_field(str(exc), f"limits.{self.field}"), param, ctx)
        return getattr(limits, self.field)


class _Signal(_ParamType):
    """A signal name (``TERM``, ``SIGINT``) or number."""

    name = "signal"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        # Only `run` needs the process layer (and asyncio): not every other command's start.
        from procvisor.process import parse_signal  # noqa: PLC0415

        try:
            return parse_signal(int(value) if value.isdigit() else value)
        except ValueError as exc:
            self.fail(_strip_field(str(exc), "signal"), param, ctx)


class _Duration(_ParamType):
    """Seconds, or a string like ``250ms``, ``10s``, ``1m30s``."""

    name = "duration"

    def __init__(self, *, positive: bool) -> None:
        self.positive = positive

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            seconds = parse_duration(value, field="value")
        except ValueError as exc:
            self.fail(_strip_field(str(exc), "value"), param, ctx)
        if self.positive and seconds <= 0:
            self.fail(f"{value!r} must be more than 0 seconds, e.g. '500ms' or '10s'", param, ctx)
        return seconds


class _EnvVar(_ParamType):
    """``KEY=VALUE`` (the value may hold ``=`` and may be empty)."""

    name = "KEY=VALUE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        key, equals, text = value.partition("=")
        if not equals or not key:
            self.fail(
                f"{value!r} is not KEY=VALUE; give a variable name, '=', then the value "
                "(e.g. --env LANG=C.UTF-8)",
                param,
                ctx,
            )
        return (key, text)


class _EnvFile(_ParamType):
    """A file of ``KEY=VALUE`` lines (``env_file``'s format), read into its pairs."""

    name = "FILE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        from pathlib import Path  # noqa: PLC0415 - only when the option is given

        from procvisor.daemon._envfile import EnvFileError, read_env_files  # noqa: PLC0415

        try:
            return tuple(read_env_files([Path(value)]).items())
        except EnvFileError as exc:
            self.fail(str(exc), param, ctx)


def env_file_option(help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--env-file FILE`` (repeatable), for ``run`` and ``submit``."""
    return click.option(
        "--env-file", "env_files", type=_EnvFile(), multiple=True, metavar="FILE", help=help
    )


def merged_env(
    env_files: tuple[tuple[tuple[str, str], ...], ...], env: tuple[tuple[str, str], ...]
) -> dict[str, str]:
    """The variables of the ``--env-file`` files in order, then ``--env`` over them."""
    merged: dict[str, str] = {}
    for pairs in env_files:
        merged.update(pairs)
    merged.update(env)
    return merged


@dataclass(frozen=True, slots=True)
class RunRequest:
    """Everything ``procvisor run`` was asked to do, parsed and checked."""

    command: tuple[str, ...]
    timeout: float | None = None
    limits: procvisor.Limits | None = None
    cwd: str | None = None
    env: Mapping[str, str] | None = None
    grace: float = 5.0
    stop_signal: int = signal.SIGTERM
    user: str | None = None
    group: str | None = None
    shell: bool = False
    as_json: bool = False


class _Interrupted(Exception):
    """procvisor received ``signum`` and stopped the command's group."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


async def _run_until_signal(request: RunRequest) -> procvisor.Result:
    """``procvisor.arun`` the request; SIGINT/SIGTERM/SIGHUP cancel it, a second one kills.

    Raises:
        _Interrupted: a signal stopped the run (the group is gone by then).
        Whatever ``procvisor.arun`` raises.
    """
    import asyncio  # noqa: PLC0415 - only `run` needs it: ~30 ms of every other command

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[int] = []
    what = _describe(request.command)

    def on_signal(signum: int) -> None:
        if not received:
            name = signal.Signals(signum).name
            # stderr may be gone (the terminal hung up); the stop matters, not the note.
            with contextlib.suppress(OSError):
                _say(f"{name} received; stopping {what} (a second signal kills it at once)")
        received.append(signum)
        task.cancel()

    installed: dict[signal.Signals, Callable[..., Any] | int | None] = {}
    try:
        for signum in _STOP_SIGNALS:
            previous = signal.getsignal(signum)
            if previous is signal.SIG_IGN:
                continue  # nohup and background jobs ignore these on purpose
            loop.add_signal_handler(signum, on_signal, signum)
            installed[signum] = previous
        # With --shell the one string is the script; a sequence would be quoted as one word.
        cmd = request.command[0] if request.shell else request.command
        return await procvisor.arun(
            cmd,
            timeout=request.timeout,
            input="inherit",
            cwd=request.cwd,
            env=request.env,
            limits=request.limits,
            capture=request.as_json,
            grace=request.grace,
            stop_signal=request.stop_signal,
            user=request.user,
            group=request.group,
            shell=request.shell,
        )
    except asyncio.CancelledError:
        if received:
            raise _Interrupted(received[0]) from None
        raise
    finally:
        for signum, previous in installed.items():
            loop.remove_signal_handler(signum)
            if previous is not None:  # None: set outside Python; asyncio's default stays
                signal.signal(signum, previous)  # asyncio restores the default, not this


def _print_json(result: procvisor.Result) -> None:
    click.echo(json.dumps(result.to_dict()))


def limit_status(result: procvisor.Result) -> int:
    """The exit status after a limit stopped the command: its own, but never 0."""
    status = result.exit_status
    return status if status != 0 else EXIT_LIMIT_FALLBACK


def execute(request: RunRequest) -> int:
    """Run ``request``, report its outcome, and return procvisor's exit status."""
    import asyncio  # noqa: PLC0415 - see _run_until_signal

    main = _run_until_signal(request)
    try:
        result = asyncio.run(main)
    except _Interrupted as exc:
        return 128 + exc.signum
    except KeyboardInterrupt:
        # Ctrl-C before our handlers were installed or after they were removed: no group
        # of ours is running at those moments. If it came before asyncio started ``main``,
        # close it, or Python warns that it was never awaited.
        main.close()
        return 128 + signal.SIGINT
    except procvisor.TimeoutExpired as exc:
        _say(exc)
        if request.as_json and exc.result is not None:
            _print_json(exc.result)
        return EXIT_TIMEOUT
    except procvisor.LimitExceeded as exc:
        _say(exc)
        if exc.result is None:
            return EXIT_LIMIT_FALLBACK
        if request.as_json:
            _print_json(exc.result)
        return limit_status(exc.result)
    except procvisor.SpawnError as exc:
        _say(exc)
        return _SPAWN_EXITS.get(exc.reason, EXIT_FAILED)
    except procvisor.ProcessError as exc:
        _say(exc)
        return EXIT_FAILED
    except (ValueError, TypeError) as exc:
        _say(exc)
        return EXIT_USAGE
    except OSError as exc:
        _say(f"cannot run {_describe(request.command)}: {exc.strerror or exc}")
        return EXIT_FAILED
    if result.signal is not None and result.signal not in _QUIET_SIGNALS:
        _say(f"{_describe(result.args)} was killed by {result.signal}")
    if request.as_json:
        _print_json(result)
    return result.exit_status


_EPILOG = """
\b
Options go before CMD; every argument from CMD on is the command's own
('procvisor run ls -l' runs 'ls -l'). A '--' before CMD is allowed.

\b
Exit status:
  N        the command exited with code N
  128+N    the command was killed by signal N
  124      --timeout expired; the command's group was stopped
  limit    a limit stopped the command: its own status (143 if the stop
           signal killed it, 152 for SIGXCPU), or 137 if it exited 0 anyway
  125      procvisor itself failed
  126      the command cannot be run (not executable, wrong format)
  127      the command was not found
  2        bad usage: unknown option, missing command, bad option value
  130      procvisor got SIGINT (Ctrl-C) and stopped the command's group;
           143 for SIGTERM, 129 for SIGHUP

\b
Examples:
  procvisor run --timeout 30s --memory 512M --cpus 1.5 -- make test
  procvisor run --json --env LANG=C -- ls -l
  procvisor run --shell -- 'grep -c error *.log | sort'
"""


@click.command(
    "run",
    cls=OneLineCommand,
    epilog=_EPILOG,
    context_settings={"allow_interspersed_args": False, "help_option_names": ["-h", "--help"]},
)
@click.option(
    "--timeout",
    type=_Duration(positive=True),
    metavar="DURATION",
    help="Stop the command's group after this long (e.g. 500ms, 10s, 2m); exit 124.",
)
@click.option(
    "--memory",
    type=_LimitValue("memory", "size"),
    metavar="SIZE",
    help="Memory of the command's whole tree (a memory cgroup; RLIMIT_AS per process "
    "where none can be made), e.g. 256M, 2G.",
)
@click.option(
    "--cpu-time",
    type=_LimitValue("cpu_time", "duration"),
    metavar="DURATION",
    help="CPU time per process (RLIMIT_CPU), e.g. 10s.",
)
@click.option(
    "--wall-time",
    type=_LimitValue("wall_time", "duration"),
    metavar="DURATION",
    help="Wall-clock time of the group, enforced as a limit (not a timeout).",
)
@click.option(
    "--open-files",
    type=_LimitValue("open_files", "count"),
    metavar="N",
    help="Open file descriptors per process (RLIMIT_NOFILE), 3 or more.",
)
@click.option(
    "--processes",
    type=_LimitValue("processes", "count"),
    metavar="N",
    help="Processes in the command's tree (a pids cgroup; where none can be made, "
    "RLIMIT_NPROC, or sampled for root).",
)
@click.option(
    "--cpus",
    type=_LimitValue("cpus", "number"),
    metavar="N",
    help="CPUs' worth of time the command's tree may use, e.g. 0.5, 2 (a cpu cgroup).",
)
@click.option(
    "--nice",
    type=_LimitValue("nice", "niceness"),
    metavar="N",
    help="CPU priority of the command's group, -20 (highest; needs root) to 19 (lowest).",
)
@click.option(
    "--cwd",
    type=click.Path(exists=True, file_okay=False, dir_okay=True),
    metavar="DIR",
    help="Run the command in DIR.",
)
@click.option(
    "--env",
    "env",
    type=_EnvVar(),
    multiple=True,
    metavar="KEY=VALUE",
    help="Set an environment variable for the command (repeatable).",
)
@env_file_option("Set the variables of a file of KEY=VALUE lines (repeatable; --env wins).")
@click.option(
    "--grace",
    type=_Duration(positive=False),
    default="5s",
    show_default=True,
    metavar="DURATION",
    help="When stopping: time between SIGTERM and SIGKILL.",
)
@click.option(
    "--stop-signal",
    type=_Signal(),
    default="TERM",
    show_default=True,
    metavar="SIGNAL",
    help="The signal that asks the command's group to stop (e.g. INT, HUP, 2).",
)
@click.option(
    "--user",
    metavar="USER",
    help="Run as this user (name or uid), with its groups; procvisor must run as root.",
)
@click.option(
    "--group",
    metavar="GROUP",
    help="Run with this primary group (name or gid); procvisor must run as root.",
)
@click.option(
    "--shell",
    is_flag=True,
    help="Run CMD, one string, with /bin/sh -c. Off by default: only for trusted input.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Capture the output and print the whole result as one JSON object.",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED, metavar="CMD [ARGS]...")
@click.pass_context
def run_command(
    ctx: click.Context,
    command: tuple[str, ...],
    timeout: float | None,
    memory: int | None,
    cpu_time: float | None,
    wall_time: float | None,
    open_files: int | None,
    processes: int | None,
    cpus: float | None,
    nice: int | None,
    cwd: str | None,
    env: tuple[tuple[str, str], ...],
    env_files: tuple[tuple[tuple[str, str], ...], ...],
    grace: float,
    stop_signal: int,
    user: str | None,
    group: str | None,
    shell: bool,
    as_json: bool,
) -> None:
    """Run CMD in its own process group and exit with its status.

    Its output streams as it comes and it reads procvisor's stdin. On a timeout, an exceeded
    limit, Ctrl-C, SIGTERM or SIGHUP, the whole group is stopped: SIGTERM, then SIGKILL
    after --grace. Errors are one line on stderr.
    """
    if shell and len(command) != 1:
        raise UsageLine(
            f"--shell takes the command as one string, got {len(command)} arguments; "
            "quote it: procvisor run --shell -- 'CMD ARGS | ...'",
            ctx=ctx,
        )
    limits = None
    values = (memory, cpu_time, wall_time, open_files, processes, cpus, nice)
    if any(v is not None for v in values):
        limits = procvisor.Limits(
            memory=memory,
            cpu_time=cpu_time,
            wall_time=wall_time,
            open_files=open_files,
            processes=processes,
            cpus=cpus,
            nice=nice,
        )
    request = RunRequest(
        command=command,
        timeout=timeout,
        limits=limits,
        cwd=cwd,
        env=merged_env(env_files, env) or None,
        grace=grace,
        stop_signal=stop_signal,
        user=user,
        group=group,
        shell=shell,
        as_json=as_json,
    )
    ctx.exit(execute(request))
