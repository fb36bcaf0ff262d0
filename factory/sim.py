"""The replay's semantics in one compiled loop: the sweep driver of the shared kernel.

``simulator(strategy)`` compiles the loop, which runs one system over one market slice without events: the same strategy step
(``strategies.*.decide``), sizing, fill prices, fees, order crossing, liquidation price and position
accounting (``components.kernel``) that the event-driven components call, in the order the replay's
FIFO dispatch applies them. Per traded bar:

1. the venue's bar: funding up to the open, market orders waiting for the open (each followed by the
   cancellation of reduce-only orders if it left the position flat), resting orders in placement
   order (then the same cancellation), liquidation;
2. the strategy's decision on this bar's features and the position those fills left;
3. protective orders for entries whose final fill came in step 1 (stop, then take-profit);
4. the signal: an exit (reduce-only market) when the target is flat or the other side, an entry sized
   on equity marked at this close when it opens a side; with ``on_close`` fills they fill now, else
   they wait for the next open;
5. protective orders for entries filled in step 4.

A test proves the two drivers agree exactly (fills, funding, equity at every bar) for every built-in
strategy over several parameter sets and cost models. The replay stays the reference: anything
The loop cannot express (several symbols, several systems) runs through it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numba as nb
import numpy as np

from tradebus.components import kernel as K
from tradebus.components import strategies
from tradebus.components.strategies import HOLD
from tradebus.components.timeframes import tf_ns
from tradebus.configs.schema import SystemConfig
from tradebus.engine.metrics import summarize
from tradebus.engine.market import MarketSlice
from tradebus.engine.wiring import feature_tables, strategy_rows
from tradebus.engine.trades import Trade, trades_from_ledger

_jit = nb.njit(cache=True, nogil=True)

# Scalars of one run, packed in a float64 vector (numba takes one array better than twenty arguments).
(C_ON_CLOSE, C_PARTICIPATION, C_MM, C_INITIAL, C_MAKER, C_TAKER, C_SPREAD, C_SLIP_MODEL, C_SLIP_BPS, C_IMPACT,
 C_SIZING, C_FRACTION, C_RISK, C_MAX_LEVERAGE, C_MAX_NOTIONAL, C_STOP_KIND, C_ATR_MULT, C_STOP_PCT, C_TP_RR,
 C_BAR_NS, C_QTY_STEP) = range(21)
N_SETTINGS = 21
STOP_NONE, STOP_ATR, STOP_PERCENT = 0, 1, 2
STOP_KINDS = {"none": STOP_NONE, "atr": STOP_ATR, "percent": STOP_PERCENT}

# One order: a row of a small book (pending market orders, resting orders), in placement order.
O_TYPE, O_SIDE, O_QTY, O_REM, O_PRICE, O_TRIGGER, O_REDUCE, O_TRIGGERED, O_ENTRY, O_STOP = range(10)
_OF = 10
_BOOK = 256  # open orders at once; partial fills under a participation cap pile up (35 seen)

# Ledger rows (fills and funding, in the order the replay records them).
L_KIND, L_SIDE, L_QTY, L_PRICE, L_FEE, L_AMOUNT = range(6)
FILL, FUNDING = 0, 1

# Per-bar state at the end of each step (what ``Portfolio.curve`` marks).
S_BALANCE, S_QTY, S_AVG, S_REALIZED, S_FEES, S_FUNDING = range(6)

# Summary statistics computed on the fly (sweeps keep no per-bar arrays).
(M_FINAL_EQUITY, M_RET_MEAN, M_RET_M2, M_DOWN_SQ, M_MAX_DD, M_EXPOSED, M_TRADES, M_WINS, M_WIN_SUM, M_LOSS_SUM,
 M_PNL_SUM, M_HELD_NS, M_FEES, M_FUNDING, M_BARS, M_LIQUIDATIONS) = range(16)
N_STATS = 16
N_BLOCKS = 16


@_jit
def _push(book: np.ndarray, n: int, typ: int, side: int, qty: float, price: float, trigger: float, reduce: bool,
          entry: bool, stop: float) -> int:
    if n >= book.shape[0]:
        raise ValueError("simulate: more than 256 open orders (order book overflow)")
    r = book[n]
    r[O_TYPE], r[O_SIDE], r[O_QTY], r[O_REM], r[O_PRICE], r[O_TRIGGER] = typ, side, qty, qty, price, trigger
    r[O_REDUCE], r[O_TRIGGERED], r[O_ENTRY], r[O_STOP] = 1.0 if reduce else 0.0, 0.0, 1.0 if entry else 0.0, stop
    return n + 1


@_jit
def _drop_reduce_only(book: np.ndarray, n: int, start: int = 0) -> int:
    """Remove reduce-only orders from rows [start, n), keeping the others in order; return the new n."""
    k = start
    for j in range(start, n):
        if book[j, O_REDUCE] == 0.0:
            if k != j:
                book[k] = book[j]
            k += 1
    return k


@_jit
def _append(ledger: np.ndarray, lts: np.ndarray, n: int, ts: int, kind: int, side: int, qty: float, price: float,
            fee: float, amount: float) -> None:
    """Write ledger row ``n`` if it fits (times apart, as int64: ns do not fit a float64 exactly).

    The caller counts rows either way and reruns with room for all of them if they did not fit: arrays
    reassigned inside the bar loop would cost numba a reference count update per bar.
    """
    if n < ledger.shape[0]:
        row = ledger[n]
        row[L_KIND], row[L_SIDE], row[L_QTY], row[L_PRICE], row[L_FEE], row[L_AMOUNT] = (
            kind, side, qty, price, fee, amount)
        lts[n] = ts


# s[...] slots: venue/portfolio position and cash, then the open trade (as ``replay.trades`` builds it)
(P_QTY, P_AVG, P_REALIZED, P_BALANCE, P_LIQ, P_FEES, P_FUNDING, P_LIQUIDATIONS, P_GAINS,
 T_OPEN, T_ENTRY_TIME, T_GROSS, T_FEES, T_FUNDING) = range(14)
_NS = 14


@_jit
def _book_fill(s: np.ndarray, stats: np.ndarray, ledger: np.ndarray, lts: np.ndarray, nl: int, record: bool, ts: int,
               side: int, qty: float, price: float, fee: float, mm: float) -> int:
    """Apply one fill to position, cash and the open trade; append it to the ledger."""
    q0, r0 = s[P_QTY], s[P_REALIZED]
    signed = qty if side > 0 else -qty
    s[P_QTY], s[P_AVG], s[P_REALIZED] = K.apply_fill(q0, s[P_AVG], r0, signed, price)
    gained = s[P_REALIZED] - r0
    s[P_BALANCE] += gained - fee
    s[P_GAINS] += gained  # the portfolio sums realised gains fill by fill
    s[P_FEES] += fee
    s[P_LIQ] = K.liquidation_price(s[P_QTY], s[P_AVG], s[P_BALANCE], mm)
    # The trade ledger, as replay.trades.build_trades splits it.
    closing = min(abs(q0), qty) if (q0 != 0.0 and (q0 > 0.0) != (signed > 0.0)) else 0.0
    opening = qty - closing
    if closing != 0.0:
        s[T_FEES] += fee * (closing / qty)
        s[T_GROSS] += s[P_REALIZED] - r0
        new = s[P_QTY]
        if new == 0.0 or (new > 0.0) != (q0 > 0.0):
            pnl = s[T_GROSS] - s[T_FEES] - s[T_FUNDING]
            stats[M_TRADES] += 1
            stats[M_PNL_SUM] += pnl
            stats[M_HELD_NS] += ts - s[T_ENTRY_TIME]
            if pnl > 0:
                stats[M_WINS] += 1
                stats[M_WIN_SUM] += pnl
            elif pnl < 0:
                stats[M_LOSS_SUM] += pnl
            s[T_OPEN] = 0.0
    if opening > 1e-12 * qty:
        if s[T_OPEN] == 0.0:
            s[T_OPEN], s[T_ENTRY_TIME], s[T_GROSS], s[T_FEES], s[T_FUNDING] = 1.0, ts, 0.0, 0.0, 0.0
        s[T_FEES] += fee * (opening / qty)
    if record:
        _append(ledger, lts, nl, ts, FILL, side, qty, price, fee, 0.0)
    return nl + 1


@_jit
def _fill(book: np.ndarray, j: int, s: np.ndarray, stats: np.ndarray, ledger: np.ndarray, lts: np.ndarray, nl: int,
          record: bool, cfg: np.ndarray, ref: float, ts: int, bar_volume: float, taker: bool, protect: np.ndarray,
          npro: int) -> tuple[int, int]:
    """Fill order ``j`` of ``book`` against ``ref`` (SimExchange._fill); queue protection for a completed entry."""
    r = book[j]
    side = int(r[O_SIDE])
    qty = r[O_REM]
    pos = s[P_QTY]
    if r[O_REDUCE] != 0.0:
        if pos == 0.0 or (pos > 0.0) == (side > 0):
            r[O_REM] = 0.0  # cancelled: it would open a position
            return nl, npro
        qty = min(qty, abs(pos))
    part = cfg[C_PARTICIPATION]
    if not math.isnan(part):
        qty = min(qty, part * bar_volume)
        if qty <= 0:
            return nl, npro
    if taker:
        slip = K.slippage_bps(int(cfg[C_SLIP_MODEL]), cfg[C_SLIP_BPS], cfg[C_IMPACT], qty, bar_volume)
        price = K.fill_price(side, ref, cfg[C_SPREAD], slip)
        fee = K.fee(qty, price, cfg[C_TAKER])
    else:
        price = ref
        fee = K.fee(qty, price, cfg[C_MAKER])
    r[O_REM] = max(0.0, r[O_REM] - qty)
    if r[O_REM] <= 1e-12 * r[O_QTY]:
        r[O_REM] = 0.0
    nl = _book_fill(s, stats, ledger, lts, nl, record, ts, side, qty, price, fee, cfg[C_MM])
    if r[O_ENTRY] != 0.0 and r[O_REM] <= 0.0:
        # RiskManager: protect an entry once its final fill's position is known (that fill's qty and avg).
        protect[npro, 0], protect[npro, 1], protect[npro, 2] = r[O_STOP], s[P_QTY], s[P_AVG]
        npro += 1
    return nl, npro


@_jit
def _protect(rest: np.ndarray, nr: int, protect: np.ndarray, npro: int, tp_rr: float) -> int:
    """Place the stop (and take-profit) of each completed entry, as RiskManager._protective_orders."""
    for k in range(npro):
        stop, qty, avg = protect[k, 0], protect[k, 1], protect[k, 2]
        if not (stop > 0.0) or qty == 0.0:
            continue
        side = -1 if qty > 0.0 else 1
        sign = 1.0 if qty > 0.0 else -1.0
        trigger = avg - sign * stop
        if trigger > 0.0:  # the exchange rejects a non-positive trigger
            nr = _push(rest, nr, K.STOP, side, abs(qty), math.nan, trigger, True, False, math.nan)
        if tp_rr != 0.0:
            price = avg + sign * tp_rr * stop
            if price > 0.0:
                nr = _push(rest, nr, K.LIMIT, side, abs(qty), price, math.nan, True, False, math.nan)
    return nr


@_jit
def _mark(mark_t: np.ndarray, mark_o: np.ndarray, t: int, fallback: float) -> float:
    j = np.searchsorted(mark_t, t)
    if j < len(mark_t) and mark_t[j] == t:
        return mark_o[j]
    return fallback


def _decide(cur: np.ndarray, prev: np.ndarray, pos: int, p: np.ndarray) -> int:
    """Stands for a strategy's decision step: ``simulator`` compiles ``_simulate`` with the real one here."""
    raise NotImplementedError("call simulator(strategy), not _simulate")


