"""Composable strategies: specs validate with clear errors, the generated step equals a direct reading of
the spec, one compile serves every spec of a structure, and sweeps generate block combinations.
(That replay and the sweep kernel run a spec identically is in test_kernel_parity.)"""

from __future__ import annotations

import numpy as np
import pytest

from tradebus.components import strategies
from tradebus.components.features import compute, f
from tradebus.configs.schema import ConfigError, parse_config
from tradebus.factory.experiments import Tracker
from tradebus.factory.sweep import parse_job, plan, run_sweep
from tradebus.factory.market import MemoryMarket

from tradebus.replay.checks import random_walk as synthetic
from .test_sweep import job

WINDOWS = {"hygiene": {"preset": "first_70pct"}, "test": {"preset": "last_30pct"}}


def spec_config(params: dict):
    return parse_config({"system": "spec", "symbol": "BTCUSDT", "timeframe": "5m", "windows": WINDOWS,
                         "strategy": {"id": "composable", "params": params}})


SPEC = {
    "allow_short": True, "confluence": 2,
    "entries": [{"block": "ma_trend", "kind": "sma", "fast": 10, "slow": 40}, {"block": "rsi_zone", "period": 14},
                {"block": "donchian_breakout", "period": 20}],
    "filters": [{"block": "chop_max", "period": 14, "max": 61.8}],
    "exits": [{"block": "opposite"}, {"block": "rsi_exit", "period": 7, "long_exit": 75, "short_exit": 25}],
}


def reference(cols: dict[str, np.ndarray], pos_path: list[int]) -> list[int]:
    """SPEC read directly: each condition from its indicator by name, no generated code."""
    sma10, sma40 = (compute(cols, [f("sma", n)])[:, 0] for n in (10, 40))
    rsi14 = compute(cols, [f("rsi", 14)])[:, 0]
    rsi7 = compute(cols, [f("rsi", 7)])[:, 0]
    chop = compute(cols, [f("chop", 14)])[:, 0]
    up = compute(cols, [f("donchian", 20, output="dc_upper")])[:, 0]
    lo = compute(cols, [f("donchian", 20, output="dc_lower")])[:, 0]
    close = cols["close"]
    out = []
    for t in range(1, len(close)):
        votes = [np.sign(sma10[t] - sma40[t]) if sma10[t] != sma40[t] else 0,
                 1 if rsi14[t] > 55 else (-1 if rsi14[t] < 45 else 0),
                 1 if close[t] > up[t - 1] else (-1 if close[t] < lo[t - 1] else 0)]
        longs, shorts = votes.count(1), votes.count(-1)
        gate = chop[t] < 61.8
        go_long, go_short = longs >= 2 and gate, shorts >= 2 and gate
        pos = pos_path[t - 1]
        if pos == 1:
            out.append((strategies.SHORT if go_short else strategies.FLAT) if (shorts >= 2 or rsi7[t] > 75)
                       else strategies.HOLD)
        elif pos == -1:
            out.append((strategies.LONG if go_long else strategies.FLAT) if (longs >= 2 or rsi7[t] < 25)
                       else strategies.HOLD)
        else:
            out.append(strategies.LONG if go_long else strategies.SHORT if go_short else strategies.HOLD)
    return out


def test_the_generated_step_equals_a_direct_reading_of_the_spec():
    cols = synthetic(4000, seed=9)
    config = spec_config(SPEC)
    defn, params = config.strategy_def(), config.params()
    rows = compute(cols, defn.features(params))
    p = params.vector()
    rng = np.random.default_rng(2)
    pos_path = list(rng.choice([-1, 0, 1], size=len(rows)))  # every state, in any order
    start = 60  # past the slowest warm-up (NaN rows compare false everywhere, in both)
    got = [defn.decide(rows[t], rows[t - 1], int(pos_path[t - 1]), p) for t in range(1, len(rows))]
    want = reference(cols, [int(x) for x in pos_path])
    assert got[start:] == want[start:]
    assert {strategies.LONG, strategies.SHORT, strategies.FLAT, strategies.HOLD} <= set(got[start:])


