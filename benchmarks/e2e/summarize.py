#!/usr/bin/env python3
"""Re-render ``benchmarks/results/RESULTS.md`` and ``results.png`` from ``results.jsonl``
(the last run by default, ``--run-id`` for another). Thin wrapper of ``mio._bench.summary``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results"

try:
    import mio._bench.summary as summary
except ImportError:  # a source checkout without an install
    sys.path.insert(0, str(HERE.parent.parent / "src"))
    os.environ.setdefault("MIO_NO_EXTENSIONS", os.environ.get("MIO_NO_EXTENSIONS", ""))
    import mio._bench.summary as summary

if __name__ == "__main__":
    sys.exit(summary.main(results_dir=RESULTS))
