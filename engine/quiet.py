"""Quiet bars: where a single-system replay can skip the component step because nothing would happen.

A bar is quiet when its step would publish only market data (its ``BarClosed`` and ``Snapshot``) and change
no state a later bar reads: no funding falls due at its open, no market order waits for it, it crosses no
resting order's price or trigger, it does not reach the liquidation price, and the strategy's decision on
it (from its feature row, the previous one and the position) is to hold what it holds. Those are the
same rules the components apply (``kernel.crossed``, ``kernel.liquidated``, the strategy's ``decide``),
read from the components' own state, so a replay that hands the components only the other bars emits
every event it would have emitted stepping each bar (``tests/test_kernel_parity.py`` checks it byte for
byte). Ids survive the skip: a seeded id is a function of its generator's millisecond and its rank in it.

Only what a run does not keep is skipped: market-data events are not stored, and the replay steps every
bar when it keeps them, runs over NATS, or runs a guard with caps to enforce.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from tradebus.components import kernel as K
from tradebus.components.strategies import HOLD


@nb.njit(cache=True, nogil=True)
def decisions(decide, rows: np.ndarray, p: np.ndarray, first: int) -> np.ndarray:
    """``out[j, pos + 1]``: the strategy's decision on bar j (from ``first + 1`` on) when it holds ``pos``;
    ``decide`` is its step as a first-class function (``strategies.decision_function``), so this loop is
    compiled once for every strategy. A decision is a pure function of its rows, position and parameters."""
    out = np.full((len(rows), 3), HOLD, dtype=np.int8)
    for j in range(max(first + 1, 1), len(rows)):
        for pos in range(-1, 2):
            out[j, pos + 1] = decide(rows[j], rows[j - 1], pos, p)
    return out


@nb.njit(cache=True, nogil=True)
def next_active(wants: np.ndarray, start: int, open_t: np.ndarray, o: np.ndarray, h: np.ndarray, low: np.ndarray,
                funding_next: int, kinds: np.ndarray, sides: np.ndarray, triggered: np.ndarray, prices: np.ndarray,
                triggers: np.ndarray, qty: float, liq: float, held: float) -> int:
    """The first bar from ``start`` on that is not quiet (the number of bars if none), for a venue whose next
    funding time is ``funding_next``, whose resting orders are the arrays and whose position ``qty`` is
    liquidated at ``liq``, and a strategy holding ``held`` whose ``decisions`` are ``wants``."""
    pos = 1 if held > 0.0 else (-1 if held < 0.0 else 0)
    for j in range(start, len(open_t)):
        if open_t[j] >= funding_next:
            return j
        for k in range(len(kinds)):
            ref, _, trig = K.crossed(kinds[k], sides[k], triggered[k], prices[k], triggers[k], o[j], h[j], low[j])
            if not math.isnan(ref) or trig != triggered[k]:
                return j
        if K.liquidated(qty, liq, h[j], low[j]):
            return j
        target = wants[j, pos + 1]
        if target != HOLD and target != pos:
            return j
    return len(open_t)
