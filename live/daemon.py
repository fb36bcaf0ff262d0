"""The paper, demo and live daemons: the replay's components, fed by Bybit, recorded to the store, on NATS.

A daemon runs one system on one symbol; ``DaemonGroup`` runs several in one process (one store writer, one
NATS connection, one private stream for the account; each system its own components, public feed,
status and kill switch; never two systems on one symbol of one account). Demo and live trade at Bybit;
paper trades the live public feed against the simulated exchange a replay uses (no keys, nothing sent to
the venue), with the same store, status, kill switch and restart. Its loop takes one input at a time (a
websocket push, a request's outcome, a command, a timer) and runs it as a step, exactly as the replay host
does: the components handle the step's events and everything they cause, in FIFO order. Then, in this
order:

1. the step's events are appended to the store (one fsynced transaction), market snapshots excepted;
2. they are published on NATS (``tradebus tail`` follows them; a NATS outage loses nothing stored);
3. the venue's requests (order creates, cancels) are sent, each off the loop in a worker thread.

So no order leaves before the event that asked for it is durable, and a crash can at worst lose a
request, never the record of one. Every order's ``orderLinkId`` is its order id, derived from the event
that caused it: resending can never make a second order, and a create whose outcome is unknown is
resolved by looking the order up.

Start (and every reconnect of the private stream) reconciles with the venue before trading: executions
since the last one stored (deduplicated by exec id), the state of every order the store says is open,
the position and the wallet. A position that still differs from the store's is not explained by
anything the daemon can see: the system halts, and at start the daemon exits (fail closed). Bars that
closed before the start are history (they warm the indicators up and are not traded).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import structlog

from tradebus import __version__
from tradebus.identity import code_digest
from tradebus.bus import events as ev
from tradebus.bus import subjects
from tradebus.bus.base import Bus
from tradebus.bus.ids import IdGenerator
from tradebus.components.base import COMMAND, Stamper, WallClock, is_command
from tradebus.components.timeframes import BYBIT_INTERVAL, tf_ns
from tradebus.configs.limits import Limits
from tradebus.configs.schema import SystemConfig
from tradebus.console import describe
from tradebus.eventstore import projections
from tradebus.eventstore.store import EventStore
from tradebus.live import bybit_wire as w
from tradebus.live.bybit_wire import parse_klines
from tradebus.live.bybit import BybitRest, Credentials, private_stream, public_stream
from tradebus.live.bybit_public import BybitPublic, OutcomeUnknown, VenueError, VenueRejected
from tradebus.live.venue import LiveVenue, Request
from tradebus.engine.artifacts import atomic_write
from tradebus.engine.host import LocalHost, Router
from tradebus.engine.wiring import build_core, simulated_venue, warmup_bars

log = structlog.get_logger("tradebus.daemon")
MS = 1_000_000
EXIT_OK, EXIT_FAIL_CLOSED = 0, 3
ORDER_GONE = 110001  # cancel/amend of an order that is not open (any more)


@dataclass
class Latency:
    """How long after a venue message reached tradebus its step had decided, had stored, and its first
    request was leaving (ns); ``sent`` is 0 until it leaves."""

    decided: int
    stored: int
    sent: int = 0
    received_ns: int = 0  # perf_counter_ns at receipt


def _sent(timing: Latency | None) -> None:
    """Called on the sending thread just before the request is written."""
    if timing is not None:
        timing.sent = time.perf_counter_ns() - timing.received_ns


class FailClosed(RuntimeError):
    """Local state and the venue's disagree in a way the daemon cannot explain."""


# What a person watching the daemon's log wants to see of each step (bars, snapshots and heartbeats are
# for `tradebus tail`).
_JOURNAL = (ev.OrderIntent, ev.OrderAccepted, ev.OrderRejected, ev.OrderCancelled, ev.OrderExpired, ev.Fill,
            ev.FundingPaid, ev.PositionChanged, ev.RiskStateChanged, ev.RunStarted, ev.RunFinished)


