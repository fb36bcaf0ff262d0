"""The demo daemon end to end against the fake Bybit: the replay's components trading over real pybit,
recorded to the store, reconciled with the venue after a stream drop, and guarded by risk caps."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal

import pytest

from tradebus.configs.limits import Limits
from tradebus.engine.guard import command
from tradebus.eventstore import projections

from tradebus.live.fake_bybit import API_KEY
from .livekit import (SYMBOL, check_store_equals_venue, creates, nats_bus, running,
                      settings_for, stored_state, trade, venue_qty)


async def test_demo_daemon_trades_pushed_bars_and_store_matches_venue(venue, daemon_bus, tmp_path):
    async with running(settings_for(venue, daemon_bus, tmp_path)) as r:
        for _ in range(24):
            venue.push_bar()
            await r.settle(0.15)
        await r.settle()
        d = r.daemon
        n_sent = len(creates(venue))
        assert n_sent >= 2, "the wave must make the strategy trade"
        assert d.portfolio.positions[SYMBOL].qty == pytest.approx(venue_qty(venue))
    state = stored_state(tmp_path / "demo.sqlite")
    links = [b["orderLinkId"] for b in creates(venue)]
    assert len(links) == len(set(links)) == n_sent
    assert state.positions["livetest"][SYMBOL].qty == pytest.approx(venue_qty(venue))
    assert len(state.exec_ids) == len(venue.state.executions)
    assert not state.open_orders


async def test_private_stream_drop_during_fills_is_backfilled_from_rest(venue, daemon_bus, tmp_path):
    async with running(settings_for(venue, daemon_bus, tmp_path)) as r:
        await trade(r, venue, 4)
        venue.state.drop_private = 10_000  # the stream goes quiet: fills happen, nobody hears of them
        before = len(venue.state.executions)
        await trade(r, venue, 10)
        assert len(venue.state.executions) > before, "fills must happen while the stream is deaf"
        venue.state.drop_private = 0
        assert venue.ws.close_sockets(private=True) >= 1
        await r.until(lambda: r.daemon.portfolio.positions[SYMBOL].qty == pytest.approx(venue_qty(venue)),
                      what="reconcile after reconnect")
        await r.settle()
    check_store_equals_venue(venue, tmp_path / "demo.sqlite")


async def test_duplicate_and_out_of_order_executions_count_once(venue, daemon_bus, tmp_path):
    venue.state.exec_before_order = True
    venue.state.duplicate_filled = True
    venue.state.partial_fills = 3
    async with running(settings_for(venue, daemon_bus, tmp_path)) as r:
        await trade(r, venue, 16)
        assert r.daemon.venue.duplicates >= 3  # every repeated execution push was recognised
    state = check_store_equals_venue(venue, tmp_path / "demo.sqlite")
    assert len(venue.state.executions) >= 6 and state.by_type["fill"] == len(venue.state.executions)
    assert state.by_type["order.accepted"] == len(creates(venue))


async def test_create_timeout_makes_exactly_one_order(venue, daemon_bus, tmp_path):
    venue.state.ack_delay = 1.6  # the order is made at once; its answer comes after the client gave up
    async with running(settings_for(venue, daemon_bus, tmp_path)) as r:
        await trade(r, venue, 12, pause=0.2)
        await r.until(lambda: r.daemon.requests.empty() and not r.daemon.in_flight, timeout=30,
                      what="requests in flight")
        await r.settle(1.0)
    sent = creates(venue)
    assert sent, "the strategy must have traded"
    links = [b["orderLinkId"] for b in sent]
    assert len(links) == len(set(links)), "no create was sent twice"
    assert sorted(set(links)) == sorted(o["orderLinkId"] for o in venue.state.orders.values())
    state = check_store_equals_venue(venue, tmp_path / "demo.sqlite")
    assert state.by_type.get("order.rejected", 0) == 0


async def test_rate_limited_create_waits_for_the_reset_and_is_sent_once(venue, daemon_bus, tmp_path):
    venue.state.fail_paths = {"/v5/order/create"}
    venue.state.fail_next = [(200, 10006, "Too many visits!")]
    venue.state.limit_reset_ms = 700
    async with running(settings_for(venue, daemon_bus, tmp_path)) as r:
        await trade(r, venue, 12)
    assert not venue.state.fail_next, "the 10006 was served"
    assert len(creates(venue)) == len(venue.state.orders) + 1  # one refused by the limit, then sent again
    check_store_equals_venue(venue, tmp_path / "demo.sqlite")


async def test_risk_caps_refuse_orders_and_rate_breach_halts(venue, daemon_bus, tmp_path):
    limits = Limits.model_validate({"global": {"max_orders_per_minute": 2},
                                    "systems": {"livetest": {"max_position_notional": 100_000}}})
    async with running(settings_for(venue, daemon_bus, tmp_path, limits=limits)) as r:
        await trade(r, venue, 24)
        assert r.daemon.guard.state == "halted"
    state = check_store_equals_venue(venue, tmp_path / "demo.sqlite")
    assert len(venue.state.orders) == 2, "the third order in a minute never leaves"
    assert state.risk[projections.GLOBAL] == "halted" and state.by_type["risk"] == 1  # the account-wide cap
    assert venue.state.count("/v5/order/cancel-all") == 1  # halting cancels what rests


async def test_notional_cap_refuses_the_entry_without_sending_it(venue, daemon_bus, tmp_path):
    limits = Limits.model_validate({"systems": {"livetest": {"max_position_notional": 1000}}})
    async with running(settings_for(venue, daemon_bus, tmp_path, limits=limits)) as r:
        await trade(r, venue, 12)
    state = stored_state(tmp_path / "demo.sqlite")
    assert not creates(venue) and state.by_type["order.rejected"] >= 1 and state.risk.get("livetest") is None


async def test_kill_command_over_nats_halts_and_resume_lifts(venue, daemon_bus, tmp_path):
    async with running(settings_for(venue, daemon_bus, tmp_path)) as r:
        await trade(r, venue, 6)
        sent = len(creates(venue))
        for state in ("halted", "active"):
            await daemon_bus.publish(command("livetest", state, "test"))
            await r.until(lambda: r.daemon.guard.state == state, what=f"guard {state}")
            if state == "halted":
                await trade(r, venue, 6)
                assert len(creates(venue)) == sent, "no order while halted"
        await trade(r, venue, 8)
        assert len(creates(venue)) > sent, "trading resumed"
    check_store_equals_venue(venue, tmp_path / "demo.sqlite")


def test_live_never_starts_without_the_typed_confirmation_and_a_limits_file(tmp_path):
    from typer.testing import CliRunner

    from tradebus.cli import app

    cfg = tmp_path / "s.yaml"
    cfg.write_text("system: s1\nsymbol: BTCUSDT\ntimeframe: 5m\nwindows: {hygiene: {preset: first_70pct}, "
                   "test: {preset: last_30pct}}\nstrategy: {id: sma_cross}\n")
    runner = CliRunner()
    res = runner.invoke(app, ["live", str(cfg)])
    assert res.exit_code == 2 and "--confirm-live s1" in res.output
    res = runner.invoke(app, ["live", str(cfg), "--confirm-live", "s1"])
    assert res.exit_code == 2 and "--limits" in res.output
    bad = tmp_path / "limits.yaml"
    bad.write_text("global: {max_leverage: -1}\n")
    res = runner.invoke(app, ["live", str(cfg), "--confirm-live", "s1", "--limits", str(bad)],
                        env={"TRADEBUS_LIVE_API_KEY": "k" * 20, "TRADEBUS_LIVE_API_SECRET": "s" * 30})
    assert res.exit_code == 1 and "limits.yaml" in res.output and "max_leverage" in res.output
    assert "s" * 30 not in res.output


async def test_refused_websocket_auth_fails_the_connect_instead_of_hanging(venue):
    from tradebus.live.bybit import AuthRefused, Credentials, VenueClock, private_stream

    got: list = []
    stream = private_stream(Credentials(API_KEY, "not-the-secret-at-all"), asyncio.get_running_loop(), got.append,
                            url=venue.ws.private_url, clock=VenueClock())
    t0 = time.monotonic()
    with pytest.raises(AuthRefused, match="refused the API key"):
        await asyncio.to_thread(stream.connect)
    assert time.monotonic() - t0 < 30
    auths = [f for f in venue.state.frames_in if f.get("op") == "auth"]
    assert len(auths) == 3 and not venue.ws.connections(private=True)  # three tries, none authorised


async def test_unexplained_position_at_start_fails_closed_until_a_person_resumes(venue, daemon_bus, tmp_path):
    from decimal import Decimal

    from tradebus.live.daemon import EXIT_FAIL_CLOSED, Daemon

    from .proc import run_tradebus

    store = tmp_path / "demo.sqlite"
    async with running(settings_for(venue, daemon_bus, tmp_path)) as r:
        await trade(r, venue, 8)
    sent = len(creates(venue))
    assert sent >= 1
    # Someone trades by hand in the account: the position moves with no execution the daemon can list.
    venue.state.positions[SYMBOL].size += Decimal("0.05")
    daemon = Daemon(settings_for(venue, daemon_bus, tmp_path))
    assert await asyncio.wait_for(daemon.run(asyncio.Event()), 60) == EXIT_FAIL_CLOSED
    assert len(creates(venue)) == sent, "nothing is sent by a daemon that failed closed"
    state = stored_state(store)
    assert state.risk["livetest"] == "halted"
    assert "venue's is" in daemon._failed

    # The person fixes the account and resumes; the next start trades again.
    venue.state.positions[SYMBOL].size -= Decimal("0.05")
    resumed = run_tradebus("resume", "livetest", "--store", str(store))
    assert resumed.returncode == 0 and "recorded in" in resumed.stdout, resumed.stdout + resumed.stderr
    async with running(settings_for(venue, daemon_bus, tmp_path)) as r:
        assert r.daemon.guard.state == "active"
        await trade(r, venue, 10)
        assert len(creates(venue)) > sent
    check_store_equals_venue(venue, store)


async def test_account_drawdown_halts_cancels_what_rests_and_survives_a_restart(venue, daemon_bus, tmp_path):
    limits = Limits.model_validate({"global": {"max_drawdown": 0.1}})
    async with running(settings_for(venue, daemon_bus, tmp_path, limits=limits)) as r:
        await trade(r, venue, 6)
        venue.state.transfer(-2_000)  # a fifth of the account gone (a loss in another system, say)
        await r.until(lambda: r.daemon.guard.state == "halted", what="the drawdown halt")
        await r.settle()
        sent = len(creates(venue))
        await trade(r, venue, 8)
        assert len(creates(venue)) == sent, "no order while halted"
        assert venue.state.count("/v5/order/cancel-all") == 1
    async with running(settings_for(venue, daemon_bus, tmp_path, limits=limits)) as r:
        assert r.daemon.guard.state == "halted" and "drawdown" in r.daemon.guard.reason()
        await trade(r, venue, 6)
        assert len(creates(venue)) == sent
    state = check_store_equals_venue(venue, tmp_path / "demo.sqlite")
    assert state.risk[projections.GLOBAL] == "halted"


async def test_nats_server_crash_and_restart_loses_nothing_and_commands_reach_the_daemon_after(venue, tmp_path):
    from tradebus.bus.natsserver import start_server

    server = await start_server(tmp_path / "nats")
    port = int(server.url.rsplit(":", 1)[1])
    bus = await nats_bus(server)
    watcher = await nats_bus(server)
    try:
        async with running(settings_for(venue, bus, tmp_path)) as r:
            await trade(r, venue, 4)
            server.process.kill()  # a crash, not a clean stop
            server.stop()
            await r.until(lambda: not bus.connected, what="the daemon to notice")
            stored, sent = r.daemon.stored, len(creates(venue))
            await trade(r, venue, 10)
            assert r.daemon.stored > stored and len(creates(venue)) > sent, "trading and recording go on without NATS"
            assert json.loads(r.daemon.status_path().read_text())["nats_connected"] is False

            server = await start_server(tmp_path / "nats", port=port)
            await r.until(lambda: bus.connected and watcher.connected, timeout=30, what="both clients to reconnect")
            answers = await watcher.subscribe("tb.risk.>")
            await watcher.flush()
            kill = command("livetest", "halted", "test")
            await watcher.publish(kill)
            await r.until(lambda: r.daemon.guard.state == "halted", what="the kill sent after the restart")
            while (answer := await answers.next(10)).cause != kill.id:
                pass
            assert answer.state == "halted" and answer.run == r.daemon.run_id
    finally:
        await watcher.close()
        await bus.close()
        server.stop()
    check_store_equals_venue(venue, tmp_path / "demo.sqlite")


async def test_a_position_the_executions_cannot_explain_after_a_reconnect_halts_but_keeps_running(
        venue, daemon_bus, tmp_path):
    from decimal import Decimal

    async with running(settings_for(venue, daemon_bus, tmp_path)) as r:
        await trade(r, venue, 8)
        assert creates(venue)
        venue.state.positions[SYMBOL].size += Decimal("0.05")  # a trade by hand, while the stream was down
        assert venue.ws.close_sockets(private=True) >= 1
        await r.until(lambda: r.daemon.guard.state == "halted", what="the halt after the reconnect")
        await r.settle()
        sent = len(creates(venue))
        await trade(r, venue, 6)
        assert len(creates(venue)) == sent, "no order while halted"
        assert not r.task.done(), "it keeps running: status, tail and resume still work"
    state = stored_state(tmp_path / "demo.sqlite")
    assert state.risk["livetest"] == "halted"
    assert venue.state.count("/v5/order/cancel-all") == 1


@pytest.mark.parametrize("stop", [0.05, 0.006], ids=["protection-rests", "protection-fires"])
async def test_protective_orders_rest_at_the_venue_and_go_when_their_position_does(venue, daemon_bus, tmp_path, stop):
    from .livekit import CONFIG

    config = {**CONFIG, "risk": {"sizing": "fixed_fraction", "fraction": 0.5, "max_leverage": 1,
                                 "stop": {"kind": "percent", "percent": stop, "take_profit_rr": 2.0}}}
    async with running(settings_for(venue, daemon_bus, tmp_path, config=config)) as r:
        await trade(r, venue, 24)
        await r.until(lambda: r.daemon.requests.empty() and not r.daemon.in_flight, what="requests")
        await r.settle()
    st = venue.state
    protective = [b for b in creates(venue) if b.get("reduceOnly") and b["orderType"] == "Limit" or b.get("triggerPrice")]
    assert len(protective) >= 4, "every entry is protected by a stop and a target"
    assert st.count("/v5/order/cancel") >= 2, "a closed position's stop and target were cancelled"
    resting = [o for o in st.orders.values() if o["reduceOnly"] and o["orderStatus"] in ("New", "Untriggered")]
    held = venue_qty(venue)
    if held == 0:
        assert resting == []
    else:
        assert len(resting) == 2 and {o["side"] for o in resting} == {"Sell" if held > 0 else "Buy"}
        assert all(Decimal(o["qty"]) == abs(Decimal(str(held))) for o in resting), "they protect this position"
    if stop == 0.006:
        links = {o["orderLinkId"]: o["orderStatus"] for o in st.orders.values()}
        fired = [k for k, v in links.items() if k.endswith(("-sl", "-tp")) and v == "Filled"]
        assert fired, "a stop or a target filled"
        for link in fired:  # and the other one of the pair went with the position
            sibling = link[:-3] + ("-tp" if link.endswith("-sl") else "-sl")
            assert links[sibling] in ("Cancelled", "Deactivated"), (link, links[sibling])
    check_store_equals_venue(venue, tmp_path / "demo.sqlite")


async def test_an_entry_whose_fill_the_last_session_never_heard_of_is_protected_after_the_restart(
        venue, daemon_bus, tmp_path):
    from .livekit import CONFIG

    config = {**CONFIG, "risk": {"sizing": "fixed_fraction", "fraction": 0.5, "max_leverage": 1,
                                 "stop": {"kind": "percent", "percent": 0.05}}}
    store = tmp_path / "demo.sqlite"
    async with running(settings_for(venue, daemon_bus, tmp_path, config=config)) as r:
        venue.state.drop_private = 10**6  # every fill happens unheard: the session ends not knowing of them
        while not creates(venue):
            await trade(r, venue, 1)
        await r.until(lambda: r.daemon.requests.empty() and not r.daemon.in_flight, what="the entry sent")
    entry = creates(venue)[0]
    before = stored_state(store).positions.get("livetest", {}).get(SYMBOL)
    assert entry["orderLinkId"].endswith("-entry") and (before is None or before.qty == 0)
    venue.state.drop_private = 0
    async with running(settings_for(venue, daemon_bus, tmp_path, config=config)) as r:
        await r.until(lambda: r.daemon.requests.empty() and not r.daemon.in_flight, what="the protection sent")
        await r.settle()
    held = venue_qty(venue)
    stops = [o for o in venue.state.orders.values() if o["orderLinkId"].endswith("-sl")]
    assert held != 0 and len(stops) == 1, "the restart learnt of the fill and protected the position"
    stop = stops[0]
    fill_price = float(venue.state.executions[0]["execPrice"])
    assert stop["orderStatus"] == "Untriggered" and Decimal(stop["qty"]) == abs(Decimal(str(held)))
    assert float(stop["triggerPrice"]) == pytest.approx(fill_price * (0.95 if held > 0 else 1.05), abs=0.1)
    check_store_equals_venue(venue, store)
