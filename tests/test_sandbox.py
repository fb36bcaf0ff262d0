"""The red-team suite: model-written code tries to get out of the sandbox, and each attempt is contained
within its limits (no secret read, no host file touched, no connection made, no process started, no
runaway past its CPU, memory, file or wall limits, nothing trusted read back from it)."""

from __future__ import annotations

import socket
import subprocess
import textwrap
import threading
from pathlib import Path

import pytest

from tradebus.factory import sandbox

pytestmark = pytest.mark.skipif(bool(sandbox.available()), reason=sandbox.available() or "")

SECRET = "sk-ant-api03-THIS-MUST-NOT-LEAK-0123456789"
FAST = sandbox.Limits(memory_mb=512, cpu_s=2, wall_s=15.0, file_mb=8, open_files=64)


def attempt(body: str, limits: sandbox.Limits = FAST) -> sandbox.Result:
    """Run ``body`` as the driver: it reports what it managed in out.json under "got"."""
    driver = "import json, os, sys\ngot = {}\n" + textwrap.dedent(body) + "\njson.dump({'got': got}, open('out.json', 'w'))\n"
    return sandbox.run(driver, {}, limits)


def got(r: sandbox.Result) -> dict:
    assert r.out is not None, r.stderr[-2000:]
    return r.out["got"]


@pytest.fixture
def secrets_on_host(tmp_path, monkeypatch):
    """A key in the environment and in a key file, as a user's machine has them."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    monkeypatch.setenv("TRADEBUS_LIVE_API_SECRET", SECRET)
    key = tmp_path / "live.key"
    key.write_text(SECRET)
    return key


def test_the_environment_is_empty_of_keys(secrets_on_host):
    r = attempt("got['env'] = dict(os.environ); got['proc'] = open('/proc/self/environ', 'rb').read().decode()\n"
                "got['init'] = open('/proc/1/environ', 'rb').read().decode()")
    g = got(r)
    assert SECRET not in str(g) and "ANTHROPIC" not in str(g)


def test_a_key_file_on_the_host_cannot_be_read(secrets_on_host):
    r = attempt(f"""
try:
    got['key'] = open({str(secrets_on_host)!r}).read()
except OSError as exc:
    got['error'] = type(exc).__name__
""")
    assert got(r) == {"error": "FileNotFoundError"}


@pytest.mark.parametrize("path", ["/etc/passwd", "/etc/shadow", "/root/.ssh/id_rsa", str(Path(__file__).resolve().parents[2] / "shared" / "DESIGN.md"),
                                  "/proc/1/root/etc/hostname", "/dev/mem", "/sys/kernel/notes"])
def test_host_files_are_not_there(path):
    r = attempt(f"""
try:
    got['data'] = open({path!r}, 'rb').read(64).hex()
except OSError as exc:
    got['error'] = type(exc).__name__
""")
    assert "data" not in got(r)


def test_the_root_holds_only_what_python_needs():
    import tradebus

    repo = Path(tradebus.__file__).resolve().parent
    g = got(attempt(f"got['root'] = sorted(os.listdir('/')); got['beside'] = sorted(os.listdir({str(repo.parent)!r}))"))
    # Top-level folders: the sandbox's own, and those holding the read-only paths (wherever the repo lives).
    mounted = {Path(p).parts[1] for p in sandbox._readonly_paths()}
    assert set(g["root"]) <= {"dev", "proc", "sandbox", "tmp"} | mounted
    assert "etc" not in g["root"] and "bin" not in g["root"]
    assert g["beside"] == [repo.name]  # the repo's source, not the folders beside it (../shared)


@pytest.mark.parametrize("target", ["REPO/LEAKED", "/root/.pyenv/LEAKED", "/usr/lib/LEAKED", "/LEAKED"])
def test_writes_outside_the_folder_fail(target, tmp_path):
    import tradebus

    # The repo's source is mounted at its host path, wherever the checkout lives.
    target = target.replace("REPO", str(Path(tradebus.__file__).resolve().parent))
    host = Path(target)
    r = attempt(f"""
try:
    open({target!r}, 'w').write('x')
    got['wrote'] = True
except OSError as exc:
    got['error'] = type(exc).__name__
""")
    assert "wrote" not in got(r) and not host.exists()


def test_a_file_past_the_size_limit_is_cut():
    g = got(attempt("""
try:
    with open('big', 'wb') as f:
        for _ in range(64):
            f.write(b'x' * (1 << 20))
except OSError as exc:
    got['error'] = exc.errno
got['size'] = os.path.getsize('big')
"""))
    assert g["size"] <= FAST.file_mb << 20 and g.get("error") == 27  # EFBIG


@pytest.fixture
def listener():
    """A server on the host's loopback: nothing from the sandbox may reach it."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(0.2)
    hits = []

    def serve():
        while not stop.is_set():
            try:
                hits.append(srv.accept())
            except OSError:
                pass

    stop = threading.Event()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1], hits
    stop.set()
    t.join()
    srv.close()


@pytest.mark.parametrize("how", ["socket", "create_connection", "ctypes_socket", "raw_syscall", "unix"])
def test_no_network(how, listener):
    port, hits = listener
    body = {
        "socket": f"import socket\ns = socket.socket(); s.settimeout(1); s.connect(('127.0.0.1', {port}))",
        "create_connection": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)",
        "ctypes_socket": "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                         "fd = libc.socket(2, 1, 0)\nassert fd >= 0, ctypes.get_errno()",
        "raw_syscall": "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                       "fd = libc.syscall(41, 2, 1, 0)\nassert fd >= 0, ctypes.get_errno()",
        "unix": "import socket\ns = socket.socket(socket.AF_UNIX); s.connect('/run/docker.sock')",
    }[how]
    r = attempt("try:\n" + textwrap.indent(body, "    ") + "\n    got['connected'] = True\n"
                "except BaseException as exc:\n    got['error'] = repr(exc)")
    assert "connected" not in got(r) and not hits


