"""``restart_on_change``: file changes restart a service's running instances, rolling."""

from __future__ import annotations

from helpers import await_for
from procvisor.supervisor import ChangeWatch, Supervisor

from .test_supervisor import by_name, events, spec


def change_restarts(sup: Supervisor, service: str) -> list[str]:
    return [m for k, m in events(sup, service) if k == "change-restart"]


async def test_a_change_restarts_the_running_instances_one_at_a_time(make, tmp_path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    watch = ChangeWatch((src,), debounce=0.05)
    sup = await make(spec("web", instances=2, restart_on_change=watch))
    before = {name: row["pid"] for name, row in by_name(sup).items()}
    (src / "app.py").write_text("changed")
    rows = await await_for(
        lambda: (
            all(
                r["state"] == "running" and r["pid"] not in (None, before[n])
                for n, r in by_name(sup).items()
            )
            and by_name(sup)
        ),
        timeout=20,
    )
    assert len({r["pid"] for r in rows.values()}) == 2
    assert change_restarts(sup, "web") == [f"{src / 'app.py'} changed"]
    starts = [m for k, m in events(sup, "web") if k == "start"]
    assert len(starts) == 4  # two at start, then one restart each


async def test_ignored_default_and_quiet_paths_do_not_count(make, tmp_path) -> None:
    root = tmp_path / "app"
    (root / "state").mkdir(parents=True)
    (root / "__pycache__").mkdir()
    (root / "tmp").mkdir()
    watch = ChangeWatch((root,), ignore=("*.log", "tmp"), debounce=0.05)
    sup = await make(spec("web", restart_on_change=watch), quiet_dirs=(root / "state",))
    for noise in ("server.log", "state/store.db", "__pycache__/m.pyc", "tmp/upload"):
        (root / noise).write_text("noise")
    (root / "main.py").write_text("changed")
    await await_for(lambda: change_restarts(sup, "web"), timeout=20)
    assert change_restarts(sup, "web") == [f"{root / 'main.py'} changed"]


async def test_a_stopped_service_stays_stopped(make, tmp_path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    watch = ChangeWatch((src,), debounce=0.05)
    sup = await make(
        spec("idle", autostart=False, restart_on_change=watch),
        spec("busy", restart_on_change=watch),
    )
    (src / "app.py").write_text("changed")
    # Both watch the same file: once busy has restarted, idle has seen the change too.
    await await_for(lambda: change_restarts(sup, "busy"), timeout=20)
    assert by_name(sup)["idle:0"]["state"] == "stopped"
    assert change_restarts(sup, "idle") == []
