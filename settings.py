"""Where tradebus keeps its files, and the environment variables that move them.

- ``TRADEBUS_HOME``: the data home. Default ``$XDG_DATA_HOME/tradebus`` (``~/.local/share/tradebus``).
  It holds ``store/events.sqlite`` (the default event store), ``market.duckdb`` (candles, mark prices,
  funding) and ``nats/`` (the embedded server's JetStream storage, log and discovery file).
- ``TRADEBUS_NATS_URL``: a NATS server to use instead of starting or discovering an embedded one.
- ``TRADEBUS_LOG_FORMAT``: ``console`` (default) or ``json``; ``TRADEBUS_LOG_LEVEL``: default ``info``.
"""

from __future__ import annotations

import os
from pathlib import Path


def data_home() -> Path:
    """Return the data home, creating it if needed."""
    env = os.environ.get("TRADEBUS_HOME")
    if env:
        home = Path(env).expanduser()
    else:
        xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        home = Path(xdg) / "tradebus"
    home.mkdir(parents=True, exist_ok=True)
    return home


def default_store_path(name: str = "events") -> Path:
    """Return the default event store file (``demo`` and ``live``: the daemons' stores)."""
    return data_home() / "store" / f"{name}.sqlite"


def daemons_dir() -> Path:
    """Return the folder of the daemons' status files."""
    return data_home() / "daemons"


def nats_dir() -> Path:
    """Return the folder for the embedded NATS server's storage, log and discovery file."""
    path = data_home() / "nats"
    path.mkdir(parents=True, exist_ok=True)
    return path


def nats_url_from_env() -> str | None:
    """Return ``TRADEBUS_NATS_URL`` if set."""
    return os.environ.get("TRADEBUS_NATS_URL") or None
