"""`tradebus paper` as a user runs it: the shipped example on the fake Bybit's public feed, no keys, in its
own process; status and the kill switch reach it; SIGKILLed, it restarts from its store with the
position it had, and what it stored rebuilds to the position it shows."""

from __future__ import annotations

import json
import signal

import pytest

from tradebus.bus import events as ev
from tradebus.eventstore import projections
from tradebus.eventstore.store import EventStore

from .livekit import start_venue
from .proc import LineReader, run_tradebus, tradebus
from .test_daemon_process import EXAMPLE, SYSTEM, _poll, _push, _wave


@pytest.fixture
def venue():
    v = start_venue(history=150, tf="5m", wave=_wave)
    yield v
    v.close()


def _status() -> dict:
    rows = json.loads(run_tradebus("status", "--json").stdout)
    return next((r for r in rows if r["system"] == SYSTEM and r["mode"] == "paper"), {})


def _records(path) -> list:
    with EventStore.open_reader(path) as st:
        return list(st.read())


def _stored(path) -> list[ev.Event]:
    return [r.event for r in _records(path)]


async def test_paper_trades_the_public_feed_survives_sigkill_and_obeys_the_kill_switch(venue, tmp_path):
    store = tmp_path / "paper.sqlite"
    args = ("paper", str(EXAMPLE), "--store", str(store), "--rest-url", venue.rest.url,
            "--public-ws", venue.ws.public_url, "--heartbeat", "0.3")
    env = {"TRADEBUS_DEMO_API_KEY": "", "TRADEBUS_DEMO_API_SECRET": ""}  # paper needs none

    first = tradebus(*args, env=env)
    log = LineReader(first.stderr)
    try:
        log.wait_for("daemon trading", timeout=90)
        fills = lambda: sum(isinstance(e, ev.Fill) for e in _stored(store))  # noqa: E731
        for _ in range(40):
            await _push(venue, 1, pause=0.2)
            if fills() >= 2:
                break
        assert fills() >= 2, "the wave makes the example trade"
        await _poll(lambda: _status().get("status") == "running", what="the status file")
        position = _status()["position"]
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
    assert not [p for p, _ in venue.state.requests if p.startswith("/v5/order")], "paper sends nothing to a venue"
    before = projections.rebuild(_records(store))
    assert before.positions[SYSTEM]["BTCUSDT"].qty == pytest.approx(position)

    await _push(venue, 2, pause=0.05)  # bars close while it is down: history for the restart
    second = tradebus(*args, env=env)
    log = LineReader(second.stderr)
    try:
        log.wait_for("daemon trading", timeout=90)
        await _poll(lambda: _status().get("status") == "running" and _status().get("pid") == second.pid,
                    what="the restarted daemon's status")
        assert _status()["position"] == pytest.approx(position), "the position is folded back from the store"
        killed = run_tradebus("kill", SYSTEM, "--reason", "test", "--wait", "10")
        assert killed.returncode == 0 and "halted" in killed.stdout, killed.stdout + killed.stderr
        await _poll(lambda: _status().get("risk") == "halted", what="the halt in the status")
        halted_at = len(_stored(store))
        await _push(venue, 6, pause=0.2)
        after = _stored(store)[halted_at:]
        assert not [e for e in after if isinstance(e, ev.Fill) and e.order_id.endswith("-entry")], "halted: no entry"
        resumed = run_tradebus("resume", SYSTEM, "--wait", "10")
        assert resumed.returncode == 0 and "active" in resumed.stdout
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    finally:
        if second.poll() is None:
            second.kill()
            second.wait(10)
    events = _stored(store)
    starts = [e for e in events if isinstance(e, ev.RunStarted)]
    assert [e.mode for e in starts] == ["paper", "paper"] and starts[0].manifest["venue"] == "simulated"
    opens = [e.bar.open_time if isinstance(e, ev.Snapshot) else e.open_time for e in events
             if isinstance(e, ev.BarClosed) and e.timeframe == "5m"]
    assert len(opens) == len(set(opens)) and opens == sorted(opens), "each bar once, in order, across the restart"
    gaps = [b - a for a, b in zip(opens, opens[1:])]
    # The two bars that closed while it was down seed the restart's indicators (history, as at any
    # start); they are never traded late.
    assert sorted(set(gaps)) == [5 * 60 * 10**9, 15 * 60 * 10**9] and gaps.count(15 * 60 * 10**9) == 1
    final = projections.rebuild(_records(store))
    assert final.duplicate_fills == 0
    assert _status()["status"] == "stopped"
    assert _status()["position"] == pytest.approx(final.positions[SYSTEM]["BTCUSDT"].qty)
