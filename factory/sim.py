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
the loop cannot express (several symbols, several systems) runs through it.
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass
from typing import Callable

import numba as nb
import numpy as np

from tradebus.components import kernel as K
from tradebus.components import strategies
from tradebus.components.portfolio import marked_curve
from tradebus.components.strategies import HOLD
from tradebus.components.timeframes import tf_ns
from tradebus.configs.schema import SystemConfig
from tradebus.factory.market import FeatureMemo
from tradebus.engine.metrics import STATS, add_trade, summarize
from tradebus.engine.market import MarketSlice
from tradebus.components.strategy_host import row_names
from tradebus.engine.wiring import feature_tables, strategy_rows
from tradebus.engine.trades import TRADE, Trade, trade_fill, trade_funding, trades_from_ledger

_jit = nb.njit(cache=True, nogil=True)
f8, i8 = np.float64, np.int64

SETTINGS = np.dtype([
    ("on_close", np.bool_), ("participation", f8), ("mm", f8), ("initial", f8),  # participation NaN: no cap
    ("maker", f8), ("taker", f8), ("spread", f8), ("slip_model", i8), ("slip_bps", f8), ("impact", f8),
    ("sizing", i8), ("fraction", f8), ("risk", f8), ("max_leverage", f8), ("max_notional", f8), ("qty_step", f8),
    ("stop_kind", i8), ("atr_mult", f8), ("stop_pct", f8), ("tp_rr", f8), ("bar_ns", i8),
])
"""A run's scalars (``settings``): numba takes one record better than twenty arguments."""

ORDER = np.dtype([("kind", i8), ("side", i8), ("qty", f8), ("rem", f8), ("price", f8), ("trigger", f8),
                  ("reduce", np.bool_), ("triggered", np.bool_), ("entry", np.bool_), ("stop", f8)])
"""One order of a small book (market orders waiting for an open, resting orders), in placement order;
``stop`` is an entry's stop distance, ``entry`` marks an entry to protect once it has filled."""
_BOOK = 256  # open orders at once; partial fills under a participation cap pile up (35 seen)

LEDGER = np.dtype([("ts", i8), ("kind", i8), ("side", i8), ("qty", f8), ("price", f8), ("fee", f8), ("amount", f8)])
"""Fills and funding, in the order the replay records them."""
FILL, FUNDING = 0, 1

ACCOUNT = np.dtype([("qty", f8), ("avg", f8), ("realized", f8), ("balance", f8), ("liq", f8), ("fees", f8),
                    ("funding", f8), ("gains", f8), ("liquidations", i8)])
"""The venue's and the portfolio's account of one system: position and cash."""

STEP = np.dtype([("balance", f8), ("qty", f8), ("avg", f8), ("realized", f8), ("fees", f8), ("funding", f8)])
"""The state at the end of each step (what ``Portfolio.curve`` marks)."""

PROTECT = np.dtype([("stop", f8), ("qty", f8), ("avg", f8)])
"""An entry that completed: its stop distance and the position its final fill left."""

N_BLOCKS = 16


@_jit
def _push(book: np.ndarray, n: int, kind: int, side: int, qty: float, price: float, trigger: float, reduce: bool,
          entry: bool, stop: float) -> int:
    if n >= book.shape[0]:
        raise ValueError("simulate: more than 256 open orders (order book overflow)")
    r = book[n]
    r.kind, r.side, r.qty, r.rem, r.price, r.trigger = kind, side, qty, qty, price, trigger
    r.reduce, r.triggered, r.entry, r.stop = reduce, False, entry, stop
    return n + 1


@_jit
def _drop_reduce_only(book: np.ndarray, n: int, start: int = 0) -> int:
    """Remove reduce-only orders from rows [start, n), keeping the others in order; return the new n."""
    k = start
    for j in range(start, n):
        if not book[j].reduce:
            if k != j:
                book[k] = book[j]
            k += 1
    return k


@_jit
def _append(ledger: np.ndarray, n: int, ts: int, kind: int, side: int, qty: float, price: float, fee: float,
            amount: float) -> None:
    """Write ledger row ``n`` if it fits.

    The caller counts rows either way and reruns with room for all of them if they did not fit: arrays
    reassigned inside the bar loop would cost numba a reference count update per bar.
    """
    if n < ledger.shape[0]:
        row = ledger[n]
        row.ts, row.kind, row.side, row.qty, row.price, row.fee, row.amount = ts, kind, side, qty, price, fee, amount


