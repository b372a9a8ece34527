"""Many client sessions against ``mio echo --workers 1`` and ``--workers 2``: total W2
requests per second and how the sessions spread over the workers.

    python benchmarks/workers.py [--loop asyncio|uvloop] [--sessions 32] [--clients 2]
                                 [--seconds 3] [--workers 1,2]

Each client process opens ``--sessions`` sessions ÷ ``--clients`` and runs 8 W2 workers per
session (a new stream per 64-byte request) for ``--seconds``; the server's workers log how
many sessions each one served. Both runs happen in this one invocation, so the ratio
2 workers ÷ 1 worker is taken on the same machine state. On a machine with 2 cores the
clients compete with the server for them: the ratio shows what a second worker buys when
the clients share the machine, not the ceiling of a dedicated server.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import re
import subprocess
import sys
import time

import mio


async def _client(port: int, sessions: int, seconds: float) -> int:
    conns = [await mio.connect("127.0.0.1", port) for _ in range(sessions)]
    deadline = time.monotonic() + seconds
    done = 0
    payload = b"x" * 64

    async def worker(session: mio.Session) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            stream = await session.open_stream()
            stream.write(payload)
            stream.write_eof()
            assert await stream.read() == payload
            done += 1

    await asyncio.gather(*(worker(s) for s in conns for _ in range(8)))
    for s in conns:
        s.close()
        await s.wait_closed()
    return done


def _client_proc(port: int, sessions: int, seconds: float, loop: str, out: object) -> None:
    from mio._bench.common import run_in_loop

    out.put(run_in_loop(loop, lambda: _client(port, sessions, seconds)))  # type: ignore[attr-defined]


def run(workers: int, args: argparse.Namespace) -> dict[str, object]:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mio",
            "echo",
            "--listen",
            "127.0.0.1:0",
            "--loop",
            args.loop,
            "--workers",
            str(workers),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    line = server.stdout.readline()
    m = re.match(r"listening on 127\.0\.0\.1:(\d+)", line)
    if m is None:
        server.kill()
        raise SystemExit(f"server did not start: {line!r} {server.communicate()[1]}")
    port = int(m.group(1))
    queue: multiprocessing.Queue[int] = multiprocessing.Queue()
    per_client = max(1, args.sessions // args.clients)
    procs = [
        multiprocessing.Process(
            target=_client_proc, args=(port, per_client, args.seconds, args.loop, queue)
        )
        for _ in range(args.clients)
    ]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    total = sum(queue.get(timeout=args.seconds + 60) for _ in procs)
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join(10)
    server.terminate()
    _, err = server.communicate(timeout=30)
    served = [int(n) for n in re.findall(r"stopped: (\d+) sessions", err)]
    return {
        "workers": workers,
        "rps": round(total / elapsed),
        "sessions_per_worker": served,
        "requests": total,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    ap.add_argument("--sessions", type=int, default=32)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--workers", default="1,2")
    args = ap.parse_args()
    results = [run(int(n), args) for n in args.workers.split(",")]
    base = results[0]["rps"]
    first = results[0]["workers"]
    print(f"| workers | req/s (total) | ÷ {first} worker(s) | sessions per worker |")
    print("|---|---:|---:|---|")
    for r in results:
        ratio = r["rps"] / base if base else 0.0  # type: ignore[operator]
        spread = " / ".join(map(str, r["sessions_per_worker"]))  # type: ignore[call-overload]
        print(f"| {r['workers']} | {r['rps']:,} | {ratio:.2f}x | {spread} |")
    print(
        f"\n{args.sessions} sessions from {args.clients} client processes, 8 W2 workers per "
        f"session, {args.seconds:g} s, {args.loop}"
    )


if __name__ == "__main__":
    main()
