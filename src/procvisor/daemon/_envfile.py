"""Environment files (``env_file``): ``KEY=VALUE`` lines, as docker compose and systemd read them.

The format is the part those tools agree on:

* blank lines and lines starting with ``#`` are skipped; ``export KEY=VALUE`` is accepted;
* an unquoted value runs to the end of the line, trimmed, up to a `` #`` that starts a
  comment;
* ``'single quotes'`` keep every character; ``"double quotes"`` understand ``\\n``, ``\\t``,
  ``\\"``, ``\\\\`` and ``\\$``; a quoted value ends on its own line;
* nothing is expanded: ``$HOME`` stays ``$HOME``, since no shell reads the file.

Anything else is an error that names the file and the line, never a line silently skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

__all__ = ["EnvFileError", "parse_env_file", "read_env_files"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


class EnvFileError(ValueError):
    """An environment file is missing, unreadable or malformed; the message says where."""


def parse_env_file(text: str, source: str = "env file") -> dict[str, str]:
    """The variables ``text`` sets, later lines winning.

    Raises:
        EnvFileError: a line is not ``KEY=VALUE``; the message names ``source`` and the line.
    """
    env: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            key, value = _assignment(stripped)
        except ValueError as exc:
            raise EnvFileError(f"{source}: line {number}: {exc}") from None
        env[key] = value
    return env


def _assignment(line: str) -> tuple[str, str]:
    if line.startswith("export ") or line.startswith("export\t"):
        line = line[len("export") :].lstrip()
    key, equals, rest = line.partition("=")
    key = key.strip()
    if not equals:
        raise ValueError(f"expected KEY=VALUE, got {line[:40]!r}")
    if not _NAME.fullmatch(key):
        raise ValueError(
            f"{key!r} is not a variable name (letters, digits and '_', not starting with a digit)"
        )
    value = _value(rest.strip())
    if "\0" in value:
        raise ValueError(f"the value of {key} contains a NUL byte, which no program can receive")
    return key, value


def _value(text: str) -> str:
    if not text or text[0] not in "'\"":
        comment = text.find(" #")
        return (text[:comment] if comment >= 0 else text).rstrip()
    quote = text[0]
    out: list[str] = []
    i = 1
    while i < len(text):
        char = text[i]
        if char == quote:
            tail = text[i + 1 :].strip()
            if tail and not tail.startswith("#"):
                raise ValueError(f"unexpected {tail[:20]!r} after the closing quote")
            return "".join(out)
        if quote == '"' and char == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
            i += 2
            continue
        out.append(char)
        i += 1
    raise ValueError(f"the {quote} that opens the value is not closed on this line")


def read_env_files(paths: Iterable[Path]) -> dict[str, str]:
    """The variables the files set, in order (a later file wins).

    Raises:
        EnvFileError: a file cannot be read or is malformed.
    """
    env: dict[str, str] = {}
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise EnvFileError(f"{path}: no such file") from None
        except UnicodeDecodeError as exc:
            raise EnvFileError(f"{path}: not UTF-8 text (byte {exc.start})") from None
        except OSError as exc:
            raise EnvFileError(f"{path}: cannot be read: {exc.strerror}") from None
        env.update(parse_env_file(text, str(path)))
    return env
