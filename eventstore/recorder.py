"""The recorder: a durable JetStream consumer that appends what the bus carried to the event store.

At-least-once capture, exactly-once storage:
- every tradebus event except sweep work and results (``subjects.CAPTURED``) is kept by the server in the
  file-backed stream ``TB_EVENTS`` (fsynced per message, see ``natsserver.jetstream_config``), whether a
  recorder runs or not, for ``STREAM_MAX_AGE`` or until it holds ``STREAM_MAX_BYTES``;
- the recorder pulls through a durable consumer named after its store and pattern, appends each batch in
  one fsynced transaction (in a worker thread, so the loop never blocks on the disk), and acknowledges the
  batch's messages only after that commit. Killed in between, the server delivers them again after
  ``ack_wait`` and the store's idempotent append skips what it already holds;
- a message that is no event, or an event whose id is stored with other content, is quarantined in the
  store in the same transaction, acknowledged, and capture goes on;
- at start it asks the server whether the stream's limits removed messages it had not yet delivered, and
  records any such gap in the quarantine (it cannot be closed: the messages are gone).
"""

from __future__ import annotations

import asyncio
import hashlib
import os

import structlog

from tradebus.bus import subjects
from tradebus.bus.nats import NatsBus, Puller, WorkItem
from tradebus.eventstore.store import EventStore, Rejected

log = structlog.get_logger("tradebus.recorder")

EVENT_STREAM = "TB_EVENTS"
STREAM_MAX_AGE = 7 * 86_400.0  # a week for a stopped recorder to come back
STREAM_MAX_BYTES = 8 * 2**30


class CaptureError(ValueError):
    """A recorder asked for subjects the event stream does not carry."""


async def ensure_event_stream(bus: NatsBus) -> None:
    """Create the event stream (or bring it to this configuration): from then on the server keeps every
    event published on its subjects, by anyone, whether a recorder runs or not."""
    await bus.ensure_stream(EVENT_STREAM, list(subjects.CAPTURED), max_age=STREAM_MAX_AGE,
                            max_bytes=STREAM_MAX_BYTES)


def capture_filter(pattern: str) -> str | None:
    """The consumer's filter for ``pattern`` (None: the whole stream); refuse one outside the stream."""
    if pattern == subjects.ALL:
        return None
    tokens = pattern.split(".")
    if len(tokens) < 2 or tokens[0] != subjects.PREFIX or tokens[1] not in (*subjects.CAPTURED_ROOTS, "*"):
        raise CaptureError(f"pattern {pattern!r}: the recorder captures {', '.join(subjects.CAPTURED)}"
                           f" (or all of them, {subjects.ALL}); sweep work and results have their own streams")
    return pattern


def durable_name(store: EventStore, pattern: str) -> str:
    """One consumer per store and pattern: two stores recording the same stream each get everything."""
    key = f"{os.path.realpath(store.path)}\0{pattern}".encode()
    return f"recorder-{hashlib.sha256(key).hexdigest()[:16]}"


class Recorder:
    """Append every event of the event stream matching ``pattern`` to ``store``."""

    def __init__(
        self,
        bus: NatsBus,
        store: EventStore,
        *,
        pattern: str = subjects.ALL,
        max_batch: int = 2_000,
        ack_wait: float = 10.0,
    ) -> None:
        self._bus = bus
        self._store = store
        self._pattern = pattern
        self._filter = capture_filter(pattern)
        self._max_batch = max_batch
        self._ack_wait = ack_wait
        self.durable = durable_name(store, pattern)
        self._puller: Puller | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.received = 0
        self.appended = 0
        self.duplicates = 0
        self.quarantined = 0
        self.gap: tuple[int, int] | None = None
        self.last_seq = store.last_seq
        self._committed = asyncio.Condition()

    async def start(self) -> None:
        """Bind the durable consumer, report a gap it cannot close, and start appending in the background."""
        await ensure_event_stream(self._bus)
        self.gap = await self._bus.lost_before_delivery(EVENT_STREAM, self.durable)
        if self.gap is not None:
            first, last = self.gap
            reason = (f"stream {EVENT_STREAM} removed seq {first}..{last} (its age or size limit) before this"
                      " store recorded them; they cannot be recovered")
            log.error("capture gap", stream=EVENT_STREAM, first=first, last=last)
            await asyncio.to_thread(self._store.append, [], rejected=[
                Rejected(subject=EVENT_STREAM, payload=b"", reason=reason, event_id=f"gap:{first}-{last}")])
        self._puller = await self._bus.pull(EVENT_STREAM, self.durable, self._filter, ack_wait=self._ack_wait,
                                            max_ack_pending=4 * self._max_batch)
        self._task = asyncio.create_task(self._run(self._puller), name="recorder")

    async def _run(self, puller: Puller) -> None:
        try:
            while not self._stopping:
                items = await puller.fetch(self._max_batch, timeout=0.5, keep_invalid=True)
                if items:
                    await self._commit(items)
        finally:
            async with self._committed:  # wake sync() waiters so they see a failure
                self._committed.notify_all()

    async def _commit(self, items: list[WorkItem]) -> None:
        events = [i.event for i in items if i.event is not None]
        rejected = [Rejected(subject=i.subject, payload=i.data, reason=f"not a tradebus event: {i.error}")
                    for i in items if i.event is None]
        result = await asyncio.to_thread(self._store.append, events, quarantine=True, rejected=rejected)
        # Only now, with the batch fsynced, may the server forget it.
        for item in items:
            await item.ack_nowait()
        self.received += len(items)
        self.appended += result.appended
        self.duplicates += len(result.duplicates)
        self.quarantined += result.quarantined
        if result.duplicates:
            log.info("recorder skipped events already stored", count=len(result.duplicates))
        if result.quarantined:
            log.error("recorder quarantined what it could not store", count=result.quarantined)
        async with self._committed:
            self.last_seq = max(self.last_seq, result.last_seq)
            self._committed.notify_all()

    async def sync(self, received: int, timeout: float = 30.0) -> None:
        """Wait until at least ``received`` messages have been committed (or the recorder failed)."""

        async def _wait() -> None:
            async with self._committed:
                await self._committed.wait_for(lambda: self.received >= received or self._task_done())

        await asyncio.wait_for(_wait(), timeout)
        self._raise_if_failed()

    @property
    def task(self) -> asyncio.Task[None]:
        """The appending task (done only when the recorder stops or fails)."""
        assert self._task is not None, "start() first"
        return self._task

    def _task_done(self) -> bool:
        return self._task is not None and self._task.done()

    def _raise_if_failed(self) -> None:
        if self._task is not None and self._task.done() and not self._task.cancelled():
            exc = self._task.exception()
            if exc is not None:
                raise exc

    async def stop(self) -> None:
        """Commit the batch in hand, stop pulling, and surface any failure. What the server delivered
        and was not committed is delivered again to the next recorder."""
        self._stopping = True
        try:
            if self._task is not None:
                await self._task
            await self._bus.flush()  # the last acknowledgements reach the server before we go
        finally:
            if self._puller is not None:
                await self._puller.close()
