"""NATS bus (nats-py): the only module that imports ``nats``.

Events travel as the codec's msgpack bytes on the subjects of ``tradebus.bus.subjects``. Each
subscription feeds the same bounded ``Subscription`` the in-process bus uses, so overflow behaves the
same: the consumer gets ``SlowConsumerError``. nats-py's own per-subscription pending limit is set from the
bound (with room for one socket read's burst), and its slow-consumer callback fails our subscription
too, so no drop is ever silent.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlparse

import nats
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import SlowConsumerError as NatsSlowConsumerError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError

from tradebus.bus import codec, subjects
from tradebus.bus.base import DEFAULT_MAXSIZE, BusClosedError, BusError, SlowConsumerError, Subscription
from tradebus.bus.events import Event

log = structlog.get_logger("tradebus.bus.nats")
_NATS_PENDING_FLOOR = 8192


async def _reachable(url: str) -> None:
    """Open a TCP connection to the server and read its INFO greeting (raises OSError if nothing answers)."""
    parsed = urlparse(url if "://" in url else f"nats://{url}")
    reader, writer = await asyncio.open_connection(parsed.hostname or "127.0.0.1", parsed.port or 4222)
    try:
        if not (await reader.read(5)).startswith(b"INFO"):
            raise OSError(f"{url} is not a NATS server")
    finally:
        writer.close()


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
        self._pullers: list[Puller] = []
        self._closed = False
        self.decode_errors = 0

    @classmethod
    async def connect(cls, url: str, *, name: str = "tradebus", connect_timeout: float = 5.0) -> "NatsBus":
        """Connect to the NATS server at ``url``."""
        bus = cls()
        # nats-py retries a first connection that fails forever when reconnecting is allowed: try it once,
        # bounded, so a wrong URL is an error rather than a hang.
        try:
            await asyncio.wait_for(_reachable(url), connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise BusError(f"cannot connect to NATS at {url}: {exc!r}") from None
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

    @property
    def connected(self) -> bool:
        """Whether the connection is up now (it reconnects by itself after a server restart)."""
        return not self._closed and self._nc is not None and self._nc.is_connected

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

    @property
    def max_payload(self) -> int:
        """The largest message the server takes (bytes)."""
        return self._require().max_payload

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
        for puller in self._pullers:  # a pull subscription's inbox never drains by itself
            await puller.close()
        if nc is not None and not nc.is_closed:
            try:
                await nc.drain()
            except Exception as exc:  # a dead connection cannot drain; closing is all that is left
                log.warning("nats drain failed", error=repr(exc))
                try:
                    await nc.close()
                except Exception as exc:  # noqa: BLE001 - the server is gone: nothing is left to close
                    log.warning("nats close failed", error=repr(exc))
        for sub, _ in self._subs.values():
            sub.end()
        self._subs.clear()

    # -- JetStream: durable streams and work queues ---------------------------------------------

    async def ensure_stream(self, name: str, subjects: list[str], *, work_queue: bool = False,
                            max_age: float | None = None, max_bytes: int | None = None) -> None:
        """Create a file-backed JetStream stream, or bring an existing one to this configuration. A work
        queue keeps each message until one consumer acknowledges it; otherwise messages stay until
        ``max_age`` or until the stream holds ``max_bytes`` (the oldest go first)."""
        js = self._require().jetstream()
        config = StreamConfig(name=name, subjects=subjects, max_age=max_age, max_bytes=max_bytes,
                              storage=StorageType.FILE,
                              retention=RetentionPolicy.WORK_QUEUE if work_queue else RetentionPolicy.LIMITS)
        try:
            await js.add_stream(config)
        except BadRequestError:  # exists with another configuration
            await js.update_stream(config)

    async def publish_durable(self, event: Event, subject: str | None = None, *, timeout: float = 5.0) -> bool:
        """Publish into a stream and wait until the server has stored it. The event id is the message id,
        so publishing the same event again within the stream's duplicate window stores nothing (False).
        Raises ``BusError`` when no stream takes the subject or no ack came within ``timeout``: the
        event may or may not be stored, and publishing it again is safe."""
        js = self._require().jetstream()
        try:
            ack = await js.publish(subject or subjects.subject_for(event), codec.encode(event),
                                   timeout=timeout, headers={"Nats-Msg-Id": event.id})
        except (NatsTimeoutError, asyncio.TimeoutError, NoRespondersError) as exc:
            raise BusError(f"no stream acknowledged event {event.id}: {exc!r}") from None
        return not ack.duplicate

    async def pull(self, stream: str, durable: str, subject: str | None, *, ack_wait: float = 30.0,
                   max_deliver: int = -1, max_ack_pending: int = -1) -> "Puller":
        """A durable pull consumer: every process pulling with the same ``durable`` shares its messages,
        each delivered to one of them; one not acknowledged within ``ack_wait`` is delivered again.
        ``subject`` None: the whole stream."""
        js = self._require().jetstream()
        config = ConsumerConfig(durable_name=durable, filter_subject=subject, ack_policy=AckPolicy.EXPLICIT,
                                ack_wait=ack_wait, max_deliver=max_deliver, max_ack_pending=max_ack_pending)
        await js.add_consumer(stream, config)
        puller = Puller(self, await js.pull_subscribe_bind(durable=durable, stream=stream))
        self._pullers.append(puller)
        return puller

    async def lost_before_delivery(self, stream: str, durable: str) -> tuple[int, int] | None:
        """The stream sequences (first, last) that the stream's limits removed after ``durable`` last got
        a message and before it got the next one, or None. A new consumer has lost nothing (it never
        claimed what came before it); a filtered one may not have wanted all of them (an upper bound)."""
        js = self._require().jetstream()
        try:
            consumer = await js.consumer_info(stream, durable)
        except NotFoundError:
            return None
        first = (await js.stream_info(stream)).state.first_seq
        delivered = consumer.delivered.stream_seq if consumer.delivered else 0
        if delivered and delivered + 1 < first:
            return delivered + 1, first - 1
        return None

    async def __aenter__(self) -> "NatsBus":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class WorkItem:
    """A message pulled from a stream: its event (None with ``error`` when it is not one), and how to
    settle it."""

    def __init__(self, msg: Msg, event: Event | None, error: str = "") -> None:
        self._msg = msg
        self.event = event
        self.error = error
        self.subject = msg.subject
        self.data = msg.data
        self.deliveries = msg.metadata.num_delivered

    async def ack(self) -> None:
        """Done: never deliver it again (waits for the server's confirmation)."""
        await self._msg.ack_sync()

    async def ack_nowait(self) -> None:
        """Done, without waiting: a lost acknowledgement only means one more delivery."""
        await self._msg.ack()

    async def nak(self, delay: float | None = None) -> None:
        """Not done here: deliver it again (to anyone) now or after ``delay`` seconds."""
        await self._msg.nak(delay=delay)

    async def progress(self) -> None:
        """Still working on it: restart the redelivery clock."""
        await self._msg.in_progress()

    async def term(self) -> None:
        """It can never be done: do not deliver it again."""
        await self._msg.term()


class Puller:
    """Fetches from a durable pull consumer (``NatsBus.pull``)."""

    def __init__(self, bus: NatsBus, psub: object) -> None:
        self._bus = bus
        self._psub = psub

    async def close(self) -> None:
        try:
            await self._psub.unsubscribe()  # type: ignore[attr-defined]
        except Exception as exc:  # already gone with its connection
            log.debug("pull subscription close", error=repr(exc))

    async def fetch(self, n: int = 1, timeout: float = 1.0, *, keep_invalid: bool = False) -> list[WorkItem]:
        """Up to ``n`` messages, waiting at most ``timeout`` for the first; [] when there are none. A
        message that is not a valid event is terminated (it would fail every time) and logged, or with
        ``keep_invalid`` returned with its ``error`` for the caller to settle."""
        self._bus._require()
        try:
            msgs = await self._psub.fetch(n, timeout=timeout)  # type: ignore[attr-defined]
        except (NatsTimeoutError, asyncio.TimeoutError):
            # nats-py raises its own TimeoutError, and a bare asyncio one when the deadline runs out
            # between its two pull requests (seen under load: it ended a queued sweep's coordinator).
            return []
        except (NoRespondersError, ServiceUnavailableError) as exc:
            # A restarted server answers before its JetStream is back: wait and ask again.
            log.warning("stream not available yet", error=repr(exc))
            await asyncio.sleep(min(timeout, 0.5))
            return []
        out = []
        for msg in msgs:
            try:
                out.append(WorkItem(msg, codec.decode(msg.data)))
            except codec.EventDecodeError as exc:
                self._bus.decode_errors += 1
                if keep_invalid:
                    out.append(WorkItem(msg, None, str(exc)))
                    continue
                log.error("terminated a stream message that is not a valid event", subject=msg.subject, error=str(exc))
                await msg.term()
        return out
