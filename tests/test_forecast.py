"""The forecasting layer: targets against an independent SQL reference, no look-ahead in datasets, purged
folds, deterministic training, the registry (round trip, promotion stack, expiry), the commands end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tradebus import duck
from tradebus.components import forecast
from tradebus.components.timeframes import HOUR
from tradebus.configs.forecast import ModelSpec
from tradebus.configs.schema import ConfigError, parse_model
from tradebus.engine import models
from tradebus.factory import datasets, forecasting
from tradebus.replay.checks import T0

from .forecastkit import INPUTS, spec, train_and_promote, walk
from .proc import run_tradebus


def test_forward_targets_equal_a_duckdb_window_function_reference():
    c = walk(600)
    h = 12

    ret, vol, regime = forecast.forward_targets(c["close"], h, 0.05)

    con = duck.connect()
    con.execute("CREATE TABLE b AS SELECT * FROM (SELECT unnest(?) AS close, generate_subscripts(?, 1) AS i)",
                [c["close"].tolist(), c["close"].tolist()])
    rows = con.execute(f"""
        WITH r AS (SELECT i, close, ln(close / lag(close) OVER w) AS lr FROM b WINDOW w AS (ORDER BY i))
        SELECT i, lead(close, {h}) OVER f / close - 1,
               sqrt(sum(lr * lr) OVER (ORDER BY i ROWS BETWEEN 1 FOLLOWING AND {h} FOLLOWING)),
               min(close) OVER (ORDER BY i ROWS BETWEEN 1 FOLLOWING AND {h} FOLLOWING) / close - 1,
               ln(lead(close, {h}) OVER f / close)
        FROM r WINDOW f AS (ORDER BY i) ORDER BY i""").fetchall()
    ref = np.array([[np.nan if v is None else v for v in row[1:]] for row in rows], dtype=np.float64)
    n = len(c["close"]) - h
    np.testing.assert_allclose(ret[:n], ref[:n, 0], rtol=1e-12)
    np.testing.assert_allclose(vol[:n], ref[:n, 1], rtol=1e-9)
    worst, net, rv = ref[:n, 2], ref[:n, 3], ref[:n, 1]
    want = np.where(worst <= -0.05, 3, np.where(net >= rv, 0, np.where(net <= -rv, 1, 2)))
    np.testing.assert_array_equal(regime[:n], want)
    assert np.isnan(ret[n:]).all() and (regime[n:] == -1).all()
    assert len(set(regime[:n].tolist())) >= 3, "the walk must produce several regimes"


@pytest.mark.parametrize("cut", [900, 1500])
def test_changing_bars_after_t_changes_no_input_at_or_before_t(cut):
    s = spec(timeframe="1h", inputs=[*INPUTS, "4h:ret_6", "4h:ema_20", "bb_20", "dc_48", "macd", "relvol_24", "di_14"])
    base = walk(2_000)
    future = {k: v.copy() for k, v in base.items()}
    rng = np.random.default_rng(cut)
    scale = rng.uniform(0.8, 1.25, len(base["close"]) - cut - 1)
    for k in ("open", "high", "low", "close"):
        future[k][cut + 1:] *= scale
    future["volume"][cut + 1:] *= rng.uniform(0.2, 5, len(scale))

    a, b = (datasets.symbol_table(s, "BTCUSDT", cols) for cols in (base, future))

    t_cut = int(base["open_time"][cut]) + HOUR
    times = a.column("time").to_numpy().astype("datetime64[ns]").astype(np.int64)
    upto = times <= t_cut
    xs = [n for n in a.column_names if n.startswith("x.")]
    for name in xs:
        np.testing.assert_array_equal(a.column(name).to_numpy()[upto], b.column(name).to_numpy()[upto], err_msg=name)
    assert any(not np.array_equal(a.column(n).to_numpy()[~upto], b.column(n).to_numpy()[~upto], equal_nan=True)
               for n in xs), "the change reached the future"
    # Targets read the future: a row within H bars before the cut sees the change.
    tr_a, tr_b = a.column("target_return").to_numpy(), b.column("target_return").to_numpy()
    near = upto & (times > t_cut - 12 * HOUR)
    assert not np.allclose(tr_a[near], tr_b[near])


def test_an_input_cannot_name_a_target_or_an_unknown_kind():
    for bad in ("target_return", "x.ret_1", "ret", "hour_3", "4h:hour", "ret_0", "foo_12"):
        with pytest.raises(ValueError, match="allowed"):
            forecast.parse_input(bad)
    with pytest.raises(ConfigError, match="embargo 6 is shorter than the horizon 12"):
        parse_model(ModelSpec, {"model": "m", "symbols": ["BTCUSDT"], "timeframe": "1h", "horizon": 12,
                                "walk_forward": {"embargo": 6}}, "m.yaml", "a forecast model file")


def test_walk_forward_folds_are_purged_and_embargoed():
    s = spec(timeframe="1h", walk_forward={"folds": 4, "embargo": 24, "test_fraction": 0.5})
    times = T0 + np.arange(5_000) * HOUR

    folds = forecasting.make_folds(times, s)

    assert len(folds) == 4
    for f in folds:
        train_last = times[times < f.train_end].max()
        assert train_last + s.horizon * HOUR < f.test_start, "a training target reaches the test block"
        assert f.test_start - train_last > s.embargo * HOUR - HOUR
    assert [f.test_end for f in folds[:-1]] == [f.test_start for f in folds[1:]]


def test_training_is_deterministic_and_the_registry_round_trips(tmp_path):
    s = spec(timeframe="1h")
    cols = walk(3_000)
    table = datasets.symbol_table(s, "BTCUSDT", cols)
    rows = forecasting.Rows.of(table, s.inputs)

    a = forecasting.final_model(s, rows, datasets.content_id(table))
    b = forecasting.final_model(s, rows, datasets.content_id(table))

    assert a.boosters == b.boosters and a.version == b.version and a.vol_scale == b.vol_scale
    version = train_and_promote(tmp_path, cols, s)
    loaded = models.load(tmp_path, s.model)
    assert loaded.version == version == a.version
    for x, y in zip(loaded.predict(rows.x[:500]), a.predict(rows.x[:500])):
        np.testing.assert_array_equal(x, y)
    ret, vol, probs = loaded.predict(rows.x[:500])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-12)
    assert (vol > 0).all()


def test_promotions_stack_and_rollback_returns_to_the_one_before(tmp_path):
    cols = walk(2_500)
    versions = [train_and_promote(tmp_path, cols, spec(timeframe="1h", lightgbm={"rounds": r, "min_data_in_leaf": 50}))
                for r in (5, 6, 7)]
    assert len(set(versions)) == 3 and models.promoted(tmp_path, "test_fc") == versions[2]

    models.rollback(tmp_path, "test_fc")
    assert models.promoted(tmp_path, "test_fc") == versions[1]
    models.rollback(tmp_path, "test_fc")
    assert models.promoted(tmp_path, "test_fc") == versions[0]
    with pytest.raises(models.RegistryError, match="first version promoted"):
        models.rollback(tmp_path, "test_fc")
    with pytest.raises(models.RegistryError, match="already the promoted"):
        models.promote(tmp_path, "test_fc", versions[0])
    with pytest.raises(models.RegistryError, match="no version 'nope'"):
        models.promote(tmp_path, "test_fc", "nope")
    assert [h["action"] for h in models.history(tmp_path, "test_fc")] == ["promote"] * 3 + ["rollback"] * 2


def test_a_model_refuses_bars_in_its_training_data_and_past_its_expiry(tmp_path):
    s = spec(timeframe="1h", valid_for_days=10)
    cols = walk(2_000)
    train_and_promote(tmp_path, cols, s)
    m = models.load(tmp_path, s.model)
    last_close = int(cols["open_time"][-1]) + HOUR

    assert "in sample" in m.covers(last_close)
    assert m.covers(last_close + HOUR) == ""
    assert "expired" in m.covers(last_close + 10 * 24 * HOUR + HOUR)


def test_the_forecaster_scores_each_forecast_h_bars_later_with_the_targets_rule(tmp_path):
    from tradebus.bus import events as ev
    from tradebus.components.base import SimClock, Stamper
    from tradebus.engine.snapshot import MarketFeatures

    s = spec(timeframe="1h")
    cols = walk(2_600)
    train_and_promote(tmp_path, {k: v[:2_000] for k, v in cols.items()}, s)
    model = models.load(tmp_path, s.model)
    own, higher = forecast.input_features(model.parsed_inputs())
    feats = MarketFeatures("1h", own, higher)
    feats.update({k: v[:2_000] for k, v in cols.items()})
    fc = forecast.Forecaster(Stamper(SimClock(), "s"), model, "bybit", "BTCUSDT", {})
    out = []
    for i in range(2_000, 2_100):
        one = {k: v[i:i + 1] for k, v in cols.items()}
        row, _ = feats.update(one)
        bar = ev.BarClosed(id=f"b{i}", ts_event=int(cols["open_time"][i]) + HOUR, ts_init=0, venue="bybit",
                           market="linear", symbol="BTCUSDT", timeframe="1h", open_time=int(cols["open_time"][i]),
                           open=float(cols["open"][i]), high=float(cols["high"][i]), low=float(cols["low"][i]),
                           close=float(cols["close"][i]), volume=float(cols["volume"][i]))
        snap = ev.Snapshot(id=f"s{i}", ts_event=bar.ts_event, ts_init=0, bar=bar,
                           features=dict(zip(row.names, row.values[0].tolist())))
        out += fc.on_event(snap)
    forecasts = [e for e in out if isinstance(e, ev.Forecast)]
    scored = [e for e in out if isinstance(e, ev.ForecastScored)]

    assert len(forecasts) == 100 and len(scored) == 100 - 12
    ret, vol, regime = forecast.forward_targets(cols["close"][2_000:2_100], 12)
    for k, sc in enumerate(scored):
        assert sc.cause == forecasts[k].id and sc.ts_event == forecasts[k + 12].ts_event
        assert sc.realised_return == pytest.approx(ret[k], rel=1e-12)
        assert sc.realised_vol == pytest.approx(vol[k], rel=1e-9)
        assert sc.realised_regime == forecast.REGIMES[regime[k]]
        p = np.array(sc.regime_probs)
        assert sc.brier == pytest.approx(((p - np.eye(4)[regime[k]]) ** 2).sum())


def _import(home: Path, tmp_path: Path, symbols: list[str], n: int = 4_000) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for i, sym in enumerate(symbols):
        c = walk(n, seed=i + 1)
        t = pa.table({"open_time": pa.array(c["open_time"], type=pa.timestamp("ns", tz="UTC")),
                      **{k: c[k] for k in ("open", "high", "low", "close", "volume")}})
        pq.write_table(t, tmp_path / f"{sym}.parquet")
    r = run_tradebus("data", "import", *(str(tmp_path / f"{s}.parquet") for s in symbols),
                     env={"TRADEBUS_HOME": str(home)})
    assert r.returncode == 0, r.stderr


def test_dataset_train_list_show_promote_rollback_end_to_end(tmp_path):
    home = tmp_path / "home"
    _import(home, tmp_path, ["BTCUSDT", "ETHUSDT"])
    model = tmp_path / "m.yaml"
    model.write_text("model: walk_1h\nsymbols: [BTCUSDT, ETHUSDT]\ntimeframe: 1h\nhorizon: 12\n"
                     "lightgbm: {rounds: 30, min_data_in_leaf: 50}\nwalk_forward: {folds: 3}\n")
    env = {"TRADEBUS_HOME": str(home)}

    d1 = run_tradebus("dataset", "market", str(model), env=env, cwd=tmp_path)
    d2 = run_tradebus("dataset", "market", str(model), env=env, cwd=tmp_path)
    train = run_tradebus("forecast", "train", str(model), env=env, cwd=tmp_path, timeout=180)

    assert d1.returncode == 0 and d2.returncode == 0, d1.stderr
    assert d1.stdout.split()[1] == d2.stdout.split()[1], "the same content has the same id"
    assert len(list((home / "datasets" / "market").glob("*.parquet"))) == 1
    assert train.returncode == 0, train.stderr
    assert "volatility: QLIKE" in train.stdout and "regime: Brier skill" in train.stdout
    version = train.stdout.split("version ")[1].split()[0]
    evaluation = json.loads((tmp_path / "runs" / "forecast-walk_1h" / "evaluation.json").read_text())
    pooled = evaluation["walk_forward"]["pooled"]
    assert set(pooled["vol"]) == {"model", "ewma", "garch", "har"}
    assert set(pooled["regime"]) == {"model", "base_rate", "persistence"}
    assert (tmp_path / "runs" / "forecast-walk_1h" / "report.html").stat().st_size > 10_000
    assert run_tradebus("forecast", "promote", "walk_1h", version, env=env).returncode == 0
    listed = json.loads(run_tradebus("forecast", "list", "--json", env=env).stdout)
    assert listed == [{**listed[0], "model": "walk_1h", "version": version, "promoted": True}]
    shown = run_tradebus("forecast", "show", "walk_1h", env=env)
    assert version in shown.stdout and "promote" in shown.stdout
    back = run_tradebus("forecast", "rollback", "walk_1h", env=env)
    assert back.returncode == 1 and "first version promoted" in back.stderr and "Traceback" not in back.stderr


@pytest.mark.parametrize("text,says", [
    ("model: m\nsymbols: [BTCUSDT]\ntimeframe: 1h\nhorizon: 12\ninputs: [ret_1, target_return]\n",
     "inputs.1: input 'target_return'"),
    ("model: m\nsymbols: [BTCUSDT]\ntimeframe: 7h\nhorizon: 12\n", "timeframe: timeframe '7h'"),
    ("model: m\nsymbols: [BTCUSDT]\ntimeframe: 1h\nhorizon: 0\n", "horizon"),
    ("model: m\nsymbols: [BTCUSDT]\ntimeframe: 1h\nhorizon: 12\nlightgbm: {rounds: 10, leaves: 3}\n", "leaves"),
])
def test_a_bad_model_file_is_one_clear_error_and_writes_nothing(tmp_path, text, says):
    home = tmp_path / "home"
    model = tmp_path / "m.yaml"
    model.write_text(text)

    r = run_tradebus("forecast", "train", str(model), env={"TRADEBUS_HOME": str(home)}, cwd=tmp_path)

    assert r.returncode == 1 and says in r.stderr and "m.yaml" in r.stderr and "Traceback" not in r.stderr
    assert not (home / "models").exists() and not (tmp_path / "runs").exists()


def test_a_model_without_stored_candles_names_the_fill_command(tmp_path):
    home = tmp_path / "home"
    _import(home, tmp_path, ["BTCUSDT"], n=500)
    model = tmp_path / "m.yaml"
    model.write_text("model: m\nsymbols: [BTCUSDT, SOLUSDT]\ntimeframe: 1h\nhorizon: 12\n")

    r = run_tradebus("dataset", "market", str(model), env={"TRADEBUS_HOME": str(home)})

    assert r.returncode == 1 and "SOLUSDT 1h: 0 bars stored" in r.stderr and "tradebus data fetch" in r.stderr
    assert not (home / "datasets").exists()


def test_timeframes_of_the_model_must_match_the_system(tmp_path, monkeypatch):
    from tradebus.configs.schema import parse_config
    from tradebus.engine.wiring import ModelRefused, features_for

    monkeypatch.setenv("TRADEBUS_HOME", str(tmp_path))
    train_and_promote(tmp_path, walk(2_000), spec(timeframe="1h"))
    config = parse_config({"system": "s", "symbol": "BTCUSDT", "timeframe": "5m", "forecaster": {"id": "test_fc"},
                           "windows": {"hygiene": {"preset": "first_70pct"}, "test": {"preset": "last_30pct"}},
                           "strategy": {"id": "sma_cross", "params": {"fast": 5, "slow": 20}}})

    with pytest.raises(ModelRefused, match="forecasts 1h bars; the system trades 5m"):
        features_for(config)


def _fc(regime: str = "chop", confidence: float = 0.5, vol: float = 0.02):
    from tradebus.bus import events as ev

    return ev.Forecast(id="f", ts_event=1, ts_init=1, model_id="m", model_version="v", symbol="BTCUSDT",
                       timeframe="1h", horizon_bars=12, expected_return=0.0, expected_vol=vol, regime=regime,
                       confidence=confidence)


def test_the_policy_nets_the_regimes_members_and_scales_by_volatility():
    from tradebus.components.policy import PolicySpec, decide
    from tradebus.components.strategies import FLAT, LONG, SHORT

    p = PolicySpec(id="p", min_confidence=0.2, agreement=0.5, vol_target=0.01, min_scale=0.25,
                   regimes={"trend_up": {"a": 2.0, "b": 1.0}, "chop": {"c": 1.0}, "crash": {}})
    pos = {"a": 1, "b": -1, "c": -1}

    up = decide(p, _fc("trend_up", vol=0.02), pos)
    assert up.exposure == pytest.approx(1 / 3) and up.direction == FLAT  # 2 - 1 over 3: below the agreement
    assert decide(p, _fc("trend_up"), {**pos, "b": 1}).direction == LONG
    chop = decide(p, _fc("chop", vol=0.02), pos)
    assert chop.direction == SHORT and chop.scale == pytest.approx(0.5) and chop.weights == {"c": 1.0}
    assert decide(p, _fc("chop", vol=0.001), pos).scale == 1.0 and decide(p, _fc("chop", vol=1.0), pos).scale == 0.25
    assert decide(p, _fc("crash"), pos).reason == "no member trades in crash"
    assert decide(p, _fc("chop", confidence=0.1), pos).direction == FLAT
    assert "no forecast" in decide(p, None, pos).reason
    # A regime the policy leaves out counts every member with weight 1.
    assert decide(p, _fc("trend_down"), {"a": -1, "b": -1, "c": 1}).exposure == pytest.approx(-1 / 3)


@pytest.mark.parametrize("change,says", [
    ({"policy": None}, "needs a forecaster and a policy"),
    ({"forecaster": None}, "needs a forecaster and a policy"),
    ({"strategy": {"id": "sma_cross"}}, "a pool instead of a strategy"),
    ({"policy": {"id": "p", "regimes": {"chop": {"nobody": 1.0}}}}, "nobody not in the pool"),
    ({"policy": {"id": "p", "regimes": {"sideways": {"a": 1.0}}}}, "sideways"),
    ({"pool": {"a": {"id": "sma_cross", "params": {"fast": 50, "slow": 20}}}}, "member a"),
    ({"pool": {"a": {"id": "nope"}}}, "unknown strategy 'nope'"),
])
def test_a_bad_composite_config_names_what_is_wrong(change, says):
    from tradebus.configs.schema import parse_config

    good = {"system": "c", "symbol": "BTCUSDT", "timeframe": "1h", "forecaster": {"id": "m"},
            "windows": {"hygiene": {"preset": "first_70pct"}, "test": {"preset": "last_30pct"}},
            "policy": {"id": "p", "regimes": {"chop": {"a": 1.0}}},
            "pool": {"a": {"id": "sma_cross", "params": {"fast": 5, "slow": 20}}}}
    assert parse_config(good).strategy.id == "pool"
    bad = {k: v for k, v in {**good, **change}.items() if v is not None}

    with pytest.raises(ConfigError, match=says):
        parse_config(bad)


def test_compare_and_retrain_end_to_end(tmp_path):
    """A model trained on the first months, a composite compared on the bars after them, then retrained."""
    home = tmp_path / "home"
    _import(home, tmp_path, ["BTCUSDT", "ETHUSDT"], n=4_000)  # 2025-01-01 .. mid-June, hourly
    env = {"TRADEBUS_HOME": str(home)}
    early = tmp_path / "early.yaml"
    body = ("model: walk_1h\nsymbols: [BTCUSDT, ETHUSDT]\ntimeframe: 1h\nhorizon: 12\nvalid_for_days: 365\n"
            "lightgbm: {rounds: 20, min_data_in_leaf: 50}\nwalk_forward: {folds: 3}\n")
    early.write_text(body + "window: {end: 2025-05-01}\n")
    assert run_tradebus("forecast", "train", str(early), "--promote", env=env, cwd=tmp_path,
                        timeout=180).returncode == 0
    composite = tmp_path / "composite.yaml"
    composite.write_text(
        "system: walk_composite\nsymbol: BTCUSDT\ntimeframe: 1h\nforecaster: {id: walk_1h}\n"
        "windows: {hygiene: {start: 2025-01-20, end: 2025-04-25}, test: {start: 2025-05-01, end: 2025-06-01}}\n"
        "policy: {id: p1, regimes: {trend_up: {trend: 1}, trend_down: {trend: 1}, chop: {rev: 1}, crash: {}}}\n"
        "pool:\n  trend: {id: sma_cross, params: {fast: 10, slow: 40, allow_short: true}}\n"
        "  rev: {id: bollinger_reversion, params: {period: 20, k: 1.5, allow_short: true}}\n"
        "risk: {sizing: fixed_fraction, fraction: 0.5, stop: {kind: none}}\n")

    cmp = run_tradebus("forecast", "compare", str(composite), env=env, cwd=tmp_path, timeout=180)
    in_sample = run_tradebus("replay", str(composite), "--window", "hygiene", "--no-store", env=env, cwd=tmp_path)

    assert cmp.returncode == 0, cmp.stderr
    result = json.loads((tmp_path / "runs" / "compare-walk_composite" / "compare.json").read_text())
    assert [s["symbol"] for s in result["symbols"]] == ["BTCUSDT", "ETHUSDT"] and result["trials"] == 1
    for s in result["symbols"]:
        assert s["window"].startswith("2025-05-01") and s["best_single"]["member"] in ("best_single (trend)",
                                                                                        "best_single (rev)")
        assert s["composite"]["total_trades"] > 0 and 0 <= s["dsr"] <= 1
    assert "above the equal-weight blend on" in cmp.stdout
    wf = run_tradebus("forecast", "compare", str(composite), "--folds", "2", "--out", str(tmp_path / "wf"), env=env,
                      cwd=tmp_path, timeout=300)
    assert wf.returncode == 0, wf.stderr
    folds = json.loads((tmp_path / "wf" / "compare.json").read_text())
    windows = sorted({s["window"] for s in folds["symbols"]})
    assert len(windows) == 2 and windows[0].split(" .. ")[1] == windows[1].split(" .. ")[0], "blocks abut"
    assert folds["trials"] == 3, "the first version and the two fold versions, one composite"
    assert in_sample.returncode == 1 and "in sample" in in_sample.stderr and "Traceback" not in in_sample.stderr
    sd = run_tradebus("dataset", "strategies", str(composite), env=env, cwd=tmp_path, timeout=180)
    assert sd.returncode == 0, sd.stderr
    table = duck.read_parquet(next((home / "datasets" / "strategies").glob("*.parquet"))).to_pandas()
    assert set(table["member"]) == {"trend", "rev"} and set(table["symbol"]) == {"BTCUSDT", "ETHUSDT"}
    assert table["fwd_return"].notna().mean() > 0.95 and (table["fwd_max_drawdown"].dropna() <= 0).all()
    assert set(table["position"].unique()) <= {-1, 0, 1} and "x.ret_1" in table.columns
    store = tmp_path / "s.sqlite"
    replay = run_tradebus("replay", str(composite), "--window", "2025-05-02:2025-06-01", "--store", str(store),
                          env=env, cwd=tmp_path)
    assert replay.returncode == 0, replay.stderr
    scores = json.loads(run_tradebus("forecast", "score", "--store", str(store), "--json", env=env).stdout)
    assert len(scores) == 1 and scores[0]["system"] == "walk_composite" and scores[0]["scored"] > 600
    assert scores[0]["backtest"]["qlike"] > 0 and 0 < scores[0]["brier"] < 2

    later = tmp_path / "later.yaml"
    later.write_text(body)  # the same model, on everything stored now
    retrain = run_tradebus("forecast", "retrain", str(later), env=env, cwd=tmp_path, timeout=180)
    assert retrain.returncode == 0, retrain.stderr
    assert "retraining on the" in retrain.stdout and "rows since 2025-05-01" in retrain.stdout
    versions = json.loads(run_tradebus("forecast", "list", "--json", env=env).stdout)
    assert len(versions) == 4 and sum(v["promoted"] for v in versions) == 1  # the first, two folds, the retrain
    assert sum(v["fold"] is not None for v in versions) == 2


def test_forward_performance_matches_a_direct_loop():
    rng = np.random.default_rng(5)
    equity = 1000 * np.cumprod(1 + np.where(rng.random(400) < 0.3, 0.0, rng.normal(0, 0.01, 400)))
    h = 12

    ret, sharpe, mdd = datasets.forward_performance(equity, h)

    for t in range(len(equity) - h):
        path = equity[t:t + h + 1]
        bars = np.diff(path) / path[:-1]
        assert ret[t] == pytest.approx(path[-1] / path[0] - 1, rel=1e-12)
        sd = bars.std(ddof=1)
        assert sharpe[t] == pytest.approx(bars.mean() / sd * np.sqrt(h) if sd > 0 else 0.0, rel=1e-9, abs=1e-12)
        assert mdd[t] == pytest.approx(min(0.0, (path / np.maximum.accumulate(path) - 1).min()), abs=1e-12)
    assert np.isnan(ret[-h:]).all()


def test_no_forecast_or_policy_decision_looks_ahead(tmp_path):
    import os

    from tradebus.configs.schema import parse_config
    from tradebus.engine.marketdata import SeriesKey
    from tradebus.factory.market import MemoryMarket
    from tradebus.replay import checks

    from .test_live_equals_replay import POLICY, POOL

    cols = walk(6_000)  # hourly from 2025-01-01
    train_and_promote(Path(os.environ["TRADEBUS_HOME"]), {k: v[:3_000] for k, v in cols.items()}, spec(timeframe="1h"))
    config = parse_config({
        "system": "c", "symbol": "BTCUSDT", "timeframe": "1h", "forecaster": {"id": "test_fc"}, "policy": POLICY,
        "pool": POOL, "windows": {"hygiene": {"start": "2025-05-10", "end": "2025-09-01"},
                                  "test": {"start": "2025-09-01", "end": "2025-09-07"}},
        "costs": {"funding": False}, "risk": {"sizing": "fixed_fraction", "fraction": 0.5, "stop": {"kind": "none"}}})
    market = MemoryMarket({SeriesKey("bybit", "linear", "BTCUSDT", "1h"): cols})

    compared = checks.no_lookahead(config, market, cut=0.75)

    replayed = checks.run_replay(config, "hygiene", market)
    before = checks.decided_before(replayed, int(cols["open_time"][4_500]))
    kinds = {type(e).__name__ for e in before}
    assert {"Forecast", "ForecastScored", "PolicyDecision", "Fill"} <= kinds and compared == len(before)
