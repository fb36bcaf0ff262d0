"""Bybit v5 wire format: decoders on the real websocket messages in ../shared/data and on the examples of
Bybit's documentation, their translation into events, and instrument rules against exact decimals."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradebus.bus import events as ev
from tradebus.components.base import Stamper
from tradebus.live import bybit_wire as w

from .conftest import SHARED_DATA

WS = SHARED_DATA / "bybit" / "ws_v5"
FILES = sorted(WS.glob("*.jsonl")) if WS.exists() else []


class _Clock:
    def now(self) -> int:
        return 1_700_000_000_000_000_000


STAMP = Stamper(_Clock(), seed="wire", system="s1")


@pytest.mark.skipif(not FILES, reason="../shared/data is absent")
def test_every_real_websocket_message_decodes_to_what_it_says():
    seen = set()
    for path in FILES:
        for line in path.read_text().splitlines():
            raw = json.loads(line)
            frame = w.decode(line)
            kind = raw["topic"].split(".")[0]
            seen.add(kind)
            assert frame.topic == raw["topic"] and frame.type == raw["type"] and frame.ts == raw.get("ts", 0)
            d = raw["data"]
            if kind == "publicTrade":
                assert [(t.T, t.s, t.S, t.v, t.p, t.i) for t in frame.data] == [
                    (x["T"], x["s"], x["S"], x["v"], x["p"], x["i"]) for x in d]
            elif kind == "orderbook":
                assert frame.data.s == d["s"] and frame.data.u == d["u"] and frame.data.seq == d["seq"]
                assert [list(x) for x in frame.data.b] == d["b"] and [list(x) for x in frame.data.a] == d["a"]
            elif kind == "tickers":
                for k in ("symbol", "lastPrice", "markPrice", "bid1Price", "ask1Price", "fundingRate"):
                    assert getattr(frame.data, k) == d.get(k)
            elif kind == "liquidation":
                assert (frame.data.symbol, frame.data.side, frame.data.size, frame.data.price) == (
                    d["symbol"], d["side"], d["size"], d["price"])
            elif kind == "allLiquidation":
                assert [(x.s, x.S, x.v, x.p) for x in frame.data] == [(x["s"], x["S"], x["v"], x["p"]) for x in d]
            else:
                pytest.fail(f"unexpected topic {raw['topic']}")
    assert seen == {"publicTrade", "orderbook", "tickers", "liquidation", "allLiquidation"}


def test_bad_frames_are_wire_errors_naming_the_topic():
    with pytest.raises(w.WireError, match="no decoder"):
        w.decode('{"topic": "nosuch.BTCUSDT", "type": "snapshot", "ts": 1, "data": []}')
    with pytest.raises(w.WireError, match="'publicTrade.BTCUSDT'"):
        w.decode('{"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 1, "data": [{"T": "x"}]}')
    with pytest.raises(w.WireError, match="not a Bybit data push"):
        w.decode('{"success": true, "op": "subscribe"}')
    with pytest.raises(w.WireError, match="not a Bybit data push"):
        w.decode('{"topic": "kline.5.BTCUSDT", "data": [')  # cut off mid-frame
    for body in (b"<html>403 Forbidden</html>", b"[]", b'{"retMsg": "OK"}'):
        with pytest.raises(w.WireError, match="not a Bybit REST envelope"):
            w.decode_rest(body, w.OrderAck)
    with pytest.raises(w.WireError, match="result"):
        w.decode_rest(b'{"retCode": 0, "retMsg": "OK"}', w.OrderAck)
    assert w.is_control({"success": True, "ret_msg": "pong", "op": "ping"})
    assert not w.is_control({"topic": "kline.5.BTCUSDT", "data": []})


def kline(confirm: bool) -> str:
    return json.dumps({"topic": "kline.5.BTCUSDT", "type": "snapshot", "ts": 1672324988882, "data": [{
        "start": 1672324800000, "end": 1672325099999, "interval": "5", "open": "16649.5", "close": "16677",
        "high": "16677", "low": "16608", "volume": "2.081", "turnover": "34666.4005", "confirm": confirm,
        "timestamp": 1672324988882}]})


def test_only_a_confirmed_kline_is_a_bar_stamped_at_its_close():
    assert w.bar(w.decode(kline(False)).data[0], "BTCUSDT", "5m", STAMP) is None
    b = w.bar(w.decode(kline(True)).data[0], "BTCUSDT", "5m", STAMP)
    assert isinstance(b, ev.BarClosed)
    assert b.open_time == 1672324800000 * w.MS and b.ts_event == 1672325100000 * w.MS  # open + 5 minutes
    assert (b.open, b.high, b.low, b.close, b.volume) == (16649.5, 16677.0, 16608.0, 16677.0, 2.081)
    assert (b.venue, b.market, b.symbol, b.timeframe, b.system) == ("bybit", "linear", "BTCUSDT", "5m", "s1")


# --- instrument rules -----------------------------------------------------------------------------

BTC = w.InstrumentRules.of(w.Instrument(
    "BTCUSDT", "Trading", w._LotSize(qtyStep="0.001", minOrderQty="0.001", maxOrderQty="1190.000",
                                    maxMktOrderQty="119.000", minNotionalValue="5"), w._PriceFilter("0.10")))


@given(st.floats(min_value=0.001, max_value=119.0, allow_nan=False))
def test_quantities_round_down_onto_the_step_as_plain_decimals(qty):
    text = BTC.qty(qty, market=True)
    q = Decimal(text)
    assert "e" not in text.lower() and q % Decimal("0.001") == 0
    assert q <= Decimal(repr(qty)) < q + Decimal("0.001")


@given(st.floats(min_value=0.1, max_value=1e6, allow_nan=False))
def test_prices_land_on_the_tick_on_the_safe_side(price):
    exact = Decimal(repr(price))
    down, up, near = (Decimal(BTC.price(price, r)) for r in ("down", "up", "nearest"))
    for p in (down, up, near):
        assert p % Decimal("0.1") == 0
    assert down <= exact <= up and up - down <= Decimal("0.1")
    assert abs(near - exact) <= Decimal("0.05")


def test_orders_the_venue_would_refuse_are_refused_here_with_the_rule():
    assert BTC.qty(0.1 + 0.2, market=False) == "0.3"  # float noise does not push it past a step
    assert BTC.qty(1e-3, market=True) == "0.001" and BTC.qty(150.0, market=False) == "150"
    with pytest.raises(w.OrderRuleError, match="below the minimum 0.001"):
        BTC.qty(0.0009, market=True)
    with pytest.raises(w.OrderRuleError, match="above the maximum 119 for market orders"):
        BTC.qty(150.0, market=True)
    with pytest.raises(w.OrderRuleError, match="notional 4.5 below the minimum 5"):
        BTC.qty(0.001, market=True, price=4500.0)
    with pytest.raises(w.OrderRuleError, match="notional 4.9999 below"):
        BTC.qty(0.001, market=True, price=4999.93)  # 4999.93 rounds to the tick 4999.9 the venue sees
    spot = w.InstrumentRules.of(w.Instrument("BTCUSDT", "Trading", w._LotSize(
        "0.000048", "71.73956243", basePrecision="0.000001", minOrderAmt="1"), w._PriceFilter("0.01")))
    assert (spot.step, spot.min_notional) == (Decimal("0.000001"), Decimal("1"))
    assert spot.qty(0.0123456789, market=False) == "0.012345"
    with pytest.raises(w.OrderRuleError, match="must be a positive number"):
        BTC.price(0.0)
    with pytest.raises(w.OrderRuleError, match="must be a positive number"):
        BTC.price(float("inf"))
    with pytest.raises(w.OrderRuleError, match="not a number"):
        BTC.qty(float("nan"), market=True)
    with pytest.raises(w.OrderRuleError, match="not a number"):
        BTC.qty(0.01, market=True, price=float("nan"))


# --- Bybit's documented examples ------------------------------------------------------------------

DOCS = json.loads((Path(__file__).parent / "bybit_doc_samples.json").read_text())


def doc(key: str) -> str:
    return json.dumps(DOCS[key]["message"])


def test_documented_private_pushes_become_events():
    ex = w.decode(doc("execution"))
    assert ex.topic == "execution" and ex.ts == 1746270400355
    f = w.fill(ex.data[0], STAMP)
    assert isinstance(f, ev.Fill)
    assert (f.order_id, f.venue_order_id, f.exec_id) == ("venue-9aac161b-8ed6-450d-9cab-c5cc67c21784",
                                                        "9aac161b-8ed6-450d-9cab-c5cc67c21784",
                                                        "0ab1bdf7-4219-438b-b30a-32ec863018f7")
    assert (f.side, f.price, f.qty, f.fee, f.liquidity, f.leaves_qty) == ("sell", 95900.1, 0.5, 26.3725275, "taker", 0.0)
    assert f.ts_event == 1746270400353 * w.MS
    assert w.fill(msgspec.structs.replace(ex.data[0], execType="Funding"), STAMP) is None

    order = w.decode(doc("order")).data[0]
    assert order.orderStatus == "Filled" and w.order_event(order, STAMP) is None  # its fills are executions
    accepted = w.order_event(msgspec.structs.replace(order, orderStatus="New", orderLinkId="01HX-entry"), STAMP)
    assert isinstance(accepted, ev.OrderAccepted) and accepted.order_id == "01HX-entry"
    assert accepted.venue_order_id == order.orderId and accepted.ts_event == 1672364262457 * w.MS
    rejected = w.order_event(msgspec.structs.replace(order, orderStatus="Rejected", rejectReason="EC_PostOnlyWillTakeLiquidity"), STAMP)
    assert isinstance(rejected, ev.OrderRejected) and rejected.reason == "EC_PostOnlyWillTakeLiquidity"
    cancelled = w.order_event(msgspec.structs.replace(order, orderStatus="PartiallyFilledCanceled"), STAMP)
    assert isinstance(cancelled, ev.OrderCancelled)

    pos = w.position_event(w.decode(doc("position")).data[0], STAMP)
    assert (pos.symbol, pos.qty, pos.realized_pnl, pos.mark_price) == ("BTCUSDT", 0.0, -25.06579337, 28184.5)

    wallet = w.decode(doc("wallet"))
    assert w.account_event(wallet.data[0], wallet.ts, STAMP) is None  # no USDT in the example
    btc = w.account_event(wallet.data[0], wallet.ts, STAMP, currency="BTC")
    assert (btc.balance, btc.equity, btc.available) == (0.00102964, 0.00102964, 0.00102964)


def test_documented_rest_results_decode_and_give_instrument_rules():
    page = w.decode_rest(doc("instruments_info"), w.InstrumentsPage)
    rules = w.InstrumentRules.of(page.list[0])
    assert (rules.symbol, rules.trading) == ("BTCUSDT", True)
    assert (rules.tick, rules.step, rules.min_qty, rules.max_market_qty, rules.min_notional) == (
        Decimal("0.10"), Decimal("0.001"), Decimal("0.001"), Decimal("500.000"), Decimal("5"))
    assert rules.qty(600.0, market=False) == "600"
    with pytest.raises(w.OrderRuleError, match="maximum 500 for market"):
        rules.qty(600.0, market=True)
    ack = w.decode_rest(doc("order_create"), w.OrderAck)
    assert (ack.orderId, ack.orderLinkId) == ("1321003749386327552", "spot-test-postonly")
    execs = w.decode_rest(doc("execution_list"), w.ExecutionsPage)
    assert execs.nextPageCursor and w.fill(execs.list[0], STAMP).exec_id == "e0cbe81d-0f18-5866-9415-cf319b5dab3b"
    opened = w.decode_rest(doc("order_realtime"), w.OrdersPage).list[0]
    assert isinstance(w.order_event(opened, STAMP), ev.OrderAccepted) and opened.orderLinkId == "test-000005"
    short = w.decode_rest(doc("position_list"), w.PositionsPage).list[0]
    assert short.signed_qty() == -300.0 and w.position_event(short, STAMP).avg_price == 27464.50441675
    with pytest.raises(w.WireError, match="retCode 10001: params error"):
        w.decode_rest('{"retCode": 10001, "retMsg": "params error", "result": {}}', w.OrderAck)


def test_documented_kline_is_an_open_candle():
    assert w.bar(w.decode(doc("kline")).data[0], "BTCUSDT", "5m", STAMP) is None  # confirm: false