@_jit
def _book_fill(a, trades: np.ndarray, st, ledger: np.ndarray, nl: int, record: bool, ts: int, side: int,
               qty: float, price: float, fee: float, mm: float) -> int:
    """Apply one fill to the account (``kernel.book``) and the open trade ``trades[0]`` (``trades.trade_fill``;
    one it closes lands in ``trades[1]`` and counts in the statistics); append it to the ledger."""
    q0, r0 = a.qty, a.realized
    signed = qty if side > 0 else -qty
    a.qty, a.avg, a.realized, a.balance = K.book(q0, a.avg, r0, a.balance, signed, price, fee)
    a.gains += a.realized - r0  # the portfolio sums realised gains fill by fill
    a.fees += fee
    a.liq = K.liquidation_price(a.qty, a.avg, a.balance, mm)
    if trade_fill(trades[0], trades[1:], q0, r0, a.qty, a.avg, a.realized, signed, price, fee, ts, nl):
        d = trades[1]
        add_trade(st, d.gross - d.fees - d.funding, d.exit_time - d.entry_time)
    if record:
        _append(ledger, nl, ts, FILL, side, qty, price, fee, 0.0)
    return nl + 1


@_jit
def _fill(book: np.ndarray, j: int, a, trades: np.ndarray, st, ledger: np.ndarray, nl: int, record: bool, cfg,
          ref: float, ts: int, bar_volume: float, taker: bool, protect: np.ndarray, npro: int) -> tuple[int, int]:
    """Fill order ``j`` of ``book`` against ``ref`` (``kernel.fill_terms``, as SimExchange._fill); queue the
    protection of an entry that completed."""
    r = book[j]
    qty, price, fee = K.fill_terms(r.side, r.rem, r.reduce, a.qty, cfg.participation, bar_volume, ref, taker,
                                   cfg.maker, cfg.taker, cfg.spread, cfg.slip_model, cfg.slip_bps, cfg.impact)
    if qty < 0.0:
        r.rem = 0.0  # cancelled: it would open a position
        return nl, npro
    if qty == 0.0:
        return nl, npro
    r.rem = K.left_after(r.rem, qty, r.qty)
    nl = _book_fill(a, trades, st, ledger, nl, record, ts, r.side, qty, price, fee, cfg.mm)
    if r.entry and r.rem <= 0.0:
        # RiskManager: protect an entry once its final fill's position is known (that fill's qty and avg).
        pr = protect[npro]
        pr.stop, pr.qty, pr.avg = r.stop, a.qty, a.avg
        npro += 1
    return nl, npro


