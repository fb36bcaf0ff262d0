"""Live equals replay: real 5m bars pushed as confirmed klines through the fake Bybit to a daemon make
exactly the decisions a replay of the same bars, from the same warm-up start, makes.

For every built-in strategy, a composable spec and a user's own strategy (compiled, and plain Python) the daemon's snapshots (every feature, own and higher
timeframe), signals, order intents (sizes and prices before the venue's rounding) and fills must equal
the replay's, value for value:

- demo: the venue is set up so that what comes back from it is what the simulated exchange would do
  (market orders filled at the signal bar's close, no fees, quantities on the venue's step
  ``risk.qty_step``, no resting stops whose fill time the venue decides), so the account, and with it
  every size, stays the same in both;
- paper: the daemon trades the simulated exchange itself, so the example configs run as written: fees,
  spread, slippage, fills at the next open, ATR stops and targets.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest

from tradebus.bus import events as ev
from tradebus.components.base import COMMAND
from tradebus.components.timeframes import tf_ns
from tradebus.configs.schema import SystemConfig, load_config, parse_config
from tradebus.engine.marketdata import MarketData, SeriesKey
from tradebus.engine.wiring import warmup_bars
from tradebus.replay.backtest import run_replay

from .forecastkit import train_and_promote
from .livekit import SYMBOL, nats_bus, running, settings_for
from tradebus.live.fake_bybit import FakeBybit, FakeBybitState, FakeBybitWs

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bybit" / "linear" / "5m" / "BTCUSDT.parquet"
EXAMPLES = Path(__file__).resolve().parents[1] / "configs" / "examples"
pytestmark = pytest.mark.skipif(not DATA.exists(), reason="needs ../shared/data (real Bybit candles)")

TRADED = 240  # bars pushed live and replayed
OFFSET = 40_000  # where in the series the test starts (any stretch works)
COMPOSABLE = {
    "id": "composable",
    "params": {"allow_short": True, "confluence": "all",
               "entries": [{"block": "ma_trend", "kind": "ema", "fast": 5, "slow": 20},
                           {"block": "rsi_zone", "period": 7, "long_above": 52, "short_below": 48}],
               "filters": [{"block": "chop_max", "period": 14, "max": 70}],
               "exits": [{"block": "opposite"}, {"block": "rsi_exit", "period": 7, "long_exit": 80, "short_exit": 20}]},
}


USER_PARAMS = {"fast": 5, "slow": 20, "rsi_period": 7, "rsi_max": 75, "allow_short": True}


def _configs() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        cfg = load_config(path).model_dump(mode="json")
        out.append((cfg["strategy"]["id"], cfg))
    base = load_config(EXAMPLES / "ema_rsi_atr_btc_5m.yaml").model_dump(mode="json")
    out.append(("composable", {**base, "strategy": COMPOSABLE, "higher_timeframes": ["1h"]}))
    # A user's own strategy, from its own file (conftest's user_strategies): the compiled step, and the same
    # step as plain Python, which the daemon calls bar by bar.
    for sid in ("user_trend:UserTrend", "user_trend_py:UserTrendPy"):
        out.append((sid.split(":")[0], {**base, "strategy": {"id": sid, "params": USER_PARAMS}}))
    # A system with a forecaster: its forecasts and their scores must be the replay's too.
    out.append(("forecaster", {**base, "forecaster": {"id": "test_fc"}}))
    # A composite: the forecaster, a policy and a pool; its policy decisions must be the replay's too.
    composite = {k: v for k, v in base.items() if k != "strategy"}
    out.append(("composite", {**composite, "forecaster": {"id": "test_fc"}, "policy": POLICY, "pool": POOL}))
    # An allocated system: the lifecycle's Allocation (a weight of 0.4), taken over the bus by the daemon and
    # delivered before the first bar by the replay, sizes every entry alike.
    out.append(("allocated", {**base, "allocation": 0.4}))
    return out


POOL = {"trend": {"id": "sma_cross", "params": {"fast": 5, "slow": 20, "allow_short": True}},
        "breakout": {"id": "donchian_breakout", "params": {"entry_period": 20, "exit_period": 10, "allow_short": True}},
        "reversion": {"id": "bollinger_reversion", "params": {"period": 20, "k": 1.5, "allow_short": True}}}
# Every regime trades someone, so the stretch decides often (the small test model says chop most of the time).
POLICY = {"id": "lr_policy", "min_confidence": 0.0, "agreement": 0.5, "vol_target": 0.004, "min_scale": 0.3,
          "regimes": {"trend_up": {"trend": 1.0, "breakout": 1.0}, "trend_down": {"trend": 1.0, "breakout": 1.0},
                      "chop": {"reversion": 1.0, "trend": 1.0}, "crash": {"reversion": 1.0}}}


def _config(name: str, spec: dict, paper: bool = False) -> SystemConfig:
    spec = {k: v for k, v in spec.items() if k != "allocation"}  # the lifecycle's, not the config's
    if paper:  # the example as written (no funding: paper has no funding feed), on this symbol
        return parse_config({**spec, "system": f"lr_{name}", "symbol": SYMBOL, "timeframe": "5m",
                             "costs": {**spec["costs"], "funding": False}})
    return parse_config({
        **{k: spec[k] for k in ("forecaster", "policy", "pool", "strategy") if spec.get(k) is not None},
        "system": f"lr_{name}", "symbol": SYMBOL, "timeframe": "5m",
        "higher_timeframes": spec["higher_timeframes"],
        "windows": {"hygiene": {"preset": "first_70pct"}, "test": {"preset": "last_30pct"}},
        "risk": {"sizing": "fixed_fraction", "fraction": 0.5, "max_leverage": 1, "stop": {"kind": "none"},
                 "qty_step": 0.001},
        "costs": {"maker_fee": 0.0, "taker_fee": 0.0, "spread_bps": 0.0, "slippage": {"model": "none"},
                  "funding": False},
        "fill": "on_close", "initial_capital": 10_000,
    })


@pytest.fixture(scope="module")
def candles() -> dict[str, np.ndarray]:
    return _candles(OFFSET, 9_000)


def _candles(offset: int, n: int) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    t = pq.read_table(DATA).slice(offset, n)
    cols = {k: t.column(k).to_numpy().astype(np.float64) for k in ("open", "high", "low", "close", "volume")}
    cols["open_time"] = t.column("open_time").cast("int64").to_numpy()
    cols["turnover"] = cols["volume"] * cols["close"]
    return cols


def _floats(d: dict) -> dict:
    """NaN-safe comparison form of a feature dict (NaN != NaN otherwise)."""
    return {k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def _decisions(events: list[ev.Event]) -> dict[str, list]:
    snaps = [(e.bar.open_time, _floats(e.features), {tf: _floats(x) for tf, x in e.htf.items()})
             for e in events if isinstance(e, ev.Snapshot)]
    signals = [(e.ts_event, e.direction, e.strategy) for e in events if isinstance(e, ev.Signal)]
    intents = [(e.ts_event, e.label, e.side, e.order_type, e.qty, e.price, e.trigger_price, e.reduce_only,
                e.stop_distance) for e in events if isinstance(e, ev.OrderIntent)]
    fills = [(e.side, e.qty, e.price, e.fee) for e in events if isinstance(e, ev.Fill)]
    forecasts = [(e.ts_event, e.model_version, e.expected_return, e.expected_vol, e.regime, e.confidence, e.p_trend_up,
                  e.p_trend_down, e.p_chop, e.p_crash) for e in events if isinstance(e, ev.Forecast)]
    scored = [(e.ts_event, e.forecast_time, e.realised_return, e.realised_vol, e.realised_regime, e.qlike, e.brier)
              for e in events if isinstance(e, ev.ForecastScored)]
    policy = [(e.ts_event, e.regime, e.weights, e.positions, e.exposure, e.direction, e.scale, e.reason)
              for e in events if isinstance(e, ev.PolicyDecision)]
    return {"snapshots": snaps, "signals": signals, "intents": intents, "fills": fills, "forecasts": forecasts,
            "scored": scored, "policy": policy}


async def _live(config: SystemConfig, c: dict[str, np.ndarray], start: int, bus, home: Path,
                mode: str, allocation: float | None = None) -> list[ev.Event]:
    """Run a daemon on the fake Bybit: history up to ``start`` on REST, then bars pushed one by one."""
    state = FakeBybitState(taker_fee=0, maker_fee=0)
    rest, ws = FakeBybit.start(state), FakeBybitWs(state)
    ms = 1_000_000

    def add(i: int, push: bool) -> None:
        state.add_candle(SYMBOL, "5m", int(c["open_time"][i]) // ms, c["open"][i], c["high"][i], c["low"][i],
                         c["close"][i], c["volume"][i], push=push)

    for i in range(start):
        add(i, False)
    seen: list[ev.Event] = []
    try:
        settings = settings_for(_VenueUrls(rest, ws), bus, home, config=config.model_dump(mode="json"), mode=mode)
        async with running(settings) as r:
            d = r.daemon
            d.bus_host._sinks += (seen.append,)  # snapshots are not stored: watch the step's events
            if allocation is not None:  # as `tradebus lifecycle run` publishes it
                now = time.time_ns()
                await bus.publish(ev.Allocation(id="al-live-equals-replay", ts_event=now, ts_init=now,
                                                system=config.system, run=f"{COMMAND}lifecycle", weight=allocation,
                                                method="inverse_vol"))
                await r.until(lambda: d.risk.weight == allocation, what="the allocation")
            for i in range(start, start + TRADED):
                add(i, True)
                t = int(c["open_time"][i])
                deadline = time.monotonic() + 10
                while not (d.builder.last_open == t and not d.busy and d.inbox.empty() and d.requests.empty()
                           and not d.in_flight and (mode == "paper" or _position(d) == _venue_position(state))):
                    assert time.monotonic() < deadline, f"daemon did not finish bar {i}"
                    await asyncio.sleep(0.002)
    finally:
        ws.stop()
        rest.stop()
    return seen


class _VenueUrls:
    def __init__(self, rest: FakeBybit, ws: FakeBybitWs) -> None:
        self.rest, self.ws = rest, ws


def _position(d) -> float:
    pos = d.portfolio.positions.get(SYMBOL)
    return round(pos.qty, 9) if pos else 0.0


def _venue_position(state: FakeBybitState) -> float:
    pos = state.positions.get(SYMBOL)
    return round(float(pos.size), 9) if pos else 0.0


@pytest.mark.parametrize("mode", ["demo", "paper"])
@pytest.mark.parametrize("name,spec", _configs(), ids=[n for n, _ in _configs()])
async def test_daemon_decides_exactly_as_the_replay_of_the_same_bars(name, spec, mode, candles, nats_server, tmp_path,
                                                                     user_strategies):
    if spec.get("forecaster"):  # trained on the bars before the stretch, promoted in this test's data home
        train_and_promote(Path(os.environ["TRADEBUS_HOME"]), _candles(OFFSET - 10_000, 10_000))
    config = _config(name, spec, paper=mode == "paper")
    warm = warmup_bars(config)
    start = warm + 100  # the venue holds more history than the warm-up: the daemon takes only its last `warm`
    assert start + TRADED <= len(candles["close"])
    md = MarketData.open(tmp_path / "md.duckdb")
    key = SeriesKey("bybit", "linear", SYMBOL, "5m")
    md.write(key, {k: v[: start + TRADED] for k, v in candles.items()})
    t0, t1 = int(candles["open_time"][start]), int(candles["open_time"][start + TRADED - 1]) + tf_ns("5m")
    window = f"{np.datetime64(t0, 'ns')}:{np.datetime64(t1, 'ns')}"
    replay = run_replay(config, window, md, keep_market_data=True, allocation=spec.get("allocation"))
    md.close()
    assert replay.market.first == warm, "the replay's warm-up is the daemon's history"

    bus = await nats_bus(nats_server)
    try:
        live = await _live(config, candles, start, bus, tmp_path, mode, spec.get("allocation"))
    finally:
        await bus.close()

    want, got = _decisions(replay.events), _decisions(live)
    assert len(want["snapshots"]) == TRADED
    assert len(want["signals"]) >= 2, "the stretch must make the strategy decide something"
    assert want["fills"], "and trade"
    if mode == "paper" and config.risk.stop.kind != "none":
        assert {"sl"} <= {i[1] for i in want["intents"]}, "paper runs the example's protective orders too"
    if spec.get("forecaster"):
        assert len(want["forecasts"]) == TRADED and len(want["scored"]) == TRADED - 12
    if spec.get("pool"):
        assert len({p[5] for p in want["policy"]}) >= 2, "the stretch must see the policy change its mind"
    for what in ("snapshots", "signals", "intents", "fills", "forecasts", "scored", "policy"):
        assert got[what] == want[what], f"{name}: live {what} differ from the replay's"
