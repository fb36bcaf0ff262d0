"""A portfolio replay: several systems on one clock and one account, with one event stream.

Each system is wired as in a single replay (``build_core`` and its own simulated sub-account with its
weight of the capital); one publisher merges every series they read; an ``AccountBook`` reports the whole
account, so every system's guard applies the account's caps across all of them. Per-system results are
the single replay's; the account's curve is the systems' summed on the union of their bar times (plus
the cash no system holds).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tradebus import __version__
from tradebus.identity import code_digest
from tradebus.bus import events as ev
from tradebus.bus.ids import IdGenerator
from tradebus.components.base import SimClock, Stamper
from tradebus.components.timeframes import tf_ns
from tradebus.configs.limits import Limits
from tradebus.configs.portfolio import Portfolio
from tradebus.configs.schema import SystemConfig
from tradebus.engine import artifacts, report
from tradebus.engine.account import AccountBook
from tradebus.engine.host import LocalHost
from tradebus.engine.market import MarketSlice, day, load_market
from tradebus.engine.marketdata import MarketData
from tradebus.engine.metrics import sum_accounts, summarize
from tradebus.engine.trades import Trade
from tradebus.engine.wiring import build_core, simulated_venue
from tradebus.replay.backtest import gc_paused, outcome
from tradebus.replay.runner import Collector, manifest, portfolio_steps, run_id_for


@dataclass
class SystemRun:
    config: SystemConfig
    market: MarketSlice
    times: np.ndarray
    curve: np.ndarray
    trades: list[Trade]
    open_trades: list[Trade]
    metrics: dict


@dataclass
class PortfolioResult:
    run: str
    portfolio: Portfolio
    window: str
    systems: list[SystemRun]
    times: np.ndarray  # the union of the systems' bar closes
    equity: np.ndarray  # the account's
    metrics: dict  # the account's
    events: list[ev.Event]
    manifest: dict
    seconds: float


def run_portfolio(pf: Portfolio, window: str, md: MarketData, *, limits: Limits | None = None,
                  keep_market_data: bool = False) -> PortfolioResult:
    """Replay every system of ``pf`` together; nothing is written here."""
    with gc_paused():
        return _run(pf, window, md, limits or Limits(), keep_market_data)


def _run(pf: Portfolio, window: str, md: MarketData, limits: Limits, keep_market_data: bool) -> PortfolioResult:
    markets = [load_market(c, window, md) for c in pf.systems]
    run_ids = [run_id_for(c, m, window, limits) for c, m in zip(pf.systems, markets)]
    parts = "|".join(run_ids)
    run = f"{pf.name}-{hashlib.sha256(f'{pf.name}|{pf.initial_capital}|{parts}|{__version__}'.encode()).hexdigest()[:12]}"
    start, end = min(m.start for m in markets), max(m.end for m in markets)
    clock = SimClock(start)
    components, portfolios = [], []
    for c, m in zip(pf.systems, markets):
        stamp = lambda name, s=c.system: Stamper(clock, f"{run}:{s}:{name}", s, run)  # noqa: E731
        core = build_core(c, stamp, m.candles, m.start, limits)
        exchange = simulated_venue(c, stamp("exchange"), core.guard, m.funding, m.marks)
        exchange.skip_funding_before(m.start)
        components += core.components(exchange)
        portfolios.append(core.portfolio)
    cash = pf.initial_capital - sum(c.initial_capital for c in pf.systems)
    book = AccountBook(Stamper(clock, f"{run}:account", "", run), venue=pf.systems[0].venue, cash=cash)
    book.open_balances({c.system: c.initial_capital for c in pf.systems})
    # The book first: the account a guard reads is the one before this step's orders, as a venue's push.
    components.insert(0, book)
    man = {"run": run, "portfolio": pf.name, "window": window, "start": day(start), "end": day(end),
           "initial_capital": pf.initial_capital, "weights": dict(zip((c.system for c in pf.systems), pf.weights)),
           "limits": limits.model_dump(mode="json", by_alias=True), "code_version": __version__, "code_digest": code_digest(),
           "systems": [manifest(c, m, window, rid, "local", limits) for c, m, rid in zip(pf.systems, markets, run_ids)]}
    collector = Collector(keep_market_data)
    ids = IdGenerator(f"{run}:runner")
    started = ev.RunStarted(id=ids.next(start), ts_event=start, ts_init=start, system=pf.name, run=run, mode="replay",
                            manifest=artifacts.clean(man))
    collector(started)
    t0 = time.perf_counter()
    LocalHost(components, clock, [collector]).run(portfolio_steps(list(zip(pf.systems, markets)), run))
    seconds = time.perf_counter() - t0
    systems = []
    for c, m, portfolio in zip(pf.systems, markets, portfolios):
        own = [e for e in collector.events if e.system == c.system]
        systems.append(SystemRun(c, m, *outcome(c, m, portfolio, own)))
    times, equity, exposed = sum_accounts([(s.times, s.curve[:, 2], s.curve[:, 3]) for s in systems],
                                          [c.initial_capital for c in pf.systems])
    equity = equity + cash
    trades = sorted((t for s in systems for t in s.trades), key=lambda t: (t.exit_time, t.entry_time))
    bar_ns = min(tf_ns(c.timeframe) for c in pf.systems)
    metrics = summarize(times, equity, exposed, pf.initial_capital, bar_ns, trades,
                        sum(p.fees for p in portfolios), sum(p.funding for p in portfolios))
    metrics["open_trades"] = sum(len(s.open_trades) for s in systems)
    collector(ev.RunFinished(id=ids.next(end), ts_event=end, ts_init=end, system=pf.name, run=run, cause=started.id,
                             status="ok", summary=artifacts.clean(metrics)))
    return PortfolioResult(run, pf, window, systems, times, equity, metrics, collector.events, man, seconds)


def write_outputs(result: PortfolioResult, out: Path, *, events_jsonl: bool = False) -> None:
    """The account's files and report in ``out``, each system's in ``out/systems/SYSTEM``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "events.jsonl").unlink(missing_ok=True)
    pf = result.portfolio
    artifacts.write_json(out / "result.json", {
        "run": result.run, "portfolio": pf.name, "window": result.window, "start": result.manifest["start"],
        "end": result.manifest["end"], "metrics": result.metrics,
        "systems": {s.config.system: {"symbol": s.config.symbol, "timeframe": s.config.timeframe,
                                      "initial_capital": s.config.initial_capital, "metrics": s.metrics}
                    for s in result.systems}})
    artifacts.write_json(out / "run_manifest.json", result.manifest)
    rows = [[artifacts.iso(int(t)), repr(float(e))] for t, e in zip(result.times, result.equity)]
    artifacts.atomic_write(out / "account_equity.csv",
                           ("time,equity\n" + "".join(f"{a},{b}\n" for a, b in rows)).encode())
    for s in result.systems:
        folder = out / "systems" / s.config.system
        folder.mkdir(parents=True, exist_ok=True)
        artifacts.write_trades(folder / "trades.csv", s.trades)
        artifacts.write_curves(folder, s.times, s.curve)
    if events_jsonl:
        artifacts.write_events(out / "events.jsonl", result.events)
    compared = [report.Compared("account", "account", f"{len(result.systems)} systems, {pf.initial_capital:,.0f} capital",
                                None, result.metrics, (result.times, result.equity / pf.initial_capital))]
    compared += [report.Compared(s.config.system, "system",
                                 f"{s.config.strategy.id} · {s.config.symbol} {s.config.timeframe} · "
                                 f"{s.config.initial_capital:,.0f}", None, s.metrics,
                                 (s.times, s.curve[:, 2] / s.config.initial_capital)) for s in result.systems]
    report.render_comparison(out / "report.html", f"{pf.name} · {result.window}",
                             f"{result.manifest['start']} → {result.manifest['end']} · run {result.run}", compared, [],
                             what="account / system", test_name=result.window)