@_jit
def _protect(rest: np.ndarray, nr: int, protect: np.ndarray, npro: int, tp_rr: float) -> int:
    """Place the stop (and take-profit) of each completed entry, as RiskManager._protective_orders."""
    for k in range(npro):
        pr = protect[k]
        if not (pr.stop > 0.0) or pr.qty == 0.0:
            continue
        side = -1 if pr.qty > 0.0 else 1
        trigger, take_profit = K.protective_prices(pr.qty, pr.avg, pr.stop, tp_rr)
        if trigger > 0.0:  # the exchange rejects a non-positive trigger
            nr = _push(rest, nr, K.STOP, side, abs(pr.qty), math.nan, trigger, True, False, math.nan)
        if take_profit > 0.0:  # NaN (none) is not
            nr = _push(rest, nr, K.LIMIT, side, abs(pr.qty), take_profit, math.nan, True, False, math.nan)
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
              v: np.ndarray, open_t: np.ndarray, first: int, atr: np.ndarray, cfg, funding_t: np.ndarray,
              funding_r: np.ndarray, mark_t: np.ndarray, mark_o: np.ndarray, record: bool, capacity: int = 0,
              n_blocks: int = N_BLOCKS) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray]:
    """Run one system; return (per-bar state (``STEP``), ledger (``LEDGER``), statistics (one ``STATS``
    record), ledger rows, block statistics: bars, sum and sum of squares of the bar returns in each of
    ``n_blocks`` equal spans of time, from which the Sharpe ratio of any union of blocks follows, as CSCV
    needs).

    With ``record`` false the first two are empty: sweeps keep only the statistics. With ``record``
    the ledger holds ``capacity`` rows; if the run made more, rerun with at least that many.

    ``rows``: the strategy's feature rows for every loaded bar (warm-up included); ``atr``: the risk
    manager's ATR column (unused unless stops are ATR-based); ``cfg``: a ``SETTINGS`` record; bars from
    ``first`` are traded.
    """
    n = len(c)
    bar_ns = cfg.bar_ns
    mm = cfg.mm
    initial = cfg.initial
    # A record is a view that holds no reference to its array, and numba frees an array after its last use:
    # ``accounts`` is read again after the loop, ``trades`` and ``stats`` are used through their arrays, so
    # none is freed (its memory reused) while a record still points into it.
    accounts = np.zeros(1, dtype=ACCOUNT)
    a = accounts[0]
    a.balance = initial
    a.liq = math.nan
    stats = np.zeros(1, dtype=STATS)
    st = stats[0]
    trades = np.zeros(2, dtype=TRADE)  # the open trade, and the last one closed
    state = np.empty(n - first if record else 0, dtype=STEP)
    ledger = np.empty(capacity if record else 0, dtype=LEDGER)
    queue = np.empty(_BOOK, dtype=ORDER)
    single = np.empty(1, dtype=ORDER)
    nl = 0
    pend = np.empty(_BOOK, dtype=ORDER)
    rest = np.empty(_BOOK, dtype=ORDER)
    nq = 0  # pending market orders
    nr = 0  # resting orders
    protect = np.empty(_BOOK, dtype=PROTECT)
    fi = 0
    while fi < len(funding_t) and funding_t[fi] < open_t[first]:
        fi += 1  # funding before the first traded bar is history, not a charge
    prev_equity = initial
    # Drawdown is measured on the equity curve, as engine.metrics does: the first bar sets the peak.
    peak = trough = -math.inf
    peak_t = 0
    blocks = np.zeros((n_blocks, 3))
    span = n - first
    ret_sum = ret_sq = down_sq = max_dd = 0.0
    dd_ns = 0
    exposed = 0
    t_close = 0
    for i in range(first, n):
        t_open = open_t[i]
        t_close = t_open + bar_ns
        bo, bh, bl, bc, bv = o[i], h[i], l[i], c[i], v[i]
        npro = 0
        # 1. the venue's bar: funding up to the open
        while fi < len(funding_t) and funding_t[fi] <= t_open:
            t, rate = funding_t[fi], funding_r[fi]
            fi += 1
            if a.qty != 0.0:
                amount = K.funding_amount(a.qty, _mark(mark_t, mark_o, t, bo), rate)
                a.balance -= amount
                a.liq = K.liquidation_price(a.qty, a.avg, a.balance, mm)
                a.funding += amount
                trade_funding(trades[0], amount)
                if record:
                    _append(ledger, nl, t, FUNDING, 0, 0.0, 0.0, 0.0, amount)
                nl += 1
        # ... market orders waiting for this open, in order; what a cap leaves waits again
        if nq:
            for k in range(nq):
                queue[k] = pend[k]
            nqueue = nq
            nq = 0
            head = 0
            while head < nqueue:
                nl, npro = _fill(queue, head, a, trades, st, ledger, nl, record, cfg, bo, t_open, bv, True, protect, npro)
                if queue[head].rem > 0:
                    pend[nq] = queue[head]
                    nq += 1
                head += 1
                if a.qty == 0.0:
                    nr = _drop_reduce_only(rest, nr)
                    nq = _drop_reduce_only(pend, nq)
                    nqueue = _drop_reduce_only(queue, nqueue, head)
        # ... resting orders in placement order
        if nr:
            k = 0
            for j in range(nr):
                r = rest[j]
                if r.reduce and a.qty == 0.0:
                    rest[k] = rest[j]  # cancelled below, as "position closed"
                    k += 1
                    continue
                ref, taker, trig = K.crossed(r.kind, r.side, r.triggered, r.price, r.trigger, bo, bh, bl)
                r.triggered = trig
                if not math.isnan(ref):
                    nl, npro = _fill(rest, j, a, trades, st, ledger, nl, record, cfg, ref, t_close, bv, taker, protect,
                                     npro)
                if rest[j].rem > 0:
                    rest[k] = rest[j]
                    k += 1
            nr = k
            if a.qty == 0.0:
                nr = _drop_reduce_only(rest, nr)
                nq = _drop_reduce_only(pend, nq)
        # ... liquidation where equity meets maintenance margin
        q = a.qty
        if q != 0.0 and K.liquidated(q, a.liq, bh, bl):
            price = K.liquidation_fill(q, a.liq, bo)
            nl = _book_fill(a, trades, st, ledger, nl, record, t_close, -1 if q > 0.0 else 1, abs(q), price,
                            K.fee(abs(q), price, cfg.taker), mm)
            a.liquidations += 1
            if a.qty == 0.0:
                nr = _drop_reduce_only(rest, nr)
                nq = _drop_reduce_only(pend, nq)
        # 2. the decision, on this bar's row and the previous one
        target = HOLD
        if i > 0:
            q = a.qty
            pos = 1 if q > 0.0 else (-1 if q < 0.0 else 0)
            target = _decide(rows[i], rows[i - 1], pos, p)
            if target == pos:
                target = HOLD
        # 3. protection for entries completed at this bar
        if npro:
            nr = _protect(rest, nr, protect, npro, cfg.tp_rr)
            npro = 0
        # 4. the signal
        if target != HOLD:
            q = a.qty
            exit_qty = 0.0
            if q != 0.0 and target != (1 if q > 0.0 else -1):
                exit_qty = abs(q)
            entry_qty = 0.0
            stop = math.nan
            if target != 0:
                stop = K.stop_distance(cfg.stop_kind, cfg.atr_mult, atr[i] if len(atr) else math.nan, cfg.stop_pct,
                                       bc)
                entry_qty, _, code = K.size(cfg.sizing, K.marked(a.balance, q, a.avg, bc), bc, stop, cfg.fraction,
                                            cfg.risk, cfg.max_leverage, cfg.max_notional, cfg.qty_step)
                if code != K.SIZE_OK:
                    entry_qty = 0.0
            for leg in range(2):
                qty = exit_qty if leg == 0 else entry_qty
                if not (qty > 0.0):
                    continue
                side = (-1 if q > 0.0 else 1) if leg == 0 else target
                if cfg.on_close:
                    _push(single, 0, K.MARKET, side, qty, math.nan, math.nan, leg == 0, leg == 1, stop)
                    nl, npro = _fill(single, 0, a, trades, st, ledger, nl, record, cfg, bc, t_close, bv, True, protect,
                                     npro)
                    if a.qty == 0.0:
                        nr = _drop_reduce_only(rest, nr)
                        nq = _drop_reduce_only(pend, nq)
                    if single[0].rem > 0:
                        pend[nq] = single[0]
                        nq += 1
                else:
                    nq = _push(pend, nq, K.MARKET, side, qty, math.nan, math.nan, leg == 0, leg == 1, stop)
        # 5. protection for entries filled at this close
        if npro:
            nr = _protect(rest, nr, protect, npro, cfg.tp_rr)
        # the step's end: the portfolio's state, marked at the close
        q = a.qty
        equity = a.balance + ((bc - a.avg) * q if q != 0.0 else 0.0)
        if record:
            row = state[i - first]
            row.balance, row.qty, row.avg, row.realized, row.fees, row.funding = (
                a.balance, q, a.avg, a.gains, a.fees, a.funding)
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
            if trough < peak:  # recovered from a drawdown
                dd = trough / peak - 1.0
                if dd < max_dd:
                    max_dd = dd
                if t_close - peak_t > dd_ns:
                    dd_ns = t_close - peak_t
            peak = trough = equity
            peak_t = t_close
        elif equity < trough:
            trough = equity
        if q != 0.0:
            exposed += 1
    if trough < peak:  # a drawdown still open at the end lasts until the last bar
        dd = trough / peak - 1.0
        if dd < max_dd:
            max_dd = dd
        if t_close - peak_t > dd_ns:
            dd_ns = t_close - peak_t
    bars = n - first
    st.bars = bars
    st.ret_mean = ret_sum / bars if bars else 0.0
    st.ret_m2 = ret_sq - ret_sum * ret_sum / bars if bars else 0.0  # sum of squared deviations
    st.down_sq = down_sq
    st.max_dd = max_dd
    st.dd_ns = dd_ns
    st.exposed = exposed
    st.final_equity = prev_equity
    end = accounts[0]
    st.fees = end.fees
    st.funding = end.funding
    st.liquidations = end.liquidations
    return state, ledger, stats, nl, blocks


