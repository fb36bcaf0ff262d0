"""The crash tests' writer child: a seeded event stream (``Stream``) and a child process appending it
(``Writer``), shared by ``test_store_crash`` and ``test_store_concurrent``."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

# The stream generator runs in the child (as source text) and in the test (exec'd below).
STREAM_SOURCE = r'''
import random
import zlib

from tradebus.bus.events import BarClosed, Fill
from tradebus.bus.ids import IdGenerator

T0 = 1_700_000_000_000_000_000  # ns; event k is at T0 + k ms, so each event starts a new id millisecond
MAX_BATCH = 500


class Stream:
    """Events 0, 1, 2, ... and batch boundaries 0 = b0 < b1 < ... (batch j is events[b_j:b_j+1])."""

    def __init__(self, seed):
        self.seed = seed
        self._ids = IdGenerator(seed)
        self._sizes = random.Random(seed + "/batch")
        self.base = 0  # index of self._events[0]
        self._events = []
        self.bounds = [0]

    def skip_to(self, k):
        """Start generating at event k (ids only depend on the seed and the millisecond)."""
        assert not self._events
        self.base = k

    def bound(self, j):
        while len(self.bounds) <= j:
            self.bounds.append(self.bounds[-1] + self._sizes.randint(1, MAX_BATCH))
        return self.bounds[j]

    def bound_index(self, n):
        """Return j with bounds[j] == n, or None if n is not a batch boundary."""
        j = 0
        while self.bound(j) < n:
            j += 1
        return j if self.bounds[j] == n else None

    def events(self, lo, hi):
        assert lo >= self.base, (lo, self.base)
        while self.base + len(self._events) < hi:
            self._events.append(self._make(self.base + len(self._events)))
        return self._events[lo - self.base : hi - self.base]

    def _make(self, k):
        ts = T0 + k * 1_000_000
        eid = self._ids.next(ts)
        if zlib.crc32(f"{self.seed}:{k}".encode()) % 10 < 3:
            return Fill(
                id=eid, ts_event=ts, ts_init=ts, system="sys-a", run=self.seed,
                order_id=f"o{k}", exec_id=f"x{k}", symbol="BTCUSDT", side="buy" if k % 2 else "sell",
                price=30_000.0 + k % 97, qty=0.001 * (1 + k % 5), fee=0.01, liquidity="taker",
            )
        return BarClosed(
            id=eid, ts_event=ts, ts_init=ts, system="sys-a", run=self.seed, venue="bybit",
            market="linear", symbol="BTCUSDT", timeframe="1m", open_time=ts - 60_000_000_000,
            open=1.0 + k, high=2.0 + k, low=0.5 + k, close=1.5 + k, volume=float(k % 1000),
        )
'''

# argv: path seed pause_s max_batches (0 = forever). Prints READY / RESUME / ACK / IDLE lines.
WRITER_MAIN = r'''
import os
import sys
import time

from tradebus.eventstore.store import EventStore

path, seed, pause, max_batches = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
stream = Stream(seed)
store = EventStore.open_writer(path)
n = store.last_seq
j = stream.bound_index(n)
if j is None:
    sys.stderr.write(f"BADSTART: stored count {n} is not a batch boundary\n")
    sys.exit(3)
print(f"READY {os.getpid()} {n}", flush=True)
done = 0
if j > 0:
    # Re-append the last stored batch merged with the next one: its stored part must be reported as
    # duplicates and only the new part appended.
    lo, hi = stream.bound(j - 1), stream.bound(j + 1)
    stream.skip_to(lo)
    batch = stream.events(lo, hi)
    r = store.append(batch)
    want = sorted(e.id for e in batch[: n - lo])
    ok = sorted(r.duplicates) == want and (r.first_seq, r.last_seq, r.appended) == (n + 1, hi, hi - n)
    print(f"RESUME {r.last_seq} {len(r.duplicates)} {r.appended} {int(ok)}", flush=True)
    j += 1
    done += 1
else:
    stream.skip_to(n)
while not max_batches or done < max_batches:
    batch = stream.events(stream.bound(j), stream.bound(j + 1))
    r = store.append(batch)
    print(f"ACK {r.last_seq} {batch[-1].id} {len(batch)}", flush=True)
    j += 1
    done += 1
    if pause:
        time.sleep(pause)
print(f"IDLE {store.last_seq}", flush=True)
while True:
    time.sleep(3600)
'''

WRITER_SCRIPT = STREAM_SOURCE + WRITER_MAIN
_stream_ns: dict = {}
exec(STREAM_SOURCE, _stream_ns)
Stream = _stream_ns["Stream"]

CYCLES = 25
# Pause between batches: keeps the store small enough to verify fully after every one of the 25 kills
# (~30k events/s instead of ~120k) while a good share of kills still land inside a commit.
WRITER_PAUSE_S = 0.004
STARTUP_TIMEOUT_S = 30.0


class Writer:
    """A writer child process and the lines it printed (read by a thread, so nothing blocks)."""

    def __init__(self, path: Path, seed: str, *, pause: float = 0.0, max_batches: int = 0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WRITER_SCRIPT, str(path), seed, str(pause), str(max_batches)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            if line.endswith("\n"):  # a line torn by SIGKILL was never acknowledged
                self.lines.put(line.rstrip("\n"))

    def wait_for(self, word: str, timeout: float = STARTUP_TIMEOUT_S) -> list[str]:
        """Wait for a line starting with ``word``; return its fields."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(0.01, left))
            except queue.Empty:
                line = None
            if line is not None:
                self.seen.append(line)
                if line.split()[0] == word:
                    return line.split()
                continue
            if self.proc.poll() is not None or left <= 0:
                raise AssertionError(
                    f"writer printed no {word} line (exit {self.proc.poll()}):\n{self.stderr()}"
                )

    def kill(self, sig: int = signal.SIGKILL) -> list[str]:
        """Signal the child, reap it, and return every complete line it printed."""
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)
        self._reader.join(timeout=30)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return self.seen

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        return self.proc.stderr.read()  # type: ignore[union-attr]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self.proc.stdout.close()  # type: ignore[union-attr]
        self.proc.stderr.close()  # type: ignore[union-attr]
