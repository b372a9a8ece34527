#!/usr/bin/env python3
"""End-to-end loopback benchmark: mio against raw asyncio TCP, h2 and aioquic.

Thin wrapper around ``mio._bench.runner`` (the same harness ``mio bench`` runs, so it also
works from an installed package). Appends JSON lines to ``benchmarks/results/results.jsonl``,
writes ``RESULTS.md`` and ``results.png`` there. ``python benchmarks/e2e/run.py --help``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results"

try:
    import mio._bench.runner as runner
except ImportError:  # a source checkout without an install: use src/ (and tell the workers)
    src = str(HERE.parent.parent / "src")
    sys.path.insert(0, src)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))
    import mio._bench.runner as runner

if __name__ == "__main__":
    sys.exit(runner.main(results_dir=RESULTS))