_SIMULATORS: dict[strategies.StrategyDef, Callable] = {}


def simulator(defn: strategies.StrategyDef) -> Callable:
    """``_simulate`` compiled for one strategy, its decision step inlined (process-wide, compiled once).

    The loop's code is written once; each strategy gets its own compilation in which the global
    ``_decide`` is that strategy's step, so LLVM sees through the call (a decision passed as an argument
    costs ~55 ns a bar, inlined ~10 ns). Not cached on disk: the copies share one code object.
    """
    if not defn.compiled:
        raise strategies.StrategyError(
            f"strategy {defn.id!r} has a plain-Python step (compiled = False): the sweep kernel runs compiled "
            "steps only; replay and the daemons run it, or make its decide compile with numba")
    fn = _SIMULATORS.get(defn)
    if fn is None:
        scope = dict(_simulate.__globals__, _decide=nb.njit(inline="always")(defn.decide.py_func))
        body = types.FunctionType(_simulate.__code__, scope, f"simulate_{defn.id}", _simulate.__defaults__)
        fn = _SIMULATORS[defn] = nb.njit(nogil=True)(body)
    return fn


_BATCHES: dict[strategies.StrategyDef, Callable] = {}


def batch_simulator(defn: strategies.StrategyDef) -> Callable:
    """``simulate`` over many parameter vectors and settings records on one market slice, in one compiled
    call: ``(rows, P, o, h, l, c, v, open_t, first, atr, cfgs, funding_t, funding_r, mark_t, mark_o) ->
    (STATS per set, blocks per set)``. The same compiled loop as one trial's, called from compiled code: a
    sweep pays Python's argument checks once per group of trials that read the same rows, not per trial."""
    fn = _BATCHES.get(defn)
    if fn is None:
        one = simulator(defn)

        def many(rows, P, o, h, l, c, v, open_t, first, atr, cfgs, funding_t, funding_r, mark_t, mark_o):  # noqa: E741
            n = P.shape[0]
            stats = np.empty(n, dtype=STATS)
            blocks = np.empty((n, N_BLOCKS, 3))
            for k in range(n):
                _, _, st, _, bl = one(rows, P[k], o, h, l, c, v, open_t, first, atr, cfgs[k], funding_t, funding_r,
                                      mark_t, mark_o, False)
                stats[k] = st[0]
                blocks[k] = bl
            return stats, blocks

        fn = _BATCHES[defn] = nb.njit(nogil=True)(many)
    return fn


