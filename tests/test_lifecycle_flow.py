"""The lifecycle end to end, with every part really started: a shipped sweep's candidate is admitted,
checked, validated and put on demo (a paper daemon, its own process, on the fake Bybit's feed); a person's
approval is refused while the demo record is short; an injected bad run (a gap against the position)
demotes it, the daemon flattens and is stopped; refresh fetches the demo's bars (the shadow replay's) and
a second refresh does nothing; after all of it, the status, the store and a rebuild tell one story."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tradebus.eventstore.store import EventStore
from tradebus.live import control
from tradebus.live.sandbox import start_venue
from tradebus.tests.proc import run_tradebus

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bybit" / "linear" / "5m"
JOB = Path(__file__).resolve().parents[1] / "configs" / "sweeps" / "sma_cross_quick.yaml"
pytestmark = pytest.mark.skipif(not (DATA / "ETHUSDT.parquet").exists(), reason="real market data absent")

# Thresholds a person might set to try the flow: validation's gates wide open (the rules' own promote and
# demote paths are tested one by one in test_lifecycle.py), a one-hour demo record, demotion on drawdown.
RULES = """
hygiene: {min_trades: 10, max_drawdown: 0.9}
validation:
  disqualify: {min_trades: 10, max_drawdown: 0.9, min_profit_factor: 0.5, min_win_rate: 0.1}
  min_test_return: -0.9
  walk_forward: {min_pass_rate: 0.0}
