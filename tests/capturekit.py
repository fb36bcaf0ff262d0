"""The capture crash loop: a counting publisher, a ``tradebus record`` process and a nats-server, with
the recorder and the server SIGKILLed in turn. ``tests/test_capture.py`` runs a few kills; the soak runs
many, outside the suite::

    python -m tradebus.tests.capturekit                   # 300 s, 30 recorder and 30 server SIGKILLs
    python -m tradebus.tests.capturekit --seconds 60 --recorder-kills 5 --server-kills 5

(exit 1 when an acknowledged event is missing, one is stored twice, or the seq has a gap).

The publisher publishes bars with ids ``cap-00000000``, ``cap-00000001``, ... one at a time into the event
stream, waits for the stream's ack, and on any failure publishes the same event again until acked (the
stream's duplicate window and the store's idempotent append absorb the repeats). At the end every
acknowledged event must be in the store exactly once, and the store's seq must be gapless.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from tradebus.bus import events as ev
from tradebus.bus.base import BusError
from tradebus.bus.nats import NatsBus
from tradebus.bus.natsserver import NatsServer, start_server
from tradebus.eventstore.recorder import ensure_event_stream
from tradebus.eventstore.store import EventStore
from tradebus.tests.proc import LineReader, tradebus, wait_dead

T0 = 1_700_000_000_000_000_000


@dataclass
class Figures:
    attempts: int = 0  # publishes tried, retries included
    acked: int = 0  # distinct events the stream acknowledged
    stored: int = 0  # distinct publisher events in the store
    lost: int = 0  # acknowledged, not stored
    duplicated: int = 0  # stored more than once
    unexpected: int = 0  # stored but never published
    gapless: bool = False
    verify_problems: list[str] = field(default_factory=list)
    recorder_errors: list[str] = field(default_factory=list)  # the last recorder's, since its start
    recorder_kills: int = 0
    server_kills: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        return (f"published {self.attempts:,} attempts, acknowledged {self.acked:,}, stored {self.stored:,},"
                f" lost {self.lost:,}, duplicated {self.duplicated:,}, unexpected {self.unexpected:,},"
                f" seq gapless {self.gapless}; {self.recorder_kills} recorder and {self.server_kills}"
                f" nats-server SIGKILLs in {self.seconds:.0f} s")


def _bar(i: int) -> ev.BarClosed:
    ts = T0 + i * 300_000_000_000
    return ev.BarClosed(id=f"cap-{i:08d}", ts_event=ts, ts_init=ts, venue="bybit", market="linear",
                        symbol="BTCUSDT", timeframe="5m", open_time=ts - 300_000_000_000, open=100.0,
                        high=101.0, low=99.0, close=100.0 + i % 7, volume=1.0)


class _Recorder:
    """A ``tradebus record`` child process."""

    def __init__(self, store: Path, url: str) -> None:
        self.store, self.url = store, url
        self.proc = tradebus("record", "--store", str(store), "--nats-url", url)
        self.log = LineReader(self.proc.stderr)
        self.log.wait_for("recording", 60)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        wait_dead(self.proc.pid)

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        summary = self.log.wait_for("recorded", 60)
        self.proc.wait(30)
        return summary

    def problems(self) -> list[str]:
        """What the recorder logged at error level or worse (a transient disconnect is only a warning)."""
        return [line for line in self.log.drain() if "[error" in line or "Traceback" in line]


async def kill_loop(workdir: Path, *, seconds: float, recorder_kills: int, server_kills: int,
                    seed: int = 1) -> Figures:
    """Publish for ``seconds`` while killing the recorder and the server at random moments; then let the
    recorder catch up and count."""
    rng = random.Random(seed)
    figures = Figures()
    store_path = workdir / "events.sqlite"
    nats_dir = workdir / "nats"
    server: NatsServer = await start_server(nats_dir)
    url = server.url
    port = int(url.rsplit(":", 1)[1])
    bus = await NatsBus.connect(url, name="counting-publisher")
    await ensure_event_stream(bus)
    recorder = await asyncio.to_thread(_Recorder, store_path, url)
    acked: set[str] = set()
    stop = asyncio.Event()

    async def publish() -> None:
        i = 0
        while not stop.is_set():
            event = _bar(i)
            figures.attempts += 1
            try:
                await bus.publish_durable(event, timeout=2.0)
            except (BusError, Exception):  # noqa: BLE001 - server gone, reconnecting, no responders: retry it
                await asyncio.sleep(0.05)
                continue
            acked.add(event.id)
            i += 1

    kills = ["recorder"] * recorder_kills + ["server"] * server_kills
    rng.shuffle(kills)
    started = time.monotonic()
    publisher = asyncio.create_task(publish())
    try:
        for kind in kills:
            await asyncio.sleep(rng.uniform(0.5, 1.5) * seconds / max(1, len(kills)))
            if kind == "recorder":
                await asyncio.to_thread(recorder.kill)
                figures.recorder_kills += 1
                await asyncio.sleep(rng.uniform(0.0, 0.5))  # the publisher goes on while it is down
                recorder = await asyncio.to_thread(_Recorder, store_path, url)
            else:
                server.process.kill()
                server.process.wait()
                server.stop()  # releases the folder lock
                figures.server_kills += 1
                await asyncio.sleep(rng.uniform(0.1, 1.0))
                server = await start_server(nats_dir, port=port)
        await asyncio.sleep(max(0.0, started + seconds - time.monotonic()))
        stop.set()
        await publisher
        # Everything acknowledged must reach the store: redeliveries come after the consumer's ack_wait.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with EventStore.open_reader(store_path) as st:
                stored = {r.event.id for r in st.read()}
            if acked <= stored:
                break
            await asyncio.sleep(0.5)
        figures.recorder_errors = recorder.problems()
        await asyncio.to_thread(recorder.stop)
    finally:
        stop.set()
        publisher.cancel()
        await bus.close()
        if recorder.proc.poll() is None:
            recorder.kill()
        await asyncio.to_thread(server.stop)
    figures.seconds = time.monotonic() - started
    with EventStore.open_reader(store_path) as st:
        ids = [r.event.id for r in st.read()]
        report = st.verify()
    published = {_bar(i).id for i in range(figures.attempts)}
    figures.acked = len(acked)
    figures.stored = len(set(ids))
    figures.lost = len(acked - set(ids))
    figures.duplicated = len(ids) - len(set(ids))
    figures.unexpected = len(set(ids) - published)
    figures.gapless = report.ok
    figures.verify_problems = report.problems
    return figures


def main() -> int:
    p = argparse.ArgumentParser(description="SIGKILL the recorder and nats-server under a counting publisher.")
    p.add_argument("--seconds", type=float, default=300.0)
    p.add_argument("--recorder-kills", type=int, default=30)
    p.add_argument("--server-kills", type=int, default=30)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="tradebus-soak-") as tmp:
        figures = asyncio.run(kill_loop(Path(tmp), seconds=args.seconds, recorder_kills=args.recorder_kills,
                                        server_kills=args.server_kills, seed=args.seed))
    print(figures.line())
    for problem in [*figures.verify_problems, *figures.recorder_errors][:20]:
        print("  problem:", problem)
    clean = not (figures.lost or figures.duplicated or figures.unexpected or figures.recorder_errors)
    return 0 if clean and figures.gapless else 1


if __name__ == "__main__":
    sys.exit(main())
