"""The ``procvisor`` command."""

from procvisor.cli._main import main

__all__ = ["main"]