@pytest.mark.parametrize("how", [
    "os.fork()",
    "import subprocess; assert subprocess.run(['/bin/sh', '-c', 'id']).returncode == 0",
    "assert os.system('id > /sandbox/pwned') == 0",
    "os.execv(sys.executable, [sys.executable, '-c', 'print(1)'])",
    "import multiprocessing as mp; p = mp.Process(target=print); p.start(); p.join(); assert p.exitcode == 0",
    "import ctypes; assert ctypes.CDLL(None, use_errno=True).syscall(57) >= 0",  # raw fork
    "[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'Popen'][0](['/bin/sh'])",
    "assert [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'catch_warnings'][0]()._module"
    ".__builtins__['__import__']('os').system('id') == 0",
    "while True: os.fork()",
])
def test_no_process_can_be_started(how):
    r = attempt("try:\n    " + how + "\n    got['started'] = True\nexcept BaseException as exc:\n"
                "    got['error'] = repr(exc)\ngot['pwned'] = os.path.exists('/sandbox/pwned')")
    g = got(r)
    assert not g["pwned"] and "started" not in g and "error" in g


@pytest.mark.parametrize("call,args", [("mount", "b'none', b'/tmp', b'tmpfs', 0, None"), ("unshare", "0x10000000"),
                                       ("setns", "0, 0"), ("chroot", "b'/tmp'"), ("ptrace", "0, 0, 0, 0"),
                                       ("umount2", "b'/proc', 2")])
def test_namespace_and_mount_calls_are_refused(call, args):
    r = attempt(f"import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                f"got['rc'] = libc.{call}({args}); got['errno'] = ctypes.get_errno()")
    g = got(r)
    assert g["rc"] == -1 and g["errno"] == 1  # EPERM


@pytest.mark.parametrize("nr,name", [(321, "bpf"), (323, "userfaultfd"), (425, "io_uring_setup"), (250, "keyctl"),
                                     (298, "perf_event_open"), (246, "kexec_load")])
def test_kernel_surfaces_are_refused(nr, name):
    g = got(attempt(f"import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                    f"got['rc'] = libc.syscall({nr}, 0, 0, 0, 0, 0); got['errno'] = ctypes.get_errno()"))
    assert g["rc"] == -1 and g["errno"] == 1, name


def test_memory_bombs_hit_the_limit():
    g = got(attempt("""
try:
    x = bytearray(4 << 30)
except MemoryError:
    got['bytes'] = 'MemoryError'
try:
    import numpy as np
    y = np.ones((1 << 30,), dtype=np.float64)
except MemoryError:
    got['numpy'] = 'MemoryError'
"""))
    assert g == {"bytes": "MemoryError", "numpy": "MemoryError"}


def test_a_thread_bomb_is_contained():
    r = attempt("""
import threading, time
n = 0
try:
    for _ in range(100000):
        threading.Thread(target=time.sleep, args=(5,), daemon=True).start()
        n += 1
except BaseException as exc:
    got['error'] = type(exc).__name__
got['threads'] = n
""")
    g = got(r)
    assert g["threads"] < 100000 and "error" in g and not r.timed_out


def test_a_cpu_loop_is_killed_at_its_cpu_limit():
    r = attempt("import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass")
    assert r.out is None and r.returncode != 0 and not r.timed_out and r.seconds < 10


def test_a_sleeper_is_killed_at_its_wall_limit():
    r = attempt("import time\ntime.sleep(3600)", sandbox.Limits(cpu_s=5, wall_s=2.0))
    assert r.timed_out and r.out is None and r.seconds < 6


def test_killing_everything_kills_only_the_sandbox():
    canary = subprocess.Popen(["sleep", "30"])
    try:
        r = attempt("import signal\nfor pid in (-1, 1, %d):\n    try:\n        os.kill(pid, signal.SIGKILL)\n"
                    "    except OSError as exc:\n        got[str(pid)] = exc.errno" % canary.pid)
        assert canary.poll() is None  # the host's process lives on
        assert r.out is None or r.out["got"].get(str(canary.pid)) == 3  # ESRCH: not in its PID namespace
    finally:
        canary.kill()
        canary.wait()


def test_an_answer_that_is_a_link_to_a_host_file_is_not_followed(secrets_on_host):
    r = sandbox.run(f"import os\nos.symlink({str(secrets_on_host)!r}, 'out.json')", {}, FAST)
    assert r.out is None


def test_an_answer_past_its_size_is_not_read():
    r = sandbox.run("open('out.json', 'w').write('{\"a\": \"' + 'x' * (2 << 20) + '\"}')", {}, FAST)
    assert r.out is None


def test_loader_tricks_find_nothing_to_load(secrets_on_host):
    g = got(attempt(f"""
import importlib.machinery, importlib.util
for path in ({str(secrets_on_host)!r}, '/etc/shadow'):
    try:
        spec = importlib.util.spec_from_file_location('x', path)
        importlib.util.module_from_spec(spec); spec.loader.exec_module(importlib.util.module_from_spec(spec))
        got[path] = 'loaded'
    except BaseException as exc:
        got[path] = type(exc).__name__
"""))
    assert "loaded" not in g.values()
