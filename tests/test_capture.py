"""Durable capture: the event stream, the recorder as a durable consumer, quarantine, gaps, and the crash
loop (SIGKILLs of the recorder and of nats-server under a counting publisher).

Each test has its own nats-server: the event stream keeps what every test publishes, so a shared
server would hand one test's events to another's recorder."""

from __future__ import annotations

import dataclasses
import json

import msgspec
import nats
import pytest

from tradebus.bus import codec
from tradebus.bus.nats import NatsBus
from tradebus.bus.natsserver import start_server
from tradebus.eventstore.recorder import EVENT_STREAM, Recorder, ensure_event_stream
from tradebus.eventstore.store import EventStore
from tradebus.tests.capturekit import kill_loop
from tradebus.tests.proc import run_tradebus
from tradebus.tests.samples import one_of_each


@pytest.fixture
async def server(tmp_path):
    srv = await start_server(tmp_path / "nats")
    yield srv
    srv.stop()


@pytest.fixture
def store(tmp_path):
    with EventStore.open_writer(tmp_path / "events.sqlite") as st:
        yield st


async def _record(bus: NatsBus, store: EventStore, count: int, **kw) -> Recorder:
    recorder = Recorder(bus, store, **kw)
    await recorder.start()
    await recorder.sync(count)
    await recorder.stop()
    return recorder


async def test_recorder_records_another_connections_events_in_order(server, store, make):
    sent = [make.bar(close=float(i)) for i in range(500)] + one_of_each()
    async with await NatsBus.connect(server.url) as publisher, await NatsBus.connect(server.url) as listener:
        recorder = Recorder(listener, store)
        await recorder.start()
        for e in sent:
            await publisher.publish(e)  # plain core publishes: the stream keeps them all the same
        await recorder.sync(len(sent) - 2)  # sweep work and results are not the event stream's
        await recorder.stop()

    captured = [e for e in sent if type(e).__name__ not in ("SweepTask", "SweepResult")]
    assert [r.event for r in store.read()] == captured
    assert (recorder.appended, recorder.duplicates, recorder.quarantined) == (len(captured), 0, 0)


async def test_what_is_published_while_no_recorder_runs_is_recorded_when_one_starts(server, store, make):
    early, late = [make.bar(close=float(i)) for i in range(300)], [make.bar() for _ in range(5)]
    async with await NatsBus.connect(server.url) as bus:
        await ensure_event_stream(bus)
        for e in early:
            await bus.publish(e)
        await bus.flush()
        first = await _record(bus, store, len(early))
        for e in [*early[:10], *late]:  # a publisher repeating itself after a reconnect
            await bus.publish(e)
        await bus.flush()
        second = await _record(bus, store, 15)

    assert [r.event for r in store.read()] == [*early, *late]
    assert (first.appended, second.appended, second.duplicates) == (300, 5, 10)


async def test_a_poisoned_event_is_quarantined_and_capture_goes_on(server, store, make, tmp_path):
    stored = make.bar(close=1.0)
    store.append([stored])
    impostor = msgspec.structs.replace(stored, close=2.0)  # a stored id, other content
    after = [make.bar() for _ in range(20)]
    async with await NatsBus.connect(server.url) as bus:
        await ensure_event_stream(bus)
        raw = await nats.connect(server.url)
        await bus.publish(impostor)
        await raw.publish("tb.sig.alpha", b"\xc1 not msgpack")
        await raw.publish("tb.sig.alpha", b"\xc1 not msgpack")  # the same poison twice: one row
        await raw.flush()
        await raw.close()
        for e in after:
            await bus.publish(e)
        await bus.flush()
        recorder = await _record(bus, store, 23)

    assert [r.event for r in store.read()] == [stored, *after]
    assert recorder.quarantined == 3 and recorder.appended == 20
    rows = store.quarantined()
    assert [(r.subject, r.event_id) for r in sorted(rows, key=lambda r: r.subject)] == [
        ("tb.md.bar.bybit.BTCUSDT.5m", stored.id), ("tb.sig.alpha", "")]
    store.close()
    info = json.loads(run_tradebus("store", "info", "--json", "--store", str(store.path)).stdout)
    verify = run_tradebus("store", "verify", "--store", str(store.path))
    listing = run_tradebus("store", "quarantine", "--store", str(store.path))
    assert info["quarantined"] == 2 and info["count"] == 21
    assert verify.returncode == 0 and "2 received message(s) quarantined" in verify.stderr
    assert "not a tradebus event" in listing.stdout and "different content" in listing.stdout


async def test_a_gap_the_stream_dropped_is_reported_once_and_kept(server, store, make):
    async with await NatsBus.connect(server.url) as bus:
        await ensure_event_stream(bus)
        await bus.publish(make.bar())
        await bus.flush()
        await _record(bus, store, 1)
        lost = [make.bar() for _ in range(7)]
        for e in lost:
            await bus.publish(e)
        await bus.flush()
        js = (await nats.connect(server.url)).jetstream()
        config = (await js.stream_info(EVENT_STREAM)).config
        kept = make.bar()
        await bus.publish(kept)
        await bus.flush()
        # A limit drops what a stopped recorder had not taken, as the age or size limit would.
        await js.update_stream(dataclasses.replace(config, max_msgs=1))
        recorder = await _record(bus, store, 1)

    assert recorder.gap == (2, 8)
    assert [r.event.id for r in store.read()][-1] == kept.id and store.info().count == 2
    (row,) = store.quarantined()
    assert row.event_id == "gap:2-8" and "cannot be recovered" in row.reason


def test_record_refuses_a_pattern_the_stream_does_not_carry(tmp_path, nats_server):
    target = tmp_path / "events.sqlite"

    result = run_tradebus("record", "--pattern", "work.>", "--store", str(target), "--nats-url", nats_server.url)

    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "'tb.work.>'" in result.stderr and "tb.ord.>" in result.stderr
    assert not target.exists()


async def test_publish_returns_once_the_stream_holds_every_event(tmp_path, server, make):
    events = [make.bar(close=float(i)) for i in range(600)]
    feed = tmp_path / "feed.jsonl"
    feed.write_text("".join(codec.to_json(e).decode() + "\n" for e in events))

    first = run_tradebus("publish", str(feed), "--nats-url", server.url)
    again = run_tradebus("publish", str(feed), "--nats-url", server.url)
    js = (await nats.connect(server.url)).jetstream()
    held = (await js.stream_info(EVENT_STREAM)).state.messages

    assert first.returncode == 0 and "600 acknowledged by stream TB_EVENTS (0 it already held)" in first.stdout
    assert again.returncode == 0 and "(600 it already held)" in again.stdout
    assert held == 600


async def test_sigkills_of_recorder_and_server_lose_no_acknowledged_event(tmp_path):
    figures = await kill_loop(tmp_path, seconds=12, recorder_kills=3, server_kills=2)

    assert figures.acked > 1000, figures.line()
    assert (figures.lost, figures.duplicated, figures.unexpected) == (0, 0, 0), figures.line()
    assert figures.gapless and not figures.verify_problems, figures.verify_problems
    assert (figures.recorder_kills, figures.server_kills) == (3, 2)
    assert figures.recorder_errors == [], figures.recorder_errors
