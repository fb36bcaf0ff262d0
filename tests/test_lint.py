"""Lint as part of the suite: pyflakes' rules (unused imports and names, undefined names, redefinitions)
over the whole repository, through ruff."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_no_pyflakes_error():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "F", "--no-cache", str(ROOT)],
                          capture_output=True, text=True, timeout=300)

    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
