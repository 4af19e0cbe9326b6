"""The README's promises: its two opening commands are real, and its examples run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_readme_opens_with_exactly_two_commands() -> None:
    first = README.split("```")[1]
    lines = [line for line in first.splitlines()[1:] if line.strip()]
    assert len(lines) == 2
    install_and_run, test = lines
    assert install_and_run.startswith("pip install . && procvisor ")
    example = re.search(r"(examples/\S+)", install_and_run)
    assert example and (ROOT / example.group(1)).exists()
    assert test in (ROOT / ".ci" / "run").read_text(), ".ci/run must run the README's command"


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_python_examples_run(index: int, capsys) -> None:
    code = _blocks("python")[index]
    exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": "__readme__"})
