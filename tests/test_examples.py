"""The shipped examples say what they did out of sample, and what they say is what a replay gives."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tradebus.configs.schema import load_config
from tradebus.engine.marketdata import MarketData
from tradebus.replay.backtest import run_replay
from tradebus.replay.importer import plan_import

from .conftest import SHARED_DATA

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "configs" / "examples").glob("*.yaml"))
STATED = re.compile(r"^# Out of sample \(window (?P<window>\w+), (?P<span>[^)]+)\): return (?P<ret>[-+0-9.]+)%,"
                    r" Sharpe (?P<sharpe>[-+0-9.]+), max drawdown (?P<dd>[-+0-9.]+)%, (?P<trades>[0-9,]+) trades\.", re.M)


def test_every_example_states_its_out_of_sample_result_and_says_whether_it_loses():
    for path in EXAMPLES:
        text = path.read_text()
        found = STATED.search(text)
        assert found, f"{path.name} does not state its out-of-sample result"
        if float(found["ret"]) < 0:
            assert "# It loses money" in text, f"{path.name} loses money out of sample and does not say so"


@pytest.mark.skipif(not (SHARED_DATA / "bybit").exists(), reason="../shared/data is absent")
def test_what_each_example_states_is_what_its_replay_gives(tmp_path):
    real = SHARED_DATA / "bybit" / "linear"
    with MarketData.open(tmp_path / "m.duckdb") as md:
        plans = [plan_import(real / folder / f"{s}.parquet", "bybit", "linear")
                 for s in ("BTCUSDT", "ETHUSDT") for folder in ("5m", "mark_1h", "funding")]
        md.write_all([(p.key, p.cols) for p in plans])
        for path in EXAMPLES:
            stated = STATED.search(path.read_text())
            m = run_replay(load_config(path), stated["window"], md).metrics
            got = (f"{100 * m['return_pct']:.2f}", f"{m['sharpe']:.2f}", f"{100 * m['max_drawdown']:.2f}",
                   f"{m['total_trades']:,}")
            assert got == (stated["ret"], stated["sharpe"], stated["dd"], stated["trades"]), path.name
