"""The numeric core (numba): fill prices, fees and position accounting, computed here and only here.

The event-driven components call these functions; the sweep engine (strategy factory) is to call the
same compiled functions over arrays, so the two paths cannot disagree by even one ulp.
"""

from __future__ import annotations

import math

import numba as nb

_jit = nb.njit(cache=True, nogil=True)

BPS = 1e-4


@_jit
def fill_price(side: int, ref: float, spread_bps: float, slip_bps: float) -> float:
    """Price paid for a fill at reference ``ref``: half the spread plus slippage, against the taker."""
    return ref * (1.0 + side * (0.5 * spread_bps + slip_bps) * BPS)


@_jit
def fee(qty: float, price: float, rate: float) -> float:
    """Exchange fee on a fill (rate as a fraction of notional; negative = rebate)."""
    return qty * price * rate


@_jit
def apply_fill(qty: float, avg: float, realized: float, signed: float, price: float) -> tuple[float, float, float]:
    """Return (qty, avg_price, realized_pnl) after a signed fill of ``signed`` at ``price``.

    Same direction: average in. Opposite: realise PnL on the closed part; beyond flat, open the
    remainder at the fill price. Quantities below 1e-12 are float dust and count as flat.
    """
    new = qty + signed
    if qty == 0.0 or (qty > 0.0) == (signed > 0.0):
        return new, (avg * abs(qty) + price * abs(signed)) / abs(new), realized
    closed = min(abs(qty), abs(signed))
    realized += closed * (price - avg) * (1.0 if qty > 0.0 else -1.0)
    if abs(new) <= 1e-12:
        return 0.0, 0.0, realized
    if (new > 0.0) == (qty > 0.0):
        return new, avg, realized
    return new, price, realized


@_jit
def book(qty: float, avg: float, realized: float, wallet: float, signed: float, price: float,
         fee_paid: float) -> tuple[float, float, float, float]:
    """An account after a fill: (qty, avg_price, realized_pnl, wallet), the wallet moved by the PnL the
    fill realised less its fee. The venue's account, the portfolio and the compiled loop all book here."""
    new, new_avg, new_realized = apply_fill(qty, avg, realized, signed, price)
    return new, new_avg, new_realized, wallet + (new_realized - realized - fee_paid)


@_jit
def marked(wallet: float, qty: float, avg: float, price: float) -> float:
    """Equity of a wallet holding ``qty`` bought at ``avg``, marked at ``price``."""
    return wallet + qty * (price - avg)


@_jit
def funding_amount(qty: float, mark: float, rate: float) -> float:
    """What a position pays at a funding time (negative: it receives): longs pay a positive rate."""
    return qty * mark * rate


# Order types and slippage models as the compiled code sees them.
MARKET, LIMIT, STOP, STOP_LIMIT = 0, 1, 2, 3
ORDER_TYPES = {"market": MARKET, "limit": LIMIT, "stop": STOP, "stop_limit": STOP_LIMIT}
SLIP_NONE, SLIP_FIXED, SLIP_VOLUME = 0, 1, 2
SLIPPAGE_MODELS = {"none": SLIP_NONE, "fixed_bps": SLIP_FIXED, "volume": SLIP_VOLUME}


@_jit
def slippage_bps(model: int, bps: float, impact: float, qty: float, bar_volume: float) -> float:
    """Slippage of a taker fill: fixed bps, or ``impact`` bps per percent of the bar's volume taken."""
    if model == SLIP_FIXED:
        return bps
    if model == SLIP_VOLUME:
        return impact * (100.0 * qty / bar_volume if bar_volume > 0 else 0.0)
    return 0.0


@_jit
def fill_terms(side: int, remaining: float, reduce_only: bool, position: float, participation: float,
               bar_volume: float, ref: float, taker: bool, maker_fee: float, taker_fee: float, spread_bps: float,
               slip_model: int, slip_bps: float, impact: float) -> tuple[float, float, float]:
    """What an order fills against reference price ``ref``: (qty, price, fee).

    A reduce-only order fills at most the position, and never opens one: qty -1 means cancel it. A
    participation cap (NaN: none) fills at most that share of the bar's volume: qty 0 means nothing now.
    A taker pays half the spread plus slippage; a maker fills at ``ref``.
    """
    qty = remaining
    if reduce_only:
        if position == 0.0 or (position > 0.0) == (side > 0):
            return -1.0, math.nan, 0.0
        qty = min(qty, abs(position))
    if not math.isnan(participation):
        qty = min(qty, participation * bar_volume)
        if qty <= 0:
            return 0.0, math.nan, 0.0
    if taker:
        price = fill_price(side, ref, spread_bps, slippage_bps(slip_model, slip_bps, impact, qty, bar_volume))
        return qty, price, fee(qty, price, taker_fee)
    return qty, ref, fee(qty, ref, maker_fee)


@_jit
def left_after(remaining: float, filled: float, ordered: float) -> float:
    """An order's quantity still open after a fill (float dust counts as filled)."""
    rem = max(0.0, remaining - filled)
    return 0.0 if rem <= 1e-12 * ordered else rem


