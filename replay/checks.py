"""Checks every strategy must pass, built-in or a user's own: its decisions never see the future, and the
sweep kernel trades it exactly as the event-driven replay does (so a sweep's numbers are the replay's).

A strategy's own test calls them on a practice market (a seeded random walk, no data files needed)::

    from tradebus.replay import checks

    def test_no_lookahead():
        checks.no_lookahead(checks.practice_config("my_module:MyStrategy"))

Each raises ``CheckFailed`` (an AssertionError, so pytest shows it) naming the first difference, and
refuses to pass vacuously: a strategy that never trades on the practice market fails with that reason.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
import numpy as np

from tradebus.bus import codec
from tradebus.bus import events as ev
from tradebus.components.timeframes import HOUR, MINUTE, tf_ns
from tradebus.configs.schema import SystemConfig, parse_config
from tradebus.engine.market import load_market
from tradebus.engine.marketdata import Columns, SeriesKey
from tradebus.engine.metrics import NAMES, from_stats
from tradebus.factory import sim
from tradebus.factory.market import MemoryMarket
from tradebus.replay.backtest import ReplayResult, run_replay
from tradebus.replay.runner import MD_TYPES

T0 = 1_735_689_600_000_000_000  # 2025-01-01 00:00 UTC
PRACTICE_DAYS = 40


class CheckFailed(AssertionError):
    """A strategy check that did not hold, with what differed."""


def random_walk(n: int, start: int = T0, step: int = 5 * MINUTE, seed: int = 1) -> Columns:
    """``n`` consistent OHLCV candles of a seeded random walk (0.2% a bar)."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    open_ = np.concatenate(([100.0], close[:-1]))
    spread = np.abs(rng.normal(0, 0.001, n)) * close
    return {
        "open_time": start + step * np.arange(n, dtype=np.int64),
        "open": open_, "high": np.maximum(open_, close) + spread, "low": np.minimum(open_, close) - spread,
        "close": close, "volume": rng.uniform(1, 10, n), "turnover": rng.uniform(100, 1000, n),
    }


def practice_market(config: SystemConfig, seed: int = 11) -> MemoryMarket:
    """40 days of the config's symbol in its timeframe, with funding every 8 hours (alternating sign)."""
    step = tf_ns(config.timeframe)
    n = PRACTICE_DAYS * 24 * HOUR // step
    funding_t = np.arange(T0, T0 + n * step, 8 * HOUR, dtype=np.int64)
    return MemoryMarket({
        SeriesKey(config.venue, config.market, config.symbol, config.timeframe): random_walk(n, T0, step, seed),
        SeriesKey(config.venue, config.market, config.symbol, "-", "funding"):
            {"open_time": funding_t, "rate": np.where(np.arange(len(funding_t)) % 3 == 0, -2e-4, 3e-4)},
    })


def practice_config(strategy: str, params: dict[str, Any] | None = None, **overrides: Any) -> SystemConfig:
    """A system trading ``strategy`` on the practice market: 5m bars, ATR stops with a take-profit,
    fees, spread, slippage and funding, so the checks cross every path of the fill model."""
    data: dict[str, Any] = {
        "system": "practice", "symbol": "PRACTICEUSDT", "timeframe": "5m",
        "windows": {"hygiene": {"start": "2025-01-06", "end": "2025-02-09"},
                    "test": {"start": "2025-01-25", "end": "2025-02-09"}},
        "strategy": {"id": strategy, "params": params or {}},
        "risk": {"sizing": "risk_per_trade", "risk_per_trade": 0.01, "max_leverage": 3,
                 "stop": {"kind": "atr", "atr_period": 14, "atr_mult": 2.0, "take_profit_rr": 2.0}},
        "costs": {"taker_fee": 0.00055, "maker_fee": 0.0002, "spread_bps": 2.0,
                  "slippage": {"model": "fixed_bps", "bps": 1.0}, "funding": True},
    }
    data.update(overrides)
    return parse_config(data, f"practice config for {strategy}")


def no_lookahead(config: SystemConfig, market: MemoryMarket | None = None, cut: float = 0.5) -> int:
    """Change every bar after a cut (prices x1.37, volume x3) and replay both: nothing decided at or before
    the cut may change. Returns how many events were compared."""
    market = market or practice_market(config)
    key = SeriesKey(config.venue, config.market, config.symbol, config.timeframe)
    cols = market.series[key]
    t_cut = int(cols["open_time"][int(len(cols["open_time"]) * cut)])
    after = cols["open_time"] >= t_cut
    changed = {k: v.copy() for k, v in cols.items()}
    for k in ("open", "high", "low", "close"):
        changed[k][after] *= 1.37
    changed["volume"][after] *= 3
    runs = [run_replay(config, "hygiene", m) for m in (market, MemoryMarket({**market.series, key: changed}))]
    before = [decided_before(r, t_cut) for r in runs]
    if not any(isinstance(e, ev.Fill) for e in before[0]):
        raise CheckFailed(f"{config.strategy.id}: no fill before the cut, so the check proves nothing; give the "
                          "practice config parameters that trade")
    for i, (a, b) in enumerate(zip(before[0], before[1])):
        if a != b:
            raise CheckFailed(f"{config.strategy.id} looks ahead: event {i} before the cut differs once later bars "
                              f"change:\n  {a}\n  {b}")
    if len(before[0]) != len(before[1]):
        raise CheckFailed(f"{config.strategy.id} looks ahead: {len(before[0])} events before the cut, "
                          f"{len(before[1])} once later bars change")
    return len(before[0])


