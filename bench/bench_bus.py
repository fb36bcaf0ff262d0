"""Bus throughput: one publisher, one consumer, through LocalBus and NatsBus, against asyncio.Queue."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Awaitable, Callable, Sequence

import nats
from _common import bar_series, console, fmt_int, fmt_ratio, fmt_verdict, parser, print_header, print_table, resolve_n

from tradebus.bus import codec, subjects
from tradebus.bus.base import DEFAULT_MAXSIZE, Subscription
from tradebus.bus.events import BarClosed
from tradebus.bus.local import LocalBus
from tradebus.bus.nats import NatsBus
from tradebus.bus.natsserver import start_server

LOCAL_TARGET = 1_000_000  # events/s through LocalBus
PATTERN = "tb.md.bar.>"
DELIVERY_TIMEOUT_S = 120.0


async def until_delivered(consumer: Awaitable[int], n: int) -> None:
    """Wait for the consumer to count ``n`` events; fail loudly if it stalls."""
    seen = await asyncio.wait_for(consumer, DELIVERY_TIMEOUT_S)
    if seen != n:
        raise AssertionError(f"the consumer saw {seen:,} of {n:,} events")


async def best_of_async(run: Callable[[], Awaitable[float]], repeat: int) -> float:
    """Return the smallest of the timings ``run`` reports over ``repeat`` runs."""
    return min([await run() for _ in range(repeat)])


async def count(sub: Subscription, n: int) -> int:
    """Read ``sub`` with ``async for`` until ``n`` events have arrived; return how many did."""
    seen = 0
    async for _ in sub:
        seen += 1
        if seen == n:
            break
    return seen


# --- the three in-process and NATS runs ------------------------------------------------------------


async def queue_run(events: Sequence[BarClosed]) -> float:
    """Pass the events through a bare asyncio.Queue bounded like a subscription; return seconds."""
    queue: asyncio.Queue[BarClosed] = asyncio.Queue(maxsize=DEFAULT_MAXSIZE)
    n = len(events)

    async def produce() -> None:
        """Put every event, waiting whenever the queue is full."""
        for e in events:
            await queue.put(e)

    async def consume() -> int:
        """Get ``n`` events and return how many were read."""
        for _ in range(n):
            await queue.get()
        return n

    t0 = time.perf_counter()
    consumer = asyncio.create_task(consume())
    await produce()
    await until_delivered(consumer, n)
    return time.perf_counter() - t0


async def local_run(events: Sequence[BarClosed]) -> float:
    """Publish the events through a LocalBus to one ``async for`` consumer; return seconds."""
    async with LocalBus() as bus:
        sub = await bus.subscribe(PATTERN)

        async def produce() -> None:
            """Publish every event on its own subject."""
            for e in events:
                await bus.publish(e)

        t0 = time.perf_counter()
        consumer = asyncio.create_task(count(sub, len(events)))
        await asyncio.create_task(produce())
        await until_delivered(consumer, len(events))
        return time.perf_counter() - t0


async def nats_run(url: str, events: Sequence[BarClosed]) -> float:
    """Publish the events through a NatsBus, then wait for one ``async for`` consumer; return seconds."""
    bus = await NatsBus.connect(url)
    try:
        sub = await bus.subscribe(PATTERN, maxsize=2 * len(events))
        consumer = asyncio.create_task(count(sub, len(events)))
        t0 = time.perf_counter()
        for e in events:
            await bus.publish(e)
        await bus.flush()
        await until_delivered(consumer, len(events))
        seconds = time.perf_counter() - t0
        await sub.close()
    finally:
        await bus.close()
    return seconds


async def raw_nats_run(url: str, events: Sequence[BarClosed]) -> float:
    """Pass pre-encoded payloads through bare nats-py (no codec, no Subscription); return seconds."""
    messages = [(subjects.subject_for(e), codec.encode(e)) for e in events]
    n = len(messages)
    done = asyncio.get_running_loop().create_future()
    seen = 0

    async def on_msg(_: object) -> None:
        """Count one message and resolve ``done`` at the last."""
        nonlocal seen
        seen += 1
        if seen == n:
            done.set_result(seen)

    nc = await nats.connect(url)
    try:
        await nc.subscribe(PATTERN, cb=on_msg, pending_msgs_limit=2 * n, pending_bytes_limit=0)
        await nc.flush()
        t0 = time.perf_counter()
        for subject, payload in messages:
            await nc.publish(subject, payload)
        await nc.flush()
        await until_delivered(done, n)
        return time.perf_counter() - t0
    finally:
        await nc.drain()


# --- reporting -----------------------------------------------------------------------------------


def rate_row(name: str, n: int, seconds: float, queue_rate: float, local_rate: float) -> tuple[str, ...]:
    """Return one table row: rate, time per event and rate ratios to asyncio.Queue and LocalBus."""
    rate = n / seconds
    return (name, f"{n:,}", fmt_int(rate), f"{1e6 / rate:.2f}", fmt_ratio(rate / queue_rate),
            fmt_ratio(rate / local_rate))


async def measure(n: int, nats_n: int, repeat: int) -> tuple[float, float, float, float]:
    """Run every case best-of-``repeat``; return seconds for queue, local, NATS bus and raw nats-py."""
    events = bar_series(n)
    nats_events = events[:nats_n]
    queue_s = await best_of_async(lambda: queue_run(events), repeat)
    local_s = await best_of_async(lambda: local_run(events), repeat)
    with tempfile.TemporaryDirectory(prefix="tradebus-bench-nats-", dir="/tmp") as tmpdir:
        server = await start_server(Path(tmpdir))
        try:
            nats_s = await best_of_async(lambda: nats_run(server.url, nats_events), repeat)
            raw_s = await best_of_async(lambda: raw_nats_run(server.url, nats_events), repeat)
        finally:
            server.stop()
    return queue_s, local_s, nats_s, raw_s


def report(n: int, nats_n: int, seconds: tuple[float, float, float, float], repeat: int) -> None:
    """Print events/s per transport with ratios, and the LocalBus target."""
    queue_s, local_s, nats_s, raw_s = seconds
    queue_rate, local_rate = n / queue_s, n / local_s
    rows = [
        rate_row("asyncio.Queue (reference)", n, queue_s, queue_rate, local_rate),
        rate_row("LocalBus", n, local_s, queue_rate, local_rate),
        rate_row("nats-py, raw bytes (reference)", nats_n, raw_s, queue_rate, local_rate),
        rate_row("NatsBus", nats_n, nats_s, queue_rate, local_rate),
    ]
    print_table(f"One publisher, one consumer, BarClosed events (best of {repeat})",
                ("transport", "events", "events/s", "us/event", "vs Queue", "vs LocalBus"), rows)
    console.print(f"NatsBus / raw nats-py rate: {fmt_ratio(raw_s / nats_s)} (the cost of codec + Subscription)")
    print_table("Targets", ("target", "goal", "result", ""),
                [("LocalBus throughput", f">= {fmt_int(LOCAL_TARGET)} ev/s", f"{fmt_int(local_rate)} ev/s",
                  fmt_verdict(local_rate >= LOCAL_TARGET))])


def main() -> int:
    """Run the bus benchmark."""
    p = parser(__doc__, default_n=1_000_000, quick_n=200_000)
    p.add_argument("--nats-n", type=int, default=None, help="events through NATS (default n/5)")
    p.add_argument("--repeat", type=int, default=3, help="runs per case; the best is reported")
    args = p.parse_args()
    n = resolve_n(args)
    nats_n = args.nats_n or max(n // 5, 1)
    print_header("bench_bus", f"n={n:,} in process, {nats_n:,} through NATS (embedded nats-server on loopback)")
    seconds = asyncio.run(measure(n, nats_n, args.repeat))
    report(n, nats_n, seconds, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
