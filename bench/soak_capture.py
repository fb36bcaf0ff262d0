"""Capture soak: a counting publisher, a `tradebus record` process and a nats-server, SIGKILLing the
recorder and the server in turn, then counting what the store holds against what the stream acknowledged.

    python bench/soak_capture.py                       # 300 s, 30 recorder and 30 server SIGKILLs
    python bench/soak_capture.py --seconds 60 --recorder-kills 5 --server-kills 5

Exit 1 when any acknowledged event is missing, any event is stored twice, or the seq has a gap.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from tradebus.tests.capturekit import kill_loop


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=300.0)
    p.add_argument("--recorder-kills", type=int, default=30)
    p.add_argument("--server-kills", type=int, default=30)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="tradebus-soak-") as tmp:
        figures = asyncio.run(kill_loop(Path(tmp), seconds=args.seconds, recorder_kills=args.recorder_kills,
                                        server_kills=args.server_kills, seed=args.seed))
    print(figures.line())
    for problem in [*figures.verify_problems, *figures.recorder_errors][:20]:
        print("  problem:", problem)
    clean = not (figures.lost or figures.duplicated or figures.unexpected or figures.recorder_errors)
    return 0 if clean and figures.gapless else 1


if __name__ == "__main__":
    sys.exit(main())
