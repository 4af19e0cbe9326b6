"""Turning a command into a running child: validation, resolution and the spawn call.

Spawning is the hot path of jobs and pools, so it takes the cheapest route the options allow:

* ``os.posix_spawn`` (glibc uses ``clone(CLONE_VM | CLONE_VFORK)``) when there is no ``cwd``
  (or it is this process's own), ``user``, ``group`` or ``umask`` to set;
* ``subprocess.Popen`` otherwise, which keeps the vfork path for ``cwd``, ``process_group``
  and ``umask``.

Kernel limits are set by exec'ing through ``prlimit(1)`` (same pid, limits set before the
command runs, vfork path kept); without ``prlimit`` on the machine, by ``preexec_fn``.
Every check that can fail is made in the parent first, so errors are specific.

Extra fds (``pass_fds``, e.g. listening sockets) are given to the child at the numbers asked
for: by ``dup2`` file actions on the posix_spawn path, by ``preexec_fn`` on the subprocess path
(which can only keep an fd's number). A variable holding the child's own pid (``pid_env``,
e.g. ``LISTEN_PID`` for socket activation), and joining a cgroup before the command runs
(``cgroup_procs``), are done by exec'ing through ``/bin/sh``, whose ``exec`` keeps the pid;
the script is fixed and the command is passed as its arguments, so nothing of the command
is parsed by the shell.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal's C module: no stub
import errno as _errno
import fcntl
import functools
import grp
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from procvisor.errors import SpawnError
from procvisor.process._limits import Limits, prlimit_args, setrlimits

CommandLike = str | Sequence[str | os.PathLike[str]]
FdsLike = Mapping[int, int] | Sequence[int]
"""Fds to pass: ``{child_fd: our_fd}``, or our fds to pass at the same numbers."""
StreamSpec = int | Literal["devnull", "inherit", "stdout"]

_RESET_SIGNALS = frozenset((signal.SIGPIPE, signal.SIGXFSZ))  # Python ignores these
_SIGNALS = tuple(
    int(s) for s in sorted(signal.valid_signals()) if s not in (signal.SIGKILL, signal.SIGSTOP)
)
# The C function: signal.getsignal converts each answer to an enum, 20 times slower.
_getsignal: Callable[[int], object] = _signal.getsignal
_IGNORED = int(signal.SIG_IGN)


def signals_to_reset() -> tuple[int, ...]:
    """The signals a posix_spawn child resets to SIG_DFL: all but those this process ignores.

    A child keeps what exec keeps: the signals ignored here stay ignored (a command under
    ``nohup`` keeps ignoring SIGHUP), except SIGPIPE and SIGXFSZ, which Python ignores for
    itself. Handled signals become SIG_DFL, as exec would make them. This is what the
    subprocess path does too (``restore_signals``). Naming every signal saves the vfork child
    one ``rt_sigaction`` per signal: glibc asks for the disposition of each signal it was
    not told to reset (about 60 syscalls while the parent is suspended).
    """
    global _reset_for
    dispositions = tuple(map(_getsignal, _SIGNALS))
    if dispositions != _reset_for[0]:
        reset = zip(_SIGNALS, dispositions, strict=True)
        _reset_for = (
            dispositions,
            tuple(s for s, d in reset if d != _IGNORED or s in _RESET_SIGNALS),
        )
    return _reset_for[1]


_reset_for: tuple[tuple[object, ...], tuple[int, ...]] = ((), ())


@dataclass(frozen=True, slots=True)
class PreparedCommand:
    """A validated command: everything needed to spawn it, nothing left to check."""

    args: tuple[str, ...]
    executable: str
    env: Mapping[bytes, bytes]
    cwd: str | None
    uid: int | None
    gid: int | None
    extra_groups: tuple[int, ...] | None
    umask: int | None
    limits: Limits | None
    fds: tuple[tuple[int, int], ...] = ()
    """``(child_fd, our_fd)`` pairs passed to the child beside stdin, stdout and stderr."""
    pid_env: tuple[str, ...] = ()
    """Variables set to the child's own pid in its environment."""

    @property
    def as_root(self) -> bool:
        """Whether it runs as root: its own uid, else this process's effective uid.

        Asked only where limits are set (root is exempt from ``RLIMIT_NPROC``), so a run
        without limits makes no ``geteuid`` call.
        """
        return (self.uid if self.uid is not None else os.geteuid()) == 0

    @property
    def mechanisms(self) -> dict[str, str]:
        return self.limits.mechanisms(as_root=self.as_root) if self.limits else {}


