"""Sample events: one valid instance of every type, and hypothesis strategies for all of them."""

from __future__ import annotations

import typing

import msgspec
from hypothesis import strategies as st

from tradebus.bus import events as ev
from tradebus.bus.ids import IdGenerator

T0 = 1_735_689_600_000_000_000  # 2025-01-01T00:00:00Z in ns
FIVE_MIN = 300_000_000_000


def one_of_each() -> list[ev.Event]:
    """Return one realistic event of every type in the union."""
    ids = IdGenerator("samples")
    env = lambda i, **kw: {"id": ids.next(T0 + i), "ts_event": T0 + i, "ts_init": T0 + i + 5, **kw}  # noqa: E731
    bar = ev.BarClosed(**env(0), venue="bybit", market="linear", symbol="BTCUSDT", timeframe="5m",
                       open_time=T0 - 300 * 10**9, open=1.5, high=2.0, low=1.0, close=1.75, volume=12.5,
                       turnover=21.0)
    sys_env = lambda i: env(i, system="ema_rsi_btc", run="run-1", cause=bar.id)  # noqa: E731
    out: list[ev.Event] = [
        bar,
        ev.Snapshot(**env(1, cause=bar.id), bar=bar, features={"ema_20": 1.7, "rsi_14": 55.0},
                    htf={"1h": {"ema_50": 1.6}, "4h": {"adx_14": 22.5}}),
        ev.Forecast(**env(2), model_id="gbm", model_version="3", symbol="BTCUSDT", timeframe="5m",
                    horizon_bars=12, expected_return=0.001, expected_vol=0.01, regime="trend_up", confidence=0.6,
                    p_trend_up=0.5, p_trend_down=0.1, p_chop=0.35, p_crash=0.05),
        ev.Signal(**sys_env(3), strategy="ema_rsi_atr", symbol="BTCUSDT", timeframe="5m", direction="long",
                  strength=0.8, stop_price=1.2, take_profit=None, reason="ema cross up"),
        ev.OrderIntent(**sys_env(4), order_id="01ABC-entry", venue="bybit", symbol="BTCUSDT", side="buy",
                       order_type="stop_limit", qty=0.01, price=1.8, trigger_price=1.79, reduce_only=False,
                       label="entry"),
        ev.OrderSubmitted(**sys_env(5), order_id="01ABC-entry", venue="bybit"),
        ev.OrderAccepted(**sys_env(6), order_id="01ABC-entry", venue_order_id="b5f1-42"),
        ev.OrderRejected(**sys_env(7), order_id="01ABC-x", reason="max position notional", code=""),
        ev.OrderCancelled(**sys_env(8), order_id="01ABC-y", reason="strategy exit"),
        ev.OrderExpired(**sys_env(9), order_id="01ABC-z"),
        ev.Fill(**sys_env(10), order_id="01ABC-entry", venue_order_id="b5f1-42", exec_id="e-1", symbol="BTCUSDT",
                side="buy", price=1.8, qty=0.01, fee=0.0000099, liquidity="taker", leaves_qty=0.0),
        ev.FundingPaid(**sys_env(18), symbol="BTCUSDT", rate=0.0001, mark_price=1.8, position_qty=0.01,
                       amount=0.0000018),
        ev.PositionChanged(**sys_env(11), symbol="BTCUSDT", qty=0.01, avg_price=1.8, realized_pnl=0.0,
                           unrealized_pnl=-0.0005, mark_price=1.75),
        ev.AccountState(**sys_env(12), balance=10_000.0, equity=9_999.5, margin_used=0.018, available=9_999.4),
        ev.Promotion(**sys_env(13), from_status="hygiene", to_status="test", rule="hygiene_passed",
                     evidence={"sharpe": 1.4, "trades": 212, "window": "2025-01..2025-06", "ok": True}),
        ev.Allocation(**sys_env(20), weight=0.25, method="inverse_vol", evidence={"vol": 0.41, "sharpe": 1.2}),
        ev.RiskStateChanged(**sys_env(14), scope="system", state="reducing", previous="active",
                            reason="daily loss 2.1% > 2%"),
        ev.RunStarted(**sys_env(15), mode="replay", manifest={"config_hash": "ab12", "bars": 1000,
                                                               "windows": ["hygiene", "test"]}),
        ev.RunFinished(**sys_env(16), status="ok", summary={"sharpe": 1.1, "trades": 42}),
        ev.Heartbeat(**sys_env(17), component="recorder", seq=3),
        ev.SweepTask(**env(18), job="trend_4h", venue="bybit", market="linear", data={"BTCUSDT": "ab12"},
                     trials=[ev.TrialSpec(id="t1", window="hygiene", config={"system": "trend_4h", "symbol": "BTCUSDT"})]),
        ev.SweepResult(**env(19), job="trend_4h", worker="host-1",
                       outcomes=[ev.TrialOutcome(id="t1", metrics={"sharpe": 1.5}, blocks=[10.0, 0.1, 0.01]),
                                 ev.TrialOutcome(id="t2", error="ValueError: no candles")]),
        ev.PolicyDecision(**sys_env(21), policy_id="regime_v1", policy_version="ab12cd34ef56", symbol="BTCUSDT",
                          regime="trend_up", confidence=0.3, expected_vol=0.02, weights={"trend": 1.0},
                          positions={"trend": 1, "reversion": -1}, exposure=1.0, direction="long", scale=0.8,
                          reason=""),
        ev.ForecastScored(**env(20, cause="01FORECAST"), model_id="gbm", model_version="3", symbol="BTCUSDT",
                          timeframe="5m", horizon_bars=12, forecast_time=T0, expected_return=0.001,
                          realised_return=-0.002, expected_vol=0.01, realised_vol=0.012,
                          regime_probs=(0.4, 0.2, 0.3, 0.1), realised_regime="chop", return_error=9e-6,
                          qlike=0.04, brier=0.7),
    ]
    assert {type(e) for e in out} == set(ev.EVENT_TYPES), "add the new event type to one_of_each()"
    return out


