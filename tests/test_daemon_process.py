"""The demo daemon as a user runs it: `tradebus demo` on an example config, in its own process with its
embedded NATS, followed by `tradebus tail`, read by `tradebus rebuild` and `tradebus status` while it
trades, killed with SIGKILL in the middle of an order, restarted, and stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import math

import pytest

from tradebus.bus import events as ev
from tradebus.eventstore.store import EventStore

from tradebus.live.fake_bybit import API_KEY, API_SECRET
from .livekit import check_store_equals_venue, creates, start_venue, venue_qty
from .proc import LineReader, run_tradebus, tradebus, wait_dead

KEYS = {"TRADEBUS_DEMO_API_KEY": API_KEY, "TRADEBUS_DEMO_API_SECRET": API_SECRET}
EXAMPLE = Path(__file__).resolve().parents[1] / "configs" / "examples" / "sma_cross_btc_5m.yaml"
SYSTEM = "sma_cross_btc_5m"


def _wave(i: int) -> float:
    """Slow enough for a 10/30 SMA cross to flip every dozen bars."""
    return round(30_000 + 900 * math.sin(i / 4), 1)


@pytest.fixture
def venue():
    v = start_venue(history=150, tf="5m", wave=_wave)
    yield v
    v.close()


class DaemonProc:
    """`tradebus demo` in a child process; its output is drained on threads so it never blocks."""

    def __init__(self, *args: str) -> None:
        self.proc = tradebus(*args, env=KEYS)
        self.log = LineReader(self.proc.stderr)
        self.out = LineReader(self.proc.stdout)

    def wait_trading(self) -> None:
        self.log.wait_for("daemon trading", timeout=90)


def _status(system: str = SYSTEM) -> dict:
    rows = json.loads(run_tradebus("status", "--json").stdout)
    return next((r for r in rows if r["system"] == system), {})


async def _poll(cond, timeout: float = 30.0, what: str = "") -> bool:
    """Whether ``cond`` came true within ``timeout``; naming ``what`` makes a timeout a failure."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            if what:
                raise AssertionError(f"timed out waiting for {what}")
            return False
        await asyncio.sleep(0.05)
    return True


async def _push(v, bars: int, pause: float = 0.3) -> None:
    for _ in range(bars):
        v.push_bar()
        await asyncio.sleep(pause)


def _nats_pid() -> int:
    found = Path(os.environ["TRADEBUS_HOME"]) / "nats" / "server.json"
    return int(json.loads(found.read_text())["pid"])


