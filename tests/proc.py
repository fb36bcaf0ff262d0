"""Helpers for tests that run real child processes (the CLI, writers, servers)."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path


class LineReader:
    """Read a child's stream line by line on a thread, so a test can wait with a timeout."""

    def __init__(self, stream) -> None:
        self._q: queue.Queue[str | None] = queue.Queue()
        self.lines: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for raw in iter(stream.readline, ""):
            self._q.put(raw.rstrip("\n"))
        self._q.put(None)

    def next(self, timeout: float = 10.0) -> str:
        """Return the next line; raise TimeoutError, or EOFError at end of stream."""
        try:
            line = self._q.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no line within {timeout}s; so far: {self.lines[-5:]}") from None
        if line is None:
            raise EOFError(f"stream ended; so far: {self.lines[-5:]}")
        self.lines.append(line)
        return line

    def drain(self) -> list[str]:
        """Every line read so far, including those nobody waited for yet, without blocking."""
        while True:
            try:
                line = self._q.get_nowait()
            except queue.Empty:
                return self.lines
            if line is None:
                self._q.put(None)  # the end stays visible to ``next``
                return self.lines
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 15.0) -> str:
        """Return the first line containing ``text``."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.next(max(0.01, deadline - time.monotonic()))
            if text in line:
                return line


def tradebus(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.Popen:
    """Start ``python -m tradebus ARGS`` with pipes for stdout and stderr."""
    return subprocess.Popen(
        [sys.executable, "-m", "tradebus", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})},
    )


def run_tradebus(*args: str, timeout: float = 60.0, env: dict | None = None,
                 cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m tradebus ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "tradebus", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})},
    )


def is_dead(pid: int) -> bool:
    """Return whether ``pid`` is gone or a zombie (dead, waiting for a reaper)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def wait_dead(pid: int, timeout: float = 10.0) -> bool:
    """Wait until ``pid`` is dead; return whether it died in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_dead(pid):
            return True
        time.sleep(0.05)
    return is_dead(pid)
