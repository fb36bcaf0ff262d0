"""Self-contained HTML pages (plotly.js inlined) a trader can read offline.

A replay's report.html: equity with drawdown underneath, price with every entry and exit marked, and the
metrics table. A scenario run's comparison: metrics per scenario and window, test-window equity overlaid,
sensitivity scans.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tradebus.engine.artifacts import atomic_write
from tradebus.engine.trades import Trade

_LABELS = {
    "return_pct": ("Total return", "pct"), "annualised_return": ("Annualised return", "pct"),
    "sharpe": ("Sharpe", "num"), "sortino": ("Sortino", "num"), "calmar": ("Calmar", "num"),
    "max_drawdown": ("Max drawdown", "pct"), "max_drawdown_duration_days": ("Longest drawdown (days)", "num"),
    "total_trades": ("Trades", "int"), "trades_per_year": ("Trades per year", "num"), "win_rate": ("Win rate", "pct"), "profit_factor": ("Profit factor", "num"),
    "expectancy": ("Expectancy per trade", "money"), "avg_holding_hours": ("Average holding (hours)", "num"),
    "exposure": ("Exposure", "pct"), "fees_paid": ("Fees paid", "money"), "funding_paid": ("Funding paid", "money"),
    "final_equity": ("Final equity", "money"), "bars": ("Bars", "int"),
}


def _fmt(value: object, kind: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if kind == "pct":
        return f"{value:.2%}"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "money":
        return f"{value:,.2f}"
    return f"{value:,.2f}"


def _times(ns: np.ndarray) -> np.ndarray:
    return ns.astype("datetime64[ns]")


def render(path: Path, title: str, subtitle: str, times: np.ndarray, curve: np.ndarray, trades: Sequence[Trade],
           metrics: dict, max_points: int = 20_000) -> None:
    """Write the report; long curves are thinned to ``max_points`` for the browser (metrics use all bars)."""
    step = max(1, len(curve) // max_points)
    c = curve[::step]
    t = _times(times[::step])
    equity = c[:, 2]
    dd = equity / np.maximum.accumulate(equity) - 1.0 if len(equity) else equity
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, row_heights=[0.45, 0.2, 0.35], vertical_spacing=0.03,
                        subplot_titles=("Equity", "Drawdown", "Price and trades"))
    fig.add_trace(go.Scatter(x=t, y=equity, name="equity", line={"color": "#1f77b4"}), row=1, col=1)
    fig.add_trace(go.Scatter(x=t, y=dd, name="drawdown", fill="tozeroy", line={"color": "#d62728"}), row=2, col=1)
    fig.add_trace(go.Scatter(x=t, y=c[:, 0], name="close", line={"color": "#555", "width": 1}), row=3, col=1)
    for side, color, symbol in (("long", "#2ca02c", "triangle-up"), ("short", "#d62728", "triangle-down")):
        chosen = [tr for tr in trades if tr.side == side]
        if chosen:
            fig.add_trace(go.Scatter(
                x=_times(np.array([tr.entry_time for tr in chosen])), y=[tr.entry_price for tr in chosen],
                mode="markers", name=f"{side} entry", marker={"color": color, "symbol": symbol, "size": 8},
                text=[f"{side} {tr.qty:.6g} @ {tr.entry_price:.6g}" for tr in chosen]), row=3, col=1)
            fig.add_trace(go.Scatter(
                x=_times(np.array([tr.exit_time for tr in chosen])), y=[tr.exit_price for tr in chosen],
                mode="markers", name=f"{side} exit", marker={"color": color, "symbol": "x", "size": 7},
                text=[f"pnl {tr.pnl:,.2f} ({tr.return_pct:.2%})" for tr in chosen]), row=3, col=1)
    fig.update_yaxes(tickformat=".0%", row=2, col=1)
    if len(equity) and equity.min() > 0 and equity.max() / equity.min() > 5:
        fig.update_yaxes(type="log", row=1, col=1)  # large moves read better in ratios
    fig.update_layout(height=900, margin={"l": 60, "r": 20, "t": 40, "b": 30}, legend={"orientation": "h"},
                      template="plotly_white")
    rows = "".join(
        f"<tr><th>{html.escape(label)}</th><td>{_fmt(metrics.get(key), kind)}</td></tr>"
        for key, (label, kind) in _LABELS.items()
    )
    _write_page(path, title, subtitle, f'<div class="grid"><table>{rows}</table><div>'
                f'{fig.to_html(full_html=False, include_plotlyjs=True, div_id="tradebus-report")}</div></div>')


def _write_page(path: Path, title: str, subtitle: str, body: str) -> None:
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; }}
h1 {{ margin-bottom: 0; }} p.sub {{ color: #666; margin-top: 4px; }} p.warn {{ color: #a15c00; }}
.grid {{ display: grid; grid-template-columns: 320px 1fr; gap: 24px; align-items: start; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ padding: 4px 8px; border-bottom: 1px solid #eee; text-align: left; font-size: 14px; }}
td {{ text-align: right; font-variant-numeric: tabular-nums; }} td.text {{ text-align: left; color: #555; }}
</style></head><body>
<h1>{html.escape(title)}</h1><p class="sub">{html.escape(subtitle)}</p>
{body}
</body></html>
"""
    atomic_write(path, page.encode())


