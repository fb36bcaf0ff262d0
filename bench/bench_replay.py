"""Replay throughput: tradebus replay (in-process with the store recording, and over NATS) next to
backtesting.py timed in the same run on the same real data, plus scaling to 1M bars.

Data: the real Bybit BTCUSDT 5m series from ../shared/data (163,212 bars) when present, else a seeded
random walk of the same length. The 1M-bar scaling series is built by chaining the real returns (or the
walk) so prices stay realistic; sma_cross on it makes tens of thousands of trades.
"""

from __future__ import annotations

import gc
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fmt_int, fmt_ratio, fmt_verdict, parser, print_header, print_table, resolve_n  # noqa: E402

from tradebus.configs.schema import parse_config  # noqa: E402
from tradebus.eventstore.store import EventStore  # noqa: E402
from tradebus.replay.backtest import record, run_replay  # noqa: E402
from tradebus.engine.marketdata import MarketData, SeriesKey  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "bybit" / "linear" / "5m" / "BTCUSDT.parquet"
T0 = 1_735_689_600_000_000_000
M5 = 300_000_000_000
KEY = SeriesKey("bybit", "linear", "BTCUSDT", "5m")


def real_or_walk(n: int) -> tuple[dict[str, np.ndarray], str]:
    if SHARED.exists():
        from tradebus.replay.importer import read_file

        cols = read_file(SHARED)
        return {k: v[:n] for k, v in cols.items()}, "real Bybit BTCUSDT 5m"
    return walk(n, np.random.default_rng(1).normal(0, 0.002, n)), "random walk (../shared/data absent)"


