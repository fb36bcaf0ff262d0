"""The risk guard, cap by cap: each breach puts its scope in the state the limits file promises, says so
once, and lifts only the way it is documented to (the market, the next UTC day, or a person)."""

from __future__ import annotations

import itertools

import pytest

from tradebus.bus import events as ev
from tradebus.components.base import Stamper
from tradebus.configs.limits import Limits
from tradebus.engine.guard import DAY_NS, MINUTE_NS, RiskGuard

SYSTEM = "s1"
T = 1_790_000_000 * 10**9  # a moment well inside a UTC day
T = T - T % DAY_NS + 3_600 * 10**9


class Clock:
    t = T

    def now(self) -> int:
        return self.t


_ids = itertools.count()


def env(ts: int, system: str = SYSTEM, run: str = "portfolio-run") -> dict:
    return {"id": f"E{next(_ids):08d}", "ts_event": ts, "ts_init": ts, "system": system, "run": run}


def make(limits: dict) -> RiskGuard:
    return RiskGuard(Stamper(Clock(), "guard", SYSTEM, "daemon-run"), Limits.model_validate(limits), venue="bybit",
                     symbol="BTCUSDT", timeframe="1m")


def bar(close: float, ts: int = T) -> ev.BarClosed:
    return ev.BarClosed(**env(ts, system=""), venue="bybit", market="linear", symbol="BTCUSDT", timeframe="1m",
                        open_time=ts - MINUTE_NS, open=close, high=close, low=close, close=close, volume=1.0)


def account(equity: float, ts: int = T, system: str = SYSTEM, balance: float | None = None) -> ev.AccountState:
    return ev.AccountState(**env(ts, system), balance=equity if balance is None else balance, equity=equity)


def position(qty: float, avg: float, ts: int = T, system: str = SYSTEM) -> ev.PositionChanged:
    return ev.PositionChanged(**env(ts, system), symbol="BTCUSDT", qty=qty, avg_price=avg)


def intent(qty: float, side: str = "buy", reduce_only: bool = False, ts: int = T) -> ev.OrderIntent:
    return ev.OrderIntent(**env(ts), order_id=f"o{next(_ids)}", venue="bybit", symbol="BTCUSDT", side=side,
                          order_type="market", qty=qty, reduce_only=reduce_only)


def command(state: str, ts: int = T, scope: str = "system") -> ev.RiskStateChanged:
    return ev.RiskStateChanged(**env(ts, SYSTEM if scope == "system" else "", run="command-abc"), scope=scope,
                               state=state, previous="active", reason="by hand")


def feed(g: RiskGuard, *events: ev.Event) -> list[ev.RiskStateChanged]:
    out: list = []
    for e in events:
        out += g.on_event(e)
    return out


def test_notional_cap_refuses_the_order_that_would_breach_it_and_nothing_else():
    g = make({"systems": {SYSTEM: {"max_position_notional": 1000}}})
    assert feed(g, bar(100.0), account(10_000)) == []
    assert g.admit(intent(9), T) == ""
    why = g.admit(intent(11), T)
    assert "notional 1,100.00 would exceed the cap 1,000.00" in why
    assert g.state == "active", "a refused order does not change the state"
    feed(g, position(9, 100.0))
    assert g.admit(intent(2), T) != "" and g.admit(intent(2, side="sell"), T) == ""  # selling shrinks it
    assert g.admit(intent(50, side="sell", reduce_only=True), T) == ""  # reduce-only is never capped


def test_leverage_cap_reads_the_scope_equity_and_the_account_wide_one_the_venue_wallet():
    g = make({"global": {"max_leverage": 3}, "systems": {SYSTEM: {"max_leverage": 2}}})
    feed(g, bar(100.0), account(1_000), account(10_000, system=""))
    assert g.admit(intent(19), T) == ""
    assert "system leverage 2.10 would exceed the cap 2" in g.admit(intent(21), T)
    # The account: 3x the wallet's 500 equity is 1,500 of notional, 1,000 of it held already (by any system).
    feed(g, account(500, system=""), position(10, 100.0, system=""))
    assert "global leverage 3.20 would exceed the cap 3" in g.admit(intent(6), T)
    assert g.admit(intent(5), T) == ""


