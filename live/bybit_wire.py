"""Bybit v5 on the wire: typed frames, their translation into tradebus events, and instrument rules.

Pure functions and msgspec Structs, no I/O and no pybit, so the fake server, the adapter and the tests
share one reading of the venue's messages. Bybit writes numbers as decimal strings; they stay strings
in the frames and become floats only in tradebus events, and orders go back out as decimal strings
quantized to the instrument's tick and step (``InstrumentRules``): ``str(1e-05)`` would be refused.

A frame that does not match its topic's shape raises ``WireError`` naming the topic: the caller logs it
and carries on (an exception escaping a pybit callback would kill the stream for good).
"""

from __future__ import annotations

import builtins
import math
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Any, Callable, Literal

import msgspec
import numpy as np

from tradebus.bus import events as ev
from tradebus.components.timeframes import tf_ns

MS = 1_000_000  # ns


class WireError(ValueError):
    """A venue message that is not what its topic promises."""


def _f(text: str) -> float:
    return float(text) if text else 0.0


# --- public topics ------------------------------------------------------------------------------------


class KlineItem(msgspec.Struct, frozen=True):
    start: int
    end: int
    interval: str
    open: str
    close: str
    high: str
    low: str
    volume: str
    turnover: str
    confirm: bool
    timestamp: int


class TradeItem(msgspec.Struct, frozen=True):
    T: int
    s: str
    S: Literal["Buy", "Sell"]
    v: str
    p: str
    i: str
    L: str = ""  # tick direction (derivatives only)
    BT: bool = False  # block trade


class Book(msgspec.Struct, frozen=True):
    s: str
    b: list[tuple[str, str]]
    a: list[tuple[str, str]]
    u: int
    seq: int = 0


class Ticker(msgspec.Struct, frozen=True):
    """A tickers push: a snapshot has every field, a delta only the changed ones (the rest None)."""

    symbol: str
    lastPrice: str | None = None
    markPrice: str | None = None
    indexPrice: str | None = None
    bid1Price: str | None = None
    bid1Size: str | None = None
    ask1Price: str | None = None
    ask1Size: str | None = None
    fundingRate: str | None = None
    nextFundingTime: str | None = None
    openInterest: str | None = None
    volume24h: str | None = None
    turnover24h: str | None = None


class Liquidation(msgspec.Struct, frozen=True):
    """``liquidation.SYMBOL`` (one object a push)."""

    symbol: str
    side: Literal["Buy", "Sell"]
    size: str
    price: str
    updatedTime: int


class LiquidationItem(msgspec.Struct, frozen=True):
    """``allLiquidation.SYMBOL`` (a list a push)."""

    T: int
    s: str
    S: Literal["Buy", "Sell"]
    v: str
    p: str


class _Frame(msgspec.Struct, frozen=True):
    topic: str
    data: Any  # typed by the topic, in a second step
    type: str = "snapshot"
    ts: int = 0
    id: str = ""
    creationTime: int = 0


@dataclass(frozen=True)
class Frame:
    """A data push: its topic, push type (snapshot/delta), venue time (ms) and typed data."""

    topic: str
    type: str
    ts: int
    data: Any


# --- private topics -----------------------------------------------------------------------------------


class Execution(msgspec.Struct, frozen=True):
    symbol: str
    orderId: str
    orderLinkId: str
    side: Literal["Buy", "Sell"]
    execId: str
    execPrice: str
    execQty: str
    execFee: str
    execType: str
    execTime: str
    isMaker: bool
    leavesQty: str = "0"
    orderType: str = ""
    feeRate: str = ""
    markPrice: str = ""
    seq: int = 0
    category: str = ""  # REST lists leave it out (the request named it)


class Order(msgspec.Struct, frozen=True):
    symbol: str
    orderId: str
    orderLinkId: str
    side: Literal["Buy", "Sell"]
    orderType: str
    orderStatus: str
    qty: str
    price: str = ""
    avgPrice: str = ""
    leavesQty: str = ""
    cumExecQty: str = ""
    cumExecFee: str = ""
    timeInForce: str = ""
    reduceOnly: bool = False
    rejectReason: str = ""
    cancelType: str = ""
    createdTime: str = ""
    updatedTime: str = ""
    category: str = ""


class Position(msgspec.Struct, frozen=True):
    symbol: str
    side: str  # Buy, Sell, or "" when flat
    size: str
    entryPrice: str = ""
    avgPrice: str = ""  # REST /v5/position/list names the entry price so
    markPrice: str = ""
    unrealisedPnl: str = ""
    cumRealisedPnl: str = ""
    positionValue: str = ""
    leverage: str = ""
    updatedTime: str = ""
    seq: int = 0
    category: str = ""

    def signed_qty(self) -> float:
        q = _f(self.size)
        return -q if self.side == "Sell" else q


