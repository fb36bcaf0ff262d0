"""What decides a result, as a digest: run and trial ids hash it, so a result computed by other code is
never taken for this code's.

The digest covers the source of every package that turns data into decisions and numbers (events, the
components, configs, the engine, the factory, the replay) and the versions of the numeric libraries they
run on. The command line, the live venue adapters, the store and the tests are left out: they move bytes,
they do not decide what a backtest returns. A change to any covered file, even a comment, makes new ids:
a rerun after it is a new run, never a silent reuse of the old one.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numba
import numpy

PACKAGE = Path(__file__).resolve().parent
DECIDES = ("bus", "components", "configs", "engine", "factory", "replay")


@functools.cache
def code_digest(root: Path = PACKAGE) -> str:
    """16 hex characters of SHA-256 over the deciding source files under ``root`` (by relative path) and
    the library versions; computed once per process."""
    h = hashlib.sha256(f"numpy {numpy.__version__} numba {numba.__version__}".encode())
    for path in sorted(p for folder in DECIDES for p in (root / folder).rglob("*.py")):
        h.update(b"\0" + path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()[:16]
