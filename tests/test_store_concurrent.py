"""Readers in other processes while a writer process appends, with real processes and files (no mocks).

The writer child is the one from ``test_store_crash`` (same seeded event stream, one ``ACK`` line per
durable batch). While it appends, the test follows the log in-process and runs the ``tradebus`` CLI
(``store info``, ``rebuild``, ``store verify``) in parallel subprocesses: every read must see a gapless
prefix of what the writer produces, and what one read sees never shrinks in a later one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


from tradebus.eventstore.projections import rebuild, state_hash
from tradebus.eventstore.store import EventStore
from tradebus.tests.storekit import Stream

ROUNDS = 5
WRITER_PAUSE_S = 0.01  # ~20k events/s: continuous appends that leave CPU for the readers on 2 cores
CLI_TIMEOUT_S = 120


def _cli_env() -> dict[str, str]:
    # Wide and colourless, so JSON and messages come out unwrapped and unstyled.
    return {**os.environ, "NO_COLOR": "1", "COLUMNS": "10000"}


def _start_cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tradebus", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_cli_env(),
    )


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tradebus", *args],
        capture_output=True, text=True, timeout=CLI_TIMEOUT_S, env=_cli_env(),
    )


class Follower:
    """Follows the store with ``read(from_seq=last + 1)`` and checks every event against the stream."""

    def __init__(self, path: Path, stream: Stream) -> None:
        self.store = EventStore.open_reader(path)
        self.stream = stream
        self.last = 0
        self.polls = 0

    def poll(self) -> int:
        records = list(self.store.read(from_seq=self.last + 1))
        seqs = [r.seq for r in records]
        assert seqs == list(range(self.last + 1, self.last + 1 + len(records))), (
            f"poll after seq {self.last} returned seqs {seqs[:3]}..{seqs[-3:]}: not contiguous"
        )
        want = self.stream.events(self.last, self.last + len(records))
        assert [r.event for r in records] == want, f"events after seq {self.last} differ from the writer's"
        self.last += len(records)
        self.polls += 1
        info = self.store.info()
        assert info.count == info.last_seq >= self.last, info
        return info.count

    def close(self) -> None:
        self.store.close()


def test_cli_and_in_process_readers_while_writer_appends_see_growing_gapless_prefix(tmp_path, writers):
    # Arrange: a writer child appending continuously, past its first few batches.
    path = tmp_path / "events.sqlite"
    seed = "concurrent-1"
    stream = Stream(seed)
    w = writers(path, seed, pause=WRITER_PAUSE_S)
    w.wait_for("READY")
    for _ in range(3):
        w.wait_for("ACK")
    follower = Follower(path, stream)
    floor = follower.poll()
    first = floor
    cli_reads = 0

    for _ in range(ROUNDS):
        # Act: three CLI readers in parallel, while this process keeps following the log.
        procs = {
            "info": _start_cli("store", "info", "--store", str(path), "--json"),
            "rebuild": _start_cli("rebuild", "--store", str(path), "--json"),
            "verify": _start_cli("store", "verify", "--store", str(path)),
        }
        counts = [floor]
        while any(p.poll() is None for p in procs.values()):
            counts.append(follower.poll())
            time.sleep(0.02)
        outputs = {name: p.communicate(timeout=CLI_TIMEOUT_S) for name, p in procs.items()}
        ceiling = follower.poll()
        counts.append(ceiling)

        # Assert: each read lies between what was stored before it started and after it ended.
        assert counts == sorted(counts), f"in-process counts went backwards: {counts}"
        for name, p in procs.items():
            assert p.returncode == 0, f"{name} exited {p.returncode}:\n{outputs[name][1]}"
        info = json.loads(outputs["info"][0])
        assert info["count"] == info["last_seq"] and floor <= info["count"] <= ceiling, (info, floor, ceiling)
        assert info["first_seq"] == 1
        assert info["writer_pid"] == w.proc.pid
        rebuilt = json.loads(outputs["rebuild"][0])
        assert rebuilt["events"] == rebuilt["last_seq"] and floor <= rebuilt["events"] <= ceiling, rebuilt
        # The rebuild saw exactly the prefix of that length: same state as folding it here.
        prefix = follower.store.read(to_seq=rebuilt["events"])
        assert rebuilt["state_hash"] == state_hash(rebuild(prefix))
        assert outputs["verify"][0].startswith("ok:"), outputs["verify"]
        verified = int(outputs["verify"][0].split()[1].replace(",", ""))
        assert floor <= verified <= ceiling
        cli_reads += 3
        floor = ceiling

    # The writer kept appending throughout, and never noticed the readers.
    assert w.proc.poll() is None, w.stderr()
    assert floor > first, f"the store did not grow while it was read ({first} events throughout)"
    assert follower.polls > 2 * ROUNDS
    follower.close()
    print(f"\n{cli_reads} CLI reads and {follower.polls} polls while the store grew {first} -> {floor} events")


def test_rebuild_after_writer_stopped_twice_prints_same_state_hash(tmp_path, writers):
    # Arrange: a writer stopped (SIGTERM, no handler) in the middle of appending, a follower open throughout.
    path = tmp_path / "events.sqlite"
    seed = "concurrent-2"
    w = writers(path, seed, pause=0.002)
    w.wait_for("READY")
    follower = Follower(path, Stream(seed))
    for _ in range(30):
        w.wait_for("ACK")
        follower.poll()
    w.kill(signal.SIGTERM)
    assert w.proc.returncode == -signal.SIGTERM
    count = follower.poll()

    # Act
    first = _run_cli("rebuild", "--store", str(path), "--json")
    second = _run_cli("rebuild", "--store", str(path), "--json")
    info = _run_cli("store", "info", "--store", str(path), "--json")

    # Assert
    assert first.returncode == 0 and second.returncode == 0, (first.stderr, second.stderr)
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a == b
    assert a["events"] == a["last_seq"] == count == follower.last
    with EventStore.open_reader(path) as store:
        assert a["state_hash"] == state_hash(rebuild(store.read()))
    assert json.loads(info.stdout)["writer_pid"] is None
    follower.close()


def test_store_info_is_one_snapshot_while_a_writer_appends(tmp_path, writers):
    # Arrange: a writer child appending continuously.
    path = tmp_path / "events.sqlite"
    w = writers(path, "concurrent-info", pause=0.002)
    w.wait_for("READY")
    w.wait_for("ACK")
    reader = EventStore.open_reader(path)
    seen = []
    try:
        # Act: summarise the store over and over while it grows.
        for _ in range(150):
            seen.append(reader.info())
    finally:
        reader.close()

    # Assert: within each summary, every count agrees; across them, the store grew.
    for info in seen:
        assert info.count == info.last_seq == sum(info.by_type.values()) == sum(info.by_system.values()), info
    assert seen[-1].count > seen[0].count, "the writer appended while the store was summarised"
    assert w.proc.poll() is None, w.stderr()
