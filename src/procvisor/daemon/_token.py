"""The bearer token the daemon's TCP listener requires.

The Unix socket is protected by file permissions (0600 in a 0700 state directory); a TCP port
is not, so every request on it must carry ``Authorization: Bearer <token>``. The token lives
in a file only its owner can read: ``[daemon] token_file``, else ``<state_dir>/token``. The
daemon creates it on its first start with ``[daemon] http`` set and reuses it afterwards;
``procvisor token`` prints it for clients.

This module is light (no third-party imports) because the CLI uses it too.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from procvisor.daemon.config import Config

__all__ = ["TOKEN_FILE_NAME", "load_or_create_token", "token_path"]

TOKEN_FILE_NAME = "token"
"""The token file's name in the state directory when ``[daemon] token_file`` is not set."""


def token_path(config: Config, state_dir: Path) -> Path:
    """Where the token is kept: ``[daemon] token_file``, else ``state_dir / "token"``."""
    if config.daemon.token_file is not None:
        return config.daemon.token_file.absolute()
    return state_dir / TOKEN_FILE_NAME


def load_or_create_token(path: Path) -> str:
    """The token in ``path``; a new random one, stored there with mode 0600, if none exists.

    The file is written whole under a temporary name and linked into place, so a reader never
    sees a partial token and two daemons starting at once end up with the same one. A missing
    parent directory is created with mode 0700.

    Raises:
        ValueError: the file exists but is empty, or other users may read or write it (it
            names what to do: ``chmod 600 FILE``, or delete it to have a new token made).
        OSError: the file or its directory cannot be read or written.
    """
    try:
        return _read_token(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(token + "\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(tmp, path)  # unlike rename, never replaces a token another daemon wrote
        except FileExistsError:
            return _read_token(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return token


def _read_token(path: Path) -> str:
    with open(path, encoding="utf-8") as file:
        mode = os.fstat(file.fileno()).st_mode
        text = file.read()
    if mode & 0o077:
        raise ValueError(
            f"{path}: the token file may be read or written by other users (mode "
            f"{stat.S_IMODE(mode):04o}); run 'chmod 600 {path}'"
        )
    token = text.strip()
    if not token:
        raise ValueError(
            f"{path}: the token file is empty; write a token in it, or delete it to have "
            "the daemon generate one"
        )
    return token