def _split(cmd: CommandLike, shell: bool) -> tuple[str, ...]:
    if isinstance(cmd, bytes):
        raise TypeError("cmd must be a str or a sequence of str, not bytes")
    if shell:
        script = cmd if isinstance(cmd, str) else shlex.join(os.fspath(a) for a in cmd)
        return ("/bin/sh", "-c", script)
    if isinstance(cmd, str):
        try:
            return tuple(shlex.split(cmd))
        except ValueError as exc:
            raise ValueError(f"cmd: {cmd!r} cannot be split into arguments: {exc}") from None
    if isinstance(cmd, list | tuple) and all(map(str.__instancecheck__, cmd)):
        return tuple(cmd)  # the common case, checked in one C loop
    if not isinstance(cmd, Sequence):
        raise TypeError(f"cmd must be a str or a sequence of str, not {type(cmd).__name__}")
    out = []
    for i, arg in enumerate(cmd):
        if not isinstance(arg, str | os.PathLike):
            raise TypeError(f"cmd[{i}] must be a str or a path, not {type(arg).__name__}")
        out.append(os.fspath(arg))
    return tuple(out)


def _check_text(value: str, what: str) -> None:
    if "\0" in value:
        raise ValueError(f"{what} contains a NUL byte, which no program can receive")


def _build_env(env: Mapping[str, str] | None, inherit_env: bool) -> Mapping[bytes, bytes]:
    # os.environ keeps its own dict of bytes in step with it: handing posix_spawn a plain
    # dict of bytes saves decoding and re-encoding every inherited variable on every spawn
    # (about 0.1 ms each; see bench/RESULTS.md).
    inherited: Mapping[bytes, bytes] = getattr(os.environ, "_data", None) or {
        os.fsencode(k): os.fsencode(v) for k, v in os.environ.items()
    }
    if env is None:
        return inherited if inherit_env else {}
    merged: dict[bytes, bytes] = dict(inherited) if inherit_env else {}
    for key, value in env.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"env[{key!r}] must map str to str, got {type(value).__name__}")
        if not key or "=" in key:
            raise ValueError(f"env key {key!r} is not a valid variable name")
        _check_text(key, f"env key {key!r}")
        _check_text(value, f"env[{key!r}]")
        merged[os.fsencode(key)] = os.fsencode(value)
    return merged


_which_cache: dict[tuple[str, bytes | None], str] = {}


def _which(program: str, path: bytes | None) -> str | None:
    """``shutil.which`` in ``path`` (a PATH value), remembered like a shell's hash table.

    A remembered path is checked to still be executable on every use; a program newly
    installed earlier in PATH is found once the remembered one disappears.
    """
    key = (program, path)
    found = _which_cache.get(key)
    if found is not None and os.access(found, os.X_OK):
        return found
    found = shutil.which(program, path=_search_path(path))
    if found is not None:
        if len(_which_cache) > 512:
            _which_cache.clear()
        _which_cache[key] = found
    return found


def _search_path(path: bytes | None) -> str:
    return os.fsdecode(path) if path is not None else os.defpath


def _resolve(program: str, env: Mapping[bytes, bytes], command: tuple[str, ...]) -> str:
    if "/" in program:
        path = program
    else:
        found = _which(program, env.get(b"PATH"))
        if found is None:
            search = _search_path(env.get(b"PATH"))
            if shutil.which(program, mode=os.F_OK, path=search) is not None:
                raise SpawnError(
                    f"{program!r} was found in PATH but is not executable; chmod +x it",
                    reason="permission_denied",
                    command=command,
                    errno=_errno.EACCES,
                )
            raise SpawnError(
                f"program {program!r} not found in PATH ({search}); "
                "check the spelling or give its full path",
                reason="not_found",
                command=command,
                errno=_errno.ENOENT,
            )
        return found
    if not os.path.exists(path):
        raise SpawnError(
            f"program {path!r} does not exist",
            reason="not_found",
            command=command,
            errno=_errno.ENOENT,
        )
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        raise SpawnError(
            f"{path!r} is not an executable file; check its permissions (chmod +x)",
            reason="permission_denied",
            command=command,
            errno=_errno.EACCES,
        )
    return path


def _resolve_user(user: str | int, command: tuple[str, ...]) -> int:
    try:
        return pwd.getpwnam(user).pw_uid if isinstance(user, str) else pwd.getpwuid(user).pw_uid
    except (KeyError, OverflowError):
        raise SpawnError(
            f"user {user!r} does not exist on this machine",
            reason="bad_user",
            command=command,
        ) from None