def journal(event: ev.Event) -> None:
    """Log one stored event a person should see: orders, fills, positions, risk changes, run start and end."""
    if not isinstance(event, _JOURNAL):
        return
    bad = isinstance(event, ev.OrderRejected) or isinstance(event, ev.RiskStateChanged) and event.state != "active"
    (log.warning if bad else log.info)(ev.tag_of(event), system=event.system or "account", detail=describe(event))


@dataclass
class DaemonSettings:
    mode: Literal["paper", "demo", "live"]
    config: SystemConfig
    creds: Credentials | None  # None for paper
    limits: Limits
    store_path: Path
    bus: Bus
    status_dir: Path
    rest_url: str | None = None
    public_ws: str | None = None
    private_ws: str | None = None
    heartbeat_s: float = 5.0
    rest_timeout: float = 5.0
    lookup_delay: float = 0.5
    manifest: dict[str, Any] = field(default_factory=dict)


class Daemon:
    def __init__(self, s: DaemonSettings, store: EventStore | None = None) -> None:
        """``store``: a writer shared with other daemons of the process (else the daemon opens its own)."""
        self.s = s
        self._shared_store = store
        c = s.config
        self.config = c
        self.clock = WallClock()
        self.run_id = f"{c.system}-{s.mode}-{IdGenerator().next(time.time_ns())[:16].lower()}"
        self._system_stamp = Stamper(self.clock, None, c.system, self.run_id)  # the daemon's own events
        self._market_stamp = Stamper(self.clock, None, "", self.run_id)  # bars and the account's events
        self._stamp = lambda name: Stamper(self.clock, None, c.system, self.run_id)  # noqa: E731 - one per component
        self.paper = s.mode == "paper"
        if self.paper:  # the public feed only: candles and instrument rules
            self.rest: BybitPublic = BybitPublic(endpoint=s.rest_url, timeout=s.rest_timeout)
        else:
            if s.creds is None:
                raise ValueError(f"{s.mode} needs API keys")
            self.rest = BybitRest(s.creds, endpoint=s.rest_url, demo=s.mode == "demo" and not s.rest_url,
                                  timeout=s.rest_timeout)
        self.store: EventStore | None = None
        self.bus_host: LocalHost | None = None  # set once the components are built
        self.inbox: asyncio.Queue[tuple[str, Any, int]] = asyncio.Queue()
        self.tasks: set[asyncio.Task] = set()
        # One sender, in order: an exit must reach the venue before the entry decided with it.
        self.requests: asyncio.Queue[tuple[Request, Latency | None]] = asyncio.Queue()
        self.latencies: deque[Latency] = deque(maxlen=100_000)  # the latest venue messages that caused a request
        self.forecast_latencies: deque[int] = deque(maxlen=100_000)  # ns: kline received -> its Forecast published
        self.steps = 0
        self.busy = False  # inside a step (tests wait for the daemon to be idle)
        self.in_flight = 0
        self._commands_seen: set[str] = set()
        self.stored = 0
        self._hb = 0
        self._failed: str = ""

    # -- set up ---------------------------------------------------------------------------------------

    def _history(self) -> dict[str, np.ndarray]:
        """The latest closed candles, enough to warm every feature up (blocking)."""
        c = self.config
        now = self.rest.clock.now_ms()
        rows = self.rest.closed_klines(c.symbol, c.timeframe, 0, now, last=warmup_bars(c))
        return parse_klines(rows, False, c.timeframe, now * MS)

    def _restore(self, state: projections.State, records: list[ev.Event]) -> None:
        """Put the components where the store says the last session left them."""
        c = self.config
        own = [e for e in records if self._ours(e, state)]
        # Fold the stored stream through the components that keep state (outputs dropped). The simulated
        # exchange of a paper run rebuilds its book and position from the stored bars and intents; a
        # venue's state comes from the venue (reconciliation) instead.
        route = Router([self.host, self.risk, self.portfolio, self.guard]).route
        sim = Router([self.venue]).route if self.paper else None
        refused = {e.order_id for e in own if isinstance(e, ev.OrderRejected)}
        if self.paper:  # what the guard said then is in the store: it is not asked again (nor counted)
            gate, self.venue.gate = self.venue.gate, None
        for event in own:
            subject = subjects.subject_for(event)
            if sim is not None and not (isinstance(event, ev.OrderIntent) and event.order_id in refused):
                for handle, _ in sim(subject, type(event)):
                    handle(event)
            for handle, _ in route(subject, type(event)):
                handle(event)
        if self.paper:
            self.venue.gate = gate
            return
        intents = {e.order_id: e for e in own if isinstance(e, ev.OrderIntent)}
        for order in state.open_orders.values():
            if order.system == c.system and order.symbol == c.symbol and order.order_id in intents:
                self.venue.restore(intents[order.order_id], order.status in ("accepted", "partially_filled"))
        prefix = f"{c.system}|"
        self.venue.exec_ids.update(k[len(prefix):] for k in state.exec_ids if k.startswith(prefix))
        fills = [e for e in own if isinstance(e, ev.Fill)]
        self.venue.last_exec_ms = max((e.ts_event // MS for e in fills), default=0)

    def _ours(self, e: ev.Event, state: projections.State) -> bool:
        """Stored events this daemon's state is folded from: its system's (and its account's) in this mode."""
        if e.run.startswith(COMMAND):
            return e.system in (self.config.system, "")
        return state.run_modes.get(e.run) == self.s.mode and e.system in (self.config.system, "")

    async def _setup(self) -> None:
        s, c = self.s, self.config
        self.store = self._shared_store or await asyncio.to_thread(EventStore.open_writer, s.store_path)
        stored = await asyncio.to_thread(lambda: list(self.store.read()))
        records = [r.event for r in stored]
        state = projections.rebuild(stored)
        offset = await asyncio.to_thread(self.rest.sync_clock)
        rules = await asyncio.to_thread(self.rest.instrument, c.symbol)
        history = await asyncio.to_thread(self._history)
        # Seeded once from the latest closed bars, the replay's warm-up rule; then only updated.
        serve_from = int(history["open_time"][-1]) + tf_ns(c.timeframe) if len(history["close"]) else 0
        core = build_core(c, self._stamp, history, serve_from, s.limits)
        self.guard, self.builder, self.host, self.risk, self.portfolio = (core.guard, core.builder, core.host, core.risk,
                                                                          core.portfolio)
        if self.paper:
            self.venue = simulated_venue(c, self._stamp("exchange"), self.guard)
            self._take_outbox = lambda: []  # noqa: E731 - nothing leaves for a venue
        else:
            self.venue = LiveVenue(self._stamp("venue"), self._market_stamp, self.guard, rules,
                                   venue=c.venue, symbol=c.symbol, timeframe=c.timeframe)
            self._take_outbox = self.venue.take_outbox
            if len(history["close"]):
                self.venue.last_price = float(history["close"][-1])
        if len(history["close"]):
            self.guard.price = float(history["close"][-1])
        self._restore(state, records)
        self.forecaster = core.forecaster
        if self.forecaster is not None:
            self.forecaster.restore(history["open_time"], history["close"],
                                    [e for e in records if isinstance(e, ev.Forecast) and e.system == c.system])
        self._refusal = ""
        self.bus_host = LocalHost(core.components(self.venue), self.clock, sinks=[self._collect])
        self._collected: list[ev.Event] = []
        log.info("daemon set up", system=c.system, mode=s.mode, run=self.run_id, clock_offset_ms=offset,
                 history_bars=int(len(history["close"])), stored_events=len(records),
                 open_orders=len(self.venue.open_order_ids()), risk=self.guard.state)

    def _collect(self, event: ev.Event) -> None:
        self._collected.append(event)

    # -- steps ------------------------------------------------------------------------------------------

    async def step(self, roots: list[ev.Event], received_ns: int = 0) -> list[ev.Event]:
        """Run one step; store, publish, then send what it asked for."""
        if not roots:
            return []
        self.busy = True
        try:
            return await self._step(roots, received_ns)
        finally:
            self.busy = False

    async def _step(self, roots: list[ev.Event], received_ns: int) -> list[ev.Event]:
        self._collected = []
        self.bus_host.step(roots, time.time_ns())
        decided_ns = time.perf_counter_ns()
        if self.forecaster is not None and self.forecaster.refusal != self._refusal:
            self._refusal = self.forecaster.refusal  # said once when it starts (an expired model), and when it ends
            if self._refusal:
                log.error("forecaster refuses to forecast", system=self.config.system, reason=self._refusal)
        done = self._collected
        durable = [e for e in done if type(e) is not ev.Snapshot]
        if durable:
            await asyncio.to_thread(self.store.append, durable)
            self.stored += len(durable)
        stored_ns = time.perf_counter_ns()
        for event in durable:
            journal(event)
        for event in done:
            await self._publish(event)
        if received_ns and self.forecaster is not None and any(type(e) is ev.Forecast for e in done):
            self.forecast_latencies.append(time.perf_counter_ns() - received_ns)
        requests = self._take_outbox()
        timing = None
        if requests and received_ns:
            timing = Latency(decided_ns - received_ns, stored_ns - received_ns, received_ns=received_ns)
            self.latencies.append(timing)
        for i, req in enumerate(requests):
            self.requests.put_nowait((req, timing if i == 0 else None))  # timed: the first request it caused
        self.steps += 1
        return done

    async def _publish(self, event: ev.Event) -> None:
        try:
            await self.s.bus.publish(event)
        except Exception as exc:  # noqa: BLE001 - NATS down: the store has it; tail misses it
            log.warning("publish failed", error=str(exc), type=ev.tag_of(event))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _post(self, kind: str, payload: Any, received_ns: int = 0) -> None:
        self.inbox.put_nowait((kind, payload, received_ns or time.perf_counter_ns()))

    # -- requests -----------------------------------------------------------------------------------

    async def _sender(self) -> None:
        while True:
            req, timing = await self.requests.get()
            self.in_flight += 1
            try:
                await self._execute(req, timing)
            finally:
                self.in_flight -= 1
                self.requests.task_done()

    async def _execute(self, req: Request, timing: Latency | None) -> None:
        try:
            if req.kind == "create":
                events = await self._create(req, timing)
            elif req.kind == "cancel_all":
                _sent(timing)
                await asyncio.to_thread(self.rest.cancel_all, req.symbol)
                events = []  # the cancellations arrive as order pushes (and by lookup on reconnect)
            elif req.kind == "cancel":
                _sent(timing)
                events = await self._cancel(req)
            else:
                raise ValueError(f"unknown request {req.kind}")
        except VenueError as exc:
            log.error("venue request failed", kind=req.kind, order_id=req.order_id, error=str(exc))
            events = self.venue.from_refusal(req.order_id, "http", str(exc)) if req.kind == "create" else []
            if req.kind == "cancel":
                self.venue.cancel_failed(req.order_id)  # asked again at the next reconciliation
        self._post("result", events)

    async def _cancel(self, req: Request) -> list[ev.Event]:
        try:
            await asyncio.to_thread(self.rest.cancel, req.symbol, req.order_id)
        except VenueRejected as exc:
            if exc.code != ORDER_GONE:
                raise
            # Already filled, cancelled or triggered: what it became comes from the venue.
            order = await asyncio.to_thread(self.rest.find_order, req.symbol, req.order_id)
            return self.venue.from_order(order) if order is not None else []
        return []  # the cancellation arrives as an order push (or by lookup on reconnect)

    async def _create(self, req: Request, timing: Latency | None = None) -> list[ev.Event]:
        """Send a create; an unknown outcome is looked up, and resent (same link id) only if not found."""
        for attempt in range(2):
            try:
                def send() -> w.OrderAck:
                    _sent(timing if attempt == 0 else None)
                    return self.rest.create(req.params)

                ack = await asyncio.to_thread(send)
                return self.venue.from_ack(req.order_id, ack)
            except VenueRejected as exc:
                return self.venue.from_refusal(req.order_id, exc.code, exc.message)
            except OutcomeUnknown as exc:
                log.warning("order outcome unknown; looking it up", order_id=req.order_id, error=str(exc))
                for wait in (1, 2, 4):
                    await asyncio.sleep(self.s.lookup_delay * wait)
                    try:
                        order = await asyncio.to_thread(self.rest.find_order, req.symbol, req.order_id)
                    except VenueError:
                        continue
                    if order is not None:
                        return self.venue.from_order(order)
                log.warning("order not at the venue; sending it again under the same link id", order_id=req.order_id,
                            attempt=attempt + 1)
        return self.venue.from_refusal(req.order_id, "unknown", "outcome unknown and the order is not at the venue")

    # -- reconciliation -----------------------------------------------------------------------------

    async def _catch_up(self, startup: bool) -> w.Position | None:
        """Executions missed, orders' true state, position and wallet, from REST, run as one step;
        returns the venue's position."""
        c, rest, venue = self.config, self.rest, self.venue
        since = venue.last_exec_ms - 60_000 if venue.last_exec_ms else rest.clock.now_ms() - 60_000
        events: list[ev.Event] = []
        for item in await asyncio.to_thread(rest.executions, c.symbol, since):
            events += venue.from_execution(item)
        for oid in venue.open_order_ids():
            order = await asyncio.to_thread(rest.find_order, c.symbol, oid)
            if order is not None:
                events += venue.from_order(order)
            elif startup and not venue.orders[oid].accepted:
                events += venue.from_refusal(oid, "not_sent", "not at the venue at restart: the request never left")
        pos = await asyncio.to_thread(rest.position, c.symbol)
        wallet = await asyncio.to_thread(rest.wallet)
        if pos is not None:
            events += venue.from_position(pos)
        events += venue.from_wallet(wallet, rest.clock.now_ms())
        await self.step(events)
        return pos

    async def reconcile(self, startup: bool) -> None:
        """Catch up with the venue. A position the executions do not explain halts the system (cancel
        all, no new orders, until a person resumes it), and at start ends the daemon: fail closed."""
        c = self.config
        for attempt in range(2):
            pos = await self._catch_up(startup)
            local = self.portfolio.positions.get(c.symbol)
            mine = local.qty if local else 0.0
            theirs = pos.signed_qty() if pos is not None else 0.0
            if abs(mine - theirs) <= float(self.venue.rules.step) / 2:
                if mine == 0:  # flat: no stop or target of an earlier position may stay behind
                    self.venue.cancel_reduce_only()
                    for req in self.venue.take_outbox():
                        self.requests.put_nowait((req, None))
                return
            if attempt == 0:  # a fill landing between the two reads looks the same: read again first
                await asyncio.sleep(self.s.lookup_delay * 2)
        msg = (f"{c.symbol}: the store's position is {mine:g} but the venue's is {theirs:g}, and the executions "
               f"since the last stored one do not explain it")
        await self.step(list(self.guard.halt(msg, self.clock.now())))
        if startup:
            raise FailClosed(msg)
        log.error("halted: the position differs from the venue's after a reconnect", detail=msg)

    async def backfill_bars(self, until_open: int | None = None) -> None:
        """Closed bars after the last held, up to ``until_open`` (exclusive) or now, from REST, in order."""
        c = self.config
        last = self.builder.last_open
        if last is None:
            return
        step = tf_ns(c.timeframe)
        end = (until_open - step) if until_open is not None else self.rest.clock.now_ms() * MS
        if end < last + step:
            return
        rows = await asyncio.to_thread(self.rest.closed_klines, c.symbol, c.timeframe, (last + step) // MS, end // MS)
        for row in rows:
            item = w.rest_kline(row, BYBIT_INTERVAL[c.timeframe], step // MS)
            await self._bar(w.bar(item, c.symbol, c.timeframe, self._market_stamp, c.market), 0)

    async def _bar(self, bar: ev.BarClosed, received_ns: int) -> None:
        last = self.builder.last_open
        if last is not None and bar.open_time <= last:
            return
        if last is not None and bar.open_time != last + tf_ns(self.config.timeframe):
            await self.backfill_bars(bar.open_time)
        await self.step([bar], received_ns)

    # -- the loop ---------------------------------------------------------------------------------------

    async def _handle(self, kind: str, payload: Any, received_ns: int) -> None:
        c = self.config
        if kind == "frame":
            if payload.topic.startswith("kline."):
                for item in payload.data:
                    bar = w.bar(item, c.symbol, c.timeframe, self._market_stamp, c.market)
                    if bar is not None:
                        await self._bar(bar, received_ns)
            else:
                await self.step(self.venue.from_frame(payload))
        elif kind == "result":
            await self.step(payload)
        elif kind == "command":
            if payload.id not in self._commands_seen:  # it comes back: the step publishes what it stores
                self._commands_seen.add(payload.id)
                await self.step([payload])
        elif kind == "open":
            if payload == "private":
                await self.reconcile(startup=False)
            else:
                await self.backfill_bars()
        elif kind == "bad":
            log.warning("undecodable venue message skipped", detail=payload)

    async def _commands(self) -> None:
        """Kill and resume commands from NATS (``tradebus kill``)."""
        sub = await self.s.bus.subscribe(subjects.risk(">"))
        async for event in sub:
            if (isinstance(event, ev.RiskStateChanged) and is_command(event)
                    and event.system in (self.config.system, "")):
                self._post("command", event)

    async def _lifecycle(self) -> None:
        """The system's lifecycle moves and allocations (``tradebus lifecycle run``). Only a command's run is
        taken (a person's or the lifecycle's), so a restart folds them from the store like a kill."""
        sub = await self.s.bus.subscribe(subjects.lifecycle(self.config.system))
        async for event in sub:
            if isinstance(event, (ev.Promotion, ev.Allocation)) and is_command(event):
                self._post("command", event)

    async def _heartbeat(self) -> None:
        while True:
            self._hb += 1
            await self._publish(ev.Heartbeat(**self._system_stamp(self.clock.now()), component="daemon", seq=self._hb))
            self.write_status("running")
            await asyncio.sleep(self.s.heartbeat_s)

    def status_path(self) -> Path:
        return self.s.status_dir / f"{self.config.system}.{self.s.mode}.json"

    def write_status(self, status: str) -> None:
        c = self.config
        pos = self.portfolio.positions.get(c.symbol)
        info = {"system": c.system, "mode": self.s.mode, "status": status, "pid": os.getpid(), "run": self.run_id,
                "store": str(self.s.store_path), "nats": getattr(self.s.bus, "url", ""),
                "nats_connected": getattr(self.s.bus, "connected", True), "symbol": c.symbol,
                "heartbeat_ns": time.time_ns(), "last_bar_open_ns": self.builder.last_open, "position":
                pos.qty if pos else 0.0, "equity": self.portfolio.equity(), "risk": self.guard.state,
                "risk_reason": self.guard.reason(), "open_orders": len(self.venue.open_order_ids()),
                "events_stored": self.stored, "failure": self._failed}
        self.s.status_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.status_path(), json.dumps(info, indent=1).encode())

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None,
                  account: "AccountFeed | None" = None) -> int:
        """Trade until ``stop`` is set; returns the exit code. ``account``: the private stream shared with the
        other daemons of the process (else the daemon opens its own)."""
        s, c = self.s, self.config
        loop = asyncio.get_running_loop()
        streams = []
        status = "ok"
        try:
            await self._setup()
            self._spawn(self._sender())
            await self.step([ev.RunStarted(**self._system_stamp(self.clock.now()), mode=s.mode, manifest={
                **s.manifest, "run": self.run_id, "system": c.system, "config": c.model_dump(mode="json"),
                "config_hash": c.config_hash(), "limits": s.limits.model_dump(mode="json", by_alias=True),
                "venue": "simulated" if self.paper else self.rest.endpoint, "feed": self.rest.endpoint,
                "code_version": __version__, "code_digest": code_digest()})])
            post = lambda item: self._post(*item)  # noqa: E731 - streams hand over (kind, payload, received)
            if not self.paper:
                if account is None:
                    private = private_stream(s.creds, loop, post, url=s.private_ws,
                                             demo=s.mode == "demo" and not s.private_ws, clock=self.rest.clock)
                    await asyncio.to_thread(private.connect)
                    streams.append(private)
                else:
                    await account.join(self, stop)
                await self.reconcile(startup=True)
            public = public_stream(c.symbol, c.timeframe, loop, post, url=s.public_ws, clock=self.rest.clock)
            await asyncio.to_thread(public.connect)
            streams.append(public)
            for coro in (*(st.supervise() for st in streams), self._heartbeat(), self._commands(), self._lifecycle()):
                self._spawn(coro)
            log.info("daemon trading", system=c.system, mode=s.mode, run=self.run_id, risk=self.guard.state)
            if self.guard.state != "active":
                log.warning(f"{c.system} STARTS {self.guard.state.upper()}: no new orders"
                            + (" (reduce-only)" if self.guard.state == "reducing" else "")
                            + f" until `tradebus resume {c.system}`", reason=self.guard.reason())
            if ready is not None:
                ready.set()
            stopper = asyncio.ensure_future(stop.wait())
            while True:
                getter = asyncio.ensure_future(self.inbox.get())
                done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                await self._handle(*getter.result())
            status = "interrupted"
        except FailClosed as exc:
            self._failed = str(exc)
            log.error("fail closed: not trading", reason=str(exc))
            return EXIT_FAIL_CLOSED
        except VenueError as exc:  # the venue said no (a refused key, a failed request): its words suffice
            self._failed = str(exc)
            status = "failed"
            log.error("daemon stopped by the venue", error=str(exc))
            raise
        except Exception as exc:
            self._failed = f"{type(exc).__name__}: {exc}"
            status = "failed"
            log.exception("daemon failed")
            raise
        finally:
            await self._shutdown(streams, status)
        return EXIT_OK

    async def _shutdown(self, streams: list, status: str) -> None:
        """Drain: close the streams, let requests in flight finish, record the end, flush."""
        for stream in streams:
            await asyncio.to_thread(stream.close)
        try:
            await asyncio.wait_for(self.requests.join(), 15)  # requests in flight finish
        except asyncio.TimeoutError:
            log.error("requests still in flight at shutdown; the next start looks them up")
        for t in list(self.tasks):
            t.cancel()
        try:
            while not self.inbox.empty() and self.bus_host is not None:
                kind, payload, _ = self.inbox.get_nowait()
                if kind == "result":
                    await self.step(payload)
            if self.bus_host is not None:
                await self.step([ev.RunFinished(**self._system_stamp(self.clock.now()),
                                                status="failed" if self._failed else status,
                                                summary={"steps": self.steps, "events_stored": self.stored,
                                                         "failure": self._failed})])
                self.write_status("failed" if self._failed else "stopped")
        finally:
            if self.store is not None and self._shared_store is None:
                self.store.close()


class AccountFeed:
    """One private stream for the daemons of a process (one account): order, execution and position pushes go
    to every daemon (each venue component takes its own symbol's); a wallet push becomes one account event,
    stepped by every daemon (each guard reads it; the store keeps it once, by its id). Connected once every
    daemon has joined, so none misses a push between its reconciliation and the stream."""

    def __init__(self, daemons: list[Daemon]) -> None:
        self._daemons = daemons
        self._joined: set[int] = set()
        self._all = asyncio.Event()
        self.stream: Any = None
        self._keeper = daemons[0]  # whose run the account events belong to

    def _post(self, item: tuple[str, Any, int]) -> None:
        kind, payload, received = item
        if kind == "frame" and payload.topic.startswith("wallet"):
            events = [e for it in payload.data for e in [w.account_event(it, payload.ts, self._keeper._market_stamp)]
                      if e is not None]
            item = ("result", events, received)
        for d in self._daemons:
            d._post(*item)

    async def join(self, daemon: Daemon, stop: asyncio.Event) -> None:
        """Wait until every daemon has joined (or ``stop``); the last to join connects the stream."""
        self._joined.add(id(daemon))
        if len(self._joined) == len(self._daemons):
            s = daemon.s
            self.stream = private_stream(s.creds, asyncio.get_running_loop(), self._post, url=s.private_ws,
                                         demo=s.mode == "demo" and not s.private_ws, clock=daemon.rest.clock)
            await asyncio.to_thread(self.stream.connect)
            self._spawned = asyncio.ensure_future(self.stream.supervise())
            self._all.set()
        waits = {asyncio.ensure_future(self._all.wait()), asyncio.ensure_future(stop.wait())}
        _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()

    async def close(self) -> None:
        if self.stream is not None:
            self._spawned.cancel()
            await asyncio.to_thread(self.stream.close)


def check_daemons(settings: list[DaemonSettings]) -> None:
    """Several systems in one process must differ in id and trade different symbols: one account holds one
    position per symbol, which two systems cannot share without one closing the other's trades."""
    seen: dict[str, str] = {}
    ids: set[str] = set()
    for s in settings:
        c = s.config
        if c.system in ids:
            raise ValueError(f"system {c.system!r} is listed twice")
        ids.add(c.system)
        key = f"{c.venue}:{c.market}:{c.symbol}"
        if key in seen:
            raise ValueError(f"systems {seen[key]!r} and {c.system!r} both trade {c.symbol}: one account holds one "
                             f"position per symbol, so run them on separate accounts (or replay them as a portfolio, "
                             f"where each keeps a sub-account)")
        seen[key] = c.system


class DaemonGroup:
    """Several systems in one process, until stopped or until one of them ends (then all stop). They share
    the first settings' store (one writer), bus and, but for paper, keys and private stream. One system is
    just its daemon."""

    def __init__(self, settings: list[DaemonSettings]) -> None:
        check_daemons(settings)
        self.store = EventStore.open_writer(settings[0].store_path) if len(settings) > 1 else None
        self.daemons = [Daemon(s, self.store) for s in settings]
        self._account = AccountFeed(self.daemons) if len(settings) > 1 and settings[0].mode != "paper" else None

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> int:
        """Returns the worst exit code."""
        if len(self.daemons) == 1:
            return await self.daemons[0].run(stop, ready)
        readies = [asyncio.Event() for _ in self.daemons]
        inner = asyncio.Event()  # one daemon ending stops the others

        async def one(d: Daemon, r: asyncio.Event) -> int:
            try:
                return await d.run(inner, r, self._account)
            finally:
                inner.set()

        async def relay() -> None:
            await stop.wait()
            inner.set()

        async def all_ready() -> None:
            for r in readies:
                await r.wait()
            if ready is not None:
                ready.set()

        helpers = [asyncio.ensure_future(relay()), asyncio.ensure_future(all_ready())]
        try:
            codes = await asyncio.gather(*(one(d, r) for d, r in zip(self.daemons, readies)), return_exceptions=True)
        finally:
            for h in helpers:
                h.cancel()
            if self._account is not None:
                await self._account.close()
            if self.store is not None:
                self.store.close()
        for c in codes:
            if isinstance(c, BaseException):
                raise c
        return max(codes)
