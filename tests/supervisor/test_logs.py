"""Per-instance log files: size rotation, tail across rotated files, following across rotation."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import re
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from helpers import await_for
from procvisor.process import RotatingLog, Timestamped, _output
from procvisor.process._output import local_timestamp
from procvisor.supervisor._logs import follow, position, read_tail


def files(path: Path, backups: int) -> list[bytes | None]:
    """Contents of path, path.1, ... path.{backups + 1} (None: missing)."""
    out: list[bytes | None] = []
    for n in range(backups + 2):
        p = path if n == 0 else path.with_name(f"{path.name}.{n}")
        out.append(p.read_bytes() if p.exists() else None)
    return out


def stream(path: Path, backups: int) -> bytes:
    """The log's bytes, oldest first."""
    return b"".join(reversed([f for f in files(path, backups) if f is not None]))


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "web-0.out.log"


# writing and rotation


def test_rotation_shifts_files_and_drops_the_oldest(log_path: Path) -> None:
    log = RotatingLog(log_path, max_size=10, backups=3)
    for digit in b"12345":
        log.feed(bytes([digit]) * 6)
    log.close()
    assert files(log_path, 3) == [b"555555", b"444444", b"333333", b"222222", None]


def test_a_chunk_that_fits_exactly_does_not_rotate(log_path: Path) -> None:
    log = RotatingLog(log_path, max_size=10, backups=2)
    log.feed(b"aaaaa")
    log.feed(b"bbbbb")
    assert (log.size, files(log_path, 2)) == (10, [b"aaaaabbbbb", None, None, None])
    log.feed(b"c")
    assert log.size == 1
    assert files(log_path, 2) == [b"c", b"aaaaabbbbb", None, None]
    log.close()


def test_backups_zero_truncates_in_place(log_path: Path) -> None:
    log = RotatingLog(log_path, max_size=10, backups=0)
    log.feed(b"first\n")
    inode = log_path.stat().st_ino
    log.feed(b"second\n")
    log.close()
    assert files(log_path, 0) == [b"second\n", None]
    assert log_path.stat().st_ino == inode


def test_a_chunk_larger_than_max_size_is_split_so_no_file_exceeds_it(log_path: Path) -> None:
    data = bytes(range(65, 65 + 26)) + bytes(range(97, 97 + 9))  # 35 bytes, no newline
    log = RotatingLog(log_path, max_size=10, backups=5)
    log.feed(b"xyz")
    log.feed(data)
    log.close()
    assert files(log_path, 5) == [
        data[30:],
        data[20:30],
        data[10:20],
        data[:10],
        b"xyz",
        None,
        None,
    ]


def test_a_split_cuts_after_a_newline_in_the_second_half(log_path: Path) -> None:
    log = RotatingLog(log_path, max_size=10, backups=5)
    log.feed(b"abcdefg\nhijklmnop\nqr")
    log.close()
    assert files(log_path, 5)[:4] == [b"qr", b"hijklmnop\n", b"abcdefg\n", None]


def test_a_split_ignores_a_newline_in_the_first_half(log_path: Path) -> None:
    log = RotatingLog(log_path, max_size=10, backups=5)
    log.feed(b"a\nbcdefghijklmnopq")
    log.close()
    assert files(log_path, 5)[:3] == [b"jklmnopq", b"a\nbcdefghi", None]


def test_many_random_chunks_keep_every_byte_in_order_within_the_size(log_path: Path) -> None:
    rng = random.Random(7)
    log = RotatingLog(log_path, max_size=100, backups=200)
    written = bytearray()
    for _ in range(80):
        chunk = bytes(rng.choice(b"abc\n") for _ in range(rng.randint(0, 250)))
        log.feed(chunk)
        written += chunk
    log.close()
    contents = [f for f in files(log_path, 200) if f is not None]
    assert len(contents) > 50
    assert all(len(f) <= 100 for f in contents)
    assert stream(log_path, 200) == written


