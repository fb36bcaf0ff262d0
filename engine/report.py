"""HTML pages a trader can read offline; plotly.js is written once beside them, not into each page.

A replay's report.html: the metrics beside buy and hold, equity with buy and hold and drawdown underneath,
price with the trades (an even sample when there are thousands, every one when zoomed in; candles and the
strategy's price-scale indicators once zoomed in far enough to read them), monthly
returns, a sortable trade table, and the config. A scenario run's comparison: metrics per scenario and window, test-window equity overlaid,
sensitivity scans.
"""

from __future__ import annotations

import html
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import plotly
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from tradebus.engine.artifacts import atomic_write
from tradebus.engine.metrics import underwater
from tradebus.engine.trades import Trade

LABELS = {
    "return_pct": ("Total return", "pct"), "annualised_return": ("Annualised return", "pct"),
    "sharpe": ("Sharpe", "num"), "sortino": ("Sortino", "num"), "calmar": ("Calmar", "num"),
    "max_drawdown": ("Max drawdown", "pct"), "max_drawdown_duration_days": ("Longest drawdown (days)", "num"),
    "total_trades": ("Trades", "int"), "trades_per_year": ("Trades per year", "num"), "win_rate": ("Win rate", "pct"), "profit_factor": ("Profit factor", "num"),
    "expectancy": ("Expectancy per trade", "money"), "avg_holding_hours": ("Average holding (hours)", "num"),
    "exposure": ("Exposure", "pct"), "fees_paid": ("Fees paid", "money"), "funding_paid": ("Funding paid", "money"),
    "final_equity": ("Final equity", "money"), "bars": ("Bars", "int"),
}


def fmt_metric(value: object, kind: str, signed: bool = False) -> str:
    """A metric as a person reads it (``kind`` from ``LABELS``); ``signed``: a difference, with its sign."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    sign = "+" if signed else ""
    if kind == "pct":
        return f"{value:{sign}.2%}"
    if kind == "int":
        return f"{int(value):{sign},}"
    return f"{value:{sign},.2f}"


def _times(ns: np.ndarray) -> np.ndarray:
    return ns.astype("datetime64[ns]")


def _ms(ns: np.ndarray) -> np.ndarray:
    """Epoch milliseconds: a date axis takes them as numbers, and plotly sends numbers as compact binary."""
    return (np.asarray(ns, dtype=np.int64) // 1_000_000).astype(np.float64)


PLOTLY_JS = f"plotly-{plotly.__version__}.min.js"
TRADE_MARKERS = 400  # at most this many entries and exits drawn at once; zooming in shows every one


def plotly_script(report: Path) -> str:
    """Write plotly.js once beside the reports (in the nearest ``runs`` folder above the report, else beside
    it) and return the relative path the page loads it from: pages stay small and still open offline."""
    home = next((p for p in report.parents if p.name == "runs"), report.parent)
    asset = home / PLOTLY_JS
    if not asset.exists():
        atomic_write(asset, get_plotlyjs().encode())
    return os.path.relpath(asset, report.parent)


def monthly_returns(times: np.ndarray, equity: np.ndarray) -> tuple[list[int], np.ndarray]:
    """Each calendar month's return (UTC), from the equity at the end of the month before (the first month
    from the starting equity): (years, a years x 12 array, NaN where the run has no bar)."""
    if len(equity) == 0:
        return [], np.empty((0, 12))
    months = _times(times).astype("datetime64[M]")
    last = np.flatnonzero(np.append(months[1:] != months[:-1], True))  # each month's last bar
    ends, which = equity[last], months[last]
    starts = np.concatenate(([equity[0]], ends[:-1]))
    rets = ends / starts - 1.0
    years = which.astype("datetime64[Y]").astype(int) + 1970
    month = which.astype(int) % 12
    table = np.full((int(years.max() - years.min()) + 1, 12), np.nan)
    table[years - years.min(), month] = rets
    return list(range(int(years.min()), int(years.max()) + 1)), table


def _thin(idx: np.ndarray, limit: int) -> np.ndarray:
    return idx if len(idx) <= limit else idx[np.linspace(0, len(idx) - 1, limit).astype(int)]


CANDLES_AT = 300  # the price panel draws candles (and the strategy's price-scale indicators) below this many in view
OVERLAYS = ("sma", "ema", "bb", "dc", "vwap")  # features on the price's scale, by name prefix


def candles(times: np.ndarray, ohlc: dict[str, np.ndarray], step: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Bars merged ``step`` at a time into candles (first open, highest high, lowest low, last close), each
    at its first bar's time: the chart's resolution, not the run's."""
    starts = np.arange(0, len(times), step)
    if not len(starts):
        return times[:0], {k: v[:0] for k, v in ohlc.items()}
    ends = np.append(starts[1:], len(times)) - 1
    return times[starts], {"open": ohlc["open"][starts], "high": np.maximum.reduceat(ohlc["high"], starts),
                           "low": np.minimum.reduceat(ohlc["low"], starts), "close": ohlc["close"][ends]}


