"""Every event tradebus publishes or stores: frozen, tagged msgspec Structs forming one union.

Rules that keep stored events readable forever:
- each class has an explicit, stable ``tag`` (the ``type`` field on the wire); renaming a class is free,
  changing a tag is a breaking change;
- fields are only ever added, and only with defaults;
- the envelope (``id``, ``ts_event``, ``ts_init``, ``system``, ``run``, ``cause``) is on every event.

Times are integer nanoseconds since the Unix epoch (UTC). ``ts_event`` is market/venue time (a bar's
close, a fill's execution time); ``ts_init`` is when tradebus created the event (simulated time in a
replay, wall time live). Quantities and prices are floats here; the live adapter turns them into the
venue's decimal strings at the edge.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

import msgspec

Side = Literal["buy", "sell"]
OrderType = Literal["market", "limit", "stop", "stop_limit"]
TimeInForce = Literal["gtc", "ioc", "fok", "post_only"]
Liquidity = Literal["maker", "taker"]
Direction = Literal["long", "short", "flat"]
Regime = Literal["trend_up", "trend_down", "chop", "crash", "unknown"]
RiskLevel = Literal["active", "reducing", "halted"]
LifecycleStatus = Literal[
    "candidate", "hygiene", "test", "demo", "live_test", "production", "retired", "rejected",
    "paper", "disabled", "rework_required",
]
RunMode = Literal["replay", "paper", "demo", "live", "sweep", "validate", "worker"]
RunStatus = Literal["ok", "failed", "interrupted"]
Scalar = Union[str, int, float, bool, None]
# What a decoded envelope must hold (events built in code are right by construction): an id, and times
# from the epoch that fit the store's 64-bit integers.
EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Nanos = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class Event(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag_field="type",
):
    """The envelope every event carries. Unknown fields are ignored on decode (a newer writer's added
    fields must not stop an older reader); ``codec.from_json`` refuses them in what people write."""

    id: EventId
    ts_event: Nanos
    ts_init: Nanos
    system: str = ""
    run: str = ""
    cause: str = ""


# --- market data -------------------------------------------------------------------------------


class BarClosed(Event, frozen=True, kw_only=True, tag="bar"):
    """A closed candle. ``ts_event`` is the close time; ``open_time`` the open time (ns)."""

    venue: str
    market: str
    symbol: str
    timeframe: str
    open_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    turnover: float = 0.0


class Snapshot(Event, frozen=True, kw_only=True, tag="snapshot"):
    """A closed bar plus every feature known at its close.

    ``features`` are computed on the bar's own timeframe; ``htf`` maps a higher timeframe ("1h") to the
    features of the last *closed* bar of that timeframe, so nothing from a still-open bar leaks in.
    """

    bar: BarClosed
    features: dict[str, float] = {}
    htf: dict[str, dict[str, float]] = {}


class Forecast(Event, frozen=True, kw_only=True, tag="forecast"):
    """A model's view of the next ``horizon_bars`` bars, made at the close of the bar that caused it
    (``ts_event``) from the features of that bar's snapshot: the return close[t+H] / close[t] - 1, the
    realised volatility over (t, t+H], the probability of each regime over it (``regime`` is the likeliest)
    and a confidence in [0, 1] (one minus the regime distribution's normalised entropy)."""

    model_id: str
    model_version: str
    symbol: str
    timeframe: str
    horizon_bars: int
    expected_return: float
    expected_vol: float
    regime: Regime = "unknown"
    confidence: float = 0.0
    p_trend_up: float = 0.0
    p_trend_down: float = 0.0
    p_chop: float = 0.0
    p_crash: float = 0.0


class ForecastScored(Event, frozen=True, kw_only=True, tag="forecast.scored"):
    """A forecast (``cause``) against what happened over its horizon, published at the close of bar t+H:
    the realised return, volatility and regime and the forecast's losses (squared return error, QLIKE of
    the variance, multiclass Brier of the regime probabilities)."""

    model_id: str
    model_version: str
    symbol: str
    timeframe: str
    horizon_bars: int
    forecast_time: int
    expected_return: float
    realised_return: float
    expected_vol: float
    realised_vol: float
    regime_probs: tuple[float, float, float, float]
    realised_regime: Regime
    return_error: float
    qlike: float
    brier: float


# --- decisions ---------------------------------------------------------------------------------


class Signal(Event, frozen=True, kw_only=True, tag="signal"):
    """A strategy's wish: hold ``direction`` in ``symbol`` with ``strength`` in [0, 1]."""

    strategy: str
    symbol: str
    timeframe: str
    direction: Direction
    strength: float = 1.0
    stop_price: float | None = None
    take_profit: float | None = None
    reason: str = ""


class PolicyDecision(Event, frozen=True, kw_only=True, tag="policy"):
    """A composite system's policy, on a forecast (``cause``): which pool members count and with what weight,
    what each of them holds, the net exposure, the direction it gives and the risk scale of an entry.
    Published when any of regime, weights, direction or reason changes."""

    policy_id: str
    policy_version: str
    symbol: str
    regime: Regime
    confidence: float
    expected_vol: float
    weights: dict[str, float]
    positions: dict[str, int]
    exposure: float
    direction: Direction
    scale: float
    reason: str = ""


# --- order lifecycle ---------------------------------------------------------------------------


class OrderIntent(Event, frozen=True, kw_only=True, tag="order.intent"):
    """An order the risk manager approved; ``order_id`` derives from the causing event's id."""

    order_id: str
    venue: str
    symbol: str
    side: Side
    order_type: OrderType
    qty: float
    price: float | None = None
    trigger_price: float | None = None
    time_in_force: TimeInForce = "gtc"
    reduce_only: bool = False
    post_only: bool = False
    label: str = ""
    stop_distance: float | None = None
    """An entry's stop distance as sized: its protective orders derive from it once it fills (kept on
    the event so a restart restores it from the store)."""


class OrderSubmitted(Event, frozen=True, kw_only=True, tag="order.submitted"):
    """The order left tradebus for the venue; the outcome is not known yet."""

    order_id: str
    venue: str


class OrderAccepted(Event, frozen=True, kw_only=True, tag="order.accepted"):
    """The venue acknowledged the order and gave it its own id."""

    order_id: str
    venue_order_id: str


class OrderRejected(Event, frozen=True, kw_only=True, tag="order.rejected"):
    """The order was refused, by tradebus's risk manager or by the venue (``code`` is the venue's)."""

    order_id: str
    reason: str
    code: str = ""


class OrderCancelled(Event, frozen=True, kw_only=True, tag="order.cancelled"):
    """The order's unfilled remainder is cancelled."""

    order_id: str
    reason: str = ""


class OrderExpired(Event, frozen=True, kw_only=True, tag="order.expired"):
    """The order lapsed under its time in force."""

    order_id: str


class Fill(Event, frozen=True, kw_only=True, tag="fill"):
    """An execution. ``exec_id`` is the venue's and is unique: fills are deduplicated by it."""

    order_id: str
    venue_order_id: str = ""
    exec_id: str
    symbol: str
    side: Side
    price: float
    qty: float
    fee: float
    fee_currency: str = "USDT"
    liquidity: Liquidity
    leaves_qty: float = 0.0


class FundingPaid(Event, frozen=True, kw_only=True, tag="funding"):
    """A perpetual's funding settlement: ``amount`` > 0 was paid by this position, < 0 received."""

    symbol: str
    rate: float
    mark_price: float
    position_qty: float
    amount: float


# --- state -------------------------------------------------------------------------------------


class PositionChanged(Event, frozen=True, kw_only=True, tag="position"):
    """The position after a change; ``qty`` is signed (negative = short)."""

    symbol: str
    qty: float
    avg_price: float
    realized_pnl: float = 0.0
    unrealized_pnl: float = 0.0
    mark_price: float = 0.0


class AccountState(Event, frozen=True, kw_only=True, tag="account"):
    """Balances in the settlement currency."""

    currency: str = "USDT"
    balance: float
    equity: float
    margin_used: float = 0.0
    available: float = 0.0


class Promotion(Event, frozen=True, kw_only=True, tag="promotion"):
    """A system moved between lifecycle stages by a named rule, with the evidence the rule read."""

    from_status: LifecycleStatus
    to_status: LifecycleStatus
    rule: str
    evidence: dict[str, Scalar] = {}


class Allocation(Event, frozen=True, kw_only=True, tag="allocation"):
    """A system's share of the account from the allocator: its risk manager scales every entry by
    ``weight`` (at most 1: an allocation shrinks a system's size, it never raises a cap)."""

    weight: float
    method: str
    evidence: dict[str, Scalar] = {}


class RiskStateChanged(Event, frozen=True, kw_only=True, tag="risk"):
    """Risk state for one system, or for everything when ``scope`` is "global"."""

    scope: Literal["system", "global"] = "system"
    state: RiskLevel
    previous: RiskLevel
    reason: str


class RunStarted(Event, frozen=True, kw_only=True, tag="run.started"):
    """A replay, daemon or sweep began; ``manifest`` records what it ran on (config hash, data, code)."""

    mode: RunMode
    manifest: dict[str, Any] = {}


class RunFinished(Event, frozen=True, kw_only=True, tag="run.finished"):
    """A run ended; ``summary`` holds its headline figures."""

    status: RunStatus
    summary: dict[str, Any] = {}


class Heartbeat(Event, frozen=True, kw_only=True, tag="heartbeat"):
    """A long-running component is alive."""

    component: str
    seq: int = 0


# --- research -------------------------------------------------------------------------------------


class TrialSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One sweep trial: its id, the window it runs over, and its whole validated system config (JSON)."""

    id: str
    window: str
    config: dict[str, Any]


class TrialOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What a trial produced: its metrics and block statistics, or why it failed."""

    id: str
    metrics: dict[str, float] = {}
    blocks: list[float] = []
    error: str = ""


class SweepTask(Event, frozen=True, kw_only=True, tag="sweep.task"):
    """A batch of a sweep job's trials for any worker to run. ``data`` maps each set of stored series the
    trials read (``sweep.reads_label``) to the hash they were planned on; a worker whose differ refuses them."""

    job: str
    venue: str
    market: str
    data: dict[str, str]
    trials: list[TrialSpec]


class SweepResult(Event, frozen=True, kw_only=True, tag="sweep.result"):
    """A worker ran a ``SweepTask`` (``cause``); ``id`` derives from the task's, so a task run twice (after
    a redelivery) yields the same id and is counted once."""

    job: str
    worker: str
    outcomes: list[TrialOutcome]


AnyEvent = Union[
    BarClosed,
    Snapshot,
    Forecast,
    ForecastScored,
    Signal,
    PolicyDecision,
    OrderIntent,
    OrderSubmitted,
    OrderAccepted,
    OrderRejected,
    OrderCancelled,
    OrderExpired,
    Fill,
    FundingPaid,
    PositionChanged,
    AccountState,
    Promotion,
    Allocation,
    RiskStateChanged,
    RunStarted,
    RunFinished,
    Heartbeat,
    SweepTask,
    SweepResult,
]

EVENT_TYPES: tuple[type[Event], ...] = AnyEvent.__args__  # type: ignore[attr-defined]
TAGS: dict[str, type[Event]] = {cls.__struct_config__.tag: cls for cls in EVENT_TYPES}


def tag_of(event: Event) -> str:
    """Return the stable wire tag of an event."""
    return event.__struct_config__.tag  # type: ignore[return-value]
