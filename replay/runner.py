"""``tradebus replay``'s pieces: the replay publisher, the replay's edges, its manifest and collector.

The replay publisher (``bar_steps``) yields one step per traded bar, at its close, with that bar's
``BarClosed`` stamped with the bar's own time; the host sets the simulated clock to each step and runs
it to quiescence. Warm-up bars (3x the slowest feature's lookback) are loaded and seed the indicators
but are never published, so they are never traded. The components are the engine's (``build_core``);
the replay supplies only its edges: the publisher, the simulated clock and the simulated exchange.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
from msgspec.structs import replace

from tradebus import __version__
from tradebus.identity import code_digest
from tradebus.bus import events as ev
from tradebus.components.base import SimClock, Stamper
from tradebus.components.exchange import SimExchange
from tradebus.components.strategies import decision_function
from tradebus.components.timeframes import tf_ns
from tradebus.configs.limits import Limits
from tradebus.configs.schema import SystemConfig
from tradebus.engine.market import MarketSlice, day
from tradebus.engine.marketdata import Columns
from tradebus.engine.quiet import decisions, next_active
from tradebus.engine.wiring import Core, build_core, forecast_model, simulated_venue

MD_TYPES = (ev.BarClosed, ev.Snapshot)


def _publisher(config: SystemConfig, timeframe: str, run: str, seed: str) -> Callable[..., ev.BarClosed]:
    """``bar(close_time, open_time, o, h, l, c, v, turnover)``: one series' BarClosed, stamped with its close.
    One id generator per series, so each sees its own times in order (a merge pulls series ahead); a
    seeded id depends only on its millisecond, so a publisher that skips bars gives the others their ids."""
    stamp = Stamper(SimClock(), f"{run}:publisher:{seed}", "", run)
    tpl = stamp.template(ev.BarClosed, venue=config.venue, market=config.market, symbol=config.symbol,
                         timeframe=timeframe, open_time=0, open=0.0, high=0.0, low=0.0, close=0.0, volume=0.0)
    next_id = stamp.next_id

    def bar(close_time: int, t: int, o: float, h: float, l: float, c: float, v: float, tv: float) -> ev.BarClosed:
        return replace(tpl, id=next_id(close_time), ts_event=close_time, ts_init=close_time, open_time=t, open=o,
                       high=h, low=l, close=c, volume=v, turnover=tv)
    return bar


def _turnover(c: Columns) -> np.ndarray:
    return c["turnover"] if "turnover" in c else np.zeros(len(c["close"]))


def _series_bars(config: SystemConfig, timeframe: str, candles: Columns, first: int, run: str, seed: str
                 ) -> Iterator[tuple[int, int, ev.BarClosed]]:
    """(close time, timeframe length, BarClosed) for one series from index ``first``, in time order."""
    bar = _publisher(config, timeframe, run, seed)
    step = tf_ns(timeframe)
    c, i = candles, first
    rows = zip(c["open_time"][i:].tolist(), c["open"][i:].tolist(), c["high"][i:].tolist(), c["low"][i:].tolist(),
               c["close"][i:].tolist(), c["volume"][i:].tolist(), _turnover(c)[i:].tolist())
    for t, o, h, l, cl, v, tv in rows:
        close_time = t + step
        yield close_time, step, bar(close_time, t, o, h, l, cl, v, tv)


def _streams(config: SystemConfig, m: MarketSlice, run: str, seed: str = "") -> list[Iterator]:
    """A system's own bars from its first traded one, and its higher timeframes' closing after it."""
    streams = [_series_bars(config, config.timeframe, m.candles, m.first, run, seed + config.timeframe)]
    first_close = m.start + tf_ns(config.timeframe)
    for tf, cols in sorted(m.higher.items(), key=lambda kv: tf_ns(kv[0])):
        j = int(np.searchsorted(cols["open_time"] + tf_ns(tf), first_close))
        streams.append(_series_bars(config, tf, cols, j, run, seed + tf))
    return streams


def _merged(streams: list[Iterator]) -> Iterator[tuple[int, tuple[ev.BarClosed, ...]]]:
    """One step per close time; bars closing together share it, the shorter timeframe first, then in
    stream order."""
    if len(streams) == 1:
        for close_time, _, bar in streams[0]:  # the common case, without merging
            yield close_time, (bar,)
        return
    merged = heapq.merge(*streams, key=lambda item: (item[0], item[1]))
    for close_time, group in itertools.groupby(merged, key=lambda item: item[0]):
        yield close_time, tuple(bar for _, _, bar in group)


def bar_steps(config: SystemConfig, m: MarketSlice, run: str) -> Iterator[tuple[int, tuple[ev.BarClosed, ...]]]:
    """The replay publisher: one step per close time, publishing every bar that closes then.

    The system's own bars and those of its higher timeframes are merged in time order; bars closing at
    the same moment share a step, the shorter timeframe first. Only bars of the traded window are
    published (warm-up bars feed the indicators but are never traded).
    """
    return _merged(_streams(config, m, run))


def active_steps(config: SystemConfig, m: MarketSlice, run: str, w: "Wiring",
                 progress: Callable[[int], None] | None = None) -> Iterator[tuple[int, tuple[ev.BarClosed, ...]]]:
    """The replay publisher of a run that keeps no market-data events: the steps of ``bar_steps`` that are
    not quiet (``engine.quiet``), asked of the components' state after each step. Higher timeframes' bars
    are not published: in one system's replay no component takes them (its snapshots carry their features).
    ``progress(bars done)`` every 2048 bars."""
    c = m.candles
    bar = _publisher(config, config.timeframe, run, config.timeframe)
    step = tf_ns(config.timeframe)
    open_t, o, h, low, close, volume, turnover = (c["open_time"], c["open"], c["high"], c["low"], c["close"],
                                                  c["volume"], _turnover(c))
    rows = w.core.rows
    n, i = len(open_t), m.first
    exchange, host, guard = w.exchange, w.core.host, w.core.guard
    wants = None
    while i < n:
        j = i
        state = exchange.quiet_state() if i > m.first and guard.idle else None
        if state is not None:
            if wants is None:
                wants = decisions(decision_function(config.strategy_def()), rows, config.params().vector(), m.first)
            j = next_active(wants, i, open_t, o, h, low, *state, host.qty)
            if j > i and progress is not None and (j - m.first) // 2048 > (i - m.first) // 2048:
                progress(j - m.first)
            if j >= n:
                return
            if j > i:
                host.skip_to(tuple(rows[j - 1].tolist()))
        t = int(open_t[j])
        yield t + step, (bar(t + step, t, float(o[j]), float(h[j]), float(low[j]), float(close[j]), float(volume[j]),
                             float(turnover[j])),)
        i = j + 1


def portfolio_steps(systems: list[tuple[SystemConfig, MarketSlice]], run: str
                    ) -> Iterator[tuple[int, tuple[ev.BarClosed, ...]]]:
    """The publisher of several systems on one clock: every series any of them reads, each once (systems
    on one symbol share its bars), from the earliest bar any of them trades on."""
    series: dict[tuple[str, str, str, str], tuple[int, SystemConfig, Columns, int]] = {}
    for config, m in systems:
        first_close = m.start + tf_ns(config.timeframe)
        wanted = [(config.timeframe, m.candles, m.first)]
        wanted += [(tf, cols, int(np.searchsorted(cols["open_time"] + tf_ns(tf), first_close)))
                   for tf, cols in m.higher.items()]
        for tf, cols, first in wanted:
            key = (config.venue, config.market, config.symbol, tf)
            opens = int(cols["open_time"][first]) if first < len(cols["open_time"]) else 2**62
            if key not in series or opens < series[key][0]:
                series[key] = (opens, config, cols, first)
    streams = [_series_bars(config, key[3], cols, first, run, f"{key[2]}:{key[3]}")
               for key, (_, config, cols, first) in series.items()]
    return _merged(streams)


@dataclass
class Wiring:
    clock: SimClock
    core: Core
    exchange: SimExchange

    @property
    def components(self) -> list:
        return self.core.components(self.exchange)


def wire(config: SystemConfig, m: MarketSlice, run: str, limits: Limits | None = None) -> Wiring:
    """Build the system's components for a replay: the engine's core and a simulated exchange that asks
    the guard about every order (caps from ``limits``; none by default)."""
    clock = SimClock(m.start)
    stamp = lambda name: Stamper(clock, f"{run}:{name}", config.system, run)  # noqa: E731
    core = build_core(config, stamp, m.candles, m.start, limits or Limits())
    exchange = simulated_venue(config, stamp("exchange"), core.guard, m.funding, m.marks)
    exchange.skip_funding_before(m.start)
    return Wiring(clock, core, exchange)


def run_id_for(config: SystemConfig, m: MarketSlice, window: str, limits: Limits | None = None) -> str:
    """A run id that is a pure function of config, window, data, caps and code: a rerun is the same run,
    and a rerun after a change to the code that decides results is a new one."""
    key = f"{config.config_hash()}|{window}|{m.start}|{m.end}|{m.data_hash}|{code_digest()}"
    if config.forecaster is not None:  # the version the run loads (the config may say "the promoted one")
        key += f"|forecaster {forecast_model(config).version}"
    if limits is not None and limits != Limits():
        key += "|" + limits.model_dump_json(by_alias=True)
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{config.system}-{digest[:12]}"


def manifest(config: SystemConfig, m: MarketSlice, window: str, run: str, bus: str,
             limits: Limits | None = None) -> dict:
    return {
        "run": run,
        "system": config.system,
        "window": window,
        "start": day(m.start),
        "end": day(m.end),
        "requested_start": day(m.requested_start),
        "bus": bus,
        "config": config.model_dump(mode="json"),
        "config_hash": config.config_hash(),
        "data": {"source": m.source, "bars": int(len(m.candles["close"]) - m.first),
                 "warmup_bars": m.first, "candles_sha256": m.data_hash,
                 "funding_rows": 0 if m.funding is None else int(len(m.funding["open_time"]))},
        "cost_model": config.costs.model_dump(mode="json"),
        "fill": config.fill,
        "limits": (limits or Limits()).model_dump(mode="json", by_alias=True),
        "code_version": __version__,
        "code_digest": code_digest(),
        **({"forecaster": {"id": config.forecaster.id, "version": forecast_model(config).version}}
           if config.forecaster is not None else {}),
    }


class Collector:
    """Sink keeping the run's non-market-data events (for the store, trades and events.jsonl)."""

    def __init__(self, keep_market_data: bool = False) -> None:
        self.events: list[ev.Event] = []
        self._skip = frozenset() if keep_market_data else frozenset(MD_TYPES)

    def __call__(self, event: ev.Event) -> None:
        if type(event) not in self._skip:
            self.events.append(event)