def _resolve_group(group: str | int, command: tuple[str, ...]) -> int:
    try:
        return grp.getgrnam(group).gr_gid if isinstance(group, str) else grp.getgrgid(group).gr_gid
    except (KeyError, OverflowError):
        raise SpawnError(
            f"group {group!r} does not exist on this machine",
            reason="bad_group",
            command=command,
        ) from None


def _parse_umask(umask: int | str) -> int:
    try:
        value = int(umask, 8) if isinstance(umask, str) else int(umask)
    except ValueError:
        raise ValueError(f"umask: {umask!r} is not an octal mode like '022'") from None
    if not 0 <= value <= 0o777:
        raise ValueError(f"umask: {umask!r} must be between 000 and 777 (octal)")
    return value


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _pass_fds(pass_fds: FdsLike) -> tuple[tuple[int, int], ...]:
    """``pass_fds`` as sorted ``(child_fd, our_fd)`` pairs, each checked."""
    if isinstance(pass_fds, Mapping):
        pairs = list(pass_fds.items())
    elif isinstance(pass_fds, Sequence) and not isinstance(pass_fds, str | bytes):
        pairs = [(fd, fd) for fd in pass_fds]
    else:
        raise TypeError(
            "pass_fds must map the child's fd numbers to ours ({3: sock.fileno()}) or list "
            f"our fds to pass at the same numbers, not {type(pass_fds).__name__}"
        )
    for child_fd, our_fd in pairs:
        for what, fd in (("child fd", child_fd), ("fd", our_fd)):
            if not isinstance(fd, int) or isinstance(fd, bool):
                raise TypeError(f"pass_fds: {what} {fd!r} must be an int")
        if child_fd < 3:
            raise ValueError(
                f"pass_fds: child fd {child_fd} is stdin, stdout or stderr; pass extra fds at "
                "3 or above (input, capture and merge_stderr set those three)"
            )
        try:
            fcntl.fcntl(our_fd, fcntl.F_GETFD)
        except OSError:
            raise ValueError(f"pass_fds: fd {our_fd} is not open in this process") from None
    return tuple(sorted(pairs))


def prepare(
    cmd: CommandLike,
    *,
    shell: bool = False,
    env: Mapping[str, str] | None = None,
    inherit_env: bool = True,
    cwd: str | os.PathLike[str] | None = None,
    user: str | int | None = None,
    group: str | int | None = None,
    umask: int | str | None = None,
    limits: Limits | None = None,
    pass_fds: FdsLike = (),
    pid_env: str | Sequence[str] | None = None,
) -> PreparedCommand:
    """Validate ``cmd`` and its options; resolve the program, user, group and cwd.

    Raises:
        ValueError, TypeError: the arguments themselves are wrong (empty argv, NUL bytes...).
        SpawnError: the program, cwd, user or group cannot be used on this machine.
    """
    args = _split(cmd, shell)
    if not args or not args[0]:
        raise ValueError("cmd is empty: give the program to run and its arguments")
    if "\0" in "".join(args):  # rare: find the argument, for the message
        for i, arg in enumerate(args):
            _check_text(arg, f"cmd[{i}]")
    if limits is not None and not isinstance(limits, Limits):
        raise TypeError(f"limits must be a procvisor.Limits, not {type(limits).__name__}")
    full_env = _build_env(env, inherit_env)
    cwd_str = None
    if cwd is not None:
        cwd_str = os.fspath(cwd)
        _check_text(cwd_str, "cwd")
        if not os.path.isdir(cwd_str):
            raise SpawnError(
                f"cwd {cwd_str!r} is not an existing directory",
                reason="bad_cwd",
                command=args,
                errno=_errno.ENOENT,
            )
    executable = _resolve(args[0], full_env, args)
    uid = None if user is None else _resolve_user(user, args)
    gid = None if group is None else _resolve_group(group, args)
    extra_groups = None
    if uid is not None:
        # Like login(1): the user's primary group and supplementary groups, never root's.
        entry = pwd.getpwuid(uid)
        gid = entry.pw_gid if gid is None else gid
        extra_groups = tuple(os.getgrouplist(entry.pw_name, gid))
    if uid is not None or gid is not None:
        euid = os.geteuid()
        other = (uid is not None and uid != euid) or (gid is not None and gid != os.getegid())
        if other and euid != 0:
            raise SpawnError(
                "running a command as another user or group needs root; "
                "drop user/group or start procvisor as root",
                reason="permission_denied",
                command=args,
                errno=_errno.EPERM,
            )
    return PreparedCommand(
        args=args,
        executable=executable,
        env=full_env,
        cwd=cwd_str,
        uid=uid,
        gid=gid,
        extra_groups=extra_groups,
        umask=None if umask is None else _parse_umask(umask),
        limits=limits,
        fds=_pass_fds(pass_fds) if pass_fds else (),
        pid_env=_pid_env(pid_env),
    )


