"""The kill switch's delivery: a command goes over NATS to the running daemons, which answer it; when none
does, it is recorded in the daemons' stores, where each reads it at its next start. The command line only
says what happened."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

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
            except TimeoutError:
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


# --- daemons the lifecycle starts and stops ------------------------------------------------------------


def alive(folder: Path, system: str, mode: str) -> dict | None:
    """The status of the running daemon trading ``system`` in ``mode`` on this machine, if one is."""
    for row in statuses(folder):
        if row["system"] == system and row["mode"] == mode and row["alive"]:
            return row
    return None


def start_daemon(mode: str, config_path: Path, store: Path, log_path: Path, limits: Path | None = None) -> int:
    """Start ``tradebus MODE CONFIG`` as its own process (its own session: it outlives the command that
    started it, as a daemon does); returns its pid. The venue's URLs come from the environment."""
    args = [sys.executable, "-m", "tradebus", "--log-format", "json", mode, str(config_path), "--store", str(store)]
    if limits is not None:
        args += ["--limits", str(limits)]
    if mode == "live":
        args += ["--confirm-live", config_path.stem]  # a person's approval is the confirmation (the lifecycle's gate)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return proc.pid


def wait_for(cond: Callable[[], bool], timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a child of ours that exited is a zombie until reaped
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def stop_daemon(pid: int, timeout: float = 30.0) -> bool:
    """SIGTERM (the daemon drains: requests in flight finish, the run's end is recorded); whether it exited."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    return wait_for(lambda: not pid_alive(pid), timeout)


async def publish_all(events: list[ev.Event], url: str) -> None:
    """Publish lifecycle events to the daemons (each stores what it takes; the lifecycle's store has them)."""
    async with await NatsBus.connect(url, name="tradebus-lifecycle") as bus:
        for e in events:
            await bus.publish(e)
        await bus.flush()
