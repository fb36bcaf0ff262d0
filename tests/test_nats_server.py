"""The embedded nats-server: starts on a free port, is found by other processes, never orphaned."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import textwrap

import pytest

from tradebus.bus.connect import open_bus, require_nats_url
from tradebus.bus.nats import NatsBus
from tradebus.bus.natsserver import NatsServerError, discover, start_server, start_server_sync

from .proc import LineReader, tradebus, wait_dead

CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from tradebus.bus.natsserver import start_server_sync
    server = start_server_sync(Path(sys.argv[1]), announce=True)
    print(server.pid, server.url, flush=True)
    if sys.argv[2] == "exit":
        sys.exit(0)
    time.sleep(600)
    """
)


def spawn_owner(tmp_path, mode: str) -> tuple[subprocess.Popen, int, str]:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "nats"), mode],
                             stdout=subprocess.PIPE, text=True)
    pid, url = child.stdout.readline().split()
    return child, int(pid), url


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_server_dies_with_its_parent(tmp_path, how):
    child, server_pid, url = spawn_owner(tmp_path, "sleep")
    assert discover(tmp_path / "nats") == url

    child.send_signal(how)
    child.wait(10)

    assert wait_dead(server_pid), "nats-server outlived the process that started it"


def test_server_stops_when_parent_exits_normally(tmp_path):
    child, server_pid, _ = spawn_owner(tmp_path, "exit")
    assert child.wait(10) == 0

    assert wait_dead(server_pid)
    assert discover(tmp_path / "nats") is None  # the discovery file went with it


def test_two_servers_never_share_one_folder(tmp_path):
    with start_server_sync(tmp_path / "nats", announce=True) as first:
        with pytest.raises(NatsServerError, match=first.url):
            start_server_sync(tmp_path / "nats")


async def test_open_bus_starts_embedded_server_and_stops_it(tmp_path, make):
    async with open_bus("nats", nats_home=tmp_path / "nats") as bus:
        url = discover(tmp_path / "nats")
        assert url is not None
        server_pid = json.loads((tmp_path / "nats" / "server.json").read_text())["pid"]
        sub = await bus.subscribe("tb.>")
        e = make.bar()
        await bus.publish(e)
        assert await sub.next(5) == e

    assert wait_dead(server_pid)
    assert discover(tmp_path / "nats") is None


async def test_open_bus_joins_a_running_server_instead_of_starting_another(tmp_path, make):
    server = await start_server(tmp_path / "nats", announce=True)
    try:
        async with open_bus("nats", nats_home=tmp_path / "nats") as a, open_bus("nats", nats_home=tmp_path / "nats") as b:
            assert a.url == b.url == server.url
            sub = await b.subscribe("tb.>")
            e = make.bar()
            await a.publish(e)
            assert await sub.next(5) == e
        assert server.process.poll() is None  # not ours to stop
    finally:
        server.stop()


def test_no_server_anywhere_is_a_clear_error(tmp_path):
    with pytest.raises(NatsServerError, match="tradebus nats"):
        require_nats_url(None, tmp_path / "empty")


def test_nats_command_runs_in_foreground_and_stops_on_ctrl_c(tmp_path, make):
    env = {"TRADEBUS_HOME": str(tmp_path / "home")}
    proc = tradebus("nats", env=env)
    out = LineReader(proc.stdout)
    try:
        ready = out.wait_for("ready at", timeout=20)
        url = ready.split("ready at ")[1].split()[0]
        server_pid = int(ready.split("(pid ")[1].split(",")[0])
        assert discover(tmp_path / "home" / "nats") == url
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(15)

    assert code == 0
    assert wait_dead(server_pid)


async def test_subscribe_and_flush_send_their_commands_before_the_ping_that_confirms_them(nats_server, make):
    """A subscription is live, and a flush complete, only if the server saw the SUB/PUB before the PING.

    nats-py 2.16 writes flush()'s PING ahead of commands still queued for its flusher; a subscription
    confirmed that way missed all 500 events another connection published next (seen in CI). A proxy
    records what the client really sends, in order.
    """
    host, port = nats_server.url.removeprefix("nats://").rsplit(":", 1)
    wire = bytearray()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: bool) -> None:
        while data := await reader.read(65536):
            if record:
                wire.extend(data)
            writer.write(data)
            await writer.drain()
        writer.close()

    pipes: list[asyncio.Task] = []

    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(host, int(port))
        pipes.extend([asyncio.create_task(pipe(client_r, server_w, True)),
                      asyncio.create_task(pipe(server_r, client_w, False))])

    proxy = await asyncio.start_server(relay, "127.0.0.1", 0)
    bus = await NatsBus.connect(f"nats://127.0.0.1:{proxy.sockets[0].getsockname()[1]}")
    try:
        await bus.subscribe("tb.>")
        assert wire.rfind(b"PING") > wire.find(b"SUB tb.>") >= 0
        await bus.publish(make.bar())
        await bus.flush()
        assert wire.rfind(b"PING") > wire.find(b"PUB tb.") >= 0
    finally:
        await bus.close()
        proxy.close()
        for task in pipes:
            task.cancel()