def _pid_env(names: str | Sequence[str] | None) -> tuple[str, ...]:
    if names is None:
        return ()
    for name in [names] if isinstance(names, str) else names:
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise ValueError(
                f"pid_env: {name!r} is not a variable name (letters, digits and '_', not "
                "starting with a digit)"
            )
    return (names,) if isinstance(names, str) else tuple(names)


_REASONS = {
    _errno.ENOENT: "not_found",
    _errno.EACCES: "permission_denied",
    _errno.EPERM: "permission_denied",
    _errno.ENOEXEC: "exec_format",
    _errno.EAGAIN: "resource_exhausted",
    _errno.ENOMEM: "resource_exhausted",
    _errno.EMFILE: "resource_exhausted",
    _errno.ENFILE: "resource_exhausted",
    _errno.E2BIG: "resource_exhausted",
}


def _spawn_error(exc: OSError, command: PreparedCommand) -> SpawnError:
    reason = _REASONS.get(exc.errno or 0, "os_error")
    if command.cwd is not None and exc.filename == command.cwd:
        reason = "bad_cwd"
    hint = {
        "exec_format": "; is it a script without a '#!' line, or built for another machine?",
        "resource_exhausted": "; the machine is out of processes, memory or file descriptors",
    }.get(reason, "")
    why = exc.strerror or str(exc)
    if reason == "not_found":
        # The program was found before the spawn: what exec did not find is its interpreter.
        why = _missing_interpreter(command.executable) or why
    return SpawnError(
        f"cannot start {command.args[0]!r}: {why}{hint}",
        reason=reason,
        command=command.args,
        errno=exc.errno,
    )