test: {accept: [passed, marginal], min_test_sharpe: -10}
demo: {mode: paper, min_days: 1, min_trades: 1}
demote: {max_drawdown: 0.1, max_divergence: 0.5, min_rolling_sharpe: -1000, cusum_threshold: 1000000}
"""
SYSTEM = "eth_trend"


def _json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_a_sweep_candidate_reaches_demo_is_demoted_by_a_bad_run_and_needs_a_person(tmp_path):
    home = tmp_path / "home"
    # A quiet wave (0.2% swings): the demo loses little before the bad run, which alone decides.
    venue = start_venue(history=700, tf="5m", symbol="ETHUSDT", wave=lambda i: round(3_000 + 6 * math.sin(i / 1.5), 2))
    env = {"TRADEBUS_HOME": str(home), "TRADEBUS_BYBIT_REST": venue.rest.url, "TRADEBUS_BYBIT_ENDPOINT": venue.rest.url,
           "TRADEBUS_BYBIT_WS_PUBLIC": venue.ws.public_url}
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    lc = lambda *a, **kw: run_tradebus("lifecycle", *a, env=env, **kw)
    daemons = home / "daemons"
    try:
        assert run_tradebus("data", "import", str(DATA / "ETHUSDT.parquet"), str(DATA / "BTCUSDT.parquet"),
                            env=env).returncode == 0
        assert run_tradebus("sweep", str(JOB), "--workers", "1", env=env, timeout=600).returncode == 0
        from tradebus.factory.experiments import Tracker

        with Tracker.open(home / "experiments.duckdb", read_only=True) as t:
            best = t.top(1, validated_only=False, job="sma_cross_quick", symbol="ETHUSDT")[0]
        assert lc("add", "--experiment", best["id"][:12], "--system", SYSTEM).returncode == 0

        first = _json(lc("run", "--rules", str(rules), "--json", timeout=300))
        assert [(m["from"], m["to"]) for m in first["moves"]] == [
            ("candidate", "hygiene"), ("hygiene", "test"), ("test", "demo")]
        assert first["started"] == [f"{SYSTEM} (paper)"]
        running = control.alive(daemons, SYSTEM, "paper")
        assert running is not None and running["store"].endswith(f"{SYSTEM}.paper.sqlite")

        again = _json(lc("run", "--rules", str(rules), "--json", timeout=300))
        assert again["moves"] == [] and again["started"] == [] and again["stopped"] == []

        early = lc("approve", SYSTEM, "--to", "live_test", "--by", "eve", "--rules", str(rules))
        assert early.returncode == 1 and "demo days" in early.stderr and "Traceback" not in early.stderr

        # Trade until in a position with no order pending, ride a gentle trend its way (no reversal), then the
        # bad run: the next bars gap 15% against it.
        def status() -> dict:
            return control.alive(daemons, SYSTEM, "paper") or {}

        def push(n: int = 1) -> None:
            venue.push_bar(n)
            last_open = (venue.t0_ms + (venue.next_bar - 1) * 300_000) * 1_000_000
            assert control.wait_for(lambda: status().get("last_bar_open_ns") == last_open, 30)

        deadline = time.monotonic() + 120
        while not (status().get("position") and status().get("open_orders") == 0):
            assert time.monotonic() < deadline, "the paper daemon never took a position"
            push()
        side = 1 if status()["position"] > 0 else -1
        base, turn, level = venue.wave, venue.next_bar, venue.wave(venue.next_bar - 1)
        venue.wave = lambda i: round(level * (1 + side * 0.0005 * (i - turn + 1)), 2) if i >= turn else base(i)
        push(10)
        assert status()["position"] * side > 0 and status()["open_orders"] == 0
        shock = venue.next_bar
        trend = venue.wave
        venue.wave = lambda i: round(trend(i) * ((0.85 if side > 0 else 1.15) if i >= shock else 1.0), 2)
        push(3)

        # refresh: fetch the demo's bars (the shadow's), then the lifecycle, which demotes and winds the
        # daemon down; bars keep coming while it waits, so the flattening order fills at the next open.
        proc = subprocess.Popen([sys.executable, "-m", "tradebus", "refresh", "--rules", str(rules)],
                                env={**os.environ, **env}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        while proc.poll() is None:
            venue.push_bar()
            time.sleep(0.5)
        out, err = proc.communicate()
        assert proc.returncode == 0, err
        assert "demo->rework_required" in out and "Traceback" not in err, out + err
        assert control.alive(daemons, SYSTEM, "paper") is None  # stopped

        status = _json(lc("status", "--json"))["systems"]
        assert [(s["system"], s["status"], s["rule"]) for s in status] == [(SYSTEM, "rework_required", "drawdown")]
        assert status[0]["evidence"]["max_drawdown"] >= 0.1

        with EventStore.open_reader(home / "lifecycle" / "stores" / f"{SYSTEM}.paper.sqlite") as st:
            kept = [r.event for r in st.read()]
        told = [e for e in kept if type(e).__name__ == "Promotion"]
        assert [p.to_status for p in told] == ["rework_required"]  # the daemon took the move ...
        flat = [e for e in kept if type(e).__name__ == "PositionChanged" and e.system == SYSTEM]
        assert flat and flat[-1].qty == 0  # ... flattened ...
        reducing = [e for e in kept if type(e).__name__ == "RiskStateChanged" and e.state == "reducing"]
        assert reducing and reducing[-1].reason.startswith("lifecycle:")  # ... and took exits only

        refused = lc("approve", SYSTEM, "--to", "live_test", "--by", "eve", "--rules", str(rules))
        assert refused.returncode == 1 and "the system is rework_required" in refused.stderr

        # The venue closed bars while the daemon wound down: one refresh fetches them, the next finds nothing.
        caught_up = run_tradebus("refresh", "--rules", str(rules), env=env, timeout=300)
        second = run_tradebus("refresh", "--rules", str(rules), env=env, timeout=300)
        assert caught_up.returncode == 0 and second.returncode == 0, caught_up.stderr + second.stderr
        fetched = [int(n.replace(",", "")) for n in re.findall(r"([\d,]+) new rows", second.stdout)]
        assert fetched == [0, 0] and "moves: none; 0 allocations" in second.stdout

        # After a restart (a new process, from the store alone), the same story.
        status_again = _json(lc("status", "--json"))
        rebuilt = _json(run_tradebus("rebuild", "--json", env=env))
        assert status_again["systems"] == _json(lc("status", "--json"))["systems"]
        assert rebuilt["lifecycle"] == {SYSTEM: "rework_required"}
    finally:
        for row in control.statuses(daemons):
            if row["alive"]:
                control.stop_daemon(int(row["pid"]))
        venue.close()
