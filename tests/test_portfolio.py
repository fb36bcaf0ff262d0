"""Several systems in one replay: one clock, one account, one event stream.

Three systems (two on one symbol) replayed together trade exactly as each does alone with the same
capital; the account is their sum; fills are attributed to the system that caused them (the store's
positions per system say so); the account's caps apply across systems; the CLI writes the combined
report and refuses a bad portfolio file cleanly.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from tradebus.bus import events as ev
from tradebus.configs.limits import Limits
from tradebus.configs.portfolio import load_portfolio
from tradebus.configs.schema import ConfigError
from tradebus.engine.marketdata import MarketData, SeriesKey
from tradebus.eventstore import projections
from tradebus.eventstore.store import EventStore
from tradebus.replay.backtest import run_replay
from tradebus.replay.portfolio import run_portfolio

from .proc import run_tradebus
from tradebus.replay.checks import random_walk as synthetic

WINDOW = "2025-01-04:2025-01-20"
SYSTEMS = {
    "btc_fast": {"symbol": "BTCUSDT", "strategy": {"id": "sma_cross", "params": {"fast": 5, "slow": 20, "allow_short": True}},
                 "risk": {"sizing": "fixed_fraction", "fraction": 0.9}},
    "btc_slow": {"symbol": "BTCUSDT", "strategy": {"id": "sma_cross", "params": {"fast": 12, "slow": 40, "allow_short": True}},
                 "risk": {"sizing": "fixed_fraction", "fraction": 0.9}},
    "eth_trend": {"symbol": "ETHUSDT", "higher_timeframes": ["1h"],
                  "strategy": {"id": "ema_rsi_atr", "params": {"fast": 10, "slow": 30, "allow_short": True}},
                  "risk": {"sizing": "risk_per_trade", "risk_per_trade": 0.01, "max_leverage": 2,
                           "stop": {"kind": "atr", "atr_period": 14, "atr_mult": 2.0, "take_profit_rr": 2.0}}},
}
WEIGHTS = {"btc_fast": 0.4, "btc_slow": 0.2, "eth_trend": 0.3}  # 10% stays cash


@pytest.fixture
def md(tmp_path):
    with MarketData.open(tmp_path / "m.duckdb") as m:
        for symbol, seed in (("BTCUSDT", 11), ("ETHUSDT", 12)):
            m.write(SeriesKey("bybit", "linear", symbol, "5m"), synthetic(12 * 24 * 21, seed=seed))
        yield m


@pytest.fixture
def portfolio_file(tmp_path):
    folder = tmp_path / "configs"
    folder.mkdir()
    for name, spec in SYSTEMS.items():
        cfg = {"system": name, "timeframe": "5m", "costs": {"taker_fee": 0.00055, "spread_bps": 1.0, "funding": False},
               "windows": {"hygiene": {"preset": "first_70pct"}, "test": {"preset": "last_30pct"}}, **spec}
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    pf = {"portfolio": "trio", "initial_capital": 50_000,
          "windows": {"hygiene": {"start": "2025-01-04", "end": "2025-01-20"}, "test": {"preset": "last_30pct"}},
          "systems": [{"config": f"configs/{n}.yaml", "weight": w} for n, w in WEIGHTS.items()]}
    path = tmp_path / "trio.yaml"
    path.write_text(yaml.safe_dump(pf))
    return path


def _fills(events, system):
    return [(e.ts_event, e.side, e.qty, e.price, e.fee) for e in events if isinstance(e, ev.Fill) and e.system == system]


def test_systems_together_trade_as_each_alone_and_the_account_is_their_sum(md, portfolio_file, tmp_path):
    pf = load_portfolio(portfolio_file)
    result = run_portfolio(pf, WINDOW, md)

    for config in pf.systems:
        assert config.initial_capital == pytest.approx(50_000 * WEIGHTS[config.system])
        alone = run_replay(config, WINDOW, md)
        together = next(s for s in result.systems if s.config.system == config.system)
        assert _fills(result.events, config.system) == _fills(alone.events, config.system), config.system
        assert len(together.trades) == len(alone.trades) > 3
        np.testing.assert_array_equal(together.curve, alone.curve)
    # The account: the systems' equity on the union of their bar times, plus the cash nobody holds.
    at_end = sum(s.curve[-1, 2] for s in result.systems) + 0.1 * 50_000
    assert result.equity[-1] == pytest.approx(at_end, rel=1e-12)
    assert result.metrics["return_pct"] == pytest.approx(at_end / 50_000 - 1, rel=1e-9)
    assert result.metrics["total_trades"] == sum(s.metrics["total_trades"] for s in result.systems)
    net = [e for e in result.events if isinstance(e, ev.PositionChanged) and not e.system]
    assert {e.symbol for e in net} == {"BTCUSDT", "ETHUSDT"}, "the account's net positions are reported"

    with EventStore.open_writer(tmp_path / "s.sqlite") as st:
        assert st.append(result.events).appended == len(result.events)
        again = run_portfolio(pf, WINDOW, md)
        assert again.run == result.run and st.append(again.events).appended == 0, "a rerun is the same run"
        state = projections.rebuild(st.read())
    for s in result.systems:  # two systems on BTCUSDT: each position is its own
        final = s.curve[-1, 3]
        assert state_qty(state, s.config.system, result.run, s.config.symbol) == pytest.approx(final)


def state_qty(state, system: str, run: str, symbol: str) -> float:
    book = state.positions.get(system) or state.positions.get(f"{system}/{run}") or {}
    pos = book.get(symbol)
    return pos.qty if pos else 0.0


def test_the_account_caps_apply_across_systems(md, portfolio_file):
    pf = load_portfolio(portfolio_file)
    free = run_portfolio(pf, WINDOW, md)
    capped = run_portfolio(pf, WINDOW, md, limits=Limits.model_validate({"global": {"max_leverage": 0.45}}))
    refused = [e for e in capped.events if isinstance(e, ev.OrderRejected) and e.code == "risk"]
    assert refused and all("global leverage" in e.reason for e in refused)
    # Alone, a system with 40% of the capital at 0.9 of its own equity is under 0.45x of the account: what is
    # refused is refused because of what the others hold.
    assert {e.system for e in refused} >= {"btc_fast"}
    assert capped.metrics["total_trades"] < free.metrics["total_trades"]


def test_portfolio_cli_writes_the_combined_report_and_refuses_bad_files(md, portfolio_file, tmp_path):
    db = md.path
    md.close()
    out = tmp_path / "out"
    done = run_tradebus("replay", str(portfolio_file), "--window", WINDOW, "--out", str(out), "--db", str(db),
                        "--store", str(tmp_path / "s.sqlite"), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "account" in done.stdout and "btc_slow" in done.stdout
    result = json.loads((out / "result.json").read_text())
    assert set(result["systems"]) == set(SYSTEMS)
    assert (out / "report.html").stat().st_size > 10_000
    assert (out / "systems" / "eth_trend" / "trades.csv").exists()

    bad = yaml.safe_load(portfolio_file.read_text())
    bad["systems"][0]["weight"] = 0.9  # 0.9 + 0.2 + 0.3 > 1
    bad_path = tmp_path / "bad.yaml"
    bad_path.write_text(yaml.safe_dump(bad))
    refused = run_tradebus("replay", str(bad_path), "--window", WINDOW, "--db", str(db), "--out", str(tmp_path / "b"))
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "bad.yaml" in refused.stderr and "weights sum to 1.4" in refused.stderr
    assert not (tmp_path / "b").exists(), "nothing written"
    with pytest.raises(ConfigError, match="listed twice"):
        dup = yaml.safe_load(portfolio_file.read_text())
        dup["systems"].append(dict(dup["systems"][0], weight=0.05))
        bad_path.write_text(yaml.safe_dump(dup))
        load_portfolio(bad_path)