def sample(cls: type[ev.Event]) -> ev.Event:
    """Return the sample event of one type."""
    return next(e for e in one_of_each() if type(e) is cls)


# --- hypothesis strategies ------------------------------------------------------------------------

_finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
_text = st.text(max_size=20)
_i64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def _for_type(tp: typing.Any) -> st.SearchStrategy:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:  # msgspec constraints (the envelope's id and times)
        meta = next((a for a in args[1:] if isinstance(a, msgspec.Meta)), msgspec.Meta())
        if args[0] is int:
            low = meta.ge if meta.ge is not None else -(2**63)
            return st.integers(min_value=low, max_value=meta.le if meta.le is not None else 2**63 - 1)
        if args[0] is str:
            return st.text(min_size=meta.min_length or 0, max_size=min(meta.max_length or 20, 20))
        return _for_type(args[0])
    if tp is float:
        return _finite
    if tp is int:
        return _i64
    if tp is str:
        return _text
    if tp is bool:
        return st.booleans()
    if tp is type(None):
        return st.none()
    if tp is typing.Any:
        return st.recursive(st.none() | st.booleans() | _i64 | _finite | _text,
                            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
                            max_leaves=6)
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return st.one_of(*(_for_type(a) for a in args))
    if origin is list:
        return st.lists(_for_type(args[0]), max_size=3)
    if origin is tuple:
        return st.tuples(*(_for_type(a) for a in args))
    if origin is dict:
        return st.dictionaries(_for_type(args[0]), _for_type(args[1]), max_size=4)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return event_strategy(tp)
    raise TypeError(f"no strategy for {tp!r}")


def event_strategy(cls: type[msgspec.Struct]) -> st.SearchStrategy:
    """A strategy producing arbitrary valid instances of one event class."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: _for_type(hints[f.name]) for f in msgspec.structs.fields(cls)}
    return st.builds(cls, **fields)


any_event = st.one_of(*(event_strategy(cls) for cls in ev.EVENT_TYPES))