# --- the Python side: inputs from a config and a market slice, outputs as the replay shapes them ------


def settings(config: SystemConfig) -> np.void:
    """A config's scalars as the ``SETTINGS`` record ``simulate`` reads."""
    r, c = config.risk, config.costs
    return np.array((
        config.fill == "on_close", math.nan if config.participation is None else config.participation,
        config.maintenance_margin, config.initial_capital,
        c.maker_fee, c.taker_fee, c.spread_bps, K.SLIPPAGE_MODELS[c.slippage.model], c.slippage.bps, c.slippage.impact,
        K.SIZINGS[r.sizing], r.fraction, r.risk_per_trade, r.max_leverage, r.max_position_notional or math.inf,
        r.qty_step, K.STOP_KINDS[r.stop.kind], r.stop.atr_mult, r.stop.percent, r.stop.take_profit_rr or 0.0,
        tf_ns(config.timeframe),
    ), dtype=SETTINGS)[()]


@dataclass
class KernelRun:
    """What ``simulate`` produced, shaped like a replay's results."""

    times: np.ndarray  # each traded bar's close
    curve: np.ndarray  # artifacts.CURVE_COLUMNS[1:], as Portfolio.curve
    ledger: list[tuple[str, int, float, float, float, float]]  # engine.trades.Ledger
    trades: list[Trade]
    open_trades: list[Trade]
    metrics: dict
    stats: np.void  # a STATS record