def test_a_position_grown_past_its_cap_by_the_market_reduces_until_it_is_back_inside():
    g = make({"systems": {SYSTEM: {"max_position_notional": 1000}}})
    feed(g, bar(100.0), account(10_000), position(9, 100.0))
    [change] = feed(g, bar(120.0))
    assert (change.state, change.previous, change.scope) == ("reducing", "active", "system")
    assert "position notional 1,080.00 above the cap" in change.reason
    assert "reduce-only" in g.admit(intent(1), T)
    assert g.admit(intent(1, side="sell", reduce_only=True), T) == ""
    assert feed(g, bar(119.0)) == [], "said once"
    [back] = feed(g, position(8, 100.0))
    assert (back.state, back.reason) == ("active", "back inside the caps")


def test_order_rate_breach_halts_the_scope_until_a_person_resumes():
    g = make({"global": {"max_orders_per_minute": 3}})
    feed(g, bar(100.0), account(10_000))
    for i in range(3):
        assert g.admit(intent(1), T + i) == ""
    assert "order rate cap 3/min" in g.admit(intent(1), T + 3)
    [halt] = g.take_breach(T + 3, "cause-1")
    assert (halt.state, halt.scope, halt.system, halt.cause) == ("halted", "global", "", "cause-1")
    assert g.take_breach(T + 4, "cause-2") == ()
    later = T + 10 * MINUTE_NS
    assert "risk halted" in g.admit(intent(1), later), "the rate has calmed down; the halt stays"
    assert feed(g, bar(101.0, later)) == []
    [answer] = feed(g, command("active", later, scope="global"))
    assert (answer.state, answer.previous, answer.scope) == ("active", "halted", "global")
    assert g.admit(intent(1), later) == ""


def test_daily_loss_reduces_for_the_rest_of_the_utc_day():
    g = make({"systems": {SYSTEM: {"max_daily_loss": 0.05}}})
    feed(g, bar(100.0), account(1_000))
    assert feed(g, account(960, T + 60 * 10**9)) == []  # 4 % down
    [change] = feed(g, account(949, T + 120 * 10**9))
    assert change.state == "reducing" and "daily loss 5.1% reached the cap 5.0%" in change.reason
    assert feed(g, account(1_100, T + 180 * 10**9)) == [], "a recovery the same day does not lift it"
    assert g.state == "reducing"
    tomorrow = T - T % DAY_NS + DAY_NS + 60 * 10**9
    [lifted] = feed(g, account(1_100, tomorrow))
    assert (lifted.state, lifted.reason) == ("active", "new UTC day")
    # The new day's loss is measured from the new day's first equity.
    assert feed(g, account(1_050, tomorrow + 10**9)) == []
    [again] = feed(g, account(1_040, tomorrow + 2 * 10**9))
    assert again.state == "reducing"


def test_drawdown_from_peak_halts_and_a_resume_measures_from_there():
    g = make({"systems": {SYSTEM: {"max_drawdown": 0.1}}})
    feed(g, bar(100.0), account(1_000), account(1_200))
    assert feed(g, account(1_090)) == []  # 9.2 % below the peak
    [halt] = feed(g, account(1_079))
    assert halt.state == "halted" and "drawdown 10.1% from peak 1,200.00" in halt.reason
    assert feed(g, account(1_300)) == [] and g.state == "halted", "only a person lifts a drawdown halt"
    resume = command("active")
    [answer] = feed(g, resume)
    assert answer.state == "active" and answer.cause == resume.id
    assert feed(g, account(1_200)) == [], "the peak is the equity at the resume, 1,300: 7.7 % down"
    [halt2] = feed(g, account(1_160))
    assert halt2.state == "halted"


def test_a_drawdown_outranks_a_daily_loss_in_the_same_update():
    g = make({"systems": {SYSTEM: {"max_drawdown": 0.1, "max_daily_loss": 0.05}}})
    feed(g, bar(100.0), account(1_000))
    [change] = feed(g, account(850))
    assert change.state == "halted"


