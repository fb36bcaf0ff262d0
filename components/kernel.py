"""The numeric core (numba): fill prices, fees and position accounting, computed here and only here.

The event-driven components call these functions; the sweep engine (strategy factory) is to call the
same compiled functions over arrays, so the two paths cannot disagree by even one ulp.
"""

from __future__ import annotations

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
