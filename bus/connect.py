"""Open a bus by kind: in-process, or NATS at a URL, a discovered server, or an embedded one."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Literal

from tradebus import settings
from tradebus.bus.base import Bus
from tradebus.bus.local import LocalBus
from tradebus.bus.nats import NatsBus
from tradebus.bus.natsserver import NatsServerError, discover, start_server

BusKind = Literal["local", "nats"]


def find_nats_url(url: str | None = None, nats_home: Path | None = None) -> str | None:
    """Return the NATS URL to use: explicit, then ``TRADEBUS_NATS_URL``, then an announced server."""
    return url or settings.nats_url_from_env() or discover(nats_home or settings.nats_dir())


def require_nats_url(url: str | None = None, nats_home: Path | None = None) -> str:
    """Like ``find_nats_url`` but fail with what to do when nothing is running."""
    found = find_nats_url(url, nats_home)
    if not found:
        raise NatsServerError(
            "no NATS server to connect to: start one with `tradebus nats` (or a daemon), "
            "or pass --nats-url / set TRADEBUS_NATS_URL"
        )
    return found


@asynccontextmanager
async def open_bus(
    kind: BusKind = "nats",
    *,
    url: str | None = None,
    nats_home: Path | None = None,
    name: str = "tradebus",
) -> AsyncIterator[Bus]:
    """Yield a connected bus; an embedded nats-server started for it is stopped on exit."""
    if kind == "local":
        async with LocalBus() as local:
            yield local
        return
    server = None
    found = find_nats_url(url, nats_home)
    if not found:
        server = await start_server(nats_home or settings.nats_dir(), announce=True)
        found = server.url
    try:
        bus = await NatsBus.connect(found, name=name)
        try:
            yield bus
        finally:
            await bus.close()
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)
