"""One contract, two buses: every test here runs against the in-process bus and a real NATS server."""

from __future__ import annotations

import asyncio

import pytest

from tradebus.bus import subjects
from tradebus.bus.base import BusClosedError, SlowConsumerError
from tradebus.bus.subjects import SubjectError
from tradebus.tests.samples import one_of_each

TIMEOUT = 5.0


async def collect(sub, n: int) -> list:
    return [await sub.next(TIMEOUT) for _ in range(n)]


async def test_publish_reaches_subscriber_equal_and_in_order(bus, make):
    sub = await bus.subscribe("tb.md.>")
    sent = [make.bar(close=100.0 + i) for i in range(200)]

    for e in sent:
        await bus.publish(e)
    got = await collect(sub, len(sent))

    assert got == sent


async def test_wildcards_select_by_nats_rules(bus, make):
    btc_any = await bus.subscribe("tb.md.bar.bybit.BTCUSDT.*")
    five_min = await bus.subscribe("tb.md.*.*.*.5m")
    orders_only = await bus.subscribe("tb.ord.>")
    btc, eth = make.bar("BTCUSDT"), make.bar("ETHUSDT")
    sig = make.signal("sys1")

    for e in (btc, eth, sig):
        await bus.publish(e)
    await bus.flush()

    assert await collect(btc_any, 1) == [btc]
    assert await collect(five_min, 2) == [btc, eth]
    await asyncio.sleep(0.05)
    assert orders_only.pending == 0
    assert btc_any.pending == 0


async def test_every_subscriber_gets_each_event_once(bus, make):
    subs = [await bus.subscribe(subjects.ALL) for _ in range(3)]
    sent = [make.signal("sys1") for _ in range(50)]

    for e in sent:
        await bus.publish(e)

    for sub in subs:
        assert await collect(sub, 50) == sent
    await asyncio.sleep(0.05)
    assert all(s.pending == 0 for s in subs)


async def test_system_pattern_carries_only_that_system(bus, make):
    sub = await bus.subscribe(subjects.system_pattern("alpha"))
    mine, other = make.signal("alpha"), make.signal("beta")

    await bus.publish(other)
    await bus.publish(mine)

    assert await sub.next(TIMEOUT) == mine
    await asyncio.sleep(0.05)
    assert sub.pending == 0


async def test_explicit_subject_overrides_scheme(bus, make):
    sub = await bus.subscribe("tb.custom.>")
    e = make.bar()

    await bus.publish(e, subject="tb.custom.replay.1")

    assert await sub.next(TIMEOUT) == e


async def test_overflow_raises_slow_consumer_not_silent_drop(bus, make):
    sub = await bus.subscribe(subjects.ALL, maxsize=10)

    for i in range(100):
        await bus.publish(make.bar(close=float(i)))
    await bus.flush()
    await asyncio.sleep(0.2)

    with pytest.raises(SlowConsumerError):
        await sub.next(TIMEOUT)
    assert sub.failed


async def test_consumer_that_keeps_up_never_overflows(bus, make):
    sub = await bus.subscribe(subjects.ALL, maxsize=64)
    n = 5_000
    received: list[float] = []

    async def consume() -> None:
        async for e in sub:
            received.append(e.close)
            if len(received) == n:
                return

    task = asyncio.create_task(consume())
    for i in range(n):
        await bus.publish(make.bar(close=float(i)))
        if i % 32 == 0:
            await asyncio.sleep(0)  # a publisher that lets the loop breathe, as replay does per bar
    await asyncio.wait_for(task, 20)

    assert received == [float(i) for i in range(n)]


async def test_unsubscribed_pattern_gets_nothing_more(bus, make):
    sub = await bus.subscribe(subjects.ALL)
    first, second = make.bar(close=1.0), make.bar(close=2.0)
    await bus.publish(first)
    assert await sub.next(TIMEOUT) == first

    await sub.close()
    await bus.publish(second)
    await asyncio.sleep(0.1)

    with pytest.raises(StopAsyncIteration):
        await sub.next(TIMEOUT)


async def test_close_ends_iteration_after_queued_events(bus, make):
    sub = await bus.subscribe(subjects.ALL)
    sent = [make.bar(close=float(i)) for i in range(5)]
    for e in sent:
        await bus.publish(e)
    await bus.flush()
    await asyncio.sleep(0.1)

    await bus.close()
    got = [e async for e in sub]

    assert got == sent


async def test_publish_after_close_is_an_error(bus, make):
    await bus.close()

    with pytest.raises(BusClosedError):
        await bus.publish(make.bar())
    with pytest.raises(BusClosedError):
        await bus.subscribe(subjects.ALL)


@pytest.mark.parametrize("pattern", ["tb.>.md", "tb..md", "tb.md bar", ""])
async def test_bad_pattern_is_rejected(bus, pattern):
    with pytest.raises(SubjectError):
        await bus.subscribe(pattern)


async def test_events_of_every_type_round_trip(bus, make):
    sub = await bus.subscribe(subjects.ALL)
    sent = one_of_each()

    for e in sent:
        await bus.publish(e)

    assert await collect(sub, len(sent)) == sent