def test_reopening_appends_and_an_oversized_file_is_rotated_first(log_path: Path) -> None:
    log_path.write_bytes(b"old\n")
    log = RotatingLog(log_path, max_size=10, backups=1)
    assert log.size == 4
    log.feed(b"new\n")
    log.close()
    assert log_path.read_bytes() == b"old\nnew\n"

    log_path.write_bytes(b"x" * 50)
    log = RotatingLog(log_path, max_size=10, backups=1)
    log.feed(b"y")
    log.close()
    assert files(log_path, 1) == [b"y", b"x" * 50, None]


def test_the_file_is_private(log_path: Path) -> None:
    old = os.umask(0)
    try:
        log = RotatingLog(log_path, max_size=10, backups=1)
        log.feed(b"0123456789")
        log.feed(b"rotated")
        log.close()
    finally:
        os.umask(old)
    for p in (log_path, log_path.with_name(log_path.name + ".1")):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600


def test_arguments_are_checked(log_path: Path) -> None:
    with pytest.raises(ValueError, match="max_size"):
        RotatingLog(log_path, max_size=0, backups=1)
    with pytest.raises(ValueError, match="backups"):
        RotatingLog(log_path, max_size=10, backups=-1)
    with pytest.raises(FileNotFoundError):
        RotatingLog(log_path.parent / "missing" / "x.log", max_size=10, backups=1)


def test_close_is_idempotent_and_feed_after_close_is_refused(log_path: Path) -> None:
    log = RotatingLog(log_path, max_size=10, backups=1)
    log.close()
    log.close()
    assert "closed" in repr(log)
    with pytest.raises(ValueError, match="closed"):
        log.feed(b"late")


# write errors never escape


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_is_counted_not_raised() -> None:
    log = RotatingLog(Path("/dev/full"), max_size=1 << 20, backups=0)
    log.feed(b"lost\n")
    log.feed(b"lost too\n")
    log.close()
    assert log.errors == 2
    assert log.dropped == len(b"lost\n") + len(b"lost too\n")
    assert isinstance(log.last_error, OSError)
    assert log.last_error.errno == errno.ENOSPC