class WalletCoin(msgspec.Struct, frozen=True):
    coin: str
    walletBalance: str = ""
    equity: str = ""
    availableToWithdraw: str = ""
    totalPositionIM: str = ""
    totalOrderIM: str = ""
    unrealisedPnl: str = ""


class Wallet(msgspec.Struct, frozen=True):
    accountType: str
    coin: list[WalletCoin]
    totalEquity: str = ""
    totalWalletBalance: str = ""
    totalAvailableBalance: str = ""


_DATA: dict[str, type] = {
    "kline": list[KlineItem], "publicTrade": list[TradeItem], "orderbook": Book, "tickers": Ticker,
    "liquidation": Liquidation, "allLiquidation": list[LiquidationItem],
    "execution": list[Execution], "order": list[Order], "position": list[Position], "wallet": list[Wallet],
}


def is_control(msg: dict[str, Any]) -> bool:
    """Replies to subscribe, auth and ping carry ``op``; data pushes carry ``topic``."""
    return "op" in msg and "topic" not in msg


def frame(msg: Any) -> Frame:
    """One data push as pybit hands it over (parsed JSON), its ``data`` typed by the topic's first
    segment (``kline.5.BTCUSDT`` -> kline)."""
    try:
        raw = msgspec.convert(msg, _Frame)
    except msgspec.ValidationError as exc:  # not the shape of a push (a control reply, say)
        raise WireError(f"not a Bybit data push: {exc}") from None
    kind = raw.topic.split(".", 1)[0]
    shape = _DATA.get(kind)
    if shape is None:
        raise WireError(f"topic {raw.topic!r}: no decoder (known: {', '.join(_DATA)})")
    try:
        data = msgspec.convert(raw.data, shape)
    except msgspec.ValidationError as exc:
        raise WireError(f"topic {raw.topic!r}: {exc}") from None
    return Frame(raw.topic, raw.type, raw.ts or raw.creationTime, data)


def decode(raw: bytes | str) -> Frame:
    """One data push from its JSON text."""
    try:
        msg = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:  # malformed JSON
        raise WireError(f"not a Bybit data push: {exc}") from None
    return frame(msg)


def typed(result: Any, shape: type) -> Any:
    """A REST ``result`` pybit already parsed (dicts and lists), as ``shape``; a WireError if it is not."""
    try:
        return msgspec.convert(result, shape)
    except msgspec.ValidationError as exc:
        raise WireError(f"unexpected {shape.__name__}: {exc}") from None


class _Envelope(msgspec.Struct, frozen=True):
    retCode: int
    retMsg: str = ""
    result: msgspec.Raw = msgspec.Raw(b"null")


_ENVELOPE = msgspec.json.Decoder(_Envelope)


def decode_rest(raw: bytes | str, shape: type) -> Any:
    """The ``result`` of a REST envelope as ``shape``; a non-zero retCode or a body that is not the
    envelope (an HTML error page, say) is a WireError."""
    try:
        env = _ENVELOPE.decode(raw)
    except msgspec.DecodeError as exc:
        raise WireError(f"not a Bybit REST envelope: {exc}") from None
    if env.retCode != 0:
        raise WireError(f"retCode {env.retCode}: {env.retMsg}")
    try:
        return msgspec.json.decode(env.result, type=shape)
    except msgspec.DecodeError as exc:
        raise WireError(f"result: {exc}") from None


# --- into tradebus events -----------------------------------------------------------------------------

Stamp = Callable[..., dict[str, Any]]  # components.base.Stamper: (ts_event, cause) -> envelope


def bar(item: KlineItem, symbol: str, timeframe: str, stamp: Stamp, market: str = "linear") -> ev.BarClosed | None:
    """A confirmed candle as a bar event (stamped at its close); an open candle is not a bar."""
    if not item.confirm:
        return None
    close_ns = (item.end + 1) * MS  # Bybit's end is the last millisecond inside the candle
    return ev.BarClosed(**stamp(close_ns), venue="bybit", market=market, symbol=symbol, timeframe=timeframe,
                        open_time=item.start * MS, open=_f(item.open), high=_f(item.high), low=_f(item.low),
                        close=_f(item.close), volume=_f(item.volume), turnover=_f(item.turnover))