def walk(n: int, log_returns: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    close = 90_000 * np.exp(np.cumsum(log_returns[:n]))
    open_ = np.concatenate(([90_000.0], close[:-1]))
    wiggle = np.abs(rng.normal(0, 0.0008, n)) * close
    return {"open_time": T0 + M5 * np.arange(n, dtype=np.int64), "open": open_, "close": close,
            "high": np.maximum(open_, close) + wiggle, "low": np.minimum(open_, close) - wiggle,
            "volume": rng.uniform(10, 200, n), "turnover": np.zeros(n)}


def long_series(n: int, base: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """n bars whose returns cycle through the real ones."""
    r = np.diff(np.log(base["close"]))
    return walk(n, np.resize(r, n))


def config(strategy: str, costs: bool = True, **extra) -> object:
    systems = {
        "sma_cross": {"strategy": {"id": "sma_cross", "params": {"fast": 10, "slow": 30, "allow_short": True}},
                      "risk": {"sizing": "fixed_fraction", "fraction": 0.95}},
        "ema_rsi_atr": {"strategy": {"id": "ema_rsi_atr", "params": {"fast": 20, "slow": 50, "allow_short": True}},
                        "risk": {"sizing": "risk_per_trade", "risk_per_trade": 0.01, "max_leverage": 3,
                                 "stop": {"kind": "atr", "atr_mult": 2.0, "take_profit_rr": 2.0}}},
    }
    return parse_config({"system": f"bench-{strategy}", "symbol": "BTCUSDT", "timeframe": "5m",
                         "windows": {"hygiene": {"start": "2000-01-01", "end": "2100-01-01"},
                                     "test": {"start": "2000-01-01", "end": "2100-01-01"}},
                         "costs": ({"taker_fee": 0.00055, "spread_bps": 1.0, "funding": False} if costs
                                   else {"taker_fee": 0.0, "maker_fee": 0.0, "funding": False}),
                         **systems[strategy], **extra})


def window(cols: dict[str, np.ndarray]) -> str:
    first, last = int(cols["open_time"][0]), int(cols["open_time"][-1]) + M5
    return f"{np.datetime64(first, 'ns')}:{np.datetime64(last, 'ns')}"


def replay_with_store(cfg, md: MarketData, win: str, store_path: Path, **kw) -> tuple[float, object]:
    gc.collect()
    t0 = time.perf_counter()
    result = run_replay(cfg, win, md, **kw)
    with EventStore.open_writer(store_path) as store:
        record(result, store)
    return time.perf_counter() - t0, result


def peer_seconds(cols: dict[str, np.ndarray]) -> tuple[float, int]:
    """backtesting.py, its documented SmaCross (indicators by its own SMA helper), next-open fills, same data."""
    import pandas as pd
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover
    from backtesting.test import SMA

    close = cols["close"]

    class SmaCross(Strategy):
        def init(self) -> None:
            self.a = self.I(SMA, self.data.Close, 10)
            self.b = self.I(SMA, self.data.Close, 30)

        def next(self) -> None:
            if crossover(self.a, self.b):
                self.position.close()
                self.buy()
            elif crossover(self.b, self.a):
                self.position.close()
                self.sell()

    df = pd.DataFrame({"Open": cols["open"], "High": cols["high"], "Low": cols["low"], "Close": close,
                       "Volume": cols["volume"]}, index=pd.to_datetime(cols["open_time"], unit="ns"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        stats = Backtest(df, SmaCross, cash=1e10, commission=0.00055).run()
        return time.perf_counter() - t0, int(stats["# Trades"])


def main() -> None:
    p = parser("replay throughput vs backtesting.py", default_n=163_212, quick_n=30_000)
    p.add_argument("--nats-bars", type=int, default=20_000, help="bars for the NATS run (default 20k)")
    p.add_argument("--scale", type=int, default=1_000_000, help="bars for the scaling run (default 1M)")
    args = p.parse_args()
    n = resolve_n(args)
    scale_n = 200_000 if args.quick else args.scale
    cols, source = real_or_walk(n)
    print_header("bench_replay", f"{len(cols['close']):,} bars of {source}")
    tmp = Path(tempfile.mkdtemp(prefix="tradebus-bench-replay-"))
    rows, verdicts = [], []
    with MarketData.open(tmp / "m.duckdb") as md:
        md.write(KEY, cols)
        win = window(cols)
        peer_s, peer_trades = peer_seconds(cols)
        rows.append(["backtesting.py sma_cross (reference)", fmt_int(len(cols["close"])), f"{peer_s:.2f}",
                     fmt_int(len(cols["close"]) / peer_s), "1.00x", fmt_int(peer_trades)])
        for strat in ("sma_cross", "ema_rsi_atr"):
            run_replay(config(strat), win, md)  # warm: numba compile, caches
            secs, result = replay_with_store(config(strat), md, win, tmp / f"{strat}.sqlite")
            rate = result.bars / secs
            rows.append([f"tradebus {strat}, in-process + store", fmt_int(result.bars), f"{secs:.2f}", fmt_int(rate),
                         fmt_ratio(rate / (len(cols["close"]) / peer_s)), fmt_int(result.metrics["total_trades"])])
            if strat == "sma_cross":
                verdicts.append(("in-process replay >= 200k bars/s", fmt_int(rate), rate >= 200_000))
                ours_trades = result.metrics["total_trades"]
        nats_cols = {k: v[: args.nats_bars] for k, v in cols.items()}
        nats_win = window(nats_cols)
        from tradebus.bus.natsserver import start_server_sync

        server = start_server_sync(tmp / "nats")
        try:
            local = run_replay(config("sma_cross"), nats_win, md)
            secs, over = replay_with_store(config("sma_cross"), md, nats_win, tmp / "nats.sqlite", bus="nats",
                                           nats_url=server.url)
        finally:
            server.stop()
        same = over.events[1:] == local.events[1:] and over.metrics == local.metrics
        rate = over.bars / secs
        rows.append(["tradebus sma_cross over NATS + store", fmt_int(over.bars), f"{secs:.2f}", fmt_int(rate),
                     fmt_ratio(rate / (len(cols["close"]) / peer_s)), fmt_int(over.metrics["total_trades"])])
        verdicts.append(("NATS replay >= 20k bars/s", fmt_int(rate), rate >= 20_000))
        verdicts.append(("NATS results identical to in-process", str(same), same))
    print_table("Replay, sma_cross fast=10 slow=30 and ema_rsi_atr, 5m bars (one timed run each)",
                ["engine", "bars", "seconds", "bars/s", "vs backtesting.py", "trades"], rows)
    print(f"trades: tradebus sma_cross {ours_trades:,} (after warm-up), backtesting.py {peer_trades:,}")

    base, _ = real_or_walk(163_212)
    big = long_series(scale_n, base)
    small = {k: v[: scale_n // 10] for k, v in big.items()}
    scale_rows = []
    rates = {}
    for label, data in (("1/10", small), ("full", big)):
        with MarketData.open(tmp / f"scale-{label.replace('/', '')}.duckdb") as md:
            md.write(KEY, data)
            # No costs here: with fees this strategy bleeds its equity away and stops trading, which
            # would measure an idle engine; the point is the cost of bars and orders.
            secs, result = replay_with_store(config("sma_cross", costs=False), md, window(data),
                                             tmp / f"scale-{label[0]}.sqlite")
            rates[label] = result.bars / secs
            scale_rows.append([label, fmt_int(result.bars), fmt_int(result.metrics["total_trades"]), f"{secs:.2f}",
                               fmt_int(rates[label])])
            del result
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print_table("Scaling: sma_cross, in-process + store", ["series", "bars", "trades", "seconds", "bars/s"], scale_rows)
    drop = rates["full"] / rates["1/10"]
    verdicts.append((f"bars/s at {scale_n:,} within 20% of {scale_n // 10:,}", fmt_ratio(drop), drop >= 0.8))
    verdicts.append((f"peak RSS of this process (incl. {scale_n:,}-bar replay) < 2 GB", f"{rss_mb:,.0f} MB",
                     rss_mb < 2048))
    print_table("Targets", ["target", "result", ""], [[a, b, fmt_verdict(c)] for a, b, c in verdicts])


if __name__ == "__main__":
    main()
