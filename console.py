"""How events look to a person: one line each, coloured by kind (used by ``tradebus tail``)."""

from __future__ import annotations

from datetime import datetime, timezone

from tradebus.bus import events as ev


def fmt_ns(ts: int) -> str:
    """Format a nanosecond timestamp as UTC ``YYYY-mm-dd HH:MM:SS.mmm``."""
    return datetime.fromtimestamp(ts / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


# Metrics held as fractions (engine.metrics): shown as percentages, 1.35 -> +135.00%.
FRACTIONS = frozenset({"return_pct", "annualised_return", "max_drawdown", "win_rate", "test_return_pct"})


def metric(name: str, value: object) -> str:
    """One experiments-table value as a person reads it."""
    if value is None:
        return "-"
    if name in FRACTIONS and isinstance(value, (int, float)):
        return f"{value:+.2%}" if name.endswith("return") or name.endswith("return_pct") else f"{value:.2%}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.10g}"


def describe(e: ev.Event) -> str:
    """Return the part of a line that says what happened."""
    match e:
        case ev.BarClosed():
            return (f"{e.venue} {e.symbol} {e.timeframe} O {_num(e.open)} H {_num(e.high)}"
                    f" L {_num(e.low)} C {_num(e.close)} V {_num(e.volume)}")
        case ev.Snapshot():
            return f"{e.bar.symbol} {e.bar.timeframe} C {_num(e.bar.close)} features={len(e.features)} htf={','.join(e.htf)}"
        case ev.Forecast():
            return (f"{e.model_id}@{e.model_version} {e.symbol} h={e.horizon_bars} ret={e.expected_return:+.4%}"
                    f" vol={e.expected_vol:.4%} {e.regime} conf={e.confidence:.2f}")
        case ev.Signal():
            return f"{e.strategy} {e.symbol} -> {e.direction} x{e.strength:.2f} {e.reason}".rstrip()
        case ev.OrderIntent():
            px = f" @ {_num(e.price)}" if e.price is not None else ""
            trig = f" trig {_num(e.trigger_price)}" if e.trigger_price is not None else ""
            ro = " reduce-only" if e.reduce_only else ""
            return f"{e.order_id} {e.side} {_num(e.qty)} {e.symbol} {e.order_type}{px}{trig}{ro}"
        case ev.OrderAccepted():
            return f"{e.order_id} accepted as {e.venue_order_id}"
        case ev.OrderRejected():
            return f"{e.order_id} REJECTED {e.reason} {e.code}".rstrip()
        case ev.OrderCancelled():
            return f"{e.order_id} cancelled {e.reason}".rstrip()
        case ev.OrderSubmitted() | ev.OrderExpired():
            return e.order_id
        case ev.Fill():
            return (f"{e.order_id} {e.side} {_num(e.qty)} {e.symbol} @ {_num(e.price)} fee {_num(e.fee)}"
                    f" {e.liquidity} exec {e.exec_id}")
        case ev.FundingPaid():
            return f"{e.symbol} funding {e.rate:+.6%} on {_num(e.position_qty)} @ {_num(e.mark_price)}: paid {e.amount:+.4f}"
        case ev.PositionChanged():
            return f"{e.symbol} qty {_num(e.qty)} avg {_num(e.avg_price)} rPnL {e.realized_pnl:.2f} uPnL {e.unrealized_pnl:.2f}"
        case ev.AccountState():
            return f"balance {e.balance:.2f} equity {e.equity:.2f} margin {e.margin_used:.2f} {e.currency}"
        case ev.Promotion():
            return f"{e.from_status} -> {e.to_status} by {e.rule}"
        case ev.Allocation():
            return f"weight {e.weight:.3f} ({e.method})"
        case ev.RiskStateChanged():
            return f"{e.scope} {e.previous} -> {e.state}: {e.reason}"
        case ev.RunStarted():
            return f"{e.mode} run {e.run} started"
        case ev.RunFinished():
            return f"run {e.run} {e.status}"
        case ev.Heartbeat():
            return f"{e.component} #{e.seq}"
    return ""  # pragma: no cover - every type is matched above; a new one shows at least its tag


_STYLES = {
    "bar": "cyan", "snapshot": "dim cyan", "forecast": "bright_blue", "signal": "yellow",
    "order.intent": "blue", "order.submitted": "blue", "order.accepted": "blue",
    "order.rejected": "bold red", "order.cancelled": "magenta", "order.expired": "magenta",
    "fill": "bold green", "funding": "yellow", "position": "green", "account": "green", "promotion": "bold white",
    "risk": "bold red", "run.started": "white", "run.finished": "white", "heartbeat": "dim",
}


def style_for(e: ev.Event) -> str:
    """Return the rich style for an event's kind."""
    if isinstance(e, ev.RiskStateChanged) and e.state == "active":
        return "bold green"
    return _STYLES.get(ev.tag_of(e), "")


def line(e: ev.Event) -> str:
    """Return the whole plain-text line for an event."""
    system = e.system or "-"
    return f"{fmt_ns(e.ts_event)}  {ev.tag_of(e):<15} {system:<14} {describe(e)}"
