"""NATS bus (nats-py): the only module that imports ``nats``.

Events travel as the codec's msgpack bytes on the subjects of ``tradebus.bus.subjects``. Each
subscription feeds the same bounded ``Subscription`` the in-process bus uses, so overflow behaves the
same: the consumer gets ``SlowConsumerError``. nats-py's own per-subscription pending limit is set from the
bound (with room for one socket read's burst), and its slow-consumer callback fails our subscription
too, so no drop is ever silent.
"""

from __future__ import annotations

import asyncio

import nats
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import SlowConsumerError as NatsSlowConsumerError

from tradebus.bus import codec, subjects
from tradebus.bus.base import DEFAULT_MAXSIZE, BusClosedError, BusError, SlowConsumerError, Subscription
from tradebus.bus.events import Event

log = structlog.get_logger("tradebus.bus.nats")
_NATS_PENDING_FLOOR = 8192


async def _round_trip(nc: Client, timeout: float = 10.0) -> None:
    """Return once the server has processed every command this connection issued so far.

    nats-py's ``flush()`` writes its PING straight to the socket, ahead of the SUB/PUB commands still
    queued for its flusher task, so its PONG alone proves nothing about them: a subscription "flushed"
    that way has been seen to miss every message another connection published right after. Handing the
    queue to the socket first puts the PING behind them.
    """
    await nc._flush_pending(force_flush=True)
    await nc.flush(timeout=timeout)


class NatsBus:
    """The NATS implementation of ``Bus``. Create it with ``await NatsBus.connect(url)``."""

    def __init__(self) -> None:
        self._nc: Client | None = None
        self._subs: dict[int, tuple[Subscription, object]] = {}
        self._closed = False
        self.decode_errors = 0

    @classmethod
    async def connect(cls, url: str, *, name: str = "tradebus", connect_timeout: float = 5.0) -> "NatsBus":
        """Connect to the NATS server at ``url``."""
        bus = cls()
        try:
            bus._nc = await nats.connect(
                servers=[url],
                name=name,
                connect_timeout=connect_timeout,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                error_cb=bus._on_error,
                disconnected_cb=bus._on_disconnected,
                reconnected_cb=bus._on_reconnected,
            )
        except Exception as exc:  # nats raises several unrelated types for "cannot connect"
            raise BusError(f"cannot connect to NATS at {url}: {exc!r}") from exc
        return bus

    @property
    def url(self) -> str:
        nc = self._require()
        return str(nc.connected_url.geturl()) if nc.connected_url else ""

    def _require(self) -> Client:
        if self._closed or self._nc is None:
            raise BusClosedError("the NATS bus is closed")
        return self._nc

    async def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, NatsSlowConsumerError):
            entry = self._subs.get(exc.sid)
            if entry is not None:
                entry[0].fail(SlowConsumerError(f"subscription {entry[0].pattern!r}: NATS slow consumer"))
            return
        log.warning("nats error", error=repr(exc))

    async def _on_disconnected(self) -> None:
        if not self._closed:
            log.warning("nats disconnected")

    async def _on_reconnected(self) -> None:
        log.info("nats reconnected", url=self.url)

    async def publish(self, event: Event, subject: str | None = None) -> None:
        nc = self._require()
        await nc.publish(subject or subjects.subject_for(event), codec.encode(event))

    async def subscribe(self, pattern: str, *, maxsize: int = DEFAULT_MAXSIZE) -> Subscription:
        nc = self._require()
        subjects.validate_pattern(pattern)
        sub = Subscription(pattern, maxsize, self._remove)

        async def on_msg(msg: Msg) -> None:
            try:
                event = codec.decode(msg.data)
            except codec.EventDecodeError as exc:
                self.decode_errors += 1
                log.error("dropped a message that is not a valid event", subject=msg.subject, error=str(exc))
                return
            sub.push(event)
            if sub.pending >= sub.high_water:
                # Let the consumer catch up before taking more from nats-py's queue (same courtesy
                # yield as the in-process bus); a consumer that never reads still overflows.
                await asyncio.sleep(0)

        # nats-py's own queue absorbs one socket read's burst; ours is the bound the consumer sees.
        limit = max(4 * maxsize, _NATS_PENDING_FLOOR)
        nsub = await nc.subscribe(pattern, cb=on_msg, pending_msgs_limit=limit, pending_bytes_limit=0)
        self._subs[nsub._id] = (sub, nsub)
        # Make sure the server has registered the interest before anyone publishes.
        await _round_trip(nc)
        return sub

    async def _remove(self, sub: Subscription) -> None:
        for sid, (s, nsub) in list(self._subs.items()):
            if s is sub:
                del self._subs[sid]
                if self._nc is not None and self._nc.is_connected:
                    await nsub.unsubscribe()

    async def flush(self, timeout: float = 10.0) -> None:
        await _round_trip(self._require(), timeout)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        nc = self._nc
        if nc is not None and not nc.is_closed:
            try:
                await nc.drain()
            except Exception as exc:  # a dead connection cannot drain; closing is all that is left
                log.warning("nats drain failed", error=repr(exc))
                await nc.close()
        for sub, _ in self._subs.values():
            sub.end()
        self._subs.clear()

    async def __aenter__(self) -> "NatsBus":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
