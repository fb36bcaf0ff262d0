"""The trading REST adapter (real pybit) against the fake Bybit: order types and their matching, amend
and cancel, reduce-only, the outcome-unknown path, clock skew and a wrong key, as the venue answers them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tradebus.bus import events as ev
from tradebus.live.bybit import BybitRest, Credentials
from tradebus.live.bybit_public import OutcomeUnknown, VenueRejected
from tradebus.live.venue import order_params

from tradebus.live.fake_bybit import API_KEY, API_SECRET, FakeBybit, FakeBybitState

SYMBOL = "BTCUSDT"
PRICE = 30_000.0
_n = iter(range(10**6))


@pytest.fixture
def fake():
    state = FakeBybitState()
    server = FakeBybit.start(state)
    state.add_candle(SYMBOL, "1m", 0, PRICE, PRICE + 10, PRICE - 10, PRICE, push=False)
    yield state, server
    server.stop()


@pytest.fixture
def rest(fake):
    client = BybitRest(Credentials(API_KEY, API_SECRET), endpoint=fake[1].url, timeout=2.0)
    client.sync_clock()
    return client


def send(rest: BybitRest, side: str, qty: float, kind: str = "market", price: float | None = None,
         trigger: float | None = None, reduce_only: bool = False, post_only: bool = False) -> str:
    """Build the create body the daemon would (instrument rules applied) and send it; return the link id."""
    i = next(_n)
    intent = ev.OrderIntent(id=f"I{i}", ts_event=0, ts_init=0, order_id=f"o-{i}", venue="bybit", symbol=SYMBOL,
                            side=side, order_type=kind, qty=qty, price=price, trigger_price=trigger,
                            reduce_only=reduce_only, post_only=post_only)
    params = order_params(intent, rest.instrument(SYMBOL), PRICE)
    rest.create(params)
    return intent.order_id


def candle(state: FakeBybitState, low: float, high: float, close: float) -> None:
    state.add_candle(SYMBOL, "1m", 60_000, close, high, low, close, push=False)


def test_a_limit_rests_then_fills_as_maker_at_its_price_when_the_market_trades_through(fake, rest):
    state, _ = fake
    link = send(rest, "buy", 0.0104, "limit", price=29_900.06)  # qty rounds down to the step, price to the tick
    order = rest.find_order(SYMBOL, link)
    assert (order.orderStatus, order.qty, order.price) == ("New", "0.01", "29900")
    candle(state, 29_950, 30_050, 30_000)
    assert rest.find_order(SYMBOL, link).orderStatus == "New", "not reached: still resting"
    candle(state, 29_850, 30_000, 29_900)
    assert rest.find_order(SYMBOL, link).orderStatus == "Filled"
    [fill] = rest.executions(SYMBOL, 0)
    assert fill.isMaker and fill.execPrice == "29900" and fill.orderLinkId == link
    assert Decimal(fill.execFee) == Decimal("0.01") * 29_900 * state.maker_fee
    assert rest.position(SYMBOL).signed_qty() == pytest.approx(0.01)


def test_a_market_order_in_pieces_reports_each_with_what_is_left(fake, rest):
    state, _ = fake
    state.partial_fills = 3
    link = send(rest, "sell", 0.03)
    fills = rest.executions(SYMBOL, 0)
    assert [f.execQty for f in fills] == ["0.01", "0.01", "0.01"]
    assert [f.leavesQty for f in fills] == ["0.02", "0.01", "0"]
    assert len({f.execId for f in fills}) == 3 and not any(f.isMaker for f in fills)
    assert rest.find_order(SYMBOL, link).cumExecQty == "0.03"
    assert rest.position(SYMBOL).signed_qty() == pytest.approx(-0.03)


def test_a_post_only_limit_that_would_take_is_cancelled_not_filled(fake, rest):
    link = send(rest, "buy", 0.01, "limit", price=30_100, post_only=True)
    order = rest.find_order(SYMBOL, link)
    assert (order.orderStatus, order.rejectReason) == ("Cancelled", "EC_PostOnlyWillTakeLiquidity")
    assert rest.executions(SYMBOL, 0) == [] and rest.position(SYMBOL).signed_qty() == 0


def test_reduce_only_needs_a_position_and_never_reverses_it(fake, rest):
    with pytest.raises(VenueRejected) as refused:
        send(rest, "sell", 0.01, reduce_only=True)
    assert refused.value.code == 110017
    send(rest, "buy", 0.02)
    link = send(rest, "sell", 0.05, reduce_only=True)
    assert rest.find_order(SYMBOL, link).cumExecQty == "0.02"
    assert rest.position(SYMBOL).signed_qty() == 0


def test_a_stop_waits_untriggered_then_fills_when_the_price_falls_to_it(fake, rest):
    state, _ = fake
    send(rest, "buy", 0.01)
    link = send(rest, "sell", 0.01, "stop", trigger=29_500, reduce_only=True)
    assert rest.find_order(SYMBOL, link).orderStatus == "Untriggered"
    candle(state, 29_600, 30_000, 29_700)
    assert rest.find_order(SYMBOL, link).orderStatus == "Untriggered"
    candle(state, 29_400, 29_700, 29_450)
    assert rest.find_order(SYMBOL, link).orderStatus == "Filled"
    assert rest.position(SYMBOL).signed_qty() == 0


def test_amend_moves_a_resting_limit_and_one_moved_through_the_market_fills(fake, rest):
    state, _ = fake
    link = send(rest, "buy", 0.01, "limit", price=29_000)
    rules = rest.instrument(SYMBOL)
    rest.amend(SYMBOL, link, price=rules.price(29_500.04), qty=rules.qty(0.02, market=False))
    order = rest.find_order(SYMBOL, link)
    assert (order.orderStatus, order.price, order.qty, order.leavesQty) == ("New", "29500", "0.02", "0.02")
    rest.amend(SYMBOL, link, price="30100")
    assert rest.find_order(SYMBOL, link).orderStatus == "Filled"
    [fill] = rest.executions(SYMBOL, 0)
    assert fill.execPrice == "30000" and not fill.isMaker  # taker at the market, not at its own limit
    with pytest.raises(VenueRejected) as late:
        rest.amend(SYMBOL, link, price="29000")
    assert late.value.code == 110001
    with pytest.raises(VenueRejected) as off_grid:
        rest.amend(SYMBOL, send(rest, "buy", 0.01, "limit", price=29_000), price="29000.05")
    assert off_grid.value.code == 10001 and "multiple of 0.1" in off_grid.value.message
    with pytest.raises(ValueError):
        rest.amend(SYMBOL, link)
    assert sum(1 for p, _ in state.requests if p == "/v5/order/amend") == 4  # the empty one never left


def test_cancel_ends_a_resting_order_once(fake, rest):
    link = send(rest, "sell", 0.01, "limit", price=31_000)
    rest.cancel(SYMBOL, link)
    assert rest.find_order(SYMBOL, link).orderStatus == "Cancelled"
    with pytest.raises(VenueRejected) as again:
        rest.cancel(SYMBOL, link)
    assert again.value.code == 110001


def test_a_reused_link_id_is_an_unknown_outcome_that_a_lookup_resolves(fake, rest):
    state, _ = fake
    link = send(rest, "buy", 0.01, "limit", price=29_000)
    body = next(b for p, b in state.requests if p == "/v5/order/create")
    with pytest.raises(OutcomeUnknown):
        rest.create(body)
    assert rest.find_order(SYMBOL, link).orderStatus == "New"
    assert len(state.orders) == 1


def test_a_clock_that_drifted_is_measured_again_and_the_call_goes_through(fake, rest):
    state, _ = fake
    times = sum(1 for p, _ in state.requests if p == "/v5/market/time")
    state.clock_shift_ms = 40_000  # the venue's clock is 40 s ahead of what the client last measured
    assert rest.wallet().totalEquity
    assert sum(1 for p, _ in state.requests if p == "/v5/market/time") == times + 1
    assert rest.clock.offset_ms == pytest.approx(40_000, abs=2_000)


def test_a_wrong_secret_is_refused_without_the_secret_in_the_error(fake):
    bad = BybitRest(Credentials(API_KEY, "this-is-not-the-secret"), endpoint=fake[1].url, timeout=2.0)
    with pytest.raises(VenueRejected) as refused:
        bad.wallet()
    assert refused.value.code == 10004
    assert "this-is-not-the-secret" not in str(refused.value) and "this-is-not-the-secret" not in repr(bad.__dict__)
