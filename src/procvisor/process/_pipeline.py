"""Pipelines: ``cmd("ls", "-la") | cmd("grep", "x")``.

All stages run in one process group and are stopped together. The outcome follows bash's
``pipefail``: the pipeline fails with the rightmost stage that failed, and the error names it.
One deliberate difference: a stage before the last that was killed by SIGPIPE (its reader
finished early, as in ``yes | head -1``) does not count as a failure.
"""

from __future__ import annotations

import os
import signal as _signal
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from procvisor.process._api import DEFAULT_MAX_OUTPUT, _duration, raise_for_outcome
from procvisor.process._drivers import AsyncDriver, drive_steps, drive_sync, wait_async
from procvisor.process._exec import Execution, InputLike
from procvisor.process._limits import Limits
from procvisor.process._output import LineQueue
from procvisor.process._result import Result, parse_signal
from procvisor.process._spawn import PreparedCommand, prepare


@dataclass(frozen=True, slots=True)
class Command:
    """One command, ready to be run alone or piped into another with ``|``."""

    args: tuple[str, ...]
    cwd: str | os.PathLike[str] | None = None
    env: Mapping[str, str] | None = None
    inherit_env: bool = True
    user: str | int | None = None
    group: str | int | None = None
    umask: int | str | None = None
    limits: Limits | None = None

    def __or__(self, other: Command | Pipeline) -> Pipeline:
        return Pipeline((self,)) | other

    def prepare(self) -> PreparedCommand:
        return prepare(
            self.args,
            env=self.env,
            inherit_env=self.inherit_env,
            cwd=self.cwd,
            user=self.user,
            group=self.group,
            umask=self.umask,
            limits=self.limits,
        )


def cmd(
    *args: str | os.PathLike[str],
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    inherit_env: bool = True,
    user: str | int | None = None,
    group: str | int | None = None,
    umask: int | str | None = None,
    limits: Limits | None = None,
) -> Command:
    """A command for a pipeline: ``cmd("grep", "-c", "x")``. Options apply to this stage."""
    if limits is not None and (limits.wall_time is not None or limits.processes is not None):
        raise ValueError(
            "limits.wall_time and limits.processes apply to a whole pipeline: "
            "give the pipeline a timeout instead"
        )
    return Command(
        tuple(os.fspath(a) for a in args), cwd, env, inherit_env, user, group, umask, limits
    )


@dataclass(frozen=True, slots=True)
class PipelineResult:
    """The outcome of a pipeline: each stage's Result and the pipeline's own."""

    stages: tuple[Result, ...]
    stdout: bytes
    """What the last stage wrote."""
    returncode: int | None
    """``pipefail``: the code of the rightmost failed stage, else 0."""
    failed_stage: int | None
    duration: float
    timed_out: bool
    truncated: bool

    @property
    def ok(self) -> bool:
        return self.failed_stage is None and not self.timed_out

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def stderr(self) -> bytes:
        """Every stage's stderr, in stage order."""
        return b"".join(s.stderr for s in self.stages)


def _stage_failed(result: Result, last: bool) -> bool:
    if result.returncode == 0:
        return False
    return last or result.signal != "SIGPIPE"


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Commands connected stdout to stdin, in one process group."""

    commands: tuple[Command, ...]

    def __or__(self, other: Command | Pipeline) -> Pipeline:
        if isinstance(other, Command):
            return Pipeline((*self.commands, other))
        if isinstance(other, Pipeline):
            return Pipeline(self.commands + other.commands)
        return NotImplemented

    def _execution(
        self,
        input: InputLike,
        timeout: float | str | None,
        max_output: int,
        stop_signal: int | str,
        grace: float | str,
        lines: LineQueue | None = None,
    ) -> Execution:
        # When streaming, only stdout is streamed; stderr is kept for the error message.
        return Execution(
            [c.prepare() for c in self.commands],
            input=input,
            max_output=max_output,
            stop_signal=parse_signal(stop_signal, field="stop_signal"),
            grace=_duration(grace, "grace", positive=False) or 0.0,
            timeout=_duration(timeout, "timeout", positive=True),
            lines=lines,
            lines_stderr=False,
        )

    def _outcome(self, ex: Execution, check: bool) -> PipelineResult:
        stages = tuple(ex.stage_result(i) for i in range(len(ex.stages)))
        failed = None
        for i in range(len(stages) - 1, -1, -1):
            if _stage_failed(stages[i], i == len(stages) - 1):
                failed = i
                break
        result = PipelineResult(
            stages=stages,
            stdout=stages[-1].stdout,
            returncode=0 if failed is None else stages[failed].returncode,
            failed_stage=failed,
            duration=max(s.duration for s in stages),
            timed_out=ex.stopping == "timeout",
            truncated=any(s.truncated for s in stages),
        )
        if result.timed_out or failed is not None:
            index = failed if failed is not None else len(stages) - 1
            raise_for_outcome(ex, stages[index], check=check, stage=index)
        return result

    def run(
        self,
        *,
        input: InputLike = None,
        timeout: float | str | None = None,
        check: bool = False,
        max_output: int = DEFAULT_MAX_OUTPUT,
        stop_signal: int | str = _signal.SIGTERM,
        grace: float | str = 5.0,
    ) -> PipelineResult:
        """Run the pipeline to its end.

        Raises:
            TimeoutExpired: it ran past ``timeout``; every stage was stopped.
            NonZeroExit, Signaled: with ``check=True``, the rightmost failed stage (named).
            SpawnError: a stage could not start (the others are stopped).
        """
        ex = self._execution(input, timeout, max_output, stop_signal, grace)
        drive_sync(ex)
        return self._outcome(ex, check)

    async def arun(
        self,
        *,
        input: InputLike = None,
        timeout: float | str | None = None,
        check: bool = False,
        max_output: int = DEFAULT_MAX_OUTPUT,
        stop_signal: int | str = _signal.SIGTERM,
        grace: float | str = 5.0,
    ) -> PipelineResult:
        """The awaitable :meth:`run`; cancelling it stops every stage."""
        ex = self._execution(input, timeout, max_output, stop_signal, grace)
        await wait_async(AsyncDriver(ex))
        return self._outcome(ex, check)

    def read(self, *, input: InputLike = None, timeout: float | str | None = None) -> str:
        """Run with ``check=True`` and return the last stage's output as text."""
        return self.run(input=input, timeout=timeout, check=True).stdout_text

    def lines(
        self, *, input: InputLike = None, timeout: float | str | None = None
    ) -> Iterator[str]:
        """Yield the last stage's output line by line as it comes (``check=True`` at the end).

        Leaving the loop early stops the pipeline.
        """
        queue = LineQueue(DEFAULT_MAX_OUTPUT, lambda: None)
        ex = self._execution(input, timeout, DEFAULT_MAX_OUTPUT, _signal.SIGTERM, 5.0, queue)
        steps = drive_steps(ex)
        try:
            for _ in steps:
                while (line := queue.get()) is not None:
                    if line.stream == "stdout":
                        yield line.text
            while (line := queue.get()) is not None:
                if line.stream == "stdout":
                    yield line.text
        finally:
            if not ex.done:
                ex.begin_stop("stopped")
                for _ in steps:
                    pass
        self._outcome(ex, True)