@_jit
def crossed(order_type: int, side: int, triggered: bool, price: float, trigger: float,
            o: float, h: float, l: float) -> tuple[float, bool, bool]:
    """Does a bar fill a resting order? Return (reference price or NaN, taker, triggered after this bar).

    A stop triggers when the bar trades through it and fills at the trigger, or at the open if the bar
    gapped past it; once triggered it is a market order (a remainder left by a participation cap fills
    at the next open). A stop-limit triggered inside a bar counts only its limit (the open came before
    the trigger). A limit fills at its price, or the better open, as maker.
    """
    buy = side > 0
    if order_type == STOP or order_type == STOP_LIMIT:
        if not triggered:
            if (buy and h >= trigger) or ((not buy) and l <= trigger):
                if order_type == STOP:
                    return (max(o, trigger) if buy else min(o, trigger)), True, True
                if (buy and l <= price) or ((not buy) and h >= price):
                    return price, False, True
                return math.nan, False, True
            return math.nan, True, False
        if order_type == STOP:
            return o, True, True
    if buy and l <= price:
        return min(o, price), False, triggered
    if (not buy) and h >= price:
        return max(o, price), False, triggered
    return math.nan, False, triggered


@_jit
def liquidation_price(qty: float, avg: float, wallet: float, mm: float) -> float:
    """Where wallet + q (p - avg) = mm |q| p: the price at which equity meets maintenance margin (NaN: none)."""
    if qty == 0.0 or mm <= 0.0 or not math.isfinite(wallet):
        return math.nan
    return (qty * avg - wallet) / (qty * ((1.0 - mm) if qty > 0.0 else (1.0 + mm)))


@_jit
def liquidated(qty: float, liq: float, high: float, low: float) -> bool:
    """Does a bar reach the liquidation price of a position (a long at its low, a short at its high)?"""
    return (qty > 0.0 and low <= liq) or (qty < 0.0 and high >= liq)


@_jit
def liquidation_fill(qty: float, liq: float, open_: float) -> float:
    """The price a liquidation closes at: the liquidation price, or the open if the bar gapped past it."""
    return min(open_, liq) if qty > 0.0 else max(open_, liq)


# Protective stops: none, a multiple of ATR, or a share of the entry price away.
STOP_NONE, STOP_ATR, STOP_PERCENT = 0, 1, 2
STOP_KINDS = {"none": STOP_NONE, "atr": STOP_ATR, "percent": STOP_PERCENT}


@_jit
def stop_distance(kind: int, atr_mult: float, atr: float, percent: float, price: float) -> float:
    """How far from the entry an entry decided at ``price`` puts its stop (NaN: no stop)."""
    if kind == STOP_ATR:
        return atr_mult * atr
    if kind == STOP_PERCENT:
        return percent * price
    return math.nan


@_jit
def protective_prices(qty: float, avg: float, stop: float, tp_rr: float) -> tuple[float, float]:
    """(stop trigger, take-profit price or NaN when ``tp_rr`` is 0) protecting ``qty`` held at ``avg``."""
    sign = 1.0 if qty > 0.0 else -1.0
    return avg - sign * stop, (avg + sign * tp_rr * stop) if tp_rr != 0.0 else math.nan


# Sizing rules and why an order is refused.
FIXED_FRACTION, RISK_PER_TRADE = 0, 1
SIZINGS = {"fixed_fraction": FIXED_FRACTION, "risk_per_trade": RISK_PER_TRADE}
SIZE_OK, SIZE_NO_EQUITY, SIZE_NO_STOP, SIZE_TOO_SMALL = 0, 1, 2, 3
MIN_NOTIONAL = 1.0  # below this an order is noise, not a trade


@_jit
def on_step(qty: float, step: float) -> float:
    """``qty`` rounded down to a multiple of ``step`` (0: no rounding). A step below 1 is taken as 1/scale,
    and the multiple is k / scale, the double nearest the decimal (0.047, not 47 * 0.001 = 0.047000000000000004),
    so it equals what a venue's decimal rounding returns."""
    if not (step > 0.0):
        return qty
    if step < 1.0:
        scale = float(round(1.0 / step))
        return math.floor(qty * scale + 1e-9) / scale
    return math.floor(qty / step + 1e-9) * step


@_jit
def size(sizing: int, equity: float, price: float, stop_distance: float, fraction: float, risk: float,
         max_leverage: float, max_notional: float, qty_step: float = 0.0) -> tuple[float, float, int]:
    """Return (qty, notional, SIZE_* code): notional from the rule, capped by leverage and max notional,
    the quantity rounded down to the venue's step."""
    if not (equity > 0.0 and price > 0.0):
        return 0.0, 0.0, SIZE_NO_EQUITY
    if sizing == RISK_PER_TRADE:
        if not (stop_distance > 0.0):
            return 0.0, 0.0, SIZE_NO_STOP
        notional = equity * risk / stop_distance * price
    else:
        notional = equity * fraction
    notional = min(notional, equity * max_leverage, max_notional)
    qty = on_step(notional / price, qty_step)
    if notional < MIN_NOTIONAL or not (qty > 0.0):
        return 0.0, notional, SIZE_TOO_SMALL
    return qty, notional, SIZE_OK
