"""Wiring a system: which features it reads, how much history seeds them, and its components.

One place builds a system's snapshot builder, strategy host, risk manager, guard and portfolio for a
replay, a paper run and a daemon alike; only the edges (bar source, clock, venue, bus) differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tradebus.components import forecast, strategies
from tradebus.components.base import Component, Gate, Stamper
from tradebus.components.exchange import CostParams, SimExchange
from tradebus.components.features import Candles, Feature, Memo, f, lookback
from tradebus.components.policy import PoolHost
from tradebus.components.portfolio import Portfolio
from tradebus.components.risk import RiskManager, risk_features
from tradebus.components.strategy_host import StrategyHost, row_names
from tradebus.components.timeframes import tf_ns
from tradebus.configs.limits import Limits
from tradebus.configs.schema import SystemConfig
from tradebus.engine.guard import RiskGuard
from tradebus.engine.snapshot import FeatureTable, MarketFeatures, SnapshotBuilder, seed_tables

WARMUP_FACTOR = 3


# What a declared higher timeframe contributes to every snapshot (the strategy may read more).
HTF_CONTEXT = [f("close"), f("ema", 20), f("ema", 50), f("rsi", 14), f("atr", 14), f("adx", 14)]


def features_for(config: SystemConfig) -> tuple[list[Feature], dict[str, list[Feature]]]:
    """Own-timeframe and higher-timeframe features the system needs (strategy, risk, context, its forecast
    model's inputs), deduplicated."""
    defn = config.strategy_def()
    params = config.params()
    own: list[Feature] = []
    higher: dict[str, list[Feature]] = {tf: list(HTF_CONTEXT) for tf in config.higher_timeframes}
    model_own, model_higher = ([], {}) if config.forecaster is None else forecast.input_features(
        forecast_model(config).parsed_inputs())
    for feat in defn.features(params) + risk_features(config.risk.stop.kind, config.risk.stop.atr_period) + model_own:
        if feat not in own:
            own.append(feat)
    for tf, feats in [*defn.htf_features(params).items(), *model_higher.items()]:
        higher.setdefault(tf, [])
        higher[tf] += [feat for feat in feats if feat not in higher[tf]]
    return own, higher


def forecast_model(config: SystemConfig) -> forecast.Model:
    """The system's forecast model from the registry in the data home (the promoted version unless the
    config names one), loaded once per version; a ``ModelRefused`` says why it cannot serve this system."""
    from tradebus import settings
    from tradebus.engine import models

    ref = config.forecaster
    assert ref is not None
    home = settings.data_home()
    version = ref.version or models.promoted(home, ref.id)
    model = _MODELS.get((str(home), ref.id, version or ""))
    if model is None:
        try:
            model = models.load(home, ref.id, version)
        except models.RegistryError as exc:
            raise ModelRefused(f"{config.system}: forecaster: {exc}") from None
        _MODELS[(str(home), ref.id, model.version)] = model
    if model.timeframe != config.timeframe:
        raise ModelRefused(f"{config.system}: forecaster {ref.id} {model.version} forecasts {model.timeframe} bars; "
                           f"the system trades {config.timeframe}")
    return model


_MODELS: dict[tuple[str, str, str], forecast.Model] = {}


class ModelRefused(ValueError):
    """A system's forecaster that cannot be loaded or does not fit the system."""


def model_refuses(config: SystemConfig, first_open: int, last_close: int) -> str:
    """Why the system's forecaster may not forecast bars from the one opening at ``first_open`` to the one
    closing at ``last_close`` ('' if it may): each must be out of its training data and before its expiry."""
    model = forecast_model(config)
    return model.covers(first_open + tf_ns(config.timeframe)) or model.covers(last_close)


def table_column(own: FeatureTable, higher: list[FeatureTable], tf: str | None, name: str) -> np.ndarray:
    """A feature's value at every own bar (NaN before a higher timeframe has closed a bar): what the bar's
    snapshot holds."""
    if tf is None:
        return own.values[:, own.names.index(name)]
    table = next(t for t in higher if t.timeframe == tf)
    values = table.values[:, table.names.index(name)]
    r = table.row_for_bar
    return np.where(r >= 0, values[np.maximum(r, 0)], math.nan)


def warmup_ns(config: SystemConfig) -> int:
    """History to load before the window: 3x each feature's lookback, in its own timeframe."""
    own, higher = features_for(config)
    need = WARMUP_FACTOR * lookback(own) * tf_ns(config.timeframe) + tf_ns(config.timeframe)
    for tf, feats in higher.items():
        need = max(need, (WARMUP_FACTOR * lookback(feats) + 2) * tf_ns(tf))
    return need


def warmup_bars(config: SystemConfig) -> int:
    """Bars of the system's own timeframe that seed its indicators before the first one it trades."""
    return warmup_ns(config) // tf_ns(config.timeframe)


def market_features(config: SystemConfig) -> MarketFeatures:
    """A fresh streaming state for every feature the system reads."""
    own, higher = features_for(config)
    return MarketFeatures(config.timeframe, own, higher)


def feature_tables(config: SystemConfig, candles: Candles, memo: Memo | None = None
                   ) -> tuple[FeatureTable, list[FeatureTable]]:
    """Every feature the system reads over a whole series, from a fresh state (the seed of a replay);
    ``memo``, bound to these candles, shares indicator outputs with other systems over them."""
    own, higher = features_for(config)
    return seed_tables(config.timeframe, own, higher, candles, memo)


@dataclass
class Core:
    """A system's guard, market-data and decision components, seeded with its history."""

    guard: RiskGuard
    builder: SnapshotBuilder
    host: StrategyHost | PoolHost
    risk: RiskManager
    portfolio: Portfolio
    rows: np.ndarray  # the strategy's feature row for every bar of the history
    forecaster: forecast.Forecaster | None = None

    @property
    def tables(self) -> tuple[FeatureTable, list[FeatureTable]]:
        return self.builder.seeded

    def components(self, venue: Component) -> list[Component]:
        """Every component of the system in dispatch order, around its venue (simulated or Bybit): the
        venue and the guard see a bar (fills at its open, caps at its price) before the strategy sees the
        bar's snapshot, as they would live; the forecaster sees the snapshot before the strategy."""
        extra = [self.forecaster] if self.forecaster is not None else []
        return [venue, self.guard, self.builder, *extra, self.host, self.risk, self.portfolio]


def simulated_venue(config: SystemConfig, stamp: Stamper, gate: Gate, funding: Candles | None = None,
                    marks: Candles | None = None) -> SimExchange:
    """The simulated exchange with the config's fill rule and costs, asking ``gate`` about every order;
    ``funding`` and ``marks`` (columns open_time, rate / open) charge funding where known."""
    c = config.costs
    return SimExchange(
        stamp, venue=config.venue, symbol=config.symbol, timeframe=config.timeframe,
        fill_timing=config.fill, participation=config.participation,
        costs=CostParams(c.maker_fee, c.taker_fee, c.spread_bps, c.slippage.model, c.slippage.bps, c.slippage.impact),
        funding_times=None if funding is None else funding["open_time"],
        funding_rates=None if funding is None else funding["rate"],
        mark_times=None if marks is None else marks["open_time"],
        mark_opens=None if marks is None else marks["open"],
        initial_capital=config.initial_capital, maintenance_margin=config.maintenance_margin, gate=gate,
    )


def build_core(config: SystemConfig, stamp: Callable[[str], Stamper], history: Candles, serve_from: int,
               limits: Limits) -> Core:
    """The components every mode runs for a system: the risk guard with ``limits``, the snapshot builder
    seeded with ``history`` (bars opening before ``serve_from`` only warm the indicators up), the strategy
    host (which starts from the row of the last bar before ``serve_from``), the risk manager and the
    portfolio. ``stamp(name)`` makes each component's stamper. Snapshots carry the system's id: they hold
    the features it reads, and systems sharing a symbol each read their own."""
    guard = RiskGuard(stamp("guard"), limits, venue=config.venue, symbol=config.symbol, timeframe=config.timeframe,
                      initial_balance=config.initial_capital)
    builder = SnapshotBuilder(stamp("snapshot"), config.venue, config.symbol, market_features(config), history,
                              serve_from)
    own, higher = builder.seeded
    first = int(np.searchsorted(np.asarray(history["open_time"]), serve_from))
    rows = strategy_rows(config.strategy_def(), config.params(), own, higher)
    forecaster = None
    if config.forecaster is not None:
        model = forecast_model(config)
        times = np.asarray(history["open_time"], dtype=np.int64)[first:]
        x = forecast.input_matrix(model.parsed_inputs(),
                                  lambda tf, feat: table_column(own, higher, tf, feat.name)[first:],
                                  times + tf_ns(config.timeframe))
        forecaster = forecast.Forecaster(stamp("forecaster"), model, config.venue, config.symbol,
                                         dict(zip(times.tolist(), x)))
    host: StrategyHost | PoolHost
    if config.pool is None:
        host = StrategyHost(stamp("strategy"), config.strategy_def(), config.params(), config.venue, config.symbol,
                            config.timeframe, rows[first - 1] if first > 0 else None)
    else:  # a composite: the pool host, stepping each member, in the strategy host's place
        assert forecaster is not None and config.policy is not None
        pool = config.params()
        warm = {name: strategy_rows(d, p, own, higher)[:first] for name, (d, p) in pool.resolved().items()}
        host = PoolHost(stamp("strategy"), pool, config.policy, forecaster.model.model_id, config.venue,
                        config.symbol, config.timeframe, warm, forecaster.refused)
    risk, portfolio = risk_and_portfolio(config, stamp)
    return Core(guard, builder, host, risk, portfolio, rows, forecaster)


def risk_and_portfolio(config: SystemConfig, stamp: Callable[[str], Stamper]) -> tuple[RiskManager, Portfolio]:
    """The system's risk manager and portfolio: the same in a replay and a daemon. ``stamp(name)`` makes each
    one's stamper."""
    r = config.risk
    risk = RiskManager(stamp("risk"), venue=config.venue, symbol=config.symbol, timeframe=config.timeframe,
                       sizing=r.sizing, fraction=r.fraction, risk_per_trade=r.risk_per_trade,
                       max_leverage=r.max_leverage, max_position_notional=r.max_position_notional,
                       stop_kind=r.stop.kind, atr_period=r.stop.atr_period, atr_mult=r.stop.atr_mult,
                       stop_percent=r.stop.percent, take_profit_rr=r.stop.take_profit_rr,
                       initial_capital=config.initial_capital, qty_step=r.qty_step)
    portfolio = Portfolio(stamp("portfolio"), symbol=config.symbol, initial_capital=config.initial_capital,
                          max_leverage=r.max_leverage)
    return risk, portfolio


def strategy_rows(defn: strategies.StrategyDef, params: strategies.Params, own: FeatureTable,
                  higher: list[FeatureTable]) -> np.ndarray:
    """The strategy's feature row for every loaded bar, in the layout its ``decide`` reads (NaN before a
    higher timeframe has a closed bar): what the strategy host assembles from each snapshot."""
    names, htf_names = row_names(defn, params)
    cols = [table_column(own, higher, None, n) for n in names] + [table_column(own, higher, tf, n) for tf, n in htf_names]
    return np.ascontiguousarray(np.column_stack(cols)) if cols else np.empty((len(own.row_for_bar), 0))


