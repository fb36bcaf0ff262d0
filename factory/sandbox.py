"""Run model-written code at an OS boundary: its own namespaces, a root with nothing but what Python needs
(read-only) and a temporary folder, no network, seccomp, and resource limits.

How (``run``): the code and its inputs go into a fresh temporary folder; ``unshare`` (util-linux) starts
this module's ``_boot`` in new user, mount, PID, network, IPC and UTS namespaces. ``_boot``, as the
namespace's root:

1. builds a new root on a tmpfs: the Python installation, the packages' folders and the system's shared
   libraries bind-mounted **read-only**, ``/dev/null``, ``/dev/zero``, ``/dev/urandom``, a fresh ``/proc``
   (of the new PID namespace: it shows the sandbox's own processes only), and the temporary folder
   read-write at ``/sandbox``; then ``pivot_root`` into it and detaches the old root (no path leads back);
2. sets limits: address space (memory), CPU seconds, file size, open files, no core dumps;
3. clears the environment (no key, no token, no path of the host);
4. loads a seccomp filter (libseccomp through ctypes) that refuses with EPERM: creating a process (fork,
   vfork, clone without CLONE_THREAD, clone3), executing a program (execve, execveat), sockets, ptrace and
   process_vm_*, mount/umount/pivot_root/chroot/unshare/setns, kernel modules, kexec, bpf, perf events,
   keyrings, userfaultfd, io_uring; threads are allowed (numpy and numba use them);
5. runs the driver (``/sandbox/run.py``) in that process.

The parent waits for it with a wall-clock limit (the process group is killed past it) and reads back only
``/sandbox/out.json``: a regular file (not a link), at most ``MAX_OUT`` bytes, strict JSON.

What it does not cover: the kernel itself (a kernel bug reachable through an allowed syscall escapes any
namespace sandbox), side channels (timing, CPU caches), and reading the read-only mounts (the Python
installation, the installed packages and tradebus's own source are visible to the code: no secret lives
there). It needs Linux with unprivileged or root user namespaces, ``unshare`` and libseccomp; ``available()``
says whether this machine has them, and without them model-written code is refused, never run unsandboxed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

MAX_OUT = 1 << 20  # bytes of out.json read back
WORK = "/sandbox"


@dataclass(frozen=True)
class Limits:
    memory_mb: int = 2048
    cpu_s: int = 60
    wall_s: float = 120.0
    file_mb: int = 64
    open_files: int = 256


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    out: dict | None  # the driver's out.json, if it wrote a valid one
    timed_out: bool
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.out is not None and not self.timed_out


class SandboxUnavailable(RuntimeError):
    """This machine cannot build the sandbox: model-written code is not run."""


@functools.lru_cache(maxsize=1)
def available() -> str:
    """Why the sandbox cannot run here ('' when it can): the tools, and a probe that the kernel lets this user
    make the namespaces."""
    if sys.platform != "linux":
        return "the sandbox needs Linux namespaces"
    if shutil.which("unshare") is None:
        return "the sandbox needs util-linux's unshare"
    if _seccomp_path() is None:
        return "the sandbox needs libseccomp (libseccomp2)"
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "--pid", "--fork", "--net", "--ipc",
                            "--uts", "true"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"this kernel or user may not make the sandbox's namespaces: {probe.stderr.strip()[:200]}"
    return ""


def _seccomp_path() -> str | None:
    """libseccomp's file, found on the host (the sandbox's root has no linker cache to look it up)."""
    name = ctypes.util.find_library("seccomp")
    if name is None:
        return None
    for folder in ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/lib64", "/usr/lib", "/lib",
                   "/usr/lib/aarch64-linux-gnu", "/lib/aarch64-linux-gnu"):
        if Path(folder, name).exists():
            return str(Path(folder, name).resolve())
    return None


def _readonly_paths() -> list[str]:
    """What Python needs to import the packages: the installation, the packages' folders, shared libraries."""
    import tradebus

    paths = {sys.base_prefix, sys.prefix, sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
             str(Path(tradebus.__file__).resolve().parent)}
    for p in sys.path:
        if p and Path(p).exists() and not p.endswith(".zip"):
            paths.add(str(Path(p).resolve()))
    for lib in ("/usr/lib", "/lib", "/lib64", "/usr/lib64", "/usr/local/lib"):
        if Path(lib).exists():
            paths.add(lib)
    # A folder inside another one is covered by it.
    kept: list[str] = []
    for p in sorted(paths, key=len):
        if not any(p == k or p.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(p)
    return kept


def run(driver: str, files: dict[str, bytes], limits: Limits = Limits()) -> Result:
    """Run ``driver`` (Python source) in the sandbox with ``files`` in its folder; nothing of the host's
    environment goes in. Raises SandboxUnavailable where the sandbox cannot be built."""
    why = available()
    if why:
        raise SandboxUnavailable(why)
    folder = Path(tempfile.mkdtemp(prefix="tradebus-sandbox-"))
    try:
        work = folder / "work"
        work.mkdir()
        for name, data in {**files, "run.py": driver.encode()}.items():
            target = work / name
            if target.resolve().parent != work.resolve():
                raise ValueError(f"{name!r}: a file name, not a path")
            target.write_bytes(data)
        spec = {"work": str(work), "root": str(folder / "root"), "readonly": _readonly_paths(),
                "limits": limits.__dict__, "seccomp": _seccomp_path()}
        (folder / "spec.json").write_text(json.dumps(spec))
        cmd = ["unshare", "--user", "--map-root-user", "--mount", "--pid", "--fork", "--net", "--ipc", "--uts",
               "--kill-child", sys.executable, "-I", "-S", __file__, str(folder / "spec.json")]
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={"LANG": "C.UTF-8"}, start_new_session=True, close_fds=True)
        timed_out = False
        try:
            stdout, stderr = proc.communicate(timeout=limits.wall_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
        return Result(proc.returncode, stdout.decode(errors="replace")[-20_000:],
                      stderr.decode(errors="replace")[-20_000:], _read_out(work / "out.json"), timed_out,
                      time.monotonic() - t0)
    finally:
        _remove(folder)


def _read_out(path: Path) -> dict | None:
    """The driver's answer: a regular file (a link is not followed), bounded, a JSON object."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_OUT:
            return None
        data = os.read(fd, MAX_OUT + 1)
    finally:
        os.close(fd)
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _remove(folder: Path) -> None:
    """Remove the folder whatever the code left in it (read-only modes, odd names)."""
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            try:
                os.chmod(os.path.join(root, d), 0o700)
            except OSError:
                pass
    shutil.rmtree(folder, ignore_errors=True)


# --- inside the namespaces ---------------------------------------------------------------------------------

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1, 2, 4, 8, 32, 4096, 16384, 1 << 18)
MNT_DETACH = 2
SCMP_ACT_ALLOW = 0x7FFF0000
EPERM = 1


def _libc():
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return libc


def _check(rc: int, what: str) -> None:
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def _mount(libc, src: str | None, dst: str, fstype: str | None, flags: int) -> None:
    _check(libc.mount(src.encode() if src else None, dst.encode(), fstype.encode() if fstype else None, flags, None),
           f"mount {src} {dst}")


def _bind_ro(libc, src: str, dst: str) -> None:
    _mount(libc, src, dst, None, MS_BIND | MS_REC)
    _mount(libc, None, dst, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _build_root(spec: dict) -> None:
    libc = _libc()
    root = spec["root"]
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount propagates to the host
    os.makedirs(root, exist_ok=True)
    _mount(libc, "tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV)
    # /tmp first: a package or checkout that lives under the host's /tmp is bound on top of it, not hidden.
    os.makedirs(root + "/tmp", exist_ok=True)
    _mount(libc, "tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV)
    for path in spec["readonly"]:
        os.makedirs(root + path, exist_ok=True)
        _bind_ro(libc, path, root + path)
    os.makedirs(root + "/dev", exist_ok=True)
    for dev in ("null", "zero", "urandom"):
        open(root + "/dev/" + dev, "w").close()
        _mount(libc, "/dev/" + dev, root + "/dev/" + dev, None, MS_BIND)
    os.makedirs(root + "/proc", exist_ok=True)
    _mount(libc, "proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.makedirs(root + WORK, exist_ok=True)
    _mount(libc, spec["work"], root + WORK, None, MS_BIND)
    os.makedirs(root + "/.old", exist_ok=True)
    libc.syscall.restype = ctypes.c_long
    _check(libc.syscall(155, root.encode(), (root + "/.old").encode()), "pivot_root")  # SYS_pivot_root, x86_64
    os.chdir("/")
    _check(libc.umount2(b"/.old", MNT_DETACH), "umount old root")
    os.rmdir("/.old")
    _mount(libc, None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)  # the tmpfs root too
    os.chdir(WORK)


def _limits(spec: dict) -> None:
    import resource

    lim = spec["limits"]
    for what, soft, hard in ((resource.RLIMIT_AS, lim["memory_mb"] << 20, lim["memory_mb"] << 20),
                             # SIGXCPU at the soft limit; code that ignores it gets SIGKILL a second later
                             (resource.RLIMIT_CPU, lim["cpu_s"], lim["cpu_s"] + 1),
                             (resource.RLIMIT_FSIZE, lim["file_mb"] << 20, lim["file_mb"] << 20),
                             (resource.RLIMIT_NOFILE, lim["open_files"], lim["open_files"]),
                             (resource.RLIMIT_CORE, 0, 0)):
        resource.setrlimit(what, (soft, hard))


# Refused with EPERM once the root is built (x86_64 numbers, through libseccomp's names).
DENIED = ("fork", "vfork", "execve", "execveat", "socket", "socketpair", "connect", "bind", "listen", "accept",
          "accept4", "ptrace", "process_vm_readv", "process_vm_writev", "mount", "umount2", "pivot_root", "chroot",
          "unshare", "setns", "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "bpf",
          "perf_event_open", "keyctl", "add_key", "request_key", "userfaultfd", "io_uring_setup", "io_uring_enter",
          "io_uring_register", "open_by_handle_at", "name_to_handle_at", "personality", "syslog", "reboot",
          "swapon", "swapoff", "acct", "quotactl", "lookup_dcookie", "move_pages", "mbind", "set_mempolicy")
CLONE_THREAD = 0x10000


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def _seccomp(path: str) -> None:
    lib = ctypes.CDLL(path, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise OSError("seccomp_init failed")
    errno_eperm = 0x00050000 | EPERM  # SCMP_ACT_ERRNO(EPERM)
    for name in DENIED:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr >= 0:
            _check(lib.seccomp_rule_add(ctx, errno_eperm, nr, 0), f"seccomp rule {name}")
    # clone: a thread (CLONE_THREAD set) is allowed, a process is not. SCMP_CMP_MASKED_EQ = 7.
    clone = lib.seccomp_syscall_resolve_name(b"clone")
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, _ArgCmp]
    _check(lib.seccomp_rule_add(ctx, errno_eperm, clone, 1, _ArgCmp(0, 7, CLONE_THREAD, 0)), "seccomp rule clone")
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    clone3 = lib.seccomp_syscall_resolve_name(b"clone3")
    if clone3 >= 0:  # ENOSYS: glibc falls back to clone, which the rule above sees
        _check(lib.seccomp_rule_add(ctx, 0x00050000 | 38, clone3, 0), "seccomp rule clone3")
    libc = ctypes.CDLL(None, use_errno=True)  # the interpreter's own libc
    _check(libc.prctl(38, 1, 0, 0, 0), "no_new_privs")  # PR_SET_NO_NEW_PRIVS
    _check(lib.seccomp_load(ctx), "seccomp_load")


def _boot(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    _build_root(spec)
    _limits(spec)
    os.environ.clear()
    os.environ.update({"HOME": WORK, "TMPDIR": "/tmp", "NUMBA_CACHE_DIR": "/tmp/numba", "NUMBA_NUM_THREADS": "1",
                       "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    sys.path[:] = [p for p in spec["readonly"] if "python" in p or "site-packages" in p] + sys.path
    import site

    site.main()  # the installed packages' .pth files (an editable install's finder), now that the root is built
    _seccomp(spec["seccomp"])
    sys.argv = [f"{WORK}/run.py"]
    import runpy

    runpy.run_path(f"{WORK}/run.py", run_name="__main__")


if __name__ == "__main__":
    _boot(sys.argv[1])
