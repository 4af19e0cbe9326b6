"""How `procvisor queue` lays out the daemon's answer."""

from __future__ import annotations

from procvisor.cli._jobs import format_queue


def test_queue_pairs_each_resource_in_use_with_its_capacity() -> None:
    text = format_queue(
        {
            "queued": 1,
            "delayed": 0,
            "waiting_on_dependencies": 0,
            "retrying": 0,
            "running": 2,
            "suspended": 1,
            "by_priority": {"critical": 1},
            "by_tenant": {"default": 1},
            "in_use": {"cpu": 1.5, "memory": 512 * 1024**2, "max_running": 2.0, "gpu": 1.0},
            "capacity": {"cpu": 2.0, "memory": 1024**3, "max_running": 2, "disk": None},
            "oldest_wait": 3.5,
        }
    )
    assert text.splitlines() == [
        "queued 1 (delayed 0, waiting on dependencies 0, held 0, retrying 0); running 2 "
        "(suspended 1)",
        "by priority: critical 1",
        "by tenant: default 1",
        "in use: cpu 1.5 of 2, memory 512M of 1G, max_running 2 of 2, gpu 1",
        "oldest wait: 3.5s",
    ]
