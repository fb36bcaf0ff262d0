"""The replay: determinism, NATS = in-process, accounting identities, no look-ahead, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tradebus.bus import events as ev
from tradebus.components.timeframes import DAY, HOUR, MINUTE
from tradebus.configs.schema import ConfigError, load_config, parse_config
from tradebus.eventstore.store import EventStore
from tradebus.engine import report
from tradebus.replay import checks
from tradebus.replay.backtest import record, run_replay, write_outputs
from tradebus.engine.marketdata import MarketData, SeriesKey
from tradebus.engine.market import MissingDataError

from tradebus.live.fake_bybit import FakeBybit, FakeBybitState
from .proc import run_tradebus
from tradebus.replay.checks import T0, random_walk as synthetic

M5 = 5 * MINUTE
N_BARS = 12 * 24 * 40  # 40 days of 5m bars
KEY = SeriesKey("bybit", "linear", "BTCUSDT", "5m")


def system(**overrides) -> dict:
    base = {
        "system": "t1", "symbol": "BTCUSDT", "timeframe": "5m", "higher_timeframes": ["1h"],
        "windows": {"hygiene": {"start": "2025-01-05", "end": "2025-01-25"},
                    "test": {"start": "2025-01-25", "end": "2025-02-09"}},
        "strategy": {"id": "ema_rsi_atr", "params": {"fast": 10, "slow": 30, "allow_short": True}},
        "risk": {"sizing": "risk_per_trade", "risk_per_trade": 0.01, "max_leverage": 3,
                 "stop": {"kind": "atr", "atr_period": 14, "atr_mult": 2.0, "take_profit_rr": 2.0}},
        "costs": {"taker_fee": 0.00055, "maker_fee": 0.0002, "spread_bps": 2.0,
                  "slippage": {"model": "fixed_bps", "bps": 1.0}, "funding": True},
        "initial_capital": 10_000,
    }
    base.update(overrides)
    return base


@pytest.fixture
def md(tmp_path):
    cols = synthetic(N_BARS, seed=7)
    funding_t = np.arange(T0, T0 + N_BARS * M5, 8 * HOUR, dtype=np.int64)
    with MarketData.open(tmp_path / "m.duckdb") as m:
        m.write(KEY, cols)
        m.write(SeriesKey("bybit", "linear", "BTCUSDT", "-", "funding"),
                {"open_time": funding_t, "rate": np.where(np.arange(len(funding_t)) % 3 == 0, -1e-4, 1.5e-4)})
        yield m


def test_replay_trades_and_charges_funding(md):
    result = run_replay(parse_config(system()), "hygiene", md)

    assert result.metrics["total_trades"] > 10
    assert result.metrics["funding_paid"] != 0
    types = {type(e) for e in result.events}
    assert {ev.Signal, ev.OrderIntent, ev.OrderAccepted, ev.Fill, ev.PositionChanged, ev.AccountState,
            ev.FundingPaid, ev.RunStarted, ev.RunFinished} <= types
    intents = [e for e in result.events if isinstance(e, ev.OrderIntent)]
    assert {i.label for i in intents} >= {"entry", "sl", "tp"}


def test_equity_identity_holds_at_every_bar(md):
    result = run_replay(parse_config(system()), "hygiene", md)
    close, balance, equity, qty, unreal, realized, fees, funding = result.curve.T

    np.testing.assert_allclose(equity, 10_000 + realized + unreal - fees - funding, rtol=0, atol=1e-6)
    np.testing.assert_allclose(balance, 10_000 + realized - fees - funding, rtol=0, atol=1e-6)
    # The trade ledger accounts for every realised dollar, fee and funding payment.
    ledger = sum(t.pnl for t in result.trades) + sum(t.pnl for t in result.open_trades)
    assert ledger == pytest.approx(realized[-1] - fees[-1] - funding[-1], rel=1e-9, abs=1e-6)


def test_rerun_gives_byte_identical_artifacts(md, tmp_path):
    config = parse_config(system())
    for name in ("a", "b"):
        write_outputs(run_replay(config, "hygiene", md), tmp_path / name, events_jsonl=True)

    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == ["account_curve.csv", "equity.csv", "events.jsonl", report.PLOTLY_JS, "report.html", "result.json",
                     "run_manifest.json", "trades.csv"]  # plotly.js beside the report: no `runs` folder above
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_nats_replay_equals_in_process(md, nats_server):
    config = parse_config(system())

    local = run_replay(config, "hygiene", md, bus="local", keep_market_data=True)
    over_nats = run_replay(config, "hygiene", md, bus="nats", nats_url=nats_server.url, keep_market_data=True)

    assert over_nats.events[1:] == local.events[1:]  # same events, same ids, same order
    started_nats, started_local = over_nats.events[0], local.events[0]
    assert (started_nats.manifest["bus"], started_local.manifest["bus"]) == ("nats", "local")
    assert {**started_nats.manifest, "bus": "-"} == {**started_local.manifest, "bus": "-"}
    np.testing.assert_array_equal(over_nats.curve, local.curve)
    assert over_nats.metrics == local.metrics


def test_the_store_keeps_a_run_once(md, tmp_path):
    result = run_replay(parse_config(system()), "hygiene", md)
    with EventStore.open_writer(tmp_path / "e.sqlite") as store:
        first = record(result, store)
        second = record(result, store)
        stored = [r.event for r in store.read(run=result.run)]

    assert first == len(result.events) and second == 0
    assert stored == result.events


@pytest.mark.parametrize("fill", ["on_close", "next_open"])
def test_decisions_never_see_the_future(tmp_path, fill):
    """Change every bar after t; nothing decided at or before t may change."""
    cols = synthetic(N_BARS, seed=11)
    t_cut = T0 + 20 * DAY
    after = cols["open_time"] >= t_cut
    changed = {k: v.copy() for k, v in cols.items()}
    for k in ("open", "high", "low", "close"):
        changed[k][after] *= 1.37
    changed["volume"][after] *= 3
    config = parse_config(system(fill=fill))
    runs = []
    for i, data in enumerate((cols, changed)):
        with MarketData.open(tmp_path / f"m{i}.duckdb") as m:
            m.write(KEY, data)
            runs.append(run_replay(config, "hygiene", m))

    # A decision at the close of bar t has ts_init <= t_cut; ids (from the run id, which hashes the data)
    # are blanked, everything else compared.
    before_a, before_b = checks.decided_before(runs[0], t_cut), checks.decided_before(runs[1], t_cut)
    assert len(before_a) > 50
    assert [(type(e), e.ts_event) for e in before_a] == [(type(e), e.ts_event) for e in before_b]
    assert before_a == before_b
    assert runs[0].metrics != runs[1].metrics  # the future did change the rest


def test_missing_data_names_the_command_that_fills_it(tmp_path):
    config = parse_config(system())
    with MarketData.open(tmp_path / "m.duckdb") as m:
        with pytest.raises(MissingDataError, match="tradebus data fetch --symbol BTCUSDT --timeframe 5m"):
            run_replay(config, "hygiene", m)


def test_bad_config_names_file_field_value_and_allowed(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("system: x\nsymbol: BTCUSDT\ntimeframe: 7m\nfill: tomorrow\nwindows: {}\n"
                    "strategy: {id: sma_cross, params: {fast: 40, slow: 20}}\n")

    with pytest.raises(ConfigError) as info:
        load_config(path)

    text = str(info.value)
    assert "bad.yaml: timeframe" in text and "'7m'" in text and "5m" in text
    assert "bad.yaml: fill" in text and "'tomorrow'" in text and "next_open" in text


def test_bad_strategy_params_are_reported_under_their_path(tmp_path):
    path = tmp_path / "bad.yaml"
    data = system(strategy={"id": "sma_cross", "params": {"fast": 40, "slow": 20, "speed": 3}})
    path.write_text(json.dumps(data))

    with pytest.raises(ConfigError) as info:
        load_config(path)

    assert str(info.value) == f"{path}: strategy.params.speed: Extra inputs are not permitted; got 3"


def test_every_example_config_is_valid():
    from pathlib import Path

    import tradebus

    examples = sorted((Path(tradebus.__file__).parent / "configs" / "examples").glob("*.yaml"))
    assert len(examples) >= 7
    for path in examples:
        assert load_config(path).system


def test_replay_command_fetches_with_consent_and_writes_everything(tmp_path):
    cols = synthetic(N_BARS, seed=5)
    server = FakeBybit.start(FakeBybitState(now_ms=int((cols["open_time"][-1] + 10 * MINUTE) // 1_000_000),
                                            candles={("BTCUSDT", "5m"): cols}))
    config = tmp_path / "sys.yaml"
    config.write_text(json.dumps(system(costs={"taker_fee": 0.00055, "funding": False})))
    env = {"TRADEBUS_HOME": str(tmp_path / "home"), "TRADEBUS_BYBIT_ENDPOINT": server.url}
    try:
        refused = run_tradebus("replay", str(config), "--out", str(tmp_path / "out"), env=env)
        first = run_tradebus("replay", str(config), "--out", str(tmp_path / "out"), "--fetch", env=env)
        again = run_tradebus("replay", str(config), "--out", str(tmp_path / "out"), env=env)
    finally:
        server.stop()

    assert refused.returncode == 1 and "tradebus data fetch" in refused.stderr and "--fetch" in refused.stderr
    assert first.returncode == 0, first.stderr
    for name in ("result.json", "trades.csv", "equity.csv", "account_curve.csv", "run_manifest.json", "report.html"):
        assert (tmp_path / "out" / name).stat().st_size > 0, name
    assert "events appended to the store" in first.stdout
    assert again.returncode == 0 and "already in the store" in again.stdout
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["metrics"]["total_trades"] > 0


def test_training_rows_hold_snapshot_features_and_forward_targets(md, tmp_path):
    import pyarrow.parquet as pq

    result = run_replay(parse_config(system()), "hygiene", md, keep_market_data=True)
    write_outputs(result, tmp_path / "out", log_features=6)

    rows = pq.read_table(tmp_path / "out" / "training_rows.parquet").to_pydict()
    snapshots = [e for e in result.events if isinstance(e, ev.Snapshot)]
    assert len(rows["time"]) == len(snapshots) == result.bars
    for i in (0, 100, len(snapshots) - 1):  # the row's features are exactly what the strategy saw
        snap = snapshots[i]
        assert rows["time"][i].value == snap.ts_event
        assert rows["f.ema_10"][i] == snap.features["ema_10"]
        assert rows["f.1h.adx_14"][i] == snap.htf["1h"]["adx_14"]  # warm-up covers the 1h ADX: never NaN
    close = result.curve[:, 0]
    i = 50
    assert rows["target_return_6"][i] == pytest.approx(close[i + 6] / close[i] - 1)
    expected_vol = np.sqrt(np.sum(np.diff(np.log(close[i : i + 7])) ** 2))
    assert rows["target_vol_6"][i] == pytest.approx(expected_vol)
    worst, net = close[i + 1 : i + 7].min() / close[i] - 1, np.log(close[i + 6] / close[i])
    direct = "crash" if worst <= -0.05 else "trend_up" if net >= expected_vol else "trend_down" if net <= -expected_vol else "chop"
    assert rows["target_regime_6"][i] == direct
    assert set(rows["target_regime_6"][:-6]) <= {"crash", "trend_up", "trend_down", "chop"}
    assert rows["target_regime_6"][-6:] == [""] * 6 and all(np.isnan(rows["target_return_6"][-6:]))
    assert rows["position_side"][i] == int(np.sign(result.curve[i, 3]))


def test_equity_equals_an_independent_cash_flow_ledger(md):
    """Recompute equity without average prices: cash from every fill and funding payment, plus the
    position marked at each close. It must match the portfolio's curve at every bar."""
    result = run_replay(parse_config(system()), "hygiene", md)
    steps = result.times
    cash_at, qty_at = np.zeros(len(steps)), np.zeros(len(steps))
    cash, qty = 10_000.0, 0.0
    flows = [e for e in result.events if isinstance(e, (ev.Fill, ev.FundingPaid))]
    j = 0
    for i, t in enumerate(steps):
        while j < len(flows) and flows[j].ts_init <= t:
            e = flows[j]
            if isinstance(e, ev.Fill):
                signed = e.qty if e.side == "buy" else -e.qty
                cash -= signed * e.price + e.fee
                qty += signed
            else:
                cash -= e.amount
            j += 1
        cash_at[i], qty_at[i] = cash, qty

    equity = cash_at + qty_at * result.curve[:, 0]

    assert len(flows) > 100
    np.testing.assert_allclose(result.curve[:, 2], equity, rtol=0, atol=1e-6 * 10_000)
    np.testing.assert_allclose(result.curve[:, 3], qty_at, rtol=0, atol=1e-9)