def rest_kline(row: list[str], interval: str, length_ms: int) -> KlineItem:
    """A closed candle from REST (``[start, open, high, low, close, volume, turnover]``) as the websocket's
    confirmed push, so both reach ``bar`` alike. The caller keeps only closed rows."""
    t = int(row[0])
    return KlineItem(start=t, end=t + length_ms - 1, interval=interval, open=row[1], close=row[4], high=row[2],
                     low=row[3], volume=row[5], turnover=row[6], confirm=True, timestamp=t + length_ms)


def venue_order_id(link_id: str, order_id: str) -> str:
    """Our order id: the link id we sent; an order placed outside tradebus is named by the venue's id."""
    return link_id or f"venue-{order_id}"


def fill(item: Execution, stamp: Stamp) -> ev.Fill | None:
    """A trade execution as a fill (funding and other execution types are not fills)."""
    if item.execType != "Trade":
        return None
    return ev.Fill(**stamp(int(item.execTime) * MS), order_id=venue_order_id(item.orderLinkId, item.orderId),
                   venue_order_id=item.orderId, exec_id=item.execId, symbol=item.symbol,
                   side="buy" if item.side == "Buy" else "sell", price=_f(item.execPrice), qty=_f(item.execQty),
                   fee=_f(item.execFee), liquidity="maker" if item.isMaker else "taker", leaves_qty=_f(item.leavesQty))


_CANCELLED = {"Cancelled", "PartiallyFilledCanceled", "Deactivated"}


def order_event(item: Order, stamp: Stamp) -> ev.Event | None:
    """An order update as the lifecycle event it means; fills come from executions, not from here."""
    ts = int(item.updatedTime or item.createdTime or 0) * MS
    oid = venue_order_id(item.orderLinkId, item.orderId)
    if item.orderStatus in ("New", "Untriggered"):
        return ev.OrderAccepted(**stamp(ts), order_id=oid, venue_order_id=item.orderId)
    if item.orderStatus == "Rejected":
        return ev.OrderRejected(**stamp(ts), order_id=oid, reason=item.rejectReason or "rejected by the venue")
    if item.orderStatus in _CANCELLED:
        return ev.OrderCancelled(**stamp(ts), order_id=oid, reason=item.cancelType or item.orderStatus)
    return None


def position_event(item: Position, stamp: Stamp) -> ev.PositionChanged:
    return ev.PositionChanged(**stamp(int(item.updatedTime or 0) * MS), symbol=item.symbol, qty=item.signed_qty(),
                              avg_price=_f(item.entryPrice or item.avgPrice), realized_pnl=_f(item.cumRealisedPnl),
                              unrealized_pnl=_f(item.unrealisedPnl), mark_price=_f(item.markPrice))


def account_event(item: Wallet, ts_ms: int, stamp: Stamp, currency: str = "USDT") -> ev.AccountState | None:
    coin = next((c for c in item.coin if c.coin == currency), None)
    if coin is None:
        return None
    return ev.AccountState(**stamp(ts_ms * MS), currency=currency, balance=_f(coin.walletBalance),
                           equity=_f(coin.equity), margin_used=_f(coin.totalPositionIM) + _f(coin.totalOrderIM),
                           available=_f(coin.availableToWithdraw))  # the account total is in USD: not this coin


# --- instrument rules ---------------------------------------------------------------------------------


class OrderRuleError(ValueError):
    """An order the venue would refuse (below the minimum size or notional, above the maximum)."""


class _LotSize(msgspec.Struct, frozen=True):
    minOrderQty: str
    maxOrderQty: str
    qtyStep: str = ""  # derivatives
    basePrecision: str = ""  # spot names its step so
    maxMktOrderQty: str = ""
    minNotionalValue: str = ""  # derivatives
    minOrderAmt: str = ""  # spot


class _PriceFilter(msgspec.Struct, frozen=True):
    tickSize: str
    minPrice: str = ""
    maxPrice: str = ""


class Instrument(msgspec.Struct, frozen=True):
    """One row of ``GET /v5/market/instruments-info``."""

    symbol: str
    status: str
    lotSizeFilter: _LotSize
    priceFilter: _PriceFilter
    contractType: str = ""
    baseCoin: str = ""
    quoteCoin: str = ""


class InstrumentsPage(msgspec.Struct, frozen=True):
    category: str
    list: builtins.list[Instrument]  # the venue's field name
    nextPageCursor: str = ""


class ExecutionsPage(msgspec.Struct, frozen=True):
    list: builtins.list[Execution]  # the venue's field name
    category: str = ""
    nextPageCursor: str = ""


