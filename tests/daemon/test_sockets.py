"""``[sockets.NAME]``: listening sockets the daemon binds and its services share."""

from __future__ import annotations

import os
import signal
import socket
import stat
import sys
import threading
from pathlib import Path

import httpx
import pytest

from helpers import wait_for
from procvisor.daemon._sockets import Listeners, SocketError
from procvisor.daemon.config import ConfigError, parse_config

from .test_daemon import Daemon, all_running, cli, status, write_config

# A server for fds 3, 4, ... that answers each connection with its instance and pid, and prints the
# socket activation variables it got.
APP = """\
import os, select, socket
print("env", os.environ["LISTEN_FDS"], os.environ["LISTEN_FDNAMES"], os.environ["LISTEN_PID"],
      os.getpid(), flush=True)
servers = [socket.socket(fileno=3 + i) for i in range(int(os.environ["LISTEN_FDS"]))]
while True:
    for server in select.select(servers, [], [])[0]:
        try:
            conn, _ = server.accept()
        except BlockingIOError:  # another instance took it
            continue
        with conn:
            conn.sendall(f"{os.environ['PROCVISOR_INSTANCE']} {os.getpid()}".encode())
"""


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


def _ask(port: int, timeout: float = 10) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        return conn.recv(100).decode()


def _sections(text: str, base: Path):
    return parse_config(text, source="test.toml", base_dir=base).sockets


# -- the daemon's side, without services ------------------------------------------------------


def test_binds_tcp_and_unix_sockets_and_removes_its_socket_files(tmp_path) -> None:
    port = _free_port()
    listeners = Listeners()
    listeners.apply(
        _sections(
            f'[sockets.tcp]\naddress = "127.0.0.1:{port}"\n'
            '[sockets.unix]\naddress = "./u.sock"\nmode = "660"\n',
            tmp_path,
        )
    )
    try:
        assert set(listeners.fds) == {"tcp", "unix"}
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        path = tmp_path / "u.sock"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))
    finally:
        listeners.close()
    assert not path.exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


def test_a_stale_socket_file_is_replaced_but_a_live_one_or_a_file_is_not(tmp_path) -> None:
    path = tmp_path / "u.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # what a killed daemon leaves: the file, nobody listening
    sections = _sections('[sockets.u]\naddress = "./u.sock"\n', tmp_path)
    listeners = Listeners()
    listeners.apply(sections)
    try:
        # A second daemon's try on the live socket is refused, naming it.
        with pytest.raises(SocketError, match=r"^sockets.u: cannot listen on .*u.sock: Address"):
            Listeners().apply(sections)
    finally:
        listeners.close()
    path.write_text("not a socket")
    with pytest.raises(SocketError, match=r"it exists and is not a socket; remove it"):
        Listeners().apply(sections)
    assert path.read_text() == "not a socket"


def test_a_port_in_use_is_refused_and_nothing_stays_bound(tmp_path) -> None:
    taken = socket.create_server(("127.0.0.1", 0))
    free = _free_port()
    text = (
        f'[sockets.a]\naddress = "127.0.0.1:{free}"\n'
        f'[sockets.b]\naddress = "127.0.0.1:{taken.getsockname()[1]}"\n'
    )
    listeners = Listeners()
    with taken, pytest.raises(SocketError, match=r"^sockets.b: .*Address already in use; another"):
        listeners.apply(_sections(text, tmp_path))
    assert listeners.fds == {}
    with socket.create_server(("127.0.0.1", free)):  # a was closed again: all or nothing
        pass


def test_apply_keeps_unchanged_sockets_and_retires_moved_ones(tmp_path) -> None:
    first, second = _free_port(), _free_port()
    listeners = Listeners()
    listeners.apply(_sections(f'[sockets.web]\naddress = "127.0.0.1:{first}"\n', tmp_path))
    try:
        fd = listeners.fds["web"]
        # Only the backlog changed: the same socket, adjusted in place.
        text = f'[sockets.web]\naddress = "127.0.0.1:{first}"\nbacklog = 5\n'
        listeners.apply(_sections(text, tmp_path))
        assert listeners.fds == {"web": fd}
        # Moved: the new one is bound beside the old, which serves until retired.
        listeners.apply(_sections(f'[sockets.web]\naddress = "127.0.0.1:{second}"\n', tmp_path))
        assert listeners.fds["web"] != fd
        with socket.create_connection(("127.0.0.1", first), timeout=5):
            pass
        listeners.retire()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", first), timeout=5)
        with socket.create_connection(("127.0.0.1", second), timeout=5):
            pass
    finally:
        listeners.close()


