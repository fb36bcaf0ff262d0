"""The simulated exchange's fill rules and the risk manager's sizing, on hand-made bars."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tradebus.bus import events as ev
from tradebus.components.base import SimClock, Stamper
from tradebus.components.exchange import CostParams, SimExchange
from tradebus.components.risk import RiskManager

T = 1_735_689_600_000_000_000
M5 = 300_000_000_000


def bar(i: int, o: float, h: float, l: float, c: float, v: float = 100.0) -> ev.BarClosed:
    t = T + i * M5
    return ev.BarClosed(id=f"b{i}", ts_event=t + M5, ts_init=t + M5, venue="sim", market="linear", symbol="X",
                        timeframe="5m", open_time=t, open=o, high=h, low=l, close=c, volume=v)


def intent(order_id: str, side: str, qty: float, order_type: str = "market", price=None, trigger=None,
           reduce_only=False) -> ev.OrderIntent:
    return ev.OrderIntent(id=f"i-{order_id}", ts_event=T, ts_init=T, system="s", order_id=order_id, venue="sim",
                          symbol="X", side=side, order_type=order_type, qty=qty, price=price, trigger_price=trigger,
                          reduce_only=reduce_only)


def exchange(fill="next_open", spread_bps=0.0, slip=("none", 0.0), participation=None, funding=None, **fees):
    clock = SimClock(T)
    costs = CostParams(fees.get("maker", 0.0002), fees.get("taker", 0.0005), spread_bps, slip[0], slip[1], slip[1])
    ft, fr = (None, None) if funding is None else (np.array([funding[0]]), np.array([funding[1]]))
    return SimExchange(Stamper(clock, "x", "s", "r"), venue="sim", symbol="X", timeframe="5m", fill_timing=fill,
                       costs=costs, participation=participation, funding_times=ft, funding_rates=fr)


def fills(events):
    return [e for e in events if isinstance(e, ev.Fill)]


def test_market_order_fills_at_next_open_paying_half_spread_and_slippage():
    x = exchange(spread_bps=4.0, slip=("fixed_bps", 1.0), taker=0.001)
    x.on_event(bar(0, 100, 101, 99, 100))

    accepted = x.on_event(intent("a", "buy", 2.0))
    got = fills(x.on_event(bar(1, 110, 111, 109, 110)))

    assert isinstance(accepted[0], ev.OrderAccepted) and not fills(accepted)
    assert len(got) == 1
    assert got[0].price == pytest.approx(110 * (1 + (2.0 + 1.0) * 1e-4), rel=1e-15)
    assert got[0].fee == pytest.approx(2.0 * got[0].price * 0.001, rel=1e-15)
    assert got[0].ts_event == T + M5 and got[0].liquidity == "taker"


def test_on_close_timing_fills_at_the_signal_bars_close():
    x = exchange(fill="on_close")
    x.on_event(bar(0, 100, 101, 99, 100.5))

    got = fills(x.on_event(intent("a", "sell", 1.0)))

    assert got[0].price == 100.5 and got[0].ts_event == T + M5


def long_with_stop(trigger: float) -> SimExchange:
    """An exchange holding 1 long (filled at 100) with a reduce-only sell stop resting at ``trigger``."""
    x = exchange(taker=0.0)
    x.on_event(bar(0, 100, 100, 100, 100))
    x.on_event(intent("long", "buy", 1.0))
    x.on_event(bar(1, 100, 100, 100, 100))
    x.on_event(intent("sl", "sell", 1.0, "stop", trigger=trigger, reduce_only=True))
    return x


def test_stop_fills_at_trigger_or_at_a_gapped_open():
    touched = fills(long_with_stop(95.0).on_event(bar(2, 99, 99.5, 94, 96)))
    gapped = fills(long_with_stop(95.0).on_event(bar(2, 90, 91, 88, 89)))

    assert touched[0].price == 95.0  # traded through: at the trigger
    assert gapped[0].price == 90.0  # opened below the stop: at the open


def test_limit_fills_as_maker_at_its_price_or_a_better_open():
    x = exchange(maker=-0.0001, spread_bps=10.0)
    x.on_event(bar(0, 100, 100, 100, 100))
    x.on_event(intent("lim", "buy", 1.0, "limit", price=98.0))

    none = fills(x.on_event(bar(1, 100, 101, 98.5, 100)))
    hit = fills(x.on_event(bar(2, 99, 99, 97, 98)))

    assert none == []
    assert hit[0].price == 98.0 and hit[0].liquidity == "maker" and hit[0].fee == pytest.approx(-0.0098)


def protected_long(x: SimExchange, tp: float) -> SimExchange:
    """``x`` holding 1 long with a reduce-only stop at 90 and a take-profit limit at ``tp`` resting."""
    x.on_event(bar(0, 100, 100, 100, 100))
    x.on_event(intent("long", "buy", 1.0))
    x.on_event(bar(1, 100, 100, 100, 100))
    x.on_event(intent("sl", "sell", 1.0, "stop", trigger=90.0, reduce_only=True))
    x.on_event(intent("tp", "sell", 1.0, "limit", price=tp, reduce_only=True))
    return x


def test_reduce_only_orders_are_cancelled_when_the_position_closes():
    x = protected_long(exchange(), tp=120.0)
    x.on_event(intent("exit", "sell", 1.0, reduce_only=True))

    out = x.on_event(bar(2, 101, 102, 100, 101))

    assert [f.order_id for f in fills(out)] == ["exit"]
    cancelled = {e.order_id: e.reason for e in out if isinstance(e, ev.OrderCancelled)}
    assert cancelled == {"sl": "position closed", "tp": "position closed"}
    assert x.position == 0


def test_participation_cap_splits_a_large_order_across_bars():
    x = exchange(participation=0.1)
    x.on_event(bar(0, 100, 100, 100, 100))
    x.on_event(intent("big", "buy", 25.0))

    first = fills(x.on_event(bar(1, 100, 100, 100, 100, v=100)))
    second = fills(x.on_event(bar(2, 100, 100, 100, 100, v=100)))
    third = fills(x.on_event(bar(3, 100, 100, 100, 100, v=100)))

    assert [f.qty for f in first + second + third] == [10.0, 10.0, 5.0]
    assert [f.leaves_qty for f in first + second + third] == [15.0, 5.0, 0.0]


def test_funding_charges_longs_on_positive_rates_before_the_open_trades():
    x = exchange(funding=(T + 2 * M5, 0.001), taker=0.0)
    x.on_event(bar(0, 100, 100, 100, 100))
    x.on_event(intent("long", "buy", 3.0))
    x.on_event(bar(1, 100, 100, 100, 100))

    out = x.on_event(bar(2, 105, 105, 105, 105))

    paid = [e for e in out if isinstance(e, ev.FundingPaid)]
    assert len(paid) == 1
    assert paid[0].amount == pytest.approx(3.0 * 105 * 0.001) and paid[0].ts_event == T + 2 * M5


def test_invalid_orders_are_rejected_with_a_reason():
    x = exchange()

    out = x.on_event(intent("bad", "buy", -1.0)) + x.on_event(intent("lim", "buy", 1.0, "limit"))

    assert [e.reason for e in out if isinstance(e, ev.OrderRejected)] == [
        "qty must be a positive number, got -1.0", "limit order needs a positive price"]


# --- risk ---------------------------------------------------------------------------------------


def risk(**kw) -> RiskManager:
    args = dict(venue="sim", symbol="X", timeframe="5m", sizing="risk_per_trade", fraction=1.0, risk_per_trade=0.01,
                max_leverage=3.0, max_position_notional=None, stop_kind="atr", atr_period=14, atr_mult=2.0,
                stop_percent=0.02, take_profit_rr=None, initial_capital=10_000.0)
    args.update(kw)
    return RiskManager(Stamper(SimClock(T), "r", "s", "run"), **args)


def test_risk_per_trade_sizes_so_the_stop_loses_that_share():
    r = risk()

    qty, reason = r.size(equity=10_000, price=100.0, stop_distance=2.5)

    assert reason == "" and qty * 2.5 == pytest.approx(100.0)  # 1% of 10k at risk


def test_sizing_is_capped_by_leverage_and_max_notional():
    assert risk().size(10_000, 100.0, 0.01)[0] * 100.0 == pytest.approx(30_000)  # 3x leverage cap
    assert risk(max_position_notional=5_000).size(10_000, 100.0, 0.01)[0] * 100 == pytest.approx(5_000)
    assert risk(sizing="fixed_fraction", fraction=0.5).size(10_000, 50.0, math.nan)[0] == pytest.approx(100.0)


def test_a_signal_without_a_stop_distance_is_rejected_as_an_event():
    r = risk()
    snap_bar = bar(0, 100, 100, 100, 100)
    r.on_event(ev.Snapshot(id="s0", ts_event=1, ts_init=1, system="s", bar=snap_bar,
                           features={"close": 100.0, "atr_14": math.nan}))

    out = r.on_event(ev.Signal(id="sig", ts_event=1, ts_init=1, system="s", strategy="x", symbol="X",
                               timeframe="5m", direction="long"))

    assert len(out) == 1 and isinstance(out[0], ev.OrderRejected)
    assert "stop distance" in out[0].reason and out[0].order_id == "sig-entry"


def test_a_leveraged_long_is_liquidated_at_maintenance_margin():
    clock = SimClock(T)
    x = SimExchange(Stamper(clock, "x", "s", "r"), venue="sim", symbol="X", timeframe="5m", fill_timing="next_open",
                    costs=CostParams(0.0, 0.0005, 0.0), initial_capital=1_000.0, maintenance_margin=0.005)
    x.on_event(bar(0, 100, 100, 100, 100))
    x.on_event(intent("long", "buy", 100.0))  # 10,000 notional on 1,000 of capital: 10x
    entry = fills(x.on_event(bar(1, 100, 100, 100, 100)))[0]
    x.on_event(intent("sl", "sell", 100.0, "stop", trigger=80.0, reduce_only=True))

    calm = x.on_event(bar(2, 100, 100, 95, 96))
    crash = x.on_event(bar(3, 96, 96, 85, 86))

    assert fills(calm) == []
    liq = fills(crash)
    assert len(liq) == 1 and liq[0].order_id == "liquidation-1" and liq[0].side == "sell" and liq[0].qty == 100.0
    wallet = 1_000.0 - entry.fee
    expected = (100.0 * 100.0 - wallet) / (100.0 * (1 - 0.005))  # equity = 0.5% of notional here
    assert liq[0].price == pytest.approx(expected, rel=1e-12)
    assert wallet + 100.0 * (liq[0].price - 100.0) == pytest.approx(0.005 * 100.0 * liq[0].price, rel=1e-9)
    assert [e.order_id for e in crash if isinstance(e, ev.OrderCancelled)] == ["sl"]
    assert x.position == 0


def snapshot(close: float = 100.0, atr: float = 1.0) -> ev.Snapshot:
    return ev.Snapshot(id="s", ts_event=1, ts_init=1, system="s", bar=bar(0, close, close, close, close),
                       features={"close": close, "atr_14": atr})


def position(qty: float, avg: float, cause: str) -> ev.PositionChanged:
    return ev.PositionChanged(id=f"p-{cause}", ts_event=1, ts_init=1, system="s", cause=cause, symbol="X", qty=qty,
                              avg_price=avg)


def signal(direction: str, sid: str = "sig") -> ev.Signal:
    return ev.Signal(id=sid, ts_event=1, ts_init=1, system="s", strategy="x", symbol="X", timeframe="5m",
                     direction=direction)


def test_a_flat_signal_closes_a_short():
    r = risk()
    r.on_event(snapshot())
    r.on_event(position(-2.0, 100.0, "f0"))

    out = r.on_event(signal("flat"))

    assert len(out) == 1 and isinstance(out[0], ev.OrderIntent)
    assert (out[0].side, out[0].qty, out[0].reduce_only, out[0].label) == ("buy", 2.0, True, "exit")


def test_a_reversal_protects_the_new_position():
    r = risk(take_profit_rr=2.0)
    r.on_event(snapshot(close=100.0, atr=1.5))
    r.on_event(position(1.0, 100.0, "f0"))
    exit_, entry = r.on_event(signal("short"))
    for o in (exit_, entry):
        r.on_event(o)  # as a host routes them: the risk manager keeps an entry's stop from its intent
    fills_ = [ev.Fill(id=f"fill-{o.label}", ts_event=1, ts_init=1, system="s", order_id=o.order_id, exec_id=o.label,
                      symbol="X", side=o.side, price=99.0, qty=o.qty, fee=0.0, liquidity="taker")
              for o in (exit_, entry)]
    for fl in fills_:
        r.on_event(fl)

    after_exit = r.on_event(position(0.0, 0.0, "fill-exit"))
    after_entry = r.on_event(position(-entry.qty, 99.0, "fill-entry"))

    assert after_exit == ()
    sl, tp = after_entry
    assert (sl.order_type, sl.side, sl.trigger_price, sl.reduce_only) == ("stop", "buy", 99.0 + 3.0, True)
    assert (tp.order_type, tp.price) == ("limit", 99.0 - 2.0 * 3.0)


def test_a_reversal_at_the_open_cancels_the_old_protection_before_the_new_entry():
    x = protected_long(exchange(taker=0.0), tp=130.0)
    x.on_event(intent("exit", "sell", 1.0, reduce_only=True))
    x.on_event(intent("short", "sell", 2.0))

    out = x.on_event(bar(2, 101, 101, 101, 101))
    later = x.on_event(bar(3, 131, 131, 89, 100))  # would hit both old orders

    assert [f.order_id for f in fills(out)] == ["exit", "short"]
    assert {e.order_id for e in out if isinstance(e, ev.OrderCancelled)} == {"sl", "tp"}
    assert fills(later) == [] and x.position == -2.0


def test_a_reduce_only_exit_under_a_participation_cap_fills_across_bars():
    x = exchange(participation=0.1, taker=0.0)
    x.on_event(bar(0, 100, 100, 100, 100, v=1_000))
    x.on_event(intent("long", "buy", 25.0))
    x.on_event(bar(1, 100, 100, 100, 100, v=1_000))
    x.on_event(intent("exit", "sell", 25.0, reduce_only=True))

    got = [f for i in range(2, 5) for f in fills(x.on_event(bar(i, 100, 100, 100, 100, v=100)))]

    assert [(f.qty, f.leaves_qty) for f in got] == [(10.0, 15.0), (10.0, 5.0), (5.0, 0.0)]
    assert x.position == 0


def test_a_triggered_stop_under_a_participation_cap_fills_its_remainder_at_the_next_open():
    x = exchange(taker=0.0, participation=0.5)  # half of a bar's volume per bar
    x.on_event(bar(0, 100, 100, 100, 100))
    x.on_event(intent("long", "buy", 80.0))
    x.on_event(bar(1, 100, 100, 100, 100, v=200.0))  # fills all 80 (cap 100)
    x.on_event(intent("sl", "sell", 80.0, "stop", trigger=95.0, reduce_only=True))

    first = fills(x.on_event(bar(2, 99, 99, 94, 96, v=100.0)))  # triggers: 50 of 80 at the trigger
    rest = fills(x.on_event(bar(3, 97, 98, 96, 97, v=100.0)))  # a market order now: 30 at the open

    assert [(f.qty, f.price) for f in first] == [(50.0, 95.0)]
    assert [(f.qty, f.price, f.leaves_qty) for f in rest] == [(30.0, 97.0, 0.0)]
    assert x.position == 0.0


def test_sizes_round_down_to_the_venues_step_as_the_decimal_it_sends():
    from decimal import ROUND_DOWN, Decimal

    from tradebus.components.kernel import on_step

    rng = np.random.default_rng(5)
    for q in rng.uniform(0.0005, 50, 2_000).tolist():
        for step in ("0.001", "0.01", "1", "5"):
            got = on_step(q, float(step))
            want = float((Decimal(repr(q)) / Decimal(step)).to_integral_value(ROUND_DOWN) * Decimal(step))
            assert got == want, (q, step)
    assert on_step(0.0469999, 0.0) == 0.0469999  # no step: unchanged
    assert risk(sizing="fixed_fraction", fraction=0.5, qty_step=0.001).size(10_000, 30_000.0, math.nan)[0] == 0.166
