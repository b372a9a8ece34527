"""Soak test: many short streams opened and closed on one session, under concurrent bulk traffic.

One client session over loopback TCP to a ``mio.serve`` server. ``--concurrency`` short
streams at a time (each: open, send a small random payload, half-close, read the echo,
check it, wait until the stream is finished) until ``--streams`` streams were done, while a
bulk stream carries a continuous checksummed echo on the same session. After a warm-up
(the first tenth of the streams), memory is sampled about ten times: RSS (psutil), tracemalloc's
current size (all Python allocations, and those made from mio's own source lines), live
tasks and live ``Stream`` objects. At the end both stream tables must be empty, the tasks
back to the baseline, no ``Stream`` object alive, and the bulk stream intact.

Usage::

    python benchmarks/soak.py                        # 100,000 streams, tracemalloc on
    python benchmarks/soak.py --streams 10000 --concurrency 100
    python benchmarks/soak.py --no-tracemalloc       # RSS only, about twice as fast
    python benchmarks/soak.py --json                 # machine-readable result

``tests/test_soak.py`` runs a 10,000-stream version of :func:`soak` in the default suite.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import hashlib
import json
import random
import sys
import time
import tracemalloc
import weakref

import mio

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is in the test and bench extras
    psutil = None


@dataclasses.dataclass
class Sample:
    streams_done: int
    rss: int
    traced: int
    traced_mio: int
    tasks: int
    live_streams: int


@dataclasses.dataclass
class SoakResult:
    streams: int
    seconds: float
    streams_per_second: float
    bulk_bytes: int
    samples: list[Sample]
    rss_growth: int
    traced_growth: int
    traced_mio_growth: int
    traced_peak: int
    client_streams_left: int
    server_streams_left: int
    tasks_left: int
    live_streams_left: int
    recent_resets: int

    def summary(self) -> str:
        first, last = self.samples[0], self.samples[-1]
        mb = 1024 * 1024
        lines = [
            f"streams: {self.streams} in {self.seconds:.1f} s "
            f"({self.streams_per_second:.0f} streams/s), bulk echo {self.bulk_bytes / mb:.1f} MiB",
            f"RSS after warm-up {first.rss / mb:.1f} MiB, at the end {last.rss / mb:.1f} MiB, "
            f"growth {self.rss_growth / 1024:+.0f} KiB",
            f"tracemalloc current: growth {self.traced_growth / 1024:+.1f} KiB "
            f"(from mio's lines {self.traced_mio_growth / 1024:+.1f} KiB), "
            f"peak {self.traced_peak / mb:.1f} MiB",
            f"left at the end: client streams {self.client_streams_left}, server streams "
            f"{self.server_streams_left}, tasks {self.tasks_left}, Stream objects "
            f"{self.live_streams_left}, recent-reset entries {self.recent_resets}",
            "samples (streams done, RSS KiB, traced KiB, traced by mio KiB, tasks, live streams):",
        ]
        for s in self.samples:
            lines.append(
                f"  {s.streams_done:>7} {s.rss // 1024:>8} {s.traced // 1024:>8} "
                f"{s.traced_mio // 1024:>8} {s.tasks:>5} {s.live_streams:>6}"
            )
        return "\n".join(lines)


def _rss() -> int:
    if psutil is None:
        return 0
    return int(psutil.Process().memory_info().rss)


def _traced() -> tuple[int, int]:
    if not tracemalloc.is_tracing():
        return 0, 0
    snapshot = tracemalloc.take_snapshot()
    total = sum(s.size for s in snapshot.statistics("filename"))
    ours = snapshot.filter_traces([tracemalloc.Filter(True, "*/mio/*")])
    return total, sum(s.size for s in ours.statistics("filename"))


async def _echo(stream: mio.Stream) -> None:
    async for chunk in stream:
        stream.write(chunk)
        await stream.drain()


async def soak(
    streams: int = 100_000,
    concurrency: int = 64,
    *,
    trace: bool = True,
    seed: int = 1,
    progress: bool = False,
) -> SoakResult:
    """Run the soak; see the module docstring."""
    rng = random.Random(seed)
    live: weakref.WeakSet[mio.Stream] = weakref.WeakSet()

    async def handler(stream: mio.Stream) -> None:
        live.add(stream)
        await _echo(stream)

    baseline = {t for t in asyncio.all_tasks() if not t.done()}
    server = await mio.serve(handler, "127.0.0.1", 0)
    client = await mio.connect("127.0.0.1", server.port)
    (server_session,) = server.sessions
    stop = asyncio.Event()
    bulk_total = [0]

    async def bulk() -> None:
        stream = await client.open_stream()
        sent, got = hashlib.sha256(), hashlib.sha256()
        received = [0]

        async def reader() -> None:
            while chunk := await stream.read(65536):
                got.update(chunk)
                received[0] += len(chunk)

        reading = asyncio.ensure_future(reader())
        block = rng.randbytes(32768)
        while not stop.is_set():
            stream.write(block)
            sent.update(block)
            bulk_total[0] += len(block)
            await stream.drain()
            await asyncio.sleep(0.001)
        stream.write_eof()
        await reading
        if received[0] != bulk_total[0] or got.digest() != sent.digest():
            raise AssertionError("the bulk stream lost or corrupted data")
        await stream.wait_closed()

    async def one(i: int) -> None:
        payload = rng.randbytes(rng.randrange(0, 2000))
        stream = await client.open_stream()
        live.add(stream)
        stream.write(payload)
        stream.write_eof()
        echoed = await stream.read()
        if echoed != payload:
            raise AssertionError(f"stream {stream.id}: echo differs")
        await stream.wait_closed()

    samples: list[Sample] = []
    bulk_task = asyncio.ensure_future(bulk())
    warmup = max(concurrency, streams // 10)
    sample_every = max(concurrency, (streams - warmup) // 10)
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    done = 0
    next_sample = warmup
    try:
        while done < streams:
            n = min(concurrency, streams - done)
            await asyncio.gather(*(one(done + k) for k in range(n)))
            done += n
            if done >= next_sample or done == streams:
                gc.collect()
                traced, traced_mio = _traced()
                tasks = len([t for t in asyncio.all_tasks() if not t.done()])
                samples.append(Sample(done, _rss(), traced, traced_mio, tasks, len(live)))
                next_sample = done + sample_every
                if progress:
                    print(f"  {done} streams, RSS {samples[-1].rss // 1024} KiB", file=sys.stderr)
        seconds = time.perf_counter() - started
        stop.set()
        await bulk_task
        peak = tracemalloc.get_traced_memory()[1] if tracemalloc.is_tracing() else 0
        for _ in range(200):
            if not client.stream_count and not server_session.stream_count:
                break
            await asyncio.sleep(0.01)
        client_left, server_left = client.stream_count, server_session.stream_count
        recent = len(client._recent_resets) + len(server_session._recent_resets)
    finally:
        stop.set()
        if not bulk_task.done():
            bulk_task.cancel()
        client.close()
        await client.wait_closed()
        server.close()
        await server.wait_closed()
        if tracemalloc.is_tracing():
            tracemalloc.stop()
    for _ in range(200):
        leftover = {t for t in asyncio.all_tasks() if not t.done()} - baseline
        leftover.discard(asyncio.current_task())  # type: ignore[arg-type]
        if not leftover:
            break
        await asyncio.sleep(0.01)
    gc.collect()
    first, last = samples[0], samples[-1]
    return SoakResult(
        streams=streams,
        seconds=seconds,
        streams_per_second=streams / seconds,
        bulk_bytes=bulk_total[0],
        samples=samples,
        rss_growth=last.rss - first.rss,
        traced_growth=last.traced - first.traced,
        traced_mio_growth=last.traced_mio - first.traced_mio,
        traced_peak=peak,
        client_streams_left=client_left,
        server_streams_left=server_left,
        tasks_left=len(leftover),
        live_streams_left=len(live),
        recent_resets=recent,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--no-tracemalloc", dest="trace", action="store_false")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = asyncio.run(soak(args.streams, args.concurrency, trace=args.trace, progress=True))
    if args.json:
        print(json.dumps(dataclasses.asdict(result), indent=2))
    else:
        print(f"mio {mio.__version__}, compiled codec: {mio.EXTENSIONS_ACTIVE}")
        print(result.summary())
    clean = (
        result.client_streams_left == result.server_streams_left == 0
        and result.tasks_left == 0
        and result.live_streams_left == 0
    )
    return 0 if clean else 1


if __name__ == "__main__":
    raise SystemExit(main())