async def test_sigkill_mid_order_then_restart_leaves_the_store_equal_to_the_venue(venue, tmp_path):
    store = tmp_path / "demo.sqlite"
    args = ("demo", str(EXAMPLE), "--store", str(store), "--rest-url", venue.rest.url, "--public-ws",
            venue.ws.public_url, "--private-ws", venue.ws.private_url, "--heartbeat", "0.3")

    first = DaemonProc(*args)
    tail = None
    try:
        first.wait_trading()
        nats_pid = _nats_pid()
        tail = tradebus("tail", "--system", SYSTEM, "--json")  # finds the daemon's embedded NATS
        tail_out, tail_log = LineReader(tail.stdout), LineReader(tail.stderr)
        tail_log.wait_for("tailing")
        await _push_until(venue, lambda: creates(venue), "a first order")
        await _poll(lambda: _status().get("position") == pytest.approx(venue_qty(venue)), what="the position at the daemon")

        # The next signal reverses the position: an exit, then an entry. The exit reaches the venue and
        # fills there, but the daemon hears nothing of it (the answer is late, the pushes are lost) and
        # dies before it sends the entry.
        venue.state.drop_private, venue.state.ack_delay = 10**6, 4.0
        before, held = len(creates(venue)), venue_qty(venue)
        await _push_until(venue, lambda: len(creates(venue)) > before, "the reversal")
        killed_link = creates(venue)[-1]["orderLinkId"]
        assert killed_link.endswith("-exit")
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        assert wait_dead(nats_pid), "the embedded nats-server must not outlive its daemon"
        assert _status()["status"] == "dead (no process)"
        venue.state.drop_private, venue.state.ack_delay = 0, 0.0
        await _push(venue, 3, pause=0.05)  # bars close while nobody watches

        journal = "\n".join(first.log.drain())  # what a person watching the daemon saw
        assert "order.intent" in journal and "fill" in journal and killed_link in journal, journal[-2000:]
        await asyncio.sleep(0.5)  # what tail has still to print
        seen = [json.loads(line) for line in tail_out.drain()]
        types = {e["type"] for e in seen}
        assert {"order.intent", "order.submitted", "fill", "heartbeat"} <= types, types
        assert all(e["system"] in (SYSTEM, "") for e in seen)
    finally:
        for p in (first.proc, tail):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)

    second = DaemonProc(*args)
    try:
        second.wait_trading()
        # Reconciled before trading: the order the first daemon never heard back from is known filled.
        await _poll(lambda: _status().get("status") == "running", what="the status file")
        assert venue_qty(venue) != pytest.approx(held), "the order sent before the kill moved the position"
        assert _status()["position"] == pytest.approx(venue_qty(venue))
        rebuilt = run_tradebus("rebuild", "--store", str(store), "--json")  # another process, store in use
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert json.loads(rebuilt.stdout)["events"] > 0
        restarted = len(creates(venue))
        await _push_until(venue, lambda: len(creates(venue)) > restarted, "trade after the restart")
        await _push(venue, 3)
        nats_pid = _nats_pid()
        second.proc.send_signal(signal.SIGTERM)
        assert second.proc.wait(30) == 0
        assert wait_dead(nats_pid), "a clean stop stops the embedded nats-server too"
    finally:
        if second.proc.poll() is None:
            second.proc.kill()
            second.proc.wait(10)
    assert _status()["status"] == "stopped"
    assert "run.finished" in "\n".join(second.log.drain())  # the shutdown is logged too

    # A kill recorded while no daemon runs: the next start says loudly that it is halted, and
    # `resume --all` lifts the system's own halt as well as the account's, answering for each.
    killed = run_tradebus("kill", SYSTEM, "--store", str(store), "--nats-url", "nats://127.0.0.1:1")
    assert killed.returncode == 0 and f"{SYSTEM} -> halted at next start" in killed.stdout, killed.stdout
    third = DaemonProc(*args)
    try:
        third.log.wait_for(f"{SYSTEM} STARTS HALTED", timeout=90)
        resumed = run_tradebus("resume", "--all")
        assert resumed.returncode == 0, resumed.stderr
        assert "all systems: active -> active" in resumed.stdout and f"{SYSTEM}: halted -> active" in resumed.stdout
        third.proc.send_signal(signal.SIGTERM)
        assert third.proc.wait(30) == 0
    finally:
        if third.proc.poll() is None:
            third.proc.kill()
            third.proc.wait(10)

    links = [b["orderLinkId"] for b in creates(venue)]
    assert links.count(killed_link) == 1, "the order in flight at the kill was not sent again"
    assert len(links) == len(set(links)) == len(venue.state.orders)
    state = check_store_equals_venue(venue, store, SYSTEM)
    assert not state.open_orders
    with EventStore.open_reader(store) as st:
        never_sent = [r.event for r in st.read() if isinstance(r.event, ev.OrderRejected)]
    assert [(e.order_id, e.code) for e in never_sent] == [(killed_link.replace("-exit", "-entry"), "not_sent")]
    assert state.by_type["run.started"] == 3 and state.by_type["run.finished"] == 2  # the killed run never finished


async def _push_until(v, cond, what: str, bars: int = 40, wait: float = 0.5) -> None:
    for _ in range(bars):
        v.push_bar()
        if await _poll(cond, wait):
            return
    raise AssertionError(f"no {what} within {bars} bars")