def _missing_interpreter(path: str) -> str | None:
    """What exec could not find when ``path`` exists: its '#!' interpreter, or its loader."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return None
    if head.startswith(b"#!"):
        words = head[2:].split(b"\n", 1)[0].split()
        if words:
            return f"its '#!' line names {os.fsdecode(words[0])!r}, which does not exist"
    if head.startswith(b"\x7fELF"):
        return "its dynamic loader does not exist here (built for another system?)"
    return None


_prlimit_path: str | Literal[False] | None = False


def prlimit_binary() -> str | None:
    """The path of util-linux ``prlimit``, or ``None`` (looked up once)."""
    global _prlimit_path
    if _prlimit_path is False:
        _prlimit_path = shutil.which("prlimit") or next(
            (p for p in ("/usr/bin/prlimit", "/bin/prlimit") if os.access(p, os.X_OK)), None
        )
    return _prlimit_path or None


def rlimit_method() -> str:
    """How kernel limits are set in the child: ``"prlimit"`` or ``"preexec_fn"``."""
    return "prlimit" if prlimit_binary() else "preexec_fn"


def spawn(
    command: PreparedCommand,
    *,
    stdin: int | Literal["devnull", "inherit"],
    stdout: int | Literal["inherit", "devnull"],
    stderr: int | Literal["inherit", "devnull", "stdout"],
    pgroup: int | None = None,
    started: list[int] | None = None,
    cgroup_procs: Sequence[str] = (),
) -> int:
    """Start ``command`` and return its pid.

    ``stdin``/``stdout``/``stderr`` are fds to give the child (the caller closes its copies),
    or a keyword. ``pgroup=None`` puts the child in a new session (and group); ``0`` makes it
    the leader of a new group in this session; another number joins that group. The pid is
    also appended to ``started``, by C code on the posix_spawn path: a KeyboardInterrupt,
    which Python raises at the first bytecode after a call returns, cannot come between the
    child's start and that record, so the caller can always stop what it started. With
    ``cgroup_procs`` (``cgroup.procs`` files), the child joins those cgroups before the
    command runs; if it cannot, it exits 125 without running it.

    Raises:
        SpawnError: the kernel refused to start it.
    """
    rlimits = command.limits.rlimits(as_root=command.as_root) if command.limits else {}
    executable, args = command.executable, command.args
    setup: list[Callable[[], object]] = []  # run in a forked child by preexec_fn
    if rlimits:
        binary = prlimit_binary()
        if binary is not None:
            args = (binary, *prlimit_args(rlimits), "--", executable, *args[1:])
            executable = binary
        else:
            setup.append(functools.partial(setrlimits, rlimits))
    if command.pid_env or cgroup_procs:
        # $$ is the shell's pid, which exec hands on to the command (and through prlimit):
        # it joins the cgroup, and is the pid named, before the command runs.
        script = 'exec "$@"'
        pre: tuple[str, ...] = ()
        for name in command.pid_env:
            script = f"{name}=$$; export {name}; {script}"
        if cgroup_procs:
            join = 'echo $$ > "$1" || exit 125; shift; ' * len(cgroup_procs)
            script = join + script
            pre = tuple(cgroup_procs)
        args = ("/bin/sh", "-c", script, args[0], *pre, executable, *args[1:])
        executable = "/bin/sh"
    # Each fd to pass goes first to a fresh fd above every target number (close-on-exec, so
    # it is gone after exec): moving one fd to its number can then never overwrite another.
    moves: list[tuple[int, int]] = []
    # A daemon's services run in the config file's directory by default, where the daemon
    # works too: no chdir is needed then, and posix_spawn (no cwd option) can be used.
    here = command.cwd is None or os.path.abspath(command.cwd) == os.getcwd()
    fast = not setup and here and command.uid is None
    fast = fast and command.gid is None and command.umask is None
    try:
        for child_fd, our_fd in command.fds:
            floor = command.fds[-1][0] + 1
            moves.append((fcntl.fcntl(our_fd, fcntl.F_DUPFD_CLOEXEC, floor), child_fd))
        if fast:
            actions: list[tuple[int, ...] | tuple[int, int, str, int, int]] = []
            if stdin == "devnull":
                actions.append((os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0))
            elif isinstance(stdin, int):
                actions.append((os.POSIX_SPAWN_DUP2, stdin, 0))
            for target, spec in ((1, stdout), (2, stderr)):
                if spec == "devnull":
                    actions.append((os.POSIX_SPAWN_OPEN, target, os.devnull, os.O_WRONLY, 0))
                elif spec == "stdout":
                    actions.append((os.POSIX_SPAWN_DUP2, 1, 2))
                elif isinstance(spec, int):
                    actions.append((os.POSIX_SPAWN_DUP2, spec, target))
            # After stdio: a stdio pipe may sit at a number an extra fd is moved to.
            actions.extend((os.POSIX_SPAWN_DUP2, fd, child_fd) for fd, child_fd in moves)
            group = {"setsid": True} if pgroup is None else {"setpgroup": pgroup}
            call = functools.partial(
                os.posix_spawn,
                file_actions=actions,
                setsigdef=signals_to_reset(),
                setsigmask=(),
                **group,
            )
            pids = [] if started is None else started
            pids.extend(map(call, (executable,), (args,), (command.env,)))  # C only: see above
            return pids[-1]
        setup.extend(functools.partial(os.dup2, fd, child_fd) for fd, child_fd in moves)
        pid = _popen(
            command, executable, args, stdin, stdout, stderr, pgroup, setup, close_fds=not moves
        )
        if started is not None:
            started.append(pid)
        return pid
    except OSError as exc:
        raise _spawn_error(exc, command) from None
    finally:
        for fd, _ in moves:
            os.close(fd)


def _popen_stream(spec: int | str) -> int | None:
    if isinstance(spec, int):
        return spec
    return {"devnull": subprocess.DEVNULL, "stdout": subprocess.STDOUT}.get(spec)


def _popen(
    command: PreparedCommand,
    executable: str,
    args: tuple[str, ...],
    stdin: int | str,
    stdout: int | str,
    stderr: int | str,
    pgroup: int | None,
    setup: list[Callable[[], object]],
    *,
    close_fds: bool,
) -> int:
    def preexec() -> None:
        for step in setup:
            step()

    proc = subprocess.Popen(
        args,
        executable=executable,
        stdin=_popen_stream(stdin),
        stdout=_popen_stream(stdout),
        stderr=_popen_stream(stderr),
        cwd=command.cwd,
        env=command.env,
        user=command.uid,
        group=command.gid,
        extra_groups=command.extra_groups,
        umask=-1 if command.umask is None else command.umask,
        start_new_session=pgroup is None,
        process_group=pgroup,
        # Only where prlimit(1) is missing, or fds move to other numbers; it forces a full
        # fork (see bench/RESULTS.md).
        preexec_fn=preexec if setup else None,  # noqa: PLW1509
        # close_fds would close the fds that preexec_fn moved: then leave it to Python,
        # which opens every fd close-on-exec, as the posix_spawn path does.
        close_fds=close_fds,
        restore_signals=True,
    )
    # procvisor reaps this child itself (ExitWatch); tell Popen it is not its business, so it
    # neither waits for it nor warns about it when collected.
    proc.returncode = 0
    pid: int = proc.pid
    return pid
