"""Parity with a peer engine: backtesting.py and tradebus replay, same data, same rule, same costs.

Both run the SMA crossover, always in the market (close and reverse on each cross), orders at the next
bar's open and a relative commission on entry and exit. No spread: backtesting.py charges its whole
spread once, at entry (it closes trades at the unadjusted price), while tradebus charges half the spread
on every fill, as crossing the book does; the two agree per round trip only approximately, so the
spread model is tested on its own (test_replay). The peer reads tradebus's SMA values, so the comparison
is of the engines (timing, prices, costs, accounting); the SMA itself is checked against TA-Lib.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from backtesting import Backtest, Strategy
from backtesting.lib import crossover

from tradebus.components import indicators as ind
from tradebus.components.timeframes import tf_ns
from tradebus.configs.schema import parse_config
from tradebus.replay.backtest import run_replay
from tradebus.engine.marketdata import MarketData, SeriesKey

from .conftest import SHARED_DATA

COMMISSION = 0.0006
N1, N2 = 10, 30


def frame_from_backtesting(name: str) -> pd.DataFrame:
    import backtesting

    path = Path(backtesting.__file__).parent / "test" / f"{name}.csv"
    return pd.read_csv(path, index_col=0, parse_dates=True)


def frame_from_shared(symbol: str, n: int) -> pd.DataFrame:
    path = SHARED_DATA / "bybit" / "linear" / "5m" / f"{symbol}.parquet"
    if not path.exists():
        pytest.skip("../shared/data is absent")
    from tradebus.replay.importer import read_file

    cols = {k: v[:n] for k, v in read_file(path).items()}
    index = pd.to_datetime(cols["open_time"], unit="ns")
    return pd.DataFrame({"Open": cols["open"], "High": cols["high"], "Low": cols["low"], "Close": cols["close"],
                         "Volume": cols["volume"]}, index=index)


def run_peer(df: pd.DataFrame, cash: float) -> pd.DataFrame:
    close = df["Close"].to_numpy(dtype=float)
    fast, slow = ind.sma(close, N1), ind.sma(close, N2)

    class SmaCross(Strategy):
        def init(self) -> None:
            self.sma1 = self.I(lambda: fast, name="fast")
            self.sma2 = self.I(lambda: slow, name="slow")

        def next(self) -> None:
            if crossover(self.sma1, self.sma2):
                self.position.close()
                self.buy()
            elif crossover(self.sma2, self.sma1):
                self.position.close()
                self.sell()

    bt = Backtest(df, SmaCross, cash=cash, commission=COMMISSION, trade_on_close=False)
    return bt.run()._trades


def run_ours(df: pd.DataFrame, timeframe: str, cash: float, tmp_path: Path):
    t = df.index.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    key = SeriesKey("bybit", "linear", "X", timeframe)
    with MarketData.open(tmp_path / "m.duckdb") as md:
        md.write(key, {"open_time": t, "open": df["Open"].to_numpy(float), "high": df["High"].to_numpy(float),
                       "low": df["Low"].to_numpy(float), "close": df["Close"].to_numpy(float),
                       "volume": df["Volume"].to_numpy(float)})
        config = parse_config({
            "system": "parity", "symbol": "X", "timeframe": timeframe,
            "windows": {"hygiene": {"start": "1990-01-01", "end": "2030-01-01"},
                        "test": {"start": "1990-01-01", "end": "2030-01-01"}},
            "strategy": {"id": "sma_cross", "params": {"fast": N1, "slow": N2, "allow_short": True}},
            "risk": {"sizing": "fixed_fraction", "fraction": 0.9999, "max_leverage": 1},
            "costs": {"taker_fee": COMMISSION, "spread_bps": 0.0, "funding": False},
            "fill": "next_open", "initial_capital": cash,
        })
        start = str(np.datetime64(int(t[0]), "ns"))
        end = str(np.datetime64(int(t[-1]) + tf_ns(timeframe), "ns"))
        return run_replay(config, f"{start}:{end}", md)


def compare(peer: pd.DataFrame, ours) -> int:
    """Assert both engines made the same trades from our first one on; return how many were compared."""
    assert ours.trades, "tradebus made no trades"
    first = np.datetime64(ours.trades[0].entry_time, "ns")
    peer = peer[peer["EntryTime"].to_numpy(dtype="datetime64[ns]") >= first].reset_index(drop=True)
    assert len(peer) == len(ours.trades)
    for i, trade in enumerate(ours.trades):
        row = peer.iloc[i]
        assert np.datetime64(trade.entry_time, "ns") == row["EntryTime"].to_datetime64(), i
        assert np.datetime64(trade.exit_time, "ns") == row["ExitTime"].to_datetime64(), i
        assert trade.side == ("long" if row["Size"] > 0 else "short"), i
        assert trade.entry_price == pytest.approx(row["EntryPrice"], rel=1e-12), i
        assert trade.exit_price == pytest.approx(row["ExitPrice"], rel=1e-12), i
        assert trade.return_pct == pytest.approx(row["ReturnPct"], rel=1e-9, abs=1e-12), i
    return len(peer)


def test_parity_on_goog_daily(tmp_path):
    df = frame_from_backtesting("GOOG")

    compared = compare(run_peer(df, 1e7), run_ours(df, "1d", 1e7, tmp_path))

    assert compared >= 40


def test_parity_on_eurusd_hourly(tmp_path):
    df = frame_from_backtesting("EURUSD")

    compared = compare(run_peer(df, 1e7), run_ours(df, "1h", 1e7, tmp_path))

    assert compared >= 150


def test_parity_on_bybit_btcusdt_5m(tmp_path):
    df = frame_from_shared("BTCUSDT", 20_000)

    compared = compare(run_peer(df, 1e10), run_ours(df, "5m", 1e10, tmp_path))

    assert compared >= 300