# -- the config file ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[sockets.web]\naddress = "127.0.0.1:1"\n[services.a]\ncommand = "x"\n'
            'sockets = ["wbe"]\n',
            "services.a.sockets[0]: no [sockets.wbe] in this file; did you mean 'web'?",
        ),
        (
            '[sockets.web]\naddress = "127.0.0.1:1"\n[services.a]\ncommand = "x"\n'
            'sockets = ["web", "web"]\n',
            "services.a.sockets[1]: 'web' is listed twice",
        ),
        (
            '[sockets.web]\naddress = "localhost"\n',
            "sockets.web.address: 'localhost' is not an address; use 'HOST:PORT' for TCP",
        ),
        (
            '[sockets.web]\naddress = "127.0.0.1:1"\nmode = "9"\n',
            "sockets.web.mode: '9' is not an octal file mode",
        ),
        (
            '[sockets.a]\naddress = "127.0.0.1:1"\n[sockets.b]\naddress = "127.0.0.1:1"\n',
            "sockets.b.address: 127.0.0.1:1 is the address of [sockets.a] too",
        ),
        (
            f'[sockets.web]\naddress = "/{"x" * 120}"\n',
            "a Unix socket's path can have at most 107",
        ),
    ],
)
def test_bad_socket_config_names_the_key(tmp_path, text, message) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="p.toml", base_dir=tmp_path)
    assert message in str(info.value)


# -- services sharing a socket, end to end -----------------------------------------------------


def _config(workdir: Path, port: int, extra: str = "", app: str = APP) -> Path:
    (workdir / "app.py").write_text(app)
    return write_config(
        workdir,
        f"""
        [sockets.web]
        address = "127.0.0.1:{port}"

        [services.web]
        command = ["{sys.executable}", "app.py"]
        instances = 2
        sockets = ["web"]
        stop_timeout = "2s"
        {extra}
        """,
    )


@pytest.mark.parametrize("extra", ["", 'umask = "022"'], ids=["posix_spawn", "fork"])
def test_instances_share_one_port_with_systemds_variables(workdir, daemons, extra) -> None:
    port = _free_port()
    _config(workdir, port, extra)
    d = Daemon(workdir)
    daemons.append(d)
    rows = wait_for(lambda: all_running(workdir, {"web:0", "web:1"}), timeout=20)
    pids = {str(row["pid"]) for row in rows.values()}
    # The kernel hands each connection to one instance blocked in accept(): both answer.
    seen: set[str] = set()
    wait_for(lambda: seen.update([_ask(port).split()[1]]) or seen == pids, timeout=20)
    transport = httpx.HTTPTransport(uds=str(workdir / ".procvisor" / "procvisor.sock"))
    with httpx.Client(transport=transport, base_url="http://procvisor") as api:
        info = api.get("/info").json()
    assert info["sockets"] == {"web": f"127.0.0.1:{port}"}
    for row in rows.values():
        out = cli(workdir, "logs", row["name"].split(":")[0]).stdout
        assert f"env 1 web {row['pid']} {row['pid']}" in out
    code, err = d.stop()
    assert code == 0, err
    with pytest.raises(ConnectionRefusedError):  # the daemon's socket is closed too
        socket.create_connection(("127.0.0.1", port), timeout=5)


def test_a_connection_made_while_the_service_is_down_waits_for_it(workdir, daemons) -> None:
    port = _free_port()
    _config(workdir, port)
    d = Daemon(workdir)
    daemons.append(d)
    wait_for(lambda: all_running(workdir, {"web:0", "web:1"}), timeout=20)
    assert cli(workdir, "stop", "web").returncode == 0
    answer: list[str] = []
    # Accepted by the kernel into the daemon's backlog, answered once an instance is back.
    asker = threading.Thread(target=lambda: answer.append(_ask(port, timeout=30)))
    asker.start()
    try:
        wait_for(lambda: _queued(port) == 1, timeout=10)
        assert not answer
        assert cli(workdir, "start", "web").returncode == 0
    finally:
        asker.join(40)
    _, pid = answer[0].split()
    assert int(pid) in {row["pid"] for row in status(workdir).values()}


def _queued(port: int) -> int:
    """Connections waiting in the accept queue of the listener on ``port`` (from ss's view)."""
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    for row in rows:
        local, state, queues = row[1], row[3], row[4]
        if state == "0A" and int(local.split(":")[1], 16) == port:  # LISTEN
            return int(queues.split(":")[1], 16)  # rx_queue: the accept backlog
    return -1


