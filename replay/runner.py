"""``tradebus replay``'s pieces: load the data, wire the components, publish the bars.

The replay publisher (``bar_steps``) yields one step per traded bar, at its close, with that bar's
``BarClosed`` stamped with the bar's own time; the host sets the simulated clock to each step and runs
it to quiescence. Warm-up bars (3x the slowest feature's lookback) are loaded and fed to the indicators
but never published, so they are never traded.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import itertools
import math
import re
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
from msgspec.structs import replace

from tradebus import __version__
from tradebus.bus import events as ev
from tradebus.components import strategies
from tradebus.components.base import SimClock, Stamper
from tradebus.components.exchange import CostParams, SimExchange
from tradebus.components.features import Feature, f, lookback
from tradebus.components.portfolio import Portfolio
from tradebus.components.risk import RiskManager, risk_features
from tradebus.components.snapshot import FeatureTable, SnapshotBuilder, feature_table
from tradebus.components.strategy_host import StrategyHost, row_names
from tradebus.components.timeframes import TIMEFRAMES, tf_ns
from tradebus.configs.schema import SystemConfig, WindowSpec
from tradebus.replay.fetch import fill_command
from tradebus.replay.marketdata import Columns, MarketData, SeriesKey
from tradebus.replay.resample import last_closed_index, resample

WARMUP_FACTOR = 3
MD_TYPES = (ev.BarClosed, ev.Snapshot)


class MissingDataError(RuntimeError):
    """The market data a replay needs is not stored; ``commands`` fill it."""

    def __init__(self, message: str, commands: list[str], keys: list[tuple[SeriesKey, int, int]]) -> None:
        super().__init__(message)
        self.commands = commands
        self.keys = keys


def _day(ns: int) -> str:
    return str(np.datetime64(ns, "ns"))[:19] + "Z"


@dataclass
class MarketSlice:
    """Everything a replay reads, already cut to the window plus warm-up."""

    start: int  # first traded bar's open time
    end: int  # exclusive
    candles: Columns  # primary timeframe, warm-up included
    first: int  # index of the first traded bar in ``candles``
    higher: dict[str, Columns] = field(default_factory=dict)
    funding: Columns | None = None
    marks: Columns | None = None
    source: str = ""  # which stored series the candles came from
    requested_start: int = 0  # the window's start; ``start`` is later when history was short for warm-up

    @functools.cached_property
    def data_hash(self) -> str:
        """SHA-256 over every input the replay reads: candles, higher-timeframe candles, funding, marks
        (once: the run id and the manifest both name it)."""
        h = hashlib.sha256()
        for cols in (self.candles, *(self.higher[tf] for tf in sorted(self.higher)), self.funding, self.marks):
            for name in sorted(cols or {}):
                h.update(name.encode())
                h.update(np.ascontiguousarray(cols[name]).tobytes())
        return h.hexdigest()


# What a declared higher timeframe contributes to every snapshot (the strategy may read more).
HTF_CONTEXT = [f("close"), f("ema", 20), f("ema", 50), f("rsi", 14), f("atr", 14), f("adx", 14)]


def features_for(config: SystemConfig) -> tuple[list[Feature], dict[str, list[Feature]]]:
    """Own-timeframe and higher-timeframe features the system needs (strategy, risk, context), deduplicated."""
    defn = config.strategy_def()
    params = config.params()
    own: list[Feature] = []
    for feat in defn.features(params) + risk_features(config.risk.stop.kind, config.risk.stop.atr_period):
        if feat not in own:
            own.append(feat)
    higher: dict[str, list[Feature]] = {tf: list(HTF_CONTEXT) for tf in config.higher_timeframes}
    for tf, feats in defn.htf_features(params).items():
        higher.setdefault(tf, [])
        higher[tf] += [feat for feat in feats if feat not in higher[tf]]
    return own, higher


def warmup_ns(config: SystemConfig) -> int:
    """History to load before the window: 3x each feature's lookback, in its own timeframe."""
    own, higher = features_for(config)
    need = WARMUP_FACTOR * lookback(own) * tf_ns(config.timeframe) + tf_ns(config.timeframe)
    for tf, feats in higher.items():
        need = max(need, (WARMUP_FACTOR * lookback(feats) + 2) * tf_ns(tf))
    return need