_COMPARED = (("return_pct", "pct"), ("annualised_return", "pct"), ("sharpe", "num"), ("max_drawdown", "pct"),
             ("total_trades", "int"), ("win_rate", "pct"), ("profit_factor", "num"), ("exposure", "pct"))


@dataclass
class Compared:
    """One scenario as the comparative report shows it."""

    name: str
    kind: str
    description: str
    train: dict | None
    test: dict | None
    test_curve: tuple[np.ndarray, np.ndarray] | None  # close times, equity / initial capital
    skipped: str | None = None


@dataclass
class Scan:
    """A one-parameter sensitivity scan: values, train and test metric, the base value."""

    scenario: str
    param: str
    values: list[float]
    train: list[float]
    test: list[float]
    base: float
    metric: str


def render_comparison(path: Path, title: str, subtitle: str, rows: Sequence[Compared], scans: Sequence[Scan],
                      warnings: Sequence[str] = (), max_points: int = 5_000, what: str = "scenario",
                      test_name: str = "test") -> None:
    """Runs side by side (scenarios, a portfolio's account and systems): metrics on each window they have,
    the test window's equity overlaid, sensitivity scans. ``test_name``: how the test window is labelled."""
    head = "".join(f"<th>{html.escape(_LABELS[k][0])}</th>" for k, _ in _COMPARED)
    body = [f'<p class="warn">{html.escape(w)}</p>' for w in warnings]
    body.append(f"<table><tr><th>{html.escape(what)}</th><th>kind</th><th>window</th>{head}</tr>")
    for r in rows:
        if r.skipped:
            body.append(f"<tr><th>{html.escape(r.name)}</th><td class=text>{r.kind}</td>"
                        f"<td class=text colspan={len(_COMPARED) + 1}>skipped: {html.escape(r.skipped)}</td></tr>")
            continue
        shown = [(w, m) for w, m in (("train", r.train), (test_name, r.test)) if m is not None] or [(test_name, None)]
        for i, (window, m) in enumerate(shown):
            cells = "".join(f"<td>{_fmt((m or {}).get(k), kind)}</td>" for k, kind in _COMPARED)
            body.append(f"<tr><th>{html.escape(r.name) if i == 0 else ''}</th><td class=text>{r.kind if i == 0 else ''}"
                        f"</td><td class=text>{html.escape(window)}</td>{cells}</tr>")
        body.append(f"<tr><td></td><td class=text colspan={len(_COMPARED) + 2}>{html.escape(r.description)}</td></tr>")
    body.append("</table>")
    fig = go.Figure()
    for r in rows:
        if r.test_curve is not None:
            t, eq = r.test_curve
            step = max(1, len(t) // max_points)
            fig.add_trace(go.Scatter(x=_times(t[::step]), y=eq[::step], name=r.name))
    fig.update_layout(title=f"{test_name.capitalize()} window: equity per unit of capital", height=480, template="plotly_white",
                      margin={"l": 60, "r": 20, "t": 50, "b": 30}, legend={"orientation": "h"})
    body.append(fig.to_html(full_html=False, include_plotlyjs=True, div_id="tradebus-equity"))
    if scans:
        sub = make_subplots(rows=len(scans), cols=1, vertical_spacing=0.25 / len(scans),
                            subplot_titles=[f"{s.scenario}: {s.param} ({s.metric})" for s in scans])
        for i, s in enumerate(scans, 1):
            for name, ys, color in (("train", s.train, "#1f77b4"), ("test", s.test, "#ff7f0e")):
                sub.add_trace(go.Scatter(x=s.values, y=ys, mode="lines+markers", name=name, line={"color": color},
                                         showlegend=i == 1), row=i, col=1)
            sub.add_vline(x=s.base, line={"dash": "dot", "color": "#888"}, row=i, col=1)
        sub.update_layout(height=260 * len(scans) + 60, template="plotly_white", title="Parameter sensitivity",
                          margin={"l": 60, "r": 20, "t": 70, "b": 30})
        body.append(sub.to_html(full_html=False, include_plotlyjs=False, div_id="tradebus-sensitivity"))
    _write_page(path, title, subtitle, "\n".join(body))
