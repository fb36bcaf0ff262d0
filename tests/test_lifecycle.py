"""The lifecycle: which moves the rules allow, the status folded from the store, and the approval gate that
nothing but a person's approval passes (not a command's other paths, not a forged event on the store)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tradebus.bus import events as ev
from tradebus.bus.ids import IdGenerator
from tradebus.components import lifecycle as lc
from tradebus.eventstore.store import EventStore
from tradebus.replay.checks import T0

from .proc import run_tradebus

EXAMPLE = Path(__file__).resolve().parents[1] / "configs" / "examples" / "sma_cross_btc_5m.yaml"
IDS = IdGenerator("lifecycle-test")


def promo(system: str, frm: str, to: str, rule: str = "rule", i: int = 0, **evidence) -> ev.Promotion:
    t = T0 + i
    return ev.Promotion(id=IDS.next(t), ts_event=t, ts_init=t, system=system, from_status=frm, to_status=to,
                        rule=rule, evidence=evidence)


@pytest.mark.parametrize("frm,to,rule,evidence,ok", [
    (None, "candidate", lc.ADMITTED, {}, True),
    (None, "hygiene", "x", {}, False),
    ("candidate", "hygiene", "hygiene_due", {}, True),
    ("candidate", "test", "x", {}, False),  # skips hygiene
    ("hygiene", "test", "passed", {}, True),
    ("test", "demo", "passed", {}, True),
    ("test", "paper", "passed", {}, True),
    ("paper", "demo", "passed", {}, True),
    ("demo", "live_test", "demo_passed", {"approved_by": "eve"}, False),  # a rule, not an approval
    ("demo", "live_test", lc.APPROVED, {}, False),  # an approval that names nobody
    ("demo", "live_test", lc.APPROVED, {"approved_by": "  "}, False),
    ("demo", "live_test", lc.APPROVED, {"approved_by": "eve"}, True),
    ("test", "live_test", lc.APPROVED, {"approved_by": "eve"}, False),  # approval cannot skip demo
    ("demo", "production", lc.APPROVED, {"approved_by": "eve"}, False),
    ("live_test", "production", lc.APPROVED, {"approved_by": "eve"}, True),
    ("production", "live_test", "drawdown", {}, True),  # demoted one stage
    ("live_test", "demo", "diverged", {}, True),
    ("production", "disabled", "drawdown", {}, True),
    ("demo", "rework_required", "rejections", {}, True),
    ("disabled", "hygiene", "x", {}, False),
    ("disabled", "candidate", "readmitted", {}, True),
    ("rejected", "candidate", "readmitted", {}, False),
    ("hygiene", "candidate", "x", {}, False),
])
def test_the_rules_allow_one_stage_at_a_time_and_gate_live_on_a_person(frm, to, rule, evidence, ok):
    why = lc.allowed(frm, to, rule, evidence)

    assert (why == "") is ok, why


def test_the_status_is_the_fold_of_the_allowed_moves_and_forged_ones_are_listed():
    moves = [promo("a", "candidate", "candidate", lc.ADMITTED, 0), promo("a", "candidate", "hygiene", "due", 1),
             promo("a", "hygiene", "production", "agent_says_so", 2),  # forged: skips, and no approval
             promo("a", "hygiene", "test", "passed", 3, sharpe=1.2),
             promo("a", "demo", "live_test", lc.APPROVED, 4, approved_by="eve"),  # from a stage it is not in
             promo("b", "test", "demo", "passed", 5)]  # b never entered as a candidate

    folded = lc.fold(moves)

    assert {s: st.status for s, st in folded.systems.items()} == {"a": "test"}
    assert folded.systems["a"].evidence == {"sharpe": 1.2} and folded.systems["a"].moves == 3
    assert [p.to_status for p, _ in folded.refused] == ["production", "live_test", "demo"]
    assert lc.fold(moves).systems == folded.systems  # deterministic


def test_move_refuses_what_the_rules_refuse():
    folded = lc.fold([promo("a", "candidate", "candidate", lc.ADMITTED)])
    stamp = {"id": "x", "ts_event": T0, "ts_init": T0}

    with pytest.raises(lc.LifecycleError, match="only with a person's approval"):
        lc.move(folded, stamp, "a", "production", "allocator", {})
    assert lc.move(folded, stamp, "a", "hygiene", "due", {}).from_status == "candidate"


def test_commands_admit_approve_and_tell_the_stores_story(tmp_path):
    store = tmp_path / "events.sqlite"
    env = {"TRADEBUS_HOME": str(tmp_path / "home")}
    cmd = lambda *a: run_tradebus("lifecycle", *a, "--store", str(store), env=env)  # noqa: E731

    added = cmd("add", str(EXAMPLE))
    early = cmd("approve", "sma_cross_btc_5m", "--to", "live_test", "--by", "eve")
    with EventStore.open_writer(store) as st:  # the rules moved it to demo; an agent forged production
        st.append([promo("sma_cross_btc_5m", "candidate", "hygiene", "due", 10),
                   promo("sma_cross_btc_5m", "hygiene", "test", "hygiene_passed", 11, sharpe=1.1),
                   promo("sma_cross_btc_5m", "test", "demo", "test_passed", 12),
                   promo("sma_cross_btc_5m", "demo", "production", "agent", 13, approved_by="agent")])
    short = cmd("approve", "sma_cross_btc_5m", "--to", "live_test", "--by", "eve", "--reason", "looks fine")
    wrong = cmd("approve", "sma_cross_btc_5m", "--to", "demo")
    status = json.loads(cmd("status", "--json").stdout)
    history = cmd("history", "sma_cross_btc_5m")

    assert added.returncode == 0 and "admitted as a candidate" in added.stdout
    assert early.returncode == 1 and "approval moves demo -> live_test; the system is candidate" in early.stderr
    # In demo by the rules, but with no demo record: a person cannot approve it yet.
    assert short.returncode == 1 and "the demo record is not complete" in short.stderr
    assert "demo days < 14" in short.stderr and "no shadow replay" in short.stderr and "nothing recorded" in short.stderr
    assert wrong.returncode == 1 and "--to 'demo'" in wrong.stderr
    assert [(s["system"], s["status"], s["rule"]) for s in status["systems"]] == [
        ("sma_cross_btc_5m", "demo", "test_passed")]
    assert [(r["to"], r["rule"]) for r in status["refused"]] == [("production", "agent")]
    lines = history.stdout.strip().splitlines()
    assert len(lines) == 5 and "refused" in lines[4] and "config_json" not in history.stdout
    for r in (early, short, wrong):
        assert "Traceback" not in r.stderr


def test_the_break_detector_sees_a_lost_edge_and_reads_no_future():
    import numpy as np

    rng = np.random.default_rng(3)
    mu0, sigma = 0.002, 0.004  # a very strong edge (Sharpe ~47 a year on 1h bars): a break shows in days
    intact = rng.normal(mu0, sigma, 8_760)
    broken = np.concatenate((intact[:2_000], rng.normal(0.0, sigma, 6_760)))

    assert lc.cusum_break(intact, mu0, sigma, 8.0) == -1
    alarm = lc.cusum_break(broken, mu0, sigma, 8.0)
    assert 2_000 <= alarm < 2_000 + 14 * 24
    changed = broken.copy()
    changed[alarm + 1:] = 1.0  # whatever follows the alarm
    assert lc.cusum_break(changed, mu0, sigma, 8.0) == alarm
    with_gaps = broken.copy()
    with_gaps[100:110] = np.nan
    assert lc.cusum_break(with_gaps, mu0, sigma, 8.0) >= 2_000
    assert lc.cusum_break(broken, 0.0, sigma, 8.0) == -1 and lc.cusum_break(broken, mu0, 0.0, 8.0) == -1
    # A higher threshold waits longer and never alarms earlier.
    assert lc.cusum_break(broken, mu0, sigma, 16.0) >= alarm