def resolve_window(spec: WindowSpec | str, data_first: int | None, data_end: int | None) -> tuple[int, int]:
    """Turn dates, a preset or START:END into [start, end) ns."""
    if isinstance(spec, str):
        try:
            # The separating colon is the one followed by a date (times may hold colons too).
            a, b = re.split(r":(?=\d{4}-\d{2}-\d{2})", spec)
            start, end = int(np.datetime64(a, "ns").astype(np.int64)), int(np.datetime64(b, "ns").astype(np.int64))
        except ValueError:
            raise ValueError(f"window {spec!r}: use hygiene, test or START:END dates (2025-01-01:2025-06-01)") from None
        if end <= start:
            raise ValueError(f"window {spec!r}: END must be after START")
        return start, end
    if spec.preset is None:
        return (int(np.datetime64(spec.start, "ns").astype(np.int64)), int(np.datetime64(spec.end, "ns").astype(np.int64)))
    if data_first is None or data_end is None:
        raise ValueError(f"window preset {spec.preset!r} is measured on the stored data, and there is none")
    span = data_end - data_first
    kind, _, rest = spec.preset.partition("_")
    if rest.endswith("pct"):
        cut = data_first + span * int(rest[:-3]) // 100
        return (data_first, cut) if kind == "first" else (data_end - span * int(rest[:-3]) // 100, data_end)
    return data_end - int(rest[:-1]) * 86_400 * 10**9, data_end


def base_key(config: SystemConfig, md: MarketData) -> SeriesKey:
    """The stored series to read: the system's timeframe if stored, else the coarsest finer one that divides it."""
    primary = tf_ns(config.timeframe)
    for tf in sorted(TIMEFRAMES, key=TIMEFRAMES.__getitem__, reverse=True):
        length = tf_ns(tf)
        if length <= primary and primary % length == 0:
            key = SeriesKey(config.venue, config.market, config.symbol, tf)
            if md.coverage(key).rows:
                return key
    return SeriesKey(config.venue, config.market, config.symbol, config.timeframe)


def load_market(config: SystemConfig, window: str, md: MarketData) -> MarketSlice:
    """Load the window plus warm-up; raise MissingDataError naming the command that fills any gap."""
    key = base_key(config, md)
    cov = md.coverage(key)
    spec: WindowSpec | str = config.windows[window] if window in config.windows else window
    data_end = None if cov.last is None else cov.last + tf_ns(key.timeframe)
    if cov.first is None and isinstance(spec, WindowSpec) and spec.preset is not None:
        raise MissingDataError(
            f"{key}: no candles stored, and window preset {spec.preset!r} is measured on them; import a file"
            f" (tradebus data import FILE --symbol {key.symbol} --timeframe {key.timeframe}) or fetch a range"
            f" (tradebus data fetch --symbol {key.symbol} --timeframe {key.timeframe} --start YYYY-MM-DD --end YYYY-MM-DD)",
            [], [],
        )
    start, end = resolve_window(spec, cov.first, data_end)
    step = tf_ns(config.timeframe)
    start = -(-start // step) * step
    requested = start
    warm = warmup_ns(config)
    load_from = start - warm
    base_len = tf_ns(key.timeframe)
    have = md.coverage(key, load_from, end)
    if have.first is not None and have.first > load_from and have.first < end - warm:
        # History starts inside the warm-up: start trading once the indicators are warm instead.
        load_from = have.first
        start = -(-(have.first + warm) // step) * step
        have = md.coverage(key, load_from, end)
    expected = (end - load_from) // base_len
    if have.rows < expected and (have.first is None or have.first > load_from or have.last + base_len < end):
        cmd = fill_command(key, load_from, end)
        raise MissingDataError(
            f"{key}: the replay needs {_day(load_from)} .. {_day(end)} (window plus warm-up) but the store has "
            + ("nothing" if have.first is None else f"{_day(have.first)} .. {_day(have.last + base_len)}")
            + f"; fill it with:\n  {cmd}\nor rerun with --fetch",
            [cmd], [(key, load_from, end)],
        )
    base = md.read(key, load_from, end)
    candles = base if key.timeframe == config.timeframe else resample(base, key.timeframe, config.timeframe)
    higher = {tf: resample(base, key.timeframe, tf) for tf in config.all_higher_timeframes()}
    first = int(np.searchsorted(candles["open_time"], start))
    funding = marks = None
    if config.costs.funding and config.market == "linear":
        fkey = SeriesKey(config.venue, config.market, config.symbol, "-", "funding")
        funding = md.read(fkey, start, end)
        mkey = SeriesKey(config.venue, config.market, config.symbol, "1h", "mark")
        marks = md.read(mkey, start, end)
    return MarketSlice(start, end, candles, first, higher, funding, marks, str(key), requested)


def _series_bars(config: SystemConfig, timeframe: str, candles: Columns, first: int, run: str
                 ) -> Iterator[tuple[int, int, ev.BarClosed]]:
    """(close time, timeframe length, BarClosed) for one series from index ``first``, in time order."""
    # One id generator per series, so each sees its own times in order (a merge pulls series ahead).
    stamp = Stamper(SimClock(), f"{run}:publisher:{timeframe}", "", run)  # stamps with each bar's own time
    tpl = stamp.template(ev.BarClosed, venue=config.venue, market=config.market, symbol=config.symbol,
                         timeframe=timeframe, open_time=0, open=0.0, high=0.0, low=0.0, close=0.0, volume=0.0)
    step = tf_ns(timeframe)
    c, i = candles, first
    turnover = c["turnover"] if "turnover" in c else np.zeros(len(c["close"]))
    rows = zip(c["open_time"][i:].tolist(), c["open"][i:].tolist(), c["high"][i:].tolist(), c["low"][i:].tolist(),
               c["close"][i:].tolist(), c["volume"][i:].tolist(), turnover[i:].tolist())
    next_id = stamp.next_id
    for t, o, h, l, cl, v, tv in rows:
        close_time = t + step
        yield close_time, step, replace(tpl, id=next_id(close_time), ts_event=close_time, ts_init=close_time,
                                        open_time=t, open=o, high=h, low=l, close=cl, volume=v, turnover=tv)


def bar_steps(config: SystemConfig, m: MarketSlice, run: str) -> Iterator[tuple[int, tuple[ev.BarClosed, ...]]]:
    """The replay publisher: one step per close time, publishing every bar that closes then.

    The system's own bars and those of its higher timeframes are merged in time order; bars closing at
    the same moment share a step, the shorter timeframe first. Only bars of the traded window are
    published (warm-up bars feed the indicators but are never traded).
    """
    own = _series_bars(config, config.timeframe, m.candles, m.first, run)
    if not m.higher:
        for close_time, _, bar in own:  # the common case, without merging
            yield close_time, (bar,)
        return
    first_close = m.start + tf_ns(config.timeframe)
    streams = [own]
    for tf, cols in sorted(m.higher.items(), key=lambda kv: tf_ns(kv[0])):
        j = int(np.searchsorted(cols["open_time"] + tf_ns(tf), first_close))
        streams.append(_series_bars(config, tf, cols, j, run))
    merged = heapq.merge(*streams, key=lambda item: (item[0], item[1]))
    for close_time, group in itertools.groupby(merged, key=lambda item: item[0]):
        yield close_time, tuple(bar for _, _, bar in group)


@dataclass
class Wiring:
    clock: SimClock
    components: list
    portfolio: Portfolio
    own: FeatureTable
    higher: list[FeatureTable]


def feature_tables(config: SystemConfig, m: MarketSlice) -> tuple[FeatureTable, list[FeatureTable]]:
    """Every feature the system reads, over the loaded bars: its own timeframe's, then each higher one's."""
    own_feats, htf_feats = features_for(config)
    closes = m.candles["open_time"] + tf_ns(config.timeframe)
    own = feature_table(m.candles, own_feats, config.timeframe)
    higher = [feature_table(m.higher[tf], feats, tf, last_closed_index(m.higher[tf]["open_time"], tf, closes))
              for tf, feats in sorted(htf_feats.items())]
    return own, higher


def wire(config: SystemConfig, m: MarketSlice, run: str) -> Wiring:
    """Build the system's components for a replay."""
    clock = SimClock(m.start)
    stamp = lambda name: Stamper(clock, f"{run}:{name}", config.system, run)  # noqa: E731
    own, higher = feature_tables(config, m)
    builder = SnapshotBuilder(Stamper(clock, f"{run}:snapshot", "", run), config.venue, config.symbol,
                              config.timeframe, m.candles["open_time"], own, higher)
    defn = config.strategy_def()
    prev_row = strategy_rows(defn, config.params(), own, higher)[m.first - 1] if m.first > 0 else None
    host, risk, portfolio = decision_components(config, stamp, prev_row)
    c = config.costs
    exchange = SimExchange(
        stamp("exchange"), venue=config.venue, symbol=config.symbol, timeframe=config.timeframe,
        fill_timing=config.fill, participation=config.participation,
        costs=CostParams(c.maker_fee, c.taker_fee, c.spread_bps, c.slippage.model, c.slippage.bps, c.slippage.impact),
        funding_times=None if m.funding is None else m.funding["open_time"],
        funding_rates=None if m.funding is None else m.funding["rate"],
        mark_times=None if m.marks is None else m.marks["open_time"],
        mark_opens=None if m.marks is None else m.marks["open"],
        initial_capital=config.initial_capital, maintenance_margin=config.maintenance_margin,
    )
    exchange.skip_funding_before(m.start)
    # Registration order is dispatch order: the venue sees a bar (fills at its open) before the strategy
    # sees the bar's snapshot, as it would live.
    return Wiring(clock, [exchange, builder, host, risk, portfolio], portfolio, own, higher)


def decision_components(config: SystemConfig, stamp: Callable[[str], Stamper], prev_row: np.ndarray | None
                        ) -> tuple[StrategyHost, RiskManager, Portfolio]:
    """The system's strategy host, risk manager and portfolio: the same in a replay and a daemon.
    ``stamp(name)`` makes each one's stamper; ``prev_row`` is the strategy row of the last warm-up bar."""
    r = config.risk
    host = StrategyHost(stamp("strategy"), config.strategy_def(), config.params(), config.venue, config.symbol,
                        config.timeframe, prev_row)
    risk = RiskManager(stamp("risk"), venue=config.venue, symbol=config.symbol, timeframe=config.timeframe,
                       sizing=r.sizing, fraction=r.fraction, risk_per_trade=r.risk_per_trade,
                       max_leverage=r.max_leverage, max_position_notional=r.max_position_notional,
                       stop_kind=r.stop.kind, atr_period=r.stop.atr_period, atr_mult=r.stop.atr_mult,
                       stop_percent=r.stop.percent, take_profit_rr=r.stop.take_profit_rr,
                       initial_capital=config.initial_capital)
    portfolio = Portfolio(stamp("portfolio"), symbol=config.symbol, initial_capital=config.initial_capital,
                          max_leverage=r.max_leverage)
    return host, risk, portfolio


def strategy_rows(defn: strategies.StrategyDef, params: strategies.Params, own: FeatureTable,
                  higher: list[FeatureTable]) -> np.ndarray:
    """The strategy's feature row for every loaded bar, in the layout its ``decide`` reads (NaN before a
    higher timeframe has a closed bar): what the strategy host assembles from each snapshot."""
    names, htf_names = row_names(defn, params)
    cols = [own.values[:, own.names.index(n)] for n in names]
    for tf, n in htf_names:
        table = next(t for t in higher if t.timeframe == tf)
        values = table.values[:, table.names.index(n)]
        r = table.row_for_bar
        cols.append(np.where(r >= 0, values[np.maximum(r, 0)], math.nan))
    return np.ascontiguousarray(np.column_stack(cols)) if cols else np.empty((len(own.row_for_bar), 0))


def run_id_for(config: SystemConfig, m: MarketSlice, window: str) -> str:
    """A run id that is a pure function of config, window, data and code: a rerun is the same run."""
    key = f"{config.config_hash()}|{window}|{m.start}|{m.end}|{m.data_hash}|{__version__}"
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{config.system}-{digest[:12]}"


def manifest(config: SystemConfig, m: MarketSlice, window: str, run: str, bus: str) -> dict:
    return {
        "run": run,
        "system": config.system,
        "window": window,
        "start": _day(m.start),
        "end": _day(m.end),
        "requested_start": _day(m.requested_start),
        "bus": bus,
        "config": config.model_dump(mode="json"),
        "config_hash": config.config_hash(),
        "data": {"source": m.source, "bars": int(len(m.candles["close"]) - m.first),
                 "warmup_bars": m.first, "candles_sha256": m.data_hash,
                 "funding_rows": 0 if m.funding is None else int(len(m.funding["open_time"]))},
        "cost_model": config.costs.model_dump(mode="json"),
        "fill": config.fill,
        "code_version": __version__,
    }


class Collector:
    """Sink keeping the run's non-market-data events (for the store, trades and events.jsonl)."""

    def __init__(self, keep_market_data: bool = False) -> None:
        self.events: list[ev.Event] = []
        self._skip = frozenset() if keep_market_data else frozenset(MD_TYPES)

    def __call__(self, event: ev.Event) -> None:
        if type(event) not in self._skip:
            self.events.append(event)