class OrdersPage(msgspec.Struct, frozen=True):
    list: builtins.list[Order]  # the venue's field name
    category: str = ""
    nextPageCursor: str = ""


class PositionsPage(msgspec.Struct, frozen=True):
    list: builtins.list[Position]  # the venue's field name
    category: str = ""
    nextPageCursor: str = ""


class OrderAck(msgspec.Struct, frozen=True):
    """``POST /v5/order/create``: an acknowledgement, not a fill."""

    orderId: str
    orderLinkId: str


def _dec(x: float | str) -> Decimal:
    # repr gives the shortest string that round-trips: 0.1 is Decimal("0.1"), not 0.1000000000000000055...
    return Decimal(x if isinstance(x, str) else repr(float(x)))


def _text(d: Decimal) -> str:
    return format(d.normalize(), "f")


_ROUNDING = {"down": ROUND_FLOOR, "up": ROUND_CEILING, "nearest": ROUND_HALF_EVEN}


@dataclass(frozen=True)
class InstrumentRules:
    """What an order on one symbol must respect, as the venue states it."""

    symbol: str
    tick: Decimal
    step: Decimal
    min_qty: Decimal
    max_qty: Decimal
    max_market_qty: Decimal
    min_notional: Decimal
    trading: bool

    @classmethod
    def of(cls, inst: Instrument) -> "InstrumentRules":
        lot, pf = inst.lotSizeFilter, inst.priceFilter
        return cls(inst.symbol, Decimal(pf.tickSize), Decimal(lot.qtyStep or lot.basePrecision),
                   Decimal(lot.minOrderQty), Decimal(lot.maxOrderQty), Decimal(lot.maxMktOrderQty or lot.maxOrderQty),
                   Decimal(lot.minNotionalValue or lot.minOrderAmt or "0"), inst.status == "Trading")

    def qty(self, qty: float, *, market: bool, price: float | None = None) -> str:
        """The quantity as the venue takes it: rounded down to the step (never more than was sized),
        refused below the minimum size or notional and above the maximum for the order type."""
        if not (math.isfinite(qty) and (price is None or math.isfinite(price))):
            raise OrderRuleError(f"{self.symbol}: qty {qty!r} at price {price!r} is not a number")
        q = (_dec(qty) / self.step).to_integral_value(ROUND_DOWN) * self.step
        cap = self.max_market_qty if market else self.max_qty
        if q < self.min_qty:
            raise OrderRuleError(f"{self.symbol}: qty {qty!r} rounds to {_text(q)} below the minimum {_text(self.min_qty)}")
        if q > cap:
            raise OrderRuleError(f"{self.symbol}: qty {_text(q)} above the maximum {_text(cap)} for "
                                 f"{'market' if market else 'limit'} orders")
        if price is not None:
            notional = q * Decimal(self.price(price))  # at the price the venue will see
            if notional < self.min_notional:
                raise OrderRuleError(f"{self.symbol}: notional {_text(notional)} below the minimum "
                                     f"{_text(self.min_notional)}")
        return _text(q)

    def price(self, price: float, rounding: Literal["down", "up", "nearest"] = "nearest") -> str:
        """A price on the tick grid; a buy limit rounds down and a sell limit up (never a worse price)."""
        if not (price > 0 and math.isfinite(price)):
            raise OrderRuleError(f"{self.symbol}: price {price!r} must be a positive number")
        p = (_dec(price) / self.tick).to_integral_value(_ROUNDING[rounding]) * self.tick
        if p <= 0:
            raise OrderRuleError(f"{self.symbol}: price {price!r} rounds to zero at tick {_text(self.tick)}")
        return _text(p)


def parse_klines(rows: list[list[str]], mark: bool, timeframe: str, now_ns: int) -> dict[str, np.ndarray]:
    """Turn raw kline rows (newest first, strings) into sorted columns of closed candles only."""
    length = tf_ns(timeframe)
    width = 5 if mark else 7
    if not rows:
        arr = np.zeros((0, width))
    else:
        arr = np.array([[float(x) for x in row[:width]] for row in rows], dtype=np.float64)
    open_time = arr[:, 0].astype(np.int64) * MS
    order = np.argsort(open_time, kind="stable")
    arr, open_time = arr[order], open_time[order]
    closed = open_time + length <= now_ns
    cols: dict[str, np.ndarray] = {"open_time": open_time[closed]}
    names = ("open", "high", "low", "close") if mark else ("open", "high", "low", "close", "volume", "turnover")
    for i, name in enumerate(names, start=1):
        cols[name] = arr[closed, i]
    return cols
