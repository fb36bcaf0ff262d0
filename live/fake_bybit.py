"""A fake Bybit v5 venue on loopback that speaks the real wire format: REST and websockets.

REST (``FakeBybit``, a threading HTTP server) answers with the real envelope ``{"retCode", "retMsg",
"result", "retExtInfo", "time"}``:

- public: server time, klines and mark-price klines (rows ``[startMs, open, high, low, close, volume,
  turnover]`` as strings, newest first, at most ``limit`` of the newest rows in [start, end], the
  still-open candle included), funding history, instruments-info;
- private, signed: order create / cancel / cancel-all / realtime / history, execution list, position
  list, wallet balance. Every signed request is checked as Bybit does it: the API key, the HMAC-SHA256
  over ``timestamp + key + recv_window + payload`` (the raw query string or JSON body), and the
  timestamp against the recv window. Orders are checked against the instrument (tick, step, minimum
  size and notional); a reused ``orderLinkId`` is refused with 110072.

Matching: a market order fills at the last price (optionally in ``partial_fills`` pieces); a limit order
fills at once if it crosses, else rests until a candle trades through it (post-only orders that would
cross are cancelled); a conditional order (``triggerPrice``) waits Untriggered until a candle reaches
the trigger, then fills as a market order; reduce-only orders never open or grow a position.

Websockets (``FakeBybitWs``, the ``websockets`` sync server): ``/v5/public/linear`` (subscribe acks,
both pong forms, kline pushes with open and confirmed candles) and ``/v5/private`` (auth checked like
Bybit: ``hex_hmac("GET/realtime" + expires)``, then order / execution / position / wallet pushes).

Fault hooks: ``fail_next`` (HTTP status and retCode for the next requests), ``ack_delay`` (the create
is done, its answer comes late), ``exec_before_order``, ``duplicate_filled`` (the last order update
and execution pushed twice), ``drop_private`` (lose the next N private pushes), ``close_sockets()``,
``clock_shift_ms``. Everything received is logged (``requests``, ``frames_in``), so tests can assert
"exactly one order".
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

from tradebus.components.timeframes import BYBIT_INTERVAL, tf_ns

MS = 1_000_000
_TF_BY_INTERVAL = {v: k for k, v in BYBIT_INTERVAL.items()}
API_KEY = "fake-key-0001"
API_SECRET = "fake-secret-do-not-log"
_LINK_OK = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def _num(x: float | Decimal) -> str:
    """A decimal string as Bybit writes them: no exponent, no trailing zeros."""
    if isinstance(x, Decimal):
        return format(x.normalize(), "f")
    return np.format_float_positional(float(x), trim="-")


def sign(secret: str, text: str) -> str:
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


@dataclass
class Instrument:
    symbol: str
    tick: str = "0.1"
    step: str = "0.001"
    min_qty: str = "0.001"
    max_qty: str = "1190"
    max_mkt_qty: str = "500"
    min_notional: str = "5"

    def wire(self) -> dict:
        return {"symbol": self.symbol, "contractType": "LinearPerpetual", "status": "Trading", "baseCoin":
                self.symbol.removesuffix("USDT"), "quoteCoin": "USDT", "settleCoin": "USDT",
                "priceFilter": {"minPrice": self.tick, "maxPrice": "1999999.8", "tickSize": self.tick},
                "lotSizeFilter": {"maxOrderQty": self.max_qty, "minOrderQty": self.min_qty, "qtyStep": self.step,
                                  "maxMktOrderQty": self.max_mkt_qty, "minNotionalValue": self.min_notional}}


@dataclass
class _Pos:
    size: Decimal = Decimal(0)  # signed
    avg: Decimal = Decimal(0)
    realised: Decimal = Decimal(0)


class ApiError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        self.code, self.msg = code, msg


@dataclass
class FakeBybitState:
    """What the fake serves, what it holds, and what it saw. ``now_ms`` 0 means the wall clock."""

    now_ms: int = 0
    candles: dict[tuple[str, str], dict[str, np.ndarray]] = field(default_factory=dict)  # (symbol, tf)
    marks: dict[tuple[str, str], dict[str, np.ndarray]] = field(default_factory=dict)
    funding: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    instruments: dict[str, Instrument] = field(default_factory=lambda: {"BTCUSDT": Instrument("BTCUSDT")})
    keys: dict[str, str] = field(default_factory=lambda: {API_KEY: API_SECRET})
    balance: Decimal = Decimal(10_000)
    taker_fee: Decimal = Decimal("0.00055")
    maker_fee: Decimal = Decimal("0.0002")
    last_price: dict[str, Decimal] = field(default_factory=dict)
    orders: dict[str, dict] = field(default_factory=dict)  # orderId -> wire order
    executions: list[dict] = field(default_factory=list)
    positions: dict[str, _Pos] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    frames_in: list[dict] = field(default_factory=list)
    # --- fault hooks ---
    fail_next: list[tuple[int, int, str]] = field(default_factory=list)  # (http status, retCode, msg)
    fail_paths: set[str] = field(default_factory=set)  # fail_next applies only to these paths (empty: any)
    limit_status: int = 599
    limit_reset_ms: int = 1000  # X-Bapi-Limit-Reset-Timestamp is now + this
    ack_delay: float = 0.0  # seconds the create's answer waits (the order is made at once)
    partial_fills: int = 1
    exec_before_order: bool = False
    duplicate_filled: bool = False
    drop_private: int = 0
    clock_shift_ms: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)
    ws: "FakeBybitWs | None" = None
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def now(self) -> int:
        return (self.now_ms or int(time.time() * 1000)) + self.clock_shift_ms

    # -- market ---------------------------------------------------------------------------------------

    def add_candle(self, symbol: str, tf: str, open_ms: int, o: float, h: float, l: float, c: float,
                   v: float = 1.0, push: bool = True) -> None:
        """A candle closes: store it (REST serves it), match resting orders, push open then confirmed."""
        with self.lock:
            cols = self.candles.setdefault((symbol, tf), {k: np.empty(0) for k in
                                                          ("open_time", "open", "high", "low", "close", "volume", "turnover")})
            cols["open_time"] = np.append(cols["open_time"].astype(np.int64), np.int64(open_ms) * MS)
            for k, x in (("open", o), ("high", h), ("low", l), ("close", c), ("volume", v), ("turnover", v * c)):
                cols[k] = np.append(cols[k], x)
            self.last_price[symbol] = Decimal(_num(c))
            item = {"start": open_ms, "end": open_ms + tf_ns(tf) // MS - 1, "interval": BYBIT_INTERVAL[tf],
                    "open": _num(o), "close": _num(c), "high": _num(h), "low": _num(l), "volume": _num(v),
                    "turnover": _num(v * c), "confirm": False, "timestamp": self.now()}
            if push and self.ws is not None:
                topic = f"kline.{BYBIT_INTERVAL[tf]}.{symbol}"
                self.ws.push_public(topic, {"topic": topic, "type": "snapshot", "ts": self.now(), "data": [item]})
                self.ws.push_public(topic, {"topic": topic, "type": "snapshot", "ts": self.now(),
                                            "data": [dict(item, confirm=True)]})
            self._match(symbol, Decimal(_num(h)), Decimal(_num(l)))

    def transfer(self, amount: float) -> None:
        """Money moves in (or, negative, out of) the account outside any trade; the wallet is pushed."""
        with self.lock:
            self.balance += Decimal(_num(amount))
            self._private("wallet", [self._wallet_wire()])

    # -- orders -------------------------------------------------------------------------------------------

    def _private(self, topic: str, data: list[dict]) -> None:
        if not data:
            return
        if self.drop_private > 0:
            self.drop_private -= 1
            return
        frame = {"id": f"fake-{next(self._ids)}", "topic": topic, "creationTime": self.now(), "data": data}
        if self.ws is not None:
            self.ws.push_private(frame)

    def _inst(self, symbol: str) -> Instrument:
        inst = self.instruments.get(symbol)
        if inst is None:
            raise ApiError(10001, f"params error: symbol invalid {symbol}")
        return inst

    @staticmethod
    def _on_grid(value: str, step: str, what: str) -> Decimal:
        try:
            d = Decimal(value)
        except ArithmeticError:
            raise ApiError(10001, f"params error: {what} {value!r}") from None
        if "e" in value.lower() or d <= 0 or d % Decimal(step) != 0:
            raise ApiError(10001, f"params error: {what} {value} is not a multiple of {step}")
        return d

    def create(self, body: dict) -> dict:
        """``POST /v5/order/create``: returns the ack; pushes order, execution, position and wallet."""
        if body.get("category") != "linear":
            raise ApiError(10001, "params error: category only supports linear here")
        inst = self._inst(body.get("symbol", ""))
        link = body.get("orderLinkId", "")
        if not link or len(link) > 36 or set(link) - _LINK_OK:
            raise ApiError(10001, f"params error: orderLinkId {link!r}")
        if any(o["orderLinkId"] == link for o in self.orders.values()):
            raise ApiError(110072, "OrderLinkedID is duplicate")
        side, otype = body.get("side"), body.get("orderType")
        if side not in ("Buy", "Sell") or otype not in ("Market", "Limit"):
            raise ApiError(10001, f"params error: side {side!r} orderType {otype!r}")
        qty = self._on_grid(str(body.get("qty", "")), inst.step, "qty")
        if qty < Decimal(inst.min_qty) or qty > Decimal(inst.max_mkt_qty if otype == "Market" else inst.max_qty):
            raise ApiError(10001, f"params error: qty {qty} outside [{inst.min_qty}, max]")
        price = self._on_grid(str(body["price"]), inst.tick, "price") if otype == "Limit" else None
        ref = price or self.last_price.get(inst.symbol)
        if ref is None:
            raise ApiError(10001, "params error: no price for this symbol yet")
        if not body.get("reduceOnly") and qty * ref < Decimal(inst.min_notional):
            raise ApiError(110094, f"Order does not meet minimum order value {inst.min_notional}USDT")
        pos = self.positions.setdefault(inst.symbol, _Pos())
        sign_ = 1 if side == "Buy" else -1
        if body.get("reduceOnly") and (pos.size == 0 or (pos.size > 0) == (sign_ > 0)):
            raise ApiError(110017, "current position is zero, cannot fix reduce-only order qty")
        trigger = body.get("triggerPrice")
        now = str(self.now())
        oid = f"{next(self._ids):08d}-fake-{int(now) % 10**8}"
        order = {"category": "linear", "symbol": inst.symbol, "orderId": oid, "orderLinkId": link, "side": side,
                 "orderType": otype, "orderStatus": "New", "qty": _num(qty), "price": _num(price or 0),
                 "avgPrice": "", "leavesQty": _num(qty), "cumExecQty": "0", "cumExecValue": "0", "cumExecFee": "0",
                 "timeInForce": body.get("timeInForce", "GTC" if otype == "Limit" else "IOC"),
                 "reduceOnly": bool(body.get("reduceOnly")), "rejectReason": "EC_NoError", "cancelType": "UNKNOWN",
                 "triggerPrice": trigger or "", "triggerDirection": int(body.get("triggerDirection", 0)),
                 "createdTime": now, "updatedTime": now, "positionIdx": 0}
        if trigger:
            self._on_grid(str(trigger), inst.tick, "triggerPrice")
            if order["triggerDirection"] not in (1, 2):
                raise ApiError(10001, "params error: triggerDirection must be 1 or 2 with triggerPrice")
            order["orderStatus"] = "Untriggered"
        self.orders[oid] = order
        if order["orderStatus"] == "Untriggered":
            self._private("order", [dict(order)])
        elif otype == "Market":
            self._fill(order, self.last_price[inst.symbol], taker=True)
        else:
            self._place_limit(order)
        return {"orderId": oid, "orderLinkId": link}

    def _place_limit(self, order: dict) -> None:
        """A limit at its price: through the market it takes at once (a post-only one is cancelled
        instead), otherwise it rests."""
        last = self.last_price.get(order["symbol"])
        price = Decimal(order["price"])
        crosses = last is not None and (price >= last if order["side"] == "Buy" else price <= last)
        if crosses and order["timeInForce"] == "PostOnly":
            order.update(orderStatus="Cancelled", cancelType="CancelByUser", rejectReason="EC_PostOnlyWillTakeLiquidity")
            self._private("order", [dict(order)])
        elif crosses:
            self._fill(order, last, taker=True)
        else:
            self._private("order", [dict(order)])

    def _fill(self, order: dict, price: Decimal, taker: bool) -> None:
        """Fill what is left of an order (in ``partial_fills`` pieces), push everything it changes."""
        pos = self.positions.setdefault(order["symbol"], _Pos())
        leaves = Decimal(order["leavesQty"])
        sign_ = 1 if order["side"] == "Buy" else -1
        if order["reduceOnly"]:
            if pos.size == 0 or (pos.size > 0) == (sign_ > 0):
                order.update(orderStatus="Cancelled", cancelType="CancelByReduceOnly", leavesQty="0",
                             updatedTime=str(self.now()))
                self._private("order", [dict(order)])
                return
            leaves = min(leaves, abs(pos.size))
        step = Decimal(self._inst(order["symbol"]).step)
        pieces = max(1, min(self.partial_fills, int(leaves / step)))
        sizes = [(leaves / pieces).quantize(step, rounding="ROUND_DOWN")] * (pieces - 1)
        sizes.append(leaves - sum(sizes, Decimal(0)))
        execs, updates = [], []
        for q in sizes:
            fee = (q * price * (self.taker_fee if taker else self.maker_fee)).quantize(Decimal("0.00000001"))
            cum = Decimal(order["cumExecQty"]) + q
            value = Decimal(order["cumExecValue"]) + q * price
            left = Decimal(order["qty"]) - cum
            # A reduce-only order capped at the position ends with its last piece.
            status = "Filled" if left == 0 or (q == sizes[-1] and order["reduceOnly"]) else "PartiallyFilled"
            self._apply_position(pos, sign_ * q, price)
            self.balance -= fee
            now = str(self.now())
            order.update(cumExecQty=_num(cum), cumExecValue=_num(value), avgPrice=_num(value / cum),
                         cumExecFee=_num(Decimal(order["cumExecFee"]) + fee),
                         leavesQty=_num(left if status != "Filled" else Decimal(0)), orderStatus=status,
                         updatedTime=now)
            ex = {"category": "linear", "symbol": order["symbol"], "orderId": order["orderId"],
                  "orderLinkId": order["orderLinkId"], "side": order["side"], "execId": f"exec-{next(self._ids)}",
                  "execPrice": _num(price), "execQty": _num(q), "execFee": _num(fee), "execType": "Trade",
                  "execTime": now, "isMaker": not taker, "leavesQty": order["leavesQty"],
                  "orderType": order["orderType"], "feeRate": _num(self.taker_fee if taker else self.maker_fee),
                  "markPrice": _num(price), "seq": next(self._ids)}
            self.executions.append(ex)
            execs.append(ex)
            updates.append(dict(order))
        if self.duplicate_filled:  # a cancel racing a fill: the last update and execution said twice
            updates.append(dict(updates[-1]))
            execs.append(dict(execs[-1]))
        pushes = [("execution", execs), ("order", updates)]
        for topic, data in (reversed(pushes) if not self.exec_before_order else pushes):
            self._private(topic, data)
        self._private("position", [self._position_wire(order["symbol"])])
        self._private("wallet", [self._wallet_wire()])

    @staticmethod
    def _apply_position(pos: _Pos, signed: Decimal, price: Decimal) -> None:
        if pos.size == 0 or (pos.size > 0) == (signed > 0):  # open or add: average the entry
            total = pos.size + signed
            pos.avg = (pos.avg * abs(pos.size) + price * abs(signed)) / abs(total)
            pos.size = total
            return
        direction = 1 if pos.size > 0 else -1
        closed = min(abs(signed), abs(pos.size))
        pos.realised += closed * (price - pos.avg) * direction
        pos.size -= direction * closed
        if pos.size == 0:
            remainder = abs(signed) - closed  # a reversal opens the other side at this price
            pos.size, pos.avg = -direction * remainder, (price if remainder else Decimal(0))

    def _match(self, symbol: str, high: Decimal, low: Decimal) -> None:
        for order in list(self.orders.values()):
            if order["symbol"] != symbol or order["orderStatus"] not in ("New", "PartiallyFilled", "Untriggered"):
                continue
            if order["orderStatus"] == "Untriggered":
                trig = Decimal(order["triggerPrice"])
                if (order["triggerDirection"] == 1 and high >= trig) or (order["triggerDirection"] == 2 and low <= trig):
                    order["orderStatus"] = "Triggered"
                    self._fill(order, trig, taker=True)
            elif order["orderType"] == "Limit":
                price = Decimal(order["price"])
                if (order["side"] == "Buy" and low <= price) or (order["side"] == "Sell" and high >= price):
                    self._fill(order, price, taker=False)

    def cancel(self, body: dict) -> dict:
        order = self._find(body.get("orderId"), body.get("orderLinkId"))
        if order is None or order["orderStatus"] not in ("New", "PartiallyFilled", "Untriggered"):
            raise ApiError(110001, "order not exists or too late to cancel")
        self._cancelled(order)
        return {"orderId": order["orderId"], "orderLinkId": order["orderLinkId"]}

    def amend(self, body: dict) -> dict:
        """``POST /v5/order/amend``: a resting order's qty, price or trigger; a limit moved through the
        market fills at once as a taker (a post-only one is cancelled instead, as at create)."""
        order = self._find(body.get("orderId"), body.get("orderLinkId"))
        if order is None or order["orderStatus"] not in ("New", "PartiallyFilled", "Untriggered"):
            raise ApiError(110001, "order not exists or too late to replace")
        inst = self._inst(order["symbol"])
        new = {}
        if body.get("qty"):
            qty = self._on_grid(str(body["qty"]), inst.step, "qty")
            done = Decimal(order["cumExecQty"])
            if qty <= done or qty < Decimal(inst.min_qty):
                raise ApiError(10001, f"params error: qty {qty} must exceed the {done} filled and the minimum")
            new.update(qty=_num(qty), leavesQty=_num(qty - done))
        if body.get("price"):
            if order["orderType"] != "Limit":
                raise ApiError(10001, "params error: a market order has no price to amend")
            new["price"] = _num(self._on_grid(str(body["price"]), inst.tick, "price"))
        if body.get("triggerPrice"):
            if order["orderStatus"] != "Untriggered":
                raise ApiError(10001, "params error: only an untriggered order has a trigger to amend")
            new["triggerPrice"] = _num(self._on_grid(str(body["triggerPrice"]), inst.tick, "triggerPrice"))
        if not new:
            raise ApiError(10001, "params error: nothing to amend")
        order.update(new, updatedTime=str(self.now()))
        if order["orderType"] == "Limit" and order["orderStatus"] != "Untriggered":
            self._place_limit(order)
        else:
            self._private("order", [dict(order)])
        return {"orderId": order["orderId"], "orderLinkId": order["orderLinkId"]}

    def _cancelled(self, order: dict) -> None:
        status = "PartiallyFilledCanceled" if Decimal(order["cumExecQty"]) > 0 else (
            "Deactivated" if order["orderStatus"] == "Untriggered" else "Cancelled")
        order.update(orderStatus=status, cancelType="CancelByUser", updatedTime=str(self.now()))
        self._private("order", [dict(order)])

    def cancel_all(self, body: dict) -> dict:
        done = []
        for order in self.orders.values():
            if order["orderStatus"] in ("New", "PartiallyFilled", "Untriggered") and (
                    not body.get("symbol") or order["symbol"] == body["symbol"]):
                self._cancelled(order)
                done.append({"orderId": order["orderId"], "orderLinkId": order["orderLinkId"]})
        return {"list": done, "success": "1"}

    def _find(self, order_id: str | None, link: str | None) -> dict | None:
        if order_id:
            return self.orders.get(order_id)
        return next((o for o in self.orders.values() if link and o["orderLinkId"] == link), None)

    def open_orders(self, q: dict) -> dict:
        rows = [dict(o) for o in self.orders.values() if o["orderStatus"] in ("New", "PartiallyFilled", "Untriggered")
                and (not q.get("symbol") or o["symbol"] == q["symbol"])]
        if q.get("orderLinkId") or q.get("orderId"):
            # By id, Bybit also finds a recently closed order here.
            one = self._find(q.get("orderId"), q.get("orderLinkId"))
            rows = [dict(one)] if one else []
        return {"category": "linear", "list": rows[::-1], "nextPageCursor": ""}

    def order_history(self, q: dict) -> dict:
        rows = [dict(o) for o in self.orders.values() if (not q.get("symbol") or o["symbol"] == q["symbol"])
                and (not q.get("orderLinkId") or o["orderLinkId"] == q["orderLinkId"])]
        return {"category": "linear", "list": rows[::-1], "nextPageCursor": ""}

    def execution_list(self, q: dict) -> dict:
        start = int(q.get("startTime", 0))
        limit = min(int(q.get("limit", 50)), 100)
        rows = [e for e in self.executions if (not q.get("symbol") or e["symbol"] == q["symbol"])
                and int(e["execTime"]) >= start][::-1]  # newest first
        offset = int(q.get("cursor") or 0)
        page = rows[offset:offset + limit]
        nxt = str(offset + limit) if offset + limit < len(rows) else ""
        return {"category": "linear", "list": page, "nextPageCursor": nxt}

    def _position_wire(self, symbol: str) -> dict:
        pos = self.positions.get(symbol, _Pos())
        mark = self.last_price.get(symbol, Decimal(0))
        return {"category": "linear", "symbol": symbol, "side": "" if pos.size == 0 else ("Buy" if pos.size > 0 else "Sell"),
                "size": _num(abs(pos.size)), "avgPrice": _num(pos.avg), "entryPrice": _num(pos.avg),
                "markPrice": _num(mark), "positionValue": _num(abs(pos.size) * pos.avg),
                "unrealisedPnl": _num(pos.size * (mark - pos.avg)), "cumRealisedPnl": _num(pos.realised),
                "leverage": "10", "positionIdx": 0, "updatedTime": str(self.now()), "seq": next(self._ids)}

    def position_list(self, q: dict) -> dict:
        symbols = [q["symbol"]] if q.get("symbol") else sorted(self.positions)
        return {"category": "linear", "list": [self._position_wire(s) for s in symbols], "nextPageCursor": ""}

    def _wallet_wire(self) -> dict:
        realised = sum((p.realised for p in self.positions.values()), Decimal(0))
        upl = sum((p.size * (self.last_price.get(s, p.avg) - p.avg) for s, p in self.positions.items()), Decimal(0))
        wallet = self.balance + realised
        coin = {"coin": "USDT", "walletBalance": _num(wallet), "equity": _num(wallet + upl),
                "availableToWithdraw": _num(wallet), "totalPositionIM": "0", "totalOrderIM": "0",
                "unrealisedPnl": _num(upl)}
        return {"accountType": "UNIFIED", "totalEquity": _num(wallet + upl), "totalWalletBalance": _num(wallet),
                "totalAvailableBalance": _num(wallet), "coin": [coin]}

    def count(self, path: str) -> int:
        """How many requests reached ``path``."""
        return sum(1 for p, _ in self.requests if p == path)


def _envelope(result: Any, ret_code: int = 0, msg: str = "OK", now_ms: int = 0) -> bytes:
    return json.dumps({"retCode": ret_code, "retMsg": msg, "result": result, "retExtInfo": {},
                       "time": now_ms}).encode()


def _kline_rows(data: dict[str, np.ndarray] | None, q: dict[str, str], now_ms: int, mark: bool) -> list:
    if data is None:
        return []
    limit = min(int(q.get("limit", 200)), 1000)
    t_ms = data["open_time"] // MS
    start = int(q.get("start", 0))
    end = int(q.get("end", now_ms))
    sel = np.flatnonzero((t_ms >= start) & (t_ms <= end) & (t_ms <= now_ms))
    sel = sel[::-1][:limit]  # newest first
    names = ("open", "high", "low", "close") if mark else ("open", "high", "low", "close", "volume", "turnover")
    # A row whose candle has not closed by now_ms is served too: that is Bybit's still-open candle.
    return [[str(int(t_ms[i]))] + [_num(data[n][i]) for n in names] for i in sel]


_PRIVATE_GET = {"/v5/order/realtime": FakeBybitState.open_orders, "/v5/order/history": FakeBybitState.order_history,
                "/v5/execution/list": FakeBybitState.execution_list, "/v5/position/list": FakeBybitState.position_list,
                "/v5/account/wallet-balance": lambda st, q: {"list": [st._wallet_wire()]}}
_PRIVATE_POST = {"/v5/order/create": FakeBybitState.create, "/v5/order/amend": FakeBybitState.amend,
                 "/v5/order/cancel": FakeBybitState.cancel, "/v5/order/cancel-all": FakeBybitState.cancel_all}


class _Handler(BaseHTTPRequestHandler):
    server: "FakeBybit"

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes) -> None:
        st = self.server.state
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Bapi-Limit", "600")
        self.send_header("X-Bapi-Limit-Status", str(st.limit_status))
        self.send_header("X-Bapi-Limit-Reset-Timestamp", str(st.now() + st.limit_reset_ms))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
            pass

    def _fault(self, path: str) -> bool:
        st = self.server.state
        with st.lock:
            if not st.fail_next or (st.fail_paths and path not in st.fail_paths):
                return False
            status, code, msg = st.fail_next.pop(0)
        self._send(status, _envelope({}, code, msg, st.now()) if status == 200 else b"Forbidden")
        return True

    def _authorised(self, payload: str) -> bool:
        st = self.server.state
        key = self.headers.get("X-BAPI-API-KEY", "")
        ts, window = self.headers.get("X-BAPI-TIMESTAMP", ""), self.headers.get("X-BAPI-RECV-WINDOW", "5000")
        secret = st.keys.get(key)
        err = None
        if secret is None:
            err = (10003, "API key is invalid.")
        elif not hmac.compare_digest(sign(secret, ts + key + window + payload), self.headers.get("X-BAPI-SIGN", "")):
            err = (10004, "error sign! origin_string[...]")
        elif not (int(ts) - 1000 <= st.now() < int(ts) + int(window)):
            err = (10002, f"invalid request, please check your server timestamp or recv_window param. "
                          f"req_timestamp[{ts}],server_timestamp[{st.now()}],recv_window[{window}]")
        if err:
            self._send(200, _envelope({}, err[0], err[1], st.now()))
            return False
        return True

    def _private(self, handler: Any, path: str, arg: dict) -> None:
        st = self.server.state
        try:
            with st.lock:
                result = handler(st, arg)
        except ApiError as exc:
            self._send(200, _envelope({}, exc.code, exc.msg, st.now()))
            return
        if path == "/v5/order/create" and st.ack_delay:
            time.sleep(st.ack_delay)
        self._send(200, _envelope(result, now_ms=st.now()))

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        st = self.server.state
        path = urlparse(self.path).path
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        body = json.loads(raw or "{}")
        with st.lock:
            st.requests.append((path, body))
        if self._fault(path):
            return
        handler = _PRIVATE_POST.get(path)
        if handler is None:
            self._send(404, b"not found")
        elif self._authorised(raw):
            self._private(handler, path, body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        st = self.server.state
        url = urlparse(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        with st.lock:
            st.requests.append((url.path, q))
        if self._fault(url.path):
            return
        if url.path in _PRIVATE_GET:
            if self._authorised(url.query):
                self._private(_PRIVATE_GET[url.path], url.path, q)
            return
        now = st.now()
        if url.path == "/v5/market/time":
            result = {"timeSecond": str(now // 1000), "timeNano": str(now * MS)}
        elif url.path == "/v5/market/instruments-info":
            rows = [i.wire() for s, i in st.instruments.items() if not q.get("symbol") or s == q["symbol"]]
            result = {"category": "linear", "list": rows, "nextPageCursor": ""}
        elif url.path in ("/v5/market/kline", "/v5/market/mark-price-kline"):
            mark = url.path == "/v5/market/mark-price-kline"
            tf = _TF_BY_INTERVAL.get(q.get("interval", ""))
            if tf is None or "symbol" not in q:
                self._send(200, _envelope({}, 10001, "params error", now))
                return
            with st.lock:
                rows = _kline_rows((st.marks if mark else st.candles).get((q["symbol"], tf)), q, now, mark)
            result = {"category": q.get("category", "linear"), "symbol": q["symbol"], "list": rows}
        elif url.path == "/v5/market/funding/history":
            data = st.funding.get(q.get("symbol", ""))
            limit = min(int(q.get("limit", 200)), 200)
            rows = []
            if data is not None:
                t_ms = data["open_time"] // MS
                start, end = int(q.get("startTime", 0)), int(q.get("endTime", now))
                sel = np.flatnonzero((t_ms >= start) & (t_ms <= end))[::-1][:limit]
                rows = [{"symbol": q["symbol"], "fundingRate": _num(data["rate"][i]),
                         "fundingRateTimestamp": str(int(t_ms[i]))} for i in sel]
            result = {"category": q.get("category", "linear"), "list": rows}
        else:
            self._send(404, b"not found")
            return
        self._send(200, _envelope(result, now_ms=now))


class FakeBybit(ThreadingHTTPServer):
    """REST. Start with ``FakeBybit.start(state)``; ``url`` is the endpoint to give the client."""

    daemon_threads = True

    def __init__(self, state: FakeBybitState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @classmethod
    def start(cls, state: FakeBybitState) -> "FakeBybit":
        server = cls(state)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class FakeBybitWs:
    """Websockets: ``public_url`` and ``private_url`` are what the client connects to."""

    def __init__(self, state: FakeBybitState) -> None:
        self.state = state
        state.ws = self
        self._conns: dict[ServerConnection, dict] = {}  # conn -> {"topics": set, "auth": bool, "private": bool}
        self._ids = itertools.count(1)
        self._server = serve(self._handle, "127.0.0.1", 0)
        self.port = self._server.socket.getsockname()[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def public_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v5/public/linear"

    @property
    def private_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v5/private"

    def connections(self, private: bool) -> int:
        with self.state.lock:
            return sum(1 for c in self._conns.values() if c["private"] == private and (c["auth"] or not private))

    def _handle(self, conn: ServerConnection) -> None:
        st = self.state
        private = conn.request.path.startswith("/v5/private")
        info = {"topics": set(), "auth": False, "private": private, "id": f"fake-conn-{next(self._ids)}"}
        with st.lock:
            self._conns[conn] = info
        try:
            for raw in conn:
                msg = json.loads(raw)
                with st.lock:
                    st.frames_in.append(msg)
                reply = self._reply(msg, info)
                if reply is not None:
                    conn.send(json.dumps(reply))
        except ConnectionClosed:
            pass
        finally:
            with st.lock:
                self._conns.pop(conn, None)

    def _reply(self, msg: dict, info: dict) -> dict | None:
        st = self.state
        op, req = msg.get("op"), msg.get("req_id", "")
        if op == "ping":
            if info["private"]:
                return {"req_id": req, "op": "pong", "args": [str(st.now())], "conn_id": info["id"]}
            return {"success": True, "ret_msg": "pong", "conn_id": info["id"], "req_id": req, "op": "ping"}
        if op == "auth":
            key, expires, signature = (msg.get("args") or [None, 0, ""])[:3]
            secret = st.keys.get(key or "")
            ok = (secret is not None and int(expires) > st.now()
                  and hmac.compare_digest(sign(secret, f"GET/realtime{expires}"), signature or ""))
            info["auth"] = ok
            return {"success": ok, "ret_msg": "" if ok else "Params Error", "op": "auth", "conn_id": info["id"]}
        if op == "subscribe":
            if info["private"] and not info["auth"]:
                return {"success": False, "ret_msg": "Request not authorized", "op": "subscribe", "req_id": req,
                        "conn_id": info["id"]}
            with st.lock:
                info["topics"].update(msg.get("args", []))
            return {"success": True, "ret_msg": "", "op": "subscribe", "req_id": req, "conn_id": info["id"]}
        return {"success": False, "ret_msg": f"unknown op {op!r}", "op": op, "req_id": req, "conn_id": info["id"]}

    def _send_to(self, frame: dict, topic: str, private: bool) -> None:
        text = json.dumps(frame)
        with self.state.lock:
            targets = [c for c, i in self._conns.items() if i["private"] == private and topic in i["topics"]]
        for conn in targets:
            try:
                conn.send(text)
            except ConnectionClosed:
                pass

    def push_public(self, topic: str, frame: dict) -> None:
        self._send_to(frame, topic, private=False)

    def push_private(self, frame: dict) -> None:
        self._send_to(frame, frame["topic"], private=True)

    def close_sockets(self, private: bool | None = None) -> int:
        """Drop connections without a close handshake (a network cut); returns how many."""
        with self.state.lock:
            targets = [c for c, i in self._conns.items() if private is None or i["private"] == private]
        for conn in targets:
            conn.close_socket()  # websockets' own cut: it also wakes the threads reading the socket
        return len(targets)

    def stop(self) -> None:
        self.close_sockets()
        self._server.shutdown()
