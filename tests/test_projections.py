"""Rebuilding state from events: position accounting, open orders, lifecycle, risk, the state hash."""

from __future__ import annotations

import msgspec
import pytest

from tradebus.bus import events as ev
from tradebus.components.portfolio import Position, apply_fill
from tradebus.eventstore.projections import GLOBAL, rebuild, state_hash
from tradebus.eventstore.store import EventStore
from tradebus.tests.samples import one_of_each, sample


def fold(events):
    return rebuild(enumerate(events, start=1))


# --- position accounting, against hand-computed numbers ---------------------------------------------


def test_buys_average_in():
    pos = apply_fill(Position(symbol="X"), "buy", 1.0, 100.0, fee=0.1)
    pos = apply_fill(pos, "buy", 3.0, 200.0, fee=0.3)

    assert pos.qty == 4.0
    assert pos.avg_price == pytest.approx((100 + 600) / 4)
    assert pos.realized_pnl == 0.0 and pos.fees == pytest.approx(0.4)


def test_partial_close_realises_on_closed_part_only():
    pos = apply_fill(Position(symbol="X"), "buy", 2.0, 100.0)
    pos = apply_fill(pos, "sell", 0.5, 120.0)

    assert pos.qty == 1.5 and pos.avg_price == 100.0
    assert pos.realized_pnl == pytest.approx(0.5 * 20)


def test_short_profit_is_positive():
    pos = apply_fill(Position(symbol="X"), "sell", 2.0, 100.0)
    pos = apply_fill(pos, "buy", 2.0, 90.0)

    assert pos.qty == 0.0 and pos.avg_price == 0.0
    assert pos.realized_pnl == pytest.approx(20.0)


def test_flip_opens_remainder_at_fill_price():
    pos = apply_fill(Position(symbol="X"), "buy", 1.0, 100.0)
    pos = apply_fill(pos, "sell", 3.0, 110.0)

    assert pos.qty == -2.0 and pos.avg_price == 110.0
    assert pos.realized_pnl == pytest.approx(10.0)
    assert pos.unrealized(100.0) == pytest.approx(20.0)


def test_non_positive_fill_qty_is_a_bug():
    with pytest.raises(ValueError, match="qty"):
        apply_fill(Position(symbol="X"), "buy", 0.0, 1.0)


# --- the fold -------------------------------------------------------------------------------------


def test_orders_leave_the_open_book_when_filled_cancelled_or_rejected(make):
    events = [
        make.intent("s", "a", qty=2.0), make.intent("s", "b"), make.intent("s", "c"), make.intent("s", "d"),
        make.fill("s", "a", "x1", "buy", 1.0, 100.0, leaves=1.0),
    ]
    mid = fold(events)
    assert set(mid.open_orders) == {"a", "b", "c", "d"}
    assert mid.open_orders["a"].filled == 1.0 and mid.open_orders["a"].status == "partially_filled"

    env = {"ts_event": 1, "ts_init": 1, "system": "s"}
    events += [
        make.fill("s", "a", "x2", "buy", 1.0, 101.0, leaves=0.0),
        ev.OrderCancelled(id="k1", order_id="b", **env),
        ev.OrderRejected(id="k2", order_id="c", reason="too big", **env),
        ev.OrderAccepted(id="k3", order_id="d", venue_order_id="V9", **env),
    ]
    state = fold(events)

    assert list(state.open_orders) == ["d"]
    assert state.open_orders["d"].status == "accepted" and state.open_orders["d"].venue_order_id == "V9"
    assert state.closed_orders == 3
    assert state.positions["s"]["BTCUSDT"].qty == 2.0


def test_fill_repeated_with_same_exec_id_counts_once(make):
    f = make.fill("s", "a", "exec-1", "buy", 1.0, 100.0)
    replayed = msgspec.structs.replace(f, id="another-event-id")

    state = fold([make.intent("s", "a"), f, replayed])

    assert state.positions["s"]["BTCUSDT"].qty == 1.0
    assert state.duplicate_fills == 1


def test_lifecycle_risk_runs_and_accounts_follow_their_events():
    samples = one_of_each()
    global_halt = msgspec.structs.replace(sample(ev.RiskStateChanged), id="g", scope="global", state="halted", system="")

    promo = sample(ev.Promotion)  # hygiene -> test: counted once the system was admitted and reached hygiene
    admitted = [msgspec.structs.replace(promo, id=f"p{i}", from_status=frm, to_status=to, rule=rule)
                for i, (frm, to, rule) in enumerate([("candidate", "candidate", "admitted"),
                                                     ("candidate", "hygiene", "due")])]
    forged = msgspec.structs.replace(promo, id="forged", from_status="test", to_status="production", rule="agent")

    state = fold([*admitted, *samples, global_halt, forged])

    assert state.lifecycle == {"ema_rsi_btc": "test"}
    assert state.risk == {"ema_rsi_btc": "reducing", GLOBAL: "halted"}
    assert state.runs == {"run-1": "ok"}
    assert state.accounts["ema_rsi_btc"].equity == 9_999.5
    assert state.by_type["bar"] == 1 and state.events == len(samples) + 4


def test_state_hash_is_stable_and_sensitive(make):
    events = [make.intent("s", "a"), make.fill("s", "a", "e1", "buy", 1.0, 100.0)]

    h1 = state_hash(fold(events))
    h2 = state_hash(fold(events))
    h3 = state_hash(fold([*events, make.fill("s", "a", "e2", "sell", 0.5, 101.0)]))

    assert h1 == h2
    assert h1 != h3


def test_rebuild_from_store_equals_fold_of_the_same_events(tmp_path, make):
    events = [make.intent("s", "a"), make.fill("s", "a", "e1", "buy", 1.0, 100.0), *one_of_each()]
    with EventStore.open_writer(tmp_path / "e.sqlite") as st:
        st.append(events)
        from_store = rebuild(st.read())

    assert state_hash(from_store) == state_hash(fold(events))


def test_each_replay_run_is_its_own_account_and_live_sessions_share_the_systems(make):
    def run(run_id: str, mode: str) -> ev.RunStarted:
        return ev.RunStarted(id=f"start-{run_id}", ts_event=1, ts_init=1, system="s", run=run_id, mode=mode)

    def fill(run_id: str, side: str) -> ev.Fill:
        return ev.Fill(id=f"f-{run_id}-{side}", ts_event=2, ts_init=2, system="s", run=run_id, order_id="o",
                       exec_id="simx-1", symbol="BTCUSDT", side=side, price=100.0, qty=1.0, fee=0.0,
                       liquidity="taker")

    state = fold([run("r1", "replay"), fill("r1", "buy"), run("r2", "replay"), fill("r2", "sell"),
                  run("d1", "demo"), fill("d1", "buy"), run("d2", "demo"), fill("d2", "buy")])

    assert state.positions["s/r1"]["BTCUSDT"].qty == 1.0
    assert state.positions["s/r2"]["BTCUSDT"].qty == -1.0
    # Live, an exec id is the venue's: seen again after a restart it is the same execution, counted once.
    assert state.positions["s"]["BTCUSDT"].qty == 1.0
    assert state.duplicate_fills == 1
