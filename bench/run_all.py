"""Run every benchmark in sequence, each in its own process, and summarise how each run ended."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
BENCHMARKS = ("bench_codec.py", "bench_store.py", "bench_bus.py", "bench_replay.py", "bench_kernel.py", "bench_sweep.py",
              "bench_live_latency.py", "bench_forecast.py", "bench_detector.py", "bench_lifecycle.py",
              "bench_allocator.py")


def run(script: str, quick: bool) -> tuple[int, float]:
    """Run one benchmark with this interpreter; return (exit code, seconds)."""
    cmd = [sys.executable, str(BENCH_DIR / script), *(["--quick"] if quick else [])]
    t0 = time.perf_counter()
    code = subprocess.run(cmd, check=False).returncode
    return code, time.perf_counter() - t0


def main() -> int:
    """Run the benchmarks and print one summary line per benchmark."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    args = p.parse_args()
    results = [(script, *run(script, args.quick)) for script in BENCHMARKS]
    print("\nsummary")
    for script, code, seconds in results:
        print(f"  {script:<16} {'ok' if code == 0 else f'FAILED (exit {code})':<16} {seconds:6.1f} s")
    return 0 if all(code == 0 for _, code, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
