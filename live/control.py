"""The kill switch's delivery: a command goes over NATS to the running daemons, which answer it; when none
does, it is recorded in the daemons' stores, where each reads it at its next start. The command line only
says what happened."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Callable

from tradebus.bus import events as ev
from tradebus.bus import subjects
from tradebus.bus.nats import NatsBus
from tradebus.eventstore.store import EventStore, writer_pid


async def send(cmd: ev.RiskStateChanged, url: str, wait: float, answered: Callable[[ev.RiskStateChanged], None]) -> bool:
    """Publish ``cmd`` and hand each guard's answer to ``answered`` for up to ``wait`` seconds (one more
    second after the first answer, for other daemons and a system's own scope); whether any answered."""
    async with await NatsBus.connect(url, name="tradebus-command") as bus:
        sub = await bus.subscribe(subjects.risk(">"))
        await bus.publish(cmd)
        await bus.flush()
        deadline = time.monotonic() + wait
        any_answer = False
        while time.monotonic() < deadline:
            try:
                answer = await sub.next(max(0.05, deadline - time.monotonic()))
            except (asyncio.TimeoutError, TimeoutError):
                break
            if answer.cause == cmd.id:  # every guard answers every command, changed or not
                answered(answer)
                if not any_answer:
                    any_answer, deadline = True, min(deadline, time.monotonic() + 1.0)
        return any_answer


def record(cmd: ev.RiskStateChanged, paths: list[Path]) -> None:
    """Append ``cmd`` to each store (a StoreError names the one a live writer holds)."""
    for path in paths:
        with EventStore.open_writer(path) as st:
            st.append([cmd])


def statuses(folder: Path) -> list[dict]:
    """The daemons' status files, each with ``alive`` (the process that wrote it still holds its store: a
    reused pid does not count) and ``heartbeat_age_s``; a running status with no process reads dead."""
    rows = []
    for path in sorted(folder.glob("*.json")) if folder.exists() else []:
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        alive = info.get("status") == "running" and writer_pid(Path(info.get("store", ""))) == info.get("pid")
        info["alive"] = alive
        info["heartbeat_age_s"] = round((time.time_ns() - int(info.get("heartbeat_ns", 0))) / 1e9, 1)
        if info.get("status") == "running" and not alive:
            info["status"] = "dead (no process)"
        rows.append(info)
    return rows
