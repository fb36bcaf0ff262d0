"""Live decision latency: a confirmed kline reaching the demo daemon -> its order leaving for the venue.

The daemon runs in this process, as `tradebus demo` runs it (real pybit, a real nats-server, a real
store with fsync), against the fake Bybit v5 server (live.fake_bybit) on loopback. Bars are pushed one
at a time with a gap, so each is decided alone, as live bars are. For every bar that causes an order it
records, from the moment pybit hands the message to tradebus on the socket thread: the components have
decided (decode, loop hop, features, strategy, risk, venue rules), the step is stored (one fsynced
transaction), and the first request is leaving (on the sending thread, just before the HTTP write).

References, measured in the same run: (a) the bare hop the path cannot avoid, socket thread ->
event loop -> worker thread, with nothing done; (b) a durable store append of the events one decision
writes, alone. Target: p99 received -> sent < 5 ms. Then the same daemon with a forecaster: kline received ->
its Forecast stored and published (target p99 < 50 ms).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from msgspec.structs import replace

from _common import console, fmt_ratio, fmt_verdict, parser, print_header, print_table, resolve_n

from tradebus.bus.ids import IdGenerator
from tradebus.bus.natsserver import start_server
from tradebus.bus.nats import NatsBus
from tradebus.eventstore.store import EventStore
from tradebus.log import configure_logging
from tradebus.live.sandbox import running, settings_for, start_venue

TARGET_P99_MS = 5.0
TARGET_FORECAST_P99_MS = 50.0


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def row(name: str, ns: list[int], ref_p50: float | None = None) -> tuple[str, ...]:
    ms = [x / 1e6 for x in ns]
    p50 = statistics.median(ms)
    return (name, f"{len(ms):,}", f"{p50:.3f}", f"{pct(ms, 0.9):.3f}", f"{pct(ms, 0.99):.3f}", f"{max(ms):.3f}",
            fmt_ratio(p50 / ref_p50) if ref_p50 else "")


async def daemon_run(bars: int, gap: float, home: Path, config: dict | None = None) -> tuple[list, list[int]]:
    venue = start_venue(history=60)
    server = await start_server(home / "nats")
    bus = await NatsBus.connect(server.url, name="bench-live")
    try:
        async with running(settings_for(venue, bus, home, config=config, heartbeat_s=5.0)) as r:
            for i in range(bars):
                venue.push_bar()
                await asyncio.sleep(gap)
                if i % 100 == 99:
                    await r.settle(0.2)
            await r.settle(0.5)
            return [t for t in r.daemon.latencies if t.sent], list(r.daemon.forecast_latencies)
    finally:
        await bus.close()
        server.stop()
        venue.close()


async def hop_run(n: int) -> list[int]:
    """Reference (a): socket thread -> call_soon_threadsafe -> loop -> to_thread -> stamp, nothing else."""
    loop = asyncio.get_running_loop()
    out: list[int] = []
    done = asyncio.Event()

    def sent(t0: int) -> None:
        out.append(time.perf_counter_ns() - t0)

    async def on_loop(t0: int) -> None:
        await asyncio.to_thread(sent, t0)
        if len(out) == n:
            done.set()

    def socket_thread() -> None:
        for _ in range(n):
            t0 = time.perf_counter_ns()
            loop.call_soon_threadsafe(lambda t=t0: loop.create_task(on_loop(t)))
            time.sleep(0.002)

    threading.Thread(target=socket_thread, daemon=True).start()
    await asyncio.wait_for(done.wait(), 60)
    return out


def append_run(n: int, home: Path) -> list[int]:
    """Reference (b): append one decision's events (as the daemon stored them) durably, n times."""
    with EventStore.open_reader(home / "demo.sqlite") as st:
        events = [r.event for r in st.read()]
    batch = [e for e in events if type(e).__name__ in ("BarClosed", "Signal", "OrderIntent", "OrderSubmitted")][:4]
    out, ids = [], IdGenerator("bench")
    with EventStore.open_writer(home / "ref.sqlite") as st:
        for _ in range(n):
            fresh = [replace(e, id=ids.next(time.time_ns())) for e in batch]
            t0 = time.perf_counter_ns()
            st.append(fresh)
            out.append(time.perf_counter_ns() - t0)
    return out


def forecast_run(bars: int, gap: float, home: Path) -> list[int]:
    """The same daemon with a forecaster (a small model trained on a random walk, promoted in ``home``)."""
    import os

    from tradebus.live.sandbox import CONFIG, TF
    from tradebus.replay.checks import random_walk
    from tradebus.tests.forecastkit import spec, train_and_promote

    home.mkdir(parents=True)
    os.environ["TRADEBUS_HOME"] = str(home)  # the registry the daemon loads its model from
    train_and_promote(home, random_walk(3_000, step=60 * 10**9), spec(model="bench_fc", timeframe=TF))
    _, latencies = asyncio.run(daemon_run(bars, gap, home, {**CONFIG, "forecaster": {"id": "bench_fc"}}))
    return latencies


def main() -> int:
    p = parser(__doc__, default_n=1000, quick_n=200)
    p.add_argument("--gap", type=float, default=0.03, help="seconds between pushed bars")
    args = p.parse_args()
    n = resolve_n(args)
    configure_logging(level="warning")
    print_header("bench_live_latency", f"{n:,} bars pushed {args.gap * 1000:.0f} ms apart; the demo daemon in process "
                 "against the fake Bybit on loopback")
    with tempfile.TemporaryDirectory(prefix="tradebus-bench-live-", dir="/tmp") as tmp:
        home = Path(tmp)
        timings, _ = asyncio.run(daemon_run(n, args.gap, home))
        forecasts = forecast_run(min(n, 500), args.gap, home / "fc")
        if len(timings) < 10:
            console.print(f"[red]only {len(timings)} orders: too few to measure[/red]")
            return 1
        hop = asyncio.run(hop_run(len(timings)))
        append = append_run(len(timings), home)
    hop_p50 = statistics.median(hop) / 1e6
    sent = [t.sent for t in timings]
    print_table(f"Confirmed kline received -> ... ({len(timings)} bars that caused an order), ms",
                ("stage", "n", "p50", "p90", "p99", "max", "p50 vs hop"), [
                    row("decided (decode, hop, components)", [t.decided for t in timings], hop_p50),
                    row("stored (+ fsynced append)", [t.stored for t in timings], hop_p50),
                    row("order sent (+ publish, hop to sender)", sent, hop_p50),
                    row("reference (a): bare thread->loop->thread hop", hop),
                    row("reference (b): durable append of one decision", append),
                ])
    p99 = pct([x / 1e6 for x in sent], 0.99)
    print_table(f"Confirmed kline received -> its Forecast stored and published ({len(forecasts)} bars, a system "
                "with a forecaster), ms", ("stage", "n", "p50", "p90", "p99", "max", "p50 vs hop"),
                [row("forecast published", forecasts, hop_p50)])
    fc99 = pct([x / 1e6 for x in forecasts], 0.99)
    print_table("Targets", ("target", "goal", "result", ""),
                [("kline received -> order sent, p99", f"< {TARGET_P99_MS:g} ms", f"{p99:.2f} ms",
                  fmt_verdict(p99 < TARGET_P99_MS)),
                 ("kline received -> Forecast published, p99", f"< {TARGET_FORECAST_P99_MS:g} ms", f"{fc99:.2f} ms",
                  fmt_verdict(fc99 < TARGET_FORECAST_P99_MS))])
    return 0


if __name__ == "__main__":
    sys.exit(main())
