"""Identities that mean what they say: run and trial ids hash the code that decides results and only the
series a run reads; a result of older code or data is never reused or counted."""

from __future__ import annotations

import shutil


from tradebus import identity
from tradebus.engine.marketdata import SeriesKey
from tradebus.factory.experiments import Tracker
from tradebus.factory.market import MemoryMarket
from tradebus.factory.sweep import parse_job, plan, run_sweep
from tradebus.replay.backtest import run_replay

from tradebus.replay.checks import random_walk as synthetic
from .test_sweep import job

BTC5 = SeriesKey("bybit", "linear", "BTCUSDT", "5m")


def test_the_code_digest_follows_deciding_source_only(tmp_path):
    root = tmp_path / "pkg"
    for folder in identity.DECIDES:
        shutil.copytree(identity.PACKAGE / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(identity.PACKAGE / "cli", root / "cli", ignore=shutil.ignore_patterns("__pycache__"))
    before = identity.code_digest(root)

    (root / "cli" / "runs.py").write_text("# the command line decides no result\n")
    identity.code_digest.cache_clear()
    after_cli = identity.code_digest(root)
    kernel = root / "components" / "kernel.py"
    kernel.write_text(kernel.read_text() + "\n# a change to the kernel\n")
    identity.code_digest.cache_clear()
    after_kernel = identity.code_digest(root)
    identity.code_digest.cache_clear()

    assert before == after_cli and before != after_kernel and len(before) == 16
    assert identity.code_digest() == identity.code_digest(identity.PACKAGE)


def _ids(mem: MemoryMarket, **overrides) -> list[str]:
    return [t.id for t in plan(parse_job(job(**overrides)), mem).trials]


def test_an_import_a_trial_does_not_read_changes_no_trial_id():
    mem = MemoryMarket({SeriesKey("bybit", "linear", s, "5m"): synthetic(2_000, seed=i)
                        for i, s in enumerate(("BTCUSDT", "ETHUSDT"))})
    before = _ids(mem)
    t = synthetic(100)["open_time"]
    # Funding and marks for a job whose costs charge none, and a timeframe it does not trade.
    mem.series[SeriesKey("bybit", "linear", "BTCUSDT", "-", "funding")] = {"open_time": t, "rate": t * 0 + 1e-4}
    mem.series[SeriesKey("bybit", "linear", "BTCUSDT", "1h", "mark")] = synthetic(50, step=3_600 * 10**9)
    mem.series[SeriesKey("bybit", "linear", "ETHUSDT", "1h")] = synthetic(50, step=3_600 * 10**9)
    assert _ids(mem) == before

    charged = job()["base"] | {"costs": {"taker_fee": 0.00055, "spread_bps": 1.0, "funding": True}}
    with_funding = _ids(mem, base=charged)
    mem.series[SeriesKey("bybit", "linear", "BTCUSDT", "-", "funding")]["rate"] = t * 0 + 2e-4
    changed = _ids(mem, base=charged)
    btc = [a != b for a, b, tr in zip(with_funding, changed, plan(parse_job(job(base=charged)), mem).trials)
           if tr.config.symbol == "BTCUSDT"]
    assert btc and all(btc)  # what a charged trial reads did change: new ids for BTC ...
    assert len(set(with_funding) & set(changed)) == len(with_funding) - len(btc)  # ... and only for BTC


def _other_code(monkeypatch) -> None:
    """What a change to a deciding file does to the digest (the digest itself is tested above)."""
    monkeypatch.setattr("tradebus.factory.sweep.code_digest", lambda: "0123456789abcdef")
    monkeypatch.setattr("tradebus.replay.runner.code_digest", lambda: "0123456789abcdef")


def test_a_sweep_rerun_after_a_code_change_runs_anew_and_counts_each_trial_once(md, tmp_path, monkeypatch):
    spec = parse_job(job())
    with Tracker.open(tmp_path / "e.duckdb") as tracker:
        first = run_sweep(spec, md, tracker, workers=1)
        again = run_sweep(spec, md, tracker, workers=1)
        _other_code(monkeypatch)
        changed = run_sweep(spec, md, tracker, workers=1)

        assert (first.ran, again.ran, again.skipped) == (first.trials, 0, first.trials)
        assert (changed.ran, changed.skipped, changed.stale) == (first.trials, 0, first.trials)
        assert tracker.count() == 2 * first.trials  # the old rows stay ...
        assert tracker.job_trials(spec.job) == first.trials  # ... but the DSR counts each trial once
        assert len(tracker.job_sharpes(spec.job)) == first.trials
        listed = tracker.top(1000, validated_only=False)
        assert len(listed) == first.trials and {e["code_version"] for e in listed} == {"0123456789abcdef"}


def test_a_replay_rerun_after_a_code_change_is_a_new_run(md, monkeypatch):
    from tradebus.configs.schema import load_config

    config = load_config(identity.PACKAGE / "configs" / "examples" / "sma_cross_btc_5m.yaml")
    first = run_replay(config, "2025-01-01:2025-01-10", md)
    same = run_replay(config, "2025-01-01:2025-01-10", md)
    _other_code(monkeypatch)
    changed = run_replay(config, "2025-01-01:2025-01-10", md)

    assert first.run == same.run and changed.run != first.run
    assert changed.manifest["code_digest"] == "0123456789abcdef"