def test_reload_keeps_instances_whose_socket_is_unchanged_and_moves_the_rest(
    workdir, daemons
) -> None:
    port, other = _free_port(), _free_port()
    config = _config(workdir, port)
    d = Daemon(workdir)
    daemons.append(d)
    before = wait_for(lambda: all_running(workdir, {"web:0", "web:1"}), timeout=20)
    # A new backlog applies in place: nobody restarts.
    config.write_text(config.read_text().replace(f':{port}"', f':{port}"\nbacklog = 8'))
    ok = cli(workdir, "reload")
    assert (ok.returncode, ok.stdout) == (0, "no changes\n"), ok.stderr
    assert {n: r["pid"] for n, r in status(workdir).items()} == {
        n: r["pid"] for n, r in before.items()
    }
    # A port in use refuses the reload, and nothing changes.
    with socket.create_server(("127.0.0.1", other)):
        config.write_text(config.read_text().replace(f":{port}", f":{other}"))
        bad = cli(workdir, "reload")
        assert bad.returncode == 2
        assert f"sockets.web: cannot listen on 127.0.0.1:{other}: Address already in use" in (
            bad.stderr
        )
        assert _ask(port)
    # Free now: the services move to the new port, and the old one is closed.
    moved = cli(workdir, "reload")
    assert (moved.returncode, moved.stdout) == (0, "restarted: web\n"), moved.stderr
    wait_for(lambda: all_running(workdir, {"web:0", "web:1"}), timeout=20)
    assert _ask(other)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


def test_up_is_refused_in_one_line_when_a_socket_cannot_be_bound(workdir) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        _config(workdir, port)
        out = cli(workdir, "up", "-d")
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert lines[0] == (
        f"procvisor: sockets.web: cannot listen on 127.0.0.1:{port}: Address already in use; "
        "another process listens there (ss -ltnp shows which)"
    )
    assert cli(workdir, "status").returncode == 3  # no daemon stayed up


def test_after_a_sigkill_the_next_daemon_takes_the_sockets_its_leftovers_held(
    workdir, daemons
) -> None:
    port = _free_port()
    config = _config(workdir, port)
    config.write_text(
        config.read_text().replace('sockets = ["web"]', 'sockets = ["web", "unix"]')
        + '\n[sockets.unix]\naddress = "./web.sock"\n'
    )
    first = Daemon(workdir)
    daemons.append(first)
    old = wait_for(lambda: all_running(workdir, {"web:0", "web:1"}), timeout=20)
    os.kill(first.pid, signal.SIGKILL)
    first.proc.wait(timeout=10)
    # The orphaned instances still listen on both sockets, and the socket file is left.
    assert _ask(port) and (workdir / "web.sock").exists()
    daemons.append(Daemon(workdir))
    new = wait_for(lambda: all_running(workdir, {"web:0", "web:1"}), timeout=20)
    for row in old.values():  # stopped first; orphaned to this test process: ours to reap
        os.waitpid(row["pid"], 0)
    new_pids = {str(row["pid"]) for row in new.values()}
    assert _ask(port).split()[1] in new_pids
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(10)
        client.connect(str(workdir / "web.sock"))
        assert client.recv(100).decode().split()[1] in new_pids


GRACEFUL_APP = """\
import os, select, signal, socket
stopping = []
signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))  # finish the connection at hand
server = socket.socket(fileno=3)
while not stopping:
    if select.select([server], [], [], 0.05)[0]:
        conn, _ = server.accept()
        with conn:
            conn.sendall(str(os.getpid()).encode())
"""


def test_a_rolling_restart_behind_a_socket_turns_no_client_away(workdir, daemons) -> None:
    port = _free_port()
    _config(workdir, port, app=GRACEFUL_APP)
    d = Daemon(workdir)
    daemons.append(d)
    before = wait_for(lambda: all_running(workdir, {"web:0", "web:1"}), timeout=20)
    answers: list[str] = []
    failures: list[BaseException] = []
    done = threading.Event()

    def clients() -> None:
        while not done.is_set():
            try:
                answers.append(_ask(port))
            except OSError as exc:
                failures.append(exc)

    load = threading.Thread(target=clients)
    load.start()
    try:
        wait_for(lambda: len(answers) > 20, timeout=20)
        out = cli(workdir, "restart", "--rolling", "web", timeout=60)
        assert out.returncode == 0, out.stderr
        after = status(workdir)
        new_pids = {str(row["pid"]) for row in after.values()}
        seen = len(answers)
        wait_for(lambda: new_pids <= set(answers[seen:]), timeout=20)
    finally:
        done.set()
        load.join(30)
    assert not failures, failures[:3]
    assert {row["pid"] for row in before.values()}.isdisjoint(r["pid"] for r in after.values())