def decided_before(result: ReplayResult, t_cut: int) -> list[ev.Event]:
    """Events decided at or before ``t_cut``, ids blanked: ids hash the run, whose id hashes the data."""
    out = []
    for e in result.events:
        if e.ts_init > t_cut or isinstance(e, (ev.RunStarted, ev.RunFinished)):
            continue
        e = msgspec.structs.replace(e, id="", run="", cause="")
        for derived in ("order_id", "exec_id", "venue_order_id"):
            if hasattr(e, derived):
                e = msgspec.structs.replace(e, **{derived: ""})
        out.append(e)
    return out


def kernel_equals_replay(config: SystemConfig, market: MemoryMarket | None = None, window: str = "hygiene") -> int:
    """The sweep kernel's fills, funding, equity curve, trades and metrics equal the replay's, and a replay
    that skips quiet bars emits what one stepping every bar does. Returns the number of fills compared."""
    market = market or practice_market(config)
    m = load_market(config, window, market)
    replayed = run_replay(config, window, market, market=m)
    fills = sum(isinstance(e, ev.Fill) for e in replayed.events)
    if not fills:
        raise CheckFailed(f"{config.strategy.id}: no fill in the replay, so the check proves nothing; give the "
                          "practice config parameters that trade")
    problems = kernel_differences(replayed, sim.run_kernel(config, m))
    problems += stepping_differences(replayed, run_replay(config, window, market, market=m, keep_market_data=True))
    if problems:
        raise CheckFailed(f"{config.strategy.id}: the sweep kernel and the replay differ:\n  " + "\n  ".join(problems))
    return fills


def _same(a: Any, b: Any) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def _first_difference(name: str, a: list, b: list) -> list[str]:
    if a == b:
        return []
    i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return [f"{name}: replay has {len(a)}, kernel {len(b)}; first difference at {i}: "
            f"{a[i] if i < len(a) else '-'} vs {b[i] if i < len(b) else '-'}"]


def kernel_differences(replayed: ReplayResult, kernel: sim.KernelRun) -> list[str]:
    """What differs between a replay and the kernel's run of the same config and market (empty: nothing).
    Fills, funding, times, curve, trades and metrics exactly; the sweep's running-sum metrics to 1e-9,
    their counts and durations exactly."""
    fills = [(e.ts_event, e.qty if e.side == "buy" else -e.qty, e.price, e.fee)
             for e in replayed.events if isinstance(e, ev.Fill)]
    funding = [(e.ts_event, e.amount) for e in replayed.events if isinstance(e, ev.FundingPaid)]
    out = _first_difference("fills", fills, [(t, q, p, f) for _, t, q, p, f, _ in kernel.ledger if q != 0])
    out += _first_difference("funding", funding, [(t, a) for _, t, q, _, _, a in kernel.ledger if q == 0])
    if not np.array_equal(kernel.times, replayed.times):
        out.append("bar times differ")
    if not np.array_equal(kernel.curve, replayed.curve):
        out.append("equity curve differs")
    out += _first_difference("trades", replayed.trades, kernel.trades)
    out += _first_difference("open trades", replayed.open_trades, kernel.open_trades)
    out += [f"metric {k}: replay {replayed.metrics[k]!r}, kernel {kernel.metrics.get(k)!r}"
            for k in replayed.metrics if not _same(replayed.metrics[k], kernel.metrics.get(k))]
    fast = from_stats(kernel.stats, replayed.config.initial_capital, tf_ns(replayed.config.timeframe))
    exact = ("total_trades", "bars", "max_drawdown_duration_days", "avg_holding_hours")
    for name in NAMES:
        a, b = fast[name], replayed.metrics[name]
        close = _same(a, b) or (name not in exact and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12))
        if not close:
            out.append(f"sweep metric {name}: kernel's running sums give {a!r}, the replay {b!r}")
    return out


def stepping_differences(skipping: ReplayResult, stepping: ReplayResult) -> list[str]:
    """What differs between a replay that skips quiet bars and one stepping every bar (which also keeps
    market data): the events apart from market data, byte for byte, and the curve."""
    if not any(type(e) in MD_TYPES for e in stepping.events):
        return ["the stepping run must be the one keeping market data"]
    kept = [codec.encode(e) for e in stepping.events if type(e) not in MD_TYPES]
    out = _first_difference("events (skipping vs stepping)", [codec.encode(e) for e in skipping.events], kept)
    if not np.array_equal(skipping.curve, stepping.curve):
        out.append("equity curve differs between skipping and stepping")
    return out