def test_kill_is_answered_every_time_and_names_its_command():
    g = make({})
    feed(g, bar(100.0), account(1_000))
    kill = command("halted")
    [first] = feed(g, kill)
    [second] = feed(g, command("halted"))
    assert (first.previous, first.state, first.cause) == ("active", "halted", kill.id)
    assert (second.previous, second.state) == ("halted", "halted")
    assert first.run == "daemon-run" and first.system == SYSTEM
    assert "risk halted" in g.admit(intent(1), T) and "risk halted" in g.admit(intent(1, reduce_only=True), T)


def test_resume_all_lifts_a_system_s_own_kill_too_and_says_so_for_each_scope():
    g = make({})
    feed(g, bar(100.0), account(1_000))
    feed(g, command("halted"))  # `tradebus kill s1`
    resume_all = command("active", scope="global")  # `tradebus resume --all`

    answers = feed(g, resume_all)

    assert [(a.scope, a.previous, a.state, a.cause) for a in answers] == [
        ("global", "active", "active", resume_all.id), ("system", "halted", "active", resume_all.id)]
    assert g.state == "active" and g.admit(intent(1), T) == ""
    assert feed(g, command("active", scope="global")) != [] and g.state == "active"  # answered, nothing to lift


def test_kill_all_then_resume_one_system_leaves_the_account_halt():
    g = make({})
    feed(g, bar(100.0), account(1_000))
    feed(g, command("halted", scope="global"))
    [answer] = feed(g, command("active"))
    assert answer.scope == "system" and g.state == "halted"  # the account's halt still holds


def test_a_stored_state_from_an_earlier_session_is_restored_silently_and_our_own_echo_ignored():
    g = make({})
    earlier = ev.RiskStateChanged(**env(T, run="daemon-earlier"), scope="system", state="halted", previous="active",
                                  reason="drawdown 12% from peak")
    assert feed(g, earlier) == []
    assert g.state == "halted" and "drawdown 12%" in g.reason()
    [resumed] = feed(g, command("active"))
    echo = ev.RiskStateChanged(**{**env(T), "run": "daemon-run"}, scope="system", state="halted", previous="active",
                               reason="ours")
    assert feed(g, echo) == [] and g.state == "active"
    assert resumed.state == "active"


@pytest.mark.parametrize("cap", ["max_position_notional", "max_leverage", "max_orders_per_minute", "max_daily_loss",
                                 "max_drawdown"])
def test_a_bad_cap_in_the_limits_file_names_the_file_and_the_field(tmp_path, cap):
    from tradebus.configs.limits import load_limits
    from tradebus.configs.schema import ConfigError

    path = tmp_path / "limits.yaml"
    path.write_text(f"systems:\n  {SYSTEM}:\n    {cap}: -1\n")
    with pytest.raises(ConfigError) as err:
        load_limits(path)
    assert "limits.yaml" in str(err.value) and cap in str(err.value) and "-1" in str(err.value)


def test_a_restored_daily_loss_holds_until_the_end_of_its_day_and_a_position_cap_until_the_position_shrinks():
    g = make({"systems": {SYSTEM: {"max_daily_loss": 0.05, "max_position_notional": 1000}}})
    stored = ev.RiskStateChanged(**env(T, run="daemon-earlier"), scope="system", state="reducing", previous="active",
                                 reason="daily loss 6.0% reached the cap 5.0%")
    assert feed(g, stored, bar(100.0, T + 10**9), account(1_000, T + 2 * 10**9)) == []
    assert g.state == "reducing", "a restart the same day does not lift it"
    tomorrow = T - T % DAY_NS + DAY_NS + 60 * 10**9
    [lifted] = feed(g, account(1_000, tomorrow))
    assert (lifted.state, lifted.reason) == ("active", "new UTC day")

    h = make({"systems": {SYSTEM: {"max_position_notional": 1000}}})
    over = ev.RiskStateChanged(**env(T, run="daemon-earlier"), scope="system", state="reducing", previous="active",
                               reason="position notional 1,200.00 above the cap 1,000.00")
    assert feed(h, over, bar(100.0), position(12, 100.0), account(10_000)) == [] and h.state == "reducing"
    [back] = feed(h, position(5, 100.0))
    assert (back.state, back.reason) == ("active", "back inside the caps")
