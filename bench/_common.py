"""Shared helpers for the benchmarks: arguments, timing, tables and reproducible event mixes."""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import deque
from typing import Callable, Iterable, Iterator, Sequence

from rich.console import Console
from rich.table import Table

from tradebus.bus import events as ev
from tradebus.bus.ids import IdGenerator, order_id_for

T0_NS = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z
STEP_NS = 250_000_000  # the simulated clock advances 250 ms per event
MINUTE_NS = 60_000_000_000
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
START_PRICES = {"BTCUSDT": 42_000.0, "ETHUSDT": 2_300.0, "SOLUSDT": 100.0, "XRPUSDT": 0.6}
SYSTEMS = (("trend-btc", "BTCUSDT"), ("meanrev-eth", "ETHUSDT"), ("breakout-sol", "SOLUSDT"))
FEATURES = (
    "ret_1", "ret_5", "ret_20", "ema_9", "ema_20", "ema_50", "ema_200", "rsi_14", "atr_14", "natr_14",
    "bb_width", "bb_pos", "macd", "macd_signal", "adx_14", "vol_z", "obv_slope", "vwap_dist",
    "realized_vol", "skew_20",
)
HTF_FEATURES = FEATURES[:8]
BARS_PER_LIFECYCLE = 20  # 20 bars then one 5-event order lifecycle: 80% bars

console = Console(width=None if sys.stdout.isatty() else 120)


# --- arguments and timing ----------------------------------------------------------------------


def parser(description: str, default_n: int, quick_n: int) -> argparse.ArgumentParser:
    """Return an argument parser with the common ``--quick`` and ``--n`` options."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help=f"smaller run (n={quick_n:,})")
    p.add_argument("--n", type=int, default=None, help=f"size (default {default_n:,})")
    p.set_defaults(default_n=default_n, quick_n=quick_n)
    return p


def resolve_n(args: argparse.Namespace) -> int:
    """Return the size chosen by ``--n``, else by ``--quick``, else the default."""
    if args.n is not None:
        return args.n
    return args.quick_n if args.quick else args.default_n


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    """Return the fastest wall time, in seconds, of ``repeat`` calls to ``fn``."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """Return (seconds, result) of one call to ``fn``."""
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def consume(items: Iterable[object]) -> None:
    """Exhaust an iterable at C speed, keeping nothing."""
    deque(items, maxlen=0)


# --- formatting --------------------------------------------------------------------------------


def fmt_int(value: float) -> str:
    """Format a count or rate with thousands separators."""
    return f"{value:,.0f}"


def fmt_ratio(value: float) -> str:
    """Format a ratio as ``1.23x``."""
    return f"{value:.2f}x"


def fmt_verdict(ok: bool) -> str:
    """Return a coloured PASS or MISS."""
    return "[green]PASS[/green]" if ok else "[red]MISS[/red]"


def print_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Print a compact table; every column but the first is right-aligned."""
    table = Table(title=title, title_justify="left", title_style="bold", header_style="bold")
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i == 0 else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def print_header(name: str, detail: str) -> None:
    """Print the benchmark's name and what it runs on."""
    console.print(f"\n[bold]{name}[/bold]  {detail}  (python {sys.version.split()[0]})")


# --- reproducible events -----------------------------------------------------------------------


