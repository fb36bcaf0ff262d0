"""One kernel, two drivers: the compiled sweep loop (``factory.sim``) equals the event-driven replay exactly.

Every built-in strategy, several parameter sets, and cost/risk models that exercise each path of the
fill model and the accounting: next-open and on-close fills, fixed-fraction and risk-per-trade sizing,
ATR and percent stops with take-profits, spread and fixed or volume slippage, partial fills under a
participation cap, funding at mark prices, and liquidation. Fills, funding, the equity curve at every
bar, the trade ledger and the metrics must be identical, not close. The same cases check that a replay
skipping quiet bars (``engine.quiet``) emits exactly what one stepping every bar emits.
"""

from __future__ import annotations


import numpy as np
import pytest

from tradebus.bus import events as ev
from tradebus.components import strategies
from tradebus.components.timeframes import HOUR, MINUTE
from tradebus.configs.schema import parse_config
from tradebus.factory import sim
from tradebus.replay import checks
from tradebus.replay.backtest import run_replay
from tradebus.replay.importer import read_file
from tradebus.engine.marketdata import MarketData, SeriesKey
from tradebus.engine.market import load_market

from .conftest import SHARED_DATA
from tradebus.replay.checks import T0, random_walk as synthetic

M5 = 5 * MINUTE
N_BARS = 12 * 24 * 30
KEY = SeriesKey("bybit", "linear", "BTCUSDT", "5m")

PARAMS = {
    "sma_cross": [{"fast": 10, "slow": 30, "allow_short": True}, {"fast": 5, "slow": 50}],
    "ema_rsi_atr": [{"fast": 10, "slow": 30, "allow_short": True}, {"fast": 20, "slow": 60, "rsi_long": 60}],
    "donchian_breakout": [{"entry_period": 20, "exit_period": 10, "allow_short": True}, {"entry_period": 55, "exit_period": 20}],
    "bollinger_reversion": [{"period": 20, "k": 2.0, "allow_short": True}, {"period": 30, "k": 1.5}],
    "macd_cross": [{"allow_short": True}, {"fast": 8, "slow": 21, "signal": 5}],
    "stochrsi_mean_reversion": [{"allow_short": True, "adx_filter": False},
                                {"rsi_period": 7, "stoch_period": 21, "oversold": 25, "overbought": 75,
                                 "adx_threshold": 30, "allow_short": True}],
    "regime_gated_trend": [{"fast": 10, "slow": 30, "allow_short": True, "chop_max": 60, "adx_min": 15},
                           {"fast": 20, "slow": 50, "regime_timeframe": "4h", "chop_max": 55}],
    # Two composable specs that between them use every block.
    "composable": [
        {"allow_short": True, "confluence": "all",
         "entries": [{"block": "ma_trend", "kind": "ema", "fast": 10, "slow": 30}, {"block": "rsi_zone", "period": 14}],
         "filters": [{"block": "adx_min", "period": 14, "min": 15}],
         "exits": [{"block": "opposite"}, {"block": "rsi_exit", "long_exit": 68, "short_exit": 32}]},
        {"allow_short": True, "confluence": 1,
         "entries": [{"block": "donchian_breakout", "period": 20}, {"block": "bollinger_reversion", "k": 2.5},
                     {"block": "macd_trend", "fast": 8, "slow": 21, "signal": 5}, {"block": "rsi_reversion"}],
         "filters": [{"block": "chop_max", "max": 62}, {"block": "adx_max", "max": 45}],
         "exits": [{"block": "signal_lost"}, {"block": "ma_cross_back", "kind": "sma", "fast": 10, "slow": 40}]},
    ],
    # A regime switch over a built-in (both sides), and over a composable spec flat in one regime.
    "regime_switch": [
        {"strategy": "sma_cross", "regime": {"indicator": "adx", "period": 14, "threshold": 22},
         "below": {"fast": 5, "slow": 20, "allow_short": True}, "above": {"fast": 10, "slow": 40, "allow_short": True}},
        {"strategy": "composable", "regime": {"indicator": "chop", "period": 14, "threshold": 55},
         "flatten_on_switch": True, "above": None,
         "below": {"allow_short": True, "entries": [{"block": "ma_trend", "kind": "ema", "fast": 8, "slow": 21}]}},
    ],
}

SCENARIOS = {
    "next_open_fraction": {
        "fill": "next_open", "risk": {"sizing": "fixed_fraction", "fraction": 0.95},
        "costs": {"taker_fee": 0.00055, "maker_fee": 0.0002, "spread_bps": 2.0, "funding": False},
    },
    "on_close_atr_stops_funding": {
        "fill": "on_close",
        "risk": {"sizing": "risk_per_trade", "risk_per_trade": 0.01, "max_leverage": 3,
                 "stop": {"kind": "atr", "atr_period": 14, "atr_mult": 2.0, "take_profit_rr": 2.0}},
        "costs": {"taker_fee": 0.00055, "maker_fee": 0.0002, "spread_bps": 2.0,
                  "slippage": {"model": "fixed_bps", "bps": 1.0}, "funding": True},
    },
    "participation_percent_stop_volume_slippage": {
        "fill": "next_open", "participation": 0.05,
        "risk": {"sizing": "fixed_fraction", "fraction": 1.0, "max_leverage": 2, "max_position_notional": 60_000,
                 "stop": {"kind": "percent", "percent": 0.004, "take_profit_rr": 1.5}},
        "costs": {"taker_fee": 0.0006, "maker_fee": -0.0001, "spread_bps": 1.0,
                  "slippage": {"model": "volume", "impact": 0.5}, "funding": True},
    },
    "leverage_to_liquidation": {
        "fill": "next_open", "maintenance_margin": 0.02,
        "risk": {"sizing": "fixed_fraction", "fraction": 25.0, "max_leverage": 25},
        "costs": {"taker_fee": 0.00055, "spread_bps": 2.0, "funding": True},
    },
}


