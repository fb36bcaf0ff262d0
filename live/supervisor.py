"""``tradebus lifecycle run``'s shell: evaluate every system, record the moves, allocate, and make the
daemons match the stages.

The evaluation is ``factory.lifecycle.evaluate`` (pure, no clock); this module only does what it decided:
one atomic append of the new ``Promotion`` and ``Allocation`` events to the lifecycle's store (their ids
derive from what caused them, so a second run, or two at once, store nothing twice), then the daemons: a
system in a trading stage with no daemon gets one (its own process, config and store under
``$TRADEBUS_HOME/lifecycle``); a daemon whose system left its stage is told over NATS (it flattens and
takes exits only), then stopped once flat.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tradebus import settings
from tradebus.bus import events as ev
from tradebus.bus.connect import find_nats_url
from tradebus.components import lifecycle as lc
from tradebus.components.base import COMMAND
from tradebus.configs.lifecycle import LifecycleRules
from tradebus.configs.limits import Limits
from tradebus.configs.schema import SystemConfig
from tradebus.engine.market import MissingDataError, base_key
from tradebus.eventstore.store import EventIdConflict, EventStore
from tradebus.factory import allocator
from tradebus.factory.lifecycle import (
    Outcome,
    Row,
    Sources,
    daily_returns,
    evaluate,
    stage_mode,
)
from tradebus.factory.validation import span_window
from tradebus.live import control

RUN = f"{COMMAND}lifecycle"  # a command's run: a daemon takes it, and folds it from its store at restart


def home() -> Path:
    return settings.data_home() / "lifecycle"


def store_of(system: str, mode: str) -> Path:
    """The store of the daemon the lifecycle runs for a system in a mode."""
    return home() / "stores" / f"{system}.{mode}.sqlite"


def read_store(path: Path) -> list[ev.Event]:
    with EventStore.open_reader(path) as st:
        return [r.event for r in st.read()]


@dataclass
class Report:
    rows: list[Row]
    promotions: list[ev.Promotion]
    allocations: list[ev.Allocation]
    started: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _returns_for(system: str, config: SystemConfig, stage: str, src: Sources, rules: LifecycleRules,
                 days: list[int]) -> np.ndarray:
    """A system's daily returns on ``days``: its own daemon's record where it has one, else a replay of its
    config over those days (what it would have done)."""
    path = store_of(system, stage_mode(stage, rules))
    own: dict[int, float] = {}
    if path.exists():
        t = lc.track_from(read_store(path), system, config.symbol, config.timeframe, config.initial_capital,
                          (stage_mode(stage, rules),))
        if len(t.times) > 2:
            own = daily_returns(t.times, t.equity)
    if len(own) < 20:
        step = days[1] - days[0] if len(days) > 1 else 1
        window = span_window(days[0] * lc.DAY_NS, (days[-1] + step) * lc.DAY_NS)
        try:
            k = src.run(config, window)
            own = {**daily_returns(k.times, k.curve[:, 2]), **own}
        except (ValueError, MissingDataError):
            pass  # no candles for those days: the days count as flat
    return np.array([own.get(d, 0.0) for d in days])


def allocations(out: Outcome, stored: list[ev.Allocation], src: Sources, rules: LifecycleRules, limits: Limits | None,
                now: int) -> list[ev.Allocation]:
    """New weights for the systems in live_test and production (an event only where a weight changed)."""
    a = rules.allocator
    systems = sorted(s for s, st in out.folded.systems.items() if st.status in lc.GATED and s in out.configs)
    last = {e.system: e for e in stored}
    if not systems:
        return [ev.Allocation(**_stamp(f"{s}|{last[s].id}|0", now), system=s, weight=0.0, method=a.method,
                              evidence={"why": "left live_test and production"})
                for s in sorted(last) if last[s].weight > 0]
    end_day = int(max(src.md.coverage(base_key(out.configs[s], src.md)).last or 0 for s in systems) // lc.DAY_NS)
    days = list(range(end_day - a.lookback_days, end_day))
    r = np.column_stack([_returns_for(s, out.configs[s], out.folded.systems[s].status, src, rules, days)
                         for s in systems])
    old = np.array([last[s].weight if s in last else 0.0 for s in systems])
    w = allocator.allocate(r, old, a.method, a.max_weight, a.max_turnover, a.max_correlation)
    levs = np.array([out.configs[s].risk.max_leverage for s in systems])
    w = allocator.within_leverage(w, levs, limits.global_.max_leverage if limits else None)
    sd = r.std(axis=0, ddof=1)
    new = []
    for i, s in enumerate(systems):
        if s in last and abs(last[s].weight - w[i]) < 1e-4:
            continue
        new.append(ev.Allocation(**_stamp(f"{s}|{last[s].id if s in last else ''}|{w[i]:.6f}", now), system=s,
                                 weight=round(float(w[i]), 6), method=a.method,
                                 evidence={"lookback_days": a.lookback_days, "daily_vol": lc._r(sd[i]),
                                           "sharpe": lc._r(r[:, i].mean() / sd[i] * np.sqrt(365)) if sd[i] > 0 else None,
                                           "max_drawdown": lc._r(lc.max_drawdown(np.cumprod(1 + r[:, i])))}))
    for s in sorted(set(last) - set(systems)):
        if last[s].weight > 0:
            new.append(ev.Allocation(**_stamp(f"{s}|{last[s].id}|0", now), system=s, weight=0.0, method=a.method,
                                     evidence={"why": "left live_test and production"}))
    return new


def _stamp(basis: str, now: int) -> dict:
    return {"id": "al-" + hashlib.sha256(basis.encode()).hexdigest()[:21], "ts_event": now, "ts_init": now, "run": RUN}


def run_once(store: Path, src: Sources, rules: LifecycleRules, *, daemons: bool = True, limits: Limits | None = None,
             limits_path: Path | None = None, live: bool = False, nats_url: str | None = None,
             say: Callable[[str], None] = lambda _: None, now: int | None = None) -> Report:
    """Evaluate, record, allocate, then bring the daemons in line (``daemons`` False: record only)."""
    now = time.time_ns() if now is None else now
    for attempt in range(2):
        stored = read_store(store) if store.exists() else []
        promotions = [e for e in stored if isinstance(e, ev.Promotion)]
        out = evaluate(promotions, src, rules, now, RUN)
        allocs = allocations(out, [e for e in stored if isinstance(e, ev.Allocation)], src, rules, limits, now)
        if not (out.promotions or allocs):
            break
        try:
            with EventStore.open_writer(store) as st:
                st.append([*out.promotions, *allocs])  # one transaction: every move of the run, or none
            break
        except EventIdConflict:
            # Another run stored the same moves (same ids, its own times) in between: read what it decided.
            if attempt:
                raise
    report = Report(out.rows, out.promotions, allocs)
    if daemons:
        _daemons(out, promotions + out.promotions, allocs, rules, limits_path, live, nats_url, report, say)
    return report


def _daemons(out: Outcome, promotions: list[ev.Promotion], allocs: list[ev.Allocation], rules: LifecycleRules,
             limits_path: Path | None, live: bool, nats_url: str | None, report: Report, say) -> None:
    folder = settings.daemons_dir()
    want = {(s, stage_mode(st.status, rules)) for s, st in out.folded.systems.items()
            if st.status in lc.TRADING and s in out.configs}
    running = {(r["system"], r["mode"]): r for r in control.statuses(folder) if r["alive"]}
    ours = set(out.folded.systems)
    leaving = [(k, r) for k, r in running.items() if k[0] in ours and k not in want]
    url = find_nats_url(nats_url)
    if leaving or allocs:
        tell = [p for p in promotions if any(p.system == k[0] for k, _ in leaving)]
        latest = {p.system: p for p in tell}  # each leaving daemon is told its system's last move
        if url:
            asyncio.run(control.publish_all([*latest.values(), *allocs], url))
        elif leaving:
            report.notes.append("no NATS server found: leaving daemons are stopped without being told to flatten")
    for (system, mode), row in leaving:
        say(f"{system}: {mode} daemon winding down (flatten, then stop)")
        flat = control.wait_for(lambda s=system, m=mode: abs((control.alive(folder, s, m) or {}).get("position", 0.0))
                                < 1e-12, 30.0)
        if not flat:
            report.notes.append(f"{system}: the {mode} daemon still holds a position after 30 s; stopping it anyway "
                                f"(its guard takes exits only; check `tradebus status`)")
        control.stop_daemon(int(row["pid"]))
        report.stopped.append(f"{system} ({mode})")
    for system, mode in sorted(want - set(running)):
        if mode == "live" and not (live and limits_path):
            report.notes.append(f"{system}: {out.folded.systems[system].status} runs live: pass --live and --limits "
                                f"to let the lifecycle start it")
            continue
        config_path = home() / "configs" / f"{system}.yaml"
        config_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(out.configs[system].model_dump(mode="json"), indent=1))  # JSON is YAML
        tmp.replace(config_path)
        say(f"{system}: starting its {mode} daemon")
        control.start_daemon(mode, config_path, store_of(system, mode), home() / "logs" / f"{system}.{mode}.log",
                             limits_path)
        if not control.wait_for(lambda s=system, m=mode: control.alive(folder, s, m) is not None, 90.0):
            report.notes.append(f"{system}: the {mode} daemon did not come up in 90 s: see "
                                f"{home() / 'logs' / f'{system}.{mode}.log'}")
            continue
        report.started.append(f"{system} ({mode})")