class EventFactory:
    """Build realistic events on a simulated clock; the same seed gives byte-identical events."""

    def __init__(self, seed: str = "bench") -> None:
        """Start the clock at ``T0_NS``; ids and random walks are seeded by ``seed``."""
        self._ids = IdGenerator(seed)
        self._rng = random.Random(seed)
        self._now = T0_NS
        self._prices = dict(START_PRICES)
        self._orders = 0
        self._positions = {system: 0.0 for system, _ in SYSTEMS}
        self._last_id = ""

    def _envelope(self, system: str = "", cause: str = "") -> dict:
        """Advance the clock and return the envelope fields of a new event."""
        self._now += STEP_NS
        self._last_id = self._ids.next(self._now)
        return {"id": self._last_id, "ts_event": self._now, "ts_init": self._now, "system": system,
                "run": "bench", "cause": cause}

    def _walk(self, symbol: str) -> float:
        """Move a symbol's price one random step and return it."""
        price = self._prices[symbol] * (1.0 + self._rng.gauss(0.0, 0.001))
        self._prices[symbol] = price
        return price

    def bar(self, symbol: str | None = None) -> ev.BarClosed:
        """Return the next closed 1m bar of ``symbol`` (a random one if None)."""
        symbol = symbol or self._rng.choice(SYMBOLS)
        env = self._envelope()
        open_ = self._prices[symbol]
        close = self._walk(symbol)
        spread = abs(close - open_) + open_ * 0.0005
        volume = self._rng.uniform(1.0, 500.0)
        return ev.BarClosed(
            **env, venue="bybit", market="linear", symbol=symbol, timeframe="1m",
            open_time=env["ts_event"] - MINUTE_NS, open=open_, high=max(open_, close) + spread * 0.5,
            low=min(open_, close) - spread * 0.5, close=close, volume=volume, turnover=volume * close,
        )

    def _features(self, names: Sequence[str]) -> dict[str, float]:
        """Return random values for the named features."""
        return {name: self._rng.uniform(-3.0, 3.0) for name in names}

    def snapshot(self) -> ev.Snapshot:
        """Return a snapshot: a bar, 20 features and two higher-timeframe feature dicts."""
        bar = self.bar()
        return ev.Snapshot(
            **self._envelope(cause=bar.id), bar=bar, features=self._features(FEATURES),
            htf={"1h": self._features(HTF_FEATURES), "4h": self._features(HTF_FEATURES)},
        )

    def order_intent(self, system: str, symbol: str) -> ev.OrderIntent:
        """Return a market order that flips the system's position direction."""
        self._orders += 1
        cause = self._last_id
        side = "sell" if self._positions[system] > 0 else "buy"
        return ev.OrderIntent(
            **self._envelope(system, cause), order_id=order_id_for(cause, f"o{self._orders}"),
            venue="bybit", symbol=symbol, side=side, order_type="market", qty=round(self._rng.uniform(0.1, 2.0), 3),
            label="entry",
        )

    def accepted(self, intent: ev.OrderIntent) -> ev.OrderAccepted:
        """Return the venue's acknowledgement of ``intent``."""
        return ev.OrderAccepted(
            **self._envelope(intent.system, intent.id), order_id=intent.order_id,
            venue_order_id=f"v{self._orders:012d}",
        )

    def fill(self, intent: ev.OrderIntent) -> ev.Fill:
        """Return the complete execution of ``intent``."""
        price = self._prices[intent.symbol]
        self._positions[intent.system] += intent.qty if intent.side == "buy" else -intent.qty
        return ev.Fill(
            **self._envelope(intent.system, intent.id), order_id=intent.order_id,
            venue_order_id=f"v{self._orders:012d}", exec_id=f"x{self._orders:012d}", symbol=intent.symbol,
            side=intent.side, price=price, qty=intent.qty, fee=price * intent.qty * 0.00055, liquidity="taker",
        )

    def position(self, fill: ev.Fill) -> ev.PositionChanged:
        """Return the venue's position report after ``fill``."""
        return ev.PositionChanged(
            **self._envelope(fill.system, fill.id), symbol=fill.symbol, qty=self._positions[fill.system],
            avg_price=fill.price, mark_price=fill.price,
        )

    def account(self, system: str, cause: str) -> ev.AccountState:
        """Return an account balance report."""
        balance = 10_000.0 + self._rng.uniform(-500.0, 500.0)
        return ev.AccountState(
            **self._envelope(system, cause), balance=balance, equity=balance, available=balance * 0.8,
        )

    def lifecycle(self) -> list[ev.Event]:
        """Return one order's five events: intent, accepted, fill, position, account."""
        system, symbol = SYSTEMS[self._orders % len(SYSTEMS)]
        intent = self.order_intent(system, symbol)
        accepted = self.accepted(intent)
        fill = self.fill(intent)
        position = self.position(fill)
        return [intent, accepted, fill, position, self.account(system, position.id)]


def codec_mix(n: int, seed: str = "bench") -> list[ev.Event]:
    """Return ``n`` events: 40% BarClosed, 40% Snapshot, 10% OrderIntent, 10% Fill."""
    factory = EventFactory(seed)
    out: list[ev.Event] = []
    while len(out) < n:
        for _ in range(4):
            out.append(factory.bar())
            out.append(factory.snapshot())
        intent, _, fill, _, _ = factory.lifecycle()
        out += [intent, fill]
    return out[:n]


def store_mix(n: int, seed: str = "bench") -> list[ev.Event]:
    """Return ``n`` events: 80% BarClosed, 20% order lifecycles across three systems."""
    factory = EventFactory(seed)
    out: list[ev.Event] = []
    while len(out) < n:
        out += [factory.bar() for _ in range(BARS_PER_LIFECYCLE)]
        out += factory.lifecycle()
    return out[:n]


def bar_series(n: int, seed: str = "bench") -> list[ev.BarClosed]:
    """Return ``n`` BarClosed events over four symbols."""
    factory = EventFactory(seed)
    return [factory.bar(SYMBOLS[i % len(SYMBOLS)]) for i in range(n)]


def batched(items: Sequence[object], size: int) -> Iterator[Sequence[object]]:
    """Yield consecutive slices of ``size`` items."""
    for i in range(0, len(items), size):
        yield items[i : i + size]
