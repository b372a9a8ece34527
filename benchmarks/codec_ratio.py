"""Compare the compiled frame decoder with its pure-Python twin on small DATA frames.

Both implementations run in the same process on the same prebuilt input: DATA frames with a
64-byte payload, fed in 64 KiB chunks, with a trivial Python ``on_data`` callback that counts
(the per-frame callback cost is included). Prints frames/s for each and the ratio; the issue
asks for compiled >= 10x the twin and >= 3 million small frames/s. ``--check`` exits 1 when a
target is missed.

    python benchmarks/codec_ratio.py [--frames N] [--repeat N] [--check]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from types import ModuleType

from mio import _frame_py

CHUNK = 64 * 1024
PAYLOAD = 64
MIN_RATIO = 10.0
MIN_FRAMES_PER_S = 3_000_000


def build_chunks(frames: int) -> list[bytes]:
    frame = (1).to_bytes(4, "big") + PAYLOAD.to_bytes(3, "big") + b"\x01" + bytes(PAYLOAD)
    stream = frame * frames
    return [stream[i : i + CHUNK] for i in range(0, len(stream), CHUNK)]


def make_run(module: ModuleType, chunks: list[bytes]) -> Callable[[], int]:
    def run() -> int:
        count = 0

        def on_data(stream_id: int, payload: bytes, end: bool) -> None:
            nonlocal count
            count += 1

        def on_frame(kind: int, stream_id: int, value: int) -> None:
            raise AssertionError("no control frames in this stream")

        feed = module.FrameDecoder(on_data, on_frame).feed
        for chunk in chunks:
            feed(chunk)
        return count

    return run


def best_time(run: Callable[[], int], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=200_000, help="frames per run")
    parser.add_argument("--repeat", type=int, default=7, help="runs per implementation (best)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)

    try:
        from mio import _frame
    except ImportError as exc:
        print(f"compiled module not available: {exc}", file=sys.stderr)
        return 2

    chunks = build_chunks(args.frames)
    rates = {}
    for name, module in (("compiled", _frame), ("pure", _frame_py)):
        run = make_run(module, chunks)
        calls = run()  # warm-up, and the number of callbacks a run makes
        if not args.frames <= calls <= args.frames + len(chunks):
            raise AssertionError(f"{name}: {calls} callbacks for {args.frames} frames")
        seconds = best_time(run, args.repeat)
        rates[name] = args.frames / seconds
        print(
            f"{name:>8}: {rates[name]:>14,.0f} frames/s  "
            f"({seconds * 1e3:8.2f} ms for {args.frames:,} frames of {PAYLOAD} B, "
            f"best of {args.repeat})"
        )
    ratio = rates["compiled"] / rates["pure"]
    print(f"   ratio: {ratio:.1f}x (compiled/pure)")
    ok = ratio >= MIN_RATIO and rates["compiled"] >= MIN_FRAMES_PER_S
    verdict = "meets" if ok else "MISSES"
    print(f"targets: >= {MIN_RATIO:.0f}x and >= {MIN_FRAMES_PER_S:,} frames/s: {verdict}")
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