def test_specs_differing_only_in_numbers_share_one_compiled_step():
    a = spec_config(SPEC).strategy_def()
    b = spec_config({**SPEC, "confluence": "any",
                     "entries": [{"block": "ma_trend", "kind": "sma", "fast": 5, "slow": 100},
                                 {"block": "rsi_zone", "period": 21, "long_above": 60},
                                 {"block": "donchian_breakout", "period": 55}]}).strategy_def()
    c = spec_config({**SPEC, "entries": SPEC["entries"][:2]}).strategy_def()
    d = spec_config({**SPEC, "entries": [{"block": "ma_trend", "kind": "ema", "fast": 10, "slow": 40},
                                         *SPEC["entries"][1:]]}).strategy_def()
    assert a is b
    assert len({a.id, c.id, d.id}) == 3


@pytest.mark.parametrize("params, where, says", [
    ({**SPEC, "entries": [{"block": "moon_phase"}]}, "strategy.params.entries.0",
     "'ma_trend', 'rsi_zone', 'rsi_reversion', 'macd_trend', 'bollinger_reversion', 'donchian_breakout'"),
    ({**SPEC, "entries": [{"block": "ma_trend", "fast": 50, "slow": 20}]}, "strategy.params.entries.0.ma_trend",
     "fast (50) must be < slow (20)"),
    ({**SPEC, "filters": [{"block": "adx_min", "min": 150}]}, "strategy.params.filters.0.adx_min.min",
     "less than or equal to 100"),
    ({**SPEC, "confluence": 4}, "strategy.params", "confluence 4 is more than the 3 entries"),
    ({**SPEC, "entries": []}, "strategy.params.entries", "at least 1 item"),
    ({**SPEC, "exits": [{"block": "opposite", "speed": 3}]}, "strategy.params.exits.0.opposite.speed",
     "Extra inputs are not permitted"),
])
def test_spec_errors_name_the_field_the_value_and_what_is_allowed(params, where, says):
    with pytest.raises(ConfigError) as exc:
        spec_config(params)
    assert where in str(exc.value) and says in str(exc.value)


def test_a_sweep_combines_blocks_into_specs(md, tmp_path):  # noqa: F811
    spec = parse_job(job(job="t-combine", tasks=[{
        "strategy": "composable", "params": {"allow_short": [True, False]},
        "combine": {"entries": [{"block": "ma_trend", "fast": 10, "slow": 30}, {"block": "rsi_zone"},
                                {"block": "macd_trend"}],
                    "sizes": [1, 2], "filters": [[], [{"block": "adx_min", "min": 20}]]},
        "symbols": ["BTCUSDT"]}]))
    p = plan(spec, MemoryMarket.load(md, "bybit", "linear", ["BTCUSDT"]))
    assert p.count == (3 + 3) * 2 * 2 and not p.invalid  # entry subsets x filter sets x allow_short
    assert len({t.id for t in p.trials}) == p.count
    with Tracker.open(tmp_path / "e.duckdb") as tracker:
        report = run_sweep(spec, md, tracker, workers=1)
        rows = tracker.top(100, validated_only=False, min_trades=0)
    assert report.ran == p.count and not report.failed
    assert {r["strategy_source"] for r in rows} == {"composable"}
    assert any(len(r.params["entries"]) == 2 for r in rows)


def test_combine_is_refused_for_a_builtin_strategy():
    with pytest.raises(ConfigError, match="combine generates composable specs"):
        parse_job(job(tasks=[{"strategy": "sma_cross", "combine": {"entries": [{"block": "rsi_zone"}]},
                              "symbols": ["BTCUSDT"]}]))


@pytest.mark.parametrize("combine,where,says", [
    ({"entries": [{"block": "ma_trnd"}]}, "combine.entries", "'ma_trnd' found using 'block' does not match"),
    ({"entries": [{"block": "rsi_zone", "period": 1}]}, "combine.entries", "greater than or equal to 2"),
    ({"entries": [{"block": "rsi_zone"}], "filters": [[{"block": "adx_min", "min": 20, "fast": 3}]]},
     "combine.filters", "Extra inputs are not permitted"),
    ({"entries": [{"block": "rsi_zone"}], "exits": [[{"block": "ma_trend"}]]}, "combine.exits", "'ma_trend'"),
])
def test_a_bad_block_in_combine_is_refused_before_any_spec_is_built(combine, where, says):
    with pytest.raises(ConfigError) as exc:
        parse_job(job(tasks=[{"strategy": "composable", "combine": combine, "symbols": ["BTCUSDT"]}]))
    assert where in str(exc.value) and says in str(exc.value)