def test_a_short_write_then_an_error_drops_only_the_rest(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    calls = 0

    def flaky_write(fd: int, data: bytes) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            return real_write(fd, bytes(data[:3]))
        raise OSError(errno.EIO, "I/O error")

    log = RotatingLog(log_path, max_size=100, backups=1)
    monkeypatch.setattr(_output.os, "write", flaky_write)
    log.feed(b"abcdefgh")
    monkeypatch.setattr(_output.os, "write", real_write)
    log.feed(b"ok\n")
    log.close()
    assert (log.errors, log.dropped) == (1, 5)
    assert log_path.read_bytes() == b"abcok\n"


def test_a_failed_reopen_after_rotation_recovers_on_the_next_feed(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = RotatingLog(log_path, max_size=5, backups=2)
    log.feed(b"12345")
    real_open = os.open

    def failing_open(*args: object, **kwargs: object) -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(_output.os, "open", failing_open)
    log.feed(b"lost")
    monkeypatch.setattr(_output.os, "open", real_open)
    log.feed(b"back")
    log.close()
    assert (log.errors, log.dropped) == (1, 4)
    assert files(log_path, 2) == [b"back", b"12345", None, None]


# read_tail


def test_timestamps_start_every_line_with_the_time_its_chunk_was_read(log_path: Path) -> None:
    clock = iter([1_000.0, 2_000.5, 3_000.25, 4_000.0])
    log = Timestamped(RotatingLog(log_path, 1 << 20, 1), now=lambda: next(clock))
    t1, t2, t3, t4 = (local_timestamp(t).encode() for t in (1_000.0, 2_000.5, 3_000.25, 4_000.0))
    log.feed(b"one\ntwo\nthree, cut")  # the last line goes on in the next chunk
    log.feed(b" here\n")
    log.feed(b"four\n\nsix\n")  # an empty line gets its stamp too
    log.feed(b"")  # nothing read: no stamp, no clock
    log.feed(b"seven")
    log.close()
    assert log_path.read_bytes() == (
        t1
        + b" one\n"
        + t1
        + b" two\n"
        + t1
        + b" three, cut here\n"
        + t3
        + b" four\n"
        + t3
        + b" \n"
        + t3
        + b" six\n"
        + t4
        + b" seven"
    )
    assert t2 not in log_path.read_bytes()  # the chunk that only ended a line
    # ISO 8601, local time, milliseconds, with the offset: sortable and unambiguous.
    assert re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", t2)


def test_read_tail_reads_across_rotated_files(log_path: Path) -> None:
    log = RotatingLog(log_path, max_size=12, backups=3)
    for i in range(10):
        log.feed(b"line %d\n" % i)  # 7 bytes: one line per file
    log.close()
    assert read_tail(log_path, 3, backups=3) == b"line 7\nline 8\nline 9\n"
    # Only backups + 1 files exist: asking for more gives all of them.
    assert read_tail(log_path, 100, backups=3) == b"".join(b"line %d\n" % i for i in range(6, 10))
    assert read_tail(log_path, 2, backups=0) == b"line 9\n"


def test_read_tail_counts_a_final_line_without_newline(log_path: Path) -> None:
    log_path.with_name(log_path.name + ".1").write_bytes(b"a\nb\nc")
    log_path.write_bytes(b"d\ne")
    assert read_tail(log_path, 1) == b"e"
    # A line split across two files (a forced cut) reads back whole.
    assert read_tail(log_path, 2) == b"cd\ne"
    assert read_tail(log_path, 3) == b"b\ncd\ne"
    assert read_tail(log_path, 0) == b""


def test_read_tail_of_a_missing_log_is_empty(tmp_path: Path) -> None:
    assert read_tail(tmp_path / "nothing.log", 10) == b""
    with pytest.raises(ValueError, match="lines"):
        read_tail(tmp_path / "nothing.log", -1)


def test_read_tail_reads_only_the_end_of_large_files(log_path: Path) -> None:
    lines = [b"%06d %s\n" % (i, b"x" * (i % 50)) for i in range(20_000)]
    log = RotatingLog(log_path, max_size=100_000, backups=20)
    for line in lines:
        log.feed(line)
    log.close()
    assert read_tail(log_path, 5000, backups=20) == b"".join(lines[-5000:])
    assert read_tail(log_path, 1, backups=20) == lines[-1]


# follow


def follower_has_open(path: Path) -> bool:
    """True once this process holds ``path`` open read-only (the follower started)."""
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}") != str(path):
                continue
            with open(f"/proc/self/fdinfo/{fd}") as info:
                flags = next(line for line in info if line.startswith("flags:"))
            if int(flags.split()[1], 8) & os.O_ACCMODE == os.O_RDONLY:
                return True
    return False


@contextlib.asynccontextmanager
async def following(path: Path, **kwargs: object) -> AsyncIterator[bytearray]:
    """Follow ``path`` in a task; yield the bytes received so far; cancel on exit."""
    received = bytearray()

    async def consume() -> None:
        async for chunk in follow(path, poll=0.005, **kwargs):  # type: ignore[arg-type]
            received.extend(chunk)

    task = asyncio.create_task(consume())
    try:
        yield received
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_follow_from_the_end_yields_only_new_data(log_path: Path) -> None:
    log = RotatingLog(log_path, max_size=1000, backups=1)
    log.feed(b"before\n")
    async with following(log_path) as received:
        await await_for(lambda: follower_has_open(log_path))
        log.feed(b"after\n")
        await await_for(lambda: received == b"after\n")
    log.close()


async def test_follow_from_the_start_yields_what_is_there(log_path: Path) -> None:
    log = RotatingLog(log_path, max_size=1000, backups=1)
    log.feed(b"before\n")
    async with following(log_path, from_end=False) as received:
        await await_for(lambda: received == b"before\n")
        log.feed(b"after\n")
        await await_for(lambda: received == b"before\nafter\n")
    log.close()


async def test_history_up_to_a_position_then_follow_from_it_loses_and_repeats_nothing(
    log_path: Path,
) -> None:
    # What logs -f does: mark the end, read the history up to it, follow from it. Data
    # written between the mark and the follower opening the file comes exactly once.
    log = RotatingLog(log_path, max_size=1000, backups=1)
    log.feed(b"one\n")
    mark = position(log_path)
    log.feed(b"two\n")  # after the mark, before the history is read
    assert read_tail(log_path, 10, backups=1, until=mark) == b"one\n"
    log.feed(b"three\n")  # before the follower opens the file
    async with following(log_path, from_end=False, start=mark) as received:
        await await_for(lambda: received == b"two\nthree\n")
        log.feed(b"four\n")
        await await_for(lambda: received == b"two\nthree\nfour\n")
    log.close()
    assert position(log_path.with_name("missing.log")) is None


async def test_history_up_to_a_position_leaves_out_files_rotated_in_after_it(
    log_path: Path,
) -> None:
    log = RotatingLog(log_path, max_size=10, backups=3)
    log.feed(b"one\n")
    mark = position(log_path)
    log.feed(b"two two\n")  # rotates: the marked file becomes .1, "two" starts a new file
    log.feed(b"three\n")  # rotates again
    assert read_tail(log_path, 10, backups=3, until=mark) == b"one\n"
    assert read_tail(log_path, 10, backups=3) == b"one\ntwo two\nthree\n"
    log.close()


async def test_follow_waits_for_the_file_to_appear(log_path: Path) -> None:
    async with following(log_path) as received:
        await asyncio.sleep(0.02)  # let it poll for a missing file a few times
        log = RotatingLog(log_path, max_size=1000, backups=1)
        log.feed(b"hello\n")
        await await_for(lambda: received == b"hello\n")
    log.close()


async def test_follow_across_rotations_gets_every_byte_once_in_order(log_path: Path) -> None:
    rng = random.Random(3)
    log = RotatingLog(log_path, max_size=100, backups=10)
    written = bytearray()
    async with following(log_path, from_end=False) as received:
        for i in range(300):
            chunk = b"%d:" % i + bytes(rng.choice(b"ab\n") for _ in range(rng.randint(0, 120)))
            log.feed(chunk)
            written.extend(chunk)
            if i % 2:
                # Every other chunk let the follower fall a few rotations behind.
                await asyncio.sleep(0)
            if i % 3 == 0:
                await await_for(lambda: len(received) >= len(written))
        await await_for(lambda: len(received) >= len(written))
        await asyncio.sleep(0.02)  # nothing more (no byte twice) arrives after the last one
    log.close()
    assert bytes(received) == bytes(written)
    assert len(written) > 30 * 100  # many rotations happened


async def test_follow_catches_up_over_several_rotations_in_one_feed(log_path: Path) -> None:
    log = RotatingLog(log_path, max_size=10, backups=8)
    async with following(log_path) as received:
        await await_for(lambda: follower_has_open(log_path))
        log.feed(b"start\n")
        await await_for(lambda: received == b"start\n")
        burst = b"".join(b"%04d\n" % i for i in range(14))  # 70 bytes: 7 rotations at once
        log.feed(burst)
        await await_for(lambda: len(received) >= 6 + len(burst))
        await asyncio.sleep(0.02)
    log.close()
    assert bytes(received) == b"start\n" + burst


async def test_follow_restarts_a_file_truncated_in_place(log_path: Path) -> None:
    log = RotatingLog(log_path, max_size=100, backups=0)
    async with following(log_path) as received:
        await await_for(lambda: follower_has_open(log_path))
        log.feed(b"x" * 90)
        await await_for(lambda: len(received) == 90)
        log.feed(b"after truncation\n")
        await await_for(lambda: received == b"x" * 90 + b"after truncation\n")
    log.close()


async def test_follow_closes_its_files_when_cancelled(log_path: Path) -> None:
    log = RotatingLog(log_path, max_size=10, backups=2)
    async with following(log_path):
        await await_for(lambda: follower_has_open(log_path))
    log.close()
    assert not follower_has_open(log_path)


async def test_follow_refuses_a_bad_poll(log_path: Path) -> None:
    with pytest.raises(ValueError, match="poll"):
        await follow(log_path, poll=0).__anext__()
