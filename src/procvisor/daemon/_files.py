"""Finding a config file and its daemon's state directory, and the error a bad file raises.

Kept apart from :mod:`procvisor.daemon.config` and free of pydantic: a CLI command that talks
to a running daemon needs only the socket's path, and validating the whole file would cost
it more than the rest of the command.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_CONFIG_NAME = "procvisor.toml"
"""The file looked for in the current directory when no other is named."""
ENV_CONFIG = "PROCVISOR_CONFIG"
"""Environment variable naming the config file (``-c FILE`` wins over it)."""
ENV_STATE_DIR = "PROCVISOR_STATE_DIR"
"""Environment variable naming the state directory (``[daemon] state_dir`` wins over it)."""
STATE_DIR_NAME = ".procvisor"
"""The state directory's name beside the config file when nothing else names one."""
SOCKET_NAME = "procvisor.sock"
"""The control socket's name in the state directory."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a config file.

    Attributes:
        path: the key path, like ``services.web.backoff.initial`` (``""`` for the file as a
            whole: it is missing, unreadable or not valid TOML).
        message: what is wrong and what is accepted.
        line: the line of a TOML syntax error (1-based), else ``None``.
        column: the column of a TOML syntax error (1-based), else ``None``.
    """

    path: str
    message: str
    line: int | None = None
    column: int | None = None

    def format(self, source: str) -> str:
        """The problem as one line: ``source: path: message``."""
        where = [source]
        if self.line is not None:
            where.append(f"line {self.line}, column {self.column}")
        if self.path:
            where.append(self.path)
        return ": ".join([*where, self.message])


def _rebuild_config_error(source: str, problems: tuple[ConfigProblem, ...]) -> ConfigError:
    return ConfigError(source, problems)


class ConfigError(Exception):
    """A config file is missing, unreadable or invalid.

    ``str()`` gives one line per problem, each complete on its own:
    ``procvisor.toml: services.web.instances: expected an integer, got a string '2'``.

    Attributes:
        source: the file concerned, as the user named it.
        problems: every problem found, in file order as far as it is known.
        path: the key path of the first problem (``""`` for the file as a whole).
        message: the message of the first problem.
    """

    def __init__(self, source: str, problems: Sequence[ConfigProblem]) -> None:
        if not problems:
            raise ValueError("ConfigError needs at least one problem")
        self.source = source
        self.problems = tuple(problems)
        self.path = self.problems[0].path
        self.message = self.problems[0].message
        super().__init__(str(self))

    @classmethod
    def single(
        cls,
        source: str,
        path: str,
        message: str,
        *,
        line: int | None = None,
        column: int | None = None,
    ) -> ConfigError:
        """A ``ConfigError`` with one problem."""
        return cls(source, [ConfigProblem(path, message, line, column)])

    def lines(self) -> list[str]:
        """One line per problem, each naming the file and the key path."""
        return [problem.format(self.source) for problem in self.problems]

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_config_error, (self.source, self.problems))


def find_config(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The config file to use, as docker compose finds its file.

    ``explicit`` (``-c FILE``) if given, else ``$PROCVISOR_CONFIG`` if set and not empty,
    else ``./procvisor.toml``. The path is returned as given (relative stays relative).

    Raises:
        ConfigError: the chosen file does not exist or is not a file.
    """
    if explicit is not None:
        path, origin = Path(explicit), ""
    elif os.environ.get(ENV_CONFIG):
        path, origin = Path(os.environ[ENV_CONFIG]), f" (named by ${ENV_CONFIG})"
    else:
        path = Path(DEFAULT_CONFIG_NAME)
        if not path.exists():
            raise ConfigError.single(
                DEFAULT_CONFIG_NAME,
                "",
                f"not found in {Path.cwd()}; pass -c FILE or set ${ENV_CONFIG}",
            )
        origin = ""
    if not path.exists():
        raise ConfigError.single(os.fspath(path), "", f"no such file{origin}")
    if not path.is_file():
        raise ConfigError.single(os.fspath(path), "", f"is not a file{origin}")
    return path


def state_dir_of_file(config_path: str | os.PathLike[str]) -> Path:
    """The state directory a config file names, read leniently: for a file that is invalid now.

    A running daemon keeps its state dir while its file is being edited, so the CLI must still
    find it then: only ``[daemon] state_dir`` is read (TOML syntax must hold), with the same
    fallbacks as :func:`procvisor.daemon.config.state_dir`.
    """
    base = Path(config_path).absolute().parent
    try:
        raw = tomllib.loads(Path(config_path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        raw = {}
    daemon = raw.get("daemon")
    value = daemon.get("state_dir") if isinstance(daemon, dict) else None
    if isinstance(value, str) and value and "\0" not in value:
        path = Path(value).expanduser()
        return path if path.is_absolute() else base / path
    return default_state_dir(config_path)


def default_state_dir(config_path: str | os.PathLike[str]) -> Path:
    """The state directory when the file names none: ``$PROCVISOR_STATE_DIR`` if set and not
    empty (relative to the current directory), else ``.procvisor/`` beside the config file.
    """
    from_env = os.environ.get(ENV_STATE_DIR)
    if from_env:
        return Path(from_env).expanduser().absolute()
    return Path(config_path).absolute().parent / STATE_DIR_NAME