def test_replay_command_over_an_embedded_nats_matches_in_process(md, tmp_path):
    config = tmp_path / "sys.yaml"
    config.write_text(json.dumps(system()))
    env = {"TRADEBUS_HOME": str(tmp_path / "home")}
    db = str(tmp_path / "m.duckdb")
    md.close()  # the command opens the market data itself

    local = run_tradebus("replay", str(config), "--db", db, "--out", str(tmp_path / "a"), "--no-store", env=env)
    nats = run_tradebus("replay", str(config), "--db", db, "--out", str(tmp_path / "b"), "--no-store",
                        "--bus", "nats", env=env)

    assert local.returncode == 0 and nats.returncode == 0, nats.stderr
    assert "bus nats" in nats.stdout
    for name in ("trades.csv", "equity.csv", "account_curve.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    a, b = (json.loads((tmp_path / d / "result.json").read_text()) for d in "ab")
    assert a == b


def test_the_publisher_merges_timeframes_in_time_order(md):
    from tradebus.engine.market import load_market
    from tradebus.replay.runner import bar_steps

    config = parse_config(system(higher_timeframes=["15m", "1h"]))
    m = load_market(config, "hygiene", md)

    steps = list(bar_steps(config, m, "r"))

    closes = [ts for ts, _ in steps]
    assert closes == sorted(closes) and len(set(closes)) == len(closes)
    assert all(bar.ts_event == ts for ts, bars in steps for bar in bars)
    on_the_hour = [bars for ts, bars in steps if ts % HOUR == 0]
    assert on_the_hour and all([b.timeframe for b in bars] == ["5m", "15m", "1h"] for bars in on_the_hour)
    assert sum(len(bars) for _, bars in steps) == len(steps) + len(steps) // 3 + len(steps) // 12
    ids = [b.id for _, bars in steps for b in bars if b.timeframe == "1h"]
    assert ids == sorted(ids)
    assert steps[0][1][0].open_time == m.start  # warm-up bars are never published


def test_replay_applies_the_guard_caps_of_a_limits_file_as_events(md):
    """The guard stands between risk and the simulated exchange as it does before Bybit: an entry over
    the notional cap is refused as an event, and a drawdown past the cap halts the system for the rest of
    the run (resting protection cancelled, nothing traded after)."""
    from tradebus.configs.limits import Limits

    config = parse_config(system())
    free = run_replay(config, "hygiene", md)
    entries = [e for e in free.events if isinstance(e, ev.OrderIntent) and e.label == "entry"]
    close_at = dict(zip(free.times.tolist(), free.curve[:, 0].tolist()))
    notional = [e.qty * close_at[e.ts_event] for e in entries]
    assert len(entries) > 10 and min(notional) < max(notional)

    cap = float(np.median(notional))  # about half the entries are above it
    capped = run_replay(config, "hygiene", md, limits=Limits.model_validate(
        {"systems": {"t1": {"max_position_notional": cap}}}))
    refused = [e for e in capped.events if isinstance(e, ev.OrderRejected) and e.code == "risk"]
    assert refused and all("position notional" in e.reason for e in refused)
    assert capped.run != free.run, "caps are part of what a run is"
    assert capped.manifest["limits"]["systems"]["t1"]["max_position_notional"] == cap
    fills = {e.order_id for e in capped.events if isinstance(e, ev.Fill)}
    assert not fills & {e.order_id for e in refused}, "a refused order never fills"

    halted = run_replay(config, "hygiene", md, limits=Limits.model_validate({"systems": {"t1": {"max_drawdown": 0.01}}}))
    states = [e for e in halted.events if isinstance(e, ev.RiskStateChanged)]
    assert states and states[0].state == "halted" and "drawdown" in states[0].reason
    after = [e for e in halted.events if isinstance(e, ev.Fill) and e.ts_event > states[0].ts_event]
    assert not after, "nothing fills after the halt"
    assert halted.metrics["total_trades"] < free.metrics["total_trades"]


def test_monthly_returns_chain_month_end_equities():
    times = np.array(["2025-01-01", "2025-01-31", "2025-02-15", "2025-02-28", "2025-04-02"], dtype="datetime64[ns]")
    equity = np.array([100.0, 110.0, 99.0, 121.0, 60.5])

    years, table = report.monthly_returns(times.astype(np.int64), equity)

    assert years == [2025]
    np.testing.assert_allclose(table[0, [0, 1, 3]], [0.10, 0.10, -0.5])  # 100 -> 110 -> 121 -> 60.5
    assert np.isnan(table[0, 2]) and np.isnan(table[0, 4:]).all()  # no bar in March, nor after April


def test_a_report_of_84k_bars_and_thousands_of_trades_stays_under_a_megabyte(tmp_path):
    from tradebus.engine.trades import Trade

    n = 84_384
    times = T0 + np.arange(n, dtype=np.int64) * 300 * 10**9
    close = 100 * np.exp(np.cumsum(np.random.default_rng(3).normal(0, 0.002, n)))
    curve = np.zeros((n, 8))
    curve[:, 0], curve[:, 2] = close, 10_000 * close / close[0]
    trades = [Trade("BTCUSDT", "long" if i % 2 else "short", int(times[24 * i]), float(close[24 * i]), 0.1,
                    int(times[24 * i + 12]), float(close[24 * i + 12]), bars_held=12) for i in range(3_457)]
    page = tmp_path / "runs" / "sys" / "test" / "report.html"
    other = tmp_path / "runs" / "sys" / "hygiene" / "report.html"
    for folder in (page.parent, other.parent):
        folder.mkdir(parents=True)

    ohlc = {"open": close * 0.999, "high": close * 1.002, "low": close * 0.997, "close": close}
    overlays = {"sma_10": close * 1.001, "sma_30": close * 0.999}
    report.render(page, "t", "s", times, curve, trades, {"return_pct": 0.1}, config_yaml="system: x\n", ohlc=ohlc,
                  overlays=overlays)
    asset = tmp_path / "runs" / report.PLOTLY_JS
    first = asset.stat().st_mtime_ns
    report.render(other, "t", "s", times[:1000], curve[:1000], trades[:5], {})

    text = page.read_text()
    assert page.stat().st_size < 1_000_000, page.stat().st_size
    assert f'<script src="../../{report.PLOTLY_JS}">' in text and asset.stat().st_mtime_ns == first
    assert "buy and hold" in text and "Monthly returns" in text and "Trades (3,457)" in text and "system: x" in text
    assert '"type":"candlestick"' in text and '"name":"sma_30"' in text  # shown once zoomed in
    assert not list((tmp_path / "runs" / "sys").rglob("plotly*.js"))  # once, beside the reports


def test_report_candles_merge_bars_as_a_coarser_timeframe_would():
    """The price panel's candles at its resolution are the bars resampled by the engine's own resampler."""
    from tradebus.engine.resample import resample

    cols = synthetic(12 * 24 * 3, seed=5)
    times, got = report.candles(cols["open_time"], cols, 12)  # 12 x 5m = 1h
    hourly = resample(cols, "5m", "1h")
    assert np.array_equal(times, hourly["open_time"])
    for k in ("open", "high", "low", "close"):
        assert np.allclose(got[k], hourly[k]), k


def test_compare_two_runs_side_by_side_and_refuse_a_folder_that_is_not_one(md, tmp_path):
    for name, fast in (("a", 5), ("b", 10)):
        config = parse_config(system(strategy={"id": "sma_cross", "params": {"fast": fast, "slow": 20}}))
        write_outputs(run_replay(config, "hygiene", md), tmp_path / "runs" / name)
    page = tmp_path / "cmp.html"

    done = run_tradebus("compare", str(tmp_path / "runs" / "a"), str(tmp_path / "runs" / "b"), "--out", str(page))
    bad = run_tradebus("compare", str(tmp_path / "runs" / "a"), str(tmp_path))

    assert done.returncode == 0, done.stderr
    a, b = (json.loads((tmp_path / "runs" / n / "result.json").read_text())["metrics"] for n in "ab")
    assert f"{a['total_trades']:,}" in done.stdout and f"{b['total_trades'] - a['total_trades']:+,}" in done.stdout
    assert page.stat().st_size > 10_000 and "different dates" not in page.read_text()
    assert bad.returncode == 1 and "result.json: not found" in bad.stderr and "Traceback" not in bad.stderr