def _f4(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)  # a chart needs 7 digits; half the bytes of float64


def render(path: Path, title: str, subtitle: str, times: np.ndarray, curve: np.ndarray, trades: Sequence[Trade],
           metrics: dict, *, config_yaml: str = "", max_points: int = 4_000,
           ohlc: dict[str, np.ndarray] | None = None, overlays: dict[str, np.ndarray] | None = None) -> None:
    """Write the report. Curves are thinned to ``max_points`` for the browser (metrics use every bar). The
    price panel shows the close when zoomed out and, with ``ohlc`` (per bar, like ``times``), candles at
    that resolution with ``overlays`` (indicator name -> per-bar values) once fewer than ``CANDLES_AT``
    are in view; it draws at most ``TRADE_MARKERS`` trades at the zoom shown and all of them when zoomed in."""
    step = max(1, -(-len(curve) // max_points))
    c = curve[::step]
    x = _ms(times[::step])
    equity = c[:, 2]
    start_equity = curve[0, 2] if len(curve) else 0.0
    hold = start_equity * c[:, 0] / curve[0, 0] if len(curve) else equity  # buy and hold from the first close
    dd = underwater(equity)
    # The panels' dates are kept together by the page's script, not plotly's matched axes (an API range on
    # one of those leaves the first panel behind, seen in Chromium).
    fig = make_subplots(rows=3, cols=1, row_heights=[0.45, 0.2, 0.35], vertical_spacing=0.03,
                        subplot_titles=("Equity (and buy and hold)", "Drawdown", "Price and trades"))
    fig.update_xaxes(showticklabels=False, row=1, col=1)
    fig.update_xaxes(showticklabels=False, row=2, col=1)
    fig.add_trace(go.Scatter(x=x, y=_f4(equity), name="equity", line={"color": "#1f77b4"}), row=1, col=1)
    fig.add_trace(go.Scatter(x=x, y=_f4(hold), name="buy and hold", line={"color": "#999", "dash": "dot"}), row=1, col=1)
    fig.add_trace(go.Scatter(x=x, y=_f4(dd), name="drawdown", fill="tozeroy", line={"color": "#d62728"}), row=2, col=1)
    fig.add_trace(go.Scatter(x=x, y=_f4(c[:, 0]), name="close", line={"color": "#555", "width": 1}), row=3, col=1)
    zoomed = []  # traces shown only when zoomed in: candles, then indicators
    if ohlc is not None and len(times):
        ct, cd = candles(times, ohlc, step)
        zoomed.append(len(fig.data))
        fig.add_trace(go.Candlestick(x=_ms(ct), open=_f4(cd["open"]), high=_f4(cd["high"]), low=_f4(cd["low"]),
                                     close=_f4(cd["close"]), name=f"candles ({_span(times, step)})", visible=False,
                                     increasing_line_color="#2ca02c", decreasing_line_color="#d62728"),
                      row=3, col=1)
        for name, values in (overlays or {}).items():
            zoomed.append(len(fig.data))
            fig.add_trace(go.Scatter(x=x, y=_f4(values[::step]), name=name, visible=False,
                                     line={"width": 1}), row=3, col=1)
    fig.update_xaxes(rangeslider_visible=False, row=3, col=1)
    markers = []  # (trace index, side, 0 entry / 1 exit): the page's script fills them from the trade rows
    for side, color, symbol in (("long", "#2ca02c", "triangle-up"), ("short", "#d62728", "triangle-down")):
        chosen = [tr for tr in trades if tr.side == side]
        for end, (what, mark) in enumerate((("entry", symbol), ("exit", "x"))):
            picked = [chosen[i] for i in _thin(np.arange(len(chosen)), TRADE_MARKERS // 2)]
            markers.append([len(fig.data), side, end])
            fig.add_trace(go.Scatter(
                x=_ms(np.array([tr.exit_time if end else tr.entry_time for tr in picked], dtype=np.int64)),
                y=np.array([tr.exit_price if end else tr.entry_price for tr in picked], dtype=np.float64),
                mode="markers", name=f"{side} {what}",
                marker={"color": color, "symbol": mark, "size": 7 if end else 8}), row=3, col=1)
    for row in (1, 2, 3):
        fig.update_xaxes(type="date", row=row, col=1)
    fig.update_yaxes(tickformat=".1%", row=2, col=1)
    both = np.concatenate((equity, hold))
    if len(both) and both.min() > 0 and both.max() / both.min() > 5:
        fig.update_yaxes(type="log", row=1, col=1)  # large moves read better in ratios
    fig.update_layout(height=900, margin={"l": 60, "r": 20, "t": 40, "b": 30}, legend={"orientation": "h"},
                      template="plotly_white")
    bench = {"return_pct": hold[-1] / start_equity - 1.0 if len(hold) and start_equity else None,
             "max_drawdown": float(underwater(hold).min()) if len(hold) else None}
    rows = "".join(
        f"<tr><th>{html.escape(label)}</th><td>{fmt_metric(metrics.get(key), kind)}</td>"
        f"<td class=bench>{fmt_metric(bench[key], kind) if key in bench else ''}</td></tr>"
        for key, (label, kind) in LABELS.items()
    )
    table = f"<table><tr><th></th><th>system</th><th class=bench>buy and hold</th></tr>{rows}</table>"
    years, monthly = monthly_returns(times, curve[:, 2])
    heat = go.Figure(go.Heatmap(
        z=monthly, x=_MONTHS, y=[str(y) for y in years], colorscale="RdYlGn", zmid=0, texttemplate="%{text}",
        text=[["" if math.isnan(v) else f"{v:+.1%}" for v in row] for row in monthly], showscale=False,
        hovertemplate="%{y} %{x}: %{text}<extra></extra>"))
    heat.update_layout(title="Monthly returns", height=120 + 32 * len(years), template="plotly_white",
                       margin={"l": 60, "r": 20, "t": 40, "b": 30}, yaxis={"autorange": "reversed", "type": "category"})
    trade_rows = [[t.entry_time // 1_000_000, t.exit_time // 1_000_000, t.side, _g(t.qty), _g(t.entry_price),
                   _g(t.exit_price), round(t.pnl, 2), round(100 * t.return_pct, 3), t.bars_held] for t in trades]
    body = (f'<div class="grid">{table}<div>{fig.to_html(full_html=False, include_plotlyjs=False, div_id="tradebus-report")}'
            f'</div></div>{heat.to_html(full_html=False, include_plotlyjs=False, div_id="tradebus-monthly")}'
            f'<h2>Trades ({len(trades):,})</h2><div id="trades"></div>'
            + (f"<h2>Config</h2><pre>{html.escape(config_yaml)}</pre>" if config_yaml else "")
            + f"<script>{_TRADES_JS % (json.dumps(trade_rows), json.dumps(markers), TRADE_MARKERS // 2)}"
            f"{_ZOOM_JS % (json.dumps(zoomed), step * _bar_ms(times), CANDLES_AT)}</script>")
    _write_page(path, title, subtitle, body)


def _bar_ms(times: np.ndarray) -> int:
    return int(np.median(np.diff(times[:1000]))) // 1_000_000 if len(times) > 1 else 60_000


def _span(times: np.ndarray, step: int) -> str:
    minutes = step * _bar_ms(times) // 60_000
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 and minutes % 60 else (
        f"{minutes // 60} h" if minutes >= 60 else f"{minutes} min")


# On every zoom: candles and indicators in place of the close line once few enough candles are in view (zoomed
# out they would be a solid band), and each panel's price axis fitted to what is in view.
_ZOOM_JS = r"""
(function () {
  var traces = %s, candleMs = %d, limit = %d, plot = document.getElementById("tradebus-report"), shown = false;
  var KINDS = {f4: Float32Array, f8: Float64Array, i1: Int8Array, i2: Int16Array, i4: Int32Array, u1: Uint8Array,
               u2: Uint16Array, u4: Uint32Array};
  function values(v) {  // plotly keeps numpy arrays as {dtype, bdata}
    if (!v || Array.isArray(v) || !v.bdata) return v || [];
    var raw = atob(v.bdata), bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return new KINDS[v.dtype](bytes.buffer);
  }
  var cache = plot.data.map(function (t) {
    var x = values(t.x);
    if (x.length && typeof x[0] === "string") x = Array.prototype.map.call(x, function (s) { return new Date(s).getTime(); });
    return {x: x, lo: values(t.type === "candlestick" ? t.low : t.y), hi: values(t.type === "candlestick" ? t.high : t.y)};
  });
  function fit(lo, hi) {
    var update = {};
    ["yaxis", "yaxis2", "yaxis3"].forEach(function (axis, k) {
      var ref = k ? "y" + (k + 1) : "y", min = Infinity, max = -Infinity;
      plot.data.forEach(function (t, i) {
        if ((t.yaxis || "y") !== ref || t.visible === false) return;
        var c = cache[i];
        for (var j = 0; j < c.x.length; j++) {
          if (c.x[j] < lo || c.x[j] > hi || !(c.lo[j] === c.lo[j])) continue;
          if (c.lo[j] < min) min = c.lo[j];
          if (c.hi[j] > max) max = c.hi[j];
        }
      });
      if (!(max > min)) return;
      var log = plot.layout[axis].type === "log";
      if (log && min > 0) { min = Math.log10(min); max = Math.log10(max); }
      var pad = (max - min) * 0.05;
      update[axis + ".range"] = [min - pad, max + pad];
    });
    return update;
  }
  var busy = false;
  function day(ms) { return new Date(ms).toISOString().replace("T", " ").replace("Z", ""); }  // plotly's date form
  function xRange(ev) {  // the x range an event set: [lo, hi], "auto" for a reset, null if none changed
    for (var k in ev) {
      var m = /^xaxis(\d*)\.(range|autorange)/.exec(k);
      if (!m) continue;
      if (m[2] === "autorange") return "auto";
      var ax = "xaxis" + m[1], r = ev[ax + ".range"] || [ev[ax + ".range[0]"], ev[ax + ".range[1]"]];
      return [new Date(r[0]).getTime(), new Date(r[1]).getTime()];
    }
    return null;
  }
  plot.on("plotly_relayout", function (ev) {
    if (busy) return;
    var r = xRange(ev || {});
    if (r === null) return;
    var want = r !== "auto" && traces.length > 0 && (r[1] - r[0]) / candleMs < limit;
    if (plot.tradebusMarkers) plot.tradebusMarkers(r === "auto" ? -Infinity : r[0], r === "auto" ? Infinity : r[1]);
    if (want !== shown) {
      shown = want;
      Plotly.restyle(plot, {visible: want}, traces);
      Plotly.restyle(plot, {visible: !want}, [3]);
    }
    // Every panel to the same dates (an API relayout of one axis does not move those matching it), and
    // each price axis fitted to what is in view.
    var update = {};
    ["xaxis", "xaxis2", "xaxis3"].forEach(function (ax) {
      update[ax + ".type"] = "date";  // the markers' restyle above leaves plotly guessing (linear)
      if (r === "auto") update[ax + ".autorange"] = true; else update[ax + ".range"] = [day(r[0]), day(r[1])];
    });
    if (r === "auto") ["yaxis", "yaxis2", "yaxis3"].forEach(function (ax) { update[ax + ".autorange"] = true; });
    else Object.assign(update, fit(r[0], r[1]));
    busy = true;  // after the relayout that called us has finished: one nested inside it is partly undone
    setTimeout(function () {
      Plotly.relayout(plot, update).then(function () { busy = false; }, function () { busy = false; });
    }, 0);
  });
})();
"""


_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def _g(v: float) -> float:
    return float(f"{v:.8g}")


# The trade table (sortable, 100 rows a page) and the price panel's markers (every trade in view once few
# enough are, else an even sample), both from the data above: a page stays small with thousands of trades.
_TRADES_JS = """
(function () {
  var rows = %s, markers = %s, cap = %d, page = 0, key = 0, desc = false, PER = 100;
  var heads = ["entry", "exit", "side", "qty", "entry price", "exit price", "pnl", "return %%", "bars"];
  var box = document.getElementById("trades");
  function when(ms) { return new Date(ms).toISOString().slice(0, 16).replace("T", " "); }
  function draw() {
    var sorted = rows.slice().sort(function (a, b) { var r = a[key] < b[key] ? -1 : a[key] > b[key] ? 1 : 0; return desc ? -r : r; });
    var last = Math.max(0, Math.ceil(sorted.length / PER) - 1); page = Math.min(page, last);
    var h = "<table class=trades><tr>" + heads.map(function (t, i) {
      return "<th data-k=" + i + ">" + t + (i === key ? (desc ? " \u25BC" : " \u25B2") : "") + "</th>"; }).join("") + "</tr>";
    sorted.slice(page * PER, page * PER + PER).forEach(function (r) {
      h += "<tr>" + r.map(function (v, i) {
        return "<td" + (i < 3 ? " class=text" : "") + ">" + (i < 2 ? when(v) : v) + "</td>"; }).join("") + "</tr>"; });
    h += "</table><p class=sub><button data-p=-1>previous</button> page " + (page + 1) + " of " + (last + 1) +
         " <button data-p=1>next</button> (click a heading to sort)</p>";
    box.innerHTML = h;
  }
  box.addEventListener("click", function (e) {
    var k = e.target.getAttribute("data-k"), p = e.target.getAttribute("data-p");
    if (k !== null) { k = +k; desc = key === k ? !desc : false; key = k; page = 0; draw(); }
    if (p !== null) { page = Math.max(0, page + (+p)); draw(); }
  });
  draw();
  var plot = document.getElementById("tradebus-report");
  function thin(m, lo, hi) {  // m: [trace, side, 0 entry / 1 exit]
    var idx = [];
    rows.forEach(function (r) { var t = r[m[2]]; if (r[2] === m[1] && t >= lo && t <= hi) idx.push(r); });
    if (idx.length > cap) { var s = []; for (var j = 0; j < cap; j++) s.push(idx[Math.floor(j * (idx.length - 1) / (cap - 1))]); idx = s; }
    return {x: idx.map(function (r) { return r[m[2]]; }), y: idx.map(function (r) { return r[4 + m[2]]; })};
  }
  // Called by the zoom script (below) with the dates in view, before it sets the axes: a restyle of x
  // makes plotly re-guess the axes' types, which that relayout then sets back.
  plot.tradebusMarkers = function (lo, hi) {
    var all = markers.map(function (m) { return thin(m, lo, hi); });
    Plotly.restyle(plot, {x: all.map(function (t) { return t.x; }), y: all.map(function (t) { return t.y; })},
                   markers.map(function (m) { return m[0]; }));
  };
})();
"""


def _write_page(path: Path, title: str, subtitle: str, body: str) -> None:
    """Every page loads plotly.js from the one copy beside the reports (``plotly_script``)."""
    head = f'<script src="{html.escape(plotly_script(path))}"></script>'
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>{head}
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; }}
h1 {{ margin-bottom: 0; }} p.sub {{ color: #666; margin-top: 4px; }} p.warn {{ color: #a15c00; }}
.grid {{ display: grid; grid-template-columns: 320px 1fr; gap: 24px; align-items: start; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ padding: 4px 8px; border-bottom: 1px solid #eee; text-align: left; font-size: 14px; }}
td {{ text-align: right; font-variant-numeric: tabular-nums; }} td.text {{ text-align: left; color: #555; }}
th.bench, td.bench {{ color: #888; }} table.trades th {{ cursor: pointer; }}
pre {{ background: #f7f7f7; padding: 12px; font-size: 13px; }}
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
    head = "".join(f"<th>{html.escape(LABELS[k][0])}</th>" for k, _ in _COMPARED)
    body = [f'<p class="warn">{html.escape(w)}</p>' for w in warnings]
    body.append(f"<table><tr><th>{html.escape(what)}</th><th>kind</th><th>window</th>{head}</tr>")
    for r in rows:
        if r.skipped:
            body.append(f"<tr><th>{html.escape(r.name)}</th><td class=text>{r.kind}</td>"
                        f"<td class=text colspan={len(_COMPARED) + 1}>skipped: {html.escape(r.skipped)}</td></tr>")
            continue
        shown = [(w, m) for w, m in (("train", r.train), (test_name, r.test)) if m is not None] or [(test_name, None)]
        for i, (window, m) in enumerate(shown):
            cells = "".join(f"<td>{fmt_metric((m or {}).get(k), kind)}</td>" for k, kind in _COMPARED)
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
    body.append(fig.to_html(full_html=False, include_plotlyjs=False, div_id="tradebus-equity"))
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


def parameter_grid(rows: Sequence[tuple[dict, float | None]], x: str, y: str) -> tuple[list, list, np.ndarray, np.ndarray]:
    """(parameters, metric) rows as a grid over two parameters: the x values, the y values, the mean metric
    of the trials at each cell (other parameters, symbols and timeframes averaged over) and how many
    trials each cell holds. A trial without the metric (disqualified, no trades) counts in neither."""
    xs = sorted({p[x] for p, _ in rows if x in p})
    ys = sorted({p[y] for p, _ in rows if y in p})
    total, count = np.zeros((len(ys), len(xs))), np.zeros((len(ys), len(xs)), dtype=np.int64)
    for p, v in rows:
        if x in p and y in p and v is not None and math.isfinite(v):
            i, j = ys.index(p[y]), xs.index(p[x])
            total[i, j] += v
            count[i, j] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return xs, ys, mean, count


def render_heatmap(path: Path, title: str, subtitle: str, x: str, y: str, metric: str, xs: list, ys: list,
                   mean: np.ndarray, count: np.ndarray) -> None:
    """A sweep's metric over two of its parameters, one cell per pair of values."""
    kind = LABELS.get(metric, (metric, "num"))[1]
    text = [[("" if math.isnan(v) else fmt_metric(v, kind)) for v in row] for row in mean]
    fig = go.Figure(go.Heatmap(
        z=mean, x=[str(v) for v in xs], y=[str(v) for v in ys], text=text, texttemplate="%{text}",
        customdata=count, colorscale="RdYlGn", zmid=0 if np.nanmin(mean, initial=0) < 0 < np.nanmax(mean, initial=0) else None,
        hovertemplate=f"{x}=%{{x}} {y}=%{{y}}: {metric} %{{text}} (mean of %{{customdata}} trials)<extra></extra>",
        colorbar={"title": metric}))
    fig.update_layout(xaxis={"title": x, "type": "category"}, yaxis={"title": y, "type": "category"},
                      height=max(360, 60 + 40 * len(ys)), template="plotly_white",
                      margin={"l": 80, "r": 20, "t": 30, "b": 60})
    _write_page(path, title, subtitle, fig.to_html(full_html=False, include_plotlyjs=False, div_id="tradebus-heatmap"))


def _num(v: object, digits: int = 4) -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def _metric_table(caption: str, block: dict, columns: Sequence[tuple[str, str]], better: dict[str, str]) -> str:
    """Models as rows, metrics as columns; the best value of each column in bold (``better``: min or max)."""
    best = {}
    for key, _ in columns:
        vals = [m.get(key) for m in block.values() if isinstance(m.get(key), float) and math.isfinite(m.get(key))]
        if vals and key in better:
            best[key] = (min if better[key] == "min" else max)(vals)
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in columns)
    rows = []
    for name, m in block.items():
        cells = []
        for key, _ in columns:
            v = m.get(key)
            text = _num(v)
            cells.append(f"<td><b>{text}</b></td>" if key in best and v == best[key] else f"<td>{text}</td>")
        rows.append(f"<tr><th>{html.escape(name)}</th>{''.join(cells)}</tr>")
    return f"<h3>{html.escape(caption)}</h3><table><tr><th>model</th>{head}</tr>{''.join(rows)}</table>"


def render_forecast(path: Path, title: str, subtitle: str, pooled: dict, folds: Sequence[dict],
                    per_symbol: dict[str, dict], monthly: dict[str, tuple[list[str], list[float]]],
                    calibration: dict[str, tuple[list[float], list[float]]], notes: Sequence[str] = ()) -> None:
    """A forecaster beside its baselines, out of sample: pooled metric tables, per fold, per symbol, the
    monthly IC and the regime probabilities' reliability."""
    body = [f'<p class="warn">{html.escape(n)}</p>' for n in notes]
    body.append(f"<p>{pooled['rows']:,} out-of-sample rows over {len(folds)} walk-forward folds. Bold: the best "
                "of each column.</p>")
    body.append(_metric_table("Return over the horizon", pooled["return"],
                              [("ic", "IC"), ("rank_ic", "rank IC"), ("icir", "ICIR (monthly)"),
                               ("months_positive", "months IC > 0"), ("rmse", "RMSE")],
                              {"ic": "max", "rank_ic": "max", "icir": "max", "months_positive": "max", "rmse": "min"}))
    body.append(_metric_table("Realised volatility over the horizon", pooled["vol"],
                              [("qlike", "QLIKE (variance)"), ("rmse", "RMSE (vol)")], {"qlike": "min", "rmse": "min"}))
    body.append(_metric_table("Regime over the horizon", pooled["regime"],
                              [("brier", "Brier"), ("skill_vs_base_rate", "skill vs base rate"),
                               ("skill_vs_persistence", "skill vs persistence"), ("log_loss", "log loss"),
                               ("calibration_error", "calibration error")],
                              {"brier": "min", "log_loss": "min", "calibration_error": "min"}))
    head = ("<tr><th>fold</th><th>train</th><th>test</th><th>rows</th><th>rank IC</th><th>rank IC momentum</th>"
            "<th>QLIKE</th><th>QLIKE EWMA</th><th>QLIKE GARCH</th><th>QLIKE HAR</th><th>Brier skill vs base</th>"
            "<th>vs persistence</th></tr>")
    rows = []
    for f in folds:
        r, v, g = f["return"], f["vol"], f["regime"]["model"]
        rows.append(f"<tr><th>{f['fold']}</th><td class=text>{f['train_start'][:10]} .. {f['train_end'][:10]}</td>"
                    f"<td class=text>{f['test_start'][:10]} .. {f['test_end'][:10]}</td><td>{f['test_rows']:,}</td>"
                    f"<td>{_num(r['model']['rank_ic'])}</td><td>{_num(r['momentum']['rank_ic'])}</td>"
                    + "".join(f"<td>{_num(v[m]['qlike'])}</td>" for m in ("model", "ewma", "garch", "har"))
                    + f"<td>{_num(g['skill_vs_base_rate'])}</td><td>{_num(g['skill_vs_persistence'])}</td></tr>")
    body.append(f"<h3>Per fold</h3><table>{head}{''.join(rows)}</table>")
    syms = sorted(per_symbol)
    fig = go.Figure()
    for m in ("model", "ewma", "garch", "har"):
        fig.add_trace(go.Bar(x=syms, y=[per_symbol[s]["vol"][m]["qlike"] for s in syms], name=m))
    fig.update_layout(title="Volatility QLIKE per symbol (lower is better)", barmode="group", height=380,
                      template="plotly_white", margin={"l": 60, "r": 20, "t": 50, "b": 30}, legend={"orientation": "h"})
    body.append(fig.to_html(full_html=False, include_plotlyjs=False, div_id="tradebus-qlike"))
    fig = go.Figure()
    for name, (months, ics) in monthly.items():
        fig.add_trace(go.Bar(x=months, y=ics, name=name))
    fig.update_layout(title="Rank IC of the return forecast by month", barmode="group", height=340,
                      template="plotly_white", margin={"l": 60, "r": 20, "t": 50, "b": 30}, legend={"orientation": "h"})
    body.append(fig.to_html(full_html=False, include_plotlyjs=False, div_id="tradebus-monthly-ic"))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "#999"},
                             name="perfectly calibrated"))
    for name, (pred, freq) in calibration.items():
        fig.add_trace(go.Scatter(x=pred, y=freq, mode="lines+markers", name=name))
    fig.update_layout(title="Regime probabilities: predicted vs observed frequency (all classes)", height=420,
                      xaxis_title="predicted probability", yaxis_title="observed frequency", template="plotly_white",
                      margin={"l": 60, "r": 20, "t": 50, "b": 40}, legend={"orientation": "h"})
    body.append(fig.to_html(full_html=False, include_plotlyjs=False, div_id="tradebus-calibration"))
    _write_page(path, title, subtitle, "\n".join(body))