def _empty(dtype=np.float64) -> np.ndarray:
    return np.empty(0, dtype=dtype)


def kernel_inputs(config: SystemConfig, m: MarketSlice, record: bool, memo: FeatureMemo | None = None) -> tuple:
    """``simulate``'s arguments for one config over one market slice (indicator outputs from ``memo`` when
    another trial over the same slice computed them)."""
    defn = config.strategy_def()
    params = config.params()
    atr_name = f"atr_{config.risk.stop.atr_period}"
    bound = None if memo is None else memo.bind(m.candles, m.source, config.timeframe)

    def rows_and_atr() -> tuple[np.ndarray, np.ndarray]:
        own, higher = feature_tables(config, m.candles, bound)
        atr = own.values[:, own.names.index(atr_name)].copy() if atr_name in own.names else _empty()
        return strategy_rows(defn, params, own, higher), atr

    if bound is None:
        rows, atr = rows_and_atr()
    else:  # trials whose rows hold the same features share them (the loop only reads its inputs)
        own_names, higher_names = row_names(defn, params)
        rows, atr = bound(("rows", tuple(own_names), tuple(higher_names), atr_name), rows_and_atr)
    cd = m.candles
    f_t = _empty(np.int64) if m.funding is None else m.funding["open_time"]
    f_r = _empty() if m.funding is None else m.funding["rate"]
    mk_t = _empty(np.int64) if m.marks is None else m.marks["open_time"]
    mk_o = _empty() if m.marks is None else m.marks["open"]
    return (rows, params.vector(), cd["open"], cd["high"], cd["low"], cd["close"], cd["volume"], cd["open_time"],
            m.first, atr, settings(config), f_t, f_r, mk_t, mk_o, record)


def run_stats(config: SystemConfig, m: MarketSlice, memo: FeatureMemo | None = None) -> tuple[np.void, np.ndarray]:
    """(statistics, a ``STATS`` record; block statistics) of one trial: what a sweep keeps."""
    _, _, stats, _, blocks = simulator(config.strategy_def())(*kernel_inputs(config, m, False, memo))
    return stats[0], blocks


def run_stats_batch(defn: strategies.StrategyDef, inputs: list[tuple]) -> tuple[np.ndarray, np.ndarray]:
    """``run_stats`` of several trials whose ``kernel_inputs`` differ only in parameters and settings (same
    strategy step, rows and market slice), in one compiled call: (STATS per trial, blocks per trial)."""
    first = inputs[0]
    P = np.ascontiguousarray(np.stack([a[1] for a in inputs]))
    cfgs = np.array([a[10] for a in inputs], dtype=SETTINGS)
    return batch_simulator(defn)(first[0], P, *first[2:10], cfgs, *first[11:15])


def run_kernel(config: SystemConfig, m: MarketSlice) -> KernelRun:
    """One system over one market slice through the compiled loop, with everything the replay reports."""
    args = kernel_inputs(config, m, True)
    cd = m.candles
    funding_rows = 0 if m.funding is None else len(m.funding["open_time"])
    capacity = (len(cd["close"]) - m.first) // 4 + funding_rows + 64  # a first guess: a fill every 4 bars
    simulate = simulator(config.strategy_def())
    state, ledger, stats, rows_made, _ = simulate(*args, capacity)
    if rows_made > capacity:
        state, ledger, stats, rows_made, _ = simulate(*args, rows_made)
    ledger = ledger[:rows_made]
    st = stats[0]
    bar_ns = tf_ns(config.timeframe)
    times = cd["open_time"][m.first:] + bar_ns
    closes = cd["close"][m.first:]
    curve = marked_curve(closes, state["balance"], state["qty"], state["avg"], state["realized"], state["fees"],
                         state["funding"])
    rows_out = [(config.symbol, t, (q if side > 0 else -q) if kind == FILL else 0.0, price, fee, amount)
                for t, kind, side, q, price, fee, amount in ledger.tolist()]
    trades, open_trades = trades_from_ledger(rows_out, bar_ns)
    metrics = summarize(times, curve[:, 2], curve[:, 3], config.initial_capital, bar_ns, trades, float(st["fees"]),
                        float(st["funding"]))
    metrics["open_trades"] = len(open_trades)
    return KernelRun(times, curve, rows_out, trades, open_trades, metrics, st)