def config(strategy: str, params: dict, scenario: str):
    return parse_config({
        "system": "parity", "symbol": "BTCUSDT", "timeframe": "5m", "higher_timeframes": ["1h"],
        "windows": {"hygiene": {"start": "2025-01-04", "end": "2025-01-30"},
                    "test": {"start": "2025-01-20", "end": "2025-01-30"}},
        "strategy": {"id": strategy, "params": params}, "initial_capital": 10_000, **SCENARIOS[scenario],
    })


@pytest.fixture(scope="module")
def md(tmp_path_factory):
    cols = synthetic(N_BARS, seed=11)
    cols["volume"] = cols["volume"] * 20  # so a 5% participation cap splits some orders, not all
    funding_t = np.arange(T0, T0 + N_BARS * M5, 8 * HOUR, dtype=np.int64)
    marks = synthetic(N_BARS // 12, step=HOUR, seed=12)
    hourly_close = cols["close"][11::12]
    marks["open"] = hourly_close * (1 + 0.0005 * np.sin(np.arange(len(hourly_close))))  # near, not equal, to price
    marks["high"] = np.maximum(marks["open"], marks["close"]) * 1.001
    marks["low"] = np.minimum(marks["open"], marks["close"]) * 0.999
    with MarketData.open(tmp_path_factory.mktemp("parity") / "m.duckdb") as m:
        m.write(KEY, cols)
        m.write(SeriesKey("bybit", "linear", "BTCUSDT", "-", "funding"),
                {"open_time": funding_t, "rate": np.where(np.arange(len(funding_t)) % 3 == 0, -2e-4, 3e-4)})
        m.write(SeriesKey("bybit", "linear", "BTCUSDT", "1h", "mark"), marks)
        yield m


def assert_identical(replayed, kernel: sim.KernelRun) -> None:
    assert not checks.kernel_differences(replayed, kernel)


def assert_same_events(skipping, stepping) -> None:
    assert not checks.stepping_differences(skipping, stepping)


# Every strategy the kernel runs (the pool of a composite is not one: its forecaster and policy run only in
# the event-driven engine, and a sweep refuses it).
KERNEL = sorted(s for s, d in strategies.known().items() if d.compiled)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("strategy", KERNEL)
def test_kernel_equals_replay(md, strategy, scenario):
    assert set(PARAMS) == set(KERNEL), "give every built-in strategy parameter sets here"
    for params in PARAMS[strategy]:
        cfg = config(strategy, params, scenario)
        m = load_market(cfg, "hygiene", md)
        replayed = run_replay(cfg, "hygiene", md, market=m)
        assert_identical(replayed, sim.run_kernel(cfg, m))
        assert_same_events(replayed, run_replay(cfg, "hygiene", md, market=m, keep_market_data=True))


def test_the_scenarios_reach_every_path(md):
    """The parity above means something only if the paths it claims were taken."""
    seen = {}
    for scenario in SCENARIOS:
        for strategy in ("sma_cross", "bollinger_reversion"):
            cfg = config(strategy, PARAMS[strategy][0], scenario)
            replayed = run_replay(cfg, "hygiene", md)
            fills = [e for e in replayed.events if isinstance(e, ev.Fill)]
            seen.setdefault(scenario, set()).update(
                {"partial" for f in fills if f.leaves_qty > 0}
                | {"liquidation" for f in fills if f.order_id.startswith("liquidation")}
                | {"maker" for f in fills if f.liquidity == "maker"}
                | {"stop" for f in fills if f.order_id.endswith("-sl")}
                | {"funding" for e in replayed.events if isinstance(e, ev.FundingPaid)})
    assert {"stop", "maker", "funding"} <= seen["on_close_atr_stops_funding"]
    assert {"partial", "stop", "maker", "funding"} <= seen["participation_percent_stop_volume_slippage"]
    assert "liquidation" in seen["leverage_to_liquidation"]


REAL = SHARED_DATA / "bybit" / "linear" / "5m" / "BTCUSDT.parquet"


@pytest.mark.skipif(not REAL.exists(), reason="../shared/data is absent")
@pytest.mark.parametrize("strategy", ["sma_cross", "stochrsi_mean_reversion"])
def test_kernel_equals_replay_on_real_bybit_data(tmp_path, strategy):
    cols = {k: v[:30_000] for k, v in read_file(REAL).items()}
    with MarketData.open(tmp_path / "m.duckdb") as m:
        m.write(KEY, cols)
        start = str(np.datetime64(int(cols["open_time"][2_000]), "ns"))[:10]
        end = str(np.datetime64(int(cols["open_time"][-1]), "ns"))[:10]
        cfg = parse_config({
            "system": "parity", "symbol": "BTCUSDT", "timeframe": "5m",
            "windows": {"hygiene": {"start": start, "end": end}, "test": {"start": start, "end": end}},
            "strategy": {"id": strategy, "params": PARAMS[strategy][-1]},
            **SCENARIOS["on_close_atr_stops_funding"], "costs": {"taker_fee": 0.00055, "spread_bps": 1.0, "funding": False},
        })
        m_slice = load_market(cfg, "hygiene", m)
        replayed = run_replay(cfg, "hygiene", m, market=m_slice)
        assert replayed.metrics["total_trades"] > 50
        assert_identical(replayed, sim.run_kernel(cfg, m_slice))
        assert_same_events(replayed, run_replay(cfg, "hygiene", m, market=m_slice, keep_market_data=True))