def _simulate(rows: np.ndarray, p: np.ndarray, o: np.ndarray, h: np.ndarray, l: np.ndarray, c: np.ndarray,
              v: np.ndarray, open_t: np.ndarray, first: int, atr: np.ndarray, cfg: np.ndarray, funding_t: np.ndarray,
              funding_r: np.ndarray, mark_t: np.ndarray, mark_o: np.ndarray, record: bool, capacity: int = 0,
              n_blocks: int = N_BLOCKS) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, np.ndarray]:
    """Run one system; return (per-bar state, ledger, ledger times, summary statistics, ledger rows,
    block statistics: bars, sum and sum of squares of the bar returns in each of ``n_blocks`` equal
    spans of time, from which the Sharpe ratio of any union of blocks follows, as CSCV needs).

    With ``record`` false the first three are empty: sweeps keep only the statistics. With ``record``
    the ledger holds ``capacity`` rows; if the run made more, rerun with at least that many.

    ``rows``: the strategy's feature rows for every loaded bar (warm-up included); ``atr``: the risk
    manager's ATR column (unused unless stops are ATR-based); bars from ``first`` are traded.
    """
    n = len(c)
    bar_ns = int(cfg[C_BAR_NS])
    on_close = cfg[C_ON_CLOSE] != 0.0
    mm = cfg[C_MM]
    initial = cfg[C_INITIAL]
    stop_kind = int(cfg[C_STOP_KIND])
    s = np.zeros(_NS)
    s[P_BALANCE] = initial
    s[P_LIQ] = math.nan
    stats = np.zeros(N_STATS)
    stats[M_FINAL_EQUITY] = initial
    state = np.empty((n - first if record else 0, 6))
    ledger = np.empty((capacity if record else 0, 6))
    lts = np.empty(capacity if record else 0, dtype=np.int64)
    queue = np.empty((_BOOK, _OF))
    single = np.empty((1, _OF))
    nl = 0
    pend = np.empty((_BOOK, _OF))
    rest = np.empty((_BOOK, _OF))
    nq = 0  # pending market orders
    nr = 0  # resting orders
    protect = np.empty((_BOOK, 3))
    fi = 0
    while fi < len(funding_t) and funding_t[fi] < open_t[first]:
        fi += 1  # funding before the first traded bar is history, not a charge
    prev_equity = initial
    # Drawdown is measured on the equity curve, as replay.metrics does: the first bar sets the peak.
    peak = trough = -math.inf
    blocks = np.zeros((n_blocks, 3))
    span = n - first
    ret_sum = ret_sq = down_sq = max_dd = 0.0
    exposed = 0
    for i in range(first, n):
        t_open = open_t[i]
        t_close = t_open + bar_ns
        bo, bh, bl, bc, bv = o[i], h[i], l[i], c[i], v[i]
        npro = 0
        # 1. the venue's bar: funding up to the open
        while fi < len(funding_t) and funding_t[fi] <= t_open:
            t, rate = funding_t[fi], funding_r[fi]
            fi += 1
            if s[P_QTY] != 0.0:
                mark = _mark(mark_t, mark_o, t, bo)
                amount = s[P_QTY] * mark * rate
                s[P_BALANCE] -= amount
                s[P_LIQ] = K.liquidation_price(s[P_QTY], s[P_AVG], s[P_BALANCE], mm)
                s[P_FUNDING] += amount
                if s[T_OPEN] != 0.0:
                    s[T_FUNDING] += amount
                if record:
                    _append(ledger, lts, nl, t, FUNDING, 0, 0.0, 0.0, 0.0, amount)
                nl += 1
        # ... market orders waiting for this open, in order; what a cap leaves waits again
        if nq:
            queue[:nq] = pend[:nq]
            nqueue = nq
            nq = 0
            head = 0
            while head < nqueue:
                nl, npro = _fill(queue, head, s, stats, ledger, lts, nl, record, cfg, bo, t_open, bv, True,
                                         protect, npro)
                if queue[head, O_REM] > 0:
                    pend[nq] = queue[head]
                    nq += 1
                head += 1
                if s[P_QTY] == 0.0:
                    nr = _drop_reduce_only(rest, nr)
                    nq = _drop_reduce_only(pend, nq)
                    nqueue = _drop_reduce_only(queue, nqueue, head)
        # ... resting orders in placement order
        if nr:
            k = 0
            for j in range(nr):
                if rest[j, O_REDUCE] != 0.0 and s[P_QTY] == 0.0:
                    rest[k] = rest[j]  # cancelled below, as "position closed"
                    k += 1
                    continue
                ref, taker, trig = K.crossed(int(rest[j, O_TYPE]), int(rest[j, O_SIDE]), rest[j, O_TRIGGERED] != 0.0,
                                             rest[j, O_PRICE], rest[j, O_TRIGGER], bo, bh, bl)
                rest[j, O_TRIGGERED] = 1.0 if trig else 0.0
                if not math.isnan(ref):
                    nl, npro = _fill(rest, j, s, stats, ledger, lts, nl, record, cfg, ref, t_close, bv, taker,
                                             protect, npro)
                if rest[j, O_REM] > 0:
                    rest[k] = rest[j]
                    k += 1
            nr = k
            if s[P_QTY] == 0.0:
                nr = _drop_reduce_only(rest, nr)
                nq = _drop_reduce_only(pend, nq)
        # ... liquidation where equity meets maintenance margin
        q = s[P_QTY]
        if q != 0.0:
            liq = s[P_LIQ]
            if K.liquidated(q, liq, bh, bl):
                price = min(bo, liq) if q > 0.0 else max(bo, liq)
                nl = _book_fill(s, stats, ledger, lts, nl, record, t_close, -1 if q > 0.0 else 1, abs(q), price,
                                        K.fee(abs(q), price, cfg[C_TAKER]), mm)
                s[P_LIQUIDATIONS] += 1
                if s[P_QTY] == 0.0:
                    nr = _drop_reduce_only(rest, nr)
                    nq = _drop_reduce_only(pend, nq)
        # 2. the decision, on this bar's row and the previous one
        target = HOLD
        if i > 0:
            q = s[P_QTY]
            pos = 1 if q > 0.0 else (-1 if q < 0.0 else 0)
            target = _decide(rows[i], rows[i - 1], pos, p)
            if target == pos:
                target = HOLD
        # 3. protection for entries completed at this bar
        if npro:
            nr = _protect(rest, nr, protect, npro, cfg[C_TP_RR])
            npro = 0
        # 4. the signal
        if target != HOLD:
            q = s[P_QTY]
            exit_qty = 0.0
            if q != 0.0 and target != (1 if q > 0.0 else -1):
                exit_qty = abs(q)
            entry_qty = 0.0
            stop = math.nan
            if target != 0:
                equity = s[P_BALANCE] + q * (bc - s[P_AVG])
                if stop_kind == STOP_ATR:
                    stop = cfg[C_ATR_MULT] * atr[i]
                elif stop_kind == STOP_PERCENT:
                    stop = cfg[C_STOP_PCT] * bc
                entry_qty, _, code = K.size(int(cfg[C_SIZING]), equity, bc, stop, cfg[C_FRACTION], cfg[C_RISK],
                                            cfg[C_MAX_LEVERAGE], cfg[C_MAX_NOTIONAL], cfg[C_QTY_STEP])
                if code != K.SIZE_OK:
                    entry_qty = 0.0
            for leg in range(2):
                qty = exit_qty if leg == 0 else entry_qty
                if not (qty > 0.0):
                    continue
                side = (-1 if q > 0.0 else 1) if leg == 0 else target
                if on_close:
                    _push(single, 0, K.MARKET, side, qty, math.nan, math.nan, leg == 0, leg == 1, stop)
                    nl, npro = _fill(single, 0, s, stats, ledger, lts, nl, record, cfg, bc, t_close, bv, True,
                                             protect, npro)
                    if s[P_QTY] == 0.0:
                        nr = _drop_reduce_only(rest, nr)
                        nq = _drop_reduce_only(pend, nq)
                    if single[0, O_REM] > 0:
                        pend[nq] = single[0]
                        nq += 1
                else:
                    nq = _push(pend, nq, K.MARKET, side, qty, math.nan, math.nan, leg == 0, leg == 1, stop)
        # 5. protection for entries filled at this close
        if npro:
            nr = _protect(rest, nr, protect, npro, cfg[C_TP_RR])
        # the step's end: the portfolio's state, marked at the close
        q = s[P_QTY]
        equity = s[P_BALANCE] + ((bc - s[P_AVG]) * q if q != 0.0 else 0.0)
        if record:
            row = state[i - first]
            row[S_BALANCE], row[S_QTY], row[S_AVG] = s[P_BALANCE], q, s[P_AVG]
            row[S_REALIZED], row[S_FEES], row[S_FUNDING] = s[P_GAINS], s[P_FEES], s[P_FUNDING]
        # running statistics, kept off the loop-carried path (no division that the next bar waits on)
        ret = equity / prev_equity - 1.0
        prev_equity = equity
        ret_sum += ret
        ret_sq += ret * ret
        b = blocks[(i - first) * n_blocks // span]
        b[0] += 1.0
        b[1] += ret
        b[2] += ret * ret
        if ret < 0.0:
            down_sq += ret * ret
        if equity >= peak:
            if trough < peak:
                dd = trough / peak - 1.0
                if dd < max_dd:
                    max_dd = dd
            peak = trough = equity
        elif equity < trough:
            trough = equity
        if q != 0.0:
            exposed += 1
    if trough < peak:
        dd = trough / peak - 1.0
        if dd < max_dd:
            max_dd = dd
    bars = n - first
    stats[M_BARS] = bars
    stats[M_RET_MEAN] = ret_sum / bars if bars else 0.0
    stats[M_RET_M2] = ret_sq - ret_sum * ret_sum / bars if bars else 0.0  # sum of squared deviations
    stats[M_DOWN_SQ] = down_sq
    stats[M_MAX_DD] = max_dd
    stats[M_EXPOSED] = exposed
    stats[M_FINAL_EQUITY] = prev_equity
    stats[M_FEES] = s[P_FEES]
    stats[M_FUNDING] = s[P_FUNDING]
    stats[M_LIQUIDATIONS] = s[P_LIQUIDATIONS]
    return state, ledger, lts, stats, nl, blocks


_SIMULATORS: dict[str, Callable] = {}


def simulator(defn: strategies.StrategyDef) -> Callable:
    """``_simulate`` compiled for one strategy, its decision step inlined (process-wide, compiled once)."""
    fn = _SIMULATORS.get(defn.id)
    if fn is None:
        fn = _SIMULATORS[defn.id] = strategies.inline_decide(_simulate, defn, f"simulate_{defn.id}")
    return fn


# --- the Python side: inputs from a config and a market slice, outputs as the replay shapes them ------


def settings_vector(config: SystemConfig) -> np.ndarray:
    """A config's scalars in the layout ``simulate`` reads."""
    r, c = config.risk, config.costs
    cfg = np.zeros(N_SETTINGS)
    cfg[C_ON_CLOSE] = 1.0 if config.fill == "on_close" else 0.0
    cfg[C_PARTICIPATION] = math.nan if config.participation is None else config.participation
    cfg[C_MM] = config.maintenance_margin
    cfg[C_INITIAL] = config.initial_capital
    cfg[C_MAKER], cfg[C_TAKER], cfg[C_SPREAD] = c.maker_fee, c.taker_fee, c.spread_bps
    cfg[C_SLIP_MODEL] = K.SLIPPAGE_MODELS[c.slippage.model]
    cfg[C_SLIP_BPS], cfg[C_IMPACT] = c.slippage.bps, c.slippage.impact
    cfg[C_SIZING] = K.SIZINGS[r.sizing]
    cfg[C_FRACTION], cfg[C_RISK], cfg[C_MAX_LEVERAGE] = r.fraction, r.risk_per_trade, r.max_leverage
    cfg[C_MAX_NOTIONAL] = r.max_position_notional or math.inf
    cfg[C_QTY_STEP] = r.qty_step
    cfg[C_STOP_KIND] = STOP_KINDS[r.stop.kind]
    cfg[C_ATR_MULT], cfg[C_STOP_PCT] = r.stop.atr_mult, r.stop.percent
    cfg[C_TP_RR] = r.stop.take_profit_rr or 0.0
    cfg[C_BAR_NS] = tf_ns(config.timeframe)
    return cfg


@dataclass
class KernelRun:
    """What ``simulate`` produced, shaped like a replay's results."""

    times: np.ndarray  # each traded bar's close
    curve: np.ndarray  # artifacts.CURVE_COLUMNS[1:], as Portfolio.curve
    ledger: list[tuple[str, int, float, float, float, float]]  # replay.trades.Ledger
    trades: list[Trade]
    open_trades: list[Trade]
    metrics: dict
    stats: np.ndarray


def _empty(dtype=np.float64) -> np.ndarray:
    return np.empty(0, dtype=dtype)


def kernel_inputs(config: SystemConfig, m: MarketSlice, record: bool) -> tuple:
    """``simulate``'s arguments for one config over one market slice."""
    defn = config.strategy_def()
    params = config.params()
    own, higher = feature_tables(config, m.candles)
    rows = strategy_rows(defn, params, own, higher)
    atr_name = f"atr_{config.risk.stop.atr_period}"
    atr = own.values[:, own.names.index(atr_name)].copy() if atr_name in own.names else _empty()
    cd = m.candles
    f_t = _empty(np.int64) if m.funding is None else m.funding["open_time"]
    f_r = _empty() if m.funding is None else m.funding["rate"]
    mk_t = _empty(np.int64) if m.marks is None else m.marks["open_time"]
    mk_o = _empty() if m.marks is None else m.marks["open"]
    return (rows, params.vector(), cd["open"], cd["high"], cd["low"], cd["close"], cd["volume"], cd["open_time"],
            m.first, atr, settings_vector(config), f_t, f_r, mk_t, mk_o, record)


def run_stats(config: SystemConfig, m: MarketSlice) -> tuple[np.ndarray, np.ndarray]:
    """(summary statistics, block statistics) of one trial: what a sweep keeps."""
    _, _, _, stats, _, blocks = simulator(config.strategy_def())(*kernel_inputs(config, m, False))
    return stats, blocks


def run_kernel(config: SystemConfig, m: MarketSlice) -> KernelRun:
    """One system over one market slice through the compiled loop, with everything the replay reports."""
    args = kernel_inputs(config, m, True)
    cd = m.candles
    funding_rows = 0 if m.funding is None else len(m.funding["open_time"])
    capacity = (len(cd["close"]) - m.first) // 4 + funding_rows + 64  # a first guess: a fill every 4 bars
    simulate = simulator(config.strategy_def())
    state, ledger, lts, stats, rows_made, _ = simulate(*args, capacity)
    if rows_made > capacity:
        state, ledger, lts, stats, rows_made, _ = simulate(*args, rows_made)
    ledger, lts = ledger[:rows_made], lts[:rows_made]
    bar_ns = tf_ns(config.timeframe)
    times = cd["open_time"][m.first:] + bar_ns
    closes = cd["close"][m.first:]
    qty, avg, balance = state[:, S_QTY], state[:, S_AVG], state[:, S_BALANCE]
    unrealized = np.where(qty != 0, (closes - avg) * qty, 0.0)
    curve = np.column_stack((closes, balance, balance + unrealized, qty, unrealized, state[:, S_REALIZED],
                             state[:, S_FEES], state[:, S_FUNDING]))
    rows_out = [(config.symbol, int(t), (r[L_QTY] if r[L_SIDE] > 0 else -r[L_QTY]) if r[L_KIND] == FILL else 0.0,
                 float(r[L_PRICE]), float(r[L_FEE]), float(r[L_AMOUNT])) for t, r in zip(lts.tolist(), ledger)]
    trades, open_trades = trades_from_ledger(rows_out, bar_ns)
    metrics = summarize(times, curve[:, 2], curve[:, 3], config.initial_capital, bar_ns, trades,
                        float(stats[M_FEES]), float(stats[M_FUNDING]))
    metrics["open_trades"] = len(open_trades)
    return KernelRun(times, curve, rows_out, trades, open_trades, metrics, stats)
