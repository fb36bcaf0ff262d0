"""A daemon against the fake Bybit (``live.fake_bybit``) in this process: a venue holding a price wave's
candles and pushing more on demand, the daemon's settings for it, and a context that runs the daemon
until it is left. The test suite and the live-latency benchmark both drive daemons through it."""

from __future__ import annotations

import asyncio
import math
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Callable

from tradebus.components.timeframes import tf_ns
from tradebus.configs.limits import Limits
from tradebus.configs.schema import parse_config
from tradebus.live.bybit import Credentials
from tradebus.live.daemon import Daemon, DaemonSettings
from tradebus.live.fake_bybit import API_KEY, API_SECRET, FakeBybit, FakeBybitState, FakeBybitWs, Instrument

SYMBOL = "BTCUSDT"
TF = "1m"
CONFIG = {
    "system": "livetest", "symbol": SYMBOL, "timeframe": TF,
    "windows": {"hygiene": {"preset": "first_70pct"}, "test": {"preset": "last_30pct"}},
    "strategy": {"id": "sma_cross", "params": {"fast": 2, "slow": 5, "allow_short": True}},
    "risk": {"sizing": "fixed_fraction", "fraction": 0.5, "max_leverage": 1},
    "initial_capital": 10000,
}


def price_at(i: int) -> float:
    """A wave that crosses its own averages every few bars."""
    return round(30_000 + 600 * math.sin(i / 1.5), 1)


@dataclass
class Venue:
    state: FakeBybitState
    rest: FakeBybit
    ws: FakeBybitWs
    tf: str = TF
    wave: Callable[[int], float] = price_at
    next_bar: int = 0  # index of the next bar to close
    t0_ms: int = 0
    symbol: str = SYMBOL

    def _close_bar(self, push: bool) -> None:
        i = self.next_bar
        c, o = self.wave(i), self.wave(i - 1)
        self.state.add_candle(self.symbol, self.tf, self.t0_ms + i * tf_ns(self.tf) // 1_000_000, o, max(o, c) + 5,
                              min(o, c) - 5, c, 10.0, push=push)
        self.next_bar += 1

    def push_bar(self, n: int = 1) -> None:
        for _ in range(n):
            self._close_bar(push=True)

    def close(self) -> None:
        self.ws.stop()
        self.rest.stop()


def start_venue(history: int = 60, tf: str = TF, wave: Callable[[int], float] = price_at, symbol: str = SYMBOL
                ) -> Venue:
    """A fake Bybit holding ``history`` closed candles of ``wave`` that end a day or more ago (the venue's
    clock is the wall clock, so every bar pushed later is in the past too)."""
    state = FakeBybitState()
    rest = FakeBybit.start(state)
    ws = FakeBybitWs(state)
    step = tf_ns(tf) // 1_000_000
    t0 = (int(time.time() * 1000) // step - 24 * 60) * step - history * step
    if symbol not in state.instruments:
        state.instruments[symbol] = Instrument(symbol)
    v = Venue(state, rest, ws, tf=tf, wave=wave, t0_ms=t0, symbol=symbol)
    for _ in range(history):
        v._close_bar(push=False)
    return v


def settings_for(v: Venue, bus, home: Path, limits: Limits | None = None, config: dict | None = None,
                 **kw) -> DaemonSettings:
    quick = {"heartbeat_s": 0.5, "rest_timeout": 1.0, "lookup_delay": 0.1}  # a sandbox need not wait like a daemon
    kw.setdefault("mode", "demo")
    return DaemonSettings(config=parse_config(dict(config or CONFIG)), creds=Credentials(API_KEY, API_SECRET),
                          limits=limits or Limits(), store_path=home / "demo.sqlite", bus=bus,
                          status_dir=home / "daemons", rest_url=v.rest.url, public_ws=v.ws.public_url,
                          private_ws=v.ws.private_url, **{**quick, **kw})


@dataclass
class Running:
    daemon: Daemon
    stop: asyncio.Event
    task: asyncio.Task
    codes: list[int] = field(default_factory=list)

    async def until(self, cond, timeout: float = 15.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if self.task.done():
                self.task.result()
                raise RuntimeError(f"daemon stopped while waiting for {what}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            await asyncio.sleep(0.02)

    async def settle(self, quiet: float = 0.4) -> None:
        """Wait until the daemon has had nothing to do for ``quiet`` seconds."""
        last, since = None, time.monotonic()
        while time.monotonic() - since < quiet:
            d = self.daemon
            n = (d.steps, d.in_flight, d.requests.qsize(), d.inbox.qsize())
            if n != last:
                last, since = n, time.monotonic()
            await asyncio.sleep(0.05)


@asynccontextmanager
async def running(settings: DaemonSettings) -> AsyncIterator[Running]:
    daemon = Daemon(settings)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(daemon.run(stop, ready))
    waiter = asyncio.ensure_future(ready.wait())
    await asyncio.wait({task, waiter}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()
        raise RuntimeError(f"daemon exited at start with {task.result()}")
    r = Running(daemon, stop, task)
    try:
        yield r
    finally:
        stop.set()
        r.codes.append(await asyncio.wait_for(task, 30))
